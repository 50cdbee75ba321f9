//! A redis-server for tests, on a free loopback port, stopped by its pid
//! when dropped: in memory only, or durable (AOF, `appendfsync always`) and
//! restartable on the same port and data, for the tests that kill it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A redis-server this test started.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    durable: bool,
    /// The folder is a temporary one of this server's, removed with it.
    owns_dir: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A server without persistence, in a folder of its own.
    pub fn start() -> Result<Self> {
        let port = crate::free_port();
        let dir =
            std::env::temp_dir().join(format!("switchyard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut r = RedisServer {
            port,
            dir,
            durable: false,
            owns_dir: true,
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// A server that persists every write before answering, its data in
    /// `dir`.
    pub fn durable(dir: &Path) -> Result<Self> {
        let mut r = RedisServer {
            port: crate::free_port(),
            dir: dir.to_owned(),
            durable: true,
            owns_dir: false,
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again), and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .spawn()
            .context("starting redis-server (scripts/setup.sh installs it)")?;
        self.child = Some(child);
        let client = redis::Client::open(self.url())?;
        let started = Instant::now();
        loop {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "redis-server did not answer on port {} within 30 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
