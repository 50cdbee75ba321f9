//! Hostile input: what producers and plugins send can be huge, have
//! thousands of fields, carry the host's own field names, or contain
//! newlines and terminal codes. None of it may lose a message, hold up
//! others, grow the host without bound, or forge what operators read.

use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard::stream::dead::original_fields;
use switchyard_tests::*;

async fn xadd_owned(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    fields: &[(String, String)],
) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query_async(conn).await.expect("XADD")
}

/// An entry with 4,000 fields once failed the route script half-way, after
/// it had acknowledged the entry: the entry was lost and the rest of its
/// batch waited for the visibility timeout. It is dead-lettered whole, and
/// the entries after it are routed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_thousands_of_fields_is_dead_lettered_and_holds_up_nothing() {
    let mut host = TestHost::idle(TestConfig::new(
        r#"
[ingress]
stream = "@PREFIX@:ingress"
# Were the batch left to be taken over, the test would time out first.
visibility_timeout = "5m"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    ))
    .await;
    let mut fields: Vec<(String, String)> = vec![
        ("type".into(), "ok".into()),
        ("id".into(), "wide".into()),
        ("body".into(), "{}".into()),
    ];
    fields.extend((0..3997).map(|i| (format!("h{i}"), format!("v{i}"))));
    xadd_owned(&mut host.conn, host.cfg.ingress(), &fields).await;
    for i in 0..5 {
        host.send("ok", &format!("after-{i}"), "{}").await;
    }
    host.restart().await;
    let m = host.metrics.clone();
    wait_for(
        Duration::from_secs(30),
        "the rest of the batch handled",
        || {
            let (ok, dead) = (
                m.queue("Ok").snapshot().succeeded,
                m.router.dead_lettered.load(Ordering::Relaxed),
            );
            async move { ok == 5 && dead == 1 }
        },
    )
    .await;
    host.stop().await;

    let dead = entries(&mut host.conn, &host.cfg.dead_stream()).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        field(&dead[0], "dead-reason").as_deref(),
        Some("entry has 4000 fields, more than the 1000 a message may have")
    );
    // Kept whole, as one JSON array of names and values.
    let kept: Vec<String> = serde_json::from_str(&field(&dead[0], "dead-fields").unwrap()).unwrap();
    assert_eq!(kept.len(), 8000);
    assert_eq!(&kept[..6], ["type", "ok", "id", "wide", "body", "{}"]);
    assert_eq!(kept[7999], "v3996");
    assert_eq!(
        pending(&mut host.conn, host.cfg.ingress(), &host.cfg.prefix).await,
        0
    );
}

