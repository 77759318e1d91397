use super::*;

use crate::probes::table::HOOKS;

const CAPS_54: &str = include_str!("../../tests/fixtures/caps/linux-5.4.json");
const CAPS_515: &str = include_str!("../../tests/fixtures/caps/linux-5.15.json");
const CAPS_61: &str = include_str!("../../tests/fixtures/caps/linux-6.1.json");
const CAPS_618: &str = include_str!("../../tests/fixtures/caps/linux-6.18-nokprobes.json");

const NO_BTF: &str = "no kernel BTF (/sys/kernel/btf/vmlinux)";

fn caps(json: &str) -> KernelCaps {
    serde_json::from_str(json).expect("capability fixture")
}

fn plan_for(json: &str) -> Vec<HookPlan> {
    plan(HOOKS, &caps(json))
}

fn hook<'a>(plans: &'a [HookPlan], name: &str) -> &'a HookPlan {
    plans
        .iter()
        .find(|p| p.hook.name == name)
        .unwrap_or_else(|| panic!("no hook {name}"))
}

/// Candidates of a hook as (mechanism, program).
fn candidates(plans: &[HookPlan], name: &str) -> Vec<(&'static str, &'static str)> {
    hook(plans, name)
        .candidates
        .iter()
        .map(|m| (m.kind.name(), m.program))
        .collect()
}

/// Refusals of a hook as (program, reason).
fn refused(plans: &[HookPlan], name: &str) -> Vec<(&'static str, String)> {
    hook(plans, name)
        .refused
        .iter()
        .map(|(m, why)| (m.program, why.clone()))
        .collect()
}

