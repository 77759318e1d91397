use super::*;

const TS: &str = "2024-05-01T12:34:56.789012345Z";

fn json(e: &Event) -> String {
    serde_json::to_string(e).expect("test data")
}

fn owner(pid: u32, comm: &[u8], cgroup: Option<&str>) -> Owner {
    Owner::new(pid, comm.to_vec(), Vec::new(), cgroup.map(str::to_string))
}

#[test]
fn common_fields_are_null_when_unknown() {
    let e = Event::new(EventKind::RstReceived, TS.into());
    assert_eq!(
        json(&e),
        r#"{"v":1,"ts":"2024-05-01T12:34:56.789012345Z","event":"rst_received","pid":null,"comm":null,"attributed_by":"none","cgroup":null}"#
    );
}

#[test]
fn rst_sent_with_owner_and_reason() {
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(
        Some(&owner(
            42,
            b"nginx\0\0\0\0\0\0\0\0\0\0\0",
            Some("/system.slice/nginx.service"),
        )),
        AttributedBy::SocketOwner,
    );
    e.family = Some("inet");
    e.local_addr = Some("10.0.0.1".parse().expect("test data"));
    e.local_port = Some(8080);
    e.remote_addr = Some("10.0.0.2".parse().expect("test data"));
    e.remote_port = Some(51234);
    e.state = Some(Some("ESTABLISHED".into()));
    e.reason = Some(Some("TCP_ABORT_ON_CLOSE".into()));
    assert_eq!(
        json(&e),
        concat!(
            r#"{"v":1,"ts":"2024-05-01T12:34:56.789012345Z","event":"rst_sent","pid":42,"comm":"nginx","#,
            r#""attributed_by":"socket_owner","cgroup":"/system.slice/nginx.service","#,
            r#""systemd_unit":"nginx.service","family":"inet","#,
            r#""local_addr":"10.0.0.1","local_port":8080,"remote_addr":"10.0.0.2","remote_port":51234,"#,
            r#""state":"ESTABLISHED","reason":"TCP_ABORT_ON_CLOSE"}"#
        )
    );
}

/// An owner's cgroup is parsed once, when it is made, into the fields
/// every event of it carries.
#[test]
fn owner_fields_come_from_its_cgroup() {
    let id = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    let pod = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let path = format!(
        "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
        pod.replace('-', "_")
    );
    let o = owner(3, b"envoy", Some(&path));
    let parsed = crate::container::parse(&path);
    assert_eq!(o.container_id.as_deref(), parsed.container_id.as_deref());
    assert_eq!(o.pod_uid.as_deref(), Some(pod));
    assert_eq!(o.systemd_unit, None);
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(Some(&o), AttributedBy::SocketOwner);
    assert_eq!(
        (
            e.cgroup.as_deref(),
            e.container_id.as_deref(),
            e.pod_uid.as_deref()
        ),
        (Some(path.as_str()), Some(id), Some(pod))
    );
    assert_eq!(e.systemd_unit, None);
}

#[test]
fn reason_and_state_null_when_some_none() {
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(Some(&owner(7, b"curl", None)), AttributedBy::CurrentTask);
    e.family = Some("inet6");
    e.local_addr = Some("::1".parse().expect("test data"));
    e.local_port = Some(443);
    e.remote_addr = Some("::1".parse().expect("test data"));
    e.remote_port = Some(40000);
    e.state = Some(None);
    e.reason = Some(None);
    assert_eq!(
        json(&e),
        concat!(
            r#"{"v":1,"ts":"2024-05-01T12:34:56.789012345Z","event":"rst_sent","pid":7,"comm":"curl","#,
            r#""attributed_by":"current_task","cgroup":null,"family":"inet6","local_addr":"::1","#,
            r#""local_port":443,"remote_addr":"::1","remote_port":40000,"state":null,"reason":null}"#
        )
    );
}

