//! The shipped Persistence plugin on a private PostgreSQL server: every
//! message type lands in its columns, SQL in a payload is stored as text,
//! a message delivered twice (sent twice, or redelivered after the host was
//! killed between the commit and the ack) leaves one row, and a database
//! that is down for 10 s under load costs retries, not messages.

use std::time::Duration;

use switchyard_standins::postgres::Postgres;
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

/// The types the plugin stores, routed to it.
const TYPES: &[&str] = &[
    "chat.queued",
    "chat.started",
    "chat.ended",
    "chat.wrapup.submitted",
    "chat.rating.submitted",
    "visitor.landed",
    "visitor.conversion.achieved",
    "ban.added",
    "offlinemessage.submitted",
    "agent.status.changed",
    "agent.preference.changed",
    "agentchat.replied",
    "cannedmessage.used",
    "autoinvitation.log",
    "autoinvitation.accepted",
    "autoinvitation.refused",
    "manualinvitation.log",
];

fn config(pg: &Postgres, queue: &str) -> TestConfig {
    let routes: String = TYPES
        .iter()
        .map(|t| format!("\"{t}\" = [\"Persistence\"]\n"))
        .collect();
    TestConfig::with_env(
        &format!(
            r#"
[routes]
{routes}
[queues.Persistence]
plugin = "@PLUGINS@/persistence.wasm"
handler_timeout = "5s"
{queue}
[queues.Persistence.sql]
database_url = {{ env = "PERSISTENCE_DATABASE_URL" }}
pool = 4
timeout = "2s"
migrations = "{}"
"#,
            repo_root().join("plugins/persistence/migrations").display()
        ),
        &[("PERSISTENCE_DATABASE_URL", &pg.url())],
    )
}

/// A private server with the shipped schema applied.
async fn database() -> Postgres {
    let pg = tokio::task::spawn_blocking(|| Postgres::start("chat"))
        .await
        .unwrap()
        .unwrap();
    let cfg = config(&pg, "");
    switchyard::migrate::migrate(&cfg.config.queues["Persistence"])
        .await
        .unwrap();
    pg
}

/// One statement's rows, `|` between columns, timestamps in UTC.
async fn rows(pg: &Postgres, statement: &str) -> String {
    let url = pg.url();
    let statement = format!("SET TimeZone = 'UTC'; {statement}");
    let out =
        tokio::task::spawn_blocking(move || switchyard_standins::postgres::psql(&url, &statement))
            .await
            .unwrap();
    out.strip_prefix("SET")
        .unwrap_or(&out)
        .trim_start()
        .to_owned()
}

const DROP_CHATS: &str = "Robert'); DROP TABLE chats; --";
const DROP_MESSAGES: &str = "'; DROP TABLE chat_messages; --";
const DELETE_OFFLINE: &str = "x'); DELETE FROM offline_messages; --";

