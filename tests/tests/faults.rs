//! Faults: a live host keeps its messages however long they run, Redis goes
//! away and comes back, a consumer group vanishes.

use std::time::Duration;

use switchyard::supervisor::RunningHost;
use switchyard_tests::chaos::DurableRedis;
use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_host_keeps_messages_that_run_past_the_visibility_timeout() {
    init_logs();
    let redis = Redis::start();
    let cfg = TestConfig::new(
        r#"
[routes]
"slow" = ["Slow"]
[queues.Slow]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 1
handler_timeout = "10s"
visibility_timeout = "1s"
[queues.Slow.config]
ms = 3000
"#,
    );
    // Two hosts: either would take over the other's message after 1 s idle,
    // if leases were not renewed.
    let a = start_host(&cfg.config, &redis);
    let b = start_host(&cfg.config, &redis);
    let mut conn = redis.conn().await;
    for i in 0..2 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "slow"), ("id", &format!("s-{i}")), ("body", "{}")],
        )
        .await;
    }
    let (ma, mb) = (a.metrics.queue("Slow"), b.metrics.queue("Slow"));
    wait_for(Duration::from_secs(20), "both handled", || {
        let n = ma.snapshot().succeeded + mb.snapshot().succeeded;
        async move { n == 2 }
    })
    .await;
    // A take-over would have happened a second into the 3 s handlers, and
    // counted its attempt when it began: by now it would show.
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    let (ca, cb) = (ma.snapshot(), mb.snapshot());
    assert_eq!(
        ca.attempts + cb.attempts,
        2,
        "a message ran twice: {ca:?} {cb:?}"
    );
    assert_eq!(ca.reclaimed + cb.reclaimed, 0, "{ca:?} {cb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_rides_out_a_redis_outage() {
    init_logs();
    let dir = std::env::temp_dir().join(format!("switchyard-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = DurableRedis::durable(&dir).unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let cfg = TestConfig::new(
        r#"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    );
    let host = RunningHost::start(
        cfg.config.clone(),
        deployment(&redis.url(), &cfg.config),
        compiler(),
    );
    let m = host.metrics.queue("Ok");
    let produce = |from: usize| {
        let client = client.clone();
        let ingress = cfg.ingress().to_owned();
        async move {
            let mut conn = connect(&client).await;
            for i in from..from + 10 {
                xadd(
                    &mut conn,
                    &ingress,
                    &[("type", "ok"), ("id", &format!("m-{i}")), ("body", "{}")],
                )
                .await;
            }
        }
    };
    produce(0).await;
    wait_for(Duration::from_secs(10), "before the outage", || {
        let n = m.snapshot().succeeded;
        async move { n == 10 }
    })
    .await;

    redis.kill9();
    holds_for(
        Duration::from_secs(3),
        "the host survives the outage",
        async || !host.is_finished(),
    )
    .await;
    redis.restart().unwrap();
    let back = std::time::Instant::now();
    produce(10).await;
    wait_for(Duration::from_secs(10), "after the outage", || {
        let n = m.snapshot().succeeded;
        async move { n == 20 }
    })
    .await;
    let resumed = back.elapsed();
    host.stop().await.unwrap();
    // The loops retry at most every 500 ms (a unit test holds the backoff
    // to it); the bound here only catches a host that never resumes, and
    // stays far from what a loaded machine adds.
    eprintln!("resumed {resumed:?} after Redis came back (10 messages)");
    assert!(
        resumed < Duration::from_secs(20),
        "resumed {resumed:?} after Redis came back"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}

async fn destroy_group(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) {
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
}

async fn groups(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> usize {
    let v: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap();
    match v {
        redis::Value::Array(g) => g.len(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_group_is_recreated_at_the_start_or_left_alone_as_configured() {
    for policy in ["recreate", "stop"] {
        let mut host = TestHost::start_with(TestConfig::new(&format!(
            r#"
[host]
prefix = "@PREFIX@"
on_missing_group = "{policy}"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
"#
        )))
        .await;
        let m = host.metrics.queue("Ok");
        host.send("ok", "first", "{}").await;
        wait_for(Duration::from_secs(10), "first handled", || {
            let n = m.snapshot().succeeded;
            async move { n == 1 }
        })
        .await;
        let stream = host.cfg.queue_stream("Ok");
        destroy_group(&mut host.conn, &stream, &host.cfg.prefix).await;
        host.send("ok", "second", "{}").await;
        if policy == "recreate" {
            // Recreated at the start: the second message is handled, and
            // the first one, still in the stream, again (nothing skipped).
            wait_for(
                Duration::from_secs(10),
                "handled after the group came back",
                || {
                    let n = m.snapshot().succeeded;
                    async move { n == 3 }
                },
            )
            .await;
            assert_eq!(groups(&mut host.conn, &stream).await, 1);
        } else {
            // The worker has tried to read again, and found no group, twice.
            wait_for(
                Duration::from_secs(10),
                "the missing group seen twice",
                || {
                    let n = m.group_missing.load(std::sync::atomic::Ordering::Relaxed);
                    async move { n >= 2 }
                },
            )
            .await;
            assert_eq!(
                m.snapshot().succeeded,
                1,
                "nothing is read without the group"
            );
            assert_eq!(
                groups(&mut host.conn, &stream).await,
                0,
                "the group must not be recreated"
            );
        }
        host.stop().await;
    }
}
