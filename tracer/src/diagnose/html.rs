//! `diagnose --report FILE`: the window as one self-contained HTML page —
//! the verdict in words, a timeline per blamed process, the evidence, and
//! where it came from. Inline CSS and SVG only: no script, no font, nothing
//! fetched, so it opens offline in a ticket years later.

use std::fmt::Write as _;

use serde_json::Value;

use super::model::HostView;
use super::svg::{Line, chart, esc};
use super::timeline::{ProcSeries, Timeline};
use crate::report::{Report, narrative};

/// Where the report came from.
pub struct Meta {
    pub host: String,
    pub kernel: String,
    pub version: &'static str,
    /// The exact command line, shell-quoted.
    pub command: String,
    /// RFC 3339 start of the window.
    pub started: String,
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:980px;color:#1b1f24;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #d0d7de;padding-bottom:4px}\
.verdict{white-space:pre-wrap;background:#fff8e6;border-left:4px solid #d4a72c;padding:10px 14px;margin:12px 0}\
.healthy{background:#eefbf1;border-left-color:#2da44e}\
.chart{margin:8px 0 14px}.chart figcaption{font-weight:600;margin-bottom:2px}\
svg{background:#fafbfc;border:1px solid #e1e4e8}\
polyline{fill:none;stroke-width:2}.fds{stroke:#cf222e}.cw{stroke:#8250df}.af{stroke:#bc4c00}.drops{stroke:#0969da}.sent{stroke:#1a7f37}.recv{stroke:#57606a}.busy{stroke:#9a6700}.xms{stroke:#1b7c83}\
.limit{stroke:#cf222e;stroke-dasharray:5 4;stroke-width:1}.axis{stroke:#8c959f}.marker{stroke:#6e7781;stroke-dasharray:2 3;fill:#57606a;font-size:10px}\
.tick{fill:#57606a;font-size:10px}.legend{font-size:12px;color:#57606a}.key{margin-right:14px}.key:before{content:'';display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle;background:currentColor}\
.key.fds{color:#cf222e}.key.cw{color:#8250df}.key.af{color:#bc4c00}.key.drops{color:#0969da}.key.sent{color:#1a7f37}.key.recv{color:#57606a}.key.busy{color:#9a6700}.key.xms{color:#1b7c83}\
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}\
.meta td:first-child{font-weight:600}code{font-size:12px}";

/// The whole page.
pub fn render(r: &Report, t: &Timeline, host: &HostView, meta: &Meta) -> String {
    let mut s = String::new();
    let title = format!("tracer incident report: {} ({})", meta.host, meta.started);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        s,
        "<h1>{}</h1><div>{} s window from {} on {}</div>",
        esc("Why clients get \"connection reset by peer\""),
        r.window_s,
        esc(&meta.started),
        esc(&meta.host)
    );
    let class = if r.findings.is_empty() {
        "verdict healthy"
    } else {
        "verdict"
    };
    let _ = write!(s, "<div class=\"{class}\">{}</div>", esc(&narrative(r)));
    timelines(&mut s, r, t);
    evidence(&mut s, r, host);
    provenance(&mut s, r, meta);
    s.push_str("</body></html>\n");
    s
}

/// The processes the findings blame, in the findings' order.
pub fn blamed(r: &Report) -> Vec<(u32, Option<String>)> {
    let mut out: Vec<(u32, Option<String>)> = Vec::new();
    for f in &r.findings {
        if let Some(pid) = f.pid
            && !out.iter().any(|(p, _)| *p == pid)
        {
            out.push((pid, f.comm.clone()));
        }
    }
    out
}

fn timelines(s: &mut String, r: &Report, t: &Timeline) {
    let blamed = blamed(r);
    if blamed.is_empty() {
        return;
    }
    s.push_str("<h2>Timeline</h2>");
    for (pid, comm) in blamed {
        let Some(p) = t.procs.get(&pid) else {
            continue;
        };
        let who = match comm.as_deref().or(p.comm.as_deref()) {
            Some(c) => format!("pid {pid} ({c})"),
            None => format!("pid {pid}"),
        };
        let ports: Vec<String> = p.ports.iter().map(|p| format!(":{p}")).collect();
        let _ = write!(
            s,
            "<section class=\"proc\" data-pid=\"{pid}\"><h3>{}{}</h3>",
            esc(&who),
            if ports.is_empty() {
                String::new()
            } else {
                esc(&format!(" — listening on {}", ports.join(", ")))
            }
        );
        charts(s, p, t.buckets, t.step_s);
        s.push_str("</section>");
    }
}

fn charts(s: &mut String, p: &ProcSeries, n: usize, step_s: u64) {
    let gauge = |v: &[Option<u32>]| v.iter().map(|x| x.map(f64::from)).collect::<Vec<_>>();
    let count = |v: &[u64]| v.iter().map(|x| Some(*x as f64)).collect::<Vec<_>>();
    let per = if step_s == 1 {
        "per second".to_string()
    } else {
        format!("per {step_s} s")
    };
    let limit = p.fd_limit.map(|l| l as f64);
    let fd_title = match p.fd_limit {
        Some(l) => format!("File descriptors held (limit {l})"),
        None => "File descriptors held".to_string(),
    };
    s.push_str(&chart(
        &fd_title,
        n,
        &[Line {
            label: "open fds",
            class: "fds",
            values: gauge(&p.fds),
        }],
        limit,
        &p.markers,
    ));
    s.push_str(&chart(
        "Sockets in CLOSE_WAIT (clients gave up, the process never closed)",
        n,
        &[Line {
            label: "CLOSE_WAIT",
            class: "cw",
            values: gauge(&p.close_wait),
        }],
        None,
        &[],
    ));
    s.push_str(&chart(
        &format!("Failed accept() calls and accept-queue drops, {per}"),
        n,
        &[
            Line {
                label: "accept() failures",
                class: "af",
                values: count(&p.accept_failed),
            },
            Line {
                label: "connection attempts dropped",
                class: "drops",
                values: count(&p.overflow_drops),
            },
        ],
        None,
        &[],
    ));
    if p.upstream_busy.iter().any(Option::is_some) {
        s.push_str(&chart(
            "Its connections to upstreams: share of time with a request outstanding (%)",
            n,
            &[Line {
                label: "busy %",
                class: "busy",
                values: gauge(&p.upstream_busy),
            }],
            Some(100.0),
            &[],
        ));
        s.push_str(&chart(
            "Time per exchange with its upstreams (request sent → first reply byte), ms",
            n,
            &[Line {
                label: "mean exchange ms",
                class: "xms",
                values: gauge(&p.upstream_ms),
            }],
            None,
            &[],
        ));
    }
    s.push_str(&chart(
        &format!("RSTs, {per}"),
        n,
        &[
            Line {
                label: "sent",
                class: "sent",
                values: count(&p.rst_sent),
            },
            Line {
                label: "received",
                class: "recv",
                values: count(&p.rst_received),
            },
        ],
        None,
        &[],
    ));
}

fn evidence(s: &mut String, r: &Report, host: &HostView) {
    if !r.findings.is_empty() {
        s.push_str("<h2>Findings</h2><table><tr><th>#</th><th>kind</th><th>process</th><th>what</th><th>evidence</th></tr>");
        for (i, f) in r.findings.iter().enumerate() {
            let v = serde_json::to_value(f).unwrap_or(Value::Null);
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let proc = match (f.pid, &f.comm) {
                (Some(p), Some(c)) => format!("{p} ({c})"),
                (Some(p), None) => p.to_string(),
                _ => "—".into(),
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                i + 1,
                esc(&kind),
                esc(&proc),
                esc(&f.summary),
                esc(&fields(&v))
            );
        }
        s.push_str("</table>");
        upstreams(s, r);
    }
    let mut listeners: Vec<_> = host.listeners.iter().filter(|l| l.queued > 0).collect();
    listeners.sort_by_key(|l| std::cmp::Reverse(l.queued));
    if !listeners.is_empty() {
        s.push_str("<h2>Listeners with connections waiting</h2><table><tr><th>port</th><th>netns</th><th>owner</th><th>accept queue</th></tr>");
        for l in listeners.iter().take(20) {
            let owner = match (l.pid, &l.comm) {
                (Some(p), Some(c)) => format!("{p} ({c})"),
                (Some(p), None) => p.to_string(),
                _ => "—".into(),
            };
            let _ = write!(
                s,
                "<tr><td>:{}</td><td>{}</td><td>{}</td><td>{} of {}</td></tr>",
                l.port,
                l.netns,
                esc(&owner),
                l.queued,
                l.backlog
            );
        }
        s.push_str("</table>");
    }
    let mut near: Vec<_> = host
        .processes
        .iter()
        .filter_map(|(pid, p)| {
            let limit = p.fd_limit.filter(|l| *l > 0)?;
            (u64::from(p.fd_count) * 100 >= limit * 80).then_some((*pid, p, limit))
        })
        .collect();
    near.sort_by_key(|(pid, p, limit)| {
        (
            std::cmp::Reverse(u64::from(p.fd_count) * 1000 / limit),
            *pid,
        )
    });
    if !near.is_empty() {
        s.push_str("<h2>Processes near their fd limit</h2><table><tr><th>pid</th><th>name</th><th>fds</th><th>limit</th></tr>");
        for (pid, p, limit) in near.iter().take(20) {
            let _ = write!(
                s,
                "<tr><td>{pid}</td><td>{}</td><td>{}</td><td>{limit}</td></tr>",
                esc(&p.comm),
                p.fd_count
            );
        }
        s.push_str("</table>");
    }
}

/// Upstream findings (when the verdict has them) as their own table.
fn upstreams(s: &mut String, r: &Report) {
    let rows: Vec<Value> = r
        .findings
        .iter()
        .filter_map(|f| serde_json::to_value(f).ok())
        .filter(|v| v["kind"] == "upstream_saturation")
        .collect();
    if rows.is_empty() {
        return;
    }
    s.push_str(
        "<h2>Upstreams</h2><table><tr><th>process</th><th>upstream</th><th>evidence</th></tr>",
    );
    for v in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}:{}</td><td><code>{}</code></td></tr>",
            esc(&v["pid"].to_string()),
            esc(v["remote_addr"].as_str().unwrap_or("?")),
            esc(&v["remote_port"].to_string()),
            esc(&fields(&v))
        );
    }
    s.push_str("</table>");
}

/// A finding's evidence fields as `key=value`, the words and ids left out.
fn fields(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return String::new();
    };
    obj.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "kind" | "pid" | "comm" | "summary"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn provenance(s: &mut String, r: &Report, meta: &Meta) {
    let c = &r.counters;
    let _ = write!(
        s,
        "<h2>Where this comes from</h2><table class=\"meta\">\
         <tr><td>window</td><td>{} s from {}</td></tr>\
         <tr><td>host</td><td>{}</td></tr><tr><td>kernel</td><td>{}</td></tr>\
         <tr><td>tracer</td><td>{}</td></tr><tr><td>command</td><td><code>{}</code></td></tr>\
         <tr><td>counted</td><td>{} RSTs sent, {} received, {} failed accepts, {} attempts dropped, {} events lost</td></tr></table>",
        r.window_s,
        esc(&meta.started),
        esc(&meta.host),
        esc(&meta.kernel),
        esc(meta.version),
        esc(&meta.command),
        c.rst_sent,
        c.rst_received,
        c.accept_failed,
        c.listen_overflow,
        c.lost
    );
}

#[cfg(test)]
#[path = "html_tests.rs"]
mod tests;
