//! The Email queue's handler: chat transcripts and offline-message
//! notifications, sent through the queue's SMTP relay (`[queues.Email.mail]`).
//!
//! - `chat.ended`: the transcript to the visitor, at the `PreChatEmail` the
//!   payload holds (none, or not an address: no visitor mail, logged), and
//!   a fuller copy (the visitor's details, the agents, the rating, the
//!   agent's comment) to the site's inbox.
//! - `offlinemessage.submitted`: the visitor's message to the site's inbox,
//!   with `Reply-To` the visitor's address when it is one.
//!
//! Each mail has a text and an HTML body (payload fields escaped) and a
//! `Message-ID` derived from the message id and the mail's kind
//! (`<id.visitor@domain>`, `<id.site@domain>`, `<id.offline@domain>`), the
//! same on every redelivery. When the queue grants key-value state, a mail
//! the relay accepted is recorded (bucket `sent`, key `<id>.<kind>`) and a
//! redelivery skips it: after a transcript went to the visitor and the
//! site's copy failed, the retry sends only the site's copy. Delivery stays
//! at least once: a host that dies between the relay's answer and that
//! record sends the mail again, with the same Message-ID.
//!
//! A payload that does not parse is rejected, and so is a mail the relay
//! refuses for good (an SMTP 5xx, kept as the reason); a 4xx answer or a
//! relay that cannot be reached is retried.
//!
//! Config: `from` (the sender, `Name <address>` or `address`), `inbox` (the
//! address every site's mail goes to), `site_inboxes` (a table of site id
//! to that site's own address). A site in neither gets no site mail
//! (logged); a queue with neither waits for the operator (the message is
//! retried after a minute).

mod templates;

use chat_events::{Payload, looks_like_email};
use switchyard_plugin::mail::{self, Email};
use switchyard_plugin::{Failure, Handler, Message, config, kv, log};

use templates::{Rendered, one_line};

struct EmailQueue;

/// Where a site's mail goes: its own inbox, else the queue's `inbox`;
/// `None` for a site with none.
fn site_inbox(site: i32) -> Result<Option<String>, Failure> {
    let sites: Option<serde_json::Value> =
        config::get("site_inboxes").and_then(|t| serde_json::from_str(&t).ok());
    if let Some(inbox) = sites.as_ref().and_then(|s| s[site.to_string()].as_str()) {
        return Ok(Some(inbox.trim().to_owned()));
    }
    match config::get("inbox").filter(|i| !i.trim().is_empty()) {
        Some(inbox) => Ok(Some(inbox.trim().to_owned())),
        None if sites.is_some() => Ok(None),
        None => config::required("inbox").map(Some),
    }
}

/// The address in `Name <address>` or `address`.
fn address(mailbox: &str) -> &str {
    match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(start), Some(end)) if start < end => &mailbox[start + 1..end],
        _ => mailbox.trim(),
    }
}

/// `<id.kind@domain>`, the id's characters outside `[A-Za-z0-9.-_]` as `_`.
fn message_id(id: &str, kind: &str, from: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let domain = address(from)
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d);
    format!("<{id}.{kind}@{domain}>")
}

/// The record of mails the relay accepted, when the queue grants one.
struct Sent {
    bucket: Option<kv::Bucket>,
    id: String,
}

impl Sent {
    fn open(id: &str) -> Self {
        let bucket = match kv::open("sent") {
            Ok(b) => Some(b),
            Err(kv::Error::AccessDenied) => None,
            Err(e) => {
                log::warn(&format!(
                    "cannot open the record of sent mails ({}); a redelivery sends every mail again",
                    kv::error_text(&e)
                ));
                None
            }
        };
        Sent {
            bucket,
            id: id.to_owned(),
        }
    }

    fn key(&self, kind: &str) -> String {
        format!("{}.{kind}", self.id)
    }

    fn already(&self, kind: &str) -> bool {
        self.bucket
            .as_ref()
            .is_some_and(|b| b.exists(&self.key(kind)).unwrap_or(false))
    }

    fn record(&self, kind: &str, message_id: &str) {
        if let Some(b) = &self.bucket
            && let Err(e) = b.set(&self.key(kind), message_id.as_bytes())
        {
            log::warn(&format!(
                "sent {kind} mail of {} but could not record it: {}",
                self.id,
                kv::error_text(&e)
            ));
        }
    }
}

/// Sends one mail of `kind` unless a delivery before this one did.
fn send(
    sent: &Sent,
    message: &Message,
    kind: &str,
    to: String,
    reply_to: Option<String>,
    rendered: Rendered,
) -> Result<(), Failure> {
    if sent.already(kind) {
        log::debug(&format!("{kind} mail of {} was sent before", message.id));
        return Ok(());
    }
    let from = config::required("from")?;
    let id = message_id(&message.id, kind, &from);
    let mut email: Email = mail::new(&from, vec![to], &rendered.subject);
    email.reply_to = reply_to;
    email.text = Some(rendered.text);
    email.html = Some(rendered.html);
    email.headers = vec![("Message-ID".into(), id.clone())];

    mail::send(&email).map_err(|e| mail::into_failure(e, &format!("sending the {kind} mail")))?;
    sent.record(kind, &id);
    log::info(&format!("sent the {kind} mail {id}"));
    Ok(())
}

impl Handler for EmailQueue {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::reject(e.to_string()))?;
        let sent = Sent::open(&message.id);
        match payload {
            Payload::ChatEnded(chat) => {
                match chat.pre_chat_email.as_deref().map(str::trim) {
                    None | Some("") => log::debug(&format!(
                        "chat {} left no email address: no transcript to the visitor",
                        chat.chat_guid
                    )),
                    Some(to) if !looks_like_email(to) => log::warn(&format!(
                        "chat {}: PreChatEmail {:?} is not an address: no transcript to the visitor",
                        chat.chat_guid,
                        one_line(to)
                    )),
                    Some(to) => send(
                        &sent,
                        &message,
                        "visitor",
                        to.to_owned(),
                        None,
                        templates::visitor_transcript(&chat),
                    )?,
                }
                match site_inbox(chat.site_id)? {
                    Some(inbox) => send(
                        &sent,
                        &message,
                        "site",
                        inbox,
                        None,
                        templates::site_transcript(&chat),
                    )?,
                    None => log::debug(&format!(
                        "site {} has no inbox: no transcript copy",
                        chat.site_id
                    )),
                }
            }
            Payload::OfflineMessageSubmitted(offline) => {
                let Some(inbox) = site_inbox(offline.site_id)? else {
                    log::warn(&format!(
                        "site {} has no inbox (`site_inboxes`): offline message {} not sent",
                        offline.site_id, message.id
                    ));
                    return Ok(());
                };
                let reply_to = offline
                    .visitor_email
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| looks_like_email(a))
                    .map(str::to_owned);
                send(
                    &sent,
                    &message,
                    "offline",
                    inbox,
                    reply_to,
                    templates::offline_notification(&offline),
                )?;
            }
            other => {
                return Err(Failure::reject(format!(
                    "the Email queue does not handle {} ({})",
                    message.message_type,
                    other.summary()
                )));
            }
        }
        Ok(())
    }
}

switchyard_plugin::export!(EmailQueue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_safe_and_stable() {
        assert_eq!(
            message_id("1700000000000-0", "site", "Chat <no-reply@chat.example>"),
            "<1700000000000-0.site@chat.example>"
        );
        assert_eq!(
            message_id("a b<>@c/1", "visitor", "x@mail.example"),
            "<a_b___c_1.visitor@mail.example>"
        );
        assert_eq!(address("no-reply@chat.example"), "no-reply@chat.example");
    }
}
