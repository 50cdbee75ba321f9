//! The Ticket, Salesforce and Zendesk queues' handler: one plugin, three
//! queues, told apart by the `system` key of each queue's config.
//!
//! Ended chats and offline messages become tickets or cases; wrap-ups update
//! them. A payload that does not parse is rejected. Until the host grants
//! outbound HTTP, the call it would make is logged.
//!
//! Config: `system` = "ticket" | "salesforce" | "zendesk" (required).

wit_bindgen::generate!({ path: "../../wit/versions/0.1.0", world: "plugin" });

use chat_events::Payload;
use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::types::Retry;
use switchyard::plugin::{config, log};

struct CrmSync;

impl Guest for CrmSync {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::Reject(e.to_string()))?;
        let system = config::get("system").unwrap_or_default();
        let record = match system.as_str() {
            "ticket" => "ticket",
            "salesforce" => "case",
            "zendesk" => "zendesk ticket",
            other => {
                return Err(Failure::Retry(Retry {
                    reason: format!(
                        "config key `system` is {other:?}; expected ticket, salesforce or zendesk"
                    ),
                    delay_ms: Some(60_000),
                }));
            }
        };
        let action = match &payload {
            Payload::ChatEnded(chat) => match chat.ticket_id.as_deref() {
                Some(id) if !id.is_empty() => format!("attach transcript to {record} {id}"),
                _ => format!("create {record} from chat {}", chat.chat_guid),
            },
            Payload::OfflineMessageSubmitted(offline) => format!(
                "create {record} from offline message {:?}",
                offline.title.as_deref().unwrap_or("")
            ),
            Payload::WrapupSubmitted(w) => format!(
                "set category {} on the {record} of chat {}",
                w.category_id, w.chat
            ),
            other => {
                return Err(Failure::Reject(format!(
                    "{system} sync does not handle {} ({})",
                    message.message_type,
                    other.summary()
                )));
            }
        };
        log::log(
            log::Level::Info,
            &format!("{system}: {action} (external id {})", message.id),
        );
        Ok(())
    }
}

export!(CrmSync);
