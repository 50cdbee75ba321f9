//! Benchmark: what `validate = true` on a route costs the router, per
//! message: deciding an ingress entry's fan-out (`Router::decide`) for the
//! demo's `chat.ended` (a chat with its transcript) and its
//! `offlinemessage.submitted`, with the route validating the body against
//! the chat events schema and without. Pure CPU, no Redis: the router's
//! own work, on one thread.
//!
//! ```text
//! cargo run -p switchyard-bench --bin validate
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use switchyard::router::{Decision, Router};
use switchyard_tests::{TestConfig, repo_root};

#[derive(Debug, Parser)]
struct Args {
    /// Decisions per measurement.
    #[arg(long, default_value_t = 100_000)]
    decisions: usize,
    /// Measurements of each kind, alternating.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// The demo's first good body of `message_type` (its `demo-bad-*` events
/// are made to fail).
fn demo_body(message_type: &str) -> Result<String> {
    let events = switchyard_cli::demo::read_events(&repo_root().join("demo/events.jsonl"))?;
    events
        .into_iter()
        .find(|fields| {
            let has =
                |key: &str, f: &dyn Fn(&str) -> bool| fields.iter().any(|(k, v)| k == key && f(v));
            has("type", &|v| v.eq_ignore_ascii_case(message_type))
                && !has("id", &|v| v.starts_with("demo-bad"))
        })
        .and_then(|fields| {
            fields
                .into_iter()
                .find(|(k, _)| k == "body")
                .map(|(_, v)| v)
        })
        .with_context(|| format!("no {message_type} in demo/events.jsonl"))
}

fn router(validate: bool) -> Router {
    let text = format!(
        "[routes]\n\"chat.ended\" = {{ queues = [\"Q\"], validate = {validate} }}\n\"offlinemessage.submitted\" = {{ queues = [\"Q\"], validate = {validate} }}\n[queues.Q]\nplugin = \"builtin:noop\"\n"
    );
    Router::new(&TestConfig::new(&text).config)
}

/// The time per decision of `router` over `entries`, taken in turn.
fn measure(router: &Router, entries: &[Vec<(Vec<u8>, Vec<u8>)>], n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let decision = router.decide("1-0", &entries[i % entries.len()]);
        assert!(matches!(decision, Decision::Fanout { .. }), "{decision:?}");
    }
    started.elapsed() / n as u32
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut kinds = Vec::new();
    for message_type in ["chat.ended", "offlinemessage.submitted"] {
        let body = demo_body(message_type)?;
        let entry = vec![
            (b"type".to_vec(), message_type.as_bytes().to_vec()),
            (b"id".to_vec(), b"m-1".to_vec()),
            (b"body".to_vec(), body.clone().into_bytes()),
        ];
        kinds.push((message_type, body.len(), vec![entry]));
    }
    let (plain, checked) = (router(false), router(true));
    println!(
        "{:<26} {:>7} {:>14} {:>14} {:>8}",
        "message type", "bytes", "route (ns)", "validated (ns)", "ratio"
    );
    for (message_type, bytes, entries) in &kinds {
        // Warm both, then alternate.
        measure(&plain, entries, args.decisions / 10);
        measure(&checked, entries, args.decisions / 10);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            a.push(measure(&plain, entries, args.decisions));
            b.push(measure(&checked, entries, args.decisions));
        }
        a.sort();
        b.sort();
        let (a, b) = (a[a.len() / 2], b[b.len() / 2]);
        println!(
            "{message_type:<26} {bytes:>7} {:>14} {:>14} {:>8.2}",
            a.as_nanos(),
            b.as_nanos(),
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
    Ok(())
}
