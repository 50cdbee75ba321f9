//! Outbound HTTP from plugins: only to granted destinations, checked
//! against the address actually connected, bounded in requests, size and
//! time, on pooled connections, https verified. Real HTTP servers on loopback; the
//! `io-probe` plugin makes the requests and reports what it got.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_standins::tls::TestCa;
use switchyard_standins::{Api, Scripted, StandIn};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

fn get(url: &str) -> Value {
    json!({ "http": { "method": "GET", "url": url } })
}

fn config(granted: &[String], extra: &str) -> TestConfig {
    let hosts: Vec<String> = granted.iter().map(|h| format!("\"{h}\"")).collect();
    TestConfig::new(&format!(
        r#"
[routes]
"probe" = ["Probe"]

[queues.Probe]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = [{}]
handler_timeout = "4s"
max_attempts = 1
{extra}
"#,
        hosts.join(", ")
    ))
}

fn error(result: &Value) -> &str {
    result["error"].as_str().unwrap_or("")
}

const DENIED: &str = "denied";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_only_where_granted() {
    let granted = StandIn::start(Api::Echo).await.unwrap();
    let other = StandIn::start(Api::Echo).await.unwrap();
    let (a, b) = (granted.addr().port(), other.addr().port());
    let mut host = TestHost::start_with(config(&[granted.url()], "")).await;

    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "p-1",
        json!([
            get(&format!("http://127.0.0.1:{a}/fine")),
            // Another port of the same address: not granted.
            get(&format!("http://127.0.0.1:{b}/")),
            // A name for the granted address: the grant names the address.
            get(&format!("http://localhost:{a}/")),
            // Other spellings of loopback, refused whatever the grant, and
            // the metadata address.
            get(&format!("http://2130706433:{a}/")),
            get(&format!("http://0x7f.1:{a}/")),
            get(&format!("http://0177.0.0.1:{a}/")),
            get(&format!("http://[::ffff:127.0.0.1]:{b}/")),
            get("http://169.254.169.254/latest/meta-data/"),
            json!({ "http": { "method": "GET", "url": format!("https://127.0.0.1:{a}/") } }),
        ]),
        "report",
    )
    .await;
    let report = probe_report(&mut host.conn, &host.cfg, "p-1", LIMIT).await;
    assert_eq!(report[0]["status"], 200, "{report:?}");
    for (i, r) in report.iter().enumerate().skip(1) {
        assert_eq!(error(r), DENIED, "step {i}: {r}");
    }
    assert_eq!(granted.requests().len(), 1);
    assert_eq!(granted.requests()[0].path, "/fine");
    assert!(other.requests().is_empty());
    let denied = host.metrics.queues()["Probe"].http_denied;
    host.stop().await;
    assert_eq!(denied, 8);
}

