//! When a reader looks for entries that another consumer left pending (it
//! stopped or hung), and on a queue for retries whose delay is over: a scan
//! of the group's pending list, one stretch per look, a round every
//! `interval`. Pure: the time is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// Where a reader is in its scans of the pending list, and when the next
/// look is due.
#[derive(Debug, Clone)]
pub struct ReclaimSchedule {
    next: Instant,
    cursor: String,
}

/// The cursor of a scan at the start of the pending list (and of one that
/// reached its end).
const START: &str = "0-0";

impl ReclaimSchedule {
    /// A schedule whose first look is due at once: a host that starts takes
    /// over at once what a stopped one left.
    pub fn new(now: Instant) -> Self {
        ReclaimSchedule {
            next: now,
            cursor: START.to_owned(),
        }
    }

    /// How often a queue looks, for a visibility timeout: a quarter of it,
    /// within 50 ms and 500 ms, so that a retry is taken up soon after its
    /// delay, and a scan's cost stays small.
    pub fn queue_interval(visibility_timeout: Duration) -> Duration {
        (visibility_timeout / 4).clamp(Duration::from_millis(50), Duration::from_millis(500))
    }

    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Where the next look starts.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// Records a look at `now` that took `found` entries and ended at
    /// `cursor`. While a round finds entries the next stretch is looked at
    /// at once; a stretch with nothing to take, or the end of the list,
    /// waits `interval`.
    pub fn looked(&mut self, now: Instant, cursor: String, found: usize, interval: Duration) {
        if cursor == START || found == 0 {
            self.next = now + interval;
        }
        self.cursor = cursor;
    }

    /// How long a read of new entries may wait at `now`: until the next
    /// look is due, within `min` and `max`.
    pub fn read_wait(&self, now: Instant, min: Duration, max: Duration) -> Duration {
        self.next.saturating_duration_since(now).clamp(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// (look at ms, cursor returned, entries found) -> (next look due at
    /// ms, cursor of the next look)
    #[test]
    fn rounds_and_stretches() {
        let t0 = Instant::now();
        let at = |ms: u32| t0 + ms * MS;
        let interval = 200 * MS;
        let mut s = ReclaimSchedule::new(t0);
        assert!(s.is_due(t0));
        assert_eq!(s.cursor(), "0-0");
        let cases: &[(u32, &str, usize, u32, &str)] = &[
            // A stretch with entries: the next one at once.
            (0, "5-0", 10, 0, "5-0"),
            (0, "9-0", 3, 0, "9-0"),
            // The end of the list: the next round after the interval.
            (0, "0-0", 2, 200, "0-0"),
            // A stretch with nothing due yet waits too, where it was.
            (200, "12-0", 0, 400, "12-0"),
            (400, "0-0", 0, 600, "0-0"),
        ];
        for &(now, cursor, found, due, next_cursor) in cases {
            assert!(s.is_due(at(now)), "due at {now} ms");
            s.looked(at(now), cursor.into(), found, interval);
            if due > now {
                assert!(!s.is_due(at(due - 1)), "not due before {due} ms");
            }
            assert!(s.is_due(at(due)), "due again at {due} ms");
            assert_eq!(s.cursor(), next_cursor);
        }
    }

    #[test]
    fn a_read_waits_until_the_next_look_within_bounds() {
        let t0 = Instant::now();
        let mut s = ReclaimSchedule::new(t0);
        s.looked(t0, "0-0".into(), 0, 300 * MS);
        let (min, max) = (10 * MS, 500 * MS);
        assert_eq!(s.read_wait(t0, min, max), 300 * MS);
        assert_eq!(s.read_wait(t0 + 250 * MS, min, max), 50 * MS);
        // Due already: the shortest wait, not none (a read that returns at
        // once would spin).
        assert_eq!(s.read_wait(t0 + 900 * MS, min, max), min);
        s.looked(t0, "0-0".into(), 0, 5_000 * MS);
        assert_eq!(s.read_wait(t0, min, max), max);
    }

    #[test]
    fn a_queue_looks_four_times_per_visibility_timeout_within_bounds() {
        for (visibility, interval) in [(60_000, 500), (1_000, 250), (100, 50)] {
            assert_eq!(
                ReclaimSchedule::queue_interval(visibility * MS),
                interval * MS,
                "{visibility} ms"
            );
        }
    }
}
