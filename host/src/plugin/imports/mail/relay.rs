//! Mail for plugins: `switchyard:plugin/mail`, through a queue's SMTP relay.
//!
//! Each queue granted a relay (`[queues.X.mail]`) has a pool of at most
//! `pool` open connections (`pool = 0`: a connection per mail), which the
//! host opens itself (`smtp`). The host writes the mail itself (addresses parsed, headers
//! checked for injection, bodies MIME-encoded) from the plugin's fields,
//! within the grant's bounds: senders, recipients, size, mails per call.
//! The relay's answer decides the error: 5xx permanent, 4xx and an
//! unreachable relay transient.

use std::sync::Arc;

use anyhow::Context;
use std::time::Instant;

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::smtp::{self, Lease, Relay, RelayError};

use crate::config::MailSettings;
use crate::metrics::QueueMetrics;

/// A mail as a plugin hands it over (the contract's `email`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// Why a mail was not sent (the contract's `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("the queue has no mail relay (queues.<name>.mail)")]
    NotGranted,
    #[error("{0}")]
    Invalid(String),
    #[error("the relay refused the mail: {0}")]
    Permanent(String),
    #[error("the mail was not sent, try again later: {0}")]
    Transient(String),
}

/// Headers the host writes from the mail's fields; a plugin may not set
/// them as extra headers.
const HOST_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
];

/// A queue's relay.
pub struct QueueMail {
    queue: Arc<str>,
    settings: MailSettings,
    relay: Relay,
    /// `None` with `pool = 0`.
    pool: Option<smtp::Pool>,
    metrics: Arc<QueueMetrics>,
}

