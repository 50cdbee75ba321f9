//! Follow-up messages (`publish`): what a delivery publishes enters the
//! ingress stream in the same atomic step as its acknowledgement, and
//! never without it: a retry, a reject, a trap or a crash before the ack
//! publishes nothing. A chain of messages publishing each other ends at
//! the queue's `max_hops`.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

fn config() -> TestConfig {
    TestConfig::new(
        r#"
[routes]
"probe" = ["Pub"]
"fan" = ["Pub", "Pub2"]
"chat.saved" = ["Sink"]
"loop" = ["Loop"]

[queues.Pub]
plugin = "@PLUGINS@/io_probe.wasm"
publish = ["chat.saved"]
max_attempts = 2
retry_delay = "50ms"
visibility_timeout = "1s"

[queues.Pub2]
plugin = "@PLUGINS@/io_probe.wasm"
publish = ["chat.saved"]

[queues.Sink]
plugin = "@PLUGINS@/sleep.wasm"

[queues.Loop]
plugin = "@PLUGINS@/io_probe.wasm"
publish = ["loop"]
max_hops = 5
"#,
    )
}

fn saved(n: u32) -> Value {
    json!({ "publish": {
        "type": "chat.saved",
        "body": format!("{{\"n\":{n}}}"),
        "headers": { "traceparent": "00-abc-01" }
    } })
}

/// The ingress entries of type `message_type`.
async fn published(
    conn: &mut redis::aio::MultiplexedConnection,
    cfg: &TestConfig,
    message_type: &str,
) -> Vec<switchyard::stream::Entry> {
    entries(conn, cfg.ingress())
        .await
        .into_iter()
        .filter(|e| field(e, "type").as_deref() == Some(message_type))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_delivery_publishes_enters_with_its_ack_only() {
    let mut host = TestHost::start_with(config()).await;

    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "ok-1",
        json!([saved(1), saved(2)]),
        "ok",
    )
    .await;
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "trap-1",
        json!([saved(3)]),
        "trap",
    )
    .await;
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "retry-1",
        json!([saved(4)]),
        "retry",
    )
    .await;
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "reject-1",
        json!([
            saved(5),
            { "publish": { "type": "chat.other", "body": "{}" } },
            { "publish": { "type": "chat.saved", "body": "not json" } },
        ]),
        "report",
    )
    .await;
    let rejected = probe_report(&mut host.conn, &host.cfg, "reject-1", LIMIT).await;
    let m = host.metrics.clone();
    wait_for(LIMIT, "every message settled", || {
        let q = m.queues();
        let settled = |name: &str, n: u64| {
            q.get(name)
                .is_some_and(|c| c.succeeded + c.dead_lettered == n)
        };
        let done = settled("Pub", 4) && settled("Sink", 2);
        async move { done }
    })
    .await;
    host.stop().await;

    // The call was told the id of each message it published, and why the
    // others were refused.
    assert_eq!(rejected[0], json!({ "id": "reject-1/Pub/1" }));
    assert_eq!(
        rejected[1]["error"],
        "the queue may not publish \"chat.other\" (queues.Pub.publish)"
    );
    assert_eq!(rejected[2]["error"], "the body is not valid JSON");

    // Only the acknowledged delivery's messages were published, with ids
    // derived from it, one more hop, and the plugin's headers; they were
    // routed and handled like any other message.
    let saved = published(&mut host.conn, &host.cfg, "chat.saved").await;
    let ids: Vec<String> = saved.iter().filter_map(|e| field(e, "id")).collect();
    assert_eq!(ids, ["ok-1/Pub/1", "ok-1/Pub/2"]);
    assert_eq!(field(&saved[0], "body").as_deref(), Some("{\"n\":1}"));
    assert_eq!(field(&saved[0], "switchyard-hops").as_deref(), Some("1"));
    assert_eq!(
        field(&saved[0], "traceparent").as_deref(),
        Some("00-abc-01")
    );
    let q = m.queues();
    assert_eq!(q["Pub"].published, 2);
    assert_eq!(q["Pub"].succeeded, 1);
    assert_eq!(q["Pub"].dead_lettered, 3);
    assert_eq!(q["Sink"].succeeded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_publishing_itself_stops_at_max_hops() {
    let mut host = TestHost::start_with(config()).await;
    send_probe(
        &mut host.conn,
        &host.cfg,
        "loop",
        "L",
        json!([{ "publish": "itself" }]),
        "ok",
    )
    .await;
    wait_for(LIMIT, "the loop dead-lettered", || {
        let mut conn = host.conn.clone();
        let cfg = &host.cfg;
        async move { !dead_letters(&mut conn, cfg).await.is_empty() }
    })
    .await;
    // Nothing more comes after the dead letter: every entry routed is
    // settled and the ingress holds nothing unrouted, so nothing is in
    // flight that could publish.
    let metrics = host.metrics.clone();
    let (mut conn, ingress, group) = (
        host.conn.clone(),
        host.cfg.ingress().to_owned(),
        host.cfg.prefix.clone(),
    );
    wait_for(LIMIT, "the chain settled", async || {
        let routed = metrics
            .router
            .routed
            .load(std::sync::atomic::Ordering::Relaxed);
        let q = metrics.queue("Loop").snapshot();
        routed == q.succeeded + q.dead_lettered
            && pending(&mut conn, &ingress, &group).await == 0
            && lag(&mut conn, &ingress, &group).await == Some(0)
    })
    .await;
    host.stop().await;
    let chain = published(&mut host.conn, &host.cfg, "loop").await;
    let hops: Vec<String> = chain
        .iter()
        .map(|e| field(e, "switchyard-hops").unwrap_or_default())
        .collect();
    // The original, then hops 1 to 5 (handled), and 6 (over max_hops).
    assert_eq!(hops, ["", "1", "2", "3", "4", "5", "6"]);
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].message_id,
        "L/Loop/1/Loop/1/Loop/1/Loop/1/Loop/1/Loop/1"
    );
    assert!(
        dead[0]
            .reason
            .contains("published 6 times in a chain, more than queues.Loop.max_hops (5)"),
        "{}",
        dead[0].reason
    );
}

