//! The shipped queues.toml routes every message type of the design to
//! exactly the queues the design names, and the shipped plugins accept the
//! design's payloads.

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard_tests::*;

/// Seed 000's routing: message type to target queues.
const DESIGN: &[(&str, &[&str])] = &[
    ("chat.queued", &["Persistence"]),
    ("chat.started", &["WebHook"]),
    (
        "chat.ended",
        &[
            "Persistence",
            "Email",
            "Ticket",
            "Salesforce",
            "Zendesk",
            "WebHook",
        ],
    ),
    (
        "chat.wrapup.submitted",
        &["Persistence", "Ticket", "WebHook"],
    ),
    ("chat.rating.submitted", &["Persistence"]),
    ("visitor.landed", &["Persistence"]),
    ("visitor.conversion.achieved", &["Persistence"]),
    ("ban.added", &["Persistence"]),
    (
        "offlinemessage.submitted",
        &[
            "Persistence",
            "Email",
            "Ticket",
            "Salesforce",
            "Zendesk",
            "WebHook",
        ],
    ),
    ("agent.status.changed", &["Persistence"]),
    ("agent.preference.changed", &["Persistence"]),
    ("agentchat.replied", &["Persistence"]),
    ("cannedmessage.used", &["Persistence"]),
    ("autoinvitation.log", &["Persistence"]),
    ("manualinvitation.log", &["Persistence"]),
];

const QUEUES: &[&str] = &[
    "Persistence",
    "Email",
    "Ticket",
    "Salesforce",
    "Zendesk",
    "WebHook",
];

/// The shipped queues.toml, with this test's prefix, ingress and plugin path.
/// Its queues that call remote APIs call local stand-ins, and those with
/// SQL and mail a private PostgreSQL and an SMTP receiver, as in the demo.
async fn shipped_config() -> (
    TestConfig,
    Vec<(String, switchyard_standins::StandIn)>,
    switchyard_cli::demo::LocalServices,
) {
    let text = std::fs::read_to_string(repo_root().join("queues.toml")).unwrap();
    let text = text
        .replace("prefix = \"switchyard\"", "prefix = \"@PREFIX@\"")
        .replace("stream = \"chat:events\"", "stream = \"@PREFIX@:ingress\"")
        .replace(
            "plugin = \"target/wasm32-wasip2/release/",
            "plugin = \"@PLUGINS@/",
        )
        .replace(
            "migrations = \"plugins/",
            &format!("migrations = \"{}/plugins/", repo_root().display()),
        );
    let mut cfg = TestConfig::with_env(&text, SHIPPED_SECRETS);
    let standins = switchyard_cli::demo::start_standins(&mut cfg.config)
        .await
        .unwrap();
    let services = switchyard_cli::demo::start_services(&mut cfg.config)
        .await
        .unwrap();
    (cfg, standins, services)
}

