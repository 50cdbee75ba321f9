//! A misbehaving plugin never takes the host down: the deadline stops a
//! plugin that loops forever, the memory cap stops one that allocates without
//! limit, and meanwhile the host keeps serving the other queues.

use std::time::Duration;

use switchyard_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_memory_cap_stop_bad_plugins() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"spin" = ["Spin"]
"hog" = ["Hog"]

[queues.Spin]
plugin = "@PLUGINS@/spin.wasm"
concurrency = 2
handler_timeout = "1500ms"
visibility_timeout = "3s"
max_attempts = 2
retry_delay = "50ms"

[queues.Hog]
plugin = "@PLUGINS@/hog.wasm"
concurrency = 1
handler_timeout = "5s"
memory_mib = 16
visibility_timeout = "6s"
max_attempts = 2
retry_delay = "50ms"
"#,
    ))
    .await;
    let m = host.metrics.clone();
    for i in 0..2 {
        host.send("spin", &format!("spin-{i}"), "{}").await;
    }
    host.send("hog", "hog-0", "{}").await;
    wait_for(Duration::from_secs(60), "bad plugins dead-lettered", || {
        let (s, h) = (m.queue("Spin").snapshot(), m.queue("Hog").snapshot());
        async move { s.dead_lettered == 2 && h.dead_lettered == 1 }
    })
    .await;
    host.stop().await;

    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    for d in dead.iter().filter(|d| d.queue == "Spin") {
        assert_eq!(d.attempts, "2");
        assert!(
            d.reason
                .contains("(timeout): handler ran past its deadline of 1.5s"),
            "{}",
            d.reason
        );
    }
    let hog = dead
        .iter()
        .find(|d| d.queue == "Hog")
        .expect("hog dead-lettered");
    assert!(
        hog.reason
            .contains("(memory_cap): plugin exceeded its memory cap of 16 MiB"),
        "{}",
        hog.reason
    );
    assert_eq!(m.queue("Spin").snapshot().failed, 4);
    assert_eq!(m.queue("Hog").snapshot().failed, 2);
    assert_eq!(dead.len(), 3, "{dead:#?}");
}

/// Plugins that spin on both cores do not starve the other queues: they
/// yield at every epoch tick. Their deadline is far off, so the healthy
/// queue is served while they are certainly still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_plugins_do_not_starve_other_queues() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[host]
prefix = "@PREFIX@"
shutdown_timeout = "100ms"
[routes]
"spin" = ["Spin"]
"ok" = ["Ok"]
[queues.Spin]
plugin = "@PLUGINS@/spin.wasm"
concurrency = 2
handler_timeout = "2m"
visibility_timeout = "5m"
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 4
"#,
    ))
    .await;
    let m = host.metrics.clone();
    for i in 0..2 {
        host.send("spin", &format!("spin-{i}"), "{}").await;
    }
    wait_for(Duration::from_secs(10), "both spinners running", || {
        let n = m.queue("Spin").snapshot().in_flight;
        async move { n == 2 }
    })
    .await;
    for i in 0..50 {
        host.send("ok", &format!("ok-{i}"), "{}").await;
    }
    wait_for(Duration::from_secs(60), "healthy queue drained", || {
        let n = m.queue("Ok").snapshot().succeeded;
        async move { n == 50 }
    })
    .await;
    let spin = m.queue("Spin").snapshot();
    assert_eq!((spin.in_flight, spin.failed), (2, 0), "{spin:?}");
    // The spinners are abandoned at shutdown; their messages stay pending.
    host.stop().await;
    assert_eq!(
        pending(
            &mut host.conn,
            &host.cfg.queue_stream("Spin"),
            &host.cfg.prefix
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_has_no_environment_files_or_network() {
    // The host's own environment holds a secret, and something listens on
    // loopback: the plugin must reach neither.
    let redis = Redis::start();
    let addr = redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let cfg = TestConfig::new(&format!(
        r#"
[routes]
"probe" = ["Probe"]
[queues.Probe]
plugin = "@PLUGINS@/probe.wasm"
[queues.Probe.config]
connect = "{addr}"
"#
    ));
    let log = cfg.dir.join("host.log");
    let host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[("SWITCHYARD_TEST_SECRET", "hunter2")],
    )
    .unwrap();
    let mut conn = redis.conn().await;
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "probe"), ("body", "{}")],
    )
    .await;
    let dead_stream = cfg.dead_stream();
    wait_for(Duration::from_secs(20), "the probe's report", || {
        let mut conn = conn.clone();
        let dead_stream = dead_stream.clone();
        async move { !entries(&mut conn, &dead_stream).await.is_empty() }
    })
    .await;
    drop(host);
    let dead = dead_letters(&mut conn, &cfg).await;
    let report = &dead[0].reason;
    assert!(report.contains("env=0 secret=absent args=0 "), "{report}");
    for probe in ["root=denied", "etc=denied", "cwd=denied", "net=denied"] {
        assert!(report.contains(probe), "{probe} not in {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_reused_only_when_asked_and_never_after_a_trap() {
    let mut host = TestHost::start_with(TestConfig::new(
        r#"
[routes]
"fresh" = ["Fresh"]
"warm" = ["Warm"]
[queues.Fresh]
plugin = "@PLUGINS@/counter.wasm"
concurrency = 1
max_attempts = 1
[queues.Warm]
plugin = "@PLUGINS@/counter.wasm"
concurrency = 1
max_attempts = 1
reuse_instances = true
"#,
    ))
    .await;
    let m = host.metrics.clone();
    // One message at a time, so the order of calls is the order sent.
    let send = |t: &'static str, id: String, body: &'static str| {
        let mut conn = host.conn.clone();
        let ingress = host.cfg.ingress().to_owned();
        let m = m.clone();
        async move {
            let queue = if t == "warm" { "Warm" } else { "Fresh" };
            let before = m.queue(queue).snapshot().dead_lettered;
            xadd(
                &mut conn,
                &ingress,
                &[("type", t), ("id", &id), ("body", body)],
            )
            .await;
            wait_for(Duration::from_secs(10), "settled", || {
                let n = m.queue(queue).snapshot().dead_lettered;
                async move { n == before + 1 }
            })
            .await;
        }
    };
    for i in 0..3 {
        send("fresh", format!("f-{i}"), "{}").await;
        send("warm", format!("w-{i}"), "{}").await;
    }
    send("warm", "w-trap".into(), "\"trap\"").await;
    send("warm", "w-after".into(), "{}").await;
    host.stop().await;
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    let reason = |id: &str| {
        dead.iter()
            .find(|d| d.message_id == id)
            .unwrap()
            .reason
            .clone()
    };
    for i in 0..3 {
        assert_eq!(reason(&format!("f-{i}")), "rejected by the plugin: call 1");
        assert_eq!(
            reason(&format!("w-{i}")),
            format!("rejected by the plugin: call {}", i + 1)
        );
    }
    assert!(
        reason("w-trap").contains("counter plugin traps on call 4"),
        "{}",
        reason("w-trap")
    );
    assert_eq!(
        reason("w-after"),
        "rejected by the plugin: call 1",
        "a trapped instance must not be reused"
    );
}