/// The grant is checked against the address the name resolves to: a
/// wildcard grant does not reach loopback through a name that resolves
/// there; naming the host exactly does. The host runs with an /etc/hosts
/// of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_loopback_is_refused() {
    let redis = Redis::start();
    let server = StandIn::start(Api::Echo).await.unwrap();
    let port = server.addr().port();
    let cfg = TestConfig::new(&format!(
        r#"
[routes]
"wild" = ["Wild"]
"exact" = ["Exact"]

[queues.Wild]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["http://*.trusted.example:{port}"]
max_attempts = 1

[queues.Exact]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["http://api.trusted.example:{port}"]
max_attempts = 1
"#
    ));
    let hosts = cfg.dir.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 api.trusted.example\n\
                  93.184.216.34 mixed.trusted.example\n127.0.0.1 mixed.trusted.example\n\
         ::ffff:127.0.0.1 mapped.trusted.example\n",
    )
    .unwrap();
    let log = cfg.dir.join("host.log");
    let _host = HostProcess::spawn_with_hosts(&cfg.path, redis.url(), &log, &[], &hosts).unwrap();
    let mut conn = redis.conn().await;
    let url = |name: &str| format!("http://{name}:{port}/");
    send_probe(
        &mut conn,
        &cfg,
        "wild",
        "w-1",
        json!([
            get(&url("api.trusted.example")),
            get(&url("mixed.trusted.example")),
            get(&url("mapped.trusted.example")),
        ]),
        "report",
    )
    .await;
    send_probe(
        &mut conn,
        &cfg,
        "exact",
        "e-1",
        json!([get(&url("api.trusted.example"))]),
        "report",
    )
    .await;
    let wild = probe_report(&mut conn, &cfg, "w-1", LIMIT).await;
    let exact = probe_report(&mut conn, &cfg, "e-1", LIMIT).await;
    assert_eq!(error(&wild[0]), DENIED, "{wild:?}");
    assert_eq!(error(&wild[1]), DENIED, "{wild:?}");
    assert_eq!(error(&wild[2]), DENIED, "{wild:?}");
    assert_eq!(exact[0]["status"], 200, "{exact:?}");
    assert_eq!(server.requests().len(), 1, "only the exact grant connected");
    let line = wait_for_value(LIMIT, "the wildcard's denial logged", async || {
        events_in(&log, "denied")
            .into_iter()
            .find(|l| l.contains("api.trusted.example resolves to 127.0.0.1"))
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert!(line.contains("queue=Wild"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_each_hop_is_checked() {
    let granted = StandIn::start(Api::Echo).await.unwrap();
    let other = StandIn::start(Api::Echo).await.unwrap();
    let mut host = TestHost::start_with(config(&[granted.url()], "")).await;
    let away = format!("{}/stolen", other.url());
    granted.push(Scripted::redirect(302, &away));
    granted.push(Scripted::redirect(307, &away));
    granted.push(Scripted::redirect(302, "/landing"));
    let follow = |path: &str| json!({ "http": { "method": "GET", "url": format!("{}{path}", granted.url()), "follow": 3 } });
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "r-1",
        json!([
            get(&format!("{}/start", granted.url())),
            follow("/start"),
            follow("/start"),
        ]),
        "report",
    )
    .await;
    let report = probe_report(&mut host.conn, &host.cfg, "r-1", LIMIT).await;
    host.stop().await;
    // Not followed by the host: the plugin sees the redirect itself.
    assert_eq!(report[0]["status"], 302, "{report:?}");
    // Followed by the plugin to an ungranted host: denied there.
    assert_eq!(error(&report[1]), DENIED, "{report:?}");
    // Followed within the grant: fine.
    assert_eq!(report[2]["status"], 200, "{report:?}");
    assert!(other.requests().is_empty());
    let paths: Vec<String> = granted.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/start", "/start", "/start", "/landing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_bounded_in_size_and_time() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let mut host = TestHost::start_with(config(
        &[server.url()],
        "http_timeout = \"1s\"\nmax_response_kib = 64",
    ))
    .await;
    server.push(Scripted::Huge {
        bytes: 50 * 1024 * 1024,
    });
    server.push(Scripted::Trickle {
        bytes: 1000,
        every: Duration::from_millis(50),
    });
    server.push(Scripted::Hold {
        delay: Duration::from_secs(10),
    });
    let url = format!("{}/x", server.url());
    let started = Instant::now();
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "b-1",
        json!([get(&url), get(&url), get(&url), get(&url)]),
        "report",
    )
    .await;
    let report = probe_report(&mut host.conn, &host.cfg, "b-1", LIMIT).await;
    let took = started.elapsed();
    host.stop().await;
    // The body's bound and the body's deadline hit while it is read; the
    // deadline also bounds the wait for the answer's head.
    assert!(
        error(&report[0]).contains("size exceeds limit: 65536 bytes"),
        "{report:?}"
    );
    assert!(
        error(&report[1]).contains("connection read timeout"),
        "{report:?}"
    );
    assert_eq!(error(&report[2]), "the answer took too long", "{report:?}");
    // The connections of the failed requests are not reused; a fresh one
    // serves the next request.
    assert_eq!(report[3]["status"], 200, "{report:?}");
    // Three requests of at most http_timeout (1 s) each, within the
    // handler's 4 s deadline.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    eprintln!("bounded requests: the call took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_outlives_the_handler_deadline() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let mut host = TestHost::start_with(TestConfig::new(&format!(
        r#"
[routes]
"probe" = ["Probe"]

[queues.Probe]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["{}"]
handler_timeout = "1s"
http_timeout = "30s"
max_attempts = 1
"#,
        server.url()
    )))
    .await;
    server.push(Scripted::Trickle {
        bytes: 100_000,
        every: Duration::from_millis(20),
    });
    let started = Instant::now();
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "d-1",
        json!([get(&server.url())]),
        "report",
    )
    .await;
    wait_for(LIMIT, "the message dead-lettered", || {
        let mut conn = host.conn.clone();
        let cfg = &host.cfg;
        async move { !dead_letters(&mut conn, cfg).await.is_empty() }
    })
    .await;
    let took = started.elapsed();
    host.stop().await;
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert!(dead[0].reason.contains("(timeout)"), "{}", dead[0].reason);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sends_at_most_max_requests_per_call() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let mut host = TestHost::start_with(config(&[server.url()], "max_requests_per_call = 3")).await;
    let steps: Vec<Value> = (0..5).map(|_| get(&server.url())).collect();
    send_probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "n-1",
        json!(steps),
        "report",
    )
    .await;
    let report = probe_report(&mut host.conn, &host.cfg, "n-1", LIMIT).await;
    host.stop().await;
    let statuses: Vec<&Value> = report.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses[..3], [&json!(200), &json!(200), &json!(200)]);
    assert_eq!(error(&report[3]), DENIED, "{report:?}");
    assert_eq!(error(&report[4]), DENIED, "{report:?}");
    assert_eq!(server.requests().len(), 3);
}

