//! `switchyard dead`: list dead letters by queue, reason, type and age;
//! show one whole; replay them to their queue (same message id, attempts
//! from 1, marked replayed), where the queue's new plugin handles them;
//! a replay run twice adds one copy; purge.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A configuration on `prefix` whose queue `Q` runs `plugin`.
fn config(prefix: &str, plugin: &str) -> TestConfig {
    let mut cfg = TestConfig::new(&format!(
        r#"
[host]
prefix = "{prefix}"
shutdown_timeout = "5s"
cache_dir = "cache"
[ingress]
stream = "{prefix}:ingress"
visibility_timeout = "1s"
[routes]
"order.placed" = ["Q"]
[queues.Q]
plugin = "@PLUGINS@/{plugin}.wasm"
max_attempts = 2
retry_delay = "100ms"
retry_delay_max = "100ms"
"#
    ));
    cfg.prefix = prefix.to_owned();
    cfg
}

/// Runs `switchyard dead <args>`; its stdout, stderr and success.
fn dead(cfg: &TestConfig, redis: &Redis, args: &[&str]) -> (String, String, bool) {
    let out = Command::new(host_binary())
        .arg("dead")
        .arg("--config")
        .arg(&cfg.path)
        .arg("--redis-url")
        .arg(redis.url())
        .args(args)
        // Its stderr is compared whole: the host's log lines stay out.
        .env_remove("RUST_LOG")
        .output()
        .expect("running switchyard dead");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn listed(cfg: &TestConfig, redis: &Redis, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let (out, err, ok) = dead(cfg, redis, &all);
    assert!(ok, "{out}{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}"))
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_replayed_once_and_purged() {
    init_logs();
    let redis = Redis::start();
    let failing = config(&format!("dead{}", std::process::id()), "always_retry");
    let mut conn = redis.conn().await;
    for n in 1..=3 {
        let body = format!(r#"{{"order":{n},"note":"line one\nline two"}}"#);
        xadd(
            &mut conn,
            failing.ingress(),
            &[
                ("type", "order.placed"),
                ("id", &format!("m-{n}")),
                ("body", &body),
            ],
        )
        .await;
    }
    xadd(
        &mut conn,
        failing.ingress(),
        &[("type", "order.lost"), ("id", "m-x"), ("body", "{}")],
    )
    .await;
    let host = start_host(&failing.config, &redis);
    wait_for(LIMIT, "four dead letters", || {
        let (mut conn, cfg) = (conn.clone(), &failing);
        async move { dead_letters(&mut conn, cfg).await.len() == 4 }
    })
    .await;
    host.stop().await.unwrap();

    // Filters.
    let all = listed(&failing, &redis, &[]);
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_eq!(listed(&failing, &redis, &["--queue", "Q"]).len(), 3);
    let router = listed(&failing, &redis, &["--queue", "(router)"]);
    assert_eq!(router.len(), 1);
    assert_eq!(router[0]["message_id"], "m-x");
    assert_eq!(listed(&failing, &redis, &["--reason", "NO ROUTE"]).len(), 1);
    assert_eq!(
        listed(&failing, &redis, &["--type", "order.placed"]).len(),
        3
    );
    assert_eq!(listed(&failing, &redis, &["--since", "1h"]).len(), 4);
    assert_eq!(listed(&failing, &redis, &["--older-than", "1h"]).len(), 0);
    assert_eq!(listed(&failing, &redis, &["--limit", "2"]).len(), 2);
    let (table, _, ok) = dead(&failing, &redis, &["list", "--queue", "Q"]);
    assert!(ok);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("3 dead letters"), "{table}");
    // --config and --redis-url are taken after the subcommand too, as
    // `status` takes them.
    let after = Command::new(host_binary())
        .args(["dead", "list", "--queue", "Q", "--config"])
        .arg(&failing.path)
        .args(["--redis-url", redis.url()])
        .output()
        .unwrap();
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&after.stdout), table);

    // One whole: the record, the failed attempts, the body pretty-printed
    // with its line break escaped.
    let first = listed(&failing, &redis, &["--queue", "Q"])
        .into_iter()
        .find(|d| d["message_id"] == "m-1")
        .unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["attempts"], 2);
    let (shown, err, ok) = dead(&failing, &redis, &["show", &id]);
    assert!(ok, "{err}");
    assert!(shown.contains("dead-queue: Q"), "{shown}");
    assert!(
        shown.contains("Failed attempts, oldest first:\n  1. "),
        "{shown}"
    );
    assert!(
        shown.contains("    \"note\": \"line one\\nline two\","),
        "{shown}"
    );
    let (json, _, _) = dead(&failing, &redis, &["show", &id, "--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["message"]["id"], "m-1");
    assert_eq!(json["record"]["dead-queue"], "Q");
    let (_, err, ok) = dead(&failing, &redis, &["show", "1-"]);
    assert!(!ok && err.contains("is not a dead-letter id"), "{err}");
    let (_, err, ok) = dead(&failing, &redis, &["replay"]);
    assert!(!ok && err.contains("or give --all"), "{err}");

    // The queue's plugin is fixed; replay one, twice, then the rest.
    let fixed = config(&failing.prefix, "noop");
    let (out, err, ok) = dead(&fixed, &redis, &["replay", &id]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("{id}: replayed to {}", fixed.queue_stream("Q"))),
        "{out}"
    );
    let (out, _, ok) = dead(&fixed, &redis, &["replay", &id]);
    assert!(ok);
    assert!(
        out.contains("not a dead letter (replayed or deleted already)"),
        "{out}"
    );
    assert!(out.contains("0 replayed"), "{out}");
    let (out, err, ok) = dead(&fixed, &redis, &["replay", "--all", "--queue", "Q"]);
    assert!(ok, "{out}{err}");
    assert!(out.ends_with("\n2 replayed\n"), "{out}");
    // Not on a terminal: the progress as plain lines on stderr.
    assert_eq!(err, "replay: 0/2\nreplay: 2/2\n");

    let host = start_host(&fixed.config, &redis);
    let metrics = host.metrics.clone();
    wait_for(LIMIT, "the three replayed messages handled", || {
        let m = metrics.clone();
        async move { m.queues().get("Q").is_some_and(|c| c.succeeded == 3) }
    })
    .await;
    host.stop().await.unwrap();
    let replayed: Vec<_> = entries(&mut conn, &fixed.queue_stream("Q"))
        .await
        .into_iter()
        .filter(|e| field(e, "switchyard-replayed-at").is_some())
        .collect();
    let mut ids: Vec<String> = replayed.iter().map(|e| field(e, "id").unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["m-1", "m-2", "m-3"], "one copy each");
    assert_eq!(
        field(&replayed[0], "body").unwrap(),
        r#"{"order":1,"note":"line one\nline two"}"#
    );

    // What is left: the router's; purged.
    let left = listed(&fixed, &redis, &[]);
    assert_eq!(left.len(), 1);
    let (out, err, ok) = dead(&fixed, &redis, &["purge", "--all", "--queue", "(router)"]);
    assert!(ok && out == "1 deleted\n", "{out}");
    assert_eq!(err, "purge: 0/1\npurge: 1/1\n");
    assert!(listed(&fixed, &redis, &[]).is_empty());
}

