//! How each message type is stored in the chat database: the statements
//! the Persistence queue runs for one message, in one transaction, against
//! the schema of `plugins/persistence/migrations`.
//!
//! Every write is idempotent: an event is keyed by its message id (a
//! redelivery inserts nothing: `ON CONFLICT DO NOTHING`), and what has a
//! natural key of its own is upserted by it (a chat by `ChatGuid`, its
//! messages by `(ChatGuid, Id)`, a rating by `ChatGuid`, a conversion by
//! `(SiteId, Id)`, an agent's preferences by `(SiteId, AgentId)`), the
//! latest write winning. Parameters are typed values, never text spliced
//! into SQL; lists (a chat's messages, transfers, custom fields) go in as
//! one JSON parameter each, unpacked by the database.
//!
//! Pure: used by the plugin, and natively by the benchmark that compares
//! it with a native writer doing the same statements.

use serde_json::Value;

use crate::{Payload, PayloadError};

/// A parameter of a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float(f64),
    Text(String),
}

impl From<i32> for Param {
    fn from(n: i32) -> Self {
        Param::Int32(n)
    }
}

impl From<i64> for Param {
    fn from(n: i64) -> Self {
        Param::Int64(n)
    }
}

impl From<f64> for Param {
    fn from(f: f64) -> Self {
        Param::Float(f)
    }
}

impl From<bool> for Param {
    fn from(b: bool) -> Self {
        Param::Bool(b)
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Text(s.to_owned())
    }
}

impl From<String> for Param {
    fn from(s: String) -> Self {
        Param::Text(s)
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// One statement and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: &'static str,
    pub params: Vec<Param>,
}

/// The table a message type lands in (its main table, for a chat).
pub fn table(payload: &Payload) -> &'static str {
    match payload {
        Payload::ChatQueued(_) => "chat_queue_logs",
        Payload::ChatStarted(_) => "chat_starts",
        Payload::ChatEnded(_) => "chats",
        Payload::WrapupSubmitted(_) => "chat_wrapups",
        Payload::RatingSubmitted(_) => "chat_ratings",
        Payload::VisitorLanded(_) => "visits",
        Payload::ConversionAchieved(_) => "conversions",
        Payload::BanAdded(_) => "bans",
        Payload::OfflineMessageSubmitted(_) => "offline_messages",
        Payload::AgentStatusChanged(_) => "agent_status_logs",
        Payload::AgentPreferenceChanged(_) => "agent_preferences",
        Payload::AgentChatReplied(_) => "agent_replies",
        Payload::CannedMessageUsed(_) => "canned_message_uses",
        Payload::AutoInvitation(_) => "auto_invitation_logs",
        Payload::ManualInvitation(_) => "manual_invitation_logs",
    }
}

/// A list field of the body as JSON text (`[]` when absent or null).
fn list(body: &Value, field: &str) -> Param {
    match body.get(field) {
        Some(v @ Value::Array(_)) => Param::Text(v.to_string()),
        _ => Param::Text("[]".into()),
    }
}

const CHAT: &str = "INSERT INTO chats (chat_guid, message_id, session_id, site_id, agent_ids, started_at, ended_at, visitor_name, visitor_company, visitor_phone, visitor_email, department_id, agent_comment, chat_type, missed_chat_status, new_ticket, ticket_id, request_page_url, rating_grade, custom_fields, attachments)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20::jsonb, $21::jsonb)
ON CONFLICT (chat_guid) DO UPDATE SET message_id = EXCLUDED.message_id, session_id = EXCLUDED.session_id, site_id = EXCLUDED.site_id, agent_ids = EXCLUDED.agent_ids, started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, visitor_name = EXCLUDED.visitor_name, visitor_company = EXCLUDED.visitor_company, visitor_phone = EXCLUDED.visitor_phone, visitor_email = EXCLUDED.visitor_email, department_id = EXCLUDED.department_id, agent_comment = EXCLUDED.agent_comment, chat_type = EXCLUDED.chat_type, missed_chat_status = EXCLUDED.missed_chat_status, new_ticket = EXCLUDED.new_ticket, ticket_id = EXCLUDED.ticket_id, request_page_url = EXCLUDED.request_page_url, rating_grade = EXCLUDED.rating_grade, custom_fields = EXCLUDED.custom_fields, attachments = EXCLUDED.attachments, stored_at = now()";

