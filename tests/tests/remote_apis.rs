//! The shipped WebHook, Zendesk, Salesforce and Ticket plugins against
//! local HTTP services that speak those APIs: each sends its API's request
//! shape (the webhook's signature verified by the receiver), a redelivery
//! after a crash between the call and the ack creates nothing twice, and
//! answers map to retry (honouring Retry-After) or reject.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_standins::{Api, Recorded, Scripted, StandIn};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

const SECRETS: &[(&str, &str)] = &[
    ("WEBHOOK_SIGNING_SECRET", "whsec-test-5c1d"),
    ("ZENDESK_API_TOKEN", "zd-test-77aa"),
    ("SALESFORCE_ACCESS_TOKEN", "sf-test-00D1"),
    ("TICKET_API_TOKEN", "tk-test-9b2e"),
];

fn secret(name: &str) -> String {
    SECRETS.iter().find(|(k, _)| *k == name).unwrap().1.into()
}

const ZENDESK_EMAIL: &str = "support@chat.example";

struct Remotes {
    webhook: StandIn,
    zendesk: StandIn,
    salesforce: StandIn,
    tickets: StandIn,
}

impl Remotes {
    async fn start() -> Self {
        Remotes {
            webhook: StandIn::start(Api::WebHook {
                secret: secret("WEBHOOK_SIGNING_SECRET"),
            })
            .await
            .unwrap(),
            zendesk: StandIn::start(Api::Zendesk {
                email: ZENDESK_EMAIL.into(),
                token: secret("ZENDESK_API_TOKEN"),
            })
            .await
            .unwrap(),
            salesforce: StandIn::start(Api::Salesforce {
                token: secret("SALESFORCE_ACCESS_TOKEN"),
            })
            .await
            .unwrap(),
            tickets: StandIn::start(Api::Tickets {
                token: secret("TICKET_API_TOKEN"),
            })
            .await
            .unwrap(),
        }
    }

    fn of(&self, queue: &str) -> &StandIn {
        match queue {
            "WebHook" => &self.webhook,
            "Zendesk" => &self.zendesk,
            "Salesforce" => &self.salesforce,
            _ => &self.tickets,
        }
    }

    /// The `[queues.X]` table of one of the four queues, pointed at its
    /// stand-in.
    fn queue(&self, name: &str, extra: &str) -> String {
        let url = self.of(name).url();
        let (plugin, config) = match name {
            "WebHook" => (
                "webhook",
                format!(
                    "url = \"{url}/hooks/chat\"\nsigning_secret = {{ env = \"WEBHOOK_SIGNING_SECRET\" }}"
                ),
            ),
            "Zendesk" => (
                "zendesk",
                format!(
                    "base_url = \"{url}\"\nemail = \"{ZENDESK_EMAIL}\"\napi_token = {{ env = \"ZENDESK_API_TOKEN\" }}"
                ),
            ),
            "Salesforce" => (
                "salesforce",
                format!(
                    "instance_url = \"{url}\"\napi_version = \"v60.0\"\nexternal_id_field = \"Switchyard_Message_Id__c\"\naccess_token = {{ env = \"SALESFORCE_ACCESS_TOKEN\" }}"
                ),
            ),
            _ => (
                "ticket",
                format!(
                    "url = \"{url}/api/tickets\"\napi_token = {{ env = \"TICKET_API_TOKEN\" }}"
                ),
            ),
        };
        format!(
            "[queues.{name}]\nplugin = \"@PLUGINS@/{plugin}.wasm\"\nallowed_hosts = [\"{url}\"]\n\
             max_attempts = 4\nretry_delay = \"50ms\"\nvisibility_timeout = \"2s\"\n{extra}\n\
             [queues.{name}.config]\n{config}\n"
        )
    }

