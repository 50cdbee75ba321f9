//! The dashboard's charts: samples of every queue kept by the host itself,
//! in bounded rings, so that the charts work without Prometheus.
//!
//! Every [`FINE`] the sampler reads each queue's counters (in process) and
//! its backlog and pending count (from the last read of Redis, at most
//! `admin.stats_interval` old) and adds one point to the queue's fine ring
//! ([`FINE_LEN`] points: the last 5 minutes) and folds it into the minute
//! it falls in; each finished minute is one point of the coarse ring
//! ([`COARSE_LEN`] points: the last hour). Rates are per second over the
//! interval; a minute's gauges are the highest seen in it. Dead letters
//! are counted per hour, queue (or the router) and reason class, for the
//! last [`HOURS`] hours. A host that restarts starts a new history; a queue
//! removed by a reload loses its rings, one added starts with none.
//!
//! [`History`] is pure (time is an argument); `sampler.rs` drives it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};

/// How often a point is taken.
pub const FINE: Duration = Duration::from_secs(5);
/// Points kept at [`FINE`]: 5 minutes.
pub const FINE_LEN: usize = 60;
/// The coarse ring's step.
pub const COARSE: Duration = Duration::from_secs(60);
/// Points kept at [`COARSE`]: one hour.
pub const COARSE_LEN: usize = 60;
/// Hours of dead-letter counts kept.
pub const HOURS: usize = 24;
/// The name the router's dead letters are counted under.
pub const ROUTER: &str = "(router)";

/// What the sampler reads for one queue: counters since the host started,
/// gauges now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Messages handled and acknowledged.
    pub handled: u64,
    /// Attempts that did not succeed: retried, rejected, trapped, timed out.
    pub failed: u64,
    /// Entries not delivered yet (`None`: Redis not read).
    pub backlog: Option<u64>,
    /// Entries delivered and not settled.
    pub pending: Option<u64>,
    /// Handler slots open.
    pub concurrency: u64,
}

/// One point of a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix seconds: the end of a fine interval, the start of a minute.
    pub at: f64,
    /// Messages handled per second over the interval.
    pub handled: f64,
    /// Failed attempts per second over the interval.
    pub failed: f64,
    /// The gauges at the end of the interval (of a minute: the highest).
    pub backlog: Option<u64>,
    pub pending: Option<u64>,
    pub concurrency: u64,
}