/// The first candidate (what attach tries first) of every hook, in table
/// order; `None` when the hook has no candidate.
fn first_choices(plans: &[HookPlan]) -> Vec<(&'static str, Option<&'static str>)> {
    plans
        .iter()
        .map(|p| (p.hook.name, p.candidates.first().map(|m| m.program)))
        .collect()
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn fixtures_deserialize() {
    let c = caps(CAPS_618);
    assert_eq!(c.release, "6.18.44-fc-v669");
    assert!(c.btf && c.ring_buffer && c.tracefs && !c.kprobes);
    assert_eq!(c.btf_tracepoints.get("tcp_send_reset"), Some(&4));
    assert_eq!(c.btf_tracepoints.get("sock_send_length"), Some(&4));
    assert!(c.tracepoints["tcp/tcp_send_reset"].contains("reason"));
    assert!(c.functions.contains("inet_csk_accept"));

    let c = caps(CAPS_54);
    assert!(!c.btf && !c.ring_buffer && c.tracefs && c.kprobes);
    assert!(c.btf_tracepoints.is_empty());
    let send = &c.tracepoints["tcp/tcp_send_reset"];
    assert!(send.contains("skaddr") && !send.contains("state") && !send.contains("reason"));
    assert!(c.functions.is_empty());

    // Missing maps default to empty; the record is read back unchanged.
    let minimal: KernelCaps = serde_json::from_str(
        r#"{"release":"x","btf":true,"ring_buffer":true,"kprobes":false,"tracefs":false}"#,
    )
    .expect("test data");
    assert_eq!(
        minimal,
        KernelCaps {
            release: s("x"),
            btf: true,
            ring_buffer: true,
            ..Default::default()
        }
    );
    let c = caps(CAPS_515);
    let back: KernelCaps =
        serde_json::from_str(&serde_json::to_string(&c).expect("test data")).expect("test data");
    assert_eq!(back, c);
}

#[test]
fn linux_6_18_without_kprobes() {
    let p = plan_for(CAPS_618);
    assert_eq!(
        first_choices(&p),
        vec![
            ("tcp_send_reset", Some("tcp_send_reset_btf")),
            ("tcp_v4_send_reset", None),
            ("tcp_v6_send_reset", None),
            ("tcp_receive_reset", Some("tcp_receive_reset_btf")),
            ("inet_sock_set_state", Some("inet_sock_set_state_btf")),
            ("tcp_destroy_sock", Some("tcp_destroy_sock_btf")),
            ("sock_send_length", Some("sock_send_btf")),
            ("sock_recv_length", Some("sock_recv_btf")),
            ("inet_csk_accept", Some("inet_csk_accept_fexit")),
            ("accept_enter", Some("sys_enter_accept_tp")),
            ("accept_exit", Some("sys_exit_accept_tp")),
            ("io_uring_accept", Some("io_uring_complete_tp")),
        ]
    );
    assert_eq!(
        candidates(&p, "tcp_send_reset"),
        vec![
            ("tp_btf", "tcp_send_reset_btf"),
            ("raw_tracepoint", "tcp_send_reset_raw"),
            ("tracepoint", "tcp_send_reset_tp"),
        ]
    );
    let three = s("tcp_send_reset has 3 arguments here, this program reads 2");
    assert_eq!(
        refused(&p, "tcp_send_reset"),
        vec![
            ("tcp_send_reset_btf_noreason", three.clone()),
            ("tcp_send_reset_raw_noreason", three),
        ]
    );
    assert_eq!(
        candidates(&p, "inet_csk_accept"),
        vec![("fexit", "inet_csk_accept_fexit")]
    );
    assert_eq!(
        refused(&p, "inet_csk_accept"),
        vec![
            (
                "inet_csk_accept_fexit4",
                s("inet_csk_accept has 2 parameters here, this program was written for 4")
            ),
            (
                "inet_csk_accept_kretprobe",
                s("kprobes are not enabled in this kernel (CONFIG_KPROBES)")
            )
        ]
    );
    assert_eq!(
        candidates(&p, "sock_send_length"),
        vec![
            ("tp_btf", "sock_send_btf"),
            ("raw_tracepoint", "sock_send_raw"),
            ("fexit", "tcp_sendmsg_fexit"),
        ]
    );
    let no_kprobes = || {
        (
            "tcp_msg_kprobe",
            s("kprobes are not enabled in this kernel (CONFIG_KPROBES)"),
        )
    };
    assert_eq!(refused(&p, "sock_send_length"), vec![no_kprobes()]);
    assert_eq!(
        refused(&p, "sock_recv_length"),
        vec![
            (
                "tcp_recvmsg_fexit6",
                s("tcp_recvmsg has 5 parameters here, this program was written for 6")
            ),
            no_kprobes()
        ]
    );
    for h in [
        "tcp_receive_reset",
        "inet_sock_set_state",
        "tcp_destroy_sock",
        "accept_enter",
        "accept_exit",
    ] {
        assert_eq!(refused(&p, h), vec![], "{h}");
    }
    // The tracepoint reports resets with no socket (6.10 layout): the
    // function hooks are not wanted and nothing is tried or refused.
    for h in ["tcp_v4_send_reset", "tcp_v6_send_reset"] {
        let plan = hook(&p, h);
        assert!(plan.candidates.is_empty() && plan.refused.is_empty(), "{h}");
        assert!(
            plan.not_needed
                .as_deref()
                .is_some_and(|w| w.starts_with("not needed")),
            "{h}"
        );
    }
    assert_eq!(unsatisfiable(&p), Vec::<String>::new());
}

/// 5.15 and 6.1 choose alike: tcp_send_reset has no reason argument and
/// misses resets with no full socket (both 6.10), so tcp_v4/v6_send_reset
/// are hooked; sock_send_length/sock_recv_length do not exist (6.3), so
/// owners are learned in tcp_sendmsg/tcp_recvmsg.
fn assert_pre_6_3_with_btf(p: &[HookPlan], recvmsg: &'static str) {
    // The tcp_recvmsg fexit written for the other parameter count.
    let other_recvmsg = if recvmsg == "tcp_recvmsg_fexit5" {
        (
            "tcp_recvmsg_fexit6",
            s("tcp_recvmsg has 5 parameters here, this program was written for 6"),
        )
    } else {
        (
            "tcp_recvmsg_fexit5",
            s("tcp_recvmsg has 6 parameters here, this program was written for 5"),
        )
    };
    assert_eq!(
        first_choices(p)[..11],
        [
            ("tcp_send_reset", Some("tcp_send_reset_btf_noreason")),
            ("tcp_v4_send_reset", Some("tcp_v4_send_reset_fentry")),
            ("tcp_v6_send_reset", Some("tcp_v6_send_reset_fentry")),
            ("tcp_receive_reset", Some("tcp_receive_reset_btf")),
            ("inet_sock_set_state", Some("inet_sock_set_state_btf")),
            ("tcp_destroy_sock", Some("tcp_destroy_sock_btf")),
            ("sock_send_length", Some("tcp_sendmsg_fexit")),
            ("sock_recv_length", Some(recvmsg)),
            ("inet_csk_accept", Some("inet_csk_accept_fexit4")),
            ("accept_enter", Some("sys_enter_accept_tp")),
            ("accept_exit", Some("sys_exit_accept_tp")),
        ]
    );
    assert_eq!(
        refused(p, "inet_csk_accept"),
        vec![(
            "inet_csk_accept_fexit",
            s("inet_csk_accept has 4 parameters here, this program was written for 2")
        )]
    );
    assert_eq!(
        candidates(p, "tcp_send_reset"),
        vec![
            ("tp_btf", "tcp_send_reset_btf_noreason"),
            ("raw_tracepoint", "tcp_send_reset_raw_noreason"),
            ("tracepoint", "tcp_send_reset_tp"),
        ]
    );
    let two = s("tcp_send_reset has 2 arguments here, this program reads 3");
    assert_eq!(
        refused(p, "tcp_send_reset"),
        vec![
            ("tcp_send_reset_btf", two.clone()),
            ("tcp_send_reset_raw", two),
        ]
    );
    assert_eq!(
        refused(p, "sock_send_length"),
        vec![
            (
                "sock_send_btf",
                s("tracepoint sock_send_length does not exist on this kernel")
            ),
            (
                "sock_send_raw",
                s("tracepoint sock_send_length does not exist on this kernel")
            ),
        ]
    );
    assert_eq!(
        refused(p, "sock_recv_length"),
        vec![
            (
                "sock_recv_btf",
                s("tracepoint sock_recv_length does not exist on this kernel")
            ),
            (
                "sock_recv_raw",
                s("tracepoint sock_recv_length does not exist on this kernel")
            ),
            other_recvmsg,
        ]
    );
    assert_eq!(
        candidates(p, "inet_csk_accept"),
        vec![
            ("fexit", "inet_csk_accept_fexit4"),
            ("kretprobe", "inet_csk_accept_kretprobe")
        ]
    );
    assert_eq!(
        candidates(p, "tcp_v6_send_reset"),
        vec![
            ("fentry", "tcp_v6_send_reset_fentry"),
            ("kprobe", "tcp_send_reset_kprobe")
        ]
    );
    assert_eq!(
        candidates(p, "sock_recv_length"),
        vec![("fexit", recvmsg), ("kprobe", "tcp_msg_kprobe")]
    );
    assert_eq!(
        candidates(p, "tcp_receive_reset"),
        vec![
            ("tp_btf", "tcp_receive_reset_btf"),
            ("raw_tracepoint", "tcp_receive_reset_raw"),
            ("tracepoint", "tcp_receive_reset_tp"),
        ]
    );
    // Optional hooks without candidates do not make the kernel unusable.
    assert_eq!(unsatisfiable(p), Vec::<String>::new());
}

#[test]
fn linux_5_15() {
    let p = plan_for(CAPS_515);
    // tcp_recvmsg still has `int nonblock` (until 5.19): 6 parameters.
    assert_pre_6_3_with_btf(&p, "tcp_recvmsg_fexit6");
    // io_uring_complete had no `req` field before 5.19.
    assert_eq!(first_choices(&p)[11], ("io_uring_accept", None));
    assert_eq!(
        refused(&p, "io_uring_accept"),
        vec![(
            "io_uring_complete_tp",
            s("io_uring/io_uring_complete has no field `req`")
        )]
    );
}

#[test]
fn linux_6_1() {
    let p = plan_for(CAPS_61);
    assert_pre_6_3_with_btf(&p, "tcp_recvmsg_fexit5");
    assert_eq!(
        first_choices(&p)[11],
        ("io_uring_accept", Some("io_uring_complete_tp"))
    );
}

#[test]
fn linux_5_4_without_btf() {
    let p = plan_for(CAPS_54);
    assert_eq!(
        first_choices(&p),
        vec![
            ("tcp_send_reset", Some("tcp_send_reset_tp")),
            ("tcp_v4_send_reset", Some("tcp_send_reset_kprobe")),
            ("tcp_v6_send_reset", Some("tcp_send_reset_kprobe")),
            ("tcp_receive_reset", Some("tcp_receive_reset_tp")),
            ("inet_sock_set_state", Some("inet_sock_set_state_tp")),
            ("tcp_destroy_sock", Some("tcp_destroy_sock_tp")),
            ("sock_send_length", Some("tcp_msg_kprobe")),
            ("sock_recv_length", Some("tcp_msg_kprobe")),
            ("inet_csk_accept", Some("inet_csk_accept_kretprobe")),
            ("accept_enter", Some("sys_enter_accept_tp")),
            ("accept_exit", Some("sys_exit_accept_tp")),
            ("io_uring_accept", None),
        ]
    );
    let raw = s("cannot check tracepoint tcp_send_reset's arguments without BTF");
    assert_eq!(
        refused(&p, "tcp_send_reset"),
        vec![
            ("tcp_send_reset_btf", s(NO_BTF)),
            ("tcp_send_reset_btf_noreason", s(NO_BTF)),
            ("tcp_send_reset_raw", raw.clone()),
            ("tcp_send_reset_raw_noreason", raw),
        ]
    );
    assert_eq!(
        candidates(&p, "tcp_send_reset"),
        vec![("tracepoint", "tcp_send_reset_tp")]
    );
    assert_eq!(
        refused(&p, "inet_sock_set_state"),
        vec![
            ("inet_sock_set_state_btf", s(NO_BTF)),
            (
                "inet_sock_set_state_raw",
                s("cannot check tracepoint inet_sock_set_state's arguments without BTF")
            ),
        ]
    );
    assert_eq!(
        refused(&p, "inet_csk_accept"),
        vec![
            ("inet_csk_accept_fexit", s("no kernel BTF")),
            ("inet_csk_accept_fexit4", s("no kernel BTF"))
        ]
    );
    assert_eq!(
        candidates(&p, "inet_csk_accept"),
        vec![("kretprobe", "inet_csk_accept_kretprobe")]
    );
    assert_eq!(unsatisfiable(&p), Vec::<String>::new());
}

#[test]
fn no_tracefs_and_no_btf_is_unsatisfiable() {
    let c = KernelCaps {
        release: s("4.19-custom"),
        kprobes: true,
        ..Default::default()
    };
    let p = plan(HOOKS, &c);
    let tracefs = "tracepoint: tracefs is not mounted and could not be mounted";
    let why = |tp: &str| {
        format!(
            "{tp} (tp_btf: {NO_BTF}; raw_tracepoint: cannot check tracepoint {tp}'s arguments without BTF; {tracefs})"
        )
    };
    assert_eq!(
        unsatisfiable(&p),
        vec![
            format!(
                "tcp_send_reset (tp_btf: {NO_BTF}; tp_btf: {NO_BTF}; \
                 raw_tracepoint: cannot check tracepoint tcp_send_reset's arguments without BTF; \
                 raw_tracepoint: cannot check tracepoint tcp_send_reset's arguments without BTF; \
                 {tracefs})"
            ),
            why("tcp_receive_reset"),
            why("inet_sock_set_state"),
        ]
    );
    // The optional hooks have no candidates either, except the kprobes,
    // which need neither BTF nor tracefs.
    assert_eq!(
        first_choices(&p)
            .into_iter()
            .filter_map(|(h, c)| c.map(|c| (h, c)))
            .collect::<Vec<_>>(),
        vec![
            ("tcp_v4_send_reset", "tcp_send_reset_kprobe"),
            ("tcp_v6_send_reset", "tcp_send_reset_kprobe"),
            ("sock_send_length", "tcp_msg_kprobe"),
            ("sock_recv_length", "tcp_msg_kprobe"),
            ("inet_csk_accept", "inet_csk_accept_kretprobe"),
        ]
    );
}

#[test]
fn required_hook_missing_on_btf_kernel_is_reported() {
    // BTF present but the tracepoint is gone everywhere (renamed upstream).
    let mut c = caps(CAPS_618);
    c.btf_tracepoints.remove("tcp_receive_reset");
    c.tracepoints.remove("tcp/tcp_receive_reset");
    let p = plan(HOOKS, &c);
    assert_eq!(
        unsatisfiable(&p),
        vec![s(
            "tcp_receive_reset (tp_btf: tracepoint tcp_receive_reset does not exist on this kernel; \
             raw_tracepoint: tracepoint tcp_receive_reset does not exist on this kernel; \
             tracepoint: tracepoint tcp/tcp_receive_reset does not exist)"
        )]
    );
}

#[test]
fn classic_tracepoint_needs_its_field() {
    let mut c = caps(CAPS_54);
    c.tracepoints
        .get_mut("tcp/tcp_send_reset")
        .expect("test data")
        .remove("skaddr");
    let p = plan(HOOKS, &c);
    assert!(candidates(&p, "tcp_send_reset").is_empty());
    assert_eq!(
        refused(&p, "tcp_send_reset").last().expect("test data"),
        &(
            "tcp_send_reset_tp",
            s("tcp/tcp_send_reset has no field `skaddr`")
        )
    );
    assert_eq!(unsatisfiable(&p).len(), 1);
    assert!(unsatisfiable(&p)[0].starts_with("tcp_send_reset ("));
}

#[test]
fn multi_target_tracepoint_needs_one_target() {
    let mut c = caps(CAPS_618);
    c.tracepoints.remove("syscalls/sys_enter_accept");
    let p = plan(HOOKS, &c);
    assert_eq!(
        candidates(&p, "accept_enter"),
        vec![("tracepoint", "sys_enter_accept_tp")]
    );
    c.tracepoints.remove("syscalls/sys_enter_accept4");
    let p = plan(HOOKS, &c);
    assert!(candidates(&p, "accept_enter").is_empty());
    assert_eq!(
        refused(&p, "accept_enter"),
        vec![(
            "sys_enter_accept_tp",
            s("tracepoint syscalls/sys_enter_accept4 does not exist; \
               tracepoint syscalls/sys_enter_accept does not exist")
        )]
    );
    // One target present but without the field counts as missing.
    c.tracepoints.insert(
        s("syscalls/sys_exit_accept4"),
        ["common_type", "__syscall_nr"].map(s).into(),
    );
    c.tracepoints.remove("syscalls/sys_exit_accept");
    let p = plan(HOOKS, &c);
    assert_eq!(
        refused(&p, "accept_exit"),
        vec![(
            "sys_exit_accept_tp",
            s("syscalls/sys_exit_accept4 has no field `ret`; \
               tracepoint syscalls/sys_exit_accept does not exist")
        )]
    );
}

#[test]
fn kretprobe_checks_function_only_with_btf() {
    let mut c = caps(CAPS_515);
    c.functions.clear();
    let p = plan(HOOKS, &c);
    assert_eq!(
        refused(&p, "inet_csk_accept"),
        vec![
            (
                "inet_csk_accept_fexit",
                s("function inet_csk_accept not in BTF")
            ),
            (
                "inet_csk_accept_fexit4",
                s("function inet_csk_accept not in BTF")
            ),
            (
                "inet_csk_accept_kretprobe",
                s("function inet_csk_accept not found")
            ),
        ]
    );
    // Without BTF nothing can be checked: the kretprobe stays a candidate.
    c.btf = false;
    let p = plan(HOOKS, &c);
    assert_eq!(
        candidates(&p, "inet_csk_accept"),
        vec![("kretprobe", "inet_csk_accept_kretprobe")]
    );
}

#[test]
fn refusal_of_single_mechanisms() {
    let c = caps(CAPS_618);
    let send = &HOOKS[0];
    assert_eq!(send.name, "tcp_send_reset");
    assert_eq!(refusal(&send.mechanisms[0], &c), None);
    assert_eq!(
        refusal(&send.mechanisms[1], &c),
        Some(s(
            "tcp_send_reset has 3 arguments here, this program reads 2"
        ))
    );
    let mut no_tracefs = c.clone();
    no_tracefs.tracefs = false;
    assert_eq!(
        refusal(&send.mechanisms[4], &no_tracefs),
        Some(s("tracefs is not mounted and could not be mounted"))
    );
}

#[test]
fn no_socket_resets_need_the_function_hooks_only_on_the_old_layout() {
    assert!(send_reset_reports_no_socket(&caps(CAPS_618)));
    for old in [CAPS_54, CAPS_515, CAPS_61] {
        assert!(!send_reset_reports_no_socket(&caps(old)));
    }
    // Without tracefs, BTF's reason argument (6.10) decides.
    let mut c = caps(CAPS_618);
    c.tracepoints.clear();
    assert!(send_reset_reports_no_socket(&c));
    let mut c = caps(CAPS_61);
    c.tracepoints.clear();
    assert!(!send_reset_reports_no_socket(&c));
}

#[test]
fn denied_kinds_are_refused_and_the_next_rung_chosen() {
    let c = caps(CAPS_61);
    let p = plan_without(HOOKS, &c, &[Kind::TpBtf, Kind::RawTracepoint, Kind::Fentry]);
    assert_eq!(
        candidates(&p, "tcp_send_reset"),
        vec![("tracepoint", "tcp_send_reset_tp")]
    );
    assert_eq!(
        candidates(&p, "tcp_v4_send_reset"),
        vec![("kprobe", "tcp_send_reset_kprobe")]
    );
    assert_eq!(
        refused(&p, "tcp_v4_send_reset"),
        vec![(
            "tcp_v4_send_reset_fentry",
            s("refused by --no-mechanism fentry")
        )]
    );
    let p = plan_without(HOOKS, &c, &[Kind::Fexit]);
    assert_eq!(
        candidates(&p, "inet_csk_accept"),
        vec![("kretprobe", "inet_csk_accept_kretprobe")]
    );
}
