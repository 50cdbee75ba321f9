//! The chat server's message types and their payloads.
//!
//! Each payload is the JSON the chat server's C# producer writes with
//! Json.NET's defaults: property names exactly as declared in the design
//! (PascalCase, with the design's own spellings such as `Stauts`,
//! `CampainId` and `visitorId`), dates as ISO 8601 strings, nulls for absent
//! strings. Fields a handler relies on are required and typed; the rest are
//! optional, and unknown fields are ignored so the producer can add fields
//! without breaking handlers.

pub mod store;

use std::fmt;

use serde::Deserialize;

/// Every message type of the design, lower-cased.
pub const MESSAGE_TYPES: &[&str] = &[
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
    "manualinvitation.log",
    "autoinvitation.accepted",
    "autoinvitation.refused",
];

/// A parsed payload.
#[derive(Debug, Clone)]
pub enum Payload {
    ChatQueued(ChatQueueLog),
    ChatStarted(ChatStart),
    ChatEnded(Box<Chat>),
    WrapupSubmitted(Wrapup),
    RatingSubmitted(Rating),
    VisitorLanded(VisitLog),
    ConversionAchieved(ConversionLog),
    BanAdded(Ban),
    OfflineMessageSubmitted(Box<OfflineMessage>),
    AgentStatusChanged(AgentStatusLog),
    AgentPreferenceChanged(SavePreference),
    AgentChatReplied(AgentReplied),
    CannedMessageUsed(CannedMessage),
    /// `autoinvitation.log`, `.accepted` and `.refused` share one payload.
    AutoInvitation(AutoInvitationLog),
    ManualInvitation(ManualInvitationLog),
}

/// Why a payload was not accepted. Every variant is a data error: the same
/// body will never parse, so a handler rejects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    UnknownType(String),
    Shape { message_type: String, error: String },
    Invalid { message_type: String, error: String },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            PayloadError::Shape {
                message_type,
                error,
            } => write!(f, "{message_type} payload does not parse: {error}"),
            PayloadError::Invalid {
                message_type,
                error,
            } => write!(f, "{message_type} payload is invalid: {error}"),
        }
    }
}

impl Payload {
    /// Parses and checks the body of a message of `message_type` (matched
    /// without regard to case).
    pub fn parse(message_type: &str, body: &str) -> Result<Payload, PayloadError> {
        let t = message_type.to_ascii_lowercase();
        fn de<T: for<'de> Deserialize<'de>>(t: &str, body: &str) -> Result<T, PayloadError> {
            serde_json::from_str(body).map_err(|e| PayloadError::Shape {
                message_type: t.to_owned(),
                error: e.to_string(),
            })
        }
        let payload = match t.as_str() {
            "chat.queued" => Payload::ChatQueued(de(&t, body)?),
            "chat.started" => Payload::ChatStarted(de(&t, body)?),
            "chat.ended" => Payload::ChatEnded(de(&t, body)?),
            "chat.wrapup.submitted" => Payload::WrapupSubmitted(de(&t, body)?),
            "chat.rating.submitted" => Payload::RatingSubmitted(de(&t, body)?),
            "visitor.landed" => Payload::VisitorLanded(de(&t, body)?),
            "visitor.conversion.achieved" => Payload::ConversionAchieved(de(&t, body)?),
            "ban.added" => Payload::BanAdded(de(&t, body)?),
            "offlinemessage.submitted" => Payload::OfflineMessageSubmitted(de(&t, body)?),
            "agent.status.changed" => Payload::AgentStatusChanged(de(&t, body)?),
            "agent.preference.changed" => Payload::AgentPreferenceChanged(de(&t, body)?),
            "agentchat.replied" => Payload::AgentChatReplied(de(&t, body)?),
            "cannedmessage.used" => Payload::CannedMessageUsed(de(&t, body)?),
            "autoinvitation.log" | "autoinvitation.accepted" | "autoinvitation.refused" => {
                Payload::AutoInvitation(de(&t, body)?)
            }
            "manualinvitation.log" => Payload::ManualInvitation(de(&t, body)?),
            _ => return Err(PayloadError::UnknownType(message_type.to_owned())),
        };
        payload.validate().map_err(|error| PayloadError::Invalid {
            message_type: t,
            error,
        })?;
        Ok(payload)
    }

