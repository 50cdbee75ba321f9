//! The admin server (`[admin]`): `/metrics` is valid Prometheus text
//! (checked by `promtool check metrics`, from Debian's prometheus package),
//! counts what the queues and the router did, reads Redis at most once per
//! `stats_interval`, and carries no message id; `/healthz` answers while
//! the process runs; `/readyz` is 200 when Redis answers, the groups exist
//! and the plugins are loaded, and 503 saying what is wrong otherwise.

use std::io::{Read, Write};
use std::time::Duration;

use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

/// `GET path` on `port`: the status code, the content type and the body.
fn get(port: u16, path: &str) -> (u16, String, String) {
    let r = net::get(port, path);
    let content_type = r.header("content-type").unwrap_or_default().to_owned();
    (r.status, content_type, r.body)
}

/// `promtool check metrics` on `text`: its success and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness() {
    init_logs();
    let mut redis = Redis::start();
    let port = free_port();
    let cfg = TestConfig::new(&format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
stats_interval = "10m"
[routes]
"ok" = ["Ok"]
"bad" = ["Bad"]
"probe" = ["Probe"]
[queues.Ok]
plugin = "@PLUGINS@/noop.wasm"
concurrency = 3
[queues.Bad]
plugin = "@PLUGINS@/always_reject.wasm"
[queues.Probe]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
"#
    ));
    let mut conn = redis.conn().await;
    for n in 0..3 {
        let id = format!("secret-ok-{n}");
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "ok"), ("id", &id), ("body", "{}")],
        )
        .await;
    }
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "bad"), ("id", "secret-bad"), ("body", "{}")],
    )
    .await;
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "nowhere"), ("id", "secret-x"), ("body", "{}")],
    )
    .await;
    // A plugin using capabilities its queue was not granted.
    send_probe(
        &mut conn,
        &cfg,
        "probe",
        "secret-probe",
        serde_json::json!([
            { "kv": "get", "bucket": "b", "key": "k" },
            { "sql": "query", "statement": "SELECT 1", "params": [] },
            { "http": { "method": "GET", "url": "http://127.0.0.1:1/" } },
        ]),
        "report",
    )
    .await;
    let host = start_host(&cfg.config, &redis);
    wait_for(LIMIT, "every message settled", || {
        let m = host.metrics.clone();
        async move {
            let q = m.queues();
            q.get("Ok").is_some_and(|c| c.succeeded == 3)
                && q.get("Bad").is_some_and(|c| c.dead_lettered == 1)
                && q.get("Probe").is_some_and(|c| c.dead_lettered == 1)
        }
    })
    .await;

    let (status, _, body) = get(port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Ready within a second of the groups' creation (the admin server
    // answers from a read of Redis at most that old), with a margin.
    wait_for_value(Duration::from_secs(3), "ready", async || {
        let (status, _, body) = get(port, "/readyz");
        if (status, body.as_str()) == (200, "ready\n") {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;

    let (status, content_type, text) = get(port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (valid, said) = promtool(&text);
    assert!(valid, "promtool: {said}\n{text}");
    let ok_version = version_hash(&std::fs::read(plugin("noop")).unwrap());
    for line in [
        "switchyard_queue_received_total{queue=\"Ok\"} 3".to_owned(),
        "switchyard_queue_succeeded_total{queue=\"Ok\"} 3".into(),
        "switchyard_queue_rejected_total{queue=\"Bad\"} 1".into(),
        "switchyard_queue_dead_lettered_total{queue=\"Bad\"} 1".into(),
        "switchyard_queue_failed_total{queue=\"Ok\",kind=\"trap\"} 0".into(),
        "switchyard_queue_concurrency{queue=\"Ok\"} 3".into(),
        "switchyard_queue_in_flight{queue=\"Ok\"} 0".into(),
        "switchyard_queue_handler_duration_seconds_count{queue=\"Ok\"} 3".into(),
        "switchyard_queue_handler_duration_seconds_bucket{queue=\"Ok\",le=\"+Inf\"} 3".into(),
        "switchyard_queue_backlog{queue=\"Ok\"} 0".into(),
        "switchyard_queue_pending{queue=\"Ok\"} 0".into(),
        "switchyard_queue_oldest_pending_age_seconds{queue=\"Ok\"} 0".into(),
        "switchyard_router_routed_total 5".into(),
        "switchyard_capability_calls_total{queue=\"Probe\",capability=\"keyvalue\"} 1".into(),
        "switchyard_capability_denied_total{queue=\"Probe\",capability=\"keyvalue\"} 1".into(),
        "switchyard_capability_denied_total{queue=\"Probe\",capability=\"sql\"} 1".into(),
        "switchyard_capability_denied_total{queue=\"Probe\",capability=\"http\"} 1".into(),
        "switchyard_capability_duration_seconds_count{queue=\"Probe\",capability=\"http\"} 0"
            .into(),
        "switchyard_capability_calls_total{queue=\"Ok\",capability=\"publish\"} 0".into(),
        "switchyard_router_dead_lettered_total{class=\"no_route\"} 1".into(),
        "switchyard_router_dead_lettered_total{class=\"malformed\"} 0".into(),
        "switchyard_dead_letters 3".into(),
        "switchyard_redis_up 1".into(),
        format!(
            "switchyard_plugin_info{{queue=\"Ok\",version=\"{ok_version}\",contract=\"0.1.0\"}} 1"
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("secret-"), "a message id in the metrics");

    // No SWITCHYARD_ADMIN_TOKEN in this host's environment: read-only.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = r#"{"ids":["1-0"]}"#;
    write!(
        tcp,
        "POST /api/dead/replay HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer guess\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response.contains("neither SWITCHYARD_ADMIN_TOKEN nor SWITCHYARD_ADMIN_READ_TOKEN"),
        "{response}"
    );

    // Redis is read at most once per stats_interval: a new dead letter
    // shows in the router's own counter at once, in the gauge read from
    // Redis only at the next interval.
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "nowhere"), ("id", "secret-y"), ("body", "{}")],
    )
    .await;
    wait_for(LIMIT, "the router's count", || {
        let m = host.metrics.clone();
        async move {
            m.router
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed)
                == 2
        }
    })
    .await;
    let (_, _, text) = get(port, "/metrics");
    assert!(text.contains("\nswitchyard_router_dead_lettered_total{class=\"no_route\"} 2\n"));
    assert!(
        text.contains("\nswitchyard_dead_letters 3\n"),
        "cached:\n{text}"
    );

    // Redis gone: not ready, and says why; still alive.
    redis.server.kill9();
    let (status, _, body) = get(port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Redis does not answer"), "{body}");
    let (status, _, _) = get(port, "/healthz");
    assert_eq!(status, 200);
    drop(host);
}

/// `path` on `port` until `done` holds for its status and body; the last
/// answer.
async fn until(port: u16, path: &str, what: &str, done: impl Fn(u16, &str) -> bool) -> String {
    wait_for_value(LIMIT, what, async || {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            return Err("the admin server is not listening".into());
        }
        let (status, _, body) = get(port, path);
        if done(status, &body) {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_what_is_missing() {
    init_logs();
    let mut redis = Redis::start();
    let port = free_port();
    let cfg = TestConfig::new(&format!(
        r#"
[host]
prefix = "@PREFIX@"
cache_dir = "cache"
on_missing_group = "stop"
[admin]
listen = "127.0.0.1:{port}"
stats_interval = "100ms"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/noop.wasm"
"#
    ));
    // Started before Redis: alive, not ready, and no plugin loaded yet
    // (plugins are loaded once Redis answers).
    redis.server.kill9();
    let host = start_host(&cfg.config, &redis);
    let body = until(port, "/readyz", "not ready before Redis", |s, _| s == 503).await;
    assert_eq!(
        body,
        "not ready:\nRedis does not answer\nqueue Ok: no plugin loaded\n"
    );
    let (status, _, _) = get(port, "/healthz");
    assert_eq!(status, 200);

    redis.server.restart().unwrap();
    until(port, "/readyz", "ready once Redis is up", |s, b| {
        s == 200 && b == "ready\n"
    })
    .await;

    // The queue's group deleted, and not recreated (on_missing_group =
    // "stop"): not ready, naming the queue and its stream.
    let mut conn = redis.conn().await;
    let stream = cfg.queue_stream("Ok");
    let group = cfg.prefix.clone();
    let destroyed: u64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg(&group)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(destroyed, 1);
    let body = until(port, "/readyz", "not ready without the group", |s, _| {
        s == 503
    })
    .await;
    assert_eq!(
        body,
        format!("not ready:\nqueue Ok: no consumer group on {stream}\n")
    );

    // An operator recreates it: ready, and the queue reads again.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(&group)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    until(port, "/readyz", "ready with the group back", |s, _| {
        s == 200
    })
    .await;
    xadd(
        &mut conn,
        cfg.ingress(),
        &[("type", "ok"), ("id", "after"), ("body", "{}")],
    )
    .await;
    wait_for(LIMIT, "the message handled", || {
        let m = host.metrics.clone();
        async move { m.queues().get("Ok").is_some_and(|c| c.succeeded == 1) }
    })
    .await;
    host.stop().await.unwrap();
}

/// `GET path` over TLS to 127.0.0.1:`port` as `localhost`, trusting what
/// `client` trusts: the status and the body.
async fn get_tls(
    port: u16,
    client: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Ok((status, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_speaks_https_with_its_certificate() {
    use std::os::unix::fs::PermissionsExt;
    init_logs();
    let redis = Redis::start();
    let ca = switchyard_standins::tls::TestCa::new();
    let dir = tempdir("admin-tls");
    let (cert, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&cert, ca.cert_pem()).unwrap();
    std::fs::write(&key, ca.key_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let cfg = TestConfig::new(&format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
tls_cert = "{}"
tls_key = "{}"
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "@PLUGINS@/noop.wasm"
"#,
        cert.display(),
        key.display()
    ));
    assert!(cfg.config.warnings.is_empty(), "{:?}", cfg.config.warnings);
    let host = start_host(&cfg.config, &redis);

    let body = wait_for_value(LIMIT, "ready over HTTPS", async || {
        match get_tls(port, ca.client_config(), "/readyz").await {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(body, "ready\n");
    // A client stalled in its handshake holds up no one: the next one is
    // served while the stalled one is still open (a server that took
    // handshakes one at a time would answer only after closing it).
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (status, text) = get_tls(port, ca.client_config(), "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("\nswitchyard_redis_up 1\n"), "{text}");
    stalled.set_nonblocking(true).unwrap();
    let read = stalled.read(&mut [0; 1]);
    assert!(
        read.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled connection was closed: {read:?}"
    );

    // A client that does not trust the certificate gets nothing.
    let other = switchyard_standins::tls::TestCa::new();
    let e = get_tls(port, other.client_config(), "/metrics")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // Plain HTTP gets no answer in HTTP.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    host.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_admin_table_names_the_key() {
    let dir = tempdir("admin-config");
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        "[admin]\nlisten = \"localhost\"\n[routes]\n\"a\" = [\"A\"]\n[queues.A]\nplugin = \"builtin:noop\"\n",
    )
    .unwrap();
    let e = switchyard::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "admin.listen: \"localhost\" is not an address and port, e.g. \"127.0.0.1:9464\""
        ),
        "{e}"
    );

    // The certificate and its key: both needed, each checked, and the key
    // must be the certificate's.
    use std::os::unix::fs::PermissionsExt;
    let (ca, stranger) = (
        switchyard_standins::tls::TestCa::new(),
        switchyard_standins::tls::TestCa::new(),
    );
    for (name, text) in [
        ("admin.crt", ca.cert_pem()),
        ("admin.key", ca.key_pem()),
        ("other.key", stranger.key_pem()),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let load = |admin: &str| {
        std::fs::write(
            &path,
            format!("[admin]\n{admin}\n[routes]\n\"a\" = [\"A\"]\n[queues.A]\nplugin = \"builtin:noop\"\n"),
        )
        .unwrap();
        let config = switchyard::config::Config::load(&path).map_err(|e| e.to_string())?;
        switchyard::supervisor::preflight::check_settings(&config).map_err(|e| e.to_string())?;
        Ok::<_, String>(config)
    };
    let shown = |p: &str| dir.join(p).display().to_string();
    for (admin, expected) in [
        (
            "tls_cert = \"admin.crt\"",
            "admin.tls_key: is needed with tls_cert".to_owned(),
        ),
        (
            "tls_key = \"admin.key\"",
            "admin.tls_cert: is needed with tls_key".to_owned(),
        ),
        (
            "tls_cert = \"admin.crt\"\ntls_key = \"other.key\"",
            format!(
                "admin.tls_key: {}: is not the key of the certificate in tls_cert",
                shown("other.key")
            ),
        ),
        (
            "tls_cert = \"admin.key\"\ntls_key = \"admin.key\"",
            format!(
                "admin.tls_cert: {}: holds no certificate",
                shown("admin.key")
            ),
        ),
        (
            "tls_cert = \"admin.crt\"\ntls_key = \"admin.crt\"",
            format!(
                "admin.tls_key: {}: holds no private key",
                shown("admin.crt")
            ),
        ),
        (
            "tls_cert = \"/dev/zero\"\ntls_key = \"admin.key\"",
            "admin.tls_cert: /dev/zero: not a regular file".to_owned(),
        ),
    ] {
        let e = load(admin).unwrap_err();
        assert!(e.contains(&expected), "{admin}: {e}");
    }
    let good = load("tls_cert = \"admin.crt\"\ntls_key = \"admin.key\"").unwrap();
    assert!(good.warnings.is_empty(), "{:?}", good.warnings);
    // A key others can read is a warning.
    std::fs::set_permissions(
        dir.join("admin.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let loose = load("tls_cert = \"admin.crt\"\ntls_key = \"admin.key\"").unwrap();
    let warned = format!("{:?}", loose.warnings);
    assert!(
        warned.contains("can be read by other users than its owner"),
        "{warned}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// One request with the given `Host` and token: the status and the body.
fn request(port: u16, path: &str, host: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Host", host)];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let r = net::http("GET", port, path, &headers, "");
    (r.status, r.body)
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A web page whose name an attacker made resolve to 127.0.0.1 (DNS
/// rebinding) reads nothing: the dashboard answers only to the names it
/// serves, and its data needs a token; the probes and /metrics stay open.
/// Half-sent requests neither exhaust the host's file descriptors nor keep
/// the probes out, and a dead-letter search is bounded in what it makes
/// Redis read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_answers_only_its_names_and_holds_out_against_its_clients() {
    init_logs();
    let redis = Redis::start();
    let port = free_port();
    let cfg = TestConfig::new(&format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
hosts = ["switchyard.internal"]
[routes]
"ok" = ["Ok"]
[queues.Ok]
plugin = "builtin:noop"
"#
    ));
    let mut conn = redis.conn().await;
    // 20,000 dead letters, none of which a search below matches.
    let dead = cfg.dead_stream();
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for n in 0..1000 {
            pipe.cmd("XADD")
                .arg(&dead)
                .arg("*")
                .arg("dead-reason")
                .arg(format!("rejected by the plugin: bad order {chunk}-{n}"))
                .arg("dead-queue")
                .arg("Ok")
                .arg("type")
                .arg("ok")
                .arg("id")
                .arg(format!("m-{chunk}-{n}"))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let log = cfg.dir.join("host.log");
    let host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[("SWITCHYARD_ADMIN_READ_TOKEN", "reader")],
    )
    .unwrap();
    wait_for(LIMIT, "the host ready", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && request(port, "/readyz", "127.0.0.1", None).0 == 200
    })
    .await;

    // The names it serves, with the token.
    for name in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("switchyard.internal:{port}"),
        "[::1]".to_owned(),
    ] {
        let (status, body) = request(port, "/api/overview", &name, Some("reader"));
        assert_eq!(status, 200, "{name}: {body}");
    }
    // A rebinding page: its own name, token or not, gets nothing.
    for path in ["/", "/app.js", "/api/overview", "/api/dead"] {
        let (status, body) = request(port, path, &format!("evil.example:{port}"), Some("reader"));
        assert_eq!(status, 421, "{path}: {body}");
        assert!(body.contains("add it to [admin] hosts"), "{body}");
    }
    // No token, no data.
    let (status, _) = request(port, "/api/overview", "127.0.0.1", None);
    assert_eq!(status, 401);
    // Scrapers and probes, by whatever name.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, _) = request(port, path, "prometheus-target.example", None);
        assert_eq!(status, 200, "{path}");
    }

    // A search over 20,000 dead letters reads at most 5,000 and says
    // where to go on.
    let (status, body) = request(
        port,
        "/api/dead?reason=no%20such%20reason",
        "127.0.0.1",
        Some("reader"),
    );
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["examined"], 5000, "{found}");
    assert_eq!(found["dead_letters"], serde_json::json!([]));
    let below = found["more_below"]
        .as_str()
        .expect("where to go on")
        .to_owned();
    let (_, body) = request(
        port,
        &format!("/api/dead?reason=bad%20order%2014-&below={below}&limit=5"),
        "127.0.0.1",
        Some("reader"),
    );
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    let letters = found["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 5, "{found}");
    let id = |text: &str| -> (u64, u64) {
        let (ms, seq) = text.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    assert!(
        letters
            .iter()
            .all(|d| id(d["id"].as_str().unwrap()) < id(&below)),
        "{found}"
    );

    // 600 connections that send half a request and stop: the host keeps
    // at most 256, and a probe is answered at once.
    let before = open_fds(host.pid());
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
        stalled.push(tcp);
    }
    // Once the host has taken them all in (its count of descriptors has
    // settled), a probe is answered and the count stays within the cap.
    let pid = host.pid();
    let during = wait_for_stable(LIMIT, "the host's open descriptors", 5, async || {
        open_fds(pid)
    })
    .await;
    let (status, _) = request(port, "/healthz", "127.0.0.1", None);
    assert_eq!(status, 200);
    assert!(
        during <= before + 256 + 8,
        "{before} file descriptors before, {during} with 600 stalled clients"
    );
    // A half-sent request is dropped once its head is late (10 s).
    let mut late = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    late.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = late.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}: {answer:?}"
    );
    drop(stalled);
    drop(host);
}