#[test]
fn every_field_in_schema_order() {
    // Not a real event: every optional field set, to pin names and order.
    let mut e = Event::new(EventKind::AcceptFailed, TS.into());
    e.set_owner(
        Some(&owner(1, b"x", Some("/a"))),
        AttributedBy::ListenerOwner,
    );
    e.family = Some("inet");
    e.local_addr = Some("0.0.0.0".parse().expect("test data"));
    e.local_port = Some(1);
    e.remote_addr = Some("0.0.0.0".parse().expect("test data"));
    e.remote_port = Some(2);
    e.state = Some(Some("LISTEN".into()));
    e.reason = Some(Some("NOT_SPECIFIED".into()));
    e.old_state = Some("SYN_SENT".into());
    e.new_state = Some("ESTABLISHED".into());
    e.errno = Some(24);
    e.error = Some("EMFILE".into());
    e.fd_count = Some(Some(1024));
    e.fd_limit = Some(Some(1024));
    e.backlog = Some(128);
    e.queued = Some(129);
    e.count = Some(3);
    e.netns = Some(4026531840);
    e.socket_inode = Some(123456);
    assert_eq!(
        json(&e),
        concat!(
            r#"{"v":1,"ts":"2024-05-01T12:34:56.789012345Z","event":"accept_failed","pid":1,"comm":"x","#,
            r#""attributed_by":"listener_owner","cgroup":"/a","family":"inet","local_addr":"0.0.0.0","#,
            r#""local_port":1,"remote_addr":"0.0.0.0","remote_port":2,"state":"LISTEN","#,
            r#""reason":"NOT_SPECIFIED","old_state":"SYN_SENT","new_state":"ESTABLISHED","errno":24,"#,
            r#""error":"EMFILE","fd_count":1024,"fd_limit":1024,"backlog":128,"queued":129,"count":3,"#,
            r#""netns":4026531840,"socket_inode":123456}"#
        )
    );
}

#[test]
fn accept_failed_unknown_fd_count_is_null() {
    let mut e = Event::new(EventKind::AcceptFailed, TS.into());
    e.set_owner(Some(&owner(99, b"java", None)), AttributedBy::SocketOwner);
    e.errno = Some(24);
    e.error = Some(errno_name(24));
    e.fd_count = Some(None);
    e.fd_limit = Some(Some(4096));
    e.local_port = Some(8080);
    assert_eq!(
        json(&e),
        concat!(
            r#"{"v":1,"ts":"2024-05-01T12:34:56.789012345Z","event":"accept_failed","pid":99,"comm":"java","#,
            r#""attributed_by":"socket_owner","cgroup":null,"local_port":8080,"errno":24,"error":"EMFILE","#,
            r#""fd_count":null,"fd_limit":4096}"#
        )
    );
}

#[test]
fn lost_and_state_change_lines() {
    let mut lost = Event::new(EventKind::Lost, TS.into());
    lost.count = Some(17);
    assert_eq!(
        json(&lost),
        r#"{"v":1,"ts":"2024-05-01T12:34:56.789012345Z","event":"lost","pid":null,"comm":null,"attributed_by":"none","cgroup":null,"count":17}"#
    );
    let mut sc = Event::new(EventKind::StateChange, TS.into());
    sc.old_state = Some("ESTABLISHED".into());
    sc.new_state = Some("CLOSE_WAIT".into());
    let v: serde_json::Value = serde_json::from_str(&json(&sc)).expect("test data");
    assert_eq!(v["event"], "state_change");
    assert_eq!(v["old_state"], "ESTABLISHED");
    assert_eq!(v["new_state"], "CLOSE_WAIT");
    assert!(v.get("reason").is_none());
    assert!(v.get("state").is_none());
}

#[test]
fn set_owner_pid_zero_or_none_clears_everything() {
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(Some(&owner(5, b"a", Some("/x"))), AttributedBy::SocketOwner);
    assert_eq!(
        (
            e.pid,
            e.comm.as_deref(),
            e.cgroup.as_deref(),
            e.attributed_by
        ),
        (Some(5), Some("a"), Some("/x"), AttributedBy::SocketOwner)
    );
    e.set_owner(
        Some(&owner(0, b"swapper/0", Some("/"))),
        AttributedBy::CurrentTask,
    );
    assert_eq!(
        (
            e.pid,
            e.comm.as_deref(),
            e.cgroup.as_deref(),
            e.attributed_by
        ),
        (None, None, None, AttributedBy::None)
    );
    e.set_owner(Some(&owner(5, b"a", None)), AttributedBy::ListenerOwner);
    e.set_owner(None, AttributedBy::ListenerOwner);
    assert_eq!(
        (
            e.pid,
            e.comm.as_deref(),
            e.cgroup.as_deref(),
            e.attributed_by
        ),
        (None, None, None, AttributedBy::None)
    );
}

#[test]
fn kind_names_match_serde_names() {
    for (k, name) in [
        (EventKind::RstSent, "rst_sent"),
        (EventKind::RstReceived, "rst_received"),
        (EventKind::AcceptFailed, "accept_failed"),
        (EventKind::ListenOverflow, "listen_overflow"),
        (EventKind::StateChange, "state_change"),
        (EventKind::Lost, "lost"),
    ] {
        assert_eq!(
            serde_json::to_string(&k).expect("test data"),
            format!("\"{name}\"")
        );
    }
    for (a, name) in [
        (AttributedBy::SocketOwner, "socket_owner"),
        (AttributedBy::ListenerOwner, "listener_owner"),
        (AttributedBy::CurrentTask, "current_task"),
        (AttributedBy::None, "none"),
    ] {
        assert_eq!(
            serde_json::to_string(&a).expect("test data"),
            format!("\"{name}\"")
        );
    }
}

