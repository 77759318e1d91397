use super::*;
use std::net::{Ipv4Addr, SocketAddrV4};

fn entry(netns: u32, inode: u64) -> SocketEntry {
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80));
    SocketEntry {
        netns,
        family: 2,
        state: TCP_LISTEN,
        local: any,
        remote: any,
        inode,
        uid: 0,
        rqueue: 0,
        wqueue: 0,
        drops: Some(0),
        tcp: None,
        cookie: 1,
    }
}

#[test]
fn snapshot_attribution_uses_the_sockets_netns() {
    let mut snap = Snapshot {
        sockets: vec![entry(111, 5000), entry(222, 6000)],
        ..Default::default()
    };
    let held = [
        // A process in netns 111 holding a socket created in netns 222
        // (it called setns before socket()).
        proc::HeldSocket {
            pid: 7,
            netns: 111,
            inode: 6000,
        },
        proc::HeldSocket {
            pid: 9,
            netns: 111,
            inode: 5000,
        },
        proc::HeldSocket {
            pid: 8,
            netns: 111,
            inode: 5000,
        },
        // A socket sock_diag did not report (UDP, unix...).
        proc::HeldSocket {
            pid: 9,
            netns: 111,
            inode: 7000,
        },
    ];
    attribute(&mut snap, held.to_vec());
    assert_eq!(snap.owners.get(&(222, 6000)), Some(&7));
    assert_eq!(snap.owners.get(&(111, 5000)), Some(&8));
    assert_eq!(snap.shared_owners.get(&(111, 5000)), Some(&vec![8, 9]));
    assert_eq!(snap.owners.get(&(111, 7000)), Some(&9));
    assert_eq!(snap.owner_of(&snap.sockets[1].clone()), Some(7));
    assert_eq!(snap.owners.len(), 3);
}

#[test]
fn snapshot_state_names() {
    assert_eq!(tcp_state_name(TCP_LISTEN), "LISTEN");
    assert_eq!(tcp_state_name(TCP_CLOSE_WAIT), "CLOSE_WAIT");
    assert_eq!(tcp_state_name(TCP_NEW_SYN_RECV), "NEW_SYN_RECV");
    assert_eq!(tcp_state_name(200), "UNKNOWN");
}

#[test]
fn snapshot_warnings_are_capped() {
    let mut snap = Snapshot::default();
    for i in 0..100 {
        snap.warn(format!("w{i}"));
    }
    assert_eq!(snap.warnings, 100);
    assert_eq!(snap.warning_samples.len(), MAX_WARNING_SAMPLES);
}