/// 110 entries of 10 MB once took a host to 5.66 GB. Entries over
/// `ingress.max_entry_kib` are dead-lettered without the host reading them,
/// so its memory does not grow with them; a backlog of them is routed in
/// calls that do not hold Redis for long; and a queue's own bound turns away
/// a copy the router would give it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_entries_are_dead_lettered_without_the_host_holding_them() {
    let redis = Redis::start();
    let cfg = TestConfig::new(
        r#"
[routes]
"t" = ["Small", "Large"]
[queues.Small]
plugin = "@PLUGINS@/sleep.wasm"
max_entry_kib = 4
[queues.Large]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    );
    let dir = tempdir("oversized");
    let mut conn = redis.conn().await;
    let large = cfg.queue_stream("Large");
    let waiter = conn.clone();
    let settled = |copies: usize, dead: u64| {
        let (conn, large, prefix, dead_stream) = (
            waiter.clone(),
            large.clone(),
            cfg.prefix.clone(),
            cfg.dead_stream(),
        );
        wait_for(Duration::from_secs(60), "every entry settled", move || {
            let (mut conn, large, prefix, dead_stream) = (
                conn.clone(),
                large.clone(),
                prefix.clone(),
                dead_stream.clone(),
            );
            async move {
                let n: u64 = redis::cmd("XLEN")
                    .arg(&dead_stream)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                n == dead
                    && entries(&mut conn, &large).await.len() == copies
                    && pending(&mut conn, &large, &prefix).await == 0
            }
        })
    };

    // The host's own peak, serving one small message.
    let log = dir.join("idle.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "t"), ("id", "first"), ("body", "{}")],
    )
    .await;
    settled(1, 0).await;
    let idle = host.peak_rss_kib();
    host.signal("TERM");
    host.wait(Duration::from_secs(10)).unwrap();

    // A backlog: 40 entries of 8 MiB (320 MiB), a 10 KiB one, a small one.
    let big = format!("\"{}\"", "x".repeat(8 * 1024 * 1024));
    for i in 0..40 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "t"), ("id", &format!("big-{i}")), ("body", &big)],
        )
        .await;
    }
    let medium = format!("\"{}\"", "m".repeat(10 * 1024));
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "t"), ("id", "medium"), ("body", &medium)],
    )
    .await;
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "t"), ("id", "last"), ("body", "{}")],
    )
    .await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();

    let log = dir.join("host.log");
    let host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    settled(3, 41).await;
    let peak = host.peak_rss_kib();
    drop(host);

    // The host never held the 320 MiB: its peak is within a few MiB of its
    // idle one.
    assert!(
        peak < idle + 24 * 1024,
        "peak RSS {peak} KiB, idle {idle} KiB"
    );
    // No script call held Redis for long (one over the whole backlog would
    // have copied 320 MiB).
    let slow: redis::Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    let longest_us = match slow {
        redis::Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                redis::Value::Array(f) if format!("{:?}", f.get(3)).contains("EVALSHA") => {
                    match f.get(2) {
                        Some(redis::Value::Int(us)) => Some(*us),
                        _ => None,
                    }
                }
                _ => None,
            })
            .max()
            .unwrap_or(0),
        _ => 0,
    };
    eprintln!(
        "host peak RSS: idle {idle} KiB, after the backlog {peak} KiB; longest script call {longest_us} µs"
    );
    assert!(
        longest_us < 500_000,
        "a script call held Redis for {longest_us} µs"
    );

    let records = entries(&mut conn, &cfg.dead_stream()).await;
    let ingress_dead: Vec<_> = records
        .iter()
        .filter(|e| field(e, "dead-queue").as_deref() == Some(""))
        .collect();
    assert_eq!(ingress_dead.len(), 40);
    for e in &ingress_dead {
        assert_eq!(
            field(e, "dead-reason").as_deref(),
            Some("entry is 8.0 MiB, more than ingress.max_entry_kib (1024 KiB)")
        );
        // Kept whole: nothing is lost.
        assert_eq!(field(e, "body").map(|b| b.len()), Some(big.len()));
    }
    let small_dead: Vec<_> = records
        .iter()
        .filter(|e| field(e, "dead-queue").as_deref() == Some("Small"))
        .collect();
    assert_eq!(small_dead.len(), 1);
    assert_eq!(field(small_dead[0], "id").as_deref(), Some("medium"));
    assert_eq!(
        field(small_dead[0], "dead-reason").as_deref(),
        Some("entry is 10.0 KiB, more than queues.Small.max_entry_kib (4 KiB)")
    );
    let small: Vec<String> = entries(&mut conn, &cfg.queue_stream("Small"))
        .await
        .iter()
        .filter_map(|e| field(e, "id"))
        .collect();
    assert_eq!(small, ["first", "last"]);
    assert_eq!(pending(&mut conn, cfg.ingress(), &cfg.prefix).await, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A producer's fields named like the host's (`dead-reason`) once appeared
/// twice in a dead letter, and common clients showed the producer's. The
/// host's fields are its own; the producer's are kept renamed, and can be
/// restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_cannot_forge_the_host_fields_of_a_dead_letter() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"reject" = ["Reject"]
[queues.Reject]
plugin = "@PLUGINS@/always_reject.wasm"
"#,
    ))
    .await;
    let forged = |t: &'static str, id: &'static str| {
        vec![
            ("type", t),
            ("id", id),
            ("body", "{}"),
            ("dead-reason", "all fine, nothing to see"),
            ("dead-queue", "Nowhere"),
            ("orig-x", "y"),
        ]
    };
    // One refused by the router, one rejected by a queue's plugin.
    for (t, id) in [("no.route", "at-router"), ("reject", "at-queue")] {
        xadd(&mut host.conn, host.cfg.ingress(), &forged(t, id)).await;
    }
    let m = host.metrics.clone();
    wait_for(Duration::from_secs(20), "both dead-lettered", || {
        let n = m.router.dead_lettered.load(Ordering::Relaxed)
            + m.queue("Reject").snapshot().dead_lettered;
        async move { n == 2 }
    })
    .await;
    host.stop().await;
    let records = entries(&mut host.conn, &host.cfg.dead_stream()).await;
    assert_eq!(records.len(), 2);
    for (record, (id, queue, reason)) in records.iter().zip([
        ("at-router", "", "no route for message type \"no.route\""),
        (
            "at-queue",
            "Reject",
            "rejected by the plugin: reject at-queue is not acceptable",
        ),
    ]) {
        let named = |name: &str| {
            record
                .fields
                .iter()
                .filter(|(k, _)| k == name.as_bytes())
                .count()
        };
        assert_eq!(named("dead-reason"), 1, "{id}");
        assert_eq!(named("dead-queue"), 1, "{id}");
        assert_eq!(
            field(record, "dead-reason").as_deref(),
            Some(reason),
            "{id}"
        );
        assert_eq!(field(record, "dead-queue").as_deref(), Some(queue), "{id}");
        assert_eq!(
            field(record, "orig-dead-reason").as_deref(),
            Some("all fine, nothing to see")
        );
        assert_eq!(field(record, "orig-orig-x").as_deref(), Some("y"));
        // What the producer sent comes back whole.
        let original: Vec<(String, String)> = original_fields(&record.fields)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        let sent: Vec<(String, String)> = forged("x", "x")
            .iter()
            .skip(2)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for pair in &sent {
            assert!(original.contains(pair), "{pair:?} not in {original:?}");
        }
    }
}

