//! `GET /metrics`: every counter and gauge in the Prometheus text format.
//! What it reads from Redis (backlogs, pending messages, dead letters) is
//! read at most once per `stats_interval` and reused, so scrapes cost Redis
//! nothing more than that, however many there are. Label values are queue
//! names, plugin versions and fixed words: never a message id or anything
//! from a payload.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::state::{AdminState, Stats};
use crate::config::Config;
use crate::kinds::{Capability, FailureKind};
use crate::metrics::{DURATION_BUCKETS, Metrics, QueueMetrics, ReloadMetrics};
use crate::reason::DeadClass;

pub async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let config = state.config.load_full();
    let stats = state.stats().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state.metrics, &config, &stats),
    )
}

/// A label value escaped for the text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: its help, type and samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    /// A family with one sample per queue, labelled `queue`; `value`
    /// `None` leaves that queue out.
    fn per_queue(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        queues: &[(String, Arc<QueueMetrics>)],
        value: impl Fn(&str, &QueueMetrics) -> Option<f64>,
    ) {
        self.head(name, kind, help);
        for (queue, m) in queues {
            if let Some(v) = value(queue, m) {
                self.sample(name, &[("queue", queue)], v);
            }
        }
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The samples of one histogram.
fn histogram(
    f: &mut Family<'_>,
    name: &str,
    labels: &[(&str, &str)],
    h: &crate::metrics::Histogram,
) {
    let (counts, sum) = h.snapshot();
    let bucket = format!("{name}_bucket");
    for (bound, count) in DURATION_BUCKETS.iter().zip(&counts) {
        let bound = bound.to_string();
        let mut with = labels.to_vec();
        with.push(("le", &bound));
        f.sample(&bucket, &with, *count as f64);
    }
    let total = *counts.last().unwrap_or(&0) as f64;
    let mut with = labels.to_vec();
    with.push(("le", "+Inf"));
    f.sample(&bucket, &with, total);
    f.sample(&format!("{name}_sum"), labels, sum);
    f.sample(&format!("{name}_count"), labels, total);
}

/// Every metric, in the Prometheus text format.
pub fn render(metrics: &Metrics, config: &Config, stats: &Stats) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let queues: Vec<(String, Arc<QueueMetrics>)> = config
        .queues
        .keys()
        .map(|name| (name.clone(), metrics.queue(name)))
        .collect();
    fn get(c: &std::sync::atomic::AtomicU64) -> f64 {
        c.load(Ordering::Relaxed) as f64
    }

    type Counter = fn(&QueueMetrics) -> &std::sync::atomic::AtomicU64;
    let counters: [(&str, &str, Counter); 13] = [
        (
            "switchyard_queue_received_total",
            "Handler calls started: deliveries of a message to its plugin.",
            |m| &m.attempts,
        ),
        (
            "switchyard_queue_succeeded_total",
            "Messages handled and acknowledged.",
            |m| &m.succeeded,
        ),
        (
            "switchyard_queue_retried_total",
            "Attempts the plugin asked to retry.",
            |m| &m.retried,
        ),
        (
            "switchyard_queue_rejected_total",
            "Messages the plugin rejected.",
            |m| &m.rejected,
        ),
        (
            "switchyard_queue_dead_lettered_total",
            "Messages moved to the dead-letter stream, for any reason.",
            |m| &m.dead_lettered,
        ),
        (
            "switchyard_queue_reclaimed_total",
            "Messages taken over from a consumer that went quiet.",
            |m| &m.reclaimed,
        ),
        (
            "switchyard_http_requests_total",
            "Outbound HTTP requests plugins sent.",
            |m| &m.http_requests,
        ),
        (
            "switchyard_http_denied_total",
            "Outbound HTTP requests refused (not granted, not public, over a limit).",
            |m| &m.http_denied,
        ),
        (
            "switchyard_published_total",
            "Follow-up messages published with their delivery's ack.",
            |m| &m.published,
        ),
        (
            "switchyard_sql_statements_total",
            "SQL statements plugins ran.",
            |m| &m.sql_statements,
        ),
        (
            "switchyard_sql_failed_total",
            "SQL statements that failed.",
            |m| &m.sql_failed,
        ),
        (
            "switchyard_mails_sent_total",
            "Mails the relay accepted.",
            |m| &m.mails_sent,
        ),
        (
            "switchyard_mails_failed_total",
            "Mails refused, invalid or not sent.",
            |m| &m.mails_failed,
        ),
    ];
    for (name, help, counter) in counters {
        f.per_queue(name, "counter", help, &queues, |_, m| Some(get(counter(m))));
    }
    // Every capability of contract 0.2.0: calls, refusals for want of a
    // grant (or, for HTTP, any refusal by the host), and how long calls
    // took.
    let calls = |c: Capability, m: &QueueMetrics| match c {
        Capability::Http => get(&m.http_requests) + get(&m.http_denied),
        Capability::KeyValue => get(&m.kv_calls),
        Capability::Sql => get(&m.sql_statements),
        Capability::Mail => get(&m.mails_sent) + get(&m.mails_failed),
        Capability::Publish => get(&m.published),
    };
    let denied = |c: Capability, m: &QueueMetrics| match c {
        Capability::Http => get(&m.http_denied),
        Capability::KeyValue => get(&m.kv_denied),
        Capability::Sql => get(&m.sql_denied),
        Capability::Mail => get(&m.mail_denied),
        Capability::Publish => get(&m.publish_denied),
    };
    let name = "switchyard_capability_calls_total";
    f.head(
        name,
        "counter",
        "Capability calls plugins made (publish: messages published with their ack).",
    );
    for (queue, m) in &queues {
        for c in Capability::ALL {
            f.sample(
                name,
                &[("queue", queue), ("capability", c.label())],
                calls(c, m),
            );
        }
    }
    let name = "switchyard_capability_denied_total";
    f.head(name, "counter", "Capability calls the host refused: no grant, or for HTTP a destination or limit not granted.");
    for (queue, m) in &queues {
        for c in Capability::ALL {
            f.sample(
                name,
                &[("queue", queue), ("capability", c.label())],
                denied(c, m),
            );
        }
    }
    let name = "switchyard_capability_duration_seconds";
    f.head(
        name,
        "histogram",
        "How long capability calls took (HTTP: until the answer's head).",
    );
    for (queue, m) in &queues {
        // Publishing is not a call that waits: it goes out with the ack.
        for c in Capability::ALL
            .into_iter()
            .filter(|c| *c != Capability::Publish)
        {
            histogram(
                &mut f,
                name,
                &[("queue", queue), ("capability", c.label())],
                &m.capability_duration[c.index()],
            );
        }
    }
    let name = "switchyard_queue_failed_total";
    f.head(
        name,
        "counter",
        "Attempts that failed in the host: trap, timeout, memory cap, instantiation.",
    );
    for (queue, m) in &queues {
        for kind in FailureKind::ALL {
            f.sample(
                name,
                &[("queue", queue), ("kind", kind.label())],
                get(&m.failed_by_kind[kind.index()]),
            );
        }
    }
    let name = "switchyard_queue_dead_letter_reasons_total";
    f.head(
        name,
        "counter",
        "Messages a queue moved to the dead-letter stream, by the class of the reason.",
    );
    for (queue, m) in &queues {
        for class in DeadClass::ALL {
            f.sample(
                name,
                &[("queue", queue), ("class", class.label())],
                get(&m.dead_lettered_by[class.index()]),
            );
        }
    }
    f.per_queue(
        "switchyard_queue_in_flight",
        "gauge",
        "Handler calls running now.",
        &queues,
        |_, m| Some(get(&m.in_flight)),
    );
    f.per_queue(
        "switchyard_queue_concurrency",
        "gauge",
        "Handler slots now.",
        &queues,
        |_, m| Some(get(&m.concurrency)),
    );
    f.per_queue(
        "switchyard_queue_concurrency_max",
        "gauge",
        "The most handler slots the queue may have.",
        &queues,
        |queue, _| Some(f64::from(config.queues[queue].concurrency)),
    );
    let name = "switchyard_queue_scaled_total";
    f.head(
        name,
        "counter",
        "Times scaling raised or lowered the queue's concurrency.",
    );
    for (queue, m) in &queues {
        f.sample(
            name,
            &[("queue", queue), ("direction", "up")],
            get(&m.scaled_up),
        );
        f.sample(
            name,
            &[("queue", queue), ("direction", "down")],
            get(&m.scaled_down),
        );
    }
    let name = "switchyard_queue_handler_duration_seconds";
    f.head(name, "histogram", "How long handler calls took.");
    for (queue, m) in &queues {
        histogram(&mut f, name, &[("queue", queue)], &m.duration);
    }

    // From Redis, when it could be read.
    if let Some(s) = &stats.status {
        let by_queue: BTreeMap<&str, _> = s
            .queues
            .iter()
            .map(|(n, q, retrying)| (n.as_str(), (q, *retrying)))
            .collect();
        f.per_queue(
            "switchyard_queue_backlog",
            "gauge",
            "Messages in the queue's stream not yet read by its group.",
            &queues,
            |queue, _| {
                by_queue
                    .get(queue)
                    .and_then(|(q, _)| q.lag)
                    .map(|n| n as f64)
            },
        );
        f.per_queue(
            "switchyard_queue_pending",
            "gauge",
            "Messages read and not yet acknowledged: running, or waiting for a retry.",
            &queues,
            |queue, _| by_queue.get(queue).map(|(q, _)| q.pending as f64),
        );
        f.per_queue(
            "switchyard_queue_retry_waiting",
            "gauge",
            "Pending messages that failed at least once.",
            &queues,
            |queue, _| by_queue.get(queue).map(|(_, retrying)| *retrying as f64),
        );
        f.per_queue(
            "switchyard_queue_oldest_pending_age_seconds",
            "gauge",
            "Time since the oldest pending message was added to the queue's stream (0: none pending).",
            &queues,
            |queue, _| stats.oldest_pending.get(queue).copied(),
        );
        let name = "switchyard_ingress_backlog";
        f.head(
            name,
            "gauge",
            "Entries of the ingress stream not yet read by the router.",
        );
        if let Some(lag) = s.ingress.lag {
            f.sample(name, &[], lag as f64);
        }
        let name = "switchyard_ingress_pending";
        f.head(name, "gauge", "Ingress entries read and not yet routed.");
        f.sample(name, &[], s.ingress.pending as f64);
        let name = "switchyard_dead_letters";
        f.head(
            name,
            "gauge",
            "Entries in the dead-letter streams (every partition).",
        );
        f.sample(name, &[], s.dead_letters as f64);
        // Per partition: where a backlog or a retired partition is.
        let name = "switchyard_partition_backlog";
        f.head(
            name,
            "gauge",
            "Entries not yet read in a partition: its ingress and its queues' streams.",
        );
        for p in &s.partitions {
            let unread: u64 = p.ingress.lag.unwrap_or(0)
                + p.queues
                    .iter()
                    .map(|(_, q, _)| q.lag.unwrap_or(0))
                    .sum::<u64>();
            f.sample(name, &[("partition", &p.id)], unread as f64);
        }
        let name = "switchyard_partition_pending";
        f.head(
            name,
            "gauge",
            "Entries read and not yet settled in a partition: its ingress and its queues' streams.",
        );
        for p in &s.partitions {
            let pending: u64 =
                p.ingress.pending + p.queues.iter().map(|(_, q, _)| q.pending).sum::<u64>();
            f.sample(name, &[("partition", &p.id)], pending as f64);
        }
        let name = "switchyard_partition_info";
        f.head(
            name,
            "gauge",
            "Each partition known, its state (active, retired: read until drained, drained).",
        );
        for p in &s.partitions {
            f.sample(
                name,
                &[("partition", &p.id), ("state", p.state.as_str())],
                1.0,
            );
        }
    }
    let name = "switchyard_redis_up";
    f.head(
        name,
        "gauge",
        "1 if the last read of Redis for these metrics succeeded.",
    );
    f.sample(name, &[], if stats.status.is_some() { 1.0 } else { 0.0 });

    let rm = &metrics.redis;
    let name = "switchyard_redis_replica_waits_total";
    f.head(
        name,
        "counter",
        "Waits for replicas after a step (redis.wait_replicas).",
    );
    f.sample(name, &[], get(&rm.replica_waits));
    let name = "switchyard_redis_replica_wait_seconds_total";
    f.head(name, "counter", "Time spent waiting for replicas.");
    f.sample(name, &[], get(&rm.replica_wait_micros) / 1e6);
    let name = "switchyard_redis_replica_shortfalls_total";
    f.head(
        name,
        "counter",
        "Waits that ended with fewer replicas than redis.wait_replicas.",
    );
    f.sample(name, &[], get(&rm.replica_shortfalls));
    let name = "switchyard_redis_master_changes_total";
    f.head(
        name,
        "counter",
        "Times the sentinels named a new master and the host moved to it.",
    );
    f.sample(name, &[], get(&rm.master_changes));

    let r = &metrics.router;
    let name = "switchyard_router_routed_total";
    f.head(
        name,
        "counter",
        "Ingress entries fanned out to their queues.",
    );
    f.sample(name, &[], get(&r.routed));
    let name = "switchyard_router_dead_lettered_total";
    f.head(name, "counter", "Dead letters the router wrote, by class.");
    for class in DeadClass::ROUTER {
        f.sample(
            name,
            &[("class", class.label())],
            get(&r.dead_lettered_by[class.index()]),
        );
    }
    let name = "switchyard_router_reclaimed_total";
    f.head(
        name,
        "counter",
        "Ingress entries taken over from a router that went quiet.",
    );
    f.sample(name, &[], get(&r.reclaimed));

    let name = "switchyard_plugin_info";
    f.head(
        name,
        "gauge",
        "The plugin each queue runs: its content hash and contract version.",
    );
    let mut loaded = Vec::new();
    for (queue, m) in &queues {
        if let Some(p) = m.plugin.read().expect("metrics lock").clone() {
            f.sample(
                name,
                &[
                    ("queue", queue),
                    ("version", &p.version),
                    ("contract", &p.contract),
                ],
                1.0,
            );
            loaded.push((queue, p));
        }
    }
    let name = "switchyard_plugin_loaded_timestamp_seconds";
    f.head(
        name,
        "gauge",
        "When the queue's plugin version was loaded, Unix time.",
    );
    for (queue, p) in &loaded {
        f.sample(name, &[("queue", queue)], p.loaded_at);
    }
    let name = "switchyard_plugin_compile_seconds";
    f.head(
        name,
        "gauge",
        "How long compiling the queue's plugin took (0: from the cache).",
    );
    for (queue, p) in &loaded {
        f.sample(name, &[("queue", queue)], p.compile_seconds);
    }
    let l = &metrics.reloads;
    let reloads: [(&str, &str, &std::sync::atomic::AtomicU64); 6] = [
        (
            "switchyard_plugin_compiles_total",
            "Plugins compiled.",
            &l.compiles,
        ),
        (
            "switchyard_plugin_cache_hits_total",
            "Plugins loaded from the compiled-code cache.",
            &l.cache_hits,
        ),
        (
            "switchyard_plugin_swaps_total",
            "New plugin versions swapped in while running.",
            &l.plugin_swaps,
        ),
        (
            "switchyard_plugin_optimized_total",
            "Plugins started on Winch's code whose Cranelift code took its place.",
            &l.plugin_optimized,
        ),
        (
            "switchyard_plugin_not_optimized_total",
            "Plugin versions Cranelift failed to compile; they keep running on Winch's code.",
            &l.plugin_not_optimized,
        ),
        (
            "switchyard_plugin_refusals_total",
            "Plugin files refused (the running version kept serving).",
            &l.plugin_refused,
        ),
    ];
    for (name, help, c) in reloads {
        f.head(name, "counter", help);
        f.sample(name, &[], ReloadMetrics::get(c) as f64);
    }
    let name = "switchyard_config_reloads_total";
    f.head(name, "counter", "Edits of queues.toml, applied or refused.");
    f.sample(name, &[("result", "applied")], get(&l.config_applied));
    f.sample(name, &[("result", "refused")], get(&l.config_refused));
    out
}