    fn config(&self, queues: &[&str], extra: &str) -> TestConfig {
        let all = ["Ticket", "Salesforce", "Zendesk", "WebHook"];
        let mut text = "[routes]\n".to_owned();
        for (message_type, targets) in [
            ("chat.ended", &all[..]),
            ("offlinemessage.submitted", &all[..]),
            ("chat.wrapup.submitted", &["Ticket", "WebHook"][..]),
            ("chat.started", &["WebHook"][..]),
        ] {
            let targets: Vec<String> = targets
                .iter()
                .filter(|q| queues.contains(q))
                .map(|q| format!("\"{q}\""))
                .collect();
            if !targets.is_empty() {
                text.push_str(&format!("\"{message_type}\" = [{}]\n", targets.join(", ")));
            }
        }
        for q in queues {
            text.push_str(&self.queue(q, extra));
        }
        TestConfig::with_env(&text, SECRETS)
    }
}

const CHAT: &str = r#"{"ChatGuid":"c-8f2a","SessionId":900001,"SiteId":1001,"AgentIds":[12],"Start":"2026-11-22T09:01:00","End":"2026-11-22T09:14:30","PreChatName":"Ana Souza","PreChatEmail":"ana@example.com","Messages":[{"Id":1,"SenderType":0,"SenderName":"Ana","Message":"My order has not arrived","Time":"2026-11-22T09:01:05"},{"Id":2,"SenderType":1,"SenderName":"Li","Message":"Let me check","Time":"2026-11-22T09:01:40"}],"IfNewTicket":true}"#;
const OFFLINE: &str = r#"{"visitorId":"v-77","VisitorName":"Kenji","VisitorEmail":"kenji@example.org","SiteId":1001,"Title":"Refund","Content":"Please refund order 42"}"#;
const WRAPUP: &str = r#"{"SiteId":1001,"AgentId":12,"Chat":"c-8f2a","CategoryId":3,"CategoryList":[3,9],"Comment":"shipping delay","SubmitTime":"2026-11-22T09:15:00"}"#;
const STARTED: &str = r#"{"SiteId":1001,"VisitorId":55001,"ChatOrOfflineMessageId":"c-8f2a"}"#;

/// Waits until each named queue has settled (acknowledged or
/// dead-lettered) `n` messages.
async fn settled(host: &TestHost, want: &[(&str, u64)]) {
    let m = host.metrics.clone();
    wait_for(LIMIT, "the queues settled their messages", || {
        let q = m.queues();
        let done = want.iter().all(|(name, n)| {
            q.get(*name)
                .is_some_and(|c| c.succeeded + c.dead_lettered == *n)
        });
        async move { done }
    })
    .await;
}

