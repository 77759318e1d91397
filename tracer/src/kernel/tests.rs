//! Tests of the kernel readers. Format-file tests use captured fixtures;
//! BTF tests read the running kernel's /sys/kernel/btf/vmlinux and are
//! skipped (with a note) where it does not exist.

use std::path::Path;

use tracer_common::{KernelOffsets, OFFSET_NONE};

use super::btf::{self, VMLINUX_BTF};
use super::names::KernelNames;
use super::offsets;
use super::tracefs::{Formats, layouts_from, parse_format, symbolic_tables};

const SEND_RESET_618: &str = include_str!("../../tests/fixtures/format-6.18/tcp_send_reset.format");
const RECV_RESET_618: &str =
    include_str!("../../tests/fixtures/format-6.18/tcp_receive_reset.format");
const SET_STATE_618: &str =
    include_str!("../../tests/fixtures/format-6.18/inet_sock_set_state.format");
const ENTER_ACCEPT4_618: &str =
    include_str!("../../tests/fixtures/format-6.18/sys_enter_accept4.format");
const ACCEPT4_618: &str = include_str!("../../tests/fixtures/format-6.18/sys_exit_accept4.format");
const IO_COMPLETE_618: &str =
    include_str!("../../tests/fixtures/format-6.18/io_uring_complete.format");
const KFREE_SKB_618: &str = include_str!("../../tests/fixtures/format-6.18/kfree_skb.format");
const SEND_RESET_61: &str = include_str!("../../tests/fixtures/format-6.1/tcp_send_reset.format");

#[test]
fn kernel_format_fields_618() {
    let f = parse_format(SEND_RESET_618);
    assert_eq!(f.name, "tcp_send_reset");
    assert_eq!(f.id, Some(2280));
    let skaddr = f.field("skaddr").expect("test data");
    assert_eq!((skaddr.offset, skaddr.size, skaddr.signed), (16, 8, false));
    assert_eq!(skaddr.type_name, "const void *");
    let state = f.field("state").expect("test data");
    assert_eq!((state.offset, state.size, state.signed), (24, 4, true));
    let reason = f.field("reason").expect("test data");
    assert_eq!(reason.type_name, "enum sk_rst_reason");
    assert_eq!((reason.offset, reason.size), (28, 4));
    let saddr = f.field("saddr").expect("test data");
    assert_eq!(
        (saddr.offset, saddr.size, saddr.array_len),
        (32, 28, Some(28))
    );
    assert_eq!(saddr.type_name, "__u8");
    assert_eq!(f.field("daddr").expect("test data").offset, 60);
    assert_eq!(f.field("common_pid").expect("test data").offset, 4);

    let accept = parse_format(ACCEPT4_618);
    let ret = accept.field("ret").expect("test data");
    assert_eq!((ret.offset, ret.size, ret.signed), (16, 8, true));
    assert_eq!(accept.field("__syscall_nr").expect("test data").offset, 8);

    let kfree = parse_format(KFREE_SKB_618);
    let r = kfree.field("reason").expect("test data");
    assert_eq!(
        (r.offset, r.size, r.type_name.as_str()),
        (36, 4, "enum skb_drop_reason")
    );
    assert_eq!(kfree.field("rx_sk").expect("test data").offset, 24);
}

#[test]
fn kernel_layouts_618() {
    let l = layouts_from(&Formats {
        io_complete: Some(parse_format(IO_COMPLETE_618)),
        send_reset: Some(parse_format(SEND_RESET_618)),
        receive_reset: Some(parse_format(RECV_RESET_618)),
        set_state: Some(parse_format(SET_STATE_618)),
        enter_accept: Some(parse_format(ENTER_ACCEPT4_618)),
        exit_accept: Some(parse_format(ACCEPT4_618)),
    });
    assert_eq!((l.io_complete_req, l.io_complete_res), (16, 32));
    let sr = l.send_reset;
    assert_eq!(
        (
            sr.skbaddr, sr.skaddr, sr.state, sr.reason, sr.saddr, sr.daddr
        ),
        (8, 16, 24, 28, 32, 60)
    );
    let rr = l.receive_reset;
    assert_eq!((rr.skaddr, rr.sport, rr.dport, rr.family), (8, 16, 18, 20));
    assert_eq!(
        (rr.saddr, rr.daddr, rr.saddr_v6, rr.daddr_v6),
        (22, 26, 30, 46)
    );
    assert_eq!(
        (rr.oldstate, rr.newstate, rr.protocol),
        (OFFSET_NONE, OFFSET_NONE, OFFSET_NONE)
    );
    let ss = l.set_state;
    assert_eq!((ss.skaddr, ss.oldstate, ss.newstate), (8, 16, 20));
    assert_eq!(
        (ss.sport, ss.dport, ss.family, ss.protocol),
        (24, 26, 28, 30)
    );
    assert_eq!(
        (ss.saddr, ss.daddr, ss.saddr_v6, ss.daddr_v6),
        (32, 36, 40, 56)
    );
    assert_eq!((l.sys_enter_accept_fd, l.sys_exit_accept_ret), (16, 16));
}