const CHAT_MESSAGES: &str = "INSERT INTO chat_messages (chat_guid, id, chat_action, sender_type, sender_name, message, sent_at)
SELECT DISTINCT ON (m.\"Id\") $1, m.\"Id\", m.\"ChatAction\", m.\"SenderType\", m.\"SenderName\", m.\"Message\", m.\"Time\"
FROM jsonb_to_recordset($2::jsonb) AS m(\"Id\" integer, \"ChatAction\" integer, \"SenderType\" integer, \"SenderName\" text, \"Message\" text, \"Time\" timestamptz)
ON CONFLICT (chat_guid, id) DO UPDATE SET chat_action = EXCLUDED.chat_action, sender_type = EXCLUDED.sender_type, sender_name = EXCLUDED.sender_name, message = EXCLUDED.message, sent_at = EXCLUDED.sent_at";

const CHAT_TRANSFERS: &str = "INSERT INTO chat_transfers (chat_guid, seq, transferred_at, transfer_type, from_id, to_id, succeeded)
SELECT $1, t.seq::integer, (t.e->>'Time')::timestamptz, (t.e->>'TransferType')::integer, (t.e->>'FromId')::integer, (t.e->>'ToId')::integer, (t.e->>'IfSuccess')::boolean
FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(e, seq)
ON CONFLICT (chat_guid, seq) DO UPDATE SET transferred_at = EXCLUDED.transferred_at, transfer_type = EXCLUDED.transfer_type, from_id = EXCLUDED.from_id, to_id = EXCLUDED.to_id, succeeded = EXCLUDED.succeeded";

/// The statements that store one message, in order; all of them belong in
/// one transaction.
pub fn plan(
    message_id: &str,
    message_type: &str,
    body: &str,
) -> Result<Vec<Statement>, PayloadError> {
    let payload = Payload::parse(message_type, body)?;
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let id = || Param::from(message_id);
    let one = |sql: &'static str, params: Vec<Param>| vec![Statement { sql, params }];
    Ok(match &payload {
        Payload::ChatQueued(p) => one(
            "INSERT INTO chat_queue_logs (message_id, site_id, department_id, number_of_queue, log_time) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                p.site_id.into(),
                p.department_id.into(),
                p.number_of_queue.into(),
                p.log_time.as_str().into(),
            ],
        ),
        Payload::ChatStarted(p) => one(
            "INSERT INTO chat_starts (message_id, site_id, visitor_id, chat_or_offline_message_id) VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                p.site_id.into(),
                p.visitor_id.into(),
                p.chat_or_offline_message_id.as_str().into(),
            ],
        ),
        Payload::ChatEnded(c) => {
            let guid = || Param::from(c.chat_guid.as_str());
            vec![
                Statement {
                    sql: CHAT,
                    params: vec![
                        guid(),
                        id(),
                        c.session_id.into(),
                        c.site_id.into(),
                        list(&json, "AgentIds"),
                        c.start.as_str().into(),
                        c.end.as_str().into(),
                        c.pre_chat_name.clone().into(),
                        c.pre_chat_company.clone().into(),
                        c.pre_chat_phone.clone().into(),
                        c.pre_chat_email.clone().into(),
                        c.pre_chat_department_id.into(),
                        c.agent_comment.clone().into(),
                        c.chat_type.into(),
                        c.missed_chat_status.into(),
                        c.if_new_ticket.into(),
                        c.ticket_id.clone().into(),
                        c.request_page_url.clone().into(),
                        c.rating_grade.into(),
                        list(&json, "CustomFields"),
                        list(&json, "Attachments"),
                    ],
                },
                Statement {
                    sql: CHAT_MESSAGES,
                    params: vec![guid(), list(&json, "Messages")],
                },
                Statement {
                    sql: CHAT_TRANSFERS,
                    params: vec![guid(), list(&json, "TransferLogs")],
                },
            ]
        }
        Payload::WrapupSubmitted(w) => one(
            "INSERT INTO chat_wrapups (message_id, site_id, agent_id, chat_guid, category_id, categories, comment, submitted_at, custom_fields) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                w.site_id.into(),
                w.agent_id.into(),
                w.chat.as_str().into(),
                w.category_id.into(),
                list(&json, "CategoryList"),
                w.comment.clone().into(),
                w.submit_time.as_str().into(),
                list(&json, "CustomFields"),
            ],
        ),
        Payload::RatingSubmitted(r) => one(
            "INSERT INTO chat_ratings (chat_guid, message_id, site_id, rating_grade, rating_comment, custom_fields, custom_variables, sync_to_remote) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8) ON CONFLICT (chat_guid) DO UPDATE SET message_id = EXCLUDED.message_id, site_id = EXCLUDED.site_id, rating_grade = EXCLUDED.rating_grade, rating_comment = EXCLUDED.rating_comment, custom_fields = EXCLUDED.custom_fields, custom_variables = EXCLUDED.custom_variables, sync_to_remote = EXCLUDED.sync_to_remote, stored_at = now()",
            vec![
                r.chat_guid.as_str().into(),
                id(),
                r.site_id.into(),
                r.rating_grade.into(),
                r.rating_comment.clone().into(),
                list(&json, "CustomFields"),
                list(&json, "CustomVariables"),
                r.is_sync_chat_to_remote_server.into(),
            ],
        ),
        Payload::VisitorLanded(v) => one(
            "INSERT INTO visits (message_id, site_id, campaign_id, visit_count) VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                v.site_id.into(),
                v.campain_id.into(),
                v.visit_count.into(),
            ],
        ),
        Payload::ConversionAchieved(c) => one(
            "INSERT INTO conversions (site_id, id, message_id, conversion_id, conversion_name, visitor_id, chat_guid, department_id, conversion_value, created_at, accelerate_type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (site_id, id) DO UPDATE SET message_id = EXCLUDED.message_id, conversion_id = EXCLUDED.conversion_id, conversion_name = EXCLUDED.conversion_name, visitor_id = EXCLUDED.visitor_id, chat_guid = EXCLUDED.chat_guid, department_id = EXCLUDED.department_id, conversion_value = EXCLUDED.conversion_value, created_at = EXCLUDED.created_at, accelerate_type = EXCLUDED.accelerate_type, stored_at = now()",
            vec![
                c.site_id.into(),
                c.id.into(),
                id(),
                c.conversion_id.into(),
                c.conversion_name.clone().into(),
                c.visitor_id.into(),
                c.chat_guid.clone().into(),
                c.department_id.into(),
                c.conversion_value.into(),
                c.create_time.as_str().into(),
                c.conversion_accelerate_type.into(),
            ],
        ),
        Payload::BanAdded(b) => one(
            "INSERT INTO bans (message_id, site_id, agent_id, ban_type, ip_from_or_visitor_id, ip_to, comment) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                b.site_id.into(),
                b.agent_id.into(),
                b.ban_type.into(),
                b.ip_from_or_visitor_id.into(),
                b.ip_to.into(),
                b.comment.clone().into(),
            ],
        ),
        Payload::OfflineMessageSubmitted(m) => one(
            "INSERT INTO offline_messages (message_id, site_id, visitor_id, visitor_name, visitor_email, visitor_company, visitor_phone, session_id, ticket_id, route_to_id, route_to_type, segments, attachment_name, custom_fields, custom_variables, title, content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14::jsonb, $15::jsonb, $16, $17) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                m.site_id.into(),
                m.visitor_id.clone().into(),
                m.visitor_name.clone().into(),
                m.visitor_email.clone().into(),
                m.visitor_company.clone().into(),
                m.visitor_phone.clone().into(),
                m.session_id.into(),
                m.ticket_id.into(),
                m.route_to_id.into(),
                m.route_to_type.into(),
                list(&json, "Segments"),
                m.attachment_name.clone().into(),
                list(&json, "CustomFields"),
                list(&json, "CustomVariables"),
                m.title.clone().into(),
                m.content.clone().into(),
            ],
        ),
        Payload::AgentStatusChanged(s) => one(
            "INSERT INTO agent_status_logs (message_id, site_id, agent_id, status, changed_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                s.site_id.into(),
                s.agent_id.into(),
                s.stauts.into(),
                s.time.as_str().into(),
            ],
        ),
        Payload::AgentPreferenceChanged(p) => one(
            "INSERT INTO agent_preferences (site_id, agent_id, message_id, columns) VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (site_id, agent_id) DO UPDATE SET message_id = EXCLUDED.message_id, columns = EXCLUDED.columns, stored_at = now()",
            vec![
                p.site_id.into(),
                p.agent_id.into(),
                id(),
                list(&json, "Columns"),
            ],
        ),
        Payload::AgentChatReplied(r) => one(
            "INSERT INTO agent_replies (message_id, site_id, from_agent_id, to_agent_id, replied_at, content, attachment_guid) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                r.site_id.into(),
                r.from_agent_id.into(),
                r.to_agent_id.into(),
                r.time.as_str().into(),
                r.content.clone().into(),
                r.attachment_guid.clone().into(),
            ],
        ),
        Payload::CannedMessageUsed(c) => one(
            "INSERT INTO canned_message_uses (message_id, site_id, chat_guid, agent_id, canned_message_id, used_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                c.site_id.into(),
                c.chat_guid.as_str().into(),
                c.agent_id.into(),
                c.canned_messge_id.into(),
                c.time.as_str().into(),
            ],
        ),
        Payload::AutoInvitation(a) => one(
            "INSERT INTO auto_invitation_logs (message_id, event, site_id, campaign_id, invitation_id, set_number, accept_number, refuse_number, logged_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                message_type.to_ascii_lowercase().into(),
                a.site_id.into(),
                a.campain_id.into(),
                a.invitaion_id.into(),
                a.set_number.into(),
                a.accept_number.into(),
                a.refuse_number.into(),
                a.time.as_str().into(),
            ],
        ),
        Payload::ManualInvitation(m) => one(
            "INSERT INTO manual_invitation_logs (message_id, site_id, agent_id, status, transcript_type, transcript_id, message) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (message_id) DO NOTHING",
            vec![
                id(),
                m.site_id.into(),
                m.agent_id.into(),
                m.status.into(),
                m.transcript_type.into(),
                m.transcript_id.into(),
                m.message.clone().into(),
            ],
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample body of `message_type`, from the demo's events.
    fn sample_body(message_type: &str) -> String {
        let wanted = match message_type {
            "autoinvitation.accepted" | "autoinvitation.refused" => "autoinvitation.log",
            t => t,
        };
        include_str!("../../../demo/events.jsonl")
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .find(|e| e["type"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(wanted))
            .map(|e| e["body"].to_string())
            .unwrap_or_else(|| panic!("no sample of {message_type}"))
    }

    #[test]
    fn every_message_type_has_a_plan_with_numbered_parameters() {
        for t in crate::MESSAGE_TYPES {
            let body = sample_body(t);
            let plan = plan("m-1", t, &body).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(!plan.is_empty(), "{t}");
            for s in &plan {
                let highest = (1..=s.params.len())
                    .rev()
                    .find(|n| s.sql.contains(&format!("${n}")))
                    .unwrap_or(0);
                assert_eq!(highest, s.params.len(), "{t}: {}", s.sql);
                assert!(!s.sql.contains(&format!("${}", s.params.len() + 1)), "{t}");
            }
        }
    }
}
