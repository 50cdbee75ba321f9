//! Routing: which queues an ingress entry fans out to, or why it cannot be
//! routed. Pure: no Redis here.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, IngressSettings};
use crate::message::{
    BODY_FIELD, Fields, ID_FIELD, MAX_FIELDS, Malformed, Message, TYPE_FIELD, entry_bytes,
};
use crate::reason::{DeadReason, SizeBound};
use crate::redis::read::ReadEntry;
use crate::schema::{self, PayloadSchema};

/// The routing of `queues.toml`: message type (lower-cased) to target
/// queues, and the size bounds of the ingress stream and of each queue.
#[derive(Debug, Clone)]
pub struct Router {
    routes: BTreeMap<String, Vec<String>>,
    /// The payload checks of the message types routed with `validate = true`.
    schemas: BTreeMap<String, Arc<PayloadSchema>>,
    /// How the ingress stream is read.
    pub ingress: IngressSettings,
    /// Each queue's largest entry, in bytes.
    queue_max_entry: BTreeMap<String, usize>,
}

/// What to do with one ingress entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Add the entry's fields, with `edits`, to each of `queues`' streams;
    /// dead-letter the message for each of `refused`.
    Fanout {
        message_id: String,
        message_type: String,
        queues: Vec<String>,
        refused: Vec<QueueRefusal>,
        /// The entry's own fields.
        fields: &'a Fields,
        edits: CopyEdits,
    },
    /// The entry can never be handled: dead-letter it with this reason.
    DeadLetter { reason: DeadReason },
}

/// A queue the message is routed to but cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRefusal {
    pub queue: String,
    pub reason: DeadReason,
}

impl Router {
    pub fn new(config: &Config) -> Self {
        Router {
            routes: config.routes.clone(),
            schemas: config
                .validated
                .iter()
                .filter_map(|t| Some((t.clone(), schema::for_type(t)?)))
                .collect(),
            ingress: config.ingress.clone(),
            queue_max_entry: config
                .queues
                .values()
                .map(|q| (q.name.clone(), q.max_entry_bytes))
                .collect(),
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

    /// Decides what happens to one entry as it was read: an entry over the
    /// ingress bounds is dead-lettered with its size.
    pub fn decide_read<'a>(&self, read: &'a ReadEntry) -> Decision<'a> {
        match read {
            ReadEntry::Whole { entry, .. } => self.decide(&entry.id, &entry.fields),
            ReadEntry::TooLarge { bytes, fields, .. } => Decision::DeadLetter {
                reason: self.oversized(*bytes, *fields),
            },
        }
    }

    fn oversized(&self, bytes: u64, fields: u64) -> DeadReason {
        if fields > MAX_FIELDS as u64 {
            DeadReason::TooManyFields { fields }
        } else {
            DeadReason::TooLarge {
                bytes,
                bound: SizeBound::Ingress(self.ingress.max_entry_bytes),
            }
        }
    }

