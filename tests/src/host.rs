//! The host under test: in this process (a [`TestHost`] on its own Redis,
//! or a [`RunningHost`] on a configuration), or as a child process that can
//! be signalled and killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use redis::aio::MultiplexedConnection;
use switchyard::admin::status::DeadLetter;
use switchyard::config::Config;
use switchyard::metrics::{Metrics, QueueCounts};
use switchyard::plugin::Compiler;
use switchyard::supervisor::RunningHost;

use crate::{Redis, TestConfig, dead_letters, wait_for, xadd};

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
    RunningHost::start(config.clone(), deployment(redis.url(), config), compiler())
}

/// The deployment `url` names, with what `config`'s `[redis]` adds, as
/// `switchyard run` makes it.
pub fn deployment(url: &str, config: &Config) -> switchyard::redis::Redis {
    let endpoint =
        switchyard::redis::Endpoint::parse(url, &switchyard::redis::Access::of(&config.redis))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    switchyard::redis::Redis::new(endpoint).expect("a Redis deployment")
}

/// A host running in this process on a redis-server of its own, on a
/// configuration of the test's, with a connection for the test: what most
/// tests start with.
#[derive(Debug)]
pub struct TestHost {
    pub redis: Redis,
    pub cfg: TestConfig,
    /// The test's own connection.
    pub conn: MultiplexedConnection,
    /// The host's counters (kept after it stops).
    pub metrics: Arc<Metrics>,
    host: Option<RunningHost>,
}

impl TestHost {
    /// Starts a host on `toml`, written as for [`TestConfig::new`].
    pub async fn start(toml: &str) -> Self {
        Self::start_with(TestConfig::new(toml)).await
    }

    /// Starts a host on `cfg`.
    pub async fn start_with(cfg: TestConfig) -> Self {
        let mut host = Self::idle(cfg).await;
        host.restart().await;
        host
    }

    /// Redis and `cfg`, the host not started yet (see
    /// [`TestHost::restart`]): for a test that writes a backlog first.
    pub async fn idle(cfg: TestConfig) -> Self {
        init_logs();
        let redis = Redis::start();
        let conn = redis.conn().await;
        TestHost {
            metrics: Arc::new(Metrics::default()),
            host: None,
            redis,
            cfg,
            conn,
        }
    }

    /// XADDs a message of type `message_type` with `id` and `body` to the
    /// ingress; returns its entry id.
    pub async fn send(&mut self, message_type: &str, id: &str, body: &str) -> String {
        let ingress = self.cfg.ingress().to_owned();
        self.send_fields(
            &ingress,
            &[("type", message_type), ("id", id), ("body", body)],
        )
        .await
    }

    /// XADDs an entry of `fields` to `stream`; returns its entry id.
    pub async fn send_fields(&mut self, stream: &str, fields: &[(&str, &str)]) -> String {
        xadd(&mut self.conn, stream, fields).await
    }

    /// A snapshot of a queue's counters (zeros before it counted anything).
    pub fn queue(&self, name: &str) -> QueueCounts {
        self.metrics.queue(name).snapshot()
    }

    /// Waits until `queue` has settled (acked or dead-lettered) `n` messages.
    pub async fn settled(&self, queue: &str, n: u64, limit: Duration) {
        let m = self.metrics.queue(queue);
        wait_for(
            limit,
            &format!("{n} messages settled by {queue}"),
            async || {
                let c = m.snapshot();
                c.succeeded + c.dead_lettered >= n
            },
        )
        .await;
    }

    /// The dead letters written so far.
    pub async fn dead_letters(&mut self) -> Vec<DeadLetter> {
        dead_letters(&mut self.conn, &self.cfg).await
    }

    /// Stops the host and waits for it to drain; Redis stays, to look at.
    pub async fn stop(&mut self) {
        if let Some(host) = self.host.take() {
            host.stop().await.expect("the host stops cleanly");
        }
    }

    /// Stops the host (if running) and starts a new one on the same
    /// configuration and Redis (or the first, after [`TestHost::idle`]).
    pub async fn restart(&mut self) {
        self.stop().await;
        let host = start_host(&self.cfg.config, &self.redis);
        self.metrics = host.metrics.clone();
        self.host = Some(host);
    }

    /// Stops the host (if running) and starts a new one on `cfg`, against
    /// the same Redis.
    pub async fn restart_with(&mut self, cfg: TestConfig) {
        self.stop().await;
        self.cfg = cfg;
        self.restart().await;
    }

    /// The running host (panics once stopped).
    pub fn running(&self) -> &RunningHost {
        self.host.as_ref().expect("the host is running")
    }
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