#[test]
fn kernel_layouts_61_has_no_reason() {
    let f = parse_format(SEND_RESET_61);
    assert_eq!(f.field("sport").expect("test data").offset, 28);
    assert_eq!(f.field("saddr_v6").expect("test data").array_len, Some(16));
    assert_eq!(f.field("saddr").expect("test data").size, 4);
    let l = layouts_from(&Formats {
        io_complete: None,
        send_reset: Some(f),
        ..Formats::default()
    });
    assert_eq!(
        (
            l.send_reset.skbaddr,
            l.send_reset.skaddr,
            l.send_reset.state
        ),
        (8, 16, 24)
    );
    assert_eq!(l.send_reset.reason, OFFSET_NONE);
    // 4-byte raw addresses, not the 28-byte sockaddr the layout describes.
    assert_eq!(
        (l.send_reset.saddr, l.send_reset.daddr),
        (OFFSET_NONE, OFFSET_NONE)
    );
    assert_eq!(l.receive_reset.skaddr, OFFSET_NONE);
    assert_eq!(l.sys_exit_accept_ret, OFFSET_NONE);
}

#[test]
fn kernel_layouts_missing_tracefs_dir() {
    let l = super::tracefs::layouts(Path::new("/nonexistent/tracefs"));
    assert_eq!(l, tracer_common::TracepointLayouts::EMPTY);
}

#[test]
fn kernel_symbolic_tables() {
    let tables = symbolic_tables(&parse_format(SEND_RESET_618).print_fmt);
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[0].field, "state");
    assert_eq!(
        tables[0].entries[0],
        ("TCP_ESTABLISHED".into(), "TCP_ESTABLISHED".into())
    );
    assert_eq!(tables[0].numeric().count(), 0);
    assert_eq!(tables[1].field, "reason");
    assert_eq!(tables[1].numeric().nth(1), Some((1, "NO_SOCKET")));
}

#[test]
fn kernel_names_from_print_fmt() {
    let mut n = KernelNames::from_print_fmt(SET_STATE_618);
    assert_eq!(n.state_name(1), Some("ESTABLISHED"));
    assert_eq!(n.state_name(12), Some("NEW_SYN_RECV"));
    assert_eq!(n.state_name(10), Some("LISTEN"));
    assert_eq!(n.rst_reason_name(1), None);
    n.fill_missing(KernelNames::from_print_fmt(SEND_RESET_618));
    assert_eq!(n.rst_reason_name(1), Some("NO_SOCKET"));
    assert_eq!(n.rst_reason_name(11), Some("TCP_ABORT_ON_CLOSE"));
    assert_eq!(n.rst_reason_value("INVALID_SYN"), Some(10));
    n.fill_missing(KernelNames::from_print_fmt(KFREE_SKB_618));
    assert_eq!(n.drop_reason_name(3), Some("NO_SOCKET"));
    assert_eq!(n.drop_reason_value("TCP_LISTEN_OVERFLOW"), Some(40));
    // The 6.1 tcp_send_reset table is symbolic only: no states from it.
    assert_eq!(
        KernelNames::from_print_fmt(SEND_RESET_61).counts(),
        (0, 0, 0)
    );
}

