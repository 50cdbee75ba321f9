//! Changing `ingress.partitions` on a running deployment. New partitions
//! start empty and are read as soon as queues.toml is reloaded, and the
//! list producers read names them. A partition the new count leaves out is
//! retired: read until nothing is left in it, then recorded as drained and
//! read no more; a message a stale producer writes to it later is still
//! handled (it is read again until drained). Nothing is lost, nothing is
//! handled twice.

use std::time::Duration;

use switchyard::stream::registry::{self, State};
use switchyard_tests::total::{crc32, partition_streams};
use switchyard_tests::*;

fn toml(partitions: usize) -> String {
    format!(
        r#"
[ingress]
stream = "@PREFIX@:ingress"
visibility_timeout = "2s"
partitions = {partitions}

[routes]
"t" = ["Q"]

[queues.Q]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 4
config = {{ ms = "10" }}
"#
    )
}

/// Rewrites the running queues.toml with another count.
fn set_partitions(host: &TestHost, n: usize) {
    let text = std::fs::read_to_string(&host.cfg.path).unwrap();
    let start = text.find("partitions = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}partitions = {n}{}", &text[..start], &text[end..]);
    let tmp = host.cfg.path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &host.cfg.path).unwrap();
}

/// Sends `ids` by the producer contract: the stream of each message from
/// the list the hosts publish, by the CRC-32 of its id.
async fn produce(host: &mut TestHost, ids: std::ops::Range<usize>) {
    let redis = host.redis.deployment();
    let mut conn = redis.connect().await.unwrap();
    let streams = partition_streams(&mut conn, &host.cfg.keys()).await;
    for i in ids {
        let id = format!("p-{i}");
        let stream = streams[crc32(id.as_bytes()) as usize % streams.len()].clone();
        host.send_fields(&stream, &[("type", "t"), ("id", &id), ("body", "{}")])
            .await;
    }
}

async fn states(host: &TestHost) -> Vec<(String, State)> {
    let mut conn = host.redis.deployment().connect().await.unwrap();
    registry::read(&mut conn, &host.cfg.keys())
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.partition.id().to_owned(), k.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_added_and_retired_without_loss() {
    let mut host = TestHost::start(&toml(1)).await;
    produce(&mut host, 0..100).await;
    host.settled("Q", 100, Duration::from_secs(30)).await;

    // One to four: three new partitions, read once queues.toml is reloaded.
    set_partitions(&host, 4);
    let keys = host.cfg.keys();
    let four: Vec<String> = keys
        .partitions(4)
        .iter()
        .map(|p| p.ingress.clone())
        .collect();
    wait_for(
        Duration::from_secs(30),
        "the producers' list names four partitions",
        async || {
            let mut conn = host.redis.deployment().connect().await.unwrap();
            partition_streams(&mut conn, &keys).await == four
        },
    )
    .await;
    produce(&mut host, 100..600).await;
    // Four to two before those are all handled: partitions 1 to 3 of four
    // are retired with messages in them.
    set_partitions(&host, 2);
    let two: Vec<String> = keys
        .partitions(2)
        .iter()
        .map(|p| p.id().to_owned())
        .collect();
    wait_for(
        Duration::from_secs(30),
        "two partitions active, three retired",
        async || {
            let s = states(&host).await;
            s.iter().filter(|(_, st)| *st == State::Active).count() == 2
                && s.iter().filter(|(_, st)| *st != State::Active).count() == 3
        },
    )
    .await;
    host.settled("Q", 600, Duration::from_secs(60)).await;
    wait_for(
        Duration::from_secs(30),
        "the retired partitions drained",
        async || {
            states(&host).await.iter().all(|(id, st)| {
                two.contains(id) == (*st == State::Active)
                    && (two.contains(id) || *st == State::Drained)
            })
        },
    )
    .await;

    // A stale producer writes to a drained partition: read again, handled.
    let drained = keys.partitions(4)[3].clone();
    host.send_fields(
        &drained.ingress,
        &[("type", "t"), ("id", "late"), ("body", "{}")],
    )
    .await;
    host.settled("Q", 601, Duration::from_secs(30)).await;
    let q = host.queue("Q");
    assert_eq!(
        (q.succeeded, q.dead_lettered, q.retried),
        (601, 0, 0),
        "{q:?}"
    );
    // Handled once each: as many handlings as messages.
    assert_eq!(q.attempts, 601, "{q:?}");
}
