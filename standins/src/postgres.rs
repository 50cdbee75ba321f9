//! A private PostgreSQL server for the demo and the tests: a cluster made
//! with Debian's `initdb` in a temporary folder, served on a free loopback
//! port, with a password login (`switchyard`) and one database. Stopped,
//! and its folder removed, when dropped.
//!
//! PostgreSQL refuses to run as root; when this process is root, the
//! server runs as the `postgres` user the Debian package creates.
//!
//! [`Postgres::start_tls`] starts one that takes TCP connections only over
//! TLS, with a certificate from a [`TestCa`].

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TestCa;

/// The role the server is made with, and its password.
pub const USER: &str = "switchyard";
const PASSWORD: &str = "switchyard-local";

/// A running private server.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    database: String,
    /// As whom the server runs (uid, gid), when this process is root.
    run_as: Option<(u32, u32)>,
    /// Whether TCP connections must use TLS.
    tls: bool,
    child: Option<Child>,
}

/// Runs one statement with `psql` against `url`; its output, unaligned,
/// without headers (a test's quick look at the database).
pub fn psql(url: &str, statement: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-tAc", statement])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The newest PostgreSQL's programs, from Debian's packages.
fn bin_dir() -> std::io::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                "PostgreSQL is not installed (/usr/lib/postgresql): run scripts/setup.sh",
            )
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        std::io::Error::other("no initdb under /usr/lib/postgresql: run scripts/setup.sh")
    })
}

/// The uid and gid of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Whether this process runs as root (its effective uid, from procfs).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl Postgres {
    /// Makes a cluster and starts it, with a database named `database`.
    /// Takes a few seconds (initdb).
    pub fn start(database: &str) -> std::io::Result<Postgres> {
        Self::start_with(database, None)
    }

    /// As [`Postgres::start`], but TCP connections must use TLS (a plain
    /// one is refused), and the server presents `ca`'s certificate.
    pub fn start_tls(database: &str, ca: &TestCa) -> std::io::Result<Postgres> {
        Self::start_with(database, Some(ca))
    }

    fn start_with(database: &str, ca: Option<&TestCa>) -> std::io::Result<Postgres> {
        let bin = bin_dir()?;
        let root = std::env::temp_dir().join(format!(
            "switchyard-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&root)?;
        let run_as = if is_root() {
            Some(user_ids("postgres").ok_or_else(|| {
                std::io::Error::other(
                    "running as root, and there is no `postgres` user to run PostgreSQL as (install the postgresql package)",
                )
            })?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        }
        let mut pg = Postgres {
            bin,
            root,
            port: free_port()?,
            database: database.to_owned(),
            run_as,
            tls: ca.is_some(),
            child: None,
        };
        let pwfile = pg.root.join("pwfile");
        std::fs::write(&pwfile, PASSWORD)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-U", USER, "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if let Some(ca) = ca {
            pg.set_up_tls(ca)?;
        }
        pg.launch()?;
        let out = Command::new(pg.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", USER])
            .arg(&pg.database)
            .env("PGPASSWORD", PASSWORD)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "createdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's certificate and key in the cluster (the key readable by
    /// its owner only, as PostgreSQL demands), and TCP logins allowed over
    /// TLS only.
    fn set_up_tls(&self, ca: &TestCa) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;

        let data = self.data();
        for (name, text, mode) in [
            ("server.crt", ca.cert_pem(), 0o644),
            ("server.key", ca.key_pem(), 0o600),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\nhostnossl {}", reject(rest)),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&hba, rules + "\n")
    }

    /// A program of the server's, run as its user.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Starts the server on the cluster and waits until it answers.
    fn launch(&mut self) -> std::io::Result<()> {
        let log = std::fs::File::create(self.root.join("server.log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.root.display()))
            // Throwaway data: durability is the host's concern, not this
            // server's, and the tests run faster without it.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[] })
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()?
                .success();
            if ready {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                return Err(std::io::Error::other(format!(
                    "postgres exited ({status}): {}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "postgres did not answer within 30 s: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://switchyard:<password>@127.0.0.1:<port>/<database>`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{}",
            self.port, self.database
        )
    }

    /// Stops the server (a fast shutdown: open sessions are ended, their
    /// transactions rolled back); the cluster stays, for [`Postgres::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again, on the same port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.launch()
    }

    /// [`psql`] on this server's database.
    pub fn psql(&self, statement: &str) -> String {
        psql(&self.url(), statement)
    }

    /// The folder of the cluster and the server's log.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A `pg_hba.conf` rule's fields (after its type) with its method made
/// `reject`.
fn reject(rest: &str) -> String {
    let mut fields: Vec<&str> = rest.split_whitespace().collect();
    if let Some(method) = fields.last_mut() {
        *method = "reject";
    }
    fields.join(" ")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
