//! The timeline in a terminal: one line of Unicode blocks per series, under
//! each process of the text verdict.

use super::timeline::ProcSeries;

const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One block per value, scaled to `max` (the largest value when `None`);
/// a gap (space) where there is no value. Zero is the lowest block.
pub fn sparkline(values: &[Option<u64>], max: Option<u64>) -> String {
    let top = max
        .or_else(|| values.iter().flatten().copied().max())
        .unwrap_or(0);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if top == 0 => BLOCKS[0],
            Some(v) => {
                let i = ((*v).min(top) * (BLOCKS.len() as u64 - 1)).div_ceil(top);
                BLOCKS[i as usize]
            }
        })
        .collect()
}

/// The lines for one process: only the series with something in them.
pub fn lines(p: &ProcSeries) -> Vec<String> {
    let gauge = |v: &[Option<u32>]| v.iter().map(|x| x.map(u64::from)).collect::<Vec<_>>();
    let count = |v: &[u64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
    let mut out = Vec::new();
    let fds = gauge(&p.fds);
    if fds.iter().any(Option::is_some) {
        let last = fds.iter().rev().flatten().next().copied().unwrap_or(0);
        let tail = match p.fd_limit {
            Some(l) => format!("{last} of {l}"),
            None => last.to_string(),
        };
        out.push(row("fds", &sparkline(&fds, p.fd_limit), &tail));
    }
    let cw = gauge(&p.close_wait);
    if cw.iter().flatten().any(|v| *v > 0) {
        let last = cw.iter().rev().flatten().next().copied().unwrap_or(0);
        out.push(row("CLOSE_WAIT", &sparkline(&cw, None), &last.to_string()));
    }
    let busy = gauge(&p.upstream_busy);
    if busy.iter().any(Option::is_some) {
        let last = busy.iter().rev().flatten().next().copied().unwrap_or(0);
        out.push(row(
            "upstream busy",
            &sparkline(&busy, Some(100)),
            &format!("{last} %"),
        ));
        let ms = gauge(&p.upstream_ms);
        let peak = ms.iter().flatten().max().copied().unwrap_or(0);
        out.push(row(
            "exchange ms",
            &sparkline(&ms, None),
            &format!("peak {peak} ms"),
        ));
    }
    for (name, v) in [
        ("accept fails/s", &p.accept_failed),
        ("queue drops/s", &p.overflow_drops),
        ("RSTs sent/s", &p.rst_sent),
        ("RSTs recv/s", &p.rst_received),
    ] {
        if v.iter().any(|x| *x > 0) {
            let peak = v.iter().max().copied().unwrap_or(0);
            out.push(row(
                name,
                &sparkline(&count(v), None),
                &format!("peak {peak}/s"),
            ));
        }
    }
    out
}

fn row(name: &str, line: &str, tail: &str) -> String {
    format!("    {name:<15}{line}  {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_scale_to_the_maximum() {
        let v = [0, 1, 2, 4, 8].map(Some);
        assert_eq!(sparkline(&v, None), "▁▂▃▅█");
        assert_eq!(sparkline(&v, Some(16)), "▁▂▂▃▅");
        assert_eq!(sparkline(&[Some(0), Some(0)], None), "▁▁");
        assert_eq!(sparkline(&[Some(3), None, Some(3)], None), "█ █");
        assert_eq!(sparkline(&[], None), "");
        // Above the given maximum stays at the top block.
        assert_eq!(sparkline(&[Some(99)], Some(10)), "█");
    }

    #[test]
    fn a_process_gets_a_line_per_series_with_something_in_it() {
        let p = ProcSeries {
            fds: vec![Some(32), Some(64), Some(64)],
            fd_limit: Some(64),
            close_wait: vec![Some(0), Some(5), Some(9)],
            accept_failed: vec![0, 0, 12],
            rst_sent: vec![0, 0, 0],
            upstream_busy: vec![None, Some(50), Some(100)],
            upstream_ms: vec![None, Some(150), Some(300)],
            ..Default::default()
        };
        assert_eq!(
            lines(&p),
            vec![
                "    fds            ▅██  64 of 64".to_string(),
                "    CLOSE_WAIT     ▁▅█  9".to_string(),
                "    upstream busy   ▅█  100 %".to_string(),
                "    exchange ms     ▅█  peak 300 ms".to_string(),
                "    accept fails/s ▁▁█  peak 12/s".to_string(),
            ]
        );
    }
}
