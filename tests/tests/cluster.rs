//! Redis Cluster: three masters with a replica each, the ingress in six
//! partitions. Their keys spread evenly over the masters; messages are
//! routed and handled in every partition (fanned out to two queues); a
//! master is SIGKILLed while a producer writes and its replica promoted;
//! then, still under load, slots move between masters (`redis-cli
//! --cluster reshard`). Nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard::redis::slots::key_slot;
use switchyard::stream::Keys;
use switchyard_tests::ha::Cluster;
use switchyard_tests::total::{self, Production};
use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_and_nothing_is_lost_through_failover_and_resharding() {
    init_logs();
    plugin("recorder");
    let mut cluster = Cluster::start(3, 1).unwrap();
    let cfg = TestConfig::new(
        r#"
[ingress]
stream = "@PREFIX@:ingress"
visibility_timeout = "2s"
partitions = 6

[routes]
"record" = ["A", "B"]

[queues.A]
plugin = "@PLUGINS@/recorder.wasm"
concurrency = 8
visibility_timeout = "3s"
max_attempts = 1000
retry_delay = "100ms"

[queues.B]
plugin = "@PLUGINS@/recorder.wasm"
concurrency = 8
visibility_timeout = "3s"
max_attempts = 1000
retry_delay = "100ms"
"#,
    );
    let keys = Keys::of(&cfg.config, true);
    let partitions = keys.partitions(6);
    // Two partitions on each master.
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    for p in &partitions {
        let port = cluster.master_of(key_slot(p.ingress.as_bytes())).unwrap();
        *per_master.entry(port).or_default() += 1;
    }
    assert_eq!(
        per_master.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_master:?}"
    );

    let dir = tempdir("cluster");
    let url = cluster.url();
    let mut hosts = Vec::new();
    let mut logs = Vec::new();
    for i in 0..2 {
        let log = dir.join(format!("host-{i}.log"));
        hosts
            .push(HostProcess::spawn_with(&cfg.path, &url, &log, &[("RUST_LOG", "info")]).unwrap());
        logs.push(log);
    }
    for log in &logs {
        wait_for_event(log, "started", Duration::from_secs(60)).await;
    }
    let redis = deployment(&url, &cfg.config);
    let production = Production {
        messages: 8_000,
        rate: 800,
        types: vec!["record".into()],
        id_prefix: "c".into(),
        wait_replicas: 1,
    };
    let producer = tokio::spawn(total::produce(
        redis.clone(),
        keys.clone(),
        production.clone(),
    ));

    // A master dies under load; its replica takes over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = cluster
        .master_of(key_slot(partitions[0].ingress.as_bytes()))
        .unwrap();
    cluster.kill(victim);
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    // The operator brings the node back (it rejoins as a replica), then
    // moves slots between two masters, still under load.
    if let Some(n) = cluster.nodes.iter_mut().find(|n| n.port == victim) {
        n.restart().unwrap();
    }
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    let masters: Vec<_> = cluster
        .topology()
        .unwrap()
        .into_iter()
        .filter(|n| n.master && !n.failed && !n.slots.is_empty())
        .collect();
    assert_eq!(masters.len(), 3, "{masters:?}");
    cluster
        .reshard(&masters[0].id, &masters[1].id, 1_500)
        .unwrap();

    let produced = producer.await.unwrap();
    assert_eq!(
        produced.per_stream.len(),
        6,
        "every partition got messages: {:?}",
        produced.per_stream
    );
    assert!(
        total::drained(&redis, &cfg.config, Duration::from_secs(120)).await,
        "not drained"
    );
    for host in &mut hosts {
        assert!(
            host.wait(Duration::from_millis(10)).is_err(),
            "a host exited"
        );
        host.signal("TERM");
    }
    for host in &mut hosts {
        host.wait(Duration::from_secs(30)).unwrap();
    }
    let dead = total::dead_letters_everywhere(&redis, &cfg.config)
        .await
        .unwrap();
    let outcome = total::check(
        &produced.acknowledged,
        |_| vec!["A".into(), "B".into()],
        &logs,
        &dead,
        |id| id.starts_with("c-"),
    );
    println!(
        "cluster, 8,000 messages to 6 partitions, a master killed, 1,500 slots resharded: {outcome}, {} batches resent",
        produced.resent
    );
    assert_eq!(outcome.acknowledged, 8_000, "{outcome}");
    assert!(
        outcome.lost.is_empty(),
        "lost {:?}: {outcome}",
        &outcome.lost[..outcome.lost.len().min(10)]
    );
    assert!(outcome.unexpected.is_empty(), "{outcome}");
    assert_eq!(outcome.dead_lettered, 0, "{outcome}");
    assert_eq!(outcome.handled, 16_000, "{outcome}");
}
