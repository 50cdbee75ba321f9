//! `switchyard check`: a configuration validated as `run` would, plugins
//! compiled and checked against the contract, without starting.

use std::process::ExitCode;

use anyhow::Result;
use switchyard::config::Config;
use switchyard::metrics::Metrics;
use switchyard::plugin::Codegen;
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

/// What is wrong with a file that is not a plugin, said before it is
/// compiled: not WebAssembly at all, or a core module.
pub(crate) fn diagnose(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    if read < 8 || &head[..4] != b"\0asm" {
        return Some(format!(
            "{}: is not a WebAssembly file (it does not start with \\0asm): a plugin is the .wasm component a build writes",
            path.display()
        ));
    }
    if head[4..] == [1, 0, 0, 0] {
        return Some(format!(
            "{}: is a core WebAssembly module, not a component: build for wasm32-wasip2 (cargo build --release --target wasm32-wasip2), use componentize-py or componentize-js, or wrap it with `wasm-tools component new`",
            path.display()
        ));
    }
    None
}

/// How to fix a plugin a load refused, for the cases met in practice.
pub(crate) fn hint(error: &str) -> Option<&'static str> {
    if error.contains("unexpected end-of-file") || error.contains("out of bounds (bound") {
        Some("the file is cut short: build it again, or copy it whole")
    } else if error.contains("no export switchyard:plugin/handler") {
        Some(
            "a plugin exports switchyard:plugin/handler: build it against world `plugin` of wit/switchyard-plugin@0.2.0 (or @0.1.0)",
        )
    } else if error.contains("has the wrong type") {
        Some(
            "generate the bindings again from the contract's WIT, the version the plugin is built against",
        )
    } else {
        None
    }
}

/// `check --plugin FILE [--queue queues.toml#Queue]`: one plugin file
/// checked against every contract version the host runs (compiled, or
/// taken from the compiled-code cache a running host shares), and with a
/// queue, its imports against the queue's grants.
pub(crate) async fn check_plugin(
    plugin: &std::path::Path,
    queue: Option<&str>,
) -> Result<ExitCode> {
    use switchyard::config::{Needs, PluginRef, process_env};
    let path = std::path::absolute(plugin)?;
    if let Some(problem) = diagnose(&path) {
        eprintln!("{problem}");
        return Ok(ExitCode::FAILURE);
    }
    let (config, queue) = match queue {
        Some(spec) => {
            let Some((file, name)) = spec.rsplit_once('#') else {
                anyhow::bail!("--queue is queues.toml#Queue");
            };
            let needs = Needs {
                secrets: false,
                files: false,
                plugins: false,
                redis: false,
            };
            let config = Config::load_with(std::path::Path::new(file), &process_env, needs)?;
            let Some(q) = config.queues.get(name).cloned() else {
                anyhow::bail!(
                    "{file} has no queue {name:?} (it has: {})",
                    config.queues.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            (config, Some(q))
        }
        None => {
            let here = std::env::current_dir()?.join("check.toml");
            let text = format!(
                "[routes]\n\"check\" = [\"Check\"]\n[queues.Check]\nplugin = {:?}\n",
                path.display().to_string()
            );
            (
                Config::parse_with(&text, &here, &process_env, Needs::STREAMS)?,
                None,
            )
        }
    };
    let engine = supervisor::engine(&config, compiler()?)?;
    let loaded = engine
        .load(
            &PluginRef::File(path.clone()),
            &supervisor::load_limits(&config),
            None,
        )
        .await;
    let plugin = match loaded {
        Ok(Some(p)) => p,
        Ok(None) => unreachable!("a load with no version to skip loads"),
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", switchyard::text::Escaped(&one_line(&path, &text)));
            if let Some(h) = hint(&text) {
                eprintln!("  fix: {h}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{}: OK: contract {}, version {}, {} ({:.0} ms)",
        path.display(),
        plugin.contract(),
        plugin.hash,
        match (plugin.from_cache, plugin.codegen) {
            (true, Some(Codegen::Winch)) => "Winch's code from the cache",
            (true, _) => "Cranelift's code from the cache",
            (false, Some(Codegen::Winch)) => "compiled by Winch",
            (false, _) => "compiled by Cranelift",
        },
        plugin.compile_time.as_secs_f64() * 1e3
    );
    // The contract's own interfaces and the capabilities; WASI's plumbing
    // (cli, io, clocks...) counted.
    let (own, wasi): (Vec<&String>, Vec<&String>) = plugin.imports.iter().partition(|i| {
        i.starts_with("switchyard:") || switchyard::plugin::contract::Capability::of(i).is_some()
    });
    println!(
        "  imports: {}{}",
        own.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if wasi.is_empty() {
            String::new()
        } else {
            format!(" and {} WASI interfaces", wasi.len())
        }
    );
    let mut failed = false;
    if let Some(q) = &queue {
        if let Err(error) = supervisor::fits(&plugin, q) {
            eprintln!(
                "{}",
                supervisor::ConfigRefusal::Plugin {
                    queues: vec![q.name.clone()],
                    source: PluginRef::File(path.clone()),
                    error,
                }
            );
            failed = true;
        }
        for w in supervisor::missing_grants(&plugin, q) {
            println!("warning: {w}");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A load error as one line, naming the file once.
pub(crate) fn one_line(path: &std::path::Path, error: &str) -> String {
    let first = error.lines().next().unwrap_or_default();
    let shown = path.display().to_string();
    if first.starts_with(&shown) {
        first.to_owned()
    } else {
        format!("{shown}: {first}")
    }
}
