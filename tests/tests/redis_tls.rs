//! Redis over TLS with an ACL user: the host connects to `rediss://` with
//! the server's certificate and name verified (its CA in `redis.ca_file`)
//! and the user's password from the environment (`[redis] password = { env
//! = ... }`), on every connection it opens, the bounded readers' included
//! (the server has no plain port). A certificate from another CA, or a
//! wrong password, is refused with the cause in the log and retried until
//! it is right; it is never silently accepted.

use std::time::Duration;

use switchyard::supervisor::RunningHost;
use switchyard_tests::ha::TlsRedis;
use switchyard_tests::*;

fn config(ca: &std::path::Path) -> String {
    format!(
        r#"
[redis]
username = "switchyard"
password = {{ env = "REDIS_PASSWORD" }}
ca_file = "{}"

[routes]
"record" = ["Record"]

[queues.Record]
plugin = "@PLUGINS@/recorder.wasm"
"#,
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_routed_and_handled_over_tls_as_an_acl_user() {
    init_logs();
    let tls = TlsRedis::start("switchyard", "tls-pw-1").unwrap();
    let cfg = TestConfig::with_env(&config(&tls.ca_path), &[("REDIS_PASSWORD", "tls-pw-1")]);
    // By name: the certificate is for localhost and 127.0.0.1.
    let url = tls.url("");
    let redis = deployment(&url, &cfg.config);
    let host = RunningHost::start(cfg.config.clone(), redis.clone(), compiler());
    let mut conn = redis.connect().await.unwrap();
    for i in 0..50 {
        let _: String = redis::cmd("XADD")
            .arg(cfg.ingress())
            .arg("*")
            .arg("type")
            .arg("record")
            .arg("id")
            .arg(format!("tls-{i}"))
            .arg("body")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let m = host.metrics.queue("Record");
    wait_for(
        Duration::from_secs(30),
        "50 messages handled over TLS",
        async || m.snapshot().succeeded == 50,
    )
    .await;
    // Every connection is TLS: the server has no other port, and the
    // clients it counts are the host's.
    let clients = switchyard_tests::ha::cli(
        tls.node.port,
        &[
            "--tls",
            "--cacert",
            &tls.ca_path.display().to_string(),
            "--user",
            "switchyard",
            "--pass",
            "tls-pw-1",
            "--no-auth-warning",
        ],
        &["CLIENT", "LIST"],
    )
    .unwrap();
    assert!(clients.lines().count() >= 3, "{clients}");
    assert!(
        clients.lines().all(|l| l.contains("user=switchyard")),
        "{clients}"
    );
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_or_a_wrong_password_is_refused_and_retried() {
    init_logs();
    let tls = TlsRedis::start("switchyard", "tls-pw-2").unwrap();
    let dir = tempdir("tls-refusals");
    let url = tls.url("");

    // A certificate the host was not told to trust.
    let stranger = switchyard_standins::tls::TestCa::new()
        .write_ca(&dir, "other-ca.pem")
        .unwrap();
    let cfg = TestConfig::with_env(&config(&stranger), &[("REDIS_PASSWORD", "tls-pw-2")]);
    let log = dir.join("ca.log");
    let mut host = HostProcess::spawn_with(
        &cfg.path,
        &url,
        &log,
        &[("REDIS_PASSWORD", "tls-pw-2"), ("RUST_LOG", "info")],
    )
    .unwrap();
    let line = wait_for_event(&log, "redis_unreachable", Duration::from_secs(30)).await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    // Still there, still trying, and it read nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        host.wait(Duration::from_millis(10)).is_err(),
        "the host exited"
    );
    host.kill9();

    // The right CA, the wrong password: refused by the server, said, and
    // retried until the password is one the server takes.
    let cfg = TestConfig::with_env(&config(&tls.ca_path), &[("REDIS_PASSWORD", "not-it")]);
    let log = dir.join("password.log");
    let mut host = HostProcess::spawn_with(
        &cfg.path,
        &url,
        &log,
        &[("REDIS_PASSWORD", "not-it"), ("RUST_LOG", "info")],
    )
    .unwrap();
    let line = wait_for_event(&log, "redis_unreachable", Duration::from_secs(30)).await;
    assert!(line.contains("Password authentication failed"), "{line}");
    assert!(
        !line.contains("not-it"),
        "the password is in the log: {line}"
    );
    // The operator gives the user that password too: the host gets in.
    let admin = [
        "--tls",
        "--cacert",
        &tls.ca_path.display().to_string(),
        "--user",
        "switchyard",
        "--pass",
        "tls-pw-2",
        "--no-auth-warning",
    ];
    switchyard_tests::ha::cli(
        tls.node.port,
        &admin,
        &["ACL", "SETUSER", "switchyard", ">not-it"],
    )
    .unwrap();
    wait_for_line(&log, "Connected to Redis.", Duration::from_secs(30)).await;
    wait_for_event(&log, "started", Duration::from_secs(60)).await;
    host.signal("TERM");
    host.wait(Duration::from_secs(20)).unwrap();

    // Plain Redis to a TLS port is no Redis at all, and says so.
    let cfg = TestConfig::with_env(&config(&tls.ca_path), &[("REDIS_PASSWORD", "tls-pw-2")]);
    let plain = format!("redis://localhost:{}/", tls.node.port);
    let log = dir.join("plain.log");
    let mut host = HostProcess::spawn_with(
        &cfg.path,
        &plain,
        &log,
        &[("REDIS_PASSWORD", "tls-pw-2"), ("RUST_LOG", "info")],
    )
    .unwrap();
    wait_for_event(&log, "redis_unreachable", Duration::from_secs(30)).await;
    host.kill9();
}
