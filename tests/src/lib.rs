//! Support for Switchyard's integration tests: a real `redis-server` per test
//! on a free loopback port, the real plugins built from `plugins/`, a unique
//! key prefix per test, and the host run in-process or as a child process
//! that can be killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;
use redis::aio::MultiplexedConnection;
use switchyard::admin::status::DeadLetter;
use switchyard::config::Config;
use switchyard::plugin::Compiler;
use switchyard::stream::Entry;
use switchyard::supervisor::RunningHost;

pub use switchyard;

pub mod chaos;
pub mod redis_server;

pub use redis_server::RedisServer;

/// The six queues chat.ended fans out to (seed 000).
pub const CHAT_ENDED_QUEUES: &[&str] = &[
    "Persistence",
    "Email",
    "Ticket",
    "Salesforce",
    "Zendesk",
    "WebHook",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Where the built plugins are.
pub fn plugin_dir() -> PathBuf {
    repo_root().join("target/wasm32-wasip2/release")
}

/// Builds the plugins once per test binary (a no-op when they are up to
/// date) and returns the path of one.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet"])
            .current_dir(repo_root().join("plugins"))
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build the plugins");
        assert!(status.success(), "building the plugins failed");
    });
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "plugin {} was not built", path.display());
    path
}

/// Another version of a plugin: the same component with a custom section
/// appended, so it behaves the same and has another content hash.
pub fn plugin_version(base: &[u8], tag: u32) -> Vec<u8> {
    let name = b"switchyard-test-version";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&tag.to_le_bytes());
    let mut out = base.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // its size: < 128, one LEB128 byte
    out.extend_from_slice(&section);
    out
}

/// A valid component that is slow to compile: a core module of `functions`
/// functions, each a chain of arithmetic, and nothing exported. About 9 s of
/// CPU for 60,000 functions on this kind of machine.
pub fn slow_component(functions: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len(), out);
        out.extend_from_slice(payload);
    }
    // One function type, (i32) -> i32.
    let types = [1u8, 0x60, 1, 0x7f, 1, 0x7f];
    let mut funcs = Vec::new();
    leb(functions, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, functions));
    // local.get 0, then (i32.const k; i32.add; i32.const 3; i32.mul) x 20.
    let mut body = vec![0u8, 0x20, 0];
    for k in 0..20u8 {
        body.extend_from_slice(&[0x41, k & 0x3f, 0x6a, 0x41, 3, 0x6c]);
    }
    body.push(0x0b);
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &types, &mut module);
    section(3, &funcs, &mut module);
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

