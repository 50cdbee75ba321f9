//! `switchyard check`: a configuration validated as `run` would, plugins
//! compiled and checked against the contract, without starting.

use std::process::ExitCode;

use anyhow::Result;
use switchyard::config::Config;
use switchyard::metrics::Metrics;
use switchyard::supervisor;

use crate::{ConfigArg, compiler};

/// Validates a configuration exactly as `run` would before starting: the
/// file, then every plugin compiled and checked against the contract.
pub(crate) async fn check(config: &ConfigArg) -> Result<ExitCode> {
    let config = match Config::load(&config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &config.warnings {
        println!("warning: {w}");
    }
    let engine = supervisor::engine(&config, compiler()?)?;
    let metrics = Metrics::default();
    match supervisor::prepare(&engine, &config, &Default::default(), &metrics).await {
        Ok(plugins) => {
            for queue in config.queues.values() {
                if let Some(plugin) = plugins.get(&queue.plugin) {
                    for warning in supervisor::missing_grants(plugin, queue) {
                        println!("warning: {warning}");
                    }
                }
                let routed = config.routes.values().any(|qs| qs.contains(&queue.name));
                if !routed {
                    println!(
                        "warning: queues.{}: no message type routes to this queue",
                        queue.name
                    );
                }
            }
            println!(
                "{}: OK ({} message types, {} queues, {} plugins)",
                config.path.display(),
                config.routes.len(),
                config.queues.len(),
                plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refusals) => {
            eprintln!(
                "{} refused ({} problem{}):",
                config.path.display(),
                refusals.0.len(),
                if refusals.0.len() == 1 { "" } else { "s" }
            );
            for r in &refusals.0 {
                // A refusal may quote the compiler or the plugin's own names.
                eprintln!("  {}", switchyard::text::Escaped(&r.to_string()));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