/// `status` and `dead` read only the names of the streams: they work with
/// the plugins not built, the secrets' variables unset and the CA files
/// missing, where `run` and `check` would refuse the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dead_need_no_plugin_secret_or_file() {
    let redis = Redis::start();
    let dir = tempdir("dead-unbuilt");
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        r#"
[routes]
"order.placed" = ["Q"]
[queues.Q]
plugin = "not-built.wasm"
http_ca_file = "missing.pem"
[queues.Q.config]
token = { env = "SWITCHYARD_TEST_UNSET_TOKEN" }
[queues.Q.sql]
database_url = { env = "SWITCHYARD_TEST_UNSET_URL" }
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let redis_url: &[&str] = if args[0] == "check" {
            &[]
        } else {
            &["--redis-url", redis.url()]
        };
        Command::new(host_binary())
            .args(args)
            .arg("--config")
            .arg(&path)
            .args(redis_url)
            .env_remove("SWITCHYARD_TEST_UNSET_TOKEN")
            .env_remove("SWITCHYARD_TEST_UNSET_URL")
            .output()
            .unwrap()
    };
    for args in [&["status"][..], &["dead", "list"]] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&["check"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "queues.Q.plugin: plugin file",
        "queues.Q.http_ca_file: ",
        "queues.Q.config.token: the environment variable SWITCHYARD_TEST_UNSET_TOKEN is not set",
        "queues.Q.sql.database_url: the environment variable SWITCHYARD_TEST_UNSET_URL is not set",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Dead letters of every partition: listed together, newest first, each
/// id naming its partition outside partition 0; shown, replayed to their
/// own partition's queue, and purged by those ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_every_partition_are_one_list() {
    init_logs();
    let text = std::fs::read_to_string(&config("deadparts", "always_reject").path)
        .unwrap()
        .replace(
            "visibility_timeout = \"1s\"\n[routes]",
            "visibility_timeout = \"1s\"\npartitions = 3\n[routes]",
        );
    let cfg = TestConfig::new(&text);
    let mut host = TestHost::start_with(cfg).await;
    let keys = host.cfg.keys();
    let partitions = keys.partitions(3);
    for (i, p) in partitions.iter().enumerate() {
        for n in 0..2 {
            let id = format!("p{i}-{n}");
            host.send_fields(
                &p.ingress,
                &[("type", "order.placed"), ("id", &id), ("body", "{}")],
            )
            .await;
        }
    }
    host.settled("Q", 6, LIMIT).await;
    let all = listed(&host.cfg, &host.redis, &[]);
    assert_eq!(all.len(), 6, "{all:?}");
    let ids: Vec<&str> = all.iter().map(|d| d["id"].as_str().unwrap()).collect();
    // Newest first over the partitions.
    let times: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let entry = id.split('@').next().unwrap();
            let (ms, seq) = entry.split_once('-').unwrap();
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{ids:?}");
    for p in &partitions[1..] {
        let suffix = format!("@{}", p.id());
        assert_eq!(
            ids.iter().filter(|id| id.ends_with(&suffix)).count(),
            2,
            "{ids:?}"
        );
    }
    assert_eq!(ids.iter().filter(|id| !id.contains('@')).count(), 2);

    // One of partition 2: shown, replayed into partition 2's queue (where
    // the plugin rejects it again), then every one purged.
    let theirs = *ids
        .iter()
        .find(|id| id.ends_with(&format!("@{}", partitions[2].id())))
        .unwrap();
    let (out, err, ok) = dead(&host.cfg, &host.redis, &["show", theirs]);
    assert!(ok && out.contains("id: p2-"), "{out}{err}");
    let (out, err, ok) = dead(&host.cfg, &host.redis, &["replay", theirs]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("replayed to {}", partitions[2].queue_stream("Q"))),
        "{out}"
    );
    host.settled("Q", 7, LIMIT).await;
    let (out, err, ok) = dead(&host.cfg, &host.redis, &["purge", "--all"]);
    assert!(ok && out.contains("6 deleted"), "{out}{err}");
    assert!(listed(&host.cfg, &host.redis, &[]).is_empty());
}
