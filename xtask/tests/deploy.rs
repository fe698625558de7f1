//! `deploy/`: the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`), every
//! alert has a test that fires it and one that keeps it quiet, a summary, and a runbook link to a heading of
//! `docs/operations.md`, and every dashboard query is valid PromQL (promtool checks it as a rule).
//!
//! promtool comes with Debian's `prometheus` package; `.ci/run` installs it. That every metric these files
//! name is one the binaries export is checked in `tests/e2e/tests/e2e/metric_names.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// Runs promtool with `args` from the workspace root and fails the test with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "promtool is not installed ({err}): install Debian's prometheus package \
                 (`apt-get install --no-install-recommends prometheus`; .ci/run does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {}:\n{text}",
        args.join(" ")
    );
    text
}

/// The alert names of `alerts.yml`, in order.
fn alerts() -> Vec<String> {
    read("deploy/prometheus/alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn promtool_checks_the_alert_rules() {
    let out = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(
        out.contains(&format!("{} rules found", alerts().len())),
        "{out}"
    );
}

#[test]
fn promtool_runs_the_alert_rules_unit_tests() {
    let out = promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_quiet() {
    let tests = read("deploy/prometheus/alerts_test.yml");
    let mut fired = Vec::new();
    let mut quiet = Vec::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts follows an alertname");
            if expected.trim() == "[]" {
                quiet.push(name);
            } else {
                fired.push(name);
            }
        }
    }
    let names = alerts();
    assert!(!names.is_empty());
    for name in &names {
        assert!(fired.contains(name), "no test fires {name}");
        assert!(quiet.contains(name), "no test keeps {name} quiet");
    }
    for name in fired.iter().chain(&quiet) {
        assert!(
            names.contains(name),
            "a test names {name}, which alerts.yml lacks"
        );
    }
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to hyphens, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_summary_and_a_runbook_link_to_a_heading_of_the_operations_guide() {
    let rules = read("deploy/prometheus/alerts.yml");
    let anchors: Vec<String> = read("docs/operations.md")
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect();
    // Each rule's text runs from its `- alert:` line to the next.
    let mut rules_text: Vec<&str> = rules.split("- alert:").skip(1).collect();
    assert_eq!(rules_text.len(), alerts().len());
    for (name, text) in alerts().iter().zip(rules_text.drain(..)) {
        assert!(text.contains("summary:"), "{name} has no summary");
        assert!(text.contains("description:"), "{name} has no description");
        let link = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("runbook_url:"))
            .unwrap_or_else(|| panic!("{name} has no runbook_url"))
            .trim()
            .trim_matches('"');
        let target = link
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}'s runbook {link} is not into docs/operations.md"));
        assert!(
            anchors.iter().any(|a| a == target),
            "{name}'s runbook anchor #{target} is no heading of docs/operations.md"
        );
    }
}

/// Every `expr` of the dashboard, with Grafana's range variable replaced by a duration.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/slipway.json")).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    collect_exprs(&dashboard, &mut queries);
    queries
        .into_iter()
        .map(|q| {
            q.replace("$__range", "1h")
                .replace("$__rate_interval", "5m")
        })
        .collect()
}

fn collect_exprs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => into.push(expr.clone()),
                    _ => collect_exprs(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    // promtool parses a recording rule's expression as Prometheus would: one rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(query).expect("a string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("slipway-dashboard-{}.yml", std::process::id()));
    std::fs::write(&file, rules).expect("write the rules");
    let path = file.to_string_lossy().into_owned();
    let checked = std::panic::catch_unwind(|| promtool(&["check", "rules", &path]));
    let _ = std::fs::remove_file(&file);
    let out = checked.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    assert!(
        out.contains(&format!("{} rules found", queries.len())),
        "{out}"
    );
}
