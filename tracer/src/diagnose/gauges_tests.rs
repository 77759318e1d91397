use super::*;
use crate::snapshot::ProcessInfo;

const S: u64 = 1_000_000_000;

/// pid 7 holds 60 of 64 fds; pid 8 has a name and unreadable fds; pid 9
/// is gone.
struct Fake;

impl ProcSource for Fake {
    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        let (fd_count, fd_limit) = match pid {
            7 => (60, Some(64)),
            8 => (0, None),
            _ => return None,
        };
        Some(ProcessInfo {
            pid,
            comm: format!("p{pid}").into_bytes(),
            cgroup: None,
            fd_count,
            fd_limit,
        })
    }
}

fn req(now_ns: u64) -> Request {
    Request {
        now_ns,
        seed: vec![8, 9],
        tracked: vec![7],
        close_wait: [(8, 12)].into(),
    }
}

#[test]
fn a_second_names_the_new_holders_then_samples_everyone() {
    let r = read(req(101 * S), &Fake);
    assert_eq!(r.seeds, vec![(8, "p8".to_string()), (9, String::new())]);
    let g = |fds, fd_limit, close_wait| Gauge {
        fds,
        fd_limit,
        close_wait,
    };
    assert_eq!(
        r.gauges,
        vec![
            (7, g(Some(60), Some(64), 0)),
            (8, g(None, None, 12)),
            (9, g(None, None, 0)),
        ]
    );
}

#[test]
fn readings_applied_later_land_where_the_loop_would_have_put_them() {
    // What the event thread did before: seed, then sample, at 101 s.
    let mut before = Timeline::new(100 * S);
    before.seed(7, "p7", Gauge::default());
    let r = read(req(101 * S), &Fake);
    for (pid, comm) in &r.seeds {
        before.seed(*pid, comm, Gauge::default());
    }
    for (pid, g) in &r.gauges {
        before.sample(*pid, 101 * S, *g);
    }
    // Through the collector, applied a second later (and twice seeded).
    let mut after = Timeline::new(100 * S);
    after.seed(7, "p7", Gauge::default());
    let mut s = Sampler::spawn(Fake).expect("thread");
    s.request(req(101 * S));
    let readings = s.finish();
    assert_eq!(readings.len(), 1);
    for r in readings {
        apply(&mut after, r);
    }
    after.seed(8, "p8", Gauge::default());
    assert_eq!(before.procs, after.procs);
    assert_eq!(before.buckets, after.buckets);
}

#[test]
fn a_full_queue_skips_a_second_rather_than_wait() {
    let mut s = Sampler::spawn(Fake).expect("thread");
    for i in 0..(QUEUE as u64 * 4) {
        s.request(req(101 * S + i));
    }
    let n = s.skipped;
    let got = s.finish().len() as u64;
    assert_eq!(got + n, QUEUE as u64 * 4);
}
