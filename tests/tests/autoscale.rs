//! Concurrency scaled with the backlog: `concurrency = { min, max }` grows
//! to max while a backlog persists, never past it, and shrinks back to min
//! once the queue is idle; a number stays fixed; bad bounds name the key.

use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_grows_a_queue_to_max_and_idleness_shrinks_it_to_min() {
    let mut host = TestHost::idle(TestConfig::new(
        r#"
[routes]
"slow" = ["Slow"]
"fixed" = ["Fixed"]
[queues.Slow]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = { min = 1, max = 8 }
[queues.Slow.config]
ms = "20"
[queues.Fixed]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 3
"#,
    ))
    .await;
    for n in 0..600 {
        let id = format!("s-{n}");
        host.send("slow", &id, "{}").await;
    }
    host.send("fixed", "f-1", "{}").await;
    host.restart().await;
    let slow = host.metrics.queue("Slow");
    let fixed = host.metrics.queue("Fixed");

    // Grows to max while the backlog lasts; never past it.
    let mut highest = 0;
    wait_for(Duration::from_secs(30), "grown to 8 slots", async || {
        let now = slow.concurrency.load(Ordering::Relaxed);
        highest = highest.max(now);
        now >= 8
    })
    .await;
    assert!(
        slow.scaled_up.load(Ordering::Relaxed) >= 3,
        "1 -> 2 -> 3 -> 4 -> 6 -> 8"
    );
    wait_for(Duration::from_secs(60), "the backlog handled", || {
        let m = host.metrics.clone();
        async move { m.queues().get("Slow").is_some_and(|c| c.succeeded == 600) }
    })
    .await;
    assert!(slow.in_flight.load(Ordering::Relaxed) <= 8);

    // Idle: back to min.
    wait_for(Duration::from_secs(30), "shrunk back to 1", || {
        let s = slow.clone();
        async move { s.concurrency.load(Ordering::Relaxed) == 1 }
    })
    .await;
    assert!(slow.scaled_down.load(Ordering::Relaxed) >= 1);
    assert_eq!(fixed.concurrency.load(Ordering::Relaxed), 3);
    assert_eq!(fixed.scaled_up.load(Ordering::Relaxed), 0);
    assert!(highest <= 8);
    host.stop().await;
}

#[test]
fn scaling_bounds_are_checked() {
    let dir = tempdir("autoscale-config");
    let path = dir.join("queues.toml");
    for (concurrency, error) in [
        (
            "{ min = 9, max = 4 }",
            "queues.A.concurrency.min: must not be more than concurrency.max (4), found 9",
        ),
        ("{ min = 2 }", "queues.A.concurrency.max: is required"),
        (
            "{ max = 2000 }",
            "queues.A.concurrency.max: must be between 1 and 1024, found 2000",
        ),
        (
            "{ max = 4, most = 5 }",
            "queues.A.concurrency.most: unknown key",
        ),
    ] {
        std::fs::write(
            &path,
            format!("[routes]\n\"a\" = [\"A\"]\n[queues.A]\nplugin = \"builtin:noop\"\nconcurrency = {concurrency}\n"),
        )
        .unwrap();
        let e = switchyard::config::Config::load(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains(error), "{concurrency}: {e}");
    }
    std::fs::write(
        &path,
        "[routes]\n\"a\" = [\"A\"]\n[queues.A]\nplugin = \"builtin:noop\"\nconcurrency = { min = 2, max = 64 }\n",
    )
    .unwrap();
    let c = switchyard::config::Config::load(&path).unwrap();
    assert_eq!(
        (c.queues["A"].concurrency_min, c.queues["A"].concurrency),
        (2, 64)
    );
}
