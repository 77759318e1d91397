//! Inline SVG line charts of the per-second series: nothing to fetch, so a
//! report opens offline years later. One polyline point per second.

use std::fmt::Write as _;

use super::timeline::Marker;

const W: f64 = 720.0;
const H: f64 = 110.0;
const PAD_L: f64 = 44.0;
const PAD_R: f64 = 10.0;
const PAD_T: f64 = 10.0;
const PAD_B: f64 = 20.0;

/// One line of a chart.
pub struct Line<'a> {
    pub label: &'a str,
    /// CSS class (its colour).
    pub class: &'a str,
    /// One value per second; `None` where unknown (the line holds the last
    /// known value across a gap, or starts at the first known one).
    pub values: Vec<Option<f64>>,
}

/// A chart: `lines` over `seconds` seconds, a dashed `limit` if any, and
/// the markers as labelled vertical rules.
pub fn chart(
    title: &str,
    seconds: usize,
    lines: &[Line<'_>],
    limit: Option<f64>,
    markers: &[Marker],
) -> String {
    let seconds = seconds.max(1);
    let top = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten().copied())
        .chain(limit)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |i: usize| {
        let span = (seconds - 1).max(1) as f64;
        PAD_L + (W - PAD_L - PAD_R) * i as f64 / span
    };
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - v / top);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure class="chart"><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}" data-seconds="{seconds}">"#,
        esc(title),
        esc(title)
    );
    // Axes and scale.
    let _ = write!(
        s,
        r#"<line class="axis" x1="{PAD_L}" y1="{}" x2="{}" y2="{}"/><text class="tick" x="{}" y="{}" text-anchor="end">{}</text><text class="tick" x="{}" y="{}" text-anchor="end">0</text><text class="tick" x="{PAD_L}" y="{}">0 s</text><text class="tick" x="{}" y="{}" text-anchor="end">{} s</text>"#,
        H - PAD_B,
        W - PAD_R,
        H - PAD_B,
        PAD_L - 4.0,
        PAD_T + 8.0,
        fmt_num(top),
        PAD_L - 4.0,
        H - PAD_B,
        H - 4.0,
        W - PAD_R,
        H - 4.0,
        seconds
    );
    if let Some(l) = limit {
        let _ = write!(
            s,
            r#"<line class="limit" x1="{PAD_L}" y1="{y:.1}" x2="{}" y2="{y:.1}"><title>limit {}</title></line>"#,
            W - PAD_R,
            fmt_num(l),
            y = y(l)
        );
    }
    for (i, m) in markers.iter().enumerate() {
        let mx = x(m.bucket.min(seconds - 1));
        // Labels stack downwards; past the middle they end at their rule.
        let (tx, anchor) = if mx > W / 2.0 {
            (mx - 3.0, "end")
        } else {
            (mx + 3.0, "start")
        };
        let _ = write!(
            s,
            r#"<line class="marker" x1="{mx:.1}" y1="{PAD_T}" x2="{mx:.1}" y2="{}"/><text class="marker" x="{tx:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
            H - PAD_B,
            PAD_T + 10.0 + 11.0 * (i % 6) as f64,
            esc(&m.what)
        );
    }
    for l in lines {
        let pts = filled(&l.values, seconds);
        let points: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="{}" data-points="{}" points="{}"><title>{}</title></polyline>"#,
            esc(l.class),
            points.len(),
            points.join(" "),
            esc(l.label)
        );
    }
    s.push_str("</svg><div class=\"legend\">");
    for l in lines {
        let _ = write!(
            s,
            r#"<span class="key {}">{}</span>"#,
            esc(l.class),
            esc(l.label)
        );
    }
    s.push_str("</div></figure>");
    s
}

/// Exactly `n` values: gaps hold the last known value (the first known one
/// before it), 0 when nothing is known.
fn filled(values: &[Option<f64>], n: usize) -> Vec<f64> {
    let first = values.iter().flatten().next().copied().unwrap_or(0.0);
    let mut last = first;
    (0..n)
        .map(|i| {
            if let Some(Some(v)) = values.get(i) {
                last = *v;
            }
            last
        })
        .collect()
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// HTML/XML text escaping (names of processes may hold any bytes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_second_and_gaps_hold_the_last_value() {
        let svg = chart(
            "fds",
            4,
            &[Line {
                label: "open fds",
                class: "fds",
                values: vec![None, Some(2.0), None],
            }],
            Some(4.0),
            &[Marker {
                bucket: 2,
                what: "first <EMFILE>".into(),
            }],
        );
        assert!(svg.contains(r#"data-points="4""#), "{svg}");
        assert!(svg.contains(r#"data-seconds="4""#), "{svg}");
        assert!(svg.contains("first &lt;EMFILE&gt;"), "{svg}");
        assert!(svg.contains(r#"class="limit""#), "{svg}");
        assert_eq!(
            filled(&[None, Some(2.0), None], 4),
            vec![2.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(filled(&[], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\u{1b}b"), "a\u{FFFD}b");
    }
}
