//! Every metric that a rule of `deploy/prometheus/alerts.yml` or a panel of `deploy/grafana/slipway.json`
//! names is one the binaries export: api-server and job-worker are started as the harness starts them (in
//! one process, so one `/metrics` shows both) and their exposition is read. A histogram's `_bucket`, `_sum`
//! and `_count` series count as its own.
//!
//! Each binary declares its metrics at start (`register` in `bins/*/src/metrics.rs`), so a name is on
//! `/metrics` before anything happened. A new metric that a rule or a panel uses must be declared there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{spawn_app, Mode, Options};

/// Metric names start with one of these (ours, and the HTTP middleware's).
const PREFIXES: [&str; 2] = ["slipway_", "http_"];
const WAIT: Duration = Duration::from_secs(20);

fn deploy_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// The metric names in a PromQL text: identifiers starting with one of [`PREFIXES`].
fn names_in(promql: &str, into: &mut BTreeSet<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for token in promql.split(|c: char| !is_ident(c)) {
        if PREFIXES.iter().any(|p| token.starts_with(p)) {
            into.insert(token.to_owned());
        }
    }
}

/// Metric names used by the alert rules (comments left out) and by the dashboard's queries, with where.
fn referenced() -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    let mut rules = BTreeSet::new();
    let text = deploy_file("prometheus/alerts.yml");
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        names_in(line, &mut rules);
    }
    let mut panels = BTreeSet::new();
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana/slipway.json")).expect("the dashboard is JSON");
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => names_in(expr, &mut panels),
                        _ => stack.push(value),
                    }
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out.extend(
        rules
            .into_iter()
            .map(|n| (n, "deploy/prometheus/alerts.yml")),
    );
    out.extend(
        panels
            .into_iter()
            .map(|n| (n, "deploy/grafana/slipway.json")),
    );
    out
}

/// `# TYPE <name> <type>` of an exposition.
fn exported(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// Whether `name` is an exported metric or a series of an exported histogram (or summary).
fn is_exported(name: &str, types: &BTreeMap<String, String>) -> bool {
    if types.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| types.get(base))
            .is_some_and(|kind| kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
    })
}

pub async fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let wanted = referenced();
    assert!(
        wanted.len() >= 15,
        "too few metric names found in deploy/: {wanted:?}"
    );
    let app = spawn_app(Mode::Local, Options::default()).await;
    // A request first, so that the HTTP metrics have a series.
    let health = app.client.get(app.url("/healthz")).send().await;
    assert!(health.is_ok_and(|r| r.status().is_success()));
    // The worker declares its metrics when its loop starts, in its own thread: read until it has.
    let deadline = tokio::time::Instant::now() + WAIT;
    let missing = loop {
        let text = match app.client.get(app.url("/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let types = exported(&text);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(name, _)| !is_exported(name, &types))
            .map(|(name, file)| format!("{name} (named in {file})"))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "metrics named in deploy/ that neither api-server nor job-worker exports (declare them in \
         bins/*/src/metrics.rs `register`): {missing:#?}"
    );
    app.shut_down().await;
}

#[test]
fn histogram_series_count_as_their_histogram() {
    let types = exported(
        "# TYPE slipway_resume_seconds histogram\n# TYPE slipway_jobs gauge\nslipway_jobs 1\n",
    );
    assert!(is_exported("slipway_resume_seconds_bucket", &types));
    assert!(is_exported("slipway_resume_seconds_count", &types));
    assert!(is_exported("slipway_jobs", &types));
    assert!(!is_exported("slipway_jobs_count", &types));
    assert!(!is_exported("slipway_nothing_total", &types));
    let mut names = BTreeSet::new();
    names_in(
        r#"sum(rate(http_requests_total{status=~"5.."}[5m])) / max(slipway_jobs{status="queued"})"#,
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["http_requests_total", "slipway_jobs"]
    );
}