#[test]
fn comm_string_cases() {
    assert_eq!(comm_string(b"nginx\0\0\0\0\0\0\0\0\0\0\0"), "nginx");
    assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    assert_eq!(comm_string(b""), "");
    assert_eq!(comm_string(b"\0abc"), "");
    assert_eq!(comm_string(b"ab\0cd"), "ab");
    assert_eq!(comm_string(b"a\xffb"), "a\u{fffd}b");
    assert_eq!(comm_string(b"\xe2\x82"), "\u{fffd}");
    assert_eq!(comm_string("caf\u{e9}".as_bytes()), "caf\u{e9}");
}

/// A comm through the whole JSON path: one line, valid JSON, parsed back to
/// `want`.
fn comm_json_round_trip(raw: &[u8], want: &str) {
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(Some(&owner(1, raw, None)), AttributedBy::SocketOwner);
    let line = json(&e);
    assert!(!line.contains('\n'), "raw newline in {line:?}");
    assert!(!line.contains('\t'), "raw tab in {line:?}");
    assert!(!line.contains('\0'), "raw NUL in {line:?}");
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(v["comm"], serde_json::Value::String(want.to_string()));
}

#[test]
fn comm_with_awkward_bytes_is_valid_json() {
    comm_json_round_trip(b"a\xffb\"\\\n", "a\u{fffd}b\"\\\n");
    comm_json_round_trip(b"say \"hi\"", "say \"hi\"");
    comm_json_round_trip(b"back\\slash", "back\\slash");
    comm_json_round_trip(b"tab\there", "tab\there");
    comm_json_round_trip(b"line\nbreak", "line\nbreak");
    comm_json_round_trip(b"nul\0hidden", "nul");
    comm_json_round_trip(b"\x01\x1b[31m\x7f", "\u{1}\u{1b}[31m\u{7f}");
    comm_json_round_trip(b"\xc3\x28\xa0\xa1", "\u{fffd}(\u{fffd}\u{fffd}");
}

#[test]
fn comm_escapes_exactly() {
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(
        Some(&owner(1, b"a\xffb\"\\\n\t\x01", None)),
        AttributedBy::SocketOwner,
    );
    let line = json(&e);
    assert!(line.contains(r#""comm":"a�b\"\\\n\t\u0001","#), "{line}");
}

#[test]
fn errno_names() {
    // Linux numbers, written out so a mix-up in the table shows.
    assert_eq!(errno_name(24), "EMFILE");
    assert_eq!(errno_name(23), "ENFILE");
    assert_eq!(errno_name(105), "ENOBUFS");
    assert_eq!(errno_name(12), "ENOMEM");
    assert_eq!(errno_name(103), "ECONNABORTED");
    assert_eq!(errno_name(4), "EINTR");
    assert_eq!(errno_name(22), "EINVAL");
    assert_eq!(errno_name(9), "EBADF");
    assert_eq!(errno_name(88), "ENOTSOCK");
    assert_eq!(errno_name(95), "EOPNOTSUPP");
    assert_eq!(errno_name(1), "EPERM");
    assert_eq!(errno_name(71), "EPROTO");
    assert_eq!(errno_name(14), "EFAULT");
    assert_eq!(errno_name(11), "EAGAIN");
    assert_eq!(errno_name(9999), "E9999");
    assert_eq!(errno_name(0), "E0");
}

/// `comm` is the process's name; `thread` appears only when the acting
/// thread's name differs from it.
#[test]
fn thread_only_when_it_differs() {
    let with_thread = |thread: &[u8]| {
        Owner::new(
            7,
            b"crt-main\0\0\0\0\0\0\0\0".to_vec(),
            thread.to_vec(),
            None,
        )
    };
    let o = with_thread(b"crt-worker\0\0\0\0\0\0");
    let mut e = Event::new(EventKind::RstSent, TS.into());
    e.set_owner(Some(&o), AttributedBy::SocketOwner);
    let j = json(&e);
    assert!(
        j.contains(r#""comm":"crt-main","thread":"crt-worker","attributed_by""#),
        "{j}"
    );
    let o = with_thread(b"crt-main\0\0\0\0\0\0\0\0");
    e.set_owner(Some(&o), AttributedBy::SocketOwner);
    assert!(!json(&e).contains("thread"), "{}", json(&e));
    let o = with_thread(b"");
    e.set_owner(Some(&o), AttributedBy::SocketOwner);
    assert_eq!(e.thread, None);
    e.set_owner(None, AttributedBy::None);
    assert_eq!((e.comm.clone(), e.thread.clone()), (None, None));
}
