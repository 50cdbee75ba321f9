//! `switchyard demo`: a local run end to end. Starts a private redis-server
//! on loopback when no Redis is given, local HTTP services that stand in
//! for the remote APIs the WebHook, Zendesk, Salesforce and Ticket queues
//! call (the queues' URLs and grants are pointed at them), a private
//! PostgreSQL with the schema migrated for the queues that have `[sql]`,
//! and an SMTP receiver for those that have `[mail]`; runs the host, XADDs
//! sample chat events (malformed ones among them), waits until every queue
//! is drained, and prints what each queue did, what each stand-in
//! received, the rows each table gained, the mails received, and what was
//! dead-lettered.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use switchyard_standins::postgres::Postgres;
use switchyard_standins::smtp::SmtpReceiver;
use switchyard_standins::{Api, StandIn};

use switchyard::admin::status;
use switchyard::config::{Config, QueueConfig};
use switchyard::grants::{AllowedHost, HttpGrant};
use switchyard::plugin::Compiler;
use switchyard::supervisor::RunningHost;

/// A redis-server this process started, stopped (by pid) when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    pub url: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl LocalRedis {
    /// Starts `redis-server` on a free loopback port, without persistence,
    /// and waits until it answers.
    pub fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("switchyard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting redis-server (install it with: apt-get install redis-server)")?;
        let url = format!("redis://127.0.0.1:{port}/");
        let redis = LocalRedis { url, child, dir };
        let client = redis::Client::open(redis.url.as_str())?;
        let started = Instant::now();
        loop {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(redis);
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the sample events: one JSON object a line, field to value; a value
/// that is not a string is sent as its JSON text (so `body` may be an object,
/// or a string holding broken JSON).
pub fn read_events(path: &Path) -> Result<Vec<Vec<(String, String)>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), n + 1))?;
        events.push(
            object
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
        );
    }
    Ok(events)
}

/// How the demo reads the secrets of the configuration `text`: the
/// environment, or for a secret it lacks a made-up value (the demo's
/// stand-ins accept whatever secrets the configuration holds). A queue's
/// `sql.database_url` and `mail.smtp_url` get placeholders whatever the
/// environment says: the demo points them at its own servers.
pub fn secrets_for(text: &str) -> impl Fn(&str) -> Option<String> + use<> {
    let mut placeholders = std::collections::HashMap::new();
    let queues = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("queues").and_then(|q| q.as_table()).cloned())
        .unwrap_or_default();
    for queue in queues.values() {
        for (section, key, url) in [
            ("sql", "database_url", "postgres://demo@127.0.0.1/demo"),
            ("mail", "smtp_url", "smtp://127.0.0.1:25"),
        ] {
            if let Some(name) = queue
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.get("env"))
                .and_then(|v| v.as_str())
            {
                placeholders.insert(name.to_owned(), url.to_owned());
            }
        }
    }
    move |name| {
        placeholders
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .or_else(|| {
                Some(format!(
                    "demo-{}",
                    name.to_ascii_lowercase().replace('_', "-")
                ))
            })
    }
}

/// The API a queue of the shipped configuration calls, by its name, with
/// the credentials its configuration holds.
fn api_of(queue: &QueueConfig) -> Option<Api> {
    let setting = |key: &str| {
        queue
            .plugin_config
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Some(match queue.name.as_str() {
        "WebHook" => Api::WebHook {
            secret: setting("signing_secret"),
        },
        "Zendesk" => Api::Zendesk {
            email: setting("email"),
            token: setting("api_token"),
        },
        "Salesforce" => Api::Salesforce {
            token: setting("access_token"),
        },
        "Ticket" => Api::Tickets {
            token: setting("api_token"),
        },
        _ => return None,
    })
}

/// `url` with its scheme and host replaced by `origin`'s.
fn rebase(url: &str, origin: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{origin}{path}")
}

/// Every URL among a queue's settings (strings, and the values of tables
/// such as `site_urls`) pointed at `origin`.
fn point_at(value: &mut serde_json::Value, origin: &str) {
    match value {
        serde_json::Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            *s = rebase(s, origin);
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| point_at(v, origin)),
        _ => {}
    }
}

/// Starts a stand-in for each queue that calls a remote API, and points the
/// queue's URLs and grant at it.
pub async fn start_standins(config: &mut Config) -> Result<Vec<(String, StandIn)>> {
    let mut started = Vec::new();
    for queue in config.queues.values_mut() {
        let Some(api) = api_of(queue) else { continue };
        let standin = StandIn::start(api)
            .await
            .context("starting a stand-in HTTP service")?;
        let origin = standin.url();
        for value in queue.plugin_config.values_mut() {
            point_at(value, &origin);
        }
        queue.http.grant = HttpGrant {
            allowed: vec![AllowedHost::parse(&origin)?],
        };
        eprintln!(
            "demo: {} calls a stand-in for the {} at {origin}",
            queue.name,
            standin.api().name()
        );
        started.push((queue.name.clone(), standin));
    }
    Ok(started)
}

/// The private PostgreSQL and SMTP receiver the demo's queues use.
#[derive(Debug, Default)]
pub struct LocalServices {
    pub postgres: Option<Postgres>,
    pub smtp: Option<SmtpReceiver>,
}

