//! Why a message is dead-lettered: one type for the router and the queues,
//! whose `Display` is the reason an operator reads in the dead letter and
//! whose [`DeadClass`] is the metric label.

use std::fmt;

use crate::message::{MAX_FIELDS, Malformed};

/// Why a message can never be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadReason {
    /// Not a message: no type, no body, a body that is not JSON.
    Malformed(Malformed),
    /// No queue is routed its message type.
    NoRoute { message_type: String },
    /// More fields than [`MAX_FIELDS`].
    TooManyFields { fields: u64 },
    /// Larger than a bound of the ingress or of a queue.
    TooLarge { bytes: u64, bound: SizeBound },
    /// Published in a chain more often than its queue's `max_hops`.
    TooManyHops { hops: u32, queue: String, max: u32 },
    /// The plugin said it can never succeed.
    Rejected { reason: String },
    /// Its last allowed attempt failed.
    GaveUp {
        attempts: u32,
        /// The kind of the last failure (`retry`, `trap`, `timeout`, ...).
        kind: String,
        last: String,
    },
    /// Its handler trapped `max_trap_attempts` times: a bug in the plugin
    /// (a panic, an uncaught exception), which retrying seldom cures.
    Trapped {
        traps: u32,
        max_trap_attempts: u32,
        last: String,
    },
    /// Delivered `max_attempts` times without an outcome recorded: its
    /// handler kept dying with its host.
    Abandoned {
        deliveries: u32,
        max_attempts: u32,
        /// The last failure recorded, if any.
        last: Option<String>,
    },
}

/// The bound an entry was over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeBound {
    /// `ingress.max_entry_kib`, in bytes.
    Ingress(usize),
    /// `queues.<queue>.max_entry_kib`, in bytes.
    Queue { queue: String, bytes: usize },
}

/// What kind of reason, as the `class` label of dead-letter metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeadClass {
    Malformed,
    NoRoute,
    Oversized,
    TooManyHops,
    Rejected,
    GaveUp,
    Abandoned,
    Trapped,
}

impl DeadClass {
    /// Every class, in the order of their metric series.
    pub const ALL: [DeadClass; 8] = [
        DeadClass::Malformed,
        DeadClass::NoRoute,
        DeadClass::Oversized,
        DeadClass::TooManyHops,
        DeadClass::Rejected,
        DeadClass::GaveUp,
        DeadClass::Abandoned,
        DeadClass::Trapped,
    ];

    /// The classes the router gives (the others come from queues).
    pub const ROUTER: [DeadClass; 3] = [
        DeadClass::Malformed,
        DeadClass::NoRoute,
        DeadClass::Oversized,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeadClass::Malformed => "malformed",
            DeadClass::NoRoute => "no_route",
            DeadClass::Oversized => "oversized",
            DeadClass::TooManyHops => "too_many_hops",
            DeadClass::Rejected => "rejected",
            DeadClass::GaveUp => "gave_up",
            DeadClass::Abandoned => "abandoned",
            DeadClass::Trapped => "trapped",
        }
    }

    /// Its place in [`DeadClass::ALL`], for arrays of counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl DeadReason {
    pub fn class(&self) -> DeadClass {
        match self {
            DeadReason::Malformed(_) => DeadClass::Malformed,
            DeadReason::NoRoute { .. } => DeadClass::NoRoute,
            DeadReason::TooManyFields { .. } | DeadReason::TooLarge { .. } => DeadClass::Oversized,
            DeadReason::TooManyHops { .. } => DeadClass::TooManyHops,
            DeadReason::Rejected { .. } => DeadClass::Rejected,
            DeadReason::GaveUp { .. } => DeadClass::GaveUp,
            DeadReason::Abandoned { .. } => DeadClass::Abandoned,
            DeadReason::Trapped { .. } => DeadClass::Trapped,
        }
    }
}

