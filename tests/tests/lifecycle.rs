//! The host's life as an operator sees it: what it says when it starts and
//! cannot reach Redis, how fast it stops, and what a reload of queues.toml
//! reports.

use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_tests::*;

/// Replaces a file the way deploy tools do: write beside it, rename over it.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_url_that_is_not_a_redis_url_names_the_expected_form() {
    plugin("sleep");
    let out = Command::new(host_binary())
        .args(["run", "--config"])
        .arg(repo_root().join("queues.toml"))
        .args(["--redis-url", "127.0.0.1:6379"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "error: \"127.0.0.1:6379\": this is not a Redis URL; expected {}",
            switchyard::redis::URL_FORMS
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_said_at_once_and_once_and_waited_for() {
    let cfg = TestConfig::new(
        r#"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let dir = tempdir("unreachable");
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, &url, &log, &[]).unwrap();
    let first = wait_for_line(&log, "Connecting to Redis", Duration::from_secs(10)).await;
    assert!(
        first.contains(&format!("redis=127.0.0.1:{port}")),
        "{first}"
    );
    let line = wait_for_event(&log, "redis_unreachable", Duration::from_secs(10)).await;
    assert!(line.contains("Connection refused"), "{line}");
    // Redis comes up on that port: the host connects and starts.
    let mut server = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(10)).unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        events_in(&log, "redis_unreachable").len(),
        1,
        "the cause is said once:\n{text}"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}

fn slow_config(ms: u64, extra_host: &str) -> TestConfig {
    TestConfig::new(&format!(
        r#"
[host]
prefix = "@PREFIX@"
shutdown_timeout = "20s"
cache_dir = "cache"
{extra_host}
[routes]
"slow" = ["Slow"]
[queues.Slow]
plugin = "@PLUGINS@/sleep.wasm"
concurrency = 2
handler_timeout = "60s"
visibility_timeout = "30s"
[queues.Slow.config]
ms = {ms}
"#
    ))
}

/// With a 500 ms handler in flight, SIGTERM once took 10.3 s (the lease
/// renewal slept a third of the visibility timeout) and logged unfinished
/// work that was not. The host exits as soon as its handlers finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_exits_as_soon_as_the_handlers_finish() {
    let redis = Redis::start();
    let cfg = slow_config(1500, "");
    let dir = tempdir("prompt-shutdown");
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    let mut conn = redis.conn().await;
    for i in 0..2 {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "slow"), ("id", &format!("s-{i}")), ("body", "{}")],
        )
        .await;
    }
    let stream = cfg.queue_stream("Slow");
    wait_for(Duration::from_secs(20), "both in flight", || {
        let mut conn = conn.clone();
        let (stream, group) = (stream.clone(), cfg.prefix.clone());
        async move { pending(&mut conn, &stream, &group).await == 2 }
    })
    .await;
    let signalled = Instant::now();
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(15)).unwrap().success());
    let took = signalled.elapsed();
    eprintln!("SIGTERM to exit with 1.5 s handlers in flight: {took:?}");
    // The handlers had at most 1.5 s left; the lease renewal period is 10 s
    // and the shutdown timeout 20 s.
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(events_in(&log, "shutdown_timeout").is_empty(), "{text}");
    assert!(events_in(&log, "bookkeeping_timeout").is_empty(), "{text}");
    assert_eq!(events_in(&log, "stopped").len(), 1, "{text}");
    assert_eq!(pending(&mut conn, &stream, &cfg.prefix).await, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A second signal means now: what did not finish stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_leaving_work_pending() {
    let redis = Redis::start();
    let cfg = slow_config(30_000, "");
    let dir = tempdir("second-signal");
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    let mut conn = redis.conn().await;
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "slow"), ("id", "long"), ("body", "{}")],
    )
    .await;
    let stream = cfg.queue_stream("Slow");
    wait_for(Duration::from_secs(20), "in flight", || {
        let mut conn = conn.clone();
        let (stream, group) = (stream.clone(), cfg.prefix.clone());
        async move { pending(&mut conn, &stream, &group).await == 1 }
    })
    .await;
    host.signal("TERM");
    wait_for_event(&log, "draining", Duration::from_secs(10)).await;
    let signalled = Instant::now();
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(10)).unwrap().success());
    // The handler had 30 s to go and the shutdown timeout is 20 s.
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    wait_for_event(&log, "exiting_now", Duration::from_secs(1)).await;
    assert_eq!(pending(&mut conn, &stream, &cfg.prefix).await, 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A plugin that takes a long time to compile does not hold up shutdown:
/// the compile is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_in_progress_does_not_delay_shutdown() {
    let redis = Redis::start();
    let cfg = slow_config(0, "plugin_compile_timeout = \"10m\"");
    let dir = cfg.dir.clone();
    // Start serving, then swap in a plugin that compiles for seconds.
    let plugin_path = dir.join("slow.wasm");
    std::fs::copy(plugin("sleep"), &plugin_path).unwrap();
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace(
            &format!("{}/sleep.wasm", plugin_dir().display()),
            "slow.wasm",
        )
        .replace("cache_dir = \"cache\"", "cache_dir = \"\"");
    std::fs::write(&cfg.path, text).unwrap();
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    let tmp = dir.join("slow.tmp");
    std::fs::write(&tmp, slow_component(60_000)).unwrap();
    std::fs::rename(&tmp, &plugin_path).unwrap();
    // The compile has started once the host has a child.
    wait_for(Duration::from_secs(20), "a compiler child", || {
        let n = host.children().len();
        async move { n > 0 }
    })
    .await;
    let signalled = Instant::now();
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(15)).unwrap().success());
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
}

