//! Mail for plugins (`switchyard:plugin/mail`) through an SMTP receiver on
//! loopback: what arrives (envelope, headers, both bodies, a Message-ID
//! derived from the message id), how the relay's answers map (550
//! permanent, 451 and a relay that is down transient), what the host
//! refuses to write (header injection, a sender outside the grant),
//! pooled connections, and TLS (STARTTLS and smtps, verified against a
//! private CA).

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_standins::smtp::{Options, Reply, SmtpReceiver, Stage};
use switchyard_standins::tls::TestCa;
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn config(smtp_url: &str) -> TestConfig {
    TestConfig::new(&format!(
        r#"
[routes]
"mail" = ["Mail"]
"none" = ["NoMail"]

[queues.Mail]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
concurrency = 8
[queues.Mail.mail]
smtp_url = "{smtp_url}"
pool = 2
timeout = "3s"
from = ["@chat.example"]

[queues.NoMail]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
"#
    ))
}

fn mail(to: &str, subject: &str) -> Value {
    json!({ "mail": {
        "from": "Chat <no-reply@chat.example>",
        "to": [to],
        "subject": subject,
        "text": "Hello,\nyour transcript.",
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_arrives_as_written() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let mut host = TestHost::start_with(config(&smtp.url())).await;

    let report = probe(
        &mut host.conn,
        &host.cfg,
        "mail",
        "chat-7 ended",
        json!([{ "mail": {
            "from": "Chat <no-reply@chat.example>",
            "to": ["Ana Souza <ana@visitor.example>"],
            "cc": ["support@chat.example"],
            "bcc": ["audit@chat.example"],
            "reply_to": "support@chat.example",
            "subject": "Transcript: café & <b>",
            "text": "Olá, Ana",
            "html": "<p>Olá, Ana</p>",
            "headers": { "X-Chat-Guid": "c-7" },
        }}]),
        LIMIT,
    )
    .await;
    assert_eq!(
        report[0],
        json!("<chat-7_ended.1@chat.example>"),
        "{report:?}"
    );
    assert_eq!(smtp.wait_mails(1, LIMIT).await, 1);
    let m = &smtp.mails()[0];
    assert_eq!(m.from, "no-reply@chat.example");
    assert_eq!(
        m.to,
        [
            "ana@visitor.example",
            "support@chat.example",
            "audit@chat.example"
        ]
    );
    assert_eq!(
        m.header("message-id").as_deref(),
        Some("<chat-7_ended.1@chat.example>")
    );
    assert_eq!(m.header("x-chat-guid").as_deref(), Some("c-7"));
    assert!(m.header("bcc").is_none(), "Bcc is not in the headers");
    assert!(
        m.header("subject").unwrap().contains("=?utf-8?"),
        "{:?}",
        m.header("subject")
    );
    assert_eq!(m.part("text/plain").as_deref(), Some("Olá, Ana"));
    assert_eq!(m.part("text/html").as_deref(), Some("<p>Olá, Ana</p>"));

    // What the host refuses to write.
    let report = probe(&mut host.conn, &host.cfg,
        "mail",
        "bad-1",
        json!([
            { "mail": { "from": "no-reply@chat.example", "to": ["a@x.example"], "subject": "s", "text": "t",
                        "headers": { "X-Note": "a\r\nBcc: victim@x.example" } } },
            { "mail": { "from": "ceo@elsewhere.example", "to": ["a@x.example"], "subject": "s", "text": "t" } },
            { "mail": { "from": "no-reply@chat.example", "to": ["a@x.example"], "subject": "s\r\nBcc: v@x.example", "text": "t" } },
            { "mail": { "from": "no-reply@chat.example", "to": ["not an address"], "subject": "s", "text": "t" } },
            { "mail": { "from": "no-reply@chat.example", "to": ["a@x.example"], "subject": "s", "text": "t",
                        "headers": { "Content-Type": "text/html" } } },
        ]), LIMIT)
    .await;
    for (i, r) in report.iter().enumerate() {
        assert_eq!(r["kind"], "invalid", "step {i}: {report:?}");
    }
    assert_eq!(smtp.mails().len(), 1, "nothing of those was sent");

    let report = probe(
        &mut host.conn,
        &host.cfg,
        "none",
        "none-1",
        json!([mail("a@x.example", "s")]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "not-granted", "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_answers_decide_the_error() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let mut host = TestHost::start_with(config(&smtp.url())).await;

    smtp.push(Reply::new(
        Stage::Rcpt,
        550,
        "5.1.1 <gone@x.example>: mailbox unavailable",
    ));
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "mail",
        "m-550",
        json!([mail("gone@x.example", "s")]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "permanent", "{report:?}");
    assert!(
        report[0]["error"]
            .as_str()
            .unwrap()
            .contains("mailbox unavailable"),
        "{report:?}"
    );

    smtp.push(Reply::new(Stage::Data, 451, "4.3.0 try again later"));
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "mail",
        "m-451",
        json!([mail("a@x.example", "s")]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "transient", "{report:?}");

    // Pooled: ten more mails over at most the pool's two connections.
    let before = smtp.connections();
    for i in 0..10 {
        let report = probe(
            &mut host.conn,
            &host.cfg,
            "mail",
            &format!("ok-{i}"),
            json!([mail("a@x.example", "s")]),
            LIMIT,
        )
        .await;
        assert!(report[0].is_string(), "{report:?}");
    }
    assert!(
        smtp.max_open() <= 2,
        "{} connections open at once",
        smtp.max_open()
    );
    assert!(
        smtp.connections() - before <= 2,
        "{} new connections",
        smtp.connections() - before
    );

    // The relay down.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    host.restart_with(config(&format!("smtp://{down}"))).await;
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "mail",
        "m-down",
        json!([mail("a@x.example", "s")]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "transient", "{report:?}");
}

/// A relay that wants a login: credentials in the URL (percent-encoded)
/// are used; a refused login is the operator's to fix, so the mail is
/// retried (transient), not rejected for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_login_is_used_and_a_refused_one_retries() {
    let smtp = SmtpReceiver::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Some(("relay@chat.example".into(), "p:w/@%".into())),
    )
    .await
    .unwrap();
    let addr = smtp.addr();

    let mut host = TestHost::start_with(config(&format!(
        "smtp://relay%40chat.example:p%3Aw%2F%40%25@{addr}"
    )))
    .await;
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "mail",
        "login-ok",
        json!([mail("a@x.example", "s")]),
        LIMIT,
    )
    .await;
    assert!(report[0].is_string(), "{report:?}");
    assert_eq!(smtp.mails().len(), 1);
    host.stop().await;

    host.restart_with(config(&format!("smtp://relay%40chat.example:wrong@{addr}")))
        .await;
    let report = probe(
        &mut host.conn,
        &host.cfg,
        "mail",
        "login-refused",
        json!([mail("a@x.example", "s")]),
        LIMIT,
    )
    .await;
    assert_eq!(report[0]["kind"], "transient", "{report:?}");
    assert!(
        report[0]["error"].as_str().unwrap().contains("535"),
        "{report:?}"
    );
    assert_eq!(smtp.mails().len(), 1);
}

/// TLS to the relay, always verified: STARTTLS (`?tls=required`) and TLS
/// from the first byte (`smtps://`) reach a relay whose certificate
/// chains to the private CA in `ca_file`, by address and by name. A relay
/// whose certificate chains to no CA the queue trusts, and a relay that
/// does not offer the STARTTLS the URL requires, get no mail: the error
/// says why, and it is transient (the operator's to fix, not the mail's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_over_verified_tls_only() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let dir = tempdir("mail-tls");
    let ca_file = ca.write_ca(&dir, "relay-ca.pem").unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let starttls = SmtpReceiver::start_with(
        any,
        Options {
            tls: Some(ca.server_config()),
            require_tls: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let implicit = SmtpReceiver::start_with(
        any,
        Options {
            tls: Some(ca.server_config()),
            implicit_tls: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let untrusted = SmtpReceiver::start_with(
        any,
        Options {
            tls: Some(stranger.server_config()),
            implicit_tls: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let plain = SmtpReceiver::start().await.unwrap();

    let queue = |name: &str, url: &str| {
        format!(
            r#"
[queues.{name}]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.{name}.mail]
smtp_url = "{url}"
ca_file = "{}"
timeout = "3s"
"#,
            ca_file.display()
        )
    };
    let mut host = TestHost::start_with(TestConfig::new(&format!(
        r#"
[routes]
"starttls" = ["StartTls"]
"smtps" = ["Smtps"]
"untrusted" = ["Untrusted"]
"not-offered" = ["NotOffered"]
{}{}{}{}"#,
        queue(
            "StartTls",
            &format!("smtp://{}?tls=required", starttls.addr())
        ),
        queue(
            "Smtps",
            &format!("smtps://localhost:{}", implicit.addr().port())
        ),
        queue("Untrusted", &untrusted.url()),
        queue(
            "NotOffered",
            &format!("smtp://{}?tls=required", plain.addr())
        ),
    )))
    .await;

    for (route, relay) in [("starttls", &starttls), ("smtps", &implicit)] {
        let report = probe(
            &mut host.conn,
            &host.cfg,
            route,
            &format!("tls-{route}"),
            json!([mail("a@x.example", route)]),
            LIMIT,
        )
        .await;
        assert!(report[0].is_string(), "{route}: {report:?}");
        let mails = relay.mails();
        assert_eq!(mails.len(), 1, "{route}");
        assert!(mails[0].tls, "{route}: the mail came in the clear");
        assert_eq!(mails[0].header("subject").as_deref(), Some(route));
    }

    for (route, relay, why) in [
        ("untrusted", &untrusted, "certificate"),
        ("not-offered", &plain, "STARTTLS"),
    ] {
        let report = probe(
            &mut host.conn,
            &host.cfg,
            route,
            &format!("tls-{route}"),
            json!([mail("a@x.example", route)]),
            LIMIT,
        )
        .await;
        assert_eq!(report[0]["kind"], "transient", "{route}: {report:?}");
        let error = report[0]["error"].as_str().unwrap();
        assert!(
            error.to_lowercase().contains(&why.to_lowercase()),
            "{route}: {error}"
        );
        assert!(relay.mails().is_empty(), "{route}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
