use super::*;
use tracer_common::exchange::{ExchAgg, bucket_of};

fn key(tgid: u32, dir: u8, port: u16) -> ExchKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    ExchKey {
        tgid,
        family: 2,
        port,
        dir,
        addr: if dir == DIR_UPSTREAM { addr } else { [0; 16] },
        ..ExchKey::default()
    }
}

fn agg(durations_ms: &[u64], sockets: i64) -> ExchAgg {
    let mut a = ExchAgg {
        sockets: sockets as u64,
        ..ExchAgg::default()
    };
    for d in durations_ms {
        a.count += 1;
        a.busy_ns += d * 1_000_000;
        a.buckets[bucket_of(d * 1000)] += 1;
    }
    a
}

fn encoded(x: &ExchangeMetrics) -> String {
    let mut r = prometheus_client::registry::Registry::default();
    r.register("up_conns", "c", x.connections.clone());
    r.register("up_busy", "b", x.busy.clone());
    r.register("up_time", "t", x.upstream_time.clone());
    r.register("served_time", "s", x.served_time.clone());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).expect("encodes");
    out
}

const SEC: u64 = 1_000_000_000;

#[test]
fn two_busy_pool_connections_and_a_served_port() {
    let x = ExchangeMetrics::new(100);
    let comm = |tgid: u32| Some(format!("p{tgid}"));
    let up = key(7, DIR_UPSTREAM, 5432);
    let served = key(7, DIR_SERVED, 8080);
    x.refresh([(up, agg(&[], 2))].into(), 10 * SEC, &comm);
    // Over the next 2 s: 12 exchanges of 300 ms on 2 connections = 3.6 s of
    // 4 s: busy 0.9. 6 responses of 1 ms on :8080.
    x.refresh(
        [(up, agg(&[300; 6], 2)), (served, agg(&[1; 6], 6))].into(),
        11 * SEC,
        &comm,
    );
    x.refresh(
        [(up, agg(&[300; 12], 2)), (served, agg(&[1; 6], 6))].into(),
        12 * SEC,
        &comm,
    );
    let text = encoded(&x);
    let labels = r#"remote="127.0.0.1:5432",comm="p7""#;
    assert!(text.contains(&format!("up_conns{{{labels}}} 2")), "{text}");
    assert!(text.contains(&format!("up_busy{{{labels}}} 0.9")), "{text}");
    assert!(
        text.contains(&format!("up_time_count{{{labels}}} 12")),
        "{text}"
    );
    assert!(
        text.contains(&format!("up_time_sum{{{labels}}} 3.6")),
        "{text}"
    );
    // 300 ms is in [262, 327) ms: not under 0.262144 s, under 0.524288 s.
    assert!(
        text.contains(&format!("up_time_bucket{{le=\"0.262144\",{labels}}} 0")),
        "{text}"
    );
    assert!(
        text.contains(&format!("up_time_bucket{{le=\"0.524288\",{labels}}} 12")),
        "{text}"
    );
    assert!(
        text.contains(r#"served_time_count{local_port="8080",comm="p7"} 6"#),
        "{text}"
    );
}

#[test]
fn an_evicted_total_never_makes_the_histogram_go_down() {
    let x = ExchangeMetrics::new(100);
    let comm = |_| None;
    let up = key(9, DIR_UPSTREAM, 6379);
    x.refresh([(up, agg(&[5; 10], 1))].into(), SEC, &comm);
    x.refresh([(up, agg(&[5; 20], 1))].into(), 2 * SEC, &comm);
    // Evicted and started again from 3: 10 + 10 + 3 since tracer started.
    x.refresh([(up, agg(&[5; 3], 1))].into(), 3 * SEC, &comm);
    let text = encoded(&x);
    assert!(
        text.contains(r#"up_time_count{remote="127.0.0.1:6379",comm="unknown"} 23"#),
        "{text}"
    );
}

#[test]
fn label_sets_past_the_cap_fold_into_other_and_idle_pools_are_not_busy() {
    let x = ExchangeMetrics::new(1);
    let comm = |_| Some("api".to_owned());
    let (a, b) = (key(1, DIR_UPSTREAM, 1000), key(1, DIR_UPSTREAM, 2000));
    let totals = || -> Totals { [(a, agg(&[], 1)), (b, agg(&[], 3))].into() };
    x.refresh(totals(), SEC, &comm);
    x.refresh(totals(), 2 * SEC, &comm);
    let text = encoded(&x);
    let first = if text.contains("127.0.0.1:1000") {
        (1, 3)
    } else {
        (3, 1)
    };
    assert!(
        text.contains(r#"up_conns{remote="other",comm="other"}"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"up_conns{{remote="other",comm="other"}} {}"#,
            first.1
        )),
        "{text}"
    );
    assert!(
        text.contains("up_busy{") && text.contains("} 0.0"),
        "{text}"
    );
}