    /// The site the event belongs to.
    pub fn site_id(&self) -> i32 {
        match self {
            Payload::ChatQueued(p) => p.site_id,
            Payload::ChatStarted(p) => p.site_id,
            Payload::ChatEnded(p) => p.site_id,
            Payload::WrapupSubmitted(p) => p.site_id,
            Payload::RatingSubmitted(p) => p.site_id,
            Payload::VisitorLanded(p) => p.site_id,
            Payload::ConversionAchieved(p) => p.site_id,
            Payload::BanAdded(p) => p.site_id,
            Payload::OfflineMessageSubmitted(p) => p.site_id,
            Payload::AgentStatusChanged(p) => p.site_id,
            Payload::AgentPreferenceChanged(p) => p.site_id,
            Payload::AgentChatReplied(p) => p.site_id,
            Payload::CannedMessageUsed(p) => p.site_id,
            Payload::AutoInvitation(p) => p.site_id,
            Payload::ManualInvitation(p) => p.site_id,
        }
    }

    /// A one-line description for logs.
    pub fn summary(&self) -> String {
        match self {
            Payload::ChatQueued(p) => format!(
                "department {} had {} visitors queued at {}",
                p.department_id, p.number_of_queue, p.log_time
            ),
            Payload::ChatStarted(p) => format!(
                "chat {} started for visitor {}",
                p.chat_or_offline_message_id, p.visitor_id
            ),
            Payload::ChatEnded(p) => format!(
                "chat {} (session {}) with {} messages, agents {:?}",
                p.chat_guid,
                p.session_id,
                p.messages.len(),
                p.agent_ids
            ),
            Payload::WrapupSubmitted(p) => {
                format!("wrap-up of chat {} by agent {}", p.chat, p.agent_id)
            }
            Payload::RatingSubmitted(p) => {
                format!("rating {} for chat {}", p.rating_grade, p.chat_guid)
            }
            Payload::VisitorLanded(p) => {
                format!("{} visits for campaign {}", p.visit_count, p.campain_id)
            }
            Payload::ConversionAchieved(p) => format!(
                "conversion {} worth {} by visitor {}",
                p.conversion_id, p.conversion_value, p.visitor_id
            ),
            Payload::BanAdded(p) => format!("ban type {} by agent {}", p.ban_type, p.agent_id),
            Payload::OfflineMessageSubmitted(p) => format!(
                "offline message {:?} from {}",
                p.title.as_deref().unwrap_or(""),
                p.visitor_email.as_deref().unwrap_or("(no email)")
            ),
            Payload::AgentStatusChanged(p) => {
                format!("agent {} status {} at {}", p.agent_id, p.stauts, p.time)
            }
            Payload::AgentPreferenceChanged(p) => format!("preferences of agent {}", p.agent_id),
            Payload::AgentChatReplied(p) => {
                format!(
                    "agent {} replied to agent {}",
                    p.from_agent_id, p.to_agent_id
                )
            }
            Payload::CannedMessageUsed(p) => format!(
                "canned message {} used by agent {} in chat {}",
                p.canned_messge_id, p.agent_id, p.chat_guid
            ),
            Payload::AutoInvitation(p) => format!(
                "auto invitation {} of campaign {}: {} sent, {} accepted, {} refused",
                p.invitaion_id, p.campain_id, p.set_number, p.accept_number, p.refuse_number
            ),
            Payload::ManualInvitation(p) => format!(
                "manual invitation by agent {}, status {}",
                p.agent_id, p.status
            ),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.site_id() <= 0 {
            return Err(format!("SiteId must be positive, found {}", self.site_id()));
        }
        match self {
            Payload::ChatQueued(p) => timestamp("LogTime", &p.log_time),
            Payload::ChatStarted(p) => {
                non_empty("ChatOrOfflineMessageId", &p.chat_or_offline_message_id)
            }
            Payload::ChatEnded(p) => {
                non_empty("ChatGuid", &p.chat_guid)?;
                timestamp("Start", &p.start)?;
                timestamp("End", &p.end)?;
                for m in &p.messages {
                    timestamp("Messages[].Time", &m.time)?;
                }
                Ok(())
            }
            Payload::WrapupSubmitted(p) => {
                non_empty("Chat", &p.chat)?;
                timestamp("SubmitTime", &p.submit_time)
            }
            Payload::RatingSubmitted(p) => non_empty("ChatGuid", &p.chat_guid),
            Payload::ConversionAchieved(p) => timestamp("CreateTime", &p.create_time),
            Payload::OfflineMessageSubmitted(p) => {
                if let Some(email) = &p.visitor_email
                    && !email.is_empty()
                    && !looks_like_email(email)
                {
                    return Err(format!("VisitorEmail {email:?} is not an email address"));
                }
                Ok(())
            }
            Payload::AgentStatusChanged(p) => timestamp("Time", &p.time),
            Payload::AgentChatReplied(p) => timestamp("Time", &p.time),
            Payload::CannedMessageUsed(p) => timestamp("Time", &p.time),
            Payload::AutoInvitation(p) => timestamp("Time", &p.time),
            Payload::VisitorLanded(_)
            | Payload::BanAdded(_)
            | Payload::AgentPreferenceChanged(_)
            | Payload::ManualInvitation(_) => Ok(()),
        }
    }
}

fn non_empty(name: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{name} is empty"))
    } else {
        Ok(())
    }
}

