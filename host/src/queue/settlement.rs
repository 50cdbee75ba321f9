//! How a delivery ends, decided by a pure function of what happened, the
//! attempt, the queue's policy and the message's failures so far.

use std::time::Duration;

use crate::config::RetryPolicy;
use crate::message::Published;
use crate::plugin::Outcome;
use crate::reason::DeadReason;
use crate::stream::queue::FailureHistory;

/// What happened to one delivery, before it is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The entry cannot be a message for this queue (malformed, over the
    /// queue's size bound); it was never handed to the plugin.
    Unusable { reason: DeadReason },
    /// Delivered more often than `max_attempts` with no outcome recorded
    /// (its handler kept dying with its host): not run again.
    Exhausted,
    /// The plugin ran; what it published, if it succeeded.
    Ran(Outcome, Vec<Published>),
}

/// How a delivery ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Ack {
        /// Failures were recorded for it, to be cleared with the ack.
        had_failures: bool,
        /// Follow-up messages to add to the ingress with the ack.
        published: Vec<Published>,
    },
    DeadLetter {
        reason: DeadReason,
        /// Attempts made (0: never handed to the plugin).
        attempts: u32,
        history: Option<FailureHistory>,
    },
    RetryLater {
        delay: Duration,
        /// The delay asked for, when it was longer than the queue's
        /// visibility timeout and so cut to it.
        cut_from: Option<Duration>,
        history: FailureHistory,
    },
}

/// Whether [`settlement`] needs the message's recorded failures for this
/// delivery: only a failure after an earlier one does.
pub fn needs_history(delivered: &Delivered, attempt: u32) -> bool {
    match delivered {
        Delivered::Unusable { .. } | Delivered::Ran(Outcome::Success, _) => false,
        Delivered::Exhausted => true,
        Delivered::Ran(..) => attempt > 1,
    }
}

