//! Hot reload: plugin files and queues.toml change under a steady stream of
//! messages, and no message is lost or fails because of a swap; broken files
//! and invalid edits are refused while the running version serves; queues
//! come and go; a restart reuses the compiled-code cache.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard::metrics::{Metrics, ReloadMetrics};
use switchyard_tests::*;

/// Replaces a file the way deploy tools do: write beside it, rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reloads(m: &Metrics) -> [u64; 4] {
    let r = &m.reloads;
    [
        ReloadMetrics::get(&r.plugin_swaps),
        ReloadMetrics::get(&r.plugin_refused),
        ReloadMetrics::get(&r.config_applied),
        ReloadMetrics::get(&r.config_refused),
    ]
}

async fn wait_reloads(m: &Arc<Metrics>, what: &str, check: impl Fn([u64; 4]) -> bool) {
    wait_for(Duration::from_secs(10), what, || {
        let r = reloads(m);
        let ok = check(r);
        async move { ok }
    })
    .await;
}

fn work_config(concurrency: u32, ms: u32, extra: &str) -> String {
    format!(
        r#"
[host]
prefix = "@PREFIX@"
cache_dir = "cache"

[ingress]
stream = "@PREFIX@:ingress"

[routes]
"work" = ["Work"]
{extra}
[queues.Work]
plugin = "work.wasm"
concurrency = {concurrency}
handler_timeout = "2s"
visibility_timeout = "5s"

[queues.Work.config]
ms = {ms}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_lose_and_fail_nothing() {
    let base = std::fs::read(plugin("sleep")).unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.join("work.wasm");
    std::fs::write(&work, plugin_version(&base, 0)).unwrap();
    let mut host = TestHost::idle(TestConfig::new(
        &work_config(4, 2, "").replace("work.wasm", work.to_str().unwrap()),
    ))
    .await;
    let (config_path, prefix) = (host.cfg.path.clone(), host.cfg.prefix.clone());
    let write_config = |text: String| {
        replace(
            &config_path,
            text.replace("work.wasm", work.to_str().unwrap())
                .replace("@PREFIX@", &prefix)
                .as_bytes(),
        )
    };

    host.restart().await;
    let m = host.metrics.clone();

    // A steady producer: 1,500 messages over about 6 s.
    const N: u64 = 1500;
    let producer = send_steadily(
        host.redis.conn().await,
        host.cfg.ingress(),
        "work",
        "w",
        N,
        Duration::from_millis(4),
    );

    wait_for(Duration::from_secs(10), "the host serving", || {
        let n = m.queue("Work").snapshot().succeeded;
        async move { n > 0 }
    })
    .await;

    let mut valid: BTreeSet<String> = BTreeSet::new();
    valid.insert(version_hash(&plugin_version(&base, 0)));
    let mut expect = [0u64; 4];
    for round in 1..=3u32 {
        // Three new versions, each replaced by rename.
        for k in 0..3 {
            let bytes = plugin_version(&base, round * 10 + k);
            valid.insert(version_hash(&bytes));
            replace(&work, &bytes);
            expect[0] += 1;
            wait_reloads(&m, "a swap", |r| r[0] == expect[0]).await;
        }
        // A broken file: refused, the last version keeps serving.
        match round {
            1 => replace(&work, b"this is not wasm"),
            2 => replace(&work, &std::fs::read(plugin("wrong_world")).unwrap()),
            _ => {
                // Written in place in two chunks, the watcher seeing the
                // first half on its own.
                let bytes = plugin_version(&base, 99);
                valid.insert(version_hash(&bytes));
                let half = bytes.len() / 2;
                std::fs::write(&work, &bytes[..half]).unwrap();
                expect[1] += 1;
                wait_reloads(&m, "the truncated file refused", |r| r[1] == expect[1]).await;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&work)
                    .unwrap();
                std::io::Write::write_all(&mut f, &bytes[half..]).unwrap();
                drop(f);
                expect[0] += 1;
                wait_reloads(&m, "the completed file swapped in", |r| r[0] == expect[0]).await;
                continue;
            }
        }
        expect[1] += 1;
        wait_reloads(&m, "a broken file refused", |r| r[1] == expect[1]).await;
        let served = m.queue("Work").snapshot().succeeded;
        wait_for(
            Duration::from_secs(10),
            "the old version serving on",
            || {
                let n = m.queue("Work").snapshot().succeeded;
                async move { n > served }
            },
        )
        .await;
        // A valid version again.
        let bytes = plugin_version(&base, round * 10 + 9);
        valid.insert(version_hash(&bytes));
        replace(&work, &bytes);
        expect[0] += 1;
        wait_reloads(&m, "a swap after a refusal", |r| r[0] == expect[0]).await;

        // queues.toml: a valid edit, then two invalid ones.
        write_config(work_config(2 + round, round, ""));
        expect[2] += 1;
        wait_reloads(&m, "a config edit applied", |r| r[2] == expect[2]).await;
        write_config(work_config(4, 1, "").replace("concurrency", "concurency"));
        expect[3] += 1;
        wait_reloads(&m, "an unknown key refused", |r| r[3] == expect[3]).await;
        write_config(work_config(4, 1, "\"other\" = [\"Missing\"]"));
        expect[3] += 1;
        wait_reloads(&m, "a route to a missing queue refused", |r| {
            r[3] == expect[3]
        })
        .await;
    }
    producer.await.unwrap();
    wait_for(Duration::from_secs(30), "every message handled", || {
        let n = m.queue("Work").snapshot().succeeded;
        async move { n == N }
    })
    .await;
    host.stop().await;

    let c = m.queue("Work").snapshot();
    assert_eq!(
        (c.succeeded, c.failed, c.retried, c.dead_lettered),
        (N, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.attempts, N, "no message was run twice");
    assert_eq!(
        pending(
            &mut host.conn,
            &host.cfg.queue_stream("Work"),
            &host.cfg.prefix
        )
        .await,
        0
    );
    assert_eq!(
        lag(
            &mut host.conn,
            &host.cfg.queue_stream("Work"),
            &host.cfg.prefix
        )
        .await,
        Some(0)
    );
    assert!(dead_letters(&mut host.conn, &host.cfg).await.is_empty());
    let by_version = m.queue("Work").by_plugin();
    assert_eq!(by_version.values().sum::<u64>(), N);
    assert!(by_version.len() >= 5, "versions used: {by_version:?}");
    for version in by_version.keys() {
        assert!(
            valid.contains(version),
            "{version} is not a version that was written"
        );
    }
    assert_eq!(reloads(&m), expect);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_come_and_go_with_the_config() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[host]
prefix = "@PREFIX@"
shutdown_timeout = "5s"
[routes]
"a" = ["A"]
[queues.A]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 2
[queues.A.config]
ms = 1500
"#,
    ))
    .await;
    let m = host.metrics.clone();
    for i in 0..2 {
        host.send("a", &format!("a-{i}"), "{}").await;
    }
    wait_for(Duration::from_secs(10), "A busy", || {
        let n = m.queue("A").snapshot().in_flight;
        async move { n == 2 }
    })
    .await;
    // Remove A while it works; add B.
    let text = std::fs::read_to_string(&host.cfg.path).unwrap();
    let text = text
        .replace("\"a\" = [\"A\"]", "\"b\" = [\"B\"]")
        .replace("[queues.A]", "[queues.B]")
        .replace("[queues.A.config]", "[queues.B.config]")
        .replace("ms = 1500", "ms = 0");
    replace(&host.cfg.path, text.as_bytes());
    wait_reloads(&m, "the edit applied", |r| r[2] == 1).await;

    // A drains what it had in flight.
    wait_for(Duration::from_secs(10), "A drained", || {
        let n = m.queue("A").snapshot().succeeded;
        async move { n == 2 }
    })
    .await;
    assert_eq!(
        pending(
            &mut host.conn,
            &host.cfg.queue_stream("A"),
            &host.cfg.prefix
        )
        .await,
        0
    );
    // B consumes; `a` has no route any more.
    host.send("b", "b-0", "{}").await;
    host.send("a", "a-late", "{}").await;
    wait_for(Duration::from_secs(10), "B consumed", || {
        let n = m.queue("B").snapshot().succeeded;
        let dead = m.router.dead_lettered.load(Ordering::Relaxed);
        async move { n == 1 && dead == 1 }
    })
    .await;
    host.stop().await;
    assert_eq!(
        m.queue("A").snapshot().attempts,
        2,
        "A read nothing after its removal"
    );
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert_eq!(dead[0].message_id, "a-late");
    assert_eq!(dead[0].reason, "no route for message type \"a\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reuses_the_compiled_cache() {
    init_logs();
    let redis = Redis::start();
    let cfg = TestConfig::new(
        r#"
[routes]
"a" = ["A", "B"]
[queues.A]
plugin = "@PLUGINS@/persistence.wasm"
[queues.B]
plugin = "@PLUGINS@/webhook.wasm"
"#,
    );
    let cold = start_host(&cfg.config, &redis);
    let m = cold.metrics.clone();
    wait_for(Duration::from_secs(10), "plugins loaded", || {
        let n = ReloadMetrics::get(&m.reloads.compiles) + ReloadMetrics::get(&m.reloads.cache_hits);
        async move { n == 2 }
    })
    .await;
    cold.stop().await.unwrap();
    assert_eq!(ReloadMetrics::get(&m.reloads.compiles), 2);
    assert_eq!(ReloadMetrics::get(&m.reloads.cache_hits), 0);

    let warm = start_host(&cfg.config, &redis);
    let m = warm.metrics.clone();
    wait_for(Duration::from_secs(10), "plugins loaded", || {
        let n = ReloadMetrics::get(&m.reloads.compiles) + ReloadMetrics::get(&m.reloads.cache_hits);
        async move { n == 2 }
    })
    .await;
    let mut conn = redis.conn().await;
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "a"), ("body", r#"{"SiteId":1}"#)],
    )
    .await;
    wait_for(Duration::from_secs(10), "handled from cached code", || {
        let q = m.queues();
        let done = q.values().map(|c| c.attempts).sum::<u64>();
        async move { done == 2 }
    })
    .await;
    warm.stop().await.unwrap();
    assert_eq!(
        ReloadMetrics::get(&m.reloads.compiles),
        0,
        "no compile on a warm start"
    );
    assert_eq!(ReloadMetrics::get(&m.reloads.cache_hits), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_settings_apply_to_the_next_message() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[host]
prefix = "@PREFIX@"
[routes]
"s" = ["S"]
[queues.S]
plugin = "@PLUGINS@/sleep.wasm"
handler_timeout = "2s"
visibility_timeout = "5s"
max_attempts = 1
[queues.S.config]
ms = 0
"#,
    ))
    .await;
    let m = host.metrics.clone();
    host.send("s", "before", "{}").await;
    wait_for(Duration::from_secs(10), "handled", || {
        let n = m.queue("S").snapshot().succeeded;
        async move { n == 1 }
    })
    .await;
    // A shorter deadline and a slower plugin setting: the next message runs
    // past the deadline.
    let text = std::fs::read_to_string(&host.cfg.path)
        .unwrap()
        .replace("handler_timeout = \"2s\"", "handler_timeout = \"100ms\"")
        .replace("ms = 0", "ms = 400");
    replace(&host.cfg.path, text.as_bytes());
    wait_reloads(&m, "the edit applied", |r| r[2] == 1).await;
    host.send("s", "after", "{}").await;
    wait_for(Duration::from_secs(10), "dead-lettered", || {
        let n = m.queue("S").snapshot().dead_lettered;
        async move { n == 1 }
    })
    .await;
    host.stop().await;
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert_eq!(dead[0].message_id, "after");
    assert!(
        dead[0]
            .reason
            .contains("(timeout): handler ran past its deadline of 100ms"),
        "{}",
        dead[0].reason
    );
}

