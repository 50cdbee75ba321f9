//! The Persistence schema and its statements, on a private PostgreSQL
//! server: `switchyard migrate` applies the migrations once (and refuses
//! a file changed after it was applied), and every message type's
//! statements (`chat_events::store`) run against that schema through the
//! host's SQL pool, twice without a second row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard::metrics::QueueMetrics;
use switchyard::plugin::sql::{QueueSql, Value as Db};
use switchyard_standins::postgres::Postgres;
use switchyard_tests::*;

fn config(pg: &Postgres, migrations: &std::path::Path) -> TestConfig {
    TestConfig::with_env(
        &format!(
            r#"
[routes]
"a" = ["P"]
[queues.P]
plugin = "@PLUGINS@/noop.wasm"
[queues.P.sql]
database_url = {{ env = "TEST_DATABASE_URL" }}
migrations = "{}"
"#,
            migrations.display()
        ),
        &[("TEST_DATABASE_URL", &pg.url())],
    )
}

fn param(p: chat_events::store::Param) -> Db {
    use chat_events::store::Param;
    match p {
        Param::Null => Db::Null,
        Param::Bool(b) => Db::Boolean(b),
        Param::Int32(n) => Db::Int32(n),
        Param::Int64(n) => Db::Int64(n),
        Param::Float(f) => Db::Floating64(f),
        Param::Text(s) => Db::Str(s),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_applied_once_and_takes_every_message_type() {
    init_logs();
    let pg = Postgres::start("chat").unwrap();
    let shipped = repo_root().join("plugins/persistence/migrations");
    let cfg = config(&pg, &shipped);
    let queue = &cfg.config.queues["P"];

    let first = switchyard::migrate::migrate(queue).await.unwrap();
    assert_eq!(first.applied, ["0001_chat_events.sql"]);
    let again = switchyard::migrate::migrate(queue).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already, 1);
    // The command: its report on stdout, its progress on stderr (plain
    // lines, not being on a terminal).
    let out = std::process::Command::new(host_binary())
        .args(["migrate", "--config"])
        .arg(&cfg.path)
        .env("TEST_DATABASE_URL", pg.url())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "P: 0 applied now, 1 before\n");
    assert_eq!(stderr, "migrate: 0/1\nmigrate: 1/1\n");

    // Every sample event of the demo, stored twice.
    let sql = QueueSql::new(
        "P",
        queue.sql.clone().unwrap(),
        Arc::new(QueueMetrics::default()),
    )
    .unwrap();
    let events = std::fs::read_to_string(repo_root().join("demo/events.jsonl")).unwrap();
    let mut stored = 0;
    for line in events.lines().filter(|l| l.starts_with('{')) {
        let event: Value = serde_json::from_str(line).unwrap();
        let (Some(t), Some(id)) = (event["type"].as_str(), event["id"].as_str()) else {
            continue;
        };
        let Ok(plan) = chat_events::store::plan(id, t, &event["body"].to_string()) else {
            continue; // the demo's malformed samples
        };
        for _ in 0..2 {
            for s in plan.clone() {
                let params: Vec<Db> = s.params.into_iter().map(param).collect();
                let deadline = Instant::now() + Duration::from_secs(5);
                sql.run(None, s.sql, &params, deadline, false)
                    .await
                    .unwrap_or_else(|e| panic!("{t}: {e}\n{}", s.sql));
            }
        }
        stored += 1;
    }
    assert!(stored >= 15, "{stored} sample events stored");
    for (table, rows) in [
        ("chats", "1"),
        ("chat_queue_logs", "1"),
        ("offline_messages", "1"),
        ("agent_status_logs", "1"),
    ] {
        assert_eq!(
            pg.psql(&format!("SELECT count(*) FROM {table}")),
            rows,
            "{table}"
        );
    }
    assert_ne!(pg.psql("SELECT count(*) FROM chat_messages"), "0");

    // A migration changed after it was applied is refused.
    let dir = tempdir("migrations");
    std::fs::write(dir.join("0001_chat_events.sql"), "SELECT 1;").unwrap();
    let changed = config(&pg, &dir);
    let e = switchyard::migrate::migrate(&changed.config.queues["P"])
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("was changed after it was applied"),
        "{e:#}"
    );
}
