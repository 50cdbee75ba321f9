//! The shipped Email plugin against an SMTP receiver on loopback: the
//! transcript of `chat.ended` to the visitor and to the site's inbox, the
//! notification of an offline message, payload fields escaped in HTML, a
//! stable Message-ID; the relay's 550 dead-letters the message with its
//! answer, a 451 and a relay that is down are retried, and a retry sends
//! only the mails that were not accepted yet.

use std::time::Duration;

use switchyard_standins::smtp::{ReceivedMail, Reply, SmtpReceiver, Stage};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn config(smtp_url: &str) -> TestConfig {
    TestConfig::with_env(
        r#"
[routes]
"chat.ended" = ["Email"]
"offlinemessage.submitted" = ["Email"]

[queues.Email]
plugin = "@PLUGINS@/email.wasm"
max_attempts = 4
retry_delay = "200ms"
retry_delay_max = "1s"
visibility_timeout = "5s"
[queues.Email.mail]
smtp_url = { env = "EMAIL_SMTP_URL" }
from = ["@chat.example"]
timeout = "3s"
[queues.Email.keyvalue]
ttl = "1h"
[queues.Email.config]
from = "Chat <no-reply@chat.example>"
inbox = "support@chat.example"
site_inboxes = { "2002" = "help@site-2002.example" }
"#,
        &[("EMAIL_SMTP_URL", smtp_url)],
    )
}

fn chat(site: i32, email: &str) -> String {
    serde_json::json!({
        "ChatGuid": "c-1", "SessionId": 1, "SiteId": site, "AgentIds": [12],
        "Start": "2026-11-22T09:01:00", "End": "2026-11-22T09:14:30",
        "PreChatName": "Ana <script>alert(1)</script>", "PreChatEmail": email,
        "AgentComment": "refund approved",
        "Messages": [
            { "Id": 1, "SenderType": 0, "Message": "Is <b>this</b> & that ok?", "Time": "2026-11-22T09:01:05" },
            { "Id": 2, "SenderType": 1, "SenderName": "Bo", "Message": "Yes", "Time": "2026-11-22T09:01:20" }
        ]
    })
    .to_string()
}

const OFFLINE: &str = r#"{"SiteId":1001,"VisitorName":"Kenji","VisitorEmail":"kenji@example.org","Title":"Refund\r\nBcc: all@example.org","Content":"Order <42> & more"}"#;