/// The control loop once rebuilt the watcher's debounce inside its
/// `select!`: with a maintenance tick of 100 ms, the tick won every race
/// and a plugin swap never happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_applied_whatever_else_the_host_does_meanwhile() {
    init_logs();
    let redis = Redis::start();
    let base = std::fs::read(plugin("sleep")).unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-tick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.join("work.wasm");
    std::fs::write(&work, plugin_version(&base, 0)).unwrap();
    let cfg = TestConfig::new(
        &work_config(2, 0, "")
            .replace("work.wasm", work.to_str().unwrap())
            .replace("[ingress]", "[retention]\ninterval = \"100ms\"\n[ingress]"),
    );
    let host = start_host(&cfg.config, &redis);
    let m = host.metrics.clone();
    wait_for(Duration::from_secs(10), "plugins loaded", || {
        let n = ReloadMetrics::get(&m.reloads.compiles) + ReloadMetrics::get(&m.reloads.cache_hits);
        async move { n == 1 }
    })
    .await;
    for k in 1..=3 {
        replace(&work, &plugin_version(&base, k));
        wait_reloads(&m, "a swap", |r| r[0] == u64::from(k)).await;
    }
    host.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A plugin file that is a symlink: a change to the file it points to, in
/// another folder, is a change of the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_behind_a_symlink_is_seen() {
    init_logs();
    let redis = Redis::start();
    let base = std::fs::read(plugin("sleep")).unwrap();
    let root = std::env::temp_dir().join(format!("switchyard-link-{}", std::process::id()));
    let (links, releases) = (root.join("links"), root.join("releases"));
    std::fs::create_dir_all(&links).unwrap();
    std::fs::create_dir_all(&releases).unwrap();
    let target = releases.join("work.wasm");
    std::fs::write(&target, plugin_version(&base, 0)).unwrap();
    let link = links.join("work.wasm");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let cfg = TestConfig::new(&work_config(2, 0, "").replace("work.wasm", link.to_str().unwrap()));
    let host = start_host(&cfg.config, &redis);
    let m = host.metrics.clone();
    wait_for(Duration::from_secs(10), "plugins loaded", || {
        let n = ReloadMetrics::get(&m.reloads.compiles) + ReloadMetrics::get(&m.reloads.cache_hits);
        async move { n == 1 }
    })
    .await;
    // The release is rewritten in place; then the link is pointed at a new
    // release.
    std::fs::write(&target, plugin_version(&base, 1)).unwrap();
    wait_reloads(&m, "the rewritten target swapped in", |r| r[0] == 1).await;
    let next = releases.join("work-2.wasm");
    std::fs::write(&next, plugin_version(&base, 2)).unwrap();
    let tmp = links.join("work.tmp");
    std::os::unix::fs::symlink(&next, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    wait_reloads(&m, "the relinked file swapped in", |r| r[0] == 2).await;
    host.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(root);
}

