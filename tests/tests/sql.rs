//! SQL for plugins (`switchyard:plugin/sql`) on a private PostgreSQL
//! server: typed parameters and rows, SQL in a value stored as text,
//! transactions (committed, rolled back, left open by a trap), statement
//! timeouts, a bounded pool, and no SQL without a grant. The `io-probe`
//! plugin runs the statements and reports what each returned.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_standins::postgres::Postgres;
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn sql(op: &str, statement: &str, params: Value) -> Value {
    json!({ "sql": op, "statement": statement, "params": params })
}

fn config(pg: &Postgres, extra: &str) -> TestConfig {
    TestConfig::with_env(
        &format!(
            r#"
[routes]
"db" = ["Db"]
"none" = ["NoDb"]

[queues.Db]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
concurrency = 16
[queues.Db.sql]
database_url = {{ env = "TEST_DATABASE_URL" }}
pool = 4
{extra}

[queues.NoDb]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
"#
        ),
        &[("TEST_DATABASE_URL", &pg.url())],
    )
}

async fn psql(pg: &Postgres, statement: &str) -> String {
    let url = pg.url();
    let statement = statement.to_owned();
    tokio::task::spawn_blocking(move || switchyard_standins::postgres::psql(&url, &statement))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_go_in_typed_and_come_back_typed() {
    let pg = Postgres::start("chat").unwrap();
    psql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY, name text, big bigint, score double precision, ok boolean, at timestamptz, doc jsonb, raw bytea)",
    )
    .await;
    let mut host = TestHost::start_with(config(&pg, "")).await;

    let hostile = "x'); DROP TABLE t; --";
    let report = probe(&mut host.conn, &host.cfg, "db", "db-1", json!([
            sql(
                "execute",
                "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                json!([{"int32": 1}, hostile, 9_000_000_000_i64, 2.5, true, "2026-11-22T09:01:00+08:00", "{\"a\": [1, 2]}", {"binary": [0, 255]}])
            ),
            sql("query", "SELECT id, name, big, score, ok, at, doc, raw FROM t WHERE id = $1", json!([1])),
            sql("query", "SELECT count(*) FROM t", json!([])),
        ]), LIMIT)
    .await;
    assert_eq!(report[0], json!(1), "{report:?}");
    assert_eq!(
        report[1]["rows"],
        json!([[1, hostile, 9_000_000_000_i64, 2.5, true, "2026-11-22T01:01:00+00:00", "{\"a\":[1,2]}", {"binary": [0, 255]}]]),
        "{report:?}"
    );
    assert_eq!(report[1]["columns"][5], json!(["at", "timestamptz"]));
    assert_eq!(report[2]["rows"], json!([[1]]));
    // The SQL in the value was stored as text, and the table is there.
    assert_eq!(psql(&pg, "SELECT name FROM t").await, hostile);

    // Wrong input is the plugin's error, not the host's.
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "db-2",
        json!([
            sql(
                "execute",
                "INSERT INTO t (id) VALUES ($1)",
                json!(["not a number"])
            ),
            sql("execute", "INSERT INTO t (id) VALUES ($1)", json!([1, 2])),
            sql("execute", "INSERT INTO t (id) VALUES ($1)", json!([1])),
            sql("query", "SELECT numeric '1.5'", json!([])),
            sql("execute", "SELEC 1", json!([])),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "invalid", "{report:?}");
    assert!(
        report[0]["error"].as_str().unwrap().contains("$1"),
        "{report:?}"
    );
    assert_eq!(report[1]["kind"], "invalid", "{report:?}");
    assert_eq!(report[2]["kind"], "database", "{report:?}");
    assert!(
        report[2]["error"].as_str().unwrap().contains("23505"),
        "{report:?}"
    );
    assert_eq!(report[3]["kind"], "invalid", "{report:?}");
    assert!(
        report[3]["error"].as_str().unwrap().contains("numeric"),
        "{report:?}"
    );
    assert!(
        report[4]["error"].as_str().unwrap().contains("42601"),
        "{report:?}"
    );

    // A queue without the grant has no SQL.
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "none",
        "none-1",
        json!([sql("query", "SELECT 1", json!([]))]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "not-granted", "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_end_with_the_call() {
    let pg = Postgres::start("chat").unwrap();
    psql(&pg, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let mut host = TestHost::start_with(config(&pg, "")).await;

    let insert = |n: i64| sql("execute", "INSERT INTO t VALUES ($1)", json!([n]));
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "tx-1",
        json!([
            sql("begin", "", json!([])),
            insert(1),
            sql("commit", "", json!([])),
            sql("begin", "", json!([])),
            insert(2),
            sql("rollback", "", json!([])),
            sql("commit", "", json!([])),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(
        report[..6],
        [
            json!("ok"),
            json!(1),
            json!("ok"),
            json!("ok"),
            json!(1),
            json!("ok")
        ]
    );
    assert_eq!(
        report[6]["kind"], "invalid",
        "commit without begin: {report:?}"
    );

    // A call that traps inside a transaction leaves nothing behind, and
    // its connection is not handed on in the middle of it.
    send_probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "tx-trap",
        json!([sql("begin", "", json!([])), insert(3)]),
        "trap",
    )
    .await;
    wait_for(LIMIT, "the trapping call failed", || {
        let m = host.metrics.queue("Db");
        async move { m.snapshot().failed >= 1 }
    })
    .await;
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "tx-after",
        json!([sql("query", "SELECT count(*) FROM t", json!([]))]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["rows"], json!([[1]]), "{report:?}");
    assert_eq!(
        psql(&pg, "SELECT string_agg(id::text, ',') FROM t").await,
        "1"
    );
    // No session is left inside a transaction.
    wait_for(
        Duration::from_secs(5),
        "no session idle in a transaction",
        || {
            let pg = &pg;
            async move {
                psql(
                    pg,
                    "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
                )
                .await
                    == "0"
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_statement_is_cancelled_and_the_pool_stays_bounded() {
    let pg = Postgres::start("chat").unwrap();
    let mut host = TestHost::start_with(config(&pg, "timeout = \"500ms\"")).await;

    let started = std::time::Instant::now();
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "slow",
        json!([sql("query", "SELECT pg_sleep(5)", json!([]))]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "timeout", "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Cancelled on the server too: nothing of it still runs.
    wait_for(Duration::from_secs(5), "the sleep cancelled", || {
        let pg = &pg;
        async move {
            psql(
                pg,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
            )
            .await
                == "0"
        }
    })
    .await;

    // 200 messages at once, 16 handled at a time, on a pool of 4.
    for i in 0..200 {
        send_probe(
            &mut host.conn,
            &host.cfg,
            "db",
            &format!("p-{i}"),
            json!([sql(
                "query",
                "SELECT pg_backend_pid(), pg_sleep(0.01)::text",
                json!([])
            )]),
            "report",
        )
        .await;
    }
    let mut pids = BTreeSet::new();
    for i in 0..200 {
        let report = probe_report(&mut host.conn, &host.cfg, &format!("p-{i}"), LIMIT).await;
        let pid = report[0]["rows"][0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{report:?}"));
        pids.insert(pid);
    }
    assert!(
        !pids.is_empty() && pids.len() <= 4,
        "200 messages used {} connections, the pool has 4",
        pids.len()
    );
}

/// TLS to the database: with `sslmode=require` and the server's private
/// CA in `ca_file`, `switchyard migrate` and the plugin's statements run
/// over TLS (the server says so in `pg_stat_ssl`). Without the CA the
/// certificate is refused; without `sslmode=require` the server (which
/// takes TCP logins over TLS only) refuses the login. Both are transient:
/// the operator's to fix, not the message's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_verified_tls() {
    let ca = switchyard_standins::tls::TestCa::new();
    let pg = Postgres::start_tls("chat", &ca).unwrap();
    let dir = tempdir("sql-tls");
    let ca_file = ca.write_ca(&dir, "db-ca.pem").unwrap();
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_notes.sql"),
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);",
    )
    .unwrap();
    let tls_url = format!("{}?sslmode=require", pg.url());
    let localhost_url = tls_url.replace("127.0.0.1", "localhost");
    let mut host = TestHost::idle(TestConfig::with_env(
        &format!(
            r#"
[routes]
"db" = ["Db"]
"by-name" = ["ByName"]
"untrusted" = ["Untrusted"]
"plain" = ["Plain"]

[queues.Db]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.Db.sql]
database_url = {{ env = "TLS_URL" }}
ca_file = "{ca}"
migrations = "{migrations}"

[queues.ByName]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.ByName.sql]
database_url = {{ env = "LOCALHOST_URL" }}
ca_file = "{ca}"

[queues.Untrusted]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.Untrusted.sql]
database_url = {{ env = "TLS_URL" }}

[queues.Plain]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.Plain.sql]
database_url = {{ env = "PLAIN_URL" }}
"#,
            ca = ca_file.display(),
            migrations = migrations.display(),
        ),
        &[
            ("TLS_URL", &tls_url),
            ("LOCALHOST_URL", &localhost_url),
            ("PLAIN_URL", &pg.url()),
        ],
    ))
    .await;
    let report = switchyard::migrate::migrate(&host.cfg.config.queues["Db"])
        .await
        .unwrap();
    assert_eq!(report.applied, ["0001_notes.sql"]);

    host.restart().await;
    let encrypted = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for route in ["db", "by-name"] {
        let report = probe(
            &mut host.conn,
            &host.cfg,
            route,
            &format!("tls-{route}"),
            json!([
                sql(
                    "execute",
                    "INSERT INTO notes VALUES ($1, $2)",
                    json!([{"int32": if route == "db" { 1 } else { 2 }}, route])
                ),
                sql("query", encrypted, json!([])),
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(report[0], json!(1), "{route}: {report:?}");
        assert_eq!(report[1]["rows"], json!([[true]]), "{route}: {report:?}");
    }

    for (route, why) in [("untrusted", "certificate"), ("plain", "no encryption")] {
        let report = probe(
            &mut host.conn,
            &host.cfg,
            route,
            &format!("tls-{route}"),
            json!([sql("query", "SELECT 1", json!([]))]),
            LIMIT,
        )
        .await;
        assert_eq!(report[0]["kind"], "unavailable", "{route}: {report:?}");
        let error = report[0]["error"].as_str().unwrap();
        assert!(error.contains(why), "{route}: {error}");
    }
    assert_eq!(
        psql(&pg, "SELECT string_agg(body, ',' ORDER BY id) FROM notes").await,
        "db,by-name"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a session looks like to a call: its backend, role, settings,
/// advisory locks and temporary tables.
const SESSION: &str = "SELECT pg_backend_pid(), current_user::text, current_setting('search_path'), \
     current_setting('statement_timeout'), \
     (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())::int, \
     (SELECT count(*) FROM pg_class WHERE relpersistence = 't')::int";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_a_clean_session_whatever_the_last_one_sent() {
    let pg = Postgres::start("chat").unwrap();
    psql(
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE ROLE other; GRANT other TO CURRENT_USER; CREATE SCHEMA evil",
    )
    .await;
    // One connection, so that every call gets the one the last call used.
    let dir = tempdir("sql-clean");
    let probe_file = dir.join("probe.wasm");
    let base = std::fs::read(plugin("io_probe")).unwrap();
    std::fs::write(&probe_file, plugin_version(&base, 0)).unwrap();
    let mut host = TestHost::start_with(TestConfig::with_env(
        &format!(
            r#"
[routes]
"db" = ["Db"]

[queues.Db]
plugin = "{}"
max_attempts = 1
[queues.Db.sql]
database_url = {{ env = "TEST_DATABASE_URL" }}
pool = 1
"#,
            probe_file.display()
        ),
        &[("TEST_DATABASE_URL", &pg.url())],
    ))
    .await;
    let session = || sql("query", SESSION, json!([]));
    let first = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-0",
        json!([session()]),
        LIMIT,
    )
    .await;
    let clean = first[0]["rows"][0].clone();
    let backend = clean[0].clone();
    assert_eq!(clean[2], "\"$user\", public", "{first:?}");
    assert_eq!(clean[4], 0, "{first:?}");

    // Transaction control and session statements are refused before
    // they reach the server, and nothing is left open: the insert after
    // BEGIN commits at once, as a statement outside a transaction does.
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-1",
        json!([
            sql("execute", "BEGIN", json!([])),
            sql("execute", "INSERT INTO t VALUES (1)", json!([])),
            sql("execute", "/* c */ start transaction", json!([])),
            sql("execute", "COMMIT", json!([])),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(report[1], json!(1), "{report:?}");
    for i in [0, 2, 3] {
        assert_eq!(report[i]["kind"], "invalid", "step {i}: {report:?}");
    }
    assert!(
        report[0]["error"]
            .as_str()
            .unwrap()
            .contains("use the sql interface's begin"),
        "{report:?}"
    );
    let refused = [
        "SET ROLE other",
        "SET statement_timeout = 0",
        "set search_path = evil",
        "DEALLOCATE ALL",
        "DISCARD ALL",
        "RESET ALL",
        "LISTEN ch",
    ];
    let steps: Vec<Value> = refused
        .iter()
        .map(|s| sql("execute", s, json!([])))
        .collect();
    let report = probe(&mut host.conn, &host.cfg, "db", "s-1b", json!(steps), LIMIT).await;
    for (i, step) in report.iter().enumerate() {
        assert_eq!(step["kind"], "invalid", "{}: {report:?}", refused[i]);
    }
    assert_eq!(psql(&pg, "SELECT count(*) FROM t").await, "1");

    // What functions change in the session (here inside a transaction,
    // which holds one connection, and outlives its commit) is undone before
    // the next call, whether the call that changed it succeeded or trapped.
    // Each statement outside a transaction gets a clean session too.
    let dirty = json!([
        sql("begin", "", json!([])),
        sql(
            "query",
            "SELECT set_config('role', 'other', false)",
            json!([])
        ),
        sql(
            "query",
            "SELECT set_config('search_path', 'evil', false)",
            json!([])
        ),
        sql(
            "query",
            "SELECT set_config('statement_timeout', '0', false)",
            json!([])
        ),
        sql("query", "SELECT pg_advisory_lock(42)::text", json!([])),
        sql("execute", "CREATE TEMP TABLE scratch (x int)", json!([])),
        session(),
        sql("commit", "", json!([])),
        sql(
            "query",
            "SELECT set_config('search_path', 'evil', false)",
            json!([])
        ),
        session(),
    ]);
    let report = probe(&mut host.conn, &host.cfg, "db", "s-2", dirty.clone(), LIMIT).await;
    assert_eq!(
        report[9]["rows"][0], clean,
        "a statement of its own: {report:?}"
    );
    let inside = &report[6]["rows"][0];
    assert_eq!(inside[0], backend, "the same connection: {report:?}");
    assert_eq!(
        (&inside[1], &inside[2], &inside[3], &inside[4], &inside[5]),
        (
            &json!("other"),
            &json!("evil"),
            &json!("0"),
            &json!(1),
            &json!(1)
        ),
        "the call changed its session: {report:?}"
    );
    let after = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-3",
        json!([session()]),
        LIMIT,
    )
    .await;
    assert_eq!(after[0]["rows"][0], clean, "after a success: {after:?}");

    send_probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-4",
        dirty.clone(),
        "trap",
    )
    .await;
    wait_for(LIMIT, "the trapping call failed", || {
        let m = host.metrics.queue("Db");
        async move { m.snapshot().failed >= 1 }
    })
    .await;
    let after = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-5",
        json!([session()]),
        LIMIT,
    )
    .await;
    assert_eq!(after[0]["rows"][0], clean, "after a trap: {after:?}");

    // The pool outlives a plugin version: the new version's first call
    // gets a clean session too.
    probe(&mut host.conn, &host.cfg, "db", "s-6", dirty, LIMIT).await;
    let tmp = probe_file.with_extension("tmp");
    std::fs::write(&tmp, plugin_version(&base, 1)).unwrap();
    std::fs::rename(&tmp, &probe_file).unwrap();
    wait_for(LIMIT, "the new version swapped in", || {
        let swaps = switchyard::metrics::ReloadMetrics::get(&host.metrics.reloads.plugin_swaps);
        async move { swaps >= 1 }
    })
    .await;
    let after = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-7",
        json!([session()]),
        LIMIT,
    )
    .await;
    assert_eq!(after[0]["rows"][0], clean, "after a swap: {after:?}");

    // The statement cache survives a function that deallocates what the
    // session prepared: the next statements are prepared again.
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-8",
        json!([
            session(),
            sql("query", "SELECT count(*) FROM t", json!([])),
            sql(
                "execute",
                "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$",
                json!([])
            ),
            sql("query", "SELECT count(*) FROM t", json!([])),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(report[3]["rows"], json!([[1]]), "{report:?}");
    let after = probe(
        &mut host.conn,
        &host.cfg,
        "db",
        "s-9",
        json!([sql("query", "SELECT count(*) FROM t", json!([])), session()]),
        LIMIT,
    )
    .await;
    assert_eq!(after[0]["rows"], json!([[1]]), "{after:?}");
    assert_eq!(after[1]["rows"][0], clean, "{after:?}");
}
