//! Routing: which queues an ingress entry fans out to, or why it cannot be
//! routed. Pure: no Redis here.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::message::{Fields, ID_FIELD, Message, TYPE_FIELD};

/// The routing table of `queues.toml`: message type (lower-cased) to target
/// queues.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, Vec<String>>,
}

/// What to do with one ingress entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add `fields` to each target queue's stream.
    Fanout {
        message_id: String,
        message_type: String,
        queues: Vec<String>,
        fields: Fields,
    },
    /// The entry can never be handled: dead-letter it with this reason.
    DeadLetter { reason: String },
}

impl Router {
    pub fn new(config: &Config) -> Self {
        Router {
            routes: config.routes.clone(),
        }
    }

    /// The queues a message type fans out to. Message types match without
    /// regard to case, as the design's routing table (a SQL Server lookup)
    /// did: producers send `offlineMessage.submitted` for
    /// `offlinemessage.submitted`.
    pub fn targets(&self, message_type: &str) -> Option<&[String]> {
        self.routes
            .get(&message_type.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// Decides what happens to one entry. The copy each queue receives holds
    /// the producer's fields unchanged, plus `type` and `id` when the producer
    /// named them the CAP way or left the id out, so that every queue sees
    /// the same message id.
    pub fn decide(&self, entry_id: &str, fields: &Fields) -> Decision {
        let message = match Message::parse(entry_id, fields) {
            Ok(m) => m,
            Err(e) => {
                return Decision::DeadLetter {
                    reason: e.to_string(),
                };
            }
        };
        let Some(queues) = self.targets(&message.message_type) else {
            return Decision::DeadLetter {
                reason: format!("no route for message type {:?}", message.message_type),
            };
        };
        let mut out = fields.clone();
        let has = |name: &str| fields.iter().any(|(k, _)| k == name.as_bytes());
        if !has(TYPE_FIELD) {
            out.push((TYPE_FIELD.into(), message.message_type.clone().into_bytes()));
        }
        if !has(ID_FIELD) {
            out.push((ID_FIELD.into(), message.id.clone().into_bytes()));
        }
        Decision::Fanout {
            message_id: message.id,
            message_type: message.message_type,
            queues: queues.to_vec(),
            fields: out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut routes = BTreeMap::new();
        routes.insert("chat.ended".to_string(), vec!["A".into(), "B".into()]);
        routes.insert("offlinemessage.submitted".to_string(), vec!["B".into()]);
        Router { routes }
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Entry fields, and the queues they go to or the start of the reason
    /// they are dead-lettered.
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<&'a [&'a str], &'a str>);

    #[test]
    fn table() {
        let r = router();
        let cases: &[Case] = &[
            (&[("type", "chat.ended"), ("body", "{}")], Ok(&["A", "B"])),
            (&[("type", "CHAT.Ended"), ("body", "{}")], Ok(&["A", "B"])),
            (
                &[("type", "offlineMessage.submitted"), ("body", "{}")],
                Ok(&["B"]),
            ),
            (
                &[("cap-msg-name", "chat.ended"), ("body", "{}")],
                Ok(&["A", "B"]),
            ),
            (
                &[("type", "chat.started"), ("body", "{}")],
                Err("no route for message type \"chat.started\""),
            ),
            (&[("body", "{}")], Err("missing field `type`")),
            (
                &[("type", "chat.ended"), ("body", "nope")],
                Err("body is not valid JSON"),
            ),
        ];
        for (input, expected) in cases {
            let got = r.decide("5-0", &fields(input));
            match (expected, &got) {
                (Ok(want), Decision::Fanout { queues, .. }) => {
                    assert_eq!(queues, want, "{input:?}")
                }
                (Err(want), Decision::DeadLetter { reason }) => {
                    assert!(reason.starts_with(want), "{input:?}: {reason}")
                }
                _ => panic!("{input:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_copy_carries_the_type_and_id_every_queue_sees() {
        let d = router().decide(
            "5-0",
            &fields(&[("cap-msg-name", "chat.ended"), ("body", "{}"), ("x", "1")]),
        );
        let Decision::Fanout {
            fields: out,
            message_id,
            ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(message_id, "5-0");
        assert_eq!(
            out,
            fields(&[
                ("cap-msg-name", "chat.ended"),
                ("body", "{}"),
                ("x", "1"),
                ("type", "chat.ended"),
                ("id", "5-0"),
            ])
        );
    }
}
