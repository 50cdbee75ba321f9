//! What `deploy/` ships for operators who run Prometheus and Grafana: the
//! alert rules pass `promtool check rules` and their unit tests on
//! synthetic series (`promtool test rules`, alerts.test.yml); the Grafana
//! dashboard is valid JSON with its queue variable; and every metric and
//! every `by` label the rules and the dashboard use is one a real host
//! serves on `/metrics`, so a renamed metric breaks this test, not an
//! operator's alerting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    let said = promtool(&dir, &["check", "rules", "alerts.yml"]);
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
    let said = promtool(&dir, &["test", "rules", "alerts.test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Each metric a host serves, with the labels its series carry.
fn served(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map_or("", |(l, _)| l)),
            None => (line.split_whitespace().next().unwrap_or(""), ""),
        };
        let entry = metrics.entry(name.to_owned()).or_default();
        // Label values are quoted and may hold commas: take each name
        // before `="`.
        let mut rest = labels;
        while let Some((name, after)) = rest.split_once("=\"") {
            entry.insert(name.trim_start_matches(',').trim().to_owned());
            let mut escaped = false;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(after.len(), |(i, _)| i + 1);
            rest = &after[end..];
        }
    }
    metrics
}

/// The metric names in a PromQL expression and the labels it names: in
/// its `by (…)` clauses and its matchers (`{queue=~"$queue"}`).
fn used(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut i = 0;
    while let Some(at) = expr[i..].find("switchyard_") {
        let start = i + at;
        let end = expr[start..]
            .find(|c| !word(c))
            .map_or(expr.len(), |n| start + n);
        metrics.insert(expr[start..end].to_owned());
        i = end;
    }
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let after = &rest[at + 4..];
        let close = after.find(')').expect("a closed by clause");
        labels.extend(
            after[..close]
                .split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
        rest = &after[close..];
    }
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').expect("closed matchers");
        // `name="value"`, `name=~"…"`, `name!="…"`: the name before the
        // operator; values hold no comma here.
        for matcher in after[..close].split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
            if !name.is_empty() {
                labels.insert(name.to_owned());
            }
        }
        rest = &after[close..];
    }
    (metrics, labels)
}

/// The `expr:` of each rule in alerts.yml (one line, or a `|` block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = line.split_once("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != "|" {
            exprs.push(value.to_owned());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent.len() {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        exprs.push(block);
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_and_the_grafana_dashboard_use_metrics_a_host_serves() {
    init_logs();
    let redis = Redis::start();
    let port = free_port();
    let cfg = TestConfig::new(&format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
stats_interval = "200ms"
[ingress]
stream = "@PREFIX@:ingress"
partitions = 2
[routes]
"ok" = ["Ok"]
"bad" = ["Bad"]
[queues.Ok]
plugin = "@PLUGINS@/noop.wasm"
[queues.Bad]
plugin = "@PLUGINS@/always_reject.wasm"
"#
    ));
    let mut conn = redis.conn().await;
    for (kind, id) in [("ok", "1"), ("bad", "2"), ("lost", "3")] {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", kind), ("id", id), ("body", "{}")],
        )
        .await;
    }
    let host = start_host(&cfg.config, &redis);
    wait_for(LIMIT, "every message settled", || {
        let m = host.metrics.clone();
        async move {
            let q = m.queues();
            q.get("Ok").is_some_and(|c| c.succeeded == 1)
                && q.get("Bad").is_some_and(|c| c.dead_lettered == 1)
        }
    })
    .await;
    let metrics = served(&net::get(port, "/metrics").body);
    assert!(metrics.len() > 40, "{metrics:?}");

    let mut exprs: Vec<(String, String)> = Vec::new();
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    for expr in rule_exprs(&rules) {
        exprs.push(("alerts.yml".into(), expr));
    }
    assert_eq!(exprs.len(), 9);
    let grafana: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/switchyard.json")).unwrap(),
    )
    .expect("deploy/grafana/switchyard.json is JSON");
    let variables = grafana["templating"]["list"].as_array().unwrap();
    let queue = variables.iter().find(|v| v["name"] == "queue").unwrap();
    exprs.push((
        "the queue variable".into(),
        queue["definition"].as_str().unwrap().to_owned(),
    ));
    let mut panels = 0;
    for panel in grafana["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().to_owned();
            exprs.push((format!("panel {}", panel["title"]), expr));
            panels += 1;
        }
    }
    assert!(panels > 30, "{panels} panel queries");

    // Labels Prometheus adds to every scraped series, and the buckets'.
    let added = ["instance", "job", "le"];
    let mut problems = Vec::new();
    for (place, expr) in &exprs {
        let (names, labels) = used(expr);
        if names.is_empty() && !expr.starts_with("up{") {
            problems.push(format!("{place}: no switchyard metric in {expr}"));
        }
        for name in &names {
            if !metrics.contains_key(name) {
                problems.push(format!("{place}: {name} is not served"));
            }
        }
        for label in labels.iter().filter(|l| !added.contains(&l.as_str())) {
            if !names
                .iter()
                .any(|n| metrics.get(n).is_some_and(|l| l.contains(label)))
            {
                problems.push(format!(
                    "{place}: no metric of {names:?} has the label {label}"
                ));
            }
        }
    }
    // The queue variable filters every panel of a metric per queue.
    for (place, expr) in exprs.iter().filter(|(p, _)| p.starts_with("panel ")) {
        let (names, _) = used(expr);
        let per_queue = names
            .iter()
            .any(|n| metrics.get(n).is_some_and(|l| l.contains("queue")));
        if per_queue && !expr.contains("queue=~\"$queue\"") {
            problems.push(format!(
                "{place}: not filtered by the queue variable: {expr}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    host.stop().await.unwrap();
}
