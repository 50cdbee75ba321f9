//! `publish`: follow-up messages, held in the call's outbox and sent with
//! the delivery's ack only.

use std::sync::Arc;

use crate::config::PublishGrant;
use crate::message::{BODY_FIELD, HOPS_HEADER, ID_FIELD, MAX_NAME, Published, TYPE_FIELD};
use crate::plugin::HostState;
use crate::plugin::bindings::v0_2;

/// What a queue lets its plugin publish, and the delivery that publishes.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    pub grant: Arc<PublishGrant>,
    /// The largest message that may be published (the ingress bound).
    pub max_bytes: usize,
    /// The delivery's message id and hops.
    pub parent_id: String,
    pub parent_hops: u32,
    pub messages: Vec<Published>,
}

/// Why a message cannot be published; its text is what the plugin gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefusal {
    /// The queue's grant does not name the message type.
    #[error("the queue may not publish {message_type:?} (queues.{queue}.publish)")]
    NotGranted { queue: String, message_type: String },
    /// The call published as many as its grant allows.
    #[error("a call may publish at most {max} messages (queues.{queue}.max_publish_per_call)")]
    TooMany { queue: String, max: u32 },
    /// The message itself is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl PublishRefusal {
    /// Whether the queue's grant refused it (rather than the message being
    /// wrong).
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            PublishRefusal::NotGranted { .. } | PublishRefusal::TooMany { .. }
        )
    }
}

impl Outbox {
    /// Holds a message for publication, or says why it cannot be.
    fn publish(
        &mut self,
        queue: &str,
        message_type: String,
        body: String,
        headers: Vec<(String, String)>,
    ) -> Result<String, PublishRefusal> {
        let invalid = |why: String| Err(PublishRefusal::Invalid(why));
        let message_type = message_type.trim().to_owned();
        if message_type.is_empty() || message_type.len() > MAX_NAME {
            return invalid(format!("a message type is 1 to {MAX_NAME} bytes"));
        }
        if !self.grant.allows(&message_type) {
            return Err(PublishRefusal::NotGranted {
                queue: queue.to_owned(),
                message_type,
            });
        }
        if self.messages.len() as u32 >= self.grant.max_per_call {
            return Err(PublishRefusal::TooMany {
                queue: queue.to_owned(),
                max: self.grant.max_per_call,
            });
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_err() {
            return invalid("the body is not valid JSON".into());
        }
        let reserved = [
            TYPE_FIELD,
            ID_FIELD,
            BODY_FIELD,
            HOPS_HEADER,
            "cap-msg-name",
            "cap-msg-id",
        ];
        if let Some((name, _)) = headers
            .iter()
            .find(|(n, _)| reserved.contains(&n.as_str()) || n.starts_with("dead-"))
        {
            return invalid(format!("the header {name:?} is the host's to set"));
        }
        let id = published_id(&self.parent_id, queue, self.messages.len() + 1);
        let mut headers = headers;
        headers.push((HOPS_HEADER.to_owned(), (self.parent_hops + 1).to_string()));
        let published = Published {
            id: id.clone(),
            message_type,
            body,
            headers,
        };
        let bytes: usize = published
            .fields()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if bytes > self.max_bytes {
            return invalid(format!(
                "the message is {bytes} bytes, more than the ingress takes ({} bytes)",
                self.max_bytes
            ));
        }
        self.messages.push(published);
        Ok(id)
    }
}

/// The id of the `n`th message a queue's delivery of `parent` publishes:
/// `<parent>/<queue>/<n>`. The same for every redelivery (a handler that
/// drops repeats by id recognises one), and different for each queue that
/// handles the parent, so two queues' follow-ups of one message are never
/// taken for repeats of each other. A parent id too long for that (a long
/// chain of publications) is replaced by its hash.
pub fn published_id(parent: &str, queue: &str, n: usize) -> String {
    let id = format!("{parent}/{queue}/{n}");
    if id.len() <= MAX_NAME {
        return id;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(parent.as_bytes());
    let hash: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hash}/{queue}/{n}")
}

impl v0_2::switchyard::plugin::publish::Host for HostState {
    fn publish(
        &mut self,
        message_type: String,
        body: String,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        let queue = self.queue.clone();
        self.outbox
            .publish(&queue, message_type, body, headers)
            .map_err(|refusal| {
                if refusal.is_denial() {
                    crate::events::denied(
                        &self.metrics,
                        &queue,
                        crate::kinds::Capability::Publish,
                        &refusal.to_string(),
                    );
                }
                refusal.to_string()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(types: &[&str]) -> Outbox {
        Outbox {
            grant: Arc::new(PublishGrant {
                types: types.iter().map(|t| t.to_string()).collect(),
                max_per_call: 2,
            }),
            max_bytes: 200,
            parent_id: "m-1".into(),
            parent_hops: 3,
            messages: Vec::new(),
        }
    }

    #[test]
    fn published_ids_name_the_queue_and_stay_bounded() {
        assert_eq!(published_id("m-1", "Email", 2), "m-1/Email/2");
        let long = "x".repeat(MAX_NAME);
        let id = published_id(&long, "Email", 1);
        assert!(id.len() <= MAX_NAME, "{id}");
        assert_eq!(id, published_id(&long, "Email", 1));
        assert_ne!(id, published_id(&format!("{long}y"), "Email", 1));
        assert!(id.ends_with("/Email/1"), "{id}");
    }

    #[test]
    fn publishing_is_granted_bounded_and_numbered() {
        let mut o = outbox(&["chat.saved"]);
        assert_eq!(
            o.publish(
                "Q",
                "Chat.Saved".into(),
                "{}".into(),
                vec![("k".into(), "v".into())]
            ),
            Ok("m-1/Q/1".into())
        );
        assert_eq!(
            o.messages[0].headers,
            [
                ("k".to_string(), "v".to_string()),
                (HOPS_HEADER.to_string(), "4".to_string())
            ]
        );
        assert_eq!(
            o.publish("Q", "other".into(), "{}".into(), vec![]),
            Err(PublishRefusal::NotGranted {
                queue: "Q".into(),
                message_type: "other".into()
            })
        );
        assert_eq!(
            o.publish("Q", "chat.saved".into(), "nope".into(), vec![]),
            Err(PublishRefusal::Invalid("the body is not valid JSON".into()))
        );
        assert_eq!(
            o.publish(
                "Q",
                "chat.saved".into(),
                "{}".into(),
                vec![(HOPS_HEADER.into(), "0".into())]
            ),
            Err(PublishRefusal::Invalid(
                "the header \"switchyard-hops\" is the host's to set".into()
            ))
        );
        let big = format!("\"{}\"", "x".repeat(300));
        assert!(
            o.publish("Q", "chat.saved".into(), big, vec![])
                .unwrap_err()
                .to_string()
                .contains("more than the ingress takes")
        );
        assert_eq!(
            o.publish("Q", "chat.saved".into(), "[]".into(), vec![]),
            Ok("m-1/Q/2".into())
        );
        let too_many = o
            .publish("Q", "chat.saved".into(), "[]".into(), vec![])
            .unwrap_err();
        assert!(too_many.is_denial());
        assert_eq!(
            too_many.to_string(),
            "a call may publish at most 2 messages (queues.Q.max_publish_per_call)"
        );
    }
}