#[test]
fn kernel_names_fallback() {
    let n = KernelNames::fallback();
    assert_eq!(n.state_name(1), Some("ESTABLISHED"));
    assert_eq!(n.state_name(12), Some("NEW_SYN_RECV"));
    assert_eq!(n.rst_reason_name(1), Some("NO_SOCKET"));
    assert_eq!(n.drop_reason_name(3), None);
}

fn vmlinux() -> Option<btf_rs::Btf> {
    if !Path::new(VMLINUX_BTF).exists() {
        eprintln!("note: {VMLINUX_BTF} is absent; BTF test skipped");
        return None;
    }
    Some(btf::load_vmlinux().expect("load vmlinux BTF"))
}

#[test]
fn kernel_btf_offsets() {
    let Some(b) = vmlinux() else { return };
    let o = offsets::kernel_offsets(&b).expect("kernel offsets");
    println!("{o:#?}");
    assert_eq!(o.valid, 1);
    let required = [
        o.skc_family,
        o.skc_state,
        o.skc_num,
        o.skc_dport,
        o.skc_rcv_saddr,
        o.skc_daddr,
        o.net_ns_inum,
        o.sk_lock_owned,
        o.sk_socket,
        o.sk_ack_backlog,
        o.sk_max_ack_backlog,
        o.socket_sk,
        o.socket_file,
        o.file_private_data,
        o.file_inode,
        o.inode_ino,
        o.skb_head,
        o.skb_data,
        o.skb_network_header,
        o.skb_transport_header,
        o.skb_dev,
        o.task_files,
        o.files_fdt,
        o.fdtable_max_fds,
        o.fdtable_fd,
    ];
    assert!(required.iter().all(|&v| v != OFFSET_NONE), "{o:?}");
    // Optional in the loader (the inum cache keys on it), present since 5.7.
    assert_ne!(o.net_cookie, OFFSET_NONE, "struct net has no net_cookie");
    assert!(o.net_cookie > o.net_ns_inum, "{o:?}");
    assert!(o.skc_family < 64);
    assert_eq!(o.skc_state, o.skc_family + 2);
    if cfg!(target_arch = "x86_64") {
        // skc_addrpair is the first member: daddr at 0, rcv_saddr at 4.
        assert_eq!((o.skc_daddr, o.skc_rcv_saddr), (0, 4));
        assert_eq!(o.skc_num, o.skc_dport + 2);
    }
    // This development kernel has IPv6, network namespaces and signal_struct.
    assert_ne!(o.skc_v6_daddr, OFFSET_NONE);
    assert_eq!(o.skc_v6_rcv_saddr, o.skc_v6_daddr + 16);
    assert_ne!(o.skc_net, OFFSET_NONE);
    assert_ne!(o.netdev_nd_net, OFFSET_NONE);
    assert_ne!(o.sk_protocol, OFFSET_NONE);
    assert!(o.skc_net < o.skc_v6_daddr);
    assert_eq!(o.sk_max_ack_backlog, o.sk_ack_backlog + 4);
    assert_eq!(o.skb_data, o.skb_head + 8);
    assert_ne!(o.task_signal, OFFSET_NONE);
    assert_ne!(o.signal_rlim_nofile_cur, OFFSET_NONE);
    assert_eq!(o.fdtable_max_fds, 0);
    assert_ne!(o, KernelOffsets::EMPTY);
    // bpf_get_current_task_btf arrived in 5.11 (in enum bpf_func_id).
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']);
    let version: (u32, u32) = (
        parts.next().and_then(|p| p.parse().ok()).expect("major"),
        parts.next().and_then(|p| p.parse().ok()).expect("minor"),
    );
    assert_eq!(o.current_task_btf, u32::from(version >= (5, 11)), "{o:?}");
}