    /// Decides what happens to one entry. The copy each queue receives holds
    /// the producer's fields unchanged, plus `type` and `id` when the producer
    /// named them the CAP way or left the id out (or empty), so that every
    /// queue sees the same message id. The bounds apply to the copy as
    /// queues receive it, those fields included, so an entry within the
    /// ingress bound fits every queue left at the default. A queue whose
    /// `max_entry_kib` the copy exceeds gets a dead letter instead.
    pub fn decide<'a>(&self, entry_id: &str, fields: &'a Fields) -> Decision<'a> {
        if fields.len() > MAX_FIELDS {
            return Decision::DeadLetter {
                reason: self.oversized(entry_bytes(fields) as u64, fields.len() as u64),
            };
        }
        let message = match Message::check(entry_id, fields) {
            Ok(m) => m,
            Err(e) => return Decision::DeadLetter { reason: e.into() },
        };
        let Some(targets) = self.targets(&message.message_type) else {
            return Decision::DeadLetter {
                reason: DeadReason::NoRoute {
                    message_type: message.message_type,
                },
            };
        };
        if let Some(schema) = self.schemas.get(&message.message_type.to_ascii_lowercase())
            && let Some(body) = fields.iter().find(|(k, _)| k == BODY_FIELD.as_bytes())
            && let Err(errors) = schema.check(&body.1)
        {
            return Decision::DeadLetter {
                reason: Malformed::DoesNotMatch {
                    payload: schema.name().to_owned(),
                    errors,
                }
                .into(),
            };
        }
        let has = |name: &str| fields.iter().any(|(k, _)| k == name.as_bytes());
        let mut edits = CopyEdits::default();
        if !has(TYPE_FIELD) {
            edits
                .added
                .push((TYPE_FIELD.into(), message.message_type.clone().into_bytes()));
        }
        match fields.iter().position(|(k, _)| k == ID_FIELD.as_bytes()) {
            Some(i) if fields[i].1.is_empty() => {
                edits.fill_id = Some((i, message.id.clone().into_bytes()))
            }
            Some(_) => {}
            None => edits
                .added
                .push((ID_FIELD.into(), message.id.clone().into_bytes())),
        }
        let copy_bytes = edits.copy_bytes(fields);
        let copy_fields = fields.len() + edits.added.len();
        if copy_bytes > self.ingress.max_entry_bytes {
            return Decision::DeadLetter {
                reason: self.oversized(copy_bytes as u64, copy_fields as u64),
            };
        }
        let (mut queues, mut refused) = (Vec::new(), Vec::new());
        for queue in targets {
            match self.queue_max_entry.get(queue) {
                Some(&max) if copy_bytes > max => refused.push(QueueRefusal {
                    queue: queue.clone(),
                    reason: DeadReason::TooLarge {
                        bytes: copy_bytes as u64,
                        bound: SizeBound::Queue {
                            queue: queue.clone(),
                            bytes: max,
                        },
                    },
                }),
                _ => queues.push(queue.clone()),
            }
        }
        Decision::Fanout {
            message_id: message.id,
            message_type: message.message_type,
            queues,
            refused,
            fields,
            edits,
        }
    }
}

/// How the copy each queue receives differs from the ingress entry: an
/// empty `id` filled in, `type` or `id` added after the entry's own fields.
/// The entry's fields are not copied for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyEdits {
    /// The place of an empty `id` field, and the message id it gets.
    pub fill_id: Option<(usize, Vec<u8>)>,
    /// Fields added after the entry's own.
    pub added: Fields,
}

