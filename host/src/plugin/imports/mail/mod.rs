//! Mail for plugins: `switchyard:plugin/mail`, through a queue's SMTP relay.
//!
//! Each queue granted a relay (`[queues.X.mail]`) has a pool of at most
//! `pool` open connections (`pool = 0`: a connection per mail), which the
//! host opens itself (`smtp`). The host writes the mail itself (addresses parsed, headers
//! checked for injection, bodies MIME-encoded) from the plugin's fields,
//! within the grant's bounds: senders, recipients, size, mails per call.
//! The relay's answer decides the error: 5xx permanent, 4xx and an
//! unreachable relay transient.
//!
//! - [`relay`]: a queue's relay, the mail written from the plugin's
//!   fields, its bounds;
//! - [`smtp`]: the connections to the relay, opened by the host, pooled.

pub mod relay;
// lettre marks `AsyncNetworkStream` deprecated ("not meant to be made
// public"), yet it is lettre 0.11's only way to put its TLS (the same
// certificate checks as its STARTTLS) on a socket the host opened.
#[allow(deprecated)]
pub mod smtp;

pub use relay::{CallMail, Email, MailError, QueueMail};

use crate::plugin::HostState;
use crate::plugin::bindings::v0_2::switchyard::plugin::mail;

// The host side of `switchyard:plugin/mail@0.2.0`.

impl mail::Host for HostState {
    async fn send(&mut self, message: mail::Email) -> Result<String, mail::Error> {
        let email = Email {
            from: message.from,
            to: message.to,
            cc: message.cc,
            bcc: message.bcc,
            reply_to: message.reply_to,
            subject: message.subject,
            text: message.text,
            html: message.html,
            headers: message.headers,
        };
        self.mail.send(email).await.map_err(|e| {
            tracing::debug!(queue = %self.queue, msg_id = %self.message_id, error = %self.secrets.mask(&e.to_string()), "A plugin's mail was not sent.");
            match e {
            MailError::NotGranted => {
                crate::events::denied(
                    &self.metrics,
                    &self.queue,
                    crate::kinds::Capability::Mail,
                    "no [mail] grant",
                );
                mail::Error::NotGranted
            }
            MailError::Invalid(s) => mail::Error::Invalid(s),
            MailError::Permanent(s) => mail::Error::Permanent(s),
            MailError::Transient(s) => mail::Error::Transient(s),
        }})
    }
}
