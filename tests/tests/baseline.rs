//! A large plugin's new version is served on Winch's code at once, and
//! Cranelift's code takes its place when it is ready, under a steady stream
//! of messages: none is lost, fails or runs twice; a version whose
//! Cranelift code is cached skips Winch; one that Cranelift cannot compile
//! keeps Winch's code.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard::metrics::{Metrics, ReloadMetrics};
use switchyard_tests::*;

/// Replaces a file the way deploy tools do: write beside it, rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Swaps and optimizations so far.
fn counts(m: &Metrics) -> (u64, u64) {
    let r = &m.reloads;
    (
        ReloadMetrics::get(&r.plugin_swaps),
        ReloadMetrics::get(&r.plugin_optimized),
    )
}

fn by_version(m: &Metrics) -> BTreeMap<String, u64> {
    m.queue("Audit").by_plugin()
}

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_s_new_version_runs_on_winch_then_on_cranelift() {
    let base = std::fs::read(plugin("python_audit")).unwrap();
    assert!(base.len() >= switchyard::plugin::BASELINE_MIN_BYTES);
    let dir = tempdir("baseline");
    let file = dir.join("audit.wasm");
    std::fs::write(&file, plugin_version(&base, 0)).unwrap();
    let mut host = TestHost::start_with(TestConfig::new(&format!(
        "[routes]\n\"work\" = [\"Audit\"]\n[queues.Audit]\nplugin = \"{}\"\n\
         concurrency = 2\nmemory_mib = 256\nhandler_timeout = \"10s\"\nvisibility_timeout = \"30s\"\n",
        file.display()
    )))
    .await;
    let m: Arc<Metrics> = host.metrics.clone();
    let wait = |what: &'static str, check: Box<dyn Fn(&Metrics) -> bool + Send + Sync>| {
        let m = m.clone();
        async move {
            wait_for(LIMIT, what, || {
                let ok = check(&m);
                async move { ok }
            })
            .await;
        }
    };
    // Nothing was cached: the host started on Winch's code, then took
    // Cranelift's.
    wait(
        "the first version on Cranelift's code",
        Box::new(|m| counts(m) == (0, 1)),
    )
    .await;

    // A steady producer: 500 messages over about 20 s.
    const N: u64 = 500;
    let producer = send_steadily(
        host.redis.conn().await,
        host.cfg.ingress(),
        "work",
        "a",
        N,
        Duration::from_millis(40),
    );
    let first = version_hash(&plugin_version(&base, 0));
    wait(
        "the first version serving",
        Box::new(move |m| by_version(m).contains_key(&first)),
    )
    .await;

    // A new version: served before Cranelift's code for it exists.
    let bytes = plugin_version(&base, 1);
    let second = version_hash(&bytes);
    replace(&file, &bytes);
    let on_winch = second.clone();
    wait(
        "the new version serving",
        Box::new(move |m| by_version(m).get(&on_winch).is_some_and(|n| *n > 0)),
    )
    .await;
    assert_eq!(
        counts(&m),
        (1, 1),
        "the new version served messages before Cranelift's code took over"
    );
    let served_on_winch = by_version(&m)[&second];
    wait(
        "the new version on Cranelift's code",
        Box::new(|m| counts(m) == (1, 2)),
    )
    .await;
    let on_cranelift = second.clone();
    wait(
        "the new version serving on Cranelift's code",
        Box::new(move |m| by_version(m)[&on_cranelift] > served_on_winch + 5),
    )
    .await;

    // Back to the first version: its Cranelift code is cached, and runs at
    // once (no Winch, nothing to optimize).
    replace(&file, &plugin_version(&base, 0));
    wait(
        "the first version swapped back",
        Box::new(|m| counts(m).0 == 2),
    )
    .await;

    producer.await.unwrap();
    host.settled("Audit", N, LIMIT).await;
    host.stop().await;
    assert_eq!(counts(&m), (2, 2), "the cached version was not compiled");
    let c = m.queue("Audit").snapshot();
    assert_eq!(
        (c.succeeded, c.failed, c.retried, c.dead_lettered),
        (N, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.attempts, N, "no message was run twice");
    let versions = by_version(&m);
    assert_eq!(versions.values().sum::<u64>(), N, "{versions:?}");
    assert_eq!(versions.len(), 2, "{versions:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A version Cranelift cannot compile within the budget
/// (`plugin_compile_timeout` between Winch's compile and Cranelift's) keeps
/// running on Winch's code, says so, and is not compiled again when its
/// file is rewritten with the same bytes or queues.toml is edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_cranelift_cannot_compile_keeps_winch_s_code() {
    let redis = Redis::start();
    let dir = tempdir("baseline-budget");
    let file = dir.join("audit.wasm");
    let bytes = std::fs::read(plugin("python_audit")).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    // Python audit: 2 to 3.5 s of CPU for Winch, about 12 s for Cranelift
    // with an empty function cache.
    let cfg = TestConfig::new(&format!(
        "[host]\nprefix = \"@PREFIX@\"\ncache_dir = \"cache\"\nshutdown_timeout = \"5s\"\n\
         plugin_compile_timeout = \"6s\"\n\
         [routes]\n\"work\" = [\"Audit\"]\n[queues.Audit]\nplugin = \"{}\"\n\
         memory_mib = 256\nhandler_timeout = \"10s\"\n",
        file.display()
    ));
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    let given_up = wait_for_event(&log, "plugin_not_optimized", LIMIT).await;
    assert!(
        given_up.contains("compiling took more than 6s of CPU time"),
        "{given_up}"
    );
    assert!(events_in(&log, "plugin_optimized").is_empty());
    // Winch's code serves on.
    let mut conn = redis.conn().await;
    for i in 0..5 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "work"), ("id", &format!("w-{i}")), ("body", "{}")],
        )
        .await;
    }
    wait_for(LIMIT, "5 messages handled", async || {
        events_in(&log, "handled").len() == 5
    })
    .await;
    // The same bytes again, then an edit of queues.toml: nothing to
    // compile, and no compile started.
    replace(&file, &bytes);
    let text = std::fs::read_to_string(&cfg.path).unwrap();
    replace(&cfg.path, format!("{text}\n# edited\n").as_bytes());
    wait_for_event(&log, "config_applied", LIMIT).await;
    assert!(
        host.children().is_empty(),
        "a compile started: {:?}",
        host.children()
    );
    assert_eq!(events_in(&log, "plugin_not_optimized").len(), 1);
    assert!(events_in(&log, "plugin_swapped").is_empty());
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(15)).unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}