/// One valid payload per message type, from the demo's sample events.
fn sample_bodies() -> BTreeMap<String, String> {
    let events = switchyard_cli::demo::read_events(&repo_root().join("demo/events.jsonl")).unwrap();
    let mut bodies = BTreeMap::new();
    for fields in events {
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(t), Some(id), Some(body)) = (get("type"), get("id"), get("body"))
            && !id.starts_with("demo-bad")
        {
            bodies.entry(t.to_ascii_lowercase()).or_insert(body);
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_design_message_type_reaches_exactly_its_queues() {
    init_logs();
    let redis = Redis::start();
    let (cfg, standins, services) = shipped_config().await;
    let mut conn = redis.conn().await;
    let bodies = sample_bodies();

    // Events added before the host first runs are handled too.
    for (message_type, _) in DESIGN {
        let body = bodies
            .get(*message_type)
            .unwrap_or_else(|| panic!("no sample body for {message_type}"));
        // The producer's own spelling of the type, as the design's C# code
        // sends it for offline messages.
        let sent_type = if *message_type == "offlinemessage.submitted" {
            "offlineMessage.submitted"
        } else {
            message_type
        };
        xadd(
            &mut conn,
            cfg.ingress(),
            &[
                ("type", sent_type),
                ("id", &format!("m-{message_type}")),
                ("body", body),
            ],
        )
        .await;
    }
    let host = start_host(&cfg.config, &redis);
    let expected_total: usize = DESIGN.iter().map(|(_, qs)| qs.len()).sum();
    let metrics = host.metrics.clone();
    wait_for(Duration::from_secs(30), "every copy handled", || {
        let done: u64 = metrics
            .queues()
            .values()
            .map(|c| c.succeeded + c.dead_lettered)
            .sum();
        async move { done as usize >= expected_total }
    })
    .await;
    host.stop().await.unwrap();

    for queue in QUEUES {
        let mut got: Vec<String> = entries(&mut conn, &cfg.queue_stream(queue))
            .await
            .iter()
            .map(|e| field(e, "id").unwrap())
            .collect();
        got.sort();
        let mut want: Vec<String> = DESIGN
            .iter()
            .filter(|(_, qs)| qs.contains(queue))
            .map(|(t, _)| format!("m-{t}"))
            .collect();
        want.sort();
        assert_eq!(got, want, "queue {queue}");
        assert_eq!(
            pending(&mut conn, &cfg.queue_stream(queue), &cfg.prefix).await,
            0
        );
    }
    let dead = dead_letters(&mut conn, &cfg).await;
    assert!(
        dead.is_empty(),
        "valid design payloads were dead-lettered: {dead:#?}"
    );
    let counts = metrics.queues();
    let succeeded: u64 = counts.values().map(|c| c.succeeded).sum();
    assert_eq!(succeeded as usize, expected_total, "{counts:#?}");
    assert_eq!(pending(&mut conn, cfg.ingress(), &cfg.prefix).await, 0);
    for (queue, standin) in &standins {
        let want = DESIGN
            .iter()
            .filter(|(_, qs)| qs.contains(&queue.as_str()))
            .count();
        let got = standin.objects().len();
        assert_eq!(got, want, "{queue}: {}", standin.summary());
    }
    // Persistence stored every type it is routed; Email sent the chat's
    // transcript (visitor and site) and the offline message.
    let rows: i64 = services
        .table_rows()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(rows >= 16, "{rows} rows stored");
    let smtp = services.smtp.as_ref().unwrap();
    assert_eq!(smtp.mails().len(), 3, "{}", smtp.summary());
}

/// Routes with `validate = true`: every sample body of the design matches
/// its type's schema and is handled; a body off the schema is dead-lettered
/// by the router with what is wrong, and no queue gets it; the same body on
/// a route without validation is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_routes_dead_letter_bodies_off_the_schema() {
    let bodies = sample_bodies();
    let mut text = String::from("[routes]\n");
    for (message_type, _) in DESIGN {
        text.push_str(&format!(
            "\"{message_type}\" = {{ queues = [\"Rec\"], validate = true }}\n"
        ));
    }
    text.push_str("\"custom.event\" = [\"Rec\"]\n[queues.Rec]\nplugin = \"@PLUGINS@/noop.wasm\"\n");
    let mut host = TestHost::start(&text).await;
    for (message_type, _) in DESIGN {
        let body = &bodies[*message_type];
        host.send(message_type, &format!("m-{message_type}"), body)
            .await;
    }
    let off = r#"{"ChatGuid": "g", "SessionId": 1, "SiteId": "7", "Start": "2026-12-07T10:00:00", "End": "later"}"#;
    host.send("Chat.Ended", "off-schema", off).await;
    host.send("custom.event", "unchecked", off).await;
    host.settled("Rec", DESIGN.len() as u64 + 1, Duration::from_secs(30))
        .await;
    let mut conn = host.redis.conn().await;
    wait_for(Duration::from_secs(10), "the dead letter", async || {
        !dead_letters(&mut conn, &host.cfg).await.is_empty()
    })
    .await;
    let dead = host.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].message_id, "off-schema");
    assert!(
        dead[0]
            .reason
            .contains(r#"body does not match the schema's Chat: /End: "later" does not match"#)
            && dead[0]
                .reason
                .contains(r#"/SiteId: "7" is not of type "integer""#),
        "{}",
        dead[0].reason
    );
    let mut handled: Vec<String> = entries(&mut conn, &host.cfg.queue_stream("Rec"))
        .await
        .iter()
        .map(|e| field(e, "id").unwrap())
        .collect();
    handled.sort();
    let mut want: Vec<String> = DESIGN.iter().map(|(t, _)| format!("m-{t}")).collect();
    want.push("unchecked".into());
    want.sort();
    assert_eq!(handled, want);
    assert_eq!(host.queue("Rec").succeeded, DESIGN.len() as u64 + 1);
}
