//! The JSON Schemas in schema/ (draft 2020-12) against what tracer really
//! prints: every line of a `watch --states --summary-every 1` run with every
//! kind of event (root), the verdicts of `diagnose` (root), the examples in
//! the docs, and hand-broken events the schema must refuse.
//!
//! Run: `cargo test -p tracer --test ecosystem_schema` (root for the real
//! output; the rest runs anywhere).

mod common;
mod ecosystem_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use common::{Netns, Tracer, dump, in_netns, require_root};
use ecosystem_common::{TRAFFIC, done_fields, free_port};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn schema_dir() -> PathBuf {
    repo().join("schema")
}

fn load(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Resolves `verdict.schema.json` (referenced by the event schema) from the
/// schema directory, and nothing else: no network.
struct SchemaFiles(PathBuf);

impl jsonschema::Retrieve for SchemaFiles {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = PathBuf::from(uri.path().as_str());
        if uri.scheme().as_str() != "file" || path.parent() != Some(self.0.as_path()) {
            return Err(format!("refusing to fetch {uri}").into());
        }
        Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let path = schema_dir().join(name);
    jsonschema::options()
        .with_base_uri(format!("file://{}", path.display()))
        .with_retriever(SchemaFiles(schema_dir()))
        .should_validate_formats(true)
        .build(&load(&path))
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

/// Every error of `v` on `instance`, one per line (empty when valid).
fn errors(v: &jsonschema::Validator, instance: &Value) -> String {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errs = errors(v, instance);
    assert!(
        errs.is_empty(),
        "{what} does not match the schema:\n{errs}\n{instance}"
    );
}

#[test]
fn schemas_are_draft_2020_12() {
    for name in ["event.schema.json", "verdict.schema.json"] {
        let s = load(&schema_dir().join(name));
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("{name} is not a valid schema: {e}");
        }
        validator(name);
    }
}

/// A valid rst_sent line, to break in the negative cases.
fn rst_sent() -> Value {
    json!({"v":1,"ts":"2026-11-25T20:43:35.689300358Z","event":"rst_sent","pid":32209,
        "comm":"python3","attributed_by":"current_task","cgroup":"/system.slice/docker-3f2a9c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope",
        "container_id":"3f2a9c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
        "family":"inet","local_addr":"127.0.0.1","local_port":57331,"remote_addr":"127.0.0.1",
        "remote_port":39206,"state":"CLOSE","reason":"TCP_ABORT_ON_CLOSE","netns":4026531833_u64,
        "socket_inode":45488})
}

#[test]
fn the_schema_refuses_broken_events() {
    let v = validator("event.schema.json");
    assert_valid(&v, &rst_sent(), "the base case");
    let mut storm = rst_sent();
    storm["count"] = json!(4900);
    storm["remote_sample"] =
        json!([{"addr": "10.0.0.2", "port": 40001}, {"addr": "::1", "port": 2}]);
    assert_valid(&v, &storm, "a storm line");
    let mut made = rst_sent();
    made["count"] = json!(3000);
    made["local_sample"] = json!([{"addr": "10.0.0.1", "port": 40001}]);
    assert_valid(
        &v,
        &made,
        "a storm line of connections made to one remote port",
    );
    type Break = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Break)> = vec![
        ("unknown field", Box::new(|e| e["surprise"] = json!(1))),
        (
            "missing reason",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("reason");
            }),
        ),
        (
            "missing cgroup",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("cgroup");
            }),
        ),
        (
            "port out of range",
            Box::new(|e| e["local_port"] = json!(70000)),
        ),
        (
            "address",
            Box::new(|e| e["remote_addr"] = json!("not-an-ip")),
        ),
        (
            "timestamp",
            Box::new(|e| e["ts"] = json!("2026-11-25 20:43:35")),
        ),
        ("version", Box::new(|e| e["v"] = json!(2))),
        ("event kind", Box::new(|e| e["event"] = json!("rst"))),
        (
            "short container id",
            Box::new(|e| e["container_id"] = json!("3f2a9c0b1d4e")),
        ),
        (
            "pod uid",
            Box::new(|e| e["pod_uid"] = json!("1b4e28ba_2fa1")),
        ),
        (
            "no owner yet a pid",
            Box::new(|e| e["attributed_by"] = json!("none")),
        ),
        ("errno on an rst", Box::new(|e| e["errno"] = json!(24))),
        (
            "a storm count without its sample",
            Box::new(|e| e["count"] = json!(500)),
        ),
        (
            "a sample without its count",
            Box::new(|e| e["remote_sample"] = json!([{"addr": "10.0.0.2", "port": 1}])),
        ),
        (
            "both samples",
            Box::new(|e| {
                e["count"] = json!(500);
                e["remote_sample"] = json!([{"addr": "10.0.0.2", "port": 1}]);
                e["local_sample"] = json!([{"addr": "10.0.0.1", "port": 2}]);
            }),
        ),
        (
            "a local sample without its count",
            Box::new(|e| e["local_sample"] = json!([{"addr": "10.0.0.1", "port": 1}])),
        ),
        (
            "an empty sample",
            Box::new(|e| {
                e["count"] = json!(500);
                e["remote_sample"] = json!([]);
            }),
        ),
        (
            "accept_failed without its fields",
            Box::new(|e| e["event"] = json!("accept_failed")),
        ),
    ];
    for (what, f) in broken {
        let mut e = rst_sent();
        f(&mut e);
        assert!(!v.is_valid(&e), "accepted with {what}: {e}");
    }
}

