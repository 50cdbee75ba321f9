//! Many hosts: three host processes share every queue of the shipped
//! queues.toml (its routes and queues, each queue's plugin the `recorder`,
//! which takes 20 ms and logs when each handling began and ended), and are
//! SIGKILLed and started again at random while a producer sends every
//! message type. Then: nothing acknowledged is lost (total-queue check,
//! every queue a type is routed to), no message was handled by two live
//! hosts at once (a live host's lease holds; only a dead host's messages
//! are taken over), and the consumers of dead hosts are removed from every
//! group.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchyard::config::Config;
use switchyard::stream::Keys;
use switchyard_tests::total::{self, Production};
use switchyard_tests::*;

/// The shipped queues.toml's routes and queues, every queue running the
/// recorder.
fn shipped_as_recorders() -> String {
    let shipped = Config::load_with_env(&repo_root().join("queues.toml"), &|name| {
        SHIPPED_SECRETS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .expect("the shipped queues.toml");
    let mut text = String::from(
        "[ingress]\nstream = \"@PREFIX@:ingress\"\nvisibility_timeout = \"2s\"\n\n\
         [retention]\ninterval = \"1s\"\nidle_consumer = \"3s\"\n\n[routes]\n",
    );
    for (t, queues) in &shipped.routes {
        let list: Vec<String> = queues.iter().map(|q| format!("{q:?}")).collect();
        text.push_str(&format!("{t:?} = [{}]\n", list.join(", ")));
    }
    for q in shipped.queues.keys() {
        text.push_str(&format!(
            "\n[queues.{q}]\nplugin = \"@PLUGINS@/recorder.wasm\"\nconcurrency = 4\n\
             visibility_timeout = \"4s\"\nmax_attempts = 1000\nretry_delay = \"100ms\"\n\
             config = {{ ms = \"20\" }}\n"
        ));
    }
    text
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_killed_at_random_lose_nothing_and_never_share_a_message() {
    init_logs();
    plugin("recorder");
    let redis = Redis::start();
    let cfg = TestConfig::new(&shipped_as_recorders());
    let routes = cfg.config.routes.clone();
    let types: Vec<String> = routes.keys().cloned().collect();
    let dir = tempdir("hosts");
    let mut logs = Vec::new();
    let mut deaths: BTreeMap<usize, u128> = BTreeMap::new();
    let spawn = |logs: &mut Vec<std::path::PathBuf>| {
        let log = dir.join(format!("host-{}.log", logs.len()));
        let host = HostProcess::spawn_with(
            &cfg.path,
            redis.url(),
            &log,
            &[("RUST_LOG", "warn,plugin=info")],
        )
        .unwrap();
        logs.push(log);
        (logs.len() - 1, host)
    };
    let mut hosts: Vec<(usize, HostProcess)> = (0..3).map(|_| spawn(&mut logs)).collect();

    let production = Production {
        messages: 6_000,
        rate: 300,
        types: types.clone(),
        id_prefix: "h".into(),
        wait_replicas: 0,
    };
    let deployment = redis.deployment();
    let producer = tokio::spawn(total::produce(
        deployment.clone(),
        Keys::of(&cfg.config, false),
        production.clone(),
    ));
    // Every 2 to 4 s a host, chosen at random, is killed and another one
    // started in its place.
    let mut seed = now_micros() as u64 | 1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(17) {
        tokio::time::sleep(Duration::from_millis(2_000 + next() % 2_000)).await;
        let victim = (next() % hosts.len() as u64) as usize;
        let (index, mut host) = hosts.remove(victim);
        host.kill9();
        deaths.insert(index, now_micros());
        kills += 1;
        hosts.push(spawn(&mut logs));
    }
    let produced = producer.await.unwrap();
    assert!(
        total::drained(&deployment, &cfg.config, Duration::from_secs(120)).await,
        "not drained"
    );
    let dead = total::dead_letters_everywhere(&deployment, &cfg.config)
        .await
        .unwrap();
    let types_of = |id: &str| -> Vec<String> {
        let i: usize = id.trim_start_matches("h-").parse().unwrap();
        routes[&types[i % types.len()]].clone()
    };
    let outcome = total::check(&produced.acknowledged, types_of, &logs, &dead, |id| {
        id.starts_with("h-")
    });
    let timed = total::handlings_timed(&logs);
    let shared = total::overlaps(&timed, &deaths);
    println!(
        "three hosts, {kills} kills, {} messages of {} types: {outcome}; {} handlings; {} handled by two live hosts at once",
        produced.acknowledged.len(),
        types.len(),
        timed.len(),
        shared.len()
    );
    assert!(kills >= 4, "{kills} kills");
    assert!(
        outcome.lost.is_empty(),
        "lost {:?}: {outcome}",
        &outcome.lost[..outcome.lost.len().min(10)]
    );
    assert!(outcome.unexpected.is_empty(), "{outcome}");
    assert_eq!(outcome.dead_lettered, 0, "{outcome}");
    assert!(shared.is_empty(), "{:?}", &shared[..shared.len().min(5)]);

    // The dead hosts' consumers leave every group; the live ones stay.
    let live: BTreeSet<String> = hosts
        .iter()
        .map(|(_, h)| format!("-{}-", h.pid()))
        .collect();
    let mut conn = redis.conn().await;
    let mut streams = vec![cfg.ingress().to_owned()];
    streams.extend(cfg.config.queues.keys().map(|q| cfg.queue_stream(q)));
    wait_for(
        Duration::from_secs(30),
        "only live hosts' consumers left",
        async || {
            for s in &streams {
                let consumers: Vec<redis::Value> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(s)
                    .arg(&cfg.prefix)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                for c in &consumers {
                    let text = format!("{c:?}");
                    if !live.iter().any(|pid| text.contains(pid.as_str())) {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    for (_, host) in &mut hosts {
        host.signal("TERM");
    }
    for (_, host) in &mut hosts {
        host.wait(Duration::from_secs(30)).unwrap();
    }
}