/// An invalid edit is refused with every error on a line of its own, in line
/// order, as `check` prints them; a valid one lists what it changed, and
/// says which changes wait for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reports_errors_and_changes_key_by_key() {
    let redis = Redis::start();
    let cfg = slow_config(0, "");
    let dir = tempdir("reload-report");
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    let original = std::fs::read_to_string(&cfg.path).unwrap();

    let broken = original
        .replace("concurrency = 2", "concurrency = 0")
        .replace("handler_timeout = \"60s\"", "handler_timeout = \"ten\"")
        .replace(
            "[queues.Slow.config]",
            "colour = \"blue\"\n[queues.Slow.config]",
        );
    replace(&cfg.path, &broken);
    wait_for_event(&log, "config_refused", Duration::from_secs(10)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("queues.toml error:"))
        .collect();
    assert_eq!(errors.len(), 3, "{text}");
    let line_of = |key: &str| broken.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    for (error, (key, problem)) in errors.iter().zip([
        ("concurrency", "queues.Slow.concurrency: must be between 1 and 1024, found 0"),
        (
            "handler_timeout",
            "queues.Slow.handler_timeout: \"ten\" is not a duration: write a number and a unit, like \"250ms\"",
        ),
        ("colour", "queues.Slow.colour: unknown key"),
    ]) {
        assert!(
            error.contains(&format!("queues.toml error: line {}: {problem}", line_of(key))),
            "{error}"
        );
    }

    let edited = original
        .replace("concurrency = 2", "concurrency = 3")
        .replace("prefix = \"", "prefix = \"renamed-")
        .replace("[routes]", "[retention]\ninterval = \"5s\"\n[routes]");
    replace(&cfg.path, &edited);
    let summary = wait_for_event(&log, "config_applied", Duration::from_secs(10)).await;
    assert!(
        summary.contains("changed=queues.Slow.concurrency,retention.interval,host.prefix"),
        "{summary}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("queues.toml: applied queues.Slow.concurrency: 2 -> 3"),
        "{text}"
    );
    assert!(
        text.contains("queues.toml: applied retention.interval: 1m -> 5s"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "queues.toml: host.prefix: {0} -> renamed-{0} takes effect at the next restart",
            cfg.prefix
        )),
        "{text}"
    );
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(10)).unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}

/// One plugin file serving several queues is loaded once, and the log says
/// for which queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_shared_by_queues_names_every_queue_when_loaded() {
    let redis = Redis::start();
    let cfg = TestConfig::new(
        r#"
[routes]
"a" = ["Ticket", "Salesforce", "Zendesk"]
[queues.Ticket]
plugin = "@PLUGINS@/sleep.wasm"
[queues.Salesforce]
plugin = "@PLUGINS@/sleep.wasm"
[queues.Zendesk]
plugin = "@PLUGINS@/sleep.wasm"
"#,
    );
    let dir = tempdir("shared-plugin");
    let log = dir.join("host.log");
    let mut host = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &[]).unwrap();
    wait_for_event(&log, "started", Duration::from_secs(20)).await;
    host.signal("TERM");
    assert!(host.wait(Duration::from_secs(10)).unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let loaded: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Plugin loaded."))
        .collect();
    assert_eq!(loaded.len(), 1, "{text}");
    assert!(
        loaded[0].contains("queues=Salesforce,Ticket,Zendesk "),
        "{}",
        loaded[0]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `status | head` is normal use: a reader that stops early is not a
/// crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_into_a_pipe_closed_early_exits_cleanly() {
    let redis = Redis::start();
    let cfg = slow_config(0, "");
    let mut child = Command::new(host_binary())
        .args(["status", "--config"])
        .arg(&cfg.path)
        .args(["--redis-url", redis.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before status writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// The columns `status` prints are the ones the README explains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_columns_are_the_readmes() {
    let redis = Redis::start();
    let cfg = slow_config(0, "");
    let out = Command::new(host_binary())
        .args(["status", "--config"])
        .arg(&cfg.path)
        .args(["--redis-url", redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let columns: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "QUEUE", "STREAM", "LENGTH", "WAITING", "PENDING", "RETRYING"
        ]
    );
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let said = readme
        .lines()
        .find(|l| l.starts_with("`status` shows"))
        .expect("the README says what status shows");
    for column in &columns[2..] {
        assert!(
            said.contains(&format!("{column} (")),
            "{column} is not explained: {said}"
        );
    }
}