/// The version name the host gives a plugin file: the first 16 hex digits
/// of its SHA-256.
pub fn version_hash(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A redis-server for one test, stopped when dropped.
#[derive(Debug)]
pub struct Redis {
    pub server: RedisServer,
    pub client: redis::Client,
    url: String,
}

impl Redis {
    pub fn start() -> Self {
        let server = RedisServer::start().expect("starting redis-server");
        let url = server.url();
        let client = redis::Client::open(url.as_str()).expect("redis url");
        Redis {
            server,
            client,
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection for the test itself.
    pub async fn conn(&self) -> MultiplexedConnection {
        connect(&self.client).await
    }
}

/// A connection for a test: with response timeouts far above anything a
/// busy machine makes a test wait (redis-rs waits 500 ms by default; a test
/// reading hundreds of MiB of dead letters needs more).
pub async fn connect(client: &redis::Client) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connecting to the test redis-server")
}

/// Values for the secrets the shipped queues.toml reads from the
/// environment.
pub const SHIPPED_SECRETS: &[(&str, &str)] = &[
    ("WEBHOOK_SIGNING_SECRET", "whsec-shipped-test"),
    ("ZENDESK_API_TOKEN", "zd-shipped-test"),
    ("SALESFORCE_ACCESS_TOKEN", "sf-shipped-test"),
    ("TICKET_API_TOKEN", "tk-shipped-test"),
    (
        "PERSISTENCE_DATABASE_URL",
        "postgres://switchyard:pw@127.0.0.1:5432/chat",
    ),
    ("EMAIL_SMTP_URL", "smtp://127.0.0.1:2525"),
];

/// A queues.toml written for one test. The text may use `@PLUGINS@` (the
/// built plugin folder) and `@PREFIX@` (a prefix unique to this test); the
/// ingress stream is `@PREFIX@:ingress` unless the text sets one.
#[derive(Debug)]
pub struct TestConfig {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub prefix: String,
    pub config: Config,
}

impl TestConfig {
    pub fn new(text: &str) -> Self {
        Self::with_env(text, &[])
    }

    /// [`TestConfig::new`], with secrets (`{ env = "NAME" }`) read from
    /// `env`, not from this process's environment.
    pub fn with_env(text: &str, env: &[(&str, &str)]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        plugin("sleep");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("switchyard-test-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = text
            .replace("@PLUGINS@", plugin_dir().to_str().unwrap())
            .replace("@PREFIX@", &prefix);
        if !text.contains("[host]") {
            text = format!(
                "[host]\nprefix = \"{prefix}\"\nshutdown_timeout = \"5s\"\ncache_dir = \"cache\"\n{text}"
            );
        }
        if !text.contains("[ingress]") {
            text = format!(
                "[ingress]\nstream = \"{prefix}:ingress\"\nvisibility_timeout = \"1s\"\n{text}"
            );
        }
        let path = dir.join("queues.toml");
        std::fs::write(&path, &text).unwrap();
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let config =
            Config::load_with_env(&path, &lookup).unwrap_or_else(|e| panic!("{e}\n{text}"));
        TestConfig {
            dir,
            path,
            prefix,
            config,
        }
    }

    pub fn ingress(&self) -> &str {
        &self.config.ingress.stream
    }

    pub fn queue_stream(&self, queue: &str) -> String {
        format!("{}:queue:{queue}", self.prefix)
    }

    pub fn dead_stream(&self) -> String {
        format!("{}:dead", self.prefix)
    }
}

impl Drop for TestConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// XADDs one entry and returns its id.
pub async fn xadd(
    conn: &mut MultiplexedConnection,
    stream: &str,
    fields: &[(&str, &str)],
) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(conn).await.expect("XADD")
}

/// XADDs a message of type `t` with id `id` and `body` to `cfg`'s ingress.
pub async fn send_message(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    t: &str,
    id: &str,
    body: &str,
) {
    xadd(
        conn,
        cfg.ingress(),
        &[("type", t), ("id", id), ("body", body)],
    )
    .await;
}

/// Every entry of a stream.
pub async fn entries(conn: &mut MultiplexedConnection, stream: &str) -> Vec<Entry> {
    let v: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    switchyard::stream::parse_entries(&v).expect("an XRANGE reply")
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The value of a field of an entry.
pub fn field(entry: &Entry, name: &str) -> Option<String> {
    entry
        .fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The dead-letter records of a test.
pub async fn dead_letters(conn: &mut MultiplexedConnection, cfg: &TestConfig) -> Vec<DeadLetter> {
    entries(conn, &cfg.dead_stream())
        .await
        .iter()
        .map(DeadLetter::from_entry)
        .collect()
}

/// The results an `io-probe` message reported: the reason of its dead
/// letter, a JSON array with one result per step. Waits up to `limit`.
pub async fn probe_report(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    id: &str,
    limit: Duration,
) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let found = dead_letters(conn, cfg)
            .await
            .into_iter()
            .find(|d| d.message_id == id);
        if let Some(d) = found {
            let report = d.reason.trim_start_matches("rejected by the plugin: ");
            return serde_json::from_str(report)
                .unwrap_or_else(|e| panic!("the report of {id} is not JSON ({e}): {}", d.reason));
        }
        assert!(
            started.elapsed() < limit,
            "no report from {id} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// XADDs an `io-probe` message of `message_type` with `id` that runs
/// `steps`, then does `then` (`report`, `ok`, `retry`, `trap`).
/// Sends an `io-probe` message whose steps end in a report, and returns
/// the report.
pub async fn probe(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    message_type: &str,
    id: &str,
    steps: serde_json::Value,
    limit: Duration,
) -> Vec<serde_json::Value> {
    send_probe(conn, cfg, message_type, id, steps, "report").await;
    probe_report(conn, cfg, id, limit).await
}

/// A fresh, empty folder for one test's files.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn send_probe(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    message_type: &str,
    id: &str,
    steps: serde_json::Value,
    then: &str,
) {
    let body = serde_json::json!({ "steps": steps, "then": then }).to_string();
    xadd(
        conn,
        cfg.ingress(),
        &[("type", message_type), ("id", id), ("body", &body)],
    )
    .await;
}

/// Entries delivered to the group and not acknowledged (0 before the group
/// exists).
pub async fn pending(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> u64 {
    let v: Value = match redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOGROUP") => return 0,
        Err(e) => panic!("XPENDING {stream}: {e}"),
    };
    match v {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Pending entries per consumer.
pub async fn pending_by_consumer(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Vec<(String, u64)> {
    let v: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .expect("XPENDING");
    let Value::Array(parts) = v else {
        return Vec::new();
    };
    let Some(Value::Array(consumers)) = parts.get(3) else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|c| {
            let Value::Array(kv) = c else { return None };
            let name = string(kv.first()?)?;
            let n = string(kv.get(1)?)?.parse().ok()?;
            Some((name, n))
        })
        .collect()
}

/// Entries of the stream never delivered to the group: those after the
/// group's last-delivered id. (XINFO GROUPS `lag` is not used: Redis 7.0
/// miscounts it after an AOF reload.)
pub async fn lag(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> Option<u64> {
    let v: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .ok()?;
    let Value::Array(groups) = v else { return None };
    for g in groups {
        let Value::Array(flat) = g else { continue };
        let pairs: Vec<(String, Value)> = flat
            .chunks_exact(2)
            .filter_map(|kv| Some((string(&kv[0])?, kv[1].clone())))
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("name").as_ref().and_then(string).as_deref() != Some(group) {
            continue;
        }
        let last = get("last-delivered-id").as_ref().and_then(string)?;
        let after: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(format!("({last}"))
            .arg("+")
            .query_async(conn)
            .await
            .ok()?;
        return match after {
            Value::Array(entries) => Some(entries.len() as u64),
            _ => Some(0),
        };
    }
    None
}

/// The handlings the `recorder` plugin logged in `logs`: how many times each
/// (queue, message id) was handled.
pub fn handlings(logs: &[PathBuf]) -> std::collections::BTreeMap<(String, String), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.split("record id=").nth(1) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let id = words.next().unwrap_or_default().to_owned();
            let queue = words
                .next()
                .and_then(|w| w.strip_prefix("queue="))
                .unwrap_or_default()
                .to_owned();
            *counts.entry((queue, id)).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits until the file at `log` has a line containing `needle`, and
/// returns that line; fails after `limit` with the whole log.
pub async fn wait_for_line(log: &Path, needle: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {needle:?} in the log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 20 ms until it returns true, or fails after `limit`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `switchyard-under-test` binary cargo builds beside the test binaries
/// (target/<profile>/, while tests run from target/<profile>/deps/ and
/// benchmark programs from target/<profile>/).
pub fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("switchyard-under-test"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("switchyard-under-test was not built (looked at {candidates:?})"))
}

/// Compiles plugins with the test build of the host, as `switchyard run`
/// compiles with itself.
pub fn compiler() -> Compiler {
    Compiler::at(host_binary())
}

/// Starts a host in this process on `cfg`'s configuration.
pub fn start_host(config: &Config, redis: &Redis) -> RunningHost {
    RunningHost::start(config.clone(), redis.client.clone(), compiler())
}

/// The host as a child process, killed (SIGKILL) when dropped if still
/// running.
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
}

impl HostProcess {
    /// Starts `switchyard run` with `cfg` against `redis`; `env` adds
    /// environment variables (a failpoint).
    pub fn spawn(cfg: &TestConfig, redis: &Redis, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(host_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg.path)
            .arg("--redis-url")
            .arg(redis.url())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        HostProcess {
            child: cmd.spawn().expect("starting the host process"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by pid.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Starts `switchyard run` with `cfg` against the Redis at `url`, its log
    /// (plugin lines and warnings) written to `log`.
    pub fn spawn_logged(cfg: &TestConfig, url: &str, log: &Path) -> Result<Self> {
        Self::spawn_with(&cfg.path, url, log, &[("RUST_LOG", "warn,plugin=info")])
    }

    /// Starts `switchyard run --config config` against the Redis at `url`,
    /// its log written to `log`, with `env` added to its environment.
    pub fn spawn_with(config: &Path, url: &str, log: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(host_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .arg("--redis-url")
            .arg(url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting the host process")?;
        Ok(HostProcess { child })
    }

    /// [`HostProcess::spawn_with`], in a mount namespace of its own where
    /// `hosts` is /etc/hosts: names of the test's choosing resolve to the
    /// addresses it chooses, for this process only. Needs root (CI and the
    /// test machine run as root) and util-linux's `unshare`.
    pub fn spawn_with_hosts(
        config: &Path,
        url: &str,
        log: &Path,
        env: &[(&str, &str)],
        hosts: &Path,
    ) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(hosts)
            .arg(host_binary())
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--redis-url")
            .arg(url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .context("starting the host process under unshare (util-linux)")?;
        Ok(HostProcess { child })
    }

    /// The most memory the process has held (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the host's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    /// The pids of the process's children (plugin compilers).
    pub fn children(&self) -> Vec<u32> {
        let pid = self.pid();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so read after
            // its closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                found.push(child);
            }
        }
        found
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the host")? {
                return Ok(status);
            }
            if started.elapsed() > limit {
                bail!("the host did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Logs of in-process hosts go to the test's output (shown on failure), in
/// the host's own format.
pub fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .fmt_fields(switchyard::text::SafeFields)
            .with_test_writer()
            .try_init();
    });
}