/// Whole JSON objects on one line in a markdown file.
fn doc_examples(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("{\"v\":1,") && l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

#[test]
fn documented_examples_match_the_schema() {
    let events = validator("event.schema.json");
    let verdict = validator("verdict.schema.json");
    let mut n = 0;
    for doc in ["README.md", "docs/schema.md", "docs/operations.md"] {
        for ex in doc_examples(&repo().join(doc)) {
            let v = if ex.get("event").is_some() {
                &events
            } else {
                &verdict
            };
            assert_valid(v, &ex, &format!("an example in {doc}"));
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} examples found in the docs");
}

#[test]
fn real_output_matches_the_schema() {
    if !require_root("real_output_matches_the_schema") {
        return;
    }
    let events_v = validator("event.schema.json");
    let verdict_v = validator("verdict.schema.json");
    let ns = Netns::new();
    // Fixed ports, filtered on: a storm elsewhere cannot crowd them out.
    let mut args = vec!["--states", "--summary-every", "1"];
    for p in ["7401", "7402", "7403", "7404", "7405"] {
        args.extend(["--port", p]);
    }
    let tracer = Tracer::watch_json(&args);
    let mut traffic = ns.python("traffic", TRAFFIC, &[]);
    traffic.line();
    for cmd in [
        "abort 3 7401",
        "closed 2 7402",
        "emfile 3 7403",
        "overflow 1 4 7404",
        "close_wait 2 7405",
    ] {
        traffic.send(cmd);
        done_fields(&traffic.line());
    }
    let kinds = [
        "rst_sent",
        "rst_received",
        "state_change",
        "accept_failed",
        "listen_overflow",
    ];
    let all_seen = tracer.wait_for(Duration::from_secs(15), |ev| {
        let mine = in_netns(ev, ns.inode());
        kinds.iter().all(|k| mine.iter().any(|e| e["event"] == *k))
            && ev.iter().any(|e| e["event"] == "summary")
    });
    let stopped = tracer.stop();
    let events = stopped.events();
    assert!(all_seen, "{}", dump(&in_netns(&events, ns.inode())));
    for e in &events {
        assert_valid(&events_v, e, "a watch line");
    }

    // diagnose: a window with the same trouble, then a quiet one.
    let diag = Tracer::start(&[
        "diagnose",
        "--format",
        "json",
        "--duration",
        "3",
        "--port",
        "7406",
        "--port",
        "7407",
    ]);
    traffic.send("emfile 20 7406");
    traffic.line();
    traffic.send("abort 12 7407");
    traffic.line();
    let out = diag.wait_exit(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.stderr);
    let verdicts = out.events();
    assert_eq!(verdicts.len(), 1, "{:?}", out.lines);
    assert_valid(&verdict_v, &verdicts[0], "a diagnose verdict");

    let unused = free_port().to_string();
    let quiet = Tracer::start(&[
        "diagnose",
        "--format",
        "json",
        "--duration",
        "1",
        "--port",
        &unused,
    ]);
    let out = quiet.wait_exit(Duration::from_secs(30));
    let v = out.events();
    assert_eq!(v.len(), 1, "{:?}", out.lines);
    assert_eq!(v[0]["verdict"], "healthy", "{}", v[0]);
    assert_valid(&verdict_v, &v[0], "a healthy verdict");
}