impl std::fmt::Debug for QueueMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMail")
            .field("queue", &self.queue)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl QueueMail {
    pub fn new(
        queue: &str,
        settings: MailSettings,
        metrics: Arc<QueueMetrics>,
    ) -> anyhow::Result<Self> {
        let relay = Relay::new(&settings.relay().context("smtp_url")?);
        let relay = match &settings.ca_file {
            Some(ca) => relay.trusting(&ca.pem),
            None => relay,
        };
        let pool = match settings.pool {
            0 => None,
            size => Some(smtp::pool(relay.clone(), size)?),
        };
        Ok(QueueMail {
            queue: queue.into(),
            settings,
            relay,
            pool,
            metrics,
        })
    }

    pub fn settings(&self) -> &MailSettings {
        &self.settings
    }

    /// Sends one mail; returns its Message-ID. `n` numbers the call's
    /// mails, for the Message-ID the host makes from `message_id`.
    pub async fn send(
        &self,
        email: Email,
        message_id: &str,
        n: u32,
        deadline: Instant,
    ) -> Result<String, MailError> {
        let started = Instant::now();
        let result = self.send_inner(email, message_id, n, deadline).await;
        self.metrics.timed(crate::kinds::Capability::Mail, started);
        match &result {
            Ok(_) => QueueMetrics::add(&self.metrics.mails_sent),
            Err(_) => QueueMetrics::add(&self.metrics.mails_failed),
        }
        result
    }

    async fn send_inner(
        &self,
        email: Email,
        message_id: &str,
        n: u32,
        deadline: Instant,
    ) -> Result<String, MailError> {
        let (message, id) = self.build(email, message_id, n)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MailError::Transient(
                "the call's deadline has passed".into(),
            ));
        }
        let budget = left.min(self.settings.timeout);
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        let send = async {
            match &self.pool {
                Some(pool) => {
                    let mut lease = Lease::new(pool.get().await.map_err(|e| match e {
                        deadpool::managed::PoolError::Backend(e) => e,
                        other => RelayError::Setup(other.to_string()),
                    })?);
                    lease.connection().send(&envelope, &bytes).await?;
                    lease.release();
                }
                None => {
                    let mut connection = self.relay.connect().await?;
                    connection.send(&envelope, &bytes).await?;
                    let _ = connection.quit().await;
                }
            }
            Ok::<(), RelayError>(())
        };
        match tokio::time::timeout(budget, send).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) if e.is_permanent() => Err(MailError::Permanent(e.to_string())),
            Ok(Err(e)) => Err(MailError::Transient(e.to_string())),
            Err(_) => Err(MailError::Transient(format!(
                "no answer from the relay within {}",
                humantime::format_duration(budget)
            ))),
        }
    }

    /// The mail as the relay will get it, and its Message-ID.
    fn build(
        &self,
        email: Email,
        message_id: &str,
        n: u32,
    ) -> Result<(Message, String), MailError> {
        let s = &self.settings;
        let mailbox = |what: &str, text: &str| -> Result<Mailbox, MailError> {
            text.parse::<Mailbox>().map_err(|e| {
                MailError::Invalid(format!(
                    "{what} {:?} is not an address: {e}",
                    crate::text::bounded(text, 200)
                ))
            })
        };
        let from = mailbox("from", &email.from)?;
        if !s.allows_sender(from.email.as_ref()) {
            return Err(MailError::Invalid(format!(
                "the sender {} is not in queues.{}.mail.from",
                from.email, self.queue
            )));
        }
        let recipients = email.to.len() + email.cc.len() + email.bcc.len();
        if recipients == 0 {
            return Err(MailError::Invalid("the mail has no recipient".into()));
        }
        if recipients > s.max_recipients as usize {
            return Err(MailError::Invalid(format!(
                "{recipients} recipients, more than queues.{}.mail.max_recipients ({})",
                self.queue, s.max_recipients
            )));
        }
        if email.subject.chars().any(char::is_control) {
            return Err(MailError::Invalid(
                "the subject has a control character (a line break?)".into(),
            ));
        }
        let size = email.subject.len()
            + email.text.as_ref().map_or(0, String::len)
            + email.html.as_ref().map_or(0, String::len)
            + email
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > s.max_bytes {
            return Err(MailError::Invalid(format!(
                "the mail is {size} bytes, more than queues.{}.mail.max_kib ({} KiB)",
                self.queue,
                s.max_bytes / 1024
            )));
        }

        let mut id = None;
        let mut extra = Vec::new();
        for (name, value) in email.headers {
            let lower = name.to_ascii_lowercase();
            if HOST_HEADERS.contains(&lower.as_str()) {
                return Err(MailError::Invalid(format!(
                    "the header {name:?} is written by the host from the mail's fields"
                )));
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(MailError::Invalid(format!(
                    "{:?} is not a header name",
                    crate::text::bounded(&name, 100)
                )));
            }
            if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                return Err(MailError::Invalid(format!(
                    "the header {name} has a line break in its value"
                )));
            }
            if lower == "message-id" {
                id = Some(value);
            } else {
                extra.push((name, value));
            }
        }
        let id = match id {
            Some(id) => id,
            None => derived_message_id(message_id, n, from.email.domain()),
        };

        let mut builder = Message::builder()
            .from(from)
            .subject(email.subject)
            .message_id(Some(id.clone()));
        for to in &email.to {
            builder = builder.to(mailbox("to", to)?);
        }
        for cc in &email.cc {
            builder = builder.cc(mailbox("cc", cc)?);
        }
        for bcc in &email.bcc {
            builder = builder.bcc(mailbox("bcc", bcc)?);
        }
        if let Some(reply_to) = &email.reply_to {
            builder = builder.reply_to(mailbox("reply-to", reply_to)?);
        }
        let built = match (email.text, email.html) {
            (Some(text), Some(html)) => {
                builder.multipart(MultiPart::alternative_plain_html(text, html))
            }
            (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
            (None, None) => {
                return Err(MailError::Invalid(
                    "the mail has neither a text nor an HTML body".into(),
                ));
            }
        };
        let mut message = built.map_err(|e| MailError::Invalid(e.to_string()))?;
        for (name, value) in extra {
            let name = HeaderName::new_from_ascii(name)
                .map_err(|e| MailError::Invalid(format!("a header name: {e}")))?;
            message
                .headers_mut()
                .insert_raw(HeaderValue::new(name, value));
        }
        Ok((message, id))
    }
}

/// `<message id, made safe>.<n>@<domain>`: the same on every redelivery
/// of the message, so that mail systems can recognise a repeat.
pub fn derived_message_id(message_id: &str, n: u32, domain: &str) -> String {
    let local: String = message_id
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let local = local.trim_matches('.');
    let local = if local.is_empty() { "message" } else { local };
    format!("<{local}.{n}@{domain}>")
}

/// The mail state of one call: the queue's relay, the call's deadline,
/// the message it runs for, and the mails it sent.
#[derive(Debug, Default)]
pub struct CallMail {
    pub queue: Option<Arc<QueueMail>>,
    pub deadline: Option<Instant>,
    pub message_id: String,
    pub sent: u32,
}

impl CallMail {
    pub async fn send(&mut self, email: Email) -> Result<String, MailError> {
        let queue = self.queue.clone().ok_or(MailError::NotGranted)?;
        if self.sent >= queue.settings.max_per_call {
            return Err(MailError::Invalid(format!(
                "a call may send at most {} mails (queues.{}.mail.max_per_call)",
                queue.settings.max_per_call, queue.queue
            )));
        }
        self.sent += 1;
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        queue
            .send(email, &self.message_id, self.sent, deadline)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_safe() {
        assert_eq!(
            derived_message_id("c-8f2a-ended", 1, "chat.example"),
            "<c-8f2a-ended.1@chat.example>"
        );
        assert_eq!(
            derived_message_id("1700000000000-0/2 <x>\r\n", 2, "d.example"),
            "<1700000000000-0/2__x___.2@d.example>"
        );
    }
}