/// Decides how a delivery ends: a pure function of what happened, the
/// attempt (1, 2, ...), the queue's policy, the failures recorded before
/// this attempt, and the time `now` (RFC 3339) for the record.
pub fn settlement(
    delivered: &Delivered,
    attempt: u32,
    policy: &RetryPolicy,
    history: Option<&FailureHistory>,
    now: &str,
) -> Settlement {
    let (kind, reason, asked) = match delivered {
        Delivered::Unusable { reason } => {
            return Settlement::DeadLetter {
                reason: reason.clone(),
                attempts: 0,
                history: None,
            };
        }
        Delivered::Exhausted => {
            return Settlement::DeadLetter {
                reason: DeadReason::Abandoned {
                    deliveries: attempt - 1,
                    max_attempts: policy.max_attempts,
                    last: history.and_then(|h| h.errors.last()).cloned(),
                },
                attempts: attempt - 1,
                history: history.cloned(),
            };
        }
        Delivered::Ran(Outcome::Success, published) => {
            return Settlement::Ack {
                had_failures: attempt > 1,
                published: published.clone(),
            };
        }
        Delivered::Ran(Outcome::Reject { reason }, _) => {
            return Settlement::DeadLetter {
                reason: DeadReason::Rejected {
                    reason: reason.clone(),
                },
                attempts: attempt,
                history: history.cloned(),
            };
        }
        Delivered::Ran(Outcome::Retry { reason, delay }, _) => ("retry", reason, *delay),
        Delivered::Ran(Outcome::Failed { kind, reason }, _) => (kind.label(), reason, None),
    };
    let mut history = history.cloned().unwrap_or_default();
    history.record(attempt, kind, reason, now);
    if history.traps >= policy.max_trap_attempts && kind == crate::kinds::FailureKind::Trap.label()
    {
        return Settlement::DeadLetter {
            reason: DeadReason::Trapped {
                traps: history.traps,
                max_trap_attempts: policy.max_trap_attempts,
                last: reason.clone(),
            },
            attempts: attempt,
            history: Some(history),
        };
    }
    if attempt >= policy.max_attempts {
        return Settlement::DeadLetter {
            reason: DeadReason::GaveUp {
                attempts: attempt,
                kind: kind.to_owned(),
                last: reason.clone(),
            },
            attempts: attempt,
            history: Some(history),
        };
    }
    let wanted = asked.unwrap_or_else(|| policy.backoff(attempt + 1));
    // A retry is scheduled through the message's idle clock: no delay can
    // be longer than the visibility timeout.
    let (delay, cut_from) = if wanted > policy.visibility_timeout {
        (policy.visibility_timeout, Some(wanted))
    } else {
        (wanted, None)
    };
    Settlement::RetryLater {
        delay,
        cut_from,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Malformed;
    use crate::plugin::FailureKind as Kind;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            max_trap_attempts: 3,
            retry_quick: 1,
            retry_quick_delay: Duration::from_millis(100),
            retry_delay: Duration::from_secs(30),
            retry_delay_max: Duration::from_secs(600),
            visibility_timeout: Duration::from_secs(60),
        }
    }

    /// A follow-up message a call published: it goes out with a success
    /// only (the other settlements in the table drop it).
    fn published() -> Published {
        Published {
            id: "m/1".into(),
            message_type: "next".into(),
            body: "{}".into(),
            headers: vec![],
        }
    }

    fn history(errors: &[&str]) -> FailureHistory {
        FailureHistory {
            first: "T0".into(),
            last: "T1".into(),
            errors: errors.iter().map(|e| e.to_string()).collect(),
            traps: 0,
        }
    }

    fn retry(reason: &str, delay_ms: Option<u64>) -> Delivered {
        Delivered::Ran(
            Outcome::Retry {
                reason: reason.into(),
                delay: delay_ms.map(Duration::from_millis),
            },
            vec![published()],
        )
    }

    #[test]
    fn settlement_table() {
        let p = policy();
        let trap = Delivered::Ran(
            Outcome::Failed {
                kind: Kind::Trap,
                reason: "boom".into(),
            },
            vec![published()],
        );
        let before = history(&["attempt 1 (retry): down"]);
        // (what happened, attempt, failures before, settlement)
        let cases: Vec<(Delivered, u32, Option<FailureHistory>, Settlement)> = vec![
            (
                Delivered::Ran(Outcome::Success, vec![published()]),
                1,
                None,
                Settlement::Ack {
                    had_failures: false,
                    published: vec![published()],
                },
            ),
            (
                Delivered::Ran(Outcome::Success, vec![]),
                2,
                Some(before.clone()),
                Settlement::Ack {
                    had_failures: true,
                    published: vec![],
                },
            ),
            (
                Delivered::Unusable {
                    reason: Malformed::MissingBody.into(),
                },
                1,
                None,
                Settlement::DeadLetter {
                    reason: Malformed::MissingBody.into(),
                    attempts: 0,
                    history: None,
                },
            ),
            (
                Delivered::Ran(
                    Outcome::Reject {
                        reason: "bad site".into(),
                    },
                    vec![published()],
                ),
                2,
                Some(before.clone()),
                Settlement::DeadLetter {
                    reason: DeadReason::Rejected {
                        reason: "bad site".into(),
                    },
                    attempts: 2,
                    history: Some(before.clone()),
                },
            ),
            // The first failure: the quick retry.
            (
                retry("down", None),
                1,
                None,
                Settlement::RetryLater {
                    delay: Duration::from_millis(100),
                    cut_from: None,
                    history: FailureHistory {
                        first: "NOW".into(),
                        last: "NOW".into(),
                        errors: vec!["attempt 1 (retry): down".into()],
                        traps: 0,
                    },
                },
            ),
            // The second: the spaced retry, after the quick ones.
            (
                trap.clone(),
                2,
                Some(before.clone()),
                Settlement::RetryLater {
                    delay: Duration::from_secs(30),
                    cut_from: None,
                    history: FailureHistory {
                        first: "T0".into(),
                        last: "NOW".into(),
                        errors: vec![
                            "attempt 1 (retry): down".into(),
                            "attempt 2 (trap): boom".into(),
                        ],
                        traps: 1,
                    },
                },
            ),
            // The plugin's own delay wins, but never past the visibility
            // timeout.
            (
                retry("slow down", Some(120_000)),
                1,
                None,
                Settlement::RetryLater {
                    delay: Duration::from_secs(60),
                    cut_from: Some(Duration::from_secs(120)),
                    history: FailureHistory {
                        first: "NOW".into(),
                        last: "NOW".into(),
                        errors: vec!["attempt 1 (retry): slow down".into()],
                        traps: 0,
                    },
                },
            ),
            // The last attempt fails: dead-lettered with every error.
            (
                trap,
                3,
                Some(before.clone()),
                Settlement::DeadLetter {
                    reason: DeadReason::GaveUp {
                        attempts: 3,
                        kind: "trap".into(),
                        last: "boom".into(),
                    },
                    attempts: 3,
                    history: Some(FailureHistory {
                        first: "T0".into(),
                        last: "NOW".into(),
                        errors: vec![
                            "attempt 1 (retry): down".into(),
                            "attempt 3 (trap): boom".into(),
                        ],
                        traps: 1,
                    }),
                },
            ),
            // A third trap: dead-lettered as a bug, before max_attempts.
            (
                Delivered::Ran(
                    Outcome::Failed {
                        kind: Kind::Trap,
                        reason: "boom".into(),
                    },
                    vec![],
                ),
                2,
                Some(FailureHistory {
                    traps: 2,
                    ..before.clone()
                }),
                Settlement::DeadLetter {
                    reason: DeadReason::Trapped {
                        traps: 3,
                        max_trap_attempts: 3,
                        last: "boom".into(),
                    },
                    attempts: 2,
                    history: Some(FailureHistory {
                        first: "T0".into(),
                        last: "NOW".into(),
                        errors: vec![
                            "attempt 1 (retry): down".into(),
                            "attempt 2 (trap): boom".into(),
                        ],
                        traps: 3,
                    }),
                },
            ),
            // Delivered past max_attempts without an outcome.
            (
                Delivered::Exhausted,
                4,
                None,
                Settlement::DeadLetter {
                    reason: DeadReason::Abandoned {
                        deliveries: 3,
                        max_attempts: 3,
                        last: None,
                    },
                    attempts: 3,
                    history: None,
                },
            ),
            (
                Delivered::Exhausted,
                5,
                Some(before.clone()),
                Settlement::DeadLetter {
                    reason: DeadReason::Abandoned {
                        deliveries: 4,
                        max_attempts: 3,
                        last: Some("attempt 1 (retry): down".into()),
                    },
                    attempts: 4,
                    history: Some(before),
                },
            ),
        ];
        for (delivered, attempt, history, want) in cases {
            let got = settlement(&delivered, attempt, &p, history.as_ref(), "NOW");
            assert_eq!(got, want, "{delivered:?} on attempt {attempt}");
        }
    }

    #[test]
    fn history_is_read_only_for_a_failure_after_another() {
        let fail = retry("x", None);
        assert!(!needs_history(&fail, 1));
        assert!(needs_history(&fail, 2));
        assert!(!needs_history(&Delivered::Ran(Outcome::Success, vec![]), 5));
        assert!(needs_history(&Delivered::Exhausted, 9));
        assert!(!needs_history(
            &Delivered::Unusable {
                reason: Malformed::EmptyType.into()
            },
            3
        ));
    }
}