/// Checks a Json.NET date: `YYYY-MM-DDTHH:MM:SS`, optional fraction, optional
/// `Z` or offset.
fn timestamp(name: &str, value: &str) -> Result<(), String> {
    let ok = (|| {
        let b = value.as_bytes();
        if b.len() < 19 {
            return false;
        }
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let shape = digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && (b[10] == b'T' || b[10] == b' ')
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19);
        let num = |r: std::ops::Range<usize>| value[r].parse::<u32>().unwrap_or(99);
        let ranges = (1..=12).contains(&num(5..7))
            && (1..=31).contains(&num(8..10))
            && num(11..13) < 24
            && num(14..16) < 60
            && num(17..19) < 61;
        let mut rest = &value[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return false;
            }
            rest = &frac[n..];
        }
        let zone = match rest {
            "" | "Z" => true,
            r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
                r.as_bytes()[3] == b':'
                    && r[1..3]
                        .bytes()
                        .chain(r[4..].bytes())
                        .all(|c| c.is_ascii_digit())
            }
            _ => false,
        };
        shape && ranges && zone
    })();
    if ok {
        Ok(())
    } else {
        Err(format!("{name} {value:?} is not a date and time"))
    }
}

/// A deliberately loose check: one `@`, something either side, a dot in the
/// domain, no spaces.
/// A value that is present and not blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Chat {
    /// The visitor's name from the pre-chat form, if given.
    pub fn visitor_name(&self) -> Option<&str> {
        given(&self.pre_chat_name)
    }

    /// The visitor's email from the pre-chat form, if given.
    pub fn visitor_email(&self) -> Option<&str> {
        given(&self.pre_chat_email)
    }

    /// A ticket's subject for this chat.
    pub fn subject(&self) -> String {
        match self.visitor_name() {
            Some(name) => format!("Chat with {name}"),
            None => format!("Chat {}", self.chat_guid),
        }
    }

    /// The chat as text: when it ran, then one line per message,
    /// `[time] sender: text`.
    pub fn transcript(&self) -> String {
        let mut text = format!(
            "Chat {} from {} to {}\n",
            self.chat_guid, self.start, self.end
        );
        for m in &self.messages {
            let Some(body) = given(&m.message) else {
                continue;
            };
            let sender = given(&m.sender_name).unwrap_or(match m.sender_type {
                0 => "Visitor",
                1 => "Agent",
                3 => "Bot",
                _ => "System",
            });
            text.push_str(&format!("[{}] {sender}: {body}\n", m.time));
        }
        if let Some(comment) = given(&self.agent_comment) {
            text.push_str(&format!("Agent's comment: {comment}\n"));
        }
        text
    }
}

impl OfflineMessage {
    pub fn visitor_name(&self) -> Option<&str> {
        given(&self.visitor_name)
    }

    pub fn visitor_email(&self) -> Option<&str> {
        given(&self.visitor_email)
    }

    /// A ticket's subject for this message.
    pub fn subject(&self) -> String {
        match (given(&self.title), self.visitor_name()) {
            (Some(title), _) => title.to_owned(),
            (None, Some(name)) => format!("Offline message from {name}"),
            (None, None) => "Offline message".to_owned(),
        }
    }