fn paths(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_sends_its_apis_request_shape() {
    let remotes = Remotes::start().await;
    let mut host =
        TestHost::start_with(remotes.config(&["WebHook", "Zendesk", "Salesforce", "Ticket"], ""))
            .await;
    host.send("chat.ended", "chat-1", CHAT).await;
    host.send("offlineMessage.submitted", "off-1", OFFLINE)
        .await;
    host.send("chat.wrapup.submitted", "wrap-1", WRAPUP).await;
    xadd(
        &mut host.conn,
        host.cfg.ingress(),
        &[
            ("type", "chat.started"),
            ("id", "start-1"),
            ("body", STARTED),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    settled(
        &host,
        &[
            ("WebHook", 4),
            ("Zendesk", 2),
            ("Salesforce", 2),
            ("Ticket", 3),
        ],
    )
    .await;
    let q = host.metrics.queues();
    host.stop().await;
    for name in ["WebHook", "Zendesk", "Salesforce", "Ticket"] {
        assert_eq!(q[name].dead_lettered, 0, "{name}");
    }

    // WebHook: signed (the receiver verified every signature), keyed by the
    // message id, the producer's body as `data`.
    let hooks = remotes.webhook.requests();
    assert_eq!(hooks.len(), 4);
    for r in &hooks {
        assert_eq!(r.refused, None, "{r:?}");
        assert_eq!(r.path, "/hooks/chat");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let event = r.json();
        assert_eq!(r.header("idempotency-key"), event["id"].as_str());
        assert_eq!(r.header("switchyard-event"), event["type"].as_str());
    }
    let chat = hooks
        .iter()
        .find(|r| r.header("idempotency-key") == Some("chat-1"))
        .unwrap();
    let event = chat.json();
    assert_eq!(event["type"], "chat.ended");
    assert_eq!(event["site_id"], 1001);
    assert_eq!(event["data"], serde_json::from_str::<Value>(CHAT).unwrap());
    let started = hooks
        .iter()
        .find(|r| r.header("idempotency-key") == Some("start-1"))
        .unwrap();
    assert_eq!(
        started.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    // Zendesk: a lookup by external id, then the ticket.
    let zd = remotes.zendesk.requests();
    assert!(zd.iter().all(|r| r.refused.is_none()), "{zd:?}");
    let mut calls = paths(&zd);
    calls.sort();
    assert_eq!(
        calls,
        [
            "GET /api/v2/tickets.json?external_id=chat-1",
            "GET /api/v2/tickets.json?external_id=off-1",
            "POST /api/v2/tickets.json",
            "POST /api/v2/tickets.json",
        ]
    );
    let tickets = remotes.zendesk.objects();
    let chat = tickets
        .iter()
        .find(|t| t["external_id"] == "chat-1")
        .unwrap();
    assert_eq!(chat["subject"], "Chat with Ana Souza");
    assert_eq!(
        chat["requester"],
        json!({ "name": "Ana Souza", "email": "ana@example.com" })
    );
    let body = chat["comment"]["body"].as_str().unwrap();
    assert!(
        body.contains("[2026-11-22T09:01:05] Ana: My order has not arrived"),
        "{body}"
    );
    let offline = tickets
        .iter()
        .find(|t| t["external_id"] == "off-1")
        .unwrap();
    assert_eq!(offline["subject"], "Refund");
    assert_eq!(
        offline["tags"],
        json!(["switchyard", "offline-message", "site-1001"])
    );

    // Salesforce: an upsert by the message id.
    let sf = remotes.salesforce.requests();
    let mut calls = paths(&sf);
    calls.sort();
    assert_eq!(
        calls,
        [
            "PATCH /services/data/v60.0/sobjects/Case/Switchyard_Message_Id__c/chat-1",
            "PATCH /services/data/v60.0/sobjects/Case/Switchyard_Message_Id__c/off-1",
        ]
    );
    assert!(sf.iter().all(|r| r.status == 201), "{sf:?}");
    let cases = remotes.salesforce.objects();
    let case = cases
        .iter()
        .find(|c| c["Switchyard_Message_Id__c"] == "chat-1")
        .unwrap();
    assert_eq!(case["Subject"], "Chat with Ana Souza");
    assert_eq!(case["Origin"], "Chat");
    assert_eq!(case["SuppliedEmail"], "ana@example.com");

    // The ticket service: one event per message, keyed by its id.
    let tk = remotes.tickets.requests();
    assert!(tk.iter().all(|r| r.status == 201), "{tk:?}");
    let mut keys: Vec<&str> = tk
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    keys.sort();
    assert_eq!(keys, ["chat-1", "off-1", "wrap-1"]);
    let wrapup = tk
        .iter()
        .find(|r| r.header("idempotency-key") == Some("wrap-1"))
        .unwrap();
    assert_eq!(
        wrapup.json(),
        json!({
            "type": "wrapup", "site_id": 1001, "chat_guid": "c-8f2a", "agent_id": 12,
            "category_id": 3, "categories": [3, 9], "comment": "shipping delay"
        })
    );
}

/// The host is killed (a crash point between the handler's return and the
/// ack) after the remote API created the object; the message is delivered
/// again to a new host, and the API still holds one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_after_a_crash_creates_nothing_twice() {
    let redis = Redis::start();
    let remotes = Remotes::start().await;
    for queue in ["WebHook", "Zendesk", "Salesforce", "Ticket"] {
        let cfg = remotes.config(&[queue], "");
        let mut conn = redis.conn().await;
        let id = format!("crash-{queue}");
        send_message(&mut conn, &cfg, "chat.ended", &id, CHAT).await;
        let api = remotes.of(queue);
        let before = api.objects().len();
        let log = cfg.dir.join("first.log");
        let mut env = SECRETS.to_vec();
        env.push(("SWITCHYARD_FAILPOINT", "queue-before-ack"));
        let mut first = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &env).unwrap();
        let status = first
            .wait(LIMIT)
            .expect("the host stops at the crash point");
        assert!(!status.success(), "{queue}");
        assert_eq!(
            api.objects().len(),
            before + 1,
            "{queue}: created before the crash"
        );
        let calls = api.requests().len();

        let log = cfg.dir.join("second.log");
        let _second = HostProcess::spawn_with(&cfg.path, redis.url(), &log, SECRETS).unwrap();
        let stream = cfg.queue_stream(queue);
        wait_for(LIMIT, "the message redelivered and acknowledged", || {
            let (mut conn, stream, group) = (conn.clone(), stream.clone(), cfg.prefix.clone());
            async move { pending(&mut conn, &stream, &group).await == 0 }
        })
        .await;
        assert!(api.requests().len() > calls, "{queue}: delivered again");
        assert_eq!(api.objects().len(), before + 1, "{queue}: still one object");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_map_to_retry_honouring_retry_after_or_reject() {
    let remotes = Remotes::start().await;
    let queues = ["WebHook", "Zendesk", "Salesforce", "Ticket"];
    let mut host = TestHost::start_with(remotes.config(&queues, "")).await;
    for q in queues {
        let api = remotes.of(q);
        api.push(Scripted::status(503).with_header("retry-after", "1"));
        api.push(Scripted::status(429));
        api.push(Scripted::status(408));
    }
    host.send("chat.ended", "busy-1", CHAT).await;
    settled(
        &host,
        &[
            ("WebHook", 1),
            ("Zendesk", 1),
            ("Salesforce", 1),
            ("Ticket", 1),
        ],
    )
    .await;
    for q in queues {
        let r = remotes.of(q).requests();
        let statuses: Vec<u16> = r.iter().map(|r| r.status).take(3).collect();
        assert_eq!(statuses, [503, 429, 408], "{q}");
        let waited = r[1].at - r[0].at;
        assert!(
            waited >= Duration::from_millis(950),
            "{q}: Retry-After honoured, waited {waited:?}"
        );
        assert_eq!(remotes.of(q).objects().len(), 1, "{q}");
    }
    let counts = host.metrics.queues();
    for q in queues {
        assert_eq!(counts[q].retried, 3, "{q}");
        assert_eq!(counts[q].succeeded, 1, "{q}");
    }

    // Any other 4xx: rejected at once, with the status and the start of
    // the answer.
    for q in queues {
        remotes.of(q).push(Scripted::answer(
            422,
            "{\"error\":\"RecordInvalid\",\"description\":\"Requester email is invalid\"}",
        ));
    }
    host.send("chat.ended", "bad-1", CHAT).await;
    settled(
        &host,
        &[
            ("WebHook", 2),
            ("Zendesk", 2),
            ("Salesforce", 2),
            ("Ticket", 2),
        ],
    )
    .await;
    host.stop().await;
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert_eq!(dead.len(), 4);
    for d in &dead {
        assert_eq!(d.message_id, "bad-1");
        assert_eq!(d.attempts, "1", "{d:?}");
        assert!(
            d.reason.contains(
                "HTTP 422 Unprocessable Entity: {\"error\":\"RecordInvalid\",\"description\":\"Requester email is invalid\"}"
            ),
            "{}",
            d.reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_retried_then_dead_lettered() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut host = TestHost::start_with(TestConfig::with_env(
        &format!(
            r#"
[routes]
"chat.ended" = ["Ticket"]

[queues.Ticket]
plugin = "@PLUGINS@/ticket.wasm"
allowed_hosts = ["http://127.0.0.1:{port}"]
max_attempts = 3
retry_delay = "50ms"

[queues.Ticket.config]
url = "http://127.0.0.1:{port}/api/tickets"
api_token = {{ env = "TICKET_API_TOKEN" }}
"#
        ),
        SECRETS,
    ))
    .await;
    host.send("chat.ended", "down-1", CHAT).await;
    settled(&host, &[("Ticket", 1)]).await;
    let q = host.metrics.queues();
    host.stop().await;
    assert_eq!(q["Ticket"].retried, 3);
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    assert!(
        dead[0]
            .reason
            .contains("sending to the ticket service: connection refused"),
        "{}",
        dead[0].reason
    );
}