/// One payload per type, and what its table must hold afterwards.
fn samples() -> Vec<(&'static str, &'static str, String, &'static str, String)> {
    let chat = serde_json::json!({
        "ChatGuid": "c-8f2a", "SessionId": 900001, "SiteId": 1001, "AgentIds": [12, 13],
        "Start": "2026-11-22T09:01:00", "End": "2026-11-22T09:14:30Z",
        "PreChatName": DROP_CHATS, "PreChatEmail": "ana@example.com",
        "PreChatDepartmentId": 7, "AgentComment": "ok", "RatingGrade": 4,
        "Messages": [
            { "Id": 1, "SenderType": 0, "SenderName": "Ana", "Message": DROP_MESSAGES, "Time": "2026-11-22T09:01:05" },
            { "Id": 2, "SenderType": 1, "SenderName": "Bo", "Message": "Hello", "Time": "2026-11-22T09:01:20" }
        ],
        "TransferLogs": [{ "Time": "2026-11-22T09:05:00", "TransferType": 1, "FromId": 12, "ToId": 13, "IfSuccess": true }],
        "CustomFields": [{ "Id": 3, "Name": "Order", "Value": "42" }]
    });
    let offline = serde_json::json!({
        "visitorId": "v-77", "VisitorName": "Kenji", "VisitorEmail": "kenji@example.org",
        "SiteId": 1001, "SessionId": 900002, "Title": "Refund", "Content": DELETE_OFFLINE,
        "Segments": [1, 2]
    });
    let auto = r#"{"SiteId":1001,"CampainId":4,"InvitaionId":8,"SetNumber":100,"AcceptNumber":12,"RefuseNumber":30,"Time":"2026-11-22T10:00:00"}"#;
    vec![
        (
            "chat.queued",
            "p-queued",
            r#"{"SiteId":1001,"DepartmentId":7,"NumberOfQueue":3,"LogTime":"2026-11-22T09:00:00"}"#.into(),
            "SELECT site_id, department_id, number_of_queue, log_time FROM chat_queue_logs WHERE message_id = 'p-queued'",
            "1001|7|3|2026-11-22 09:00:00+00".into(),
        ),
        (
            "chat.started",
            "p-started",
            r#"{"SiteId":1001,"VisitorId":55001,"ChatOrOfflineMessageId":"c-8f2a"}"#.into(),
            "SELECT site_id, visitor_id, chat_or_offline_message_id FROM chat_starts WHERE message_id = 'p-started'",
            "1001|55001|c-8f2a".into(),
        ),
        (
            "chat.ended",
            "p-ended",
            chat.to_string(),
            "SELECT message_id, session_id, site_id, agent_ids, started_at, ended_at, visitor_name, visitor_email, department_id, agent_comment, rating_grade, custom_fields->0->>'Value' FROM chats WHERE chat_guid = 'c-8f2a'",
            format!("p-ended|900001|1001|[12, 13]|2026-11-22 09:01:00+00|2026-11-22 09:14:30+00|{DROP_CHATS}|ana@example.com|7|ok|4|42"),
        ),
        (
            "chat.wrapup.submitted",
            "p-wrapup",
            r#"{"SiteId":1001,"AgentId":12,"Chat":"c-8f2a","CategoryId":3,"CategoryList":[3,9],"Comment":"shipping delay","SubmitTime":"2026-11-22T09:15:00"}"#.into(),
            "SELECT site_id, agent_id, chat_guid, category_id, categories, comment, submitted_at FROM chat_wrapups WHERE message_id = 'p-wrapup'",
            "1001|12|c-8f2a|3|[3, 9]|shipping delay|2026-11-22 09:15:00+00".into(),
        ),
        (
            "chat.rating.submitted",
            "p-rating",
            r#"{"SiteId":1001,"ChatGuid":"c-8f2a","ratingGrade":5,"ratingComment":"quick help","IsSyncChatToRemoteServer":false}"#.into(),
            "SELECT message_id, site_id, rating_grade, rating_comment, sync_to_remote FROM chat_ratings WHERE chat_guid = 'c-8f2a'",
            "p-rating|1001|5|quick help|f".into(),
        ),
        (
            "visitor.landed",
            "p-landed",
            r#"{"SiteId":1001,"CampainId":4,"VisitCount":2}"#.into(),
            "SELECT site_id, campaign_id, visit_count FROM visits WHERE message_id = 'p-landed'",
            "1001|4|2".into(),
        ),
        (
            "visitor.conversion.achieved",
            "p-conversion",
            r#"{"SiteId":1001,"Id":1,"ConversionId":31,"ConversionName":"checkout","VisitorId":55001,"ChatGuid":"c-8f2a","ConversionValue":49.9,"CreateTime":"2026-11-22T09:20:00"}"#.into(),
            "SELECT message_id, conversion_id, conversion_name, visitor_id, chat_guid, conversion_value, created_at FROM conversions WHERE site_id = 1001 AND id = 1",
            "p-conversion|31|checkout|55001|c-8f2a|49.9|2026-11-22 09:20:00+00".into(),
        ),
        (
            "ban.added",
            "p-ban",
            r#"{"SiteId":1001,"AgentId":12,"BanType":1,"IpFromOrVisitorId":3232235777,"IpTo":0,"Comment":"spam"}"#.into(),
            "SELECT site_id, agent_id, ban_type, ip_from_or_visitor_id, ip_to, comment FROM bans WHERE message_id = 'p-ban'",
            "1001|12|1|3232235777|0|spam".into(),
        ),
        (
            "offlinemessage.submitted",
            "p-offline",
            offline.to_string(),
            "SELECT visitor_id, visitor_name, visitor_email, session_id, segments, title, content FROM offline_messages WHERE message_id = 'p-offline'",
            format!("v-77|Kenji|kenji@example.org|900002|[1, 2]|Refund|{DELETE_OFFLINE}"),
        ),
        (
            "agent.status.changed",
            "p-status",
            r#"{"SiteId":1001,"AgentId":12,"Stauts":2,"Time":"2026-11-22T09:30:00"}"#.into(),
            "SELECT site_id, agent_id, status, changed_at FROM agent_status_logs WHERE message_id = 'p-status'",
            "1001|12|2|2026-11-22 09:30:00+00".into(),
        ),
        (
            "agent.preference.changed",
            "p-pref",
            r#"{"SiteId":1001,"AgentId":12,"IfEnableSpellCheck":true,"Columns":[{"EnumColumn":1,"IfVisible":true,"Width":120}]}"#.into(),
            "SELECT message_id, columns->0->>'Width' FROM agent_preferences WHERE site_id = 1001 AND agent_id = 12",
            "p-pref|120".into(),
        ),
        (
            "agentchat.replied",
            "p-replied",
            r#"{"SiteId":1001,"FromAgentId":12,"ToAgentId":13,"Time":"2026-11-22T09:31:00","Content":"Can you take chat c-8f2a?"}"#.into(),
            "SELECT from_agent_id, to_agent_id, replied_at, content FROM agent_replies WHERE message_id = 'p-replied'",
            "12|13|2026-11-22 09:31:00+00|Can you take chat c-8f2a?".into(),
        ),
        (
            "cannedmessage.used",
            "p-canned",
            r#"{"SiteId":1001,"ChatGuid":"c-8f2a","AgentId":12,"CannedMessgeId":77,"Time":"2026-11-22T09:02:00"}"#.into(),
            "SELECT chat_guid, agent_id, canned_message_id, used_at FROM canned_message_uses WHERE message_id = 'p-canned'",
            "c-8f2a|12|77|2026-11-22 09:02:00+00".into(),
        ),
        (
            "autoinvitation.log",
            "p-auto-log",
            auto.into(),
            "SELECT event, campaign_id, invitation_id, set_number, accept_number, refuse_number, logged_at FROM auto_invitation_logs WHERE message_id = 'p-auto-log'",
            "autoinvitation.log|4|8|100|12|30|2026-11-22 10:00:00+00".into(),
        ),
        (
            "autoinvitation.accepted",
            "p-auto-accepted",
            auto.into(),
            "SELECT event FROM auto_invitation_logs WHERE message_id = 'p-auto-accepted'",
            "autoinvitation.accepted".into(),
        ),
        (
            "autoinvitation.refused",
            "p-auto-refused",
            auto.into(),
            "SELECT event FROM auto_invitation_logs WHERE message_id = 'p-auto-refused'",
            "autoinvitation.refused".into(),
        ),
        (
            "manualinvitation.log",
            "p-maninv",
            r#"{"SiteId":1001,"AgentId":12,"Status":1,"TranscriptType":0,"TranscriptId":5,"Message":"Hi, can I help?"}"#.into(),
            "SELECT agent_id, status, transcript_type, transcript_id, message FROM manual_invitation_logs WHERE message_id = 'p-maninv'",
            "12|1|0|5|Hi, can I help?".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_lands_in_its_columns_once() {
    let pg = database().await;
    let mut host = TestHost::idle(config(&pg, "max_attempts = 1\nconcurrency = 4")).await;
    let samples = samples();
    assert_eq!(samples.len(), TYPES.len());
    // Each sent twice under its id: the second is a redelivery.
    for _ in 0..2 {
        for (t, id, body, _, _) in &samples {
            host.send(t, id, body).await;
        }
    }
    host.restart().await;
    let metrics = host.metrics.clone();
    wait_for(LIMIT, "every message handled", || {
        let m = metrics.clone();
        async move {
            m.queues()
                .get("Persistence")
                .is_some_and(|c| c.succeeded + c.dead_lettered >= 2 * TYPES.len() as u64)
        }
    })
    .await;
    host.stop().await;
    assert!(dead_letters(&mut host.conn, &host.cfg).await.is_empty());

    for (t, _, _, query, want) in &samples {
        assert_eq!(&rows(&pg, query).await, want, "{t}: {query}");
    }
    // The SQL in the payloads is text in the rows, and ran nowhere.
    assert_eq!(
        rows(
            &pg,
            "SELECT id, sender_type, sender_name, message, sent_at FROM chat_messages WHERE chat_guid = 'c-8f2a' ORDER BY id"
        )
        .await,
        format!(
            "1|0|Ana|{DROP_MESSAGES}|2026-11-22 09:01:05+00\n2|1|Bo|Hello|2026-11-22 09:01:20+00"
        )
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT seq, transferred_at, transfer_type, from_id, to_id, succeeded FROM chat_transfers WHERE chat_guid = 'c-8f2a'"
        )
        .await,
        "1|2026-11-22 09:05:00+00|1|12|13|t"
    );
    // Twice delivered, once stored.
    for (table, n) in [
        ("chat_queue_logs", 1),
        ("chat_starts", 1),
        ("chats", 1),
        ("chat_messages", 2),
        ("chat_transfers", 1),
        ("chat_wrapups", 1),
        ("chat_ratings", 1),
        ("visits", 1),
        ("conversions", 1),
        ("bans", 1),
        ("offline_messages", 1),
        ("agent_status_logs", 1),
        ("agent_preferences", 1),
        ("agent_replies", 1),
        ("canned_message_uses", 1),
        ("auto_invitation_logs", 3),
        ("manual_invitation_logs", 1),
    ] {
        assert_eq!(
            rows(&pg, &format!("SELECT count(*) FROM {table}")).await,
            n.to_string(),
            "{table}"
        );
    }
}

/// The host dies (a crash point between the plugin's return, after its
/// transaction committed, and the ack); a new host handles the message
/// again, and the database still holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_after_a_crash_stores_nothing_twice() {
    init_logs();
    let pg = database().await;
    let redis = Redis::start();
    let cfg = config(
        &pg,
        "visibility_timeout = \"1s\"\nretry_delay = \"200ms\"\nretry_delay_max = \"1s\"",
    );
    let mut conn = redis.conn().await;
    let (_, _, chat, _, _) = samples().swap_remove(2);
    send_message(&mut conn, &cfg, "chat.ended", "crash-1", &chat).await;
    let url = pg.url();
    let env = [("PERSISTENCE_DATABASE_URL", url.as_str())];

    let log = cfg.dir.join("first.log");
    let mut first = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[env[0], ("SWITCHYARD_FAILPOINT", "queue-before-ack")],
    )
    .unwrap();
    let status = first
        .wait(LIMIT)
        .expect("the host stops at the crash point");
    assert!(!status.success());
    assert_eq!(
        rows(&pg, "SELECT message_id FROM chats").await,
        "crash-1",
        "committed before the crash"
    );
    assert_eq!(
        pending(&mut conn, &cfg.queue_stream("Persistence"), &cfg.prefix).await,
        1,
        "not acknowledged"
    );

    let log = cfg.dir.join("second.log");
    let _second = HostProcess::spawn_with(&cfg.path, redis.url(), &log, &env).unwrap();
    let stream = cfg.queue_stream("Persistence");
    wait_for(LIMIT, "the message redelivered and acknowledged", || {
        let (mut conn, stream, group) = (conn.clone(), stream.clone(), cfg.prefix.clone());
        async move { pending(&mut conn, &stream, &group).await == 0 }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("ERROR"), "{text}");
    assert_eq!(rows(&pg, "SELECT count(*) FROM chats").await, "1");
    assert_eq!(rows(&pg, "SELECT count(*) FROM chat_messages").await, "2");
    assert_eq!(rows(&pg, "SELECT count(*) FROM chat_transfers").await, "1");
    assert!(dead_letters(&mut conn, &cfg).await.is_empty());
}

/// PostgreSQL is stopped for 10 s while messages keep coming: they are
/// retried (the connections fail, then connecting fails) and every one is
/// stored once the server is back; none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_for_ten_seconds_costs_retries_not_messages() {
    let mut pg = database().await;
    let mut host = TestHost::start_with(config(
        &pg,
        "concurrency = 8\nmax_attempts = 12\nretry_delay = \"500ms\"\nretry_delay_max = \"4s\"\nvisibility_timeout = \"10s\"",
    )).await;
    let metrics = host.metrics.clone();
    let producer = {
        let ingress = host.cfg.ingress().to_owned();
        let mut conn = host.conn.clone();
        tokio::spawn(async move {
            // 40 messages a second for 16 s.
            for n in 0..640 {
                let body = format!(
                    r#"{{"SiteId":1001,"AgentId":{},"Stauts":2,"Time":"2026-11-22T09:30:00"}}"#,
                    n % 50
                );
                let id = format!("load-{n}");
                xadd(
                    &mut conn,
                    &ingress,
                    &[
                        ("type", "agent.status.changed"),
                        ("id", &id),
                        ("body", &body),
                    ],
                )
                .await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    // Rows are being stored before the outage begins.
    let pg_ref = &pg;
    wait_for(
        Duration::from_secs(20),
        "rows stored before the outage",
        async || rows(pg_ref, "SELECT count(*) FROM agent_status_logs").await != "0",
    )
    .await;
    tokio::task::block_in_place(|| pg.stop());
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| pg.restart()).unwrap();
    producer.await.unwrap();

    wait_for(Duration::from_secs(90), "all 640 stored", || {
        let m = metrics.clone();
        async move {
            m.queues()
                .get("Persistence")
                .is_some_and(|c| c.succeeded + c.dead_lettered >= 640)
        }
    })
    .await;
    let counts = metrics.queues()["Persistence"];
    host.stop().await;
    let dead = host.dead_letters().await;
    assert!(dead.is_empty(), "dead-lettered: {dead:#?}");
    assert_eq!(counts.succeeded, 640, "{counts:?}");
    assert!(counts.retried > 0, "the outage was felt: {counts:?}");
    assert_eq!(
        rows(&pg, "SELECT count(*) FROM agent_status_logs").await,
        "640"
    );
}