/// Compiles that overrun are stopped, not abandoned: six swaps of a
/// component that takes seconds to compile once left a host at 2.5 GB.
/// Each compile is killed at its CPU budget, the host's memory does not
/// grow with them, no compiler is left running, and the next good version
/// swaps in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_over_budget_are_stopped_and_cost_the_host_nothing() {
    let redis = Redis::start();
    let base = std::fs::read(plugin("sleep")).unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.join("work.wasm");
    std::fs::write(&work, plugin_version(&base, 0)).unwrap();
    let cfg = TestConfig::new(
        &work_config(2, 0, "")
            .replace("work.wasm", work.to_str().unwrap())
            .replace(
                "cache_dir = \"cache\"",
                "cache_dir = \"\"\nplugin_compile_timeout = \"1s\"",
            ),
    );
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    let before = host.peak_rss_kib();
    let slow = slow_component(60_000);
    for k in 0..6u32 {
        let mut bytes = slow.clone();
        // Another version each time: a custom section with the round.
        bytes.extend_from_slice(&[0, 6, 1, b'v', 0, 0, 0, k as u8]);
        replace(&work, &bytes);
        wait_for(
            Duration::from_secs(60),
            "the slow version refused",
            async || events_in(&log, "plugin_refused").len() == k as usize + 1,
        )
        .await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("compiling took more than 1s of CPU time")
            .count(),
        6,
        "{text}"
    );
    let after = host.peak_rss_kib();
    eprintln!("host peak RSS before six over-budget compiles {before} KiB, after {after} KiB");
    assert!(
        after - before < 50 * 1024,
        "the host's peak RSS grew from {before} KiB to {after} KiB"
    );
    assert!(
        host.children().is_empty(),
        "compilers left running: {:?}",
        host.children()
    );
    replace(&work, &plugin_version(&base, 7));
    wait_for_event(&log, "plugin_swapped", Duration::from_secs(20)).await;
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(10)).unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}

