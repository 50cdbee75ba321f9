//! Crashes: the fan-out is atomic whatever the moment the host dies, a
//! second host takes over what a killed one left pending, and a graceful
//! shutdown acknowledges nothing it did not handle.

use std::time::Duration;

use switchyard_tests::*;

fn fanout_config() -> TestConfig {
    let mut text = String::from(
        "[routes]\n\"chat.ended\" = [\"Persistence\", \"Email\", \"Ticket\", \"Salesforce\", \"Zendesk\", \"WebHook\"]\n",
    );
    for q in CHAT_ENDED_QUEUES {
        // A short visibility timeout: copies the dying host's workers read
        // in the instant before it aborted are taken over quickly. The
        // recorder logs every handling, outside the host.
        text.push_str(&format!(
            "[queues.{q}]\nplugin = \"@PLUGINS@/recorder.wasm\"\nhandler_timeout = \"1s\"\nvisibility_timeout = \"2s\"\n"
        ));
    }
    TestConfig::new(&text)
}

async fn copies(conn: &mut redis::aio::MultiplexedConnection, cfg: &TestConfig) -> Vec<usize> {
    let mut n = Vec::new();
    for q in CHAT_ENDED_QUEUES {
        n.push(entries(conn, &cfg.queue_stream(q)).await.len());
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_is_all_or_nothing_when_the_host_dies() {
    init_logs();
    let redis = Redis::start();
    let cfg = fanout_config();
    let mut conn = redis.conn().await;
    for i in 0..3 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[
                ("type", "chat.ended"),
                ("id", &format!("c-{i}")),
                ("body", "{}"),
            ],
        )
        .await;
    }
    let logs: Vec<std::path::PathBuf> = (1..=3)
        .map(|i| cfg.dir.join(format!("host{i}.log")))
        .collect();

    // Killed just before the fan-out step: no queue has a copy, and the
    // ingress entries are still pending, not acknowledged.
    let mut host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &logs[0],
        &[("SWITCHYARD_FAILPOINT", "router-before-commit")],
    )
    .unwrap();
    let status = host.wait(Duration::from_secs(30)).unwrap();
    assert!(
        !status.success(),
        "the failpoint should have aborted the host"
    );
    assert_eq!(copies(&mut conn, &cfg).await, [0; 6]);
    assert_eq!(pending(&mut conn, cfg.ingress(), &cfg.prefix).await, 3);

    // A second host takes the pending entries over (after the ingress
    // visibility timeout, 1 s here) and dies just after the fan-out step:
    // every queue has its copy and the ingress entries are acknowledged.
    let mut host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &logs[1],
        &[("SWITCHYARD_FAILPOINT", "router-after-commit")],
    )
    .unwrap();
    let status = host.wait(Duration::from_secs(30)).unwrap();
    assert!(
        !status.success(),
        "the failpoint should have aborted the host"
    );
    assert_eq!(copies(&mut conn, &cfg).await, [3; 6]);
    assert_eq!(pending(&mut conn, cfg.ingress(), &cfg.prefix).await, 0);

    // A healthy host handles every copy; no entry is routed twice.
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &logs[2], &[]).unwrap();
    wait_for(Duration::from_secs(30), "all copies handled", || {
        let mut conn = conn.clone();
        let cfg = &cfg;
        async move {
            for q in CHAT_ENDED_QUEUES {
                let stream = cfg.queue_stream(q);
                if pending(&mut conn, &stream, &cfg.prefix).await != 0
                    || lag(&mut conn, &stream, &cfg.prefix).await != Some(0)
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(10)).unwrap().success());
    assert_eq!(copies(&mut conn, &cfg).await, [3; 6]);

    // Every copy was handled, each by the healthy host unless the dying one
    // got to it in its last instant; a copy is handled twice only if the
    // dying host handled it and died before acking it.
    let all = handlings(&logs);
    let expected: std::collections::BTreeSet<(String, String)> = CHAT_ENDED_QUEUES
        .iter()
        .flat_map(|q| (0..3).map(move |i| (q.to_string(), format!("c-{i}"))))
        .collect();
    assert_eq!(
        all.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    assert!(
        handlings(&logs[..1]).is_empty(),
        "nothing was routed before the first death"
    );
    let by_dying: usize = handlings(&logs[1..2]).values().sum();
    let total: usize = all.values().sum();
    assert!(
        total - expected.len() <= by_dying,
        "{total} handlings of 18 copies, {by_dying} by the dying host"
    );
    assert!(all.values().all(|&n| n <= 2), "{all:?}");
}

fn slow_config(ms: u64, shutdown_timeout: &str) -> TestConfig {
    TestConfig::new(&format!(
        r#"
[host]
prefix = "@PREFIX@"
shutdown_timeout = "{shutdown_timeout}"

[routes]
"slow" = ["Slow"]

[queues.Slow]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 3
handler_timeout = "5s"
visibility_timeout = "6s"
max_attempts = 3

[queues.Slow.config]
ms = {ms}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_takes_over_what_a_killed_host_left_pending() {
    init_logs();
    let redis = Redis::start();
    let cfg = slow_config(1000, "5s");
    let mut conn = redis.conn().await;
    let stream = cfg.queue_stream("Slow");

    let mut first = HostProcess::spawn(&cfg, &redis, &[]);
    for i in 0..3 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "slow"), ("id", &format!("s-{i}")), ("body", "{}")],
        )
        .await;
    }
    wait_for(
        Duration::from_secs(20),
        "three messages in flight on the first host",
        || {
            let mut conn = conn.clone();
            let stream = stream.clone();
            let group = cfg.prefix.clone();
            async move { pending(&mut conn, &stream, &group).await == 3 }
        },
    )
    .await;
    let owners = pending_by_consumer(&mut conn, &stream, &cfg.prefix).await;
    assert_eq!(owners.len(), 1, "{owners:?}");
    let dead_consumer = owners[0].0.clone();
    first.kill9();
    assert_eq!(
        pending(&mut conn, &stream, &cfg.prefix).await,
        3,
        "kill -9 acknowledges nothing"
    );

    let second = start_host(&cfg.config, &redis);
    let m = second.metrics.queue("Slow");
    wait_for(
        Duration::from_secs(30),
        "the second host handled them",
        || {
            let c = m.snapshot();
            async move { c.succeeded == 3 }
        },
    )
    .await;
    second.stop().await.unwrap();
    let c = m.snapshot();
    assert_eq!(c.reclaimed, 3, "{c:?}");
    assert_eq!(c.attempts, 3, "{c:?}");
    assert_eq!(pending(&mut conn, &stream, &cfg.prefix).await, 0);
    assert!(dead_letters(&mut conn, &cfg).await.is_empty());
    // The dead consumer holds nothing any more.
    let owners = pending_by_consumer(&mut conn, &stream, &cfg.prefix).await;
    assert!(
        !owners.iter().any(|(c, _)| *c == dead_consumer),
        "{owners:?}"
    );
}

/// Starts a host process on `cfg` (queue Slow, concurrency 3), sends it
/// `n` slow messages, and waits until three are in flight.
async fn busy_host(
    cfg: &TestConfig,
    redis: &Redis,
    n: usize,
) -> (HostProcess, redis::aio::MultiplexedConnection) {
    let mut conn = redis.conn().await;
    let host = HostProcess::spawn(cfg, redis, &[]);
    for i in 0..n {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "slow"), ("id", &format!("s-{i}")), ("body", "{}")],
        )
        .await;
    }
    let stream = cfg.queue_stream("Slow");
    wait_for(Duration::from_secs(20), "three in flight", || {
        let mut conn = conn.clone();
        let (stream, group) = (stream.clone(), cfg.prefix.clone());
        async move { pending(&mut conn, &stream, &group).await == 3 }
    })
    .await;
    (host, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_work_and_acks_nothing_else() {
    init_logs();
    let redis = Redis::start();
    let cfg = slow_config(800, "5s");
    let stream = cfg.queue_stream("Slow");
    // Concurrency 3: three in flight, four waiting.
    let (mut host, mut conn) = busy_host(&cfg, &redis, 7).await;
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    // The three in flight finished and were acknowledged; the four never
    // read stay in the stream for the next host.
    assert_eq!(pending(&mut conn, &stream, &cfg.prefix).await, 0);
    assert_eq!(lag(&mut conn, &stream, &cfg.prefix).await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_deadline_leaves_unfinished_work_pending() {
    init_logs();
    let redis = Redis::start();
    let cfg = slow_config(3000, "200ms");
    let stream = cfg.queue_stream("Slow");
    let (mut host, mut conn) = busy_host(&cfg, &redis, 5).await;
    host.signal("INT");
    let status = host.wait(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{status:?}");
    // Nothing finished, so nothing was acknowledged: the three stay pending
    // for redelivery and the two unread stay unread.
    assert_eq!(pending(&mut conn, &stream, &cfg.prefix).await, 3);
    assert_eq!(lag(&mut conn, &stream, &cfg.prefix).await, Some(2));
    assert!(dead_letters(&mut conn, &cfg).await.is_empty());
}