fn to(mails: &[ReceivedMail], address: &str) -> Vec<ReceivedMail> {
    mails
        .iter()
        .filter(|m| m.to.iter().any(|t| t == address))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_and_offline_messages_arrive_escaped() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let mut host = TestHost::start_with(config(&smtp.url())).await;
    host.send("chat.ended", "e-chat", &chat(1001, "ana@example.com"))
        .await;
    host.send("offlinemessage.submitted", "e-offline", OFFLINE)
        .await;
    // Site 2002 has its own inbox; no visitor address: one mail.
    host.send("chat.ended", "e-chat-2002", &chat(2002, ""))
        .await;
    assert_eq!(smtp.wait_mails(4, LIMIT).await, 4);
    wait_for(LIMIT, "all acknowledged", || {
        let m = host.metrics.clone();
        async move { m.queues().get("Email").is_some_and(|c| c.succeeded == 3) }
    })
    .await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 4);

    let visitor = &to(&mails, "ana@example.com")[0];
    assert_eq!(visitor.from, "no-reply@chat.example");
    assert_eq!(
        visitor.header("message-id").as_deref(),
        Some("<e-chat.visitor@chat.example>")
    );
    assert_eq!(
        visitor.header("subject").as_deref(),
        Some("Transcript of your chat of 2026-11-22T09:01:00")
    );
    let html = visitor.part("text/html").unwrap();
    assert!(
        html.contains("Hello Ana &lt;script&gt;alert(1)&lt;/script&gt;,"),
        "{html}"
    );
    assert!(
        html.contains("Is &lt;b&gt;this&lt;/b&gt; &amp; that ok?"),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains("<b>this"),
        "{html}"
    );
    let text = visitor.part("text/plain").unwrap();
    assert!(text.contains("[2026-11-22T09:01:20] Bo: Yes"), "{text}");
    assert!(
        !text.contains("refund approved"),
        "internal note sent to the visitor"
    );

    let site = to(&mails, "support@chat.example");
    assert_eq!(site.len(), 2, "the transcript copy and the offline message");
    let copy = site
        .iter()
        .find(|m| m.header("message-id").as_deref() == Some("<e-chat.site@chat.example>"))
        .unwrap();
    assert!(
        copy.part("text/plain")
            .unwrap()
            .contains("Agent's comment: refund approved")
    );
    let offline = site
        .iter()
        .find(|m| m.header("message-id").as_deref() == Some("<e-offline.offline@chat.example>"))
        .unwrap();
    assert_eq!(
        offline.header("reply-to").as_deref(),
        Some("kenji@example.org")
    );
    // The line break in the title did not become a header.
    assert_eq!(
        offline.header("subject").as_deref(),
        Some("Offline message from Kenji: Refund Bcc: all@example.org")
    );
    assert_eq!(offline.to, ["support@chat.example"]);
    assert!(offline.header("bcc").is_none());
    assert!(
        offline
            .part("text/html")
            .unwrap()
            .contains("Order &lt;42&gt; &amp; more")
    );

    let own = to(&mails, "help@site-2002.example");
    assert_eq!(own.len(), 1);
    assert_eq!(
        own[0].header("message-id").as_deref(),
        Some("<e-chat-2002.site@chat.example>")
    );
    assert!(dead_letters(&mut host.conn, &host.cfg).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_answers_decide_between_retry_and_dead_letter() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let mut host = TestHost::start_with(config(&smtp.url())).await;

    // 550: dead-lettered at once, with the relay's answer.
    smtp.push(Reply::new(
        Stage::Rcpt,
        550,
        "5.1.1 <gone@example.com>: mailbox unavailable",
    ));
    host.send("chat.ended", "e-550", &chat(1001, "gone@example.com"))
        .await;
    wait_for(LIMIT, "the 550 dead-lettered", || {
        let mut conn = host.conn.clone();
        let cfg = &host.cfg;
        async move { !dead_letters(&mut conn, cfg).await.is_empty() }
    })
    .await;
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert_eq!(dead[0].message_id, "e-550");
    assert_eq!(dead[0].attempts, "1");
    assert!(
        dead[0].reason.contains("550") && dead[0].reason.contains("mailbox unavailable"),
        "{}",
        dead[0].reason
    );

    // 451 on the site's copy: retried; the visitor's transcript, accepted
    // at the first attempt, is not sent again.
    let before = smtp.mails().len();
    smtp.push(Reply::new(Stage::Data, 250, "2.0.0 queued"));
    smtp.push(Reply::new(Stage::Data, 451, "4.3.0 try again later"));
    host.send("chat.ended", "e-451", &chat(1001, "ana@example.com"))
        .await;
    wait_for(LIMIT, "the 451 retried and sent", || {
        let m = host.metrics.clone();
        async move { m.queues().get("Email").is_some_and(|c| c.succeeded == 1) }
    })
    .await;
    let counts = host.metrics.queues()["Email"];
    assert_eq!(counts.retried, 1, "{counts:?}");
    let mails = smtp.mails()[before..].to_vec();
    assert_eq!(
        to(&mails, "ana@example.com").len(),
        1,
        "visitor mail sent once"
    );
    assert_eq!(to(&mails, "support@chat.example").len(), 1);
    host.stop().await;

    // The relay down: retried until it is back on the same port.
    let addr = smtp.addr();
    drop(smtp);
    host.restart().await;
    host.send("offlinemessage.submitted", "e-down", OFFLINE)
        .await;
    wait_for(LIMIT, "a failed attempt", || {
        let m = host.metrics.clone();
        async move { m.queues().get("Email").is_some_and(|c| c.retried >= 1) }
    })
    .await;
    let smtp = SmtpReceiver::start_on(addr, None).await.unwrap();
    assert_eq!(smtp.wait_mails(1, LIMIT).await, 1);
    wait_for(LIMIT, "acknowledged", || {
        let m = host.metrics.clone();
        async move { m.queues().get("Email").is_some_and(|c| c.succeeded == 1) }
    })
    .await;
    assert_eq!(
        dead_letters(&mut host.conn, &host.cfg).await.len(),
        1,
        "only the 550"
    );
    host.stop().await;
}
