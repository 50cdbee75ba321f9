//! `switchyard invoke`: one message through a plugin exactly as a queue
//! runs it (the same engine, limits, contract checks and imports), without
//! Redis. Key-value state lives in memory (seeded from a file, shown
//! after); what the call publishes is recorded and shown; HTTP goes out
//! under the queue's grant and address checks, or is answered from a file
//! of canned answers; SQL and mail reach a database and a relay only when
//! a URL is given. It prints what came of the call, and exits by outcome.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use switchyard::config::{Config, Needs, PluginRef, QueueConfig, process_env};
use switchyard::metrics::Metrics;
use switchyard::plugin::http::{Canned, Observed, QueueHttp, SeenRequest};
use switchyard::plugin::keyvalue::{KeyValueStore, MemoryKv};
use switchyard::plugin::{CallContext, Delivery, Outcome};
use switchyard::supervisor;

use crate::print_out;

/// How the command was asked to run the call.
#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    /// The plugin: a `.wasm` component.
    plugin: PathBuf,
    /// The message type.
    #[arg(long = "type")]
    message_type: String,
    /// The message body: JSON text, or `@FILE`.
    #[arg(long)]
    body: String,
    /// The message id.
    #[arg(long, default_value = "invoke-1")]
    id: String,
    /// A header of the message, `name=value`; again for more.
    #[arg(long = "header", value_parser = pair)]
    headers: Vec<(String, String)>,
    /// A setting of the plugin's config, `key=value`; again for more.
    #[arg(long = "config", value_parser = pair, conflicts_with = "queue")]
    config: Vec<(String, String)>,
    /// `queues.toml#Queue`: that queue's settings, config and grants (its
    /// secrets from the environment).
    #[arg(long)]
    queue: Option<String>,
    /// Which delivery this is (the attempt the plugin sees).
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// `@FILE`: key-value state to start from, `{"bucket": {"key": "value"}}`.
    #[arg(long)]
    kv: Option<String>,
    /// Grant HTTP to `scheme://host[:port]` (or `*.domain`); again for more.
    #[arg(long = "allow-host", conflicts_with = "queue")]
    allow_hosts: Vec<String>,
    /// `@FILE`: answer HTTP requests from these canned answers,
    /// `[{"method", "url" (a prefix), "status", "headers", "body"}]`,
    /// instead of sending them (the grant still applies).
    #[arg(long)]
    http: Option<String>,
    /// Grant SQL on this PostgreSQL database.
    #[arg(long, conflicts_with = "queue")]
    sql_url: Option<String>,
    /// Grant mail through this SMTP relay.
    #[arg(long, conflicts_with = "queue")]
    smtp_url: Option<String>,
    /// Which compiler makes the plugin's code. `auto`: Winch for a file of
    /// 2 MiB or more (a Python or JavaScript plugin) whose Cranelift code
    /// is not cached, as a running host serves a new version first;
    /// Cranelift otherwise.
    #[arg(long, value_enum, default_value_t = CompilerChoice::Auto)]
    compiler: CompilerChoice,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `--compiler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CompilerChoice {
    Auto,
    Cranelift,
    Winch,
}

fn pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

/// The text of `arg`, or of the file `@path` names.
fn text_or_file(arg: &str, what: &str) -> Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => switchyard::files::read_text(Path::new(path), 64 << 20)
            .with_context(|| format!("reading {what} from {path}")),
        None => Ok(arg.to_owned()),
    }
}

/// The configuration the call runs under: the queue named by `--queue`, or
/// one made of the command's options (key-value and publishing granted,
/// the rest as given), the plugin file the one given either way.
fn configuration(a: &InvokeArgs, plugin: &Path) -> Result<(Config, QueueConfig)> {
    let needs = Needs {
        secrets: true,
        files: true,
        plugins: false,
        redis: false,
    };
    if let Some(spec) = &a.queue {
        let (path, name) = spec
            .rsplit_once('#')
            .context("--queue is queues.toml#Queue")?;
        let config = Config::load_with(Path::new(path), &process_env, needs)?;
        let Some(queue) = config.queues.get(name) else {
            bail!(
                "{path} has no queue {name:?} (it has: {})",
                config.queues.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        let mut queue = queue.clone();
        queue.plugin = PluginRef::File(plugin.to_owned());
        return Ok((config, queue));
    }
    let mut q = toml::Table::new();
    q.insert("plugin".into(), plugin.display().to_string().into());
    q.insert(
        "allowed_hosts".into(),
        toml::Value::Array(a.allow_hosts.iter().map(|h| h.clone().into()).collect()),
    );
    q.insert("keyvalue".into(), toml::Table::new().into());
    q.insert("publish".into(), toml::Value::Array(vec!["*".into()]));
    if !a.config.is_empty() {
        let settings: toml::Table = a
            .config
            .iter()
            .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
            .collect();
        q.insert("config".into(), settings.into());
    }
    if let Some(url) = &a.sql_url {
        let mut sql = toml::Table::new();
        sql.insert("database_url".into(), url.clone().into());
        q.insert("sql".into(), sql.into());
    }
    if let Some(url) = &a.smtp_url {
        let mut mail = toml::Table::new();
        mail.insert("smtp_url".into(), url.clone().into());
        q.insert("mail".into(), mail.into());
    }
    let mut queues = toml::Table::new();
    queues.insert("Invoke".into(), q.into());
    let mut routes = toml::Table::new();
    routes.insert(
        a.message_type.clone(),
        toml::Value::Array(vec!["Invoke".into()]),
    );
    let mut doc = toml::Table::new();
    doc.insert("routes".into(), routes.into());
    doc.insert("queues".into(), queues.into());
    let text = toml::to_string(&doc)?;
    let here = std::env::current_dir()?.join("invoke.toml");
    let config = Config::parse_with(&text, &here, &process_env, needs)?;
    let queue = config.queues["Invoke"].clone();
    Ok((config, queue))
}

/// Key-value state from `{"bucket": {"key": "value"}}`; a value that is
/// not a string is stored as its JSON text.
fn seed(text: &str) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>> {
    let v: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_str(text).context("--kv is {\"bucket\": {\"key\": \"value\"}}")?;
    Ok(v.into_iter()
        .map(|(b, keys)| {
            let keys = keys
                .into_iter()
                .map(|(k, v)| {
                    let bytes = match v {
                        Value::String(s) => s.into_bytes(),
                        other => other.to_string().into_bytes(),
                    };
                    (k, bytes)
                })
                .collect();
            (b, keys)
        })
        .collect())
}

/// A stored value as text: UTF-8 as it is, else base64 (marked).
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(t) => t.to_owned(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

pub(crate) async fn invoke(a: InvokeArgs, capture: crate::invoke_log::Capture) -> Result<ExitCode> {
    let plugin_path = std::path::absolute(&a.plugin)?;
    if let Some(problem) = crate::check::diagnose(&plugin_path) {
        anyhow::bail!("{problem}");
    }
    let body = text_or_file(&a.body, "the body")?;
    let (config, queue) = configuration(&a, &plugin_path)?;
    let engine = supervisor::engine(&config, crate::compiler()?)?;
    let engine = match a.compiler {
        CompilerChoice::Auto => engine,
        CompilerChoice::Cranelift => engine.cranelift_only(),
        CompilerChoice::Winch => engine.winch_only()?,
    };
    let loading = Instant::now();
    let plugin = engine
        .load(&queue.plugin, &supervisor::load_limits(&config), None)
        .await
        .map_err(|e| {
            let text = e.to_string();
            let line = crate::check::one_line(&plugin_path, &text);
            match crate::check::hint(&text) {
                Some(h) => anyhow::anyhow!("{line}\n  fix: {h}"),
                None => anyhow::anyhow!("{line}"),
            }
        })?
        .context("the plugin did not load")?;
    let load_time = loading.elapsed();
    supervisor::fits(&plugin, &queue).map_err(|error| {
        anyhow::anyhow!(
            "{}",
            supervisor::ConfigRefusal::Plugin {
                queues: vec![queue.name.clone()],
                source: queue.plugin.clone(),
                error,
            }
        )
    })?;
    let mut warnings = supervisor::missing_grants(&plugin, &queue);
    if a.queue.is_none() {
        // Said in the command's own terms.
        for w in &mut warnings {
            *w = w
                .replace("queues.Invoke: its plugin", "the plugin")
                .replace("the queue has no [sql]", "no --sql-url was given")
                .replace("the queue has no [mail]", "no --smtp-url was given")
                .replace(
                    "the queue has no allowed_hosts",
                    "no --allow-host was given",
                );
        }
    }

    let metrics = Arc::new(Metrics::default());
    let qm = metrics.queue(&queue.name);
    let secrets = Arc::new(switchyard::secrets::Secrets::new(
        queue.secrets.iter().map(|s| s.value.as_str()),
    ));
    let observed = Arc::new(Observed::default());
    let canned = match &a.http {
        Some(arg) => {
            let text = text_or_file(arg, "the canned answers")?;
            Some(Arc::new(serde_json::from_str::<Canned>(&text).context(
                "--http is [{\"method\", \"url\", \"status\", \"headers\", \"body\"}]",
            )?))
        }
        None => None,
    };
    let http = QueueHttp::new(&queue.name, queue.http.clone(), secrets.clone(), qm.clone())
        .observed(observed.clone(), canned);
    let seeded = match &a.kv {
        Some(arg) => seed(&text_or_file(arg, "the key-value state")?)?,
        None => BTreeMap::new(),
    };
    let kv = Arc::new(Mutex::new(MemoryKv::seeded(seeded)));
    let pools = switchyard::plugin::pools::Pools::default();
    let cx = CallContext {
        queue: queue.name.as_str().into(),
        timeout: queue.handler_timeout,
        memory_bytes: queue.memory_mib as usize * 1024 * 1024,
        config: Arc::new(queue.plugin_config.clone()),
        http: Arc::new(http),
        secrets,
        keyvalue: queue
            .keyvalue
            .clone()
            .map(|grant| KeyValueStore::in_memory(kv.clone(), grant)),
        publish: Arc::new(queue.publish.clone()),
        max_publish_bytes: config.ingress.max_entry_bytes,
        sql: pools.sql(&queue, &qm),
        mail: pools.mail(&queue, &qm),
        metrics: qm,
    };
    let delivery = Delivery {
        id: a.id.clone(),
        message_type: a.message_type.clone(),
        queue: queue.name.clone(),
        body,
        headers: a.headers.clone(),
        attempt: a.attempt.max(1),
        trace: None,
    };
    let plugin = Arc::new(plugin);
    let started = Instant::now();
    let result = engine.call(plugin.clone(), cx, delivery, None).await;
    let took = started.elapsed();

    let (outcome, reason, delay, code) = match &result.outcome {
        Outcome::Success => ("success", None, None, 0),
        Outcome::Retry { reason, delay } => ("retry", Some(reason.clone()), *delay, 3),
        Outcome::Reject { reason } => ("reject", Some(reason.clone()), None, 4),
        Outcome::Failed { kind, reason } => (kind.label(), Some(reason.clone()), None, 5),
    };
    let (logs, output) = capture.take();
    let requests = observed.requests();
    let (state, written) = {
        let mut kv = kv.lock().expect("key-value memory lock");
        (kv.contents(), kv.written().to_vec())
    };
    let report = Report {
        plugin: &plugin_path,
        version: &plugin.hash,
        contract: plugin.contract(),
        load_time,
        from_cache: plugin.from_cache,
        compiler: plugin.compiler(),
        outcome,
        reason,
        delay,
        took,
        logs,
        output,
        requests,
        state,
        written,
        published: &result.published,
        warnings,
    };
    if a.json {
        print_out(&format!("{}\n", report.json()))?;
    } else {
        print_out(&report.text())?;
    }
    Ok(ExitCode::from(code))
}

/// What the command prints.
struct Report<'a> {
    plugin: &'a Path,
    version: &'a str,
    contract: &'a str,
    load_time: Duration,
    from_cache: bool,
    compiler: &'static str,
    outcome: &'static str,
    reason: Option<String>,
    delay: Option<Duration>,
    took: Duration,
    logs: Vec<(String, String)>,
    output: Option<String>,
    requests: Vec<SeenRequest>,
    state: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    written: Vec<(String, String)>,
    published: &'a [switchyard::message::Published],
    warnings: Vec<String>,
}

impl Report<'_> {
    fn json(&self) -> Value {
        let state: serde_json::Map<String, Value> = self
            .state
            .iter()
            .map(|(b, keys)| {
                let keys: serde_json::Map<String, Value> = keys
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(shown(v))))
                    .collect();
                (b.clone(), Value::Object(keys))
            })
            .collect();
        json!({
            "plugin": { "file": self.plugin, "version": self.version, "contract": self.contract,
                        "load_ms": self.load_time.as_secs_f64() * 1e3, "from_cache": self.from_cache,
                        "compiler": self.compiler },
            "outcome": self.outcome,
            "reason": self.reason,
            "delay_ms": self.delay.map(|d| d.as_millis() as u64),
            "elapsed_ms": self.took.as_secs_f64() * 1e3,
            "logs": self.logs.iter().map(|(l, m)| json!({"level": l, "message": m})).collect::<Vec<_>>(),
            "output": self.output,
            "requests": self.requests,
            "keyvalue": state,
            "written": self.written.iter().map(|(b, k)| json!([b, k])).collect::<Vec<_>>(),
            "published": self.published.iter().map(|p| json!({
                "type": p.message_type, "id": p.id, "body": p.body,
                "headers": p.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "warnings": self.warnings,
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write;
        use switchyard::text::Escaped;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "plugin {} (version {}, contract {}), {} {} in {:.1} ms",
            self.plugin.display(),
            self.version,
            self.contract,
            if self.from_cache {
                "loaded from the cache, code by"
            } else {
                "compiled by"
            },
            match self.compiler {
                "winch" => "Winch",
                "cranelift" => "Cranelift",
                other => other,
            },
            self.load_time.as_secs_f64() * 1e3
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = write!(out, "outcome: {}", self.outcome);
        if let Some(d) = self.delay {
            let _ = write!(out, " (again after {} ms)", d.as_millis());
        }
        if let Some(r) = &self.reason {
            let _ = write!(out, ": {}", Escaped(r));
        }
        let _ = writeln!(out, "\ntime: {:.2} ms", self.took.as_secs_f64() * 1e3);
        if !self.logs.is_empty() {
            out.push_str("log:\n");
            for (level, message) in &self.logs {
                let _ = writeln!(out, "  {level:<5} {}", Escaped(message));
            }
        }
        if let Some(o) = &self.output {
            let _ = writeln!(out, "stdout/stderr:\n  {}", Escaped(o));
        }
        if !self.requests.is_empty() {
            out.push_str("requests:\n");
            for r in &self.requests {
                let result = match (r.status, &r.error) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "?".into(),
                };
                let _ = writeln!(out, "  {} {} -> {}", r.method, Escaped(&r.url), result);
            }
        }
        if !self.written.is_empty() {
            out.push_str("key-value written:\n");
            for (b, k) in &self.written {
                let value = self.state.get(b).and_then(|keys| keys.get(k));
                let _ = writeln!(
                    out,
                    "  {}/{} = {}",
                    Escaped(b),
                    Escaped(k),
                    value.map_or("(deleted)".into(), |v| Escaped(&shown(v)).to_string())
                );
            }
        }
        if !self.published.is_empty() {
            out.push_str("published:\n");
            for p in self.published {
                let _ = writeln!(
                    out,
                    "  {} id={} body={}",
                    Escaped(&p.message_type),
                    Escaped(&p.id),
                    Escaped(&p.body)
                );
            }
        }
        out
    }
}