/// Keep-alive connections are reused across messages and instances: many
/// messages, one request each, over about `max_connections_per_host`
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_pooled_across_messages() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let mut host = TestHost::start_with(config(
        &[server.url()],
        "concurrency = 8\nmax_connections_per_host = 2",
    ))
    .await;
    let n = 200;
    for i in 0..n {
        send_probe(
            &mut host.conn,
            &host.cfg,
            "probe",
            &format!("c-{i}"),
            json!([json!({ "http": { "method": "POST", "url": server.url(), "body": "{}" } })]),
            "ok",
        )
        .await;
    }
    let m = host.metrics.clone();
    wait_for(LIMIT, "every message handled", || {
        let done = m.queues().get("Probe").is_some_and(|q| q.succeeded == n);
        async move { done }
    })
    .await;
    host.stop().await;
    assert_eq!(server.requests().len(), n as usize);
    let connections = server.connections();
    eprintln!("pooling: {n} requests over {connections} connections");
    // A connection goes back to the pool a moment after its answer is read,
    // while the request's slot is free at once: a request that takes the
    // slot in that moment may open a connection of its own. Two requests
    // in flight at most, pooled: a handful of connections, not 200.
    assert!(connections <= 4, "{connections} connections");
}

/// With `reuse_instances`, an instance keeps its handles between calls: a
/// response the call never read, nor dropped, is closed when the call
/// ends, so its connection slot serves the next call (here the only one:
/// `max_connections_per_host = 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_call_leaves_open_is_closed_when_it_ends() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let mut host = TestHost::start_with(config(
        &[server.url()],
        "reuse_instances = true\nconcurrency = 1\nmax_connections_per_host = 1\nhttp_timeout = \"2s\"",
    )).await;
    let left = json!({ "http": { "url": server.url(), "leave_open": true } });
    let r = probe(
        &mut host.conn,
        &host.cfg,
        "probe",
        "open-1",
        json!([left]),
        LIMIT,
    )
    .await;
    assert_eq!(r[0]["status"], 200, "{r:?}");
    for i in 2..5 {
        let r = probe(
            &mut host.conn,
            &host.cfg,
            "probe",
            &format!("open-{i}"),
            json!([get(&server.url())]),
            LIMIT,
        )
        .await;
        assert_eq!(r[0]["status"], 200, "call {i}: {r:?}");
    }
    host.stop().await;
}

/// https is verified: a destination whose certificate chains to the
/// queue's `http_ca_file` is reached, by name and by address; a queue
/// that trusts only the web's roots refuses the same certificate, and the
/// request is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_against_the_web_roots_and_the_queues_ca() {
    let ca = TestCa::new();
    let dir = tempdir("http-tls");
    let ca_file = ca.write_ca(&dir, "api-ca.pem").unwrap();
    let server = StandIn::start_tls(Api::Echo, &ca).await.unwrap();
    let port = server.addr().port();
    let mut host = TestHost::start_with(TestConfig::new(&format!(
        r#"
[routes]
"trusting" = ["Trusting"]
"web-only" = ["WebOnly"]

[queues.Trusting]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["https://localhost:{port}", "https://127.0.0.1:{port}"]
http_ca_file = "{}"
max_attempts = 1

[queues.WebOnly]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["https://localhost:{port}"]
max_attempts = 1
"#,
        ca_file.display()
    )))
    .await;

    let report = probe(
        &mut host.conn,
        &host.cfg,
        "trusting",
        "tls-trusting",
        json!([
            get(&format!("https://localhost:{port}/by-name")),
            get(&format!("https://127.0.0.1:{port}/by-address")),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["status"], 200, "{report:?}");
    assert_eq!(report[1]["status"], 200, "{report:?}");
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "web-only",
        "tls-web-only",
        json!([get(&format!("https://localhost:{port}/refused"))]),
        LIMIT,
    )
    .await;
    assert!(
        error(&report[0]).to_lowercase().contains("certificate"),
        "{report:?}"
    );
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/by-name", "/by-address"]);
    let _ = std::fs::remove_dir_all(&dir);
}