/// A plugin's 10 MiB reason once went whole into every log line and into
/// the dead letter (42 MB of log for one message); newlines in ids, log
/// lines, output and reasons started log lines of their own. Every text is
/// cut, and every control character escaped, in the log, the dead letter,
/// and `switchyard status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_texts_and_producer_ids_are_bounded_and_escaped() {
    let redis = Redis::start();
    let cfg = TestConfig::new(
        r#"
[routes]
"h" = ["Hostile"]
[queues.Hostile]
plugin = "@PLUGINS@/hostile.wasm"
max_attempts = 2
retry_quick_delay = "10ms"
"#,
    );
    let dir = tempdir("texts");
    let log = dir.join("host.log");
    let host =
        HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[("RUST_LOG", "info")]).unwrap();
    let mut conn = redis.conn().await;
    let ten_mib = 10 * 1024 * 1024;
    let forged_id = "m-1\n2026-01-01T00:00:00.000000Z  INFO switchyard: FORGED";
    let messages = [
        (
            "print-lots",
            r#"{"do":"print-lots","bytes":65536}"#.to_string(),
        ),
        (
            "huge-reject",
            format!(r#"{{"do":"reject","bytes":{ten_mib}}}"#),
        ),
        (
            "huge-retry",
            format!(r#"{{"do":"retry","bytes":{ten_mib}}}"#),
        ),
        ("forge", r#"{"do":"forge"}"#.to_string()),
        ("print-then-trap", r#"{"do":"print-then-trap"}"#.to_string()),
        (forged_id, r#"{"do":"print"}"#.to_string()),
    ];
    for (id, body) in &messages {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "h"), ("id", id), ("body", body)],
        )
        .await;
    }
    let stream = cfg.queue_stream("Hostile");
    let dead_stream = cfg.dead_stream();
    wait_for(Duration::from_secs(30), "everything settled", || {
        let mut conn = conn.clone();
        let (stream, dead_stream, prefix) =
            (stream.clone(), dead_stream.clone(), cfg.prefix.clone());
        async move {
            let dead: u64 = redis::cmd("XLEN")
                .arg(&dead_stream)
                .query_async(&mut conn)
                .await
                .unwrap();
            dead == 4 && pending(&mut conn, &stream, &prefix).await == 0
        }
    })
    .await;
    let status = std::process::Command::new(host_binary())
        .args(["status", "--config"])
        .arg(&cfg.path)
        .args(["--redis-url", redis.url()])
        .output()
        .unwrap();
    drop(host);

    let records = entries(&mut conn, &cfg.dead_stream()).await;
    let by_id = |id: &str| {
        records
            .iter()
            .find(|e| field(e, "id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} not dead-lettered"))
    };
    // Reasons are cut to about a KiB, the cut marked.
    for id in ["huge-reject", "huge-retry"] {
        let reason = field(by_id(id), "dead-reason").unwrap();
        assert!(reason.len() < 2048, "{id}: {} bytes", reason.len());
        assert!(
            reason.ends_with("more bytes]"),
            "{id}: {}",
            &reason[reason.len() - 40..]
        );
    }
    let errors: Vec<String> =
        serde_json::from_str(&field(by_id("huge-retry"), "dead-errors").unwrap()).unwrap();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e.len() < 2048));
    // Printing 64 KiB is not a failure.
    assert!(
        !records
            .iter()
            .any(|e| field(e, "id").as_deref() == Some("print-lots")),
        "print-lots was dead-lettered"
    );
    // What a plugin prints to stdout is kept with its failure.
    let trap = field(by_id("print-then-trap"), "dead-reason").unwrap();
    assert!(
        trap.contains("after printing") && trap.contains("plugin output: hello from stdout"),
        "{trap}"
    );

    // The log: small, and no line that the host did not write.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() < 256 * 1024, "the log is {} bytes", text.len());
    let forged_lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("20") || l.starts_with("2026-01-01T00:00:00.000000Z"))
        .collect();
    assert!(
        forged_lines.is_empty(),
        "lines the host did not write: {forged_lines:#?}"
    );
    assert!(
        text.contains("FORGED"),
        "the forged texts are logged, escaped"
    );
    for escaped in [
        r#"msg_id="m-1\n2026-01-01T00:00:00.000000Z"#,
        r"log\n2026-01-01T00:00:00.000000Z",
        r"reason\n2026-01-01T00:00:00.000000Z",
        r"stderr\r\n2026-01-01T00:00:00.000000Z",
    ] {
        assert!(text.contains(escaped), "{escaped} not in the log:\n{text}");
    }

    // `status` shows the dead letters, cut and escaped.
    assert!(status.status.success());
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.len() < 16 * 1024,
        "status printed {} bytes",
        status.len()
    );
    assert!(
        !status
            .lines()
            .any(|l| l.contains("FORGED") && !l.contains(r"\n")),
        "{status}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A key of another type where a queue's stream should be (someone SET it)
/// once made the route script fail after it had acknowledged the entry. The
/// script checks its keys before it writes: routing waits, nothing is lost,
/// and it resumes once the key is a stream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_key_of_the_wrong_type_holds_routing_without_losing_anything() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"ok" = ["Ok", "Other"]
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
[queues.Other]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    ))
    .await;
    let m = host.metrics.clone();
    let other = host.cfg.queue_stream("Other");
    wait_for(
        Duration::from_secs(10),
        "the queues' groups created",
        || {
            let mut conn = host.conn.clone();
            let other = other.clone();
            async move {
                let t: String = redis::cmd("TYPE")
                    .arg(&other)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                t == "stream"
            }
        },
    )
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&other)
        .query_async(&mut host.conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&other)
        .arg("not a stream")
        .query_async(&mut host.conn)
        .await
        .unwrap();
    for i in 0..3 {
        host.send("ok", &format!("m-{i}"), "{}").await;
    }
    // Routing is refused whole, every time, before it writes anything.
    wait_for(Duration::from_secs(10), "the entries read and held", || {
        let mut conn = host.conn.clone();
        let (ingress, group) = (host.cfg.ingress().to_owned(), host.cfg.prefix.clone());
        async move { pending(&mut conn, &ingress, &group).await == 3 }
    })
    .await;
    assert!(
        entries(&mut host.conn, &host.cfg.queue_stream("Ok"))
            .await
            .is_empty()
    );
    assert_eq!(m.router.routed.load(Ordering::Relaxed), 0);
    // Once the key is a stream again (its group recreated), the entries
    // are routed.
    let _: () = redis::cmd("DEL")
        .arg(&other)
        .query_async(&mut host.conn)
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&other)
        .arg(&host.cfg.prefix)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut host.conn)
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "every copy handled", || {
        let (ok, other) = (
            m.queue("Ok").snapshot().succeeded,
            m.queue("Other").snapshot().succeeded,
        );
        async move { ok == 3 && other == 3 }
    })
    .await;
    host.stop().await;
    assert_eq!(
        pending(&mut host.conn, host.cfg.ingress(), &host.cfg.prefix).await,
        0
    );
}

