//! The Persistence queue's handler: every chat event is stored.
//!
//! It parses the payload each message type carries in the design and rejects
//! what does not parse or is invalid (the design's Error queue rule: data
//! that is wrong never succeeds, so it is not retried). Until the host grants
//! a database capability, the write it would make is visible in its log:
//! the table and a summary of the row, keyed by the message id so that a
//! redelivered message overwrites rather than duplicates.
//!
//! Config: `database` (a name, for the log).

wit_bindgen::generate!({ path: "../../wit/versions/0.1.0", world: "plugin" });

use chat_events::Payload;
use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::{config, log};

struct Persistence;

/// The table each message type is stored in.
fn table(payload: &Payload) -> &'static str {
    match payload {
        Payload::ChatQueued(_) => "t_chat_queue_log",
        Payload::ChatStarted(_) => "t_chat_start",
        Payload::ChatEnded(_) => "t_chat",
        Payload::WrapupSubmitted(_) => "t_chat_wrapup",
        Payload::RatingSubmitted(_) => "t_chat_rating",
        Payload::VisitorLanded(_) => "t_visit_log",
        Payload::ConversionAchieved(_) => "t_conversion_log",
        Payload::BanAdded(_) => "t_ban",
        Payload::OfflineMessageSubmitted(_) => "t_offline_message",
        Payload::AgentStatusChanged(_) => "t_agent_status_log",
        Payload::AgentPreferenceChanged(_) => "t_agent_preference",
        Payload::AgentChatReplied(_) => "t_agent_chat",
        Payload::CannedMessageUsed(_) => "t_canned_message_log",
        Payload::AutoInvitation(_) => "t_auto_invitation_log",
        Payload::ManualInvitation(_) => "t_manual_invitation_log",
    }
}

impl Guest for Persistence {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::Reject(e.to_string()))?;
        let database = config::get("database").unwrap_or_else(|| "chat".into());
        log::log(
            log::Level::Info,
            &format!(
                "upsert {database}.{} key={} site={}: {}",
                table(&payload),
                message.id,
                payload.site_id(),
                payload.summary()
            ),
        );
        Ok(())
    }
}

export!(Persistence);