impl CopyEdits {
    /// The fields of the copy of `entry`, in order.
    pub fn fields<'a>(&'a self, entry: &'a Fields) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        entry
            .iter()
            .enumerate()
            .map(|(i, (k, v))| match &self.fill_id {
                Some((at, id)) if *at == i => (k.as_slice(), id.as_slice()),
                _ => (k.as_slice(), v.as_slice()),
            })
            .chain(self.added.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    /// The size of the copy of `entry`, as the limits count it.
    pub fn copy_bytes(&self, entry: &Fields) -> usize {
        entry_bytes(entry)
            + entry_bytes(&self.added)
            + self.fill_id.as_ref().map_or(0, |(_, id)| id.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut routes = BTreeMap::new();
        routes.insert("chat.ended".to_string(), vec!["A".into(), "B".into()]);
        routes.insert("offlinemessage.submitted".to_string(), vec!["B".into()]);
        let mut queue_max_entry = BTreeMap::new();
        queue_max_entry.insert("A".to_string(), 1024);
        queue_max_entry.insert("B".to_string(), 4096);
        Router {
            routes,
            schemas: BTreeMap::new(),
            ingress: IngressSettings {
                max_entry_bytes: 4096,
                ..IngressSettings::default()
            },
            queue_max_entry,
        }
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

    /// A body that takes an entry just past the ingress bound of 4 KiB.
    static BIG: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("\"{}\"", "x".repeat(4096 - 16)));

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
            (
                &[("type", "chat.ended"), ("body", &BIG)],
                Err("entry is 4.0 KiB, more than ingress.max_entry_kib (4 KiB)"),
            ),
        ];
        for (input, expected) in cases {
            let entry = fields(input);
            let got = r.decide("5-0", &entry);
            match (expected, &got) {
                (Ok(want), Decision::Fanout { queues, .. }) => {
                    assert_eq!(queues, want, "{input:?}")
                }
                (Err(want), Decision::DeadLetter { reason }) => {
                    assert!(reason.to_string().starts_with(want), "{input:?}: {reason}")
                }
                _ => panic!("{input:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bounds_are_checked_before_anything_else() {
        let r = router();
        let many: Fields = (0..=MAX_FIELDS)
            .map(|i| (format!("h{i}").into_bytes(), b"v".to_vec()))
            .collect();
        assert_eq!(
            r.decide("1-0", &many),
            Decision::DeadLetter {
                reason: DeadReason::TooManyFields { fields: 1001 }
            }
        );
        let read = ReadEntry::TooLarge {
            id: "1-0".into(),
            deliveries: 1,
            bytes: 10 * 1024 * 1024,
            fields: 3,
        };
        assert_eq!(
            r.decide_read(&read),
            Decision::DeadLetter {
                reason: DeadReason::TooLarge {
                    bytes: 10 * 1024 * 1024,
                    bound: SizeBound::Ingress(4096)
                }
            }
        );
    }

    #[test]
    fn a_queue_refuses_a_copy_over_its_own_bound() {
        let body = format!("\"{}\"", "x".repeat(1100));
        let entry = fields(&[("type", "chat.ended"), ("id", "m"), ("body", &body)]);
        let d = router().decide("5-0", &entry);
        let Decision::Fanout {
            queues, refused, ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(queues, ["B"]);
        assert_eq!(
            refused,
            [QueueRefusal {
                queue: "A".into(),
                reason: DeadReason::TooLarge {
                    bytes: 1123,
                    bound: SizeBound::Queue {
                        queue: "A".into(),
                        bytes: 1024
                    }
                }
            }]
        );
    }

    #[test]
    fn an_empty_id_is_replaced_so_every_queue_sees_the_same() {
        let entry = fields(&[("type", "chat.ended"), ("id", ""), ("body", "{}")]);
        let d = router().decide("5-0", &entry);
        let Decision::Fanout {
            edits, message_id, ..
        } = d
        else {
            panic!("{d:?}")
        };
        let out: Fields = edits
            .fields(&entry)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(edits.copy_bytes(&entry), entry_bytes(&out));
        assert_eq!(message_id, "5-0");
        assert_eq!(
            out,
            fields(&[("type", "chat.ended"), ("id", "5-0"), ("body", "{}")])
        );
    }

    #[test]
    fn a_copy_carries_the_type_and_id_every_queue_sees() {
        let entry = fields(&[("cap-msg-name", "chat.ended"), ("body", "{}"), ("x", "1")]);
        let d = router().decide("5-0", &entry);
        let Decision::Fanout {
            edits, message_id, ..
        } = d
        else {
            panic!("{d:?}")
        };
        let out: Fields = edits
            .fields(&entry)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(edits.copy_bytes(&entry), entry_bytes(&out));
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

    /// A route with `validate = true` dead-letters a body that does not
    /// match its type's payload, with what is wrong; the same body on a
    /// route without it goes through.
    #[test]
    fn a_validated_route_dead_letters_a_body_off_the_schema() {
        let mut r = router();
        r.schemas
            .insert("chat.ended".into(), schema::for_type("chat.ended").unwrap());
        let good = r#"{"ChatGuid": "g", "SessionId": 1, "SiteId": 7, "Start": "2026-12-07T10:00:00", "End": "2026-12-07T10:01:00"}"#;
        let e = fields(&[("type", "Chat.Ended"), ("body", good)]);
        assert!(matches!(r.decide("1-0", &e), Decision::Fanout { .. }));
        let e = fields(&[("type", "chat.ended"), ("body", r#"{"ChatGuid": "g"}"#)]);
        let Decision::DeadLetter { reason } = r.decide("1-0", &e) else {
            panic!("routed");
        };
        let said = reason.to_string();
        assert!(
            said.contains(
                r#"body does not match the schema's Chat: "SessionId" is a required property"#
            ),
            "{said}"
        );
        assert_eq!(reason.class(), crate::reason::DeadClass::Malformed);
        let e = fields(&[
            ("type", "offlinemessage.submitted"),
            ("body", r#"{"x": 1}"#),
        ]);
        assert!(matches!(r.decide("1-0", &e), Decision::Fanout { .. }));
    }
}