#[test]
fn kernel_btf_names_and_probes() {
    let Some(b) = vmlinux() else { return };
    let n = KernelNames::from_btf(&b);
    println!("names from BTF (states, rst, drop): {:?}", n.counts());
    assert_eq!(n.state_name(1), Some("ESTABLISHED"));
    assert_eq!(n.state_name(10), Some("LISTEN"));
    assert_eq!(n.state_value("CLOSE_WAIT"), Some(8));
    assert_eq!(n.state_name(12), Some("NEW_SYN_RECV"));
    assert_eq!(n.rst_reason_value("NO_SOCKET"), Some(1));
    assert_eq!(n.drop_reason_name(3), Some("NO_SOCKET"));
    assert_eq!(n.drop_reason_value("TCP_LISTEN_OVERFLOW"), Some(40));
    // BTF and the captured print fmt tables agree on this kernel.
    assert_eq!(
        KernelNames::from_print_fmt(SEND_RESET_618).rst_reason_name(11),
        n.rst_reason_name(11)
    );
    assert_eq!(btf::tracepoint_arg_count(&b, "tcp_send_reset"), Some(4));
    assert_eq!(btf::tracepoint_arg_count(&b, "tcp_receive_reset"), Some(2));
    assert_eq!(btf::tracepoint_arg_count(&b, "no_such_tracepoint"), None);
    assert!(matches!(
        btf::function(&b, "tcp_v4_send_reset"),
        Some(Some(2 | 3))
    ));
    assert!(matches!(
        btf::function(&b, "inet_csk_accept"),
        Some(Some(2 | 4))
    ));
    assert_eq!(btf::function(&b, "sk_buff"), None);
    let states = btf::anon_enum_containing(&b, "TCP_LISTEN").expect("test data");
    assert!(states.contains(&("TCP_CLOSE_WAIT".to_string(), 8)));
}

#[test]
fn kernel_btf_rejects_missing_and_bitfield() {
    let Some(b) = vmlinux() else { return };
    // Private helpers are exercised through a struct with known members.
    let e = btf::required_offset(&b, "sock_common", &["skc_no_such_member"]).unwrap_err();
    assert!(e.to_string().contains("sock_common"), "{e}");
    assert!(e.to_string().contains("skc_no_such_member"), "{e}");
    let e = btf::required_offset(&b, "sock_common", &["skc_reuse"]).unwrap_err();
    assert!(matches!(e, super::KernelError::Bitfield { .. }), "{e}");
    let e = btf::required_offset(&b, "no_such_struct_xyz", &["a"]).unwrap_err();
    assert!(matches!(e, super::KernelError::MissingStruct(_)), "{e}");
}

#[test]
fn kernel_tracefs_live() {
    let Some(root) = super::tracefs::find_tracefs() else {
        eprintln!("note: tracefs is not mounted; live tracefs test skipped");
        return;
    };
    let l = super::tracefs::layouts(&root);
    assert_ne!(l.set_state.skaddr, OFFSET_NONE, "{l:?}");
    assert_ne!(l.send_reset.skaddr, OFFSET_NONE, "{l:?}");
    let n = KernelNames::load(vmlinux().as_ref(), Some(&root));
    assert_eq!(n.state_name(1), Some("ESTABLISHED"));
}

/// Needs root; meant for a fresh sysfs, e.g.
/// `ip netns exec NS <test binary> --ignored kernel_tracefs_ensure`.
#[test]
#[ignore = "needs root; may mount tracefs"]
fn kernel_tracefs_ensure() {
    let root = super::tracefs::ensure_tracefs().expect("tracefs");
    assert!(root.join("events/sock/inet_sock_set_state/format").exists());
}

#[test]
fn kernel_error_messages() {
    let e = super::KernelError::BtfMissing {
        path: VMLINUX_BTF.into(),
    };
    assert_eq!(
        e.to_string(),
        "kernel BTF not found at /sys/kernel/btf/vmlinux: this kernel was built without \
         CONFIG_DEBUG_INFO_BTF; tracer needs it (or a BTF file for this kernel in TRACER_BTF)"
    );
}

#[test]
fn tracefs_mounts_from_mountinfo() {
    let text = "22 21 0:20 / /sys/kernel/tracing rw,nosuid - tracefs tracefs rw\n\
                23 21 0:21 / /sys/kernel/debug rw - debugfs debugfs rw\n\
                24 23 0:20 / /sys/kernel/debug/tracing rw - tracefs tracefs rw\n\
                25 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        super::tracefs::tracefs_mounts(text),
        vec![
            std::path::PathBuf::from("/sys/kernel/tracing"),
            std::path::PathBuf::from("/sys/kernel/debug/tracing")
        ]
    );
    assert!(super::tracefs::tracefs_mounts("25 21 0:22 / /x rw - cgroup2 c rw\n").is_empty());
}