    /// The message's text, with who left it.
    pub fn description(&self) -> String {
        let mut text = given(&self.content).unwrap_or("(no text)").to_owned();
        let from: Vec<&str> = [
            self.visitor_name(),
            self.visitor_email(),
            given(&self.visitor_company),
            given(&self.visitor_phone),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !from.is_empty() {
            text.push_str(&format!("\n\nFrom: {}", from.join(", ")));
        }
        text
    }
}

pub fn looks_like_email(s: &str) -> bool {
    let Some((user, domain)) = s.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s.contains(char::is_whitespace)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChatQueueLog {
    pub site_id: i32,
    pub department_id: i32,
    pub number_of_queue: i32,
    pub log_time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChatStart {
    pub site_id: i32,
    pub visitor_id: i32,
    pub chat_or_offline_message_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Chat {
    pub chat_guid: String,
    pub session_id: i64,
    pub site_id: i32,
    #[serde(default)]
    pub agent_ids: Vec<i32>,
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub pre_chat_name: Option<String>,
    #[serde(default)]
    pub pre_chat_company: Option<String>,
    #[serde(default)]
    pub pre_chat_phone: Option<String>,
    #[serde(default)]
    pub pre_chat_email: Option<String>,
    #[serde(default)]
    pub pre_chat_department_id: Option<i32>,
    #[serde(default)]
    pub agent_comment: Option<String>,
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub chat_type: Option<i32>,
    #[serde(default)]
    pub missed_chat_status: Option<i32>,
    #[serde(default)]
    pub if_new_ticket: Option<bool>,
    #[serde(default)]
    pub ticket_id: Option<String>,
    #[serde(default)]
    pub request_page_url: Option<String>,
    #[serde(default)]
    pub rating_grade: Option<i32>,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
    #[serde(default)]
    pub transfer_logs: Vec<ChatTransferLog>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChatMessage {
    pub id: i32,
    #[serde(default)]
    pub chat_action: Option<i32>,
    /// 0 visitor, 1 agent, 2 system, 3 chatbot.
    pub sender_type: i32,
    #[serde(default)]
    pub sender_name: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    pub time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChatTransferLog {
    pub time: String,
    pub transfer_type: i32,
    pub from_id: i32,
    pub to_id: i32,
    #[serde(default)]
    pub if_success: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomField {
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomVariable {
    #[serde(rename = "Id")]
    pub id: i32,
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Wrapup {
    pub site_id: i32,
    pub agent_id: i32,
    /// The chat's guid.
    pub chat: String,
    pub category_id: i32,
    #[serde(default)]
    pub category_list: Vec<i32>,
    #[serde(default)]
    pub comment: Option<String>,
    pub submit_time: String,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rating {
    pub site_id: i32,
    pub chat_guid: String,
    #[serde(rename = "ratingGrade")]
    pub rating_grade: i32,
    #[serde(rename = "ratingComment", default)]
    pub rating_comment: Option<String>,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
    #[serde(default)]
    pub custom_variables: Vec<CustomVariable>,
    #[serde(default)]
    pub is_sync_chat_to_remote_server: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VisitLog {
    pub site_id: i32,
    pub campain_id: i32,
    pub visit_count: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConversionLog {
    pub site_id: i32,
    pub id: i32,
    pub conversion_id: i32,
    #[serde(default)]
    pub conversion_name: Option<String>,
    pub visitor_id: i64,
    #[serde(default)]
    pub chat_guid: Option<String>,
    #[serde(default)]
    pub department_id: Option<i32>,
    pub conversion_value: f64,
    pub create_time: String,
    #[serde(default)]
    pub conversion_accelerate_type: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ban {
    pub site_id: i32,
    pub agent_id: i32,
    /// 0 visitor id, 1 ip, 2 ip range.
    pub ban_type: i32,
    pub ip_from_or_visitor_id: i64,
    #[serde(default)]
    pub ip_to: Option<i64>,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OfflineMessage {
    #[serde(rename = "visitorId", default)]
    pub visitor_id: Option<String>,
    #[serde(default)]
    pub visitor_name: Option<String>,
    #[serde(default)]
    pub visitor_email: Option<String>,
    #[serde(default)]
    pub visitor_company: Option<String>,
    #[serde(default)]
    pub visitor_phone: Option<String>,
    pub site_id: i32,
    #[serde(default)]
    pub session_id: Option<i64>,
    #[serde(default)]
    pub ticket_id: Option<i32>,
    #[serde(default)]
    pub route_to_id: Option<i32>,
    #[serde(default)]
    pub route_to_type: Option<i32>,
    #[serde(default)]
    pub segments: Vec<i32>,
    #[serde(default)]
    pub attachment_name: Option<String>,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
    #[serde(default)]
    pub custom_variables: Vec<CustomVariable>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentStatusLog {
    pub site_id: i32,
    pub agent_id: i32,
    /// Spelled so in the design.
    pub stauts: i32,
    pub time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SavePreference {
    pub site_id: i32,
    pub agent_id: i32,
    #[serde(default)]
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Column {
    pub enum_column: i32,
    pub if_visible: bool,
    pub width: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentReplied {
    pub site_id: i32,
    pub from_agent_id: i32,
    pub to_agent_id: i32,
    pub time: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub attachment_guid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CannedMessage {
    pub site_id: i32,
    pub chat_guid: String,
    pub agent_id: i32,
    /// Spelled so in the design.
    pub canned_messge_id: i32,
    pub time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutoInvitationLog {
    pub site_id: i32,
    pub campain_id: i32,
    /// Spelled so in the design.
    pub invitaion_id: i32,
    pub set_number: i32,
    pub accept_number: i32,
    pub refuse_number: i32,
    pub time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManualInvitationLog {
    pub site_id: i32,
    pub agent_id: i32,
    /// 0 missed, 1 accepted, 2 refused.
    pub status: i32,
    /// 0 chat, 1 offline message, 2 navigation.
    pub transcript_type: i32,
    pub transcript_id: i32,
    #[serde(default)]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_chat_and_rejects_broken_ones() {
        let ok = r#"{"ChatGuid":"g","SessionId":5,"SiteId":1,"AgentIds":[3],
            "Start":"2024-05-01T10:00:00","End":"2024-05-01T10:05:00.123Z",
            "Messages":[{"Id":1,"SenderType":0,"Message":"hi","Time":"2024-05-01T10:00:01+08:00"}]}"#;
        assert!(matches!(
            Payload::parse("chat.ended", ok),
            Ok(Payload::ChatEnded(_))
        ));
        let missing_guid = r#"{"SessionId":5,"SiteId":1,"Start":"2024-05-01T10:00:00","End":"2024-05-01T10:05:00"}"#;
        assert!(matches!(
            Payload::parse("chat.ended", missing_guid),
            Err(PayloadError::Shape { .. })
        ));
        let bad_date = r#"{"ChatGuid":"g","SessionId":5,"SiteId":1,"Start":"yesterday","End":"2024-05-01T10:05:00"}"#;
        assert!(matches!(
            Payload::parse("chat.ended", bad_date),
            Err(PayloadError::Invalid { .. })
        ));
    }

    #[test]
    fn a_chat_reads_as_a_ticket() {
        let body = r#"{"ChatGuid":"g","SessionId":5,"SiteId":1,"Start":"s","End":"e",
            "PreChatName":" Ana ","AgentComment":"","Messages":[
            {"Id":1,"SenderType":0,"Message":"hi","Time":"t1"},
            {"Id":2,"SenderType":1,"SenderName":"Li","Message":"hello","Time":"t2"},
            {"Id":3,"SenderType":2,"Message":" ","Time":"t3"}]}"#;
        let chat: Chat = serde_json::from_str(body).unwrap();
        assert_eq!(chat.subject(), "Chat with Ana");
        assert_eq!(
            chat.transcript(),
            "Chat g from s to e\n[t1] Visitor: hi\n[t2] Li: hello\n"
        );
        let offline: OfflineMessage =
            serde_json::from_str(r#"{"SiteId":1,"VisitorName":"Kenji","Content":"refund"}"#)
                .unwrap();
        assert_eq!(offline.subject(), "Offline message from Kenji");
        assert_eq!(offline.description(), "refund\n\nFrom: Kenji");
    }

    #[test]
    fn offline_messages_need_a_real_email_if_any() {
        let ok = r#"{"SiteId":1,"VisitorEmail":"a@b.example","Title":"t"}"#;
        assert!(Payload::parse("offlineMessage.submitted", ok).is_ok());
        let bad = r#"{"SiteId":1,"VisitorEmail":"not an email"}"#;
        assert!(Payload::parse("offlinemessage.submitted", bad).is_err());
    }

    #[test]
    fn timestamps() {
        for ok in [
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.5",
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00-05:00",
        ] {
            assert!(timestamp("t", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2024-13-01T10:00:00",
            "2024-05-01",
            "2024-05-01T10:00:00+0500",
            "2024-05-01T10:00:00.",
        ] {
            assert!(timestamp("t", bad).is_err(), "{bad}");
        }
    }
}