impl From<Malformed> for DeadReason {
    fn from(m: Malformed) -> Self {
        DeadReason::Malformed(m)
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadReason::Malformed(m) => m.fmt(f),
            DeadReason::NoRoute { message_type } => {
                write!(f, "no route for message type {message_type:?}")
            }
            DeadReason::TooManyFields { fields } => write!(
                f,
                "entry has {fields} fields, more than the {MAX_FIELDS} a message may have"
            ),
            DeadReason::TooLarge { bytes, bound } => {
                write!(f, "entry is {}, more than ", human_size(*bytes))?;
                match bound {
                    SizeBound::Ingress(max) => {
                        write!(f, "ingress.max_entry_kib ({} KiB)", max / 1024)
                    }
                    SizeBound::Queue { queue, bytes } => {
                        write!(f, "queues.{queue}.max_entry_kib ({} KiB)", bytes / 1024)
                    }
                }
            }
            DeadReason::TooManyHops { hops, queue, max } => write!(
                f,
                "published {hops} times in a chain, more than queues.{queue}.max_hops ({max}): messages publishing each other in a loop?"
            ),
            DeadReason::Rejected { reason } => write!(f, "rejected by the plugin: {reason}"),
            DeadReason::GaveUp {
                attempts,
                kind,
                last,
            } => write!(
                f,
                "gave up after {attempts} attempts; last error ({kind}): {last}"
            ),
            DeadReason::Trapped {
                traps,
                max_trap_attempts,
                last,
            } => write!(
                f,
                "the plugin trapped {traps} times (max_trap_attempts {max_trap_attempts}): a bug in it? last: {last}"
            ),
            DeadReason::Abandoned {
                deliveries,
                max_attempts,
                last,
            } => write!(
                f,
                "gave up after {deliveries} deliveries (max_attempts {max_attempts}); last error: {}",
                last.as_deref()
                    .unwrap_or("none recorded: the handler never finished")
            ),
        }
    }
}

/// A size for people: bytes, KiB or MiB.
pub fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts operators read and filter dead letters by, and their
    /// classes.
    #[test]
    fn texts_and_classes() {
        let cases: Vec<(DeadReason, &str, &str)> = vec![
            (
                Malformed::MissingType.into(),
                "missing field `type` (or `cap-msg-name`)",
                "malformed",
            ),
            (
                DeadReason::NoRoute {
                    message_type: "chat.x".into(),
                },
                "no route for message type \"chat.x\"",
                "no_route",
            ),
            (
                DeadReason::TooManyFields { fields: 1001 },
                "entry has 1001 fields, more than the 1000 a message may have",
                "oversized",
            ),
            (
                DeadReason::TooLarge {
                    bytes: 10 * 1024 * 1024,
                    bound: SizeBound::Ingress(4096),
                },
                "entry is 10.0 MiB, more than ingress.max_entry_kib (4 KiB)",
                "oversized",
            ),
            (
                DeadReason::TooLarge {
                    bytes: 1126,
                    bound: SizeBound::Queue {
                        queue: "A".into(),
                        bytes: 1024,
                    },
                },
                "entry is 1.1 KiB, more than queues.A.max_entry_kib (1 KiB)",
                "oversized",
            ),
            (
                DeadReason::TooManyHops {
                    hops: 9,
                    queue: "A".into(),
                    max: 8,
                },
                "published 9 times in a chain, more than queues.A.max_hops (8): messages publishing each other in a loop?",
                "too_many_hops",
            ),
            (
                DeadReason::Rejected {
                    reason: "bad site".into(),
                },
                "rejected by the plugin: bad site",
                "rejected",
            ),
            (
                DeadReason::GaveUp {
                    attempts: 3,
                    kind: "trap".into(),
                    last: "boom".into(),
                },
                "gave up after 3 attempts; last error (trap): boom",
                "gave_up",
            ),
            (
                DeadReason::Abandoned {
                    deliveries: 3,
                    max_attempts: 3,
                    last: None,
                },
                "gave up after 3 deliveries (max_attempts 3); last error: none recorded: the handler never finished",
                "abandoned",
            ),
        ];
        for (reason, text, class) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(reason.class().label(), class, "{text}");
        }
        for (i, class) in DeadClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
