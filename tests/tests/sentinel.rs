//! Sentinel: a master with two replicas, watched by three sentinels. The
//! master is SIGKILLed while a producer writes; a replica is promoted; the
//! host (a process, never restarted) follows the sentinels to it and goes
//! on. The total-queue checker then counts what became of every message,
//! with and without the producer waiting for a replica (`WAIT 1`) and the
//! host's `redis.wait_replicas`. Replication is asynchronous: without the
//! producer's WAIT, an XADD the old master acknowledged and had not yet
//! sent to a replica can be lost with it; with it, nothing acknowledged
//! is. The host's own steps come back as redeliveries (duplicates), never
//! as losses.

use std::time::Duration;

use switchyard::stream::Keys;
use switchyard_tests::ha::SentinelSet;
use switchyard_tests::total::{self, Production};
use switchyard_tests::*;

/// One run: the figures it gave, and whether the host followed the
/// failover without a restart.
async fn failover(
    producer_wait: u32,
    host_wait: u32,
) -> (total::Outcome, total::Produced, Duration) {
    plugin("recorder");
    let mut set = SentinelSet::start(2, 3).unwrap();
    let cfg = TestConfig::new(&format!(
        r#"
[ingress]
stream = "@PREFIX@:ingress"
visibility_timeout = "2s"

[redis]
wait_replicas = {host_wait}
wait_timeout = "500ms"

[routes]
"record" = ["Record"]

[queues.Record]
plugin = "@PLUGINS@/recorder.wasm"
concurrency = 8
visibility_timeout = "3s"
max_attempts = 1000
retry_delay = "100ms"
"#
    ));
    let dir = tempdir(&format!("sentinel-{producer_wait}-{host_wait}"));
    let log = dir.join("host.log");
    let url = set.url();
    let mut host = HostProcess::spawn_with(&cfg.path, &url, &log, &[("RUST_LOG", "info")]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(60)).await;

    let redis = deployment(&url, &cfg.config);
    let keys = Keys::of(&cfg.config, false);
    let production = Production {
        messages: 5_000,
        rate: 1_000,
        types: vec!["record".into()],
        id_prefix: format!("s{producer_wait}{host_wait}"),
        wait_replicas: producer_wait,
    };
    let producer = tokio::spawn(total::produce(redis.clone(), keys, production.clone()));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // Replication stops for half a second (a network fault: the replicas
    // are stopped and the master's links to them closed), then the master
    // dies: what it acknowledged in that half second is only on it.
    set.signal_replicas("STOP").unwrap();
    set.cut_replication().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = set.kill_master().unwrap();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    set.signal_replicas("CONT").unwrap();
    let new = set.wait_promoted(old, Duration::from_secs(30)).unwrap();
    let produced = producer.await.unwrap();
    assert!(
        total::drained(&redis, &cfg.config, Duration::from_secs(120)).await,
        "not drained after the failover"
    );
    let line = wait_for_event(&log, "redis_master_changed", Duration::from_secs(10)).await;
    assert!(line.contains(&format!(":{new}")), "{line}");
    assert!(
        host.wait(Duration::from_millis(10)).is_err(),
        "the host exited instead of following the failover"
    );
    host.signal("TERM");
    host.wait(Duration::from_secs(30)).unwrap();
    let dead = total::dead_letters_everywhere(&redis, &cfg.config)
        .await
        .unwrap();
    let prefix = format!("{}-", production.id_prefix);
    let outcome = total::check(
        &produced.acknowledged,
        |_| vec!["Record".to_owned()],
        std::slice::from_ref(&log),
        &dead,
        |id| id.starts_with(&prefix),
    );
    // When the host moved to the new master (its log line's time), and
    // the first handling that began after that.
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let changed_at = humantime::parse_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let resumed = total::handlings_timed(std::slice::from_ref(&log))
        .iter()
        .map(|h| h.begin)
        .filter(|b| *b > changed_at)
        .min()
        .expect("handlings after the failover");
    (
        outcome,
        produced,
        Duration::from_micros((resumed - killed_at) as u64),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_followed_and_nothing_acknowledged_is_lost() {
    init_logs();
    println!(
        "Sentinel failover, 5,000 messages at 1,000/s, replication cut for 0.5 s and the master SIGKILLed after 3 s:"
    );
    println!(
        "producer WAIT | host wait_replicas | acknowledged | lost | duplicates | unexpected | resent batches"
    );
    for (producer_wait, host_wait) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let (o, p, resumed) = failover(producer_wait, host_wait).await;
        println!(
            "{} | {} | {} | {} | {} | {} | {} | {:.1} s",
            if producer_wait > 0 { "WAIT 1" } else { "none" },
            host_wait,
            o.acknowledged,
            o.lost.len(),
            o.duplicates,
            o.unexpected.len(),
            p.resent,
            resumed.as_secs_f64()
        );
        assert_eq!(o.acknowledged, 5_000, "{o}");
        assert!(o.unexpected.is_empty(), "{o}");
        assert_eq!(o.dead_lettered, 0, "{o}");
        if producer_wait > 0 {
            // What a replica had when the producer was told is never lost.
            assert!(
                o.lost.is_empty(),
                "lost {:?}: {o}",
                &o.lost[..o.lost.len().min(10)]
            );
        }
    }
}