impl Point {
    fn json(&self) -> Value {
        json!({
            "at": self.at,
            "handled": round(self.handled),
            "failed": round(self.failed),
            "backlog": self.backlog,
            "pending": self.pending,
            "concurrency": self.concurrency,
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A minute being filled.
#[derive(Debug, Clone, Copy)]
struct Minute {
    /// Unix seconds, a multiple of 60.
    start: f64,
    /// Handled and failed over the intervals folded in so far.
    handled: u64,
    failed: u64,
    /// The length of those intervals.
    seconds: f64,
    /// The highest gauges seen in them.
    backlog: Option<u64>,
    pending: Option<u64>,
    concurrency: u64,
}

impl Minute {
    fn point(&self) -> Point {
        let per_second = |n: u64| {
            if self.seconds > 0.0 {
                n as f64 / self.seconds
            } else {
                0.0
            }
        };
        Point {
            at: self.start,
            handled: per_second(self.handled),
            failed: per_second(self.failed),
            backlog: self.backlog,
            pending: self.pending,
            concurrency: self.concurrency,
        }
    }
}

/// One queue's rings.
#[derive(Debug, Default)]
struct Series {
    /// The last reading and its time, from which the next point's rates
    /// are taken.
    last: Option<(f64, Reading)>,
    /// At most [`FINE_LEN`] points, oldest first.
    fine: VecDeque<Point>,
    /// The minute being filled.
    minute: Option<Minute>,
    /// At most [`COARSE_LEN`] finished minutes, oldest first.
    coarse: VecDeque<Point>,
}

impl Series {
    fn record(&mut self, at: f64, now: Reading) {
        let Some((then, before)) = self.last.replace((at, now)) else {
            return;
        };
        let seconds = at - then;
        if seconds <= 0.0 {
            return;
        }
        // Counters only grow in one process; a smaller one (not expected)
        // counts as nothing rather than as a huge rate.
        let handled = now.handled.saturating_sub(before.handled);
        let failed = now.failed.saturating_sub(before.failed);
        push(
            &mut self.fine,
            FINE_LEN,
            Point {
                at,
                handled: handled as f64 / seconds,
                failed: failed as f64 / seconds,
                backlog: now.backlog,
                pending: now.pending,
                concurrency: now.concurrency,
            },
        );
        // The minute the interval's middle falls in.
        let step = COARSE.as_secs_f64();
        let start = ((then + at) / 2.0 / step).floor() * step;
        if let Some(m) = self.minute
            && m.start != start
        {
            push(&mut self.coarse, COARSE_LEN, m.point());
            self.minute = None;
        }
        let m = self.minute.get_or_insert(Minute {
            start,
            handled: 0,
            failed: 0,
            seconds: 0.0,
            backlog: None,
            pending: None,
            concurrency: 0,
        });
        m.handled += handled;
        m.failed += failed;
        m.seconds += seconds;
        m.backlog = m.backlog.max(now.backlog);
        m.pending = m.pending.max(now.pending);
        m.concurrency = m.concurrency.max(now.concurrency);
    }

    fn json(&self) -> Value {
        // The minute in progress is the coarse chart's last point.
        let coarse: Vec<Value> = self
            .coarse
            .iter()
            .copied()
            .chain(self.minute.map(|m| m.point()))
            .map(|p| p.json())
            .collect();
        json!({
            "fine": self.fine.iter().map(Point::json).collect::<Vec<_>>(),
            "coarse": coarse,
        })
    }
}

fn push(ring: &mut VecDeque<Point>, len: usize, point: Point) {
    if ring.len() == len {
        ring.pop_front();
    }
    ring.push_back(point);
}

/// Dead letters by queue (or [`ROUTER`]) and class.
pub type DeadCounts = BTreeMap<(String, &'static str), u64>;

/// Every queue's rings and the dead letters per hour.
#[derive(Debug, Default)]
pub struct History {
    started: Option<f64>,
    queues: BTreeMap<String, Series>,
    /// Hour start (unix seconds) and its counts, oldest first.
    hours: VecDeque<(f64, DeadCounts)>,
    /// The dead-letter counters at the last sample. Kept for queues that
    /// were removed: their counters stay in the host's metrics, and a queue
    /// added back must not count them again.
    dead_seen: DeadCounts,
}

impl History {
    /// Adds the readings taken at `at` (unix seconds): one per queue that
    /// runs now, and the dead-letter counters since the host started.
    pub fn record(&mut self, at: f64, queues: &BTreeMap<String, Reading>, dead: &DeadCounts) {
        self.started.get_or_insert(at);
        self.queues.retain(|name, _| queues.contains_key(name));
        for (name, reading) in queues {
            self.queues
                .entry(name.clone())
                .or_default()
                .record(at, *reading);
        }
        let hour = (at / 3600.0).floor() * 3600.0;
        if self.hours.back().is_none_or(|(h, _)| *h != hour) {
            self.hours.push_back((hour, DeadCounts::new()));
        }
        while self
            .hours
            .front()
            .is_some_and(|(h, _)| *h <= hour - HOURS as f64 * 3600.0)
        {
            self.hours.pop_front();
        }
        let (_, counts) = self.hours.back_mut().expect("the hour was pushed");
        for (key, n) in dead {
            let seen = self.dead_seen.insert(key.clone(), *n).unwrap_or(0);
            let new = n.saturating_sub(seen);
            if new > 0 {
                *counts.entry(key.clone()).or_default() += new;
            }
        }
    }

    /// The charts' data; with `queue`, that queue's only (and its dead
    /// letters).
    pub fn json(&self, queue: Option<&str>) -> Value {
        let queues: serde_json::Map<String, Value> = self
            .queues
            .iter()
            .filter(|(name, _)| queue.is_none_or(|q| q == name.as_str()))
            .map(|(name, s)| (name.clone(), s.json()))
            .collect();
        let hours: Vec<Value> = self
            .hours
            .iter()
            .map(|(hour, counts)| {
                let counts: Vec<Value> = counts
                    .iter()
                    .filter(|((q, _), _)| queue.is_none_or(|want| want == q))
                    .map(|((q, class), n)| json!({ "queue": q, "class": class, "count": n }))
                    .collect();
                json!({ "hour": hour, "counts": counts })
            })
            .collect();
        json!({
            "started_at": self.started,
            "fine_step_s": FINE.as_secs(),
            "coarse_step_s": COARSE.as_secs(),
            "queues": queues,
            "dead_per_hour": hours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(handled: u64, failed: u64, backlog: u64) -> Reading {
        Reading {
            handled,
            failed,
            backlog: Some(backlog),
            pending: Some(1),
            concurrency: 2,
        }
    }

    fn one(name: &str, r: Reading) -> BTreeMap<String, Reading> {
        BTreeMap::from([(name.to_owned(), r)])
    }

    #[test]
    fn points_are_rates_over_the_interval_and_minutes_fold_them() {
        let mut h = History::default();
        let none = DeadCounts::new();
        // A time on a minute's start.
        let t0 = 1_800_000_000.0 - 1_800_000_000.0 % 60.0;
        h.record(t0, &one("Email", reading(0, 0, 7)), &none);
        h.record(t0 + 5.0, &one("Email", reading(50, 5, 9)), &none);
        h.record(t0 + 10.0, &one("Email", reading(150, 5, 3)), &none);
        let j = h.json(None);
        let fine = &j["queues"]["Email"]["fine"];
        assert_eq!(fine.as_array().unwrap().len(), 2, "{j}");
        assert_eq!(fine[0]["handled"], 10.0);
        assert_eq!(fine[0]["failed"], 1.0);
        assert_eq!(fine[1]["handled"], 20.0);
        assert_eq!(fine[1]["backlog"], 3);
        // The minute in progress: 150 over 10 s, the highest backlog.
        let coarse = &j["queues"]["Email"]["coarse"];
        assert_eq!(coarse.as_array().unwrap().len(), 1, "{j}");
        assert_eq!(coarse[0]["at"], t0);
        assert_eq!(coarse[0]["handled"], 15.0);
        assert_eq!(coarse[0]["backlog"], 9);
        // An interval is the minute its middle falls in; the next minute
        // closes it.
        h.record(t0 + 60.0, &one("Email", reading(750, 5, 0)), &none);
        h.record(t0 + 65.0, &one("Email", reading(800, 5, 0)), &none);
        let coarse = h.json(None)["queues"]["Email"]["coarse"].clone();
        assert_eq!(coarse.as_array().unwrap().len(), 2, "{coarse}");
        assert_eq!(coarse[0]["handled"], 12.5);
        assert_eq!(coarse[1]["at"], t0 + 60.0);
        assert_eq!(coarse[1]["handled"], 10.0);
    }

    #[test]
    fn rings_are_bounded_and_follow_the_queues_that_run() {
        let mut h = History::default();
        let none = DeadCounts::new();
        let two = |n| {
            BTreeMap::from([
                ("A".to_owned(), reading(n, 0, 0)),
                ("B".to_owned(), reading(n, 0, 0)),
            ])
        };
        let step = FINE.as_secs_f64();
        for i in 0..(COARSE_LEN * 13) as u64 {
            h.record(i as f64 * step, &two(i), &none);
        }
        let j = h.json(None);
        assert_eq!(j["queues"]["A"]["fine"].as_array().unwrap().len(), FINE_LEN);
        // The last hour's minutes and the one in progress.
        assert_eq!(
            j["queues"]["A"]["coarse"].as_array().unwrap().len(),
            COARSE_LEN + 1
        );
        // B removed by a reload, C added.
        let t = (COARSE_LEN * 13) as f64 * step;
        let now = BTreeMap::from([
            ("A".to_owned(), reading(0, 0, 0)),
            ("C".to_owned(), reading(5, 0, 0)),
        ]);
        h.record(t, &now, &none);
        h.record(t + step, &now, &none);
        let j = h.json(None);
        assert!(j["queues"]["B"].is_null(), "{j}");
        assert_eq!(j["queues"]["C"]["fine"].as_array().unwrap().len(), 1);
        assert_eq!(j["queues"]["C"]["fine"][0]["handled"], 0.0);
        // Only C's when asked for C.
        let c = h.json(Some("C"));
        assert_eq!(c["queues"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn dead_letters_are_counted_per_hour_queue_and_class() {
        let mut h = History::default();
        let q = BTreeMap::new();
        let dead = |pairs: &[(&str, &'static str, u64)]| -> DeadCounts {
            pairs
                .iter()
                .map(|(q, c, n)| ((q.to_string(), *c), *n))
                .collect()
        };
        let hour = 1_800_000_000.0 - 1_800_000_000.0 % 3600.0;
        h.record(hour + 10.0, &q, &dead(&[("Email", "rejected", 2)]));
        h.record(
            hour + 20.0,
            &q,
            &dead(&[("Email", "rejected", 3), (ROUTER, "no_route", 1)]),
        );
        h.record(hour + 3610.0, &q, &dead(&[("Email", "rejected", 7)]));
        let j = h.json(None);
        let hours = j["dead_per_hour"].as_array().unwrap();
        assert_eq!(hours.len(), 2, "{j}");
        assert_eq!(hours[0]["hour"], hour);
        assert_eq!(
            hours[0]["counts"],
            json!([
                { "queue": "(router)", "class": "no_route", "count": 1 },
                { "queue": "Email", "class": "rejected", "count": 3 },
            ])
        );
        assert_eq!(
            hours[1]["counts"],
            json!([{ "queue": "Email", "class": "rejected", "count": 4 }])
        );
        // A queue's own view leaves the router's out.
        let email = h.json(Some("Email"));
        assert_eq!(
            email["dead_per_hour"][0]["counts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // At most HOURS hours.
        for i in 2..(HOURS as u64 + 5) {
            h.record(hour + i as f64 * 3600.0, &q, &DeadCounts::new());
        }
        assert_eq!(
            h.json(None)["dead_per_hour"].as_array().unwrap().len(),
            HOURS
        );
    }
}
