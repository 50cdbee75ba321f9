//! The Email queue's handler: chat transcripts to visitors who asked for one,
//! and offline messages to the site's inbox.
//!
//! A payload that does not parse, or an address that is not an email
//! address, is rejected (the data is wrong). A missing `offline_inbox` in the
//! config is retried: the message is fine, the operator's fix is missing.
//! Until the host grants outbound mail, the mail it would send is logged.
//!
//! Config: `from` (sender address), `offline_inbox` (where offline messages
//! go).

wit_bindgen::generate!({ path: "../../wit/versions/0.1.0", world: "plugin" });

use chat_events::{Payload, looks_like_email};
use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::types::Retry;
use switchyard::plugin::{config, log};

struct Email;

fn send(from: &str, to: &str, subject: &str) {
    log::log(
        log::Level::Info,
        &format!("send mail from {from} to {to}: {subject:?}"),
    );
}

impl Guest for Email {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::Reject(e.to_string()))?;
        let from = config::get("from").unwrap_or_else(|| "no-reply@localhost".into());
        match payload {
            Payload::ChatEnded(chat) => match chat.pre_chat_email.as_deref().map(str::trim) {
                None | Some("") => log::log(
                    log::Level::Debug,
                    &format!(
                        "chat {} left no email address; no transcript sent",
                        chat.chat_guid
                    ),
                ),
                Some(to) if !looks_like_email(to) => {
                    return Err(Failure::Reject(format!(
                        "PreChatEmail {to:?} is not an email address"
                    )));
                }
                Some(to) => send(
                    &from,
                    to,
                    &format!("Transcript of your chat ({} messages)", chat.messages.len()),
                ),
            },
            Payload::OfflineMessageSubmitted(offline) => {
                let Some(inbox) = config::get("offline_inbox").filter(|i| !i.is_empty()) else {
                    return Err(Failure::Retry(Retry {
                        reason: "config key `offline_inbox` is not set for this queue".into(),
                        delay_ms: Some(60_000),
                    }));
                };
                send(
                    &from,
                    &inbox,
                    &format!(
                        "Offline message from {}: {}",
                        offline.visitor_email.as_deref().unwrap_or("(no email)"),
                        offline.title.as_deref().unwrap_or("(no title)")
                    ),
                );
            }
            other => {
                return Err(Failure::Reject(format!(
                    "the Email queue does not handle {} ({})",
                    message.message_type,
                    other.summary()
                )));
            }
        }
        Ok(())
    }
}

export!(Email);