/// A host killed after the handler ran and before the ack published
/// nothing; the redelivery publishes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_ack_publishes_nothing() {
    let redis = Redis::start();
    let cfg = config();
    let mut conn = redis.conn().await;
    send_probe(&mut conn, &cfg, "probe", "crash-1", json!([saved(1)]), "ok").await;
    let mut first = HostProcess::spawn(
        &cfg,
        &redis,
        &[("SWITCHYARD_FAILPOINT", "queue-before-ack")],
    );
    let status = first.wait(LIMIT).expect("the host stops at the failpoint");
    assert!(!status.success());
    assert!(published(&mut conn, &cfg, "chat.saved").await.is_empty());
    assert_eq!(
        pending(&mut conn, &cfg.queue_stream("Pub"), &cfg.prefix).await,
        1
    );

    let _second = HostProcess::spawn(&cfg, &redis, &[]);
    wait_for(LIMIT, "the message redelivered and acknowledged", || {
        let mut conn = conn.clone();
        let stream = cfg.queue_stream("Pub");
        let group = cfg.prefix.clone();
        async move { pending(&mut conn, &stream, &group).await == 0 }
    })
    .await;
    let saved = published(&mut conn, &cfg, "chat.saved").await;
    let ids: Vec<String> = saved.iter().filter_map(|e| field(e, "id")).collect();
    assert_eq!(ids, ["crash-1/Pub/1"]);
}

/// Two queues handling one message publish follow-ups whose ids differ:
/// a handler that drops repeats by id keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_of_one_message_by_two_queues_have_their_own_ids() {
    let mut host = TestHost::start_with(config()).await;
    send_probe(
        &mut host.conn,
        &host.cfg,
        "fan",
        "f-1",
        json!([saved(1)]),
        "ok",
    )
    .await;
    let m = host.metrics.clone();
    wait_for(LIMIT, "both follow-ups handled", || {
        let done = m.queues().get("Sink").is_some_and(|q| q.succeeded == 2);
        async move { done }
    })
    .await;
    host.stop().await;
    let saved = published(&mut host.conn, &host.cfg, "chat.saved").await;
    let mut ids: Vec<String> = saved.iter().filter_map(|e| field(e, "id")).collect();
    ids.sort();
    assert_eq!(ids, ["f-1/Pub/1", "f-1/Pub2/1"]);
}