/// Starts a private PostgreSQL (database `chat`) if a queue has `[sql]`,
/// points every such queue at it and applies its migrations; starts an SMTP
/// receiver if a queue has `[mail]` and points every such queue at it.
pub async fn start_services(config: &mut Config) -> Result<LocalServices> {
    let mut services = LocalServices::default();
    if config.queues.values().any(|q| q.sql.is_some()) {
        let postgres = tokio::task::spawn_blocking(|| Postgres::start("chat"))
            .await?
            .context("starting a private PostgreSQL")?;
        eprintln!("demo: started PostgreSQL on 127.0.0.1:{}", postgres.port());
        for queue in config.queues.values_mut() {
            let Some(sql) = &mut queue.sql else { continue };
            sql.database_url = postgres.url();
            if sql.migrations.is_some() {
                let report = switchyard::migrate::migrate(queue).await?;
                eprintln!(
                    "demo: {} migrated its database ({} applied)",
                    queue.name,
                    report.applied.len()
                );
            }
        }
        services.postgres = Some(postgres);
    }
    if config.queues.values().any(|q| q.mail.is_some()) {
        let smtp = SmtpReceiver::start()
            .await
            .context("starting an SMTP receiver")?;
        for queue in config.queues.values_mut() {
            let Some(mail) = &mut queue.mail else {
                continue;
            };
            mail.smtp_url = smtp.url();
            mail.username = None;
            mail.password = None;
            eprintln!(
                "demo: {} sends mail to a receiver at {}",
                queue.name,
                smtp.url()
            );
        }
        services.smtp = Some(smtp);
    }
    Ok(services)
}

impl LocalServices {
    /// The rows in each table of the database, the migrations' own
    /// bookkeeping left out.
    pub async fn table_rows(&self) -> Result<Vec<(String, i64)>> {
        let Some(postgres) = &self.postgres else {
            return Ok(Vec::new());
        };
        let (client, connection) =
            tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
                   AND table_name <> 'switchyard_migrations'
                 ORDER BY 1",
                &[],
            )
            .await?;
        let mut rows = Vec::new();
        for table in tables {
            let name: String = table.get(0);
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
                .await?
                .get(0);
            rows.push((name, n));
        }
        drop(client);
        let _ = connection.await;
        Ok(rows)
    }

    /// What the database and the SMTP receiver hold, for the summary.
    pub async fn summary(&self) -> Result<String> {
        let mut text = String::new();
        if self.postgres.is_some() {
            let rows = self.table_rows().await?;
            let total: i64 = rows.iter().map(|(_, n)| n).sum();
            let filled = rows.iter().filter(|(_, n)| *n > 0).count();
            text.push_str(&format!(
                "PostgreSQL: {total} rows written, in {filled} of its {} tables\n",
                rows.len()
            ));
            for (table, n) in rows.iter().filter(|(_, n)| *n > 0) {
                text.push_str(&format!("  {table:<28} {n:>4}\n"));
            }
            text.push('\n');
        }
        if let Some(smtp) = &self.smtp {
            text.push_str(&format!("Mail relay: {}\n\n", smtp.summary()));
        }
        Ok(text)
    }
}

/// Runs the demo.
pub async fn run(
    mut config: Config,
    redis_url: Option<String>,
    events: &Path,
    compiler: Compiler,
) -> Result<()> {
    let events = read_events(events)?;
    let (_local, url) = match redis_url {
        Some(url) => {
            // Someone else's Redis: keep the demo's keys apart.
            let tag = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            config.host.prefix = format!("switchyard-demo-{tag}");
            config.ingress.stream = format!("{}:chat:events", config.host.prefix);
            (None, url)
        }
        None => {
            let local = LocalRedis::start()?;
            let url = local.url.clone();
            eprintln!("demo: started redis-server at {url}");
            (Some(local), url)
        }
    };
    let redis = crate::redis(&url, &config)?;
    let mut conn = redis.connect().await?;
    let keys = switchyard::stream::Keys::of(&config, redis.is_cluster());
    let standins = start_standins(&mut config).await?;
    let services = start_services(&mut config).await?;

    let host = RunningHost::start(config.clone(), redis.clone(), compiler);
    eprintln!(
        "demo: XADDing {} sample events to {}",
        events.len(),
        config.ingress.stream
    );
    for fields in &events {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&config.ingress.stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut conn).await?;
    }

    let started = Instant::now();
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if host.is_finished() {
            return host
                .stop()
                .await
                .and_then(|()| bail!("the host stopped early"));
        }
        let s = match status::read(&mut conn, &config, &keys, 0).await {
            Ok(s) => s,
            Err(e) => {
                host.stop().await?;
                return Err(e);
            }
        };
        if s.is_idle() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            eprintln!("demo: not drained after 120 s; stopping anyway");
            last = Some(s);
            break;
        }
    }
    let metrics = host.metrics.clone();
    host.stop().await?;

    let s = match last {
        Some(s) => s,
        None => status::read(&mut conn, &config, &keys, 50).await?,
    };
    println!(
        "\n=== Switchyard demo: {} events in {:.1} s ===\n",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "Router: {} routed, {} dead-lettered\n",
        metrics
            .router
            .routed
            .load(std::sync::atomic::Ordering::Relaxed),
        metrics
            .router
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "{:<14} {:>9} {:>10} {:>8} {:>7} {:>9} {:>14}",
        "QUEUE", "ATTEMPTS", "SUCCEEDED", "RETRIED", "FAILED", "REJECTED", "DEAD-LETTERED"
    );
    for (name, c) in metrics.queues() {
        println!(
            "{:<14} {:>9} {:>10} {:>8} {:>7} {:>9} {:>14}",
            name, c.attempts, c.succeeded, c.retried, c.failed, c.rejected, c.dead_lettered
        );
    }
    println!("\nWhat the remote APIs' stand-ins received:\n");
    for (queue, standin) in &standins {
        println!("{queue} -> {}\n", standin.summary());
    }
    print!("{}", services.summary().await?);

    println!("{s}");
    Ok(())
}
