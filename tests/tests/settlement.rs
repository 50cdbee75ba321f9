//! Settling a message is one atomic step, and only ever for a message still
//! pending for the consumer that settles it: a settlement sent twice (its
//! reply lost) or for a message another host took over meanwhile does
//! nothing.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use switchyard::stream::queue::{FailureHistory, QueueStream};
use switchyard::stream::{Keys, Replicas, ensure_group};
use switchyard_tests::*;

/// A queue stream with one entry, read by consumer `reader`.
async fn one_pending(
    redis: &Redis,
    prefix: &str,
    reader: &str,
) -> (QueueStream, String, MultiplexedConnection) {
    let mut conn = redis.conn().await;
    let keys = Keys::new(prefix, "ingress", false);
    let partition = keys.first();
    let stream = partition.queue_stream("Q");
    ensure_group(&mut conn, &stream, keys.group())
        .await
        .unwrap();
    let id = xadd(
        &mut conn,
        &stream,
        &[("type", "t"), ("id", "m"), ("body", "{}")],
    )
    .await;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys.group())
        .arg(reader)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let manager = redis.deployment().connect().await.unwrap();
    (
        QueueStream::new(manager, &keys, &partition, "Q", "me", Replicas::off()),
        id,
        conn,
    )
}

async fn xlen(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_dead_letter_sent_twice_is_written_once() {
    let redis = Redis::start();
    let (queue, id, mut conn) = one_pending(&redis, "s1", "me").await;
    let first = queue.dead_letter(&id, "bad", 1, "p", None).await.unwrap();
    let second = queue.dead_letter(&id, "bad", 1, "p", None).await.unwrap();
    assert!(first.is_some());
    assert_eq!(second, None);
    assert_eq!(xlen(&mut conn, "s1:dead").await, 1);
    assert_eq!(pending(&mut conn, "s1:queue:Q", "s1").await, 0);
}

#[tokio::test]
async fn a_message_another_consumer_holds_is_left_to_it() {
    let redis = Redis::start();
    // Read by another host's consumer: this one must not settle it.
    let (queue, id, mut conn) = one_pending(&redis, "s2", "someone-else").await;
    assert_eq!(
        queue.dead_letter(&id, "bad", 1, "p", None).await.unwrap(),
        None
    );
    let history = FailureHistory {
        first: "t".into(),
        last: "t".into(),
        errors: vec!["attempt 1 (retry): down".into()],
        traps: 0,
    };
    let scheduled = queue
        .retry_later(
            &id,
            Duration::from_secs(60),
            Duration::from_secs(1),
            &history,
        )
        .await
        .unwrap();
    assert!(!scheduled);
    assert_eq!(xlen(&mut conn, "s2:dead").await, 0);
    let recorded: u64 = redis::cmd("HLEN")
        .arg("s2:errors:Q")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "no failure recorded for another's message");
    assert_eq!(
        pending_by_consumer(&mut conn, "s2:queue:Q", "s2").await,
        [("someone-else".to_string(), 1)]
    );
}

#[tokio::test]
async fn a_retry_is_scheduled_for_a_message_of_ones_own() {
    let redis = Redis::start();
    let (queue, id, mut conn) = one_pending(&redis, "s3", "me").await;
    let history = FailureHistory {
        first: "t".into(),
        last: "t".into(),
        errors: vec!["attempt 1 (retry): down".into()],
        traps: 0,
    };
    let scheduled = queue
        .retry_later(
            &id,
            Duration::from_secs(60),
            Duration::from_secs(1),
            &history,
        )
        .await
        .unwrap();
    assert!(scheduled);
    assert_eq!(queue.failures(&id).await.unwrap(), Some(history));
    assert_eq!(pending(&mut conn, "s3:queue:Q", "s3").await, 1);
}
