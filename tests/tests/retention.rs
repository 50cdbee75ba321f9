//! Retention: handled entries are trimmed, entries not yet handled never
//! are, dead letters are bounded, and consumers of processes that are gone
//! are removed once nothing is pending for them.

use std::time::Duration;

use switchyard_tests::*;

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

async fn consumers(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Vec<String> {
    let v: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
    let redis::Value::Array(list) = v else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|c| {
            let redis::Value::Array(kv) = c else {
                return None;
            };
            match kv.get(1) {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_trimmed_but_never_of_what_is_not_yet_handled() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[retention]
interval = "100ms"
keep_handled = "1ms"
dead_letter_max_len = 2
idle_consumer = "1s"

[routes]
"slow" = ["Slow"]
"bad" = ["Bad"]

[queues.Slow]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 1
visibility_timeout = "30s"
[queues.Slow.config]
ms = 300

[queues.Bad]
plugin = "@PLUGINS@/always_reject.wasm"
"#,
    ))
    .await;
    let m = host.metrics.queue("Slow");
    let slow = host.cfg.queue_stream("Slow");
    wait_for(Duration::from_secs(10), "the group", || {
        let mut conn = host.conn.clone();
        let slow = slow.clone();
        async move {
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&slow)
                .query_async::<redis::Value>(&mut conn)
                .await
                .is_ok()
        }
    })
    .await;
    // A consumer of a process that is gone, with nothing pending, and one
    // that still holds a message.
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&slow)
        .arg(&host.cfg.prefix)
        .arg("ghost-empty")
        .query_async(&mut host.conn)
        .await
        .unwrap();
    // Added and read in one transaction, so the host's blocked reader does
    // not get it first.
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&slow)
        .arg("*")
        .arg("type")
        .arg("slow")
        .arg("id")
        .arg("held")
        .arg("body")
        .arg("{}")
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&host.cfg.prefix)
        .arg("ghost-holding")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&slow)
        .arg(">")
        .query_async(&mut host.conn)
        .await
        .unwrap();

    for i in 0..6 {
        host.send("slow", &format!("s-{i}"), "{}").await;
    }
    for i in 0..4 {
        host.send("bad", &format!("b-{i}"), "{}").await;
    }
    wait_for(Duration::from_secs(10), "all routed", || {
        let n = host
            .metrics
            .router
            .routed
            .load(std::sync::atomic::Ordering::Relaxed);
        async move { n == 10 }
    })
    .await;
    // While the slow queue works through its messages, every message not
    // yet handled (and the one the ghost holds) stays in the stream.
    let mut conn = host.conn.clone();
    wait_for(
        Duration::from_secs(30),
        "the slow queue's six handled",
        async || {
            let len = xlen(&mut conn, &slow).await;
            let done = m.snapshot().succeeded;
            assert!(
                len > 6 - done,
                "trimmed something not handled: length {len}, handled {done}"
            );
            done == 6
        },
    )
    .await;
    // Handled entries are trimmed from the ingress and the Bad queue; the
    // Slow queue keeps the entry the ghost holds, and (streams are trimmed
    // from their start) everything after it.
    wait_for(Duration::from_secs(10), "handled entries trimmed", || {
        let mut conn = host.conn.clone();
        let (bad, ingress) = (host.cfg.queue_stream("Bad"), host.cfg.ingress().to_owned());
        async move { xlen(&mut conn, &bad).await == 0 && xlen(&mut conn, &ingress).await == 0 }
    })
    .await;
    // Two more rounds of retention, and still:
    let rounds = host
        .metrics
        .retention_rounds
        .load(std::sync::atomic::Ordering::Relaxed);
    wait_for(
        Duration::from_secs(10),
        "two more rounds of retention",
        || {
            let n = host
                .metrics
                .retention_rounds
                .load(std::sync::atomic::Ordering::Relaxed);
            async move { n >= rounds + 2 }
        },
    )
    .await;
    assert_eq!(
        xlen(&mut host.conn, &slow).await,
        7,
        "the held entry and those after it stay"
    );
    wait_for(Duration::from_secs(10), "dead letters bounded", || {
        let mut conn = host.conn.clone();
        let dead = host.cfg.dead_stream();
        let rejected = host.metrics.queue("Bad").snapshot().dead_lettered;
        async move { rejected == 4 && xlen(&mut conn, &dead).await == 2 }
    })
    .await;
    wait_for(Duration::from_secs(10), "the empty ghost removed", || {
        let mut conn = host.conn.clone();
        let (slow, group) = (slow.clone(), host.cfg.prefix.clone());
        async move {
            !consumers(&mut conn, &slow, &group)
                .await
                .contains(&"ghost-empty".to_string())
        }
    })
    .await;
    let left = consumers(&mut host.conn, &slow, &host.cfg.prefix).await;
    assert!(
        left.contains(&"ghost-holding".to_string()),
        "a consumer with a pending message must stay: {left:?}"
    );

    // The ghost's message is settled after all: now the Slow stream is
    // trimmed too, and the ghost, holding nothing, is removed.
    let held = entries(&mut host.conn, &slow).await[0].id.clone();
    let _: i64 = redis::cmd("XACK")
        .arg(&slow)
        .arg(&host.cfg.prefix)
        .arg(&held)
        .query_async(&mut host.conn)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the rest trimmed and the ghost removed",
        || {
            let mut conn = host.conn.clone();
            let (slow, group) = (slow.clone(), host.cfg.prefix.clone());
            async move {
                xlen(&mut conn, &slow).await == 0
                    && !consumers(&mut conn, &slow, &group)
                        .await
                        .contains(&"ghost-holding".to_string())
            }
        },
    )
    .await;
    assert_eq!(m.snapshot().succeeded, 6);
    host.stop().await;
}
