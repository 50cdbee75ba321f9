//! What happens to a message for each handler outcome: success acks, reject
//! dead-letters with the plugin's reason, retry and trap are delivered again
//! and dead-lettered after max attempts with the attempt count. Malformed
//! entries are dead-lettered with the reason.

use std::time::Duration;

use switchyard_tests::*;

fn config() -> TestConfig {
    TestConfig::new(
        r#"
[routes]
"ok" = ["Ok"]
"reject" = ["Reject"]
"retry" = ["Retry"]
"trap" = ["Trap"]
"bug" = ["Bug"]

[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"

[queues.Reject]
plugin = "@PLUGINS@/always_reject.wasm"

[queues.Retry]
plugin = "@PLUGINS@/always_retry.wasm"
max_attempts = 3
handler_timeout = "1s"
visibility_timeout = "2s"
retry_delay = "50ms"

[queues.Trap]
plugin = "@PLUGINS@/trap.wasm"
max_attempts = 2
handler_timeout = "1s"
visibility_timeout = "2s"
retry_delay = "50ms"

[queues.Bug]
plugin = "@PLUGINS@/trap.wasm"
max_attempts = 10
max_trap_attempts = 2
handler_timeout = "1s"
visibility_timeout = "2s"
retry_delay = "50ms"
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_is_settled_as_promised() {
    let mut host = TestHost::start_with(config()).await;
    for (t, n) in [
        ("ok", 20),
        ("reject", 3),
        ("retry", 2),
        ("trap", 2),
        ("bug", 1),
    ] {
        for i in 0..n {
            xadd(
                &mut host.conn,
                host.cfg.ingress(),
                &[
                    ("type", t),
                    ("id", &format!("{t}-{i}")),
                    ("body", "{\"n\":1}"),
                    ("trace", "x"),
                ],
            )
            .await;
        }
    }
    let m = host.metrics.clone();
    wait_for(Duration::from_secs(20), "every message settled", || {
        let q = m.queues();
        let done = |name: &str, n: u64| {
            q.get(name)
                .is_some_and(|c| c.succeeded + c.dead_lettered == n)
        };
        let ok = done("Ok", 20)
            && done("Reject", 3)
            && done("Retry", 2)
            && done("Trap", 2)
            && done("Bug", 1);
        async move { ok }
    })
    .await;
    host.stop().await;
    let q = m.queues();

    // Success: acked once each, never retried.
    assert_eq!(q["Ok"].succeeded, 20);
    assert_eq!(q["Ok"].attempts, 20);
    assert_eq!(
        pending(
            &mut host.conn,
            &host.cfg.queue_stream("Ok"),
            &host.cfg.prefix
        )
        .await,
        0
    );

    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    let of = |queue: &str| dead.iter().filter(|d| d.queue == queue).collect::<Vec<_>>();

    // Reject: dead-lettered at once with the plugin's reason.
    let rejected = of("Reject");
    assert_eq!(rejected.len(), 3, "{dead:#?}");
    for d in &rejected {
        assert_eq!(d.attempts, "1");
        assert!(
            d.reason.starts_with("rejected by the plugin: reject "),
            "{}",
            d.reason
        );
        assert!(d.reason.ends_with("is not acceptable"), "{}", d.reason);
    }
    assert_eq!(q["Reject"].attempts, 3);

    // Retry: delivered max_attempts times, then dead-lettered with the count
    // and the last error.
    let retried = of("Retry");
    assert_eq!(retried.len(), 2, "{dead:#?}");
    for d in &retried {
        assert_eq!(d.attempts, "3");
        assert!(
            d.reason.contains("gave up after 3 attempts")
                && d.reason.contains("upstream unavailable (attempt 3)"),
            "{}",
            d.reason
        );
    }
    assert_eq!(q["Retry"].attempts, 6);
    assert_eq!(q["Retry"].retried, 6);

    // Trap: a failed attempt like a retry, with the panic message.
    let trapped = of("Trap");
    assert_eq!(trapped.len(), 2, "{dead:#?}");
    for d in &trapped {
        assert_eq!(d.attempts, "2");
        assert!(
            d.reason.contains("gave up after 2 attempts"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("trap plugin panics on"), "{}", d.reason);
    }
    assert_eq!(q["Trap"].failed, 4);
    // A bug: dead-lettered after max_trap_attempts traps, long before
    // max_attempts.
    let bug = of("Bug");
    assert_eq!(bug.len(), 1, "{dead:#?}");
    assert_eq!(bug[0].attempts, "2");
    assert!(
        bug[0]
            .reason
            .contains("the plugin trapped 2 times (max_trap_attempts 2)")
            && bug[0].reason.contains("trap plugin panics on bug-0"),
        "{}",
        bug[0].reason
    );
    assert_eq!(q["Bug"].failed, 2);

    // The dead-letter record keeps the original fields and names the plugin.
    let all = entries(&mut host.conn, &host.cfg.dead_stream()).await;
    let one = all
        .iter()
        .find(|e| field(e, "id").as_deref() == Some("trap-0"))
        .unwrap();
    assert_eq!(field(one, "trace").as_deref(), Some("x"));
    assert_eq!(field(one, "body").as_deref(), Some("{\"n\":1}"));
    assert_eq!(field(one, "dead-plugin").map(|p| p.len()), Some(16));
    // Every attempt's error, oldest first, and when the failures began and
    // ended.
    let retried = all
        .iter()
        .find(|e| field(e, "id").as_deref() == Some("retry-0"))
        .unwrap();
    let errors: Vec<String> =
        serde_json::from_str(&field(retried, "dead-errors").unwrap()).unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (i, e) in errors.iter().enumerate() {
        let n = i + 1;
        assert!(
            e.starts_with(&format!(
                "attempt {n} (retry): upstream unavailable (attempt {n})"
            )),
            "{e}"
        );
    }
    let first = field(retried, "dead-first-failure").unwrap();
    let last = field(retried, "dead-last-failure").unwrap();
    assert!(
        first.ends_with('Z') && last.ends_with('Z') && first < last,
        "{first} {last}"
    );

    for queue in ["Reject", "Retry", "Trap"] {
        assert_eq!(
            pending(
                &mut host.conn,
                &host.cfg.queue_stream(queue),
                &host.cfg.prefix
            )
            .await,
            0,
            "{queue}"
        );
    }
    // No retry state is left behind.
    let errors: u64 = redis::cmd("EXISTS")
        .arg(host.cfg.keys().first().errors("Retry"))
        .arg(host.cfg.keys().first().errors("Trap"))
        .query_async(&mut host.conn)
        .await
        .unwrap();
    assert_eq!(errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_retry_delay_is_honoured() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"retry" = ["Retry"]
[queues.Retry]
plugin = "@PLUGINS@/always_retry.wasm"
max_attempts = 2
handler_timeout = "1s"
visibility_timeout = "5s"
retry_delay = "10ms"
[queues.Retry.config]
delay_ms = 1500
"#,
    ))
    .await;
    xadd(
        &mut host.conn,
        host.cfg.ingress(),
        &[("type", "retry"), ("body", "{}")],
    )
    .await;
    let m = host.metrics.queue("Retry");
    wait_for(Duration::from_secs(5), "first attempt", || {
        let n = m.snapshot().retried;
        async move { n == 1 }
    })
    .await;
    let first = std::time::Instant::now();
    wait_for(Duration::from_secs(10), "dead-lettered", || {
        let n = m.snapshot().dead_lettered;
        async move { n == 1 }
    })
    .await;
    let waited = first.elapsed();
    host.stop().await;
    // The plugin asked for 1.5 s; the queue's own backoff is 10 ms.
    assert!(
        waited >= Duration::from_millis(1400),
        "second attempt after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_dead_lettered_with_the_reason() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    ))
    .await;
    xadd(
        &mut host.conn,
        host.cfg.ingress(),
        &[("id", "no-type"), ("body", "{}")],
    )
    .await;
    host.send("", "empty-type", "{}").await;
    xadd(
        &mut host.conn,
        host.cfg.ingress(),
        &[("type", "ok"), ("id", "no-body")],
    )
    .await;
    host.send("ok", "bad-json", "{\"a\":").await;
    host.send("nobody.routes.this", "no-route", "{}").await;
    host.send("ok", "fine", "{}").await;
    // Written straight to a queue stream by someone else, without a type.
    xadd(
        &mut host.conn,
        &host.cfg.queue_stream("Ok"),
        &[("id", "direct"), ("body", "{}")],
    )
    .await;

    wait_for(Duration::from_secs(10), "six dead letters", || {
        let m = host.metrics.clone();
        async move {
            m.router
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed)
                == 5
                && m.queue("Ok").snapshot().dead_lettered == 1
                && m.queue("Ok").snapshot().succeeded == 1
        }
    })
    .await;
    host.stop().await;

    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    let reason = |id: &str| {
        dead.iter()
            .find(|d| d.message_id == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {dead:#?}"))
            .reason
            .clone()
    };
    assert_eq!(
        reason("no-type"),
        "missing field `type` (or `cap-msg-name`)"
    );
    assert_eq!(reason("empty-type"), "field `type` is empty");
    assert_eq!(reason("no-body"), "missing field `body`");
    assert!(
        reason("bad-json").starts_with("body is not valid JSON: EOF"),
        "{}",
        reason("bad-json")
    );
    assert_eq!(
        reason("no-route"),
        "no route for message type \"nobody.routes.this\""
    );
    assert_eq!(reason("direct"), "missing field `type` (or `cap-msg-name`)");
    assert_eq!(dead.len(), 6);
    assert_eq!(
        pending(&mut host.conn, host.cfg.ingress(), &host.cfg.prefix).await,
        0
    );
    assert_eq!(
        lag(&mut host.conn, host.cfg.ingress(), &host.cfg.prefix).await,
        Some(0)
    );
}

/// A queue can run a handler built into the host (`builtin:noop`) instead
/// of a plugin file: every message is acked; and acks of many messages
/// handled at once go out batched, none left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_handler_acks_every_message_in_batches() {
    let mut host = TestHost::idle(TestConfig::new(
        r#"
[routes]
"discard" = ["Discard"]
[queues.Discard]
plugin = "builtin:noop"
concurrency = 32
"#,
    ))
    .await;
    let n = 2_000;
    for i in 0..n {
        host.send("discard", &i.to_string(), "{}").await;
    }
    host.restart().await;
    let m = host.metrics.queue("Discard");
    wait_for(Duration::from_secs(20), "every message handled", || {
        let s = m.snapshot().succeeded;
        async move { s == n }
    })
    .await;
    let stream = host.cfg.queue_stream("Discard");
    wait_for(Duration::from_secs(5), "nothing pending", || {
        let mut conn = host.conn.clone();
        let (stream, group) = (stream.clone(), host.cfg.prefix.clone());
        async move { pending(&mut conn, &stream, &group).await == 0 }
    })
    .await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut host.conn)
        .await
        .unwrap();
    host.stop().await;
    let s = m.snapshot();
    assert_eq!((s.attempts, s.failed, s.dead_lettered), (n, 0, 0));
    // Redis counts the router's XACKs (one per entry, inside its script)
    // with the queue's; one XACK per message would make 2n.
    let xacks: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_xack:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .expect("XACK stats");
    let queue_acks = xacks - n;
    assert!(
        queue_acks * 2 < n,
        "{queue_acks} XACK commands for {n} messages"
    );
}