/// An edit that names a plugin not built yet is refused; building the
/// plugin then applies the edit, without saving queues.toml again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_refused_for_a_missing_plugin_applies_once_it_is_built() {
    let dir = std::env::temp_dir().join(format!("switchyard-later-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"a" = ["A"]
[queues.A]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    ))
    .await;
    let m = host.metrics.clone();
    wait_for(Duration::from_secs(10), "plugins loaded", || {
        let n = ReloadMetrics::get(&m.reloads.compiles) + ReloadMetrics::get(&m.reloads.cache_hits);
        async move { n == 1 }
    })
    .await;
    let later = dir.join("later.wasm");
    let text = std::fs::read_to_string(&host.cfg.path).unwrap().replace(
        "\"a\" = [\"A\"]",
        &format!(
            "\"a\" = [\"A\"]\n\"b\" = [\"B\"]\n[queues.B]\nplugin = \"{}\"",
            later.display()
        ),
    );
    replace(&host.cfg.path, text.as_bytes());
    wait_reloads(&m, "the edit refused", |r| r[3] == 1).await;
    replace(&later, &std::fs::read(plugin("sleep")).unwrap());
    wait_reloads(&m, "the edit applied", |r| r[2] == 1).await;
    xadd(
        &mut host.conn,
        host.cfg.ingress(),
        &[("type", "b"), ("body", "{}")],
    )
    .await;
    wait_for(Duration::from_secs(10), "B serving", || {
        let n = m.queue("B").snapshot().succeeded;
        async move { n == 1 }
    })
    .await;
    host.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Lowering a queue's concurrency while it is idle takes effect for the
/// next burst: the slots the reading loop held are retired too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_concurrency_applies_to_the_next_burst() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"s" = ["S"]
[queues.S]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 8
[queues.S.config]
ms = 200
"#,
    ))
    .await;
    let m = host.metrics.clone();
    wait_for(Duration::from_secs(10), "plugins loaded", || {
        let n = ReloadMetrics::get(&m.reloads.compiles) + ReloadMetrics::get(&m.reloads.cache_hits);
        async move { n == 1 }
    })
    .await;
    let text = std::fs::read_to_string(&host.cfg.path)
        .unwrap()
        .replace("concurrency = 8", "concurrency = 1");
    replace(&host.cfg.path, text.as_bytes());
    wait_reloads(&m, "the edit applied", |r| r[2] == 1).await;
    for i in 0..4 {
        host.send("s", &format!("s-{i}"), "{}").await;
    }
    let q = m.queue("S");
    let mut most = 0;
    let started = std::time::Instant::now();
    while q.snapshot().succeeded < 4 {
        most = most.max(q.snapshot().in_flight);
        assert!(started.elapsed() < Duration::from_secs(30), "not handled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    host.stop().await;
    assert_eq!(most, 1, "handled {most} at once with concurrency 1");
}