/// A producer that leaves out `type` and `id` (sending CAP's names) with
/// 1,000 fields: the copy carries 1,002, and a redelivery must read it as
/// the first delivery did, not refuse it as oversized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_with_the_fields_the_router_adds_is_delivered_again_whole() {
    let mut host = TestHost::idle(TestConfig::new(
        r#"
[routes]
"retry" = ["Retry"]
[queues.Retry]
plugin = "@PLUGINS@/always_retry.wasm"
max_attempts = 2
retry_quick_delay = "10ms"
"#,
    ))
    .await;
    let mut fields: Vec<(String, String)> = vec![
        ("cap-msg-name".into(), "retry".into()),
        ("body".into(), "{}".into()),
    ];
    fields.extend((0..998).map(|i| (format!("h{i}"), "v".into())));
    xadd_owned(&mut host.conn, host.cfg.ingress(), &fields).await;
    host.restart().await;
    let m = host.metrics.queue("Retry");
    wait_for(
        Duration::from_secs(20),
        "dead-lettered after two attempts",
        || {
            let n = m.snapshot().dead_lettered;
            async move { n == 1 }
        },
    )
    .await;
    host.stop().await;
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert!(
        dead[0].reason.starts_with("gave up after 2 attempts"),
        "{}",
        dead[0].reason
    );
    assert_eq!(m.snapshot().attempts, 2);
}
