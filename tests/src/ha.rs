//! Redis beyond one node, for the tests: a server speaking TLS only with
//! an ACL user, a master with replicas watched by sentinels, a Redis
//! Cluster of masters and replicas. Every server is a `redis-server`
//! process on a free loopback port, killed by its pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use switchyard_standins::tls::TestCa;

/// One `redis-server` process (a data node or a sentinel).
#[derive(Debug)]
pub struct Node {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` in `dir` on `port` with `args` (a sentinel's
    /// config file first, for a sentinel).
    fn spawn(dir: &Path, port: u16, args: Vec<String>) -> Result<Node> {
        std::fs::create_dir_all(dir)?;
        let mut node = Node {
            port,
            dir: dir.to_owned(),
            args,
            child: None,
        };
        node.restart()?;
        Ok(node)
    }

    /// Starts the process again, same port, folder and arguments.
    pub fn restart(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/setup.sh installs it)")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (`STOP`, `CONT`) by pid.
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(c.id().to_string())
                .status();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `redis-cli` against `port` with `args`, its output trimmed.
pub fn cli(port: u16, extra: &[&str], args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .args(args)
        .output()
        .context("running redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until `check` holds, at most `limit`.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{name}-{}-{}",
        std::process::id(),
        crate::free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// A redis-server that speaks TLS only (its certificate from a CA of the
/// test's), with the default user off and one ACL user.
#[derive(Debug)]
pub struct TlsRedis {
    pub node: Node,
    pub ca: TestCa,
    /// The CA's certificate, for `redis.ca_file`.
    pub ca_path: PathBuf,
    dir: PathBuf,
}

impl TlsRedis {
    /// A server whose only user is `user` with `password`.
    pub fn start(user: &str, password: &str) -> Result<Self> {
        let dir = fresh_dir("tls-redis")?;
        let ca = TestCa::new();
        let ca_path = ca.write_ca(&dir, "ca.pem")?;
        std::fs::write(dir.join("cert.pem"), ca.cert_pem())?;
        std::fs::write(dir.join("key.pem"), ca.key_pem())?;
        let port = crate::free_port();
        let acl = format!(">{password}");
        let args = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            dir.join("cert.pem").display().to_string(),
            "--tls-key-file".into(),
            dir.join("key.pem").display().to_string(),
            "--tls-ca-cert-file".into(),
            ca_path.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--user".into(),
            "default".into(),
            "off".into(),
            "--user".into(),
            user.into(),
            "on".into(),
            acl,
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ];
        let node = Node::spawn(&dir.join("node"), port, args)?;
        let ca_arg = ca_path.display().to_string();
        wait_until(
            "the TLS redis-server to answer",
            Duration::from_secs(20),
            || {
                cli(
                    port,
                    &[
                        "--tls",
                        "--cacert",
                        &ca_arg,
                        "--user",
                        user,
                        "--pass",
                        password,
                        "--no-auth-warning",
                    ],
                    &["PING"],
                )
                .is_ok_and(|o| o == "PONG")
            },
        )?;
        Ok(TlsRedis {
            node,
            ca,
            ca_path,
            dir,
        })
    }

    /// `rediss://` to this server by its name, with `credentials` (as they
    /// go in a URL) if any.
    pub fn url(&self, credentials: &str) -> String {
        format!("rediss://{credentials}localhost:{}/", self.node.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.node.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master with replicas, and sentinels watching it as `mymaster`.
#[derive(Debug)]
pub struct SentinelSet {
    /// The master first (as started), then the replicas.
    pub nodes: Vec<Node>,
    pub sentinels: Vec<Node>,
    dir: PathBuf,
}

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "mymaster";

impl SentinelSet {
    /// A master, `replicas` replicas of it, and `sentinels` sentinels
    /// (quorum 2) that declare a master down after 1 s.
    pub fn start(replicas: usize, sentinels: usize) -> Result<Self> {
        let dir = fresh_dir("sentinel")?;
        let data = |port: u16| {
            strings(&[
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
        };
        let master_port = crate::free_port();
        let mut nodes = vec![Node::spawn(
            &dir.join(format!("n{master_port}")),
            master_port,
            data(master_port),
        )?];
        for _ in 0..replicas {
            let port = crate::free_port();
            let mut args = data(port);
            args.extend(strings(&[
                "--replicaof",
                "127.0.0.1",
                &master_port.to_string(),
            ]));
            nodes.push(Node::spawn(&dir.join(format!("n{port}")), port, args)?);
        }
        for n in &nodes[1..] {
            wait_until("a replica to sync", Duration::from_secs(30), || {
                cli(n.port, &[], &["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            })?;
        }
        let mut watching = Vec::new();
        for _ in 0..sentinels {
            let port = crate::free_port();
            let sdir = dir.join(format!("s{port}"));
            std::fs::create_dir_all(&sdir)?;
            let conf = sdir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "bind 127.0.0.1\nport {port}\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 4000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    sdir.display()
                ),
            )?;
            watching.push(Node::spawn(
                &sdir,
                port,
                vec![conf.display().to_string(), "--sentinel".into()],
            )?);
        }
        // Each sentinel has found the replicas and the other sentinels
        // (they say hello every 2 s).
        for s in &watching {
            wait_until(
                "a sentinel to see the others",
                Duration::from_secs(30),
                || {
                    let replicas_seen = cli(s.port, &[], &["SENTINEL", "REPLICAS", MASTER_NAME])
                        .map(|o| o.matches("slave").count())
                        .unwrap_or(0);
                    let sentinels_seen = cli(s.port, &[], &["SENTINEL", "SENTINELS", MASTER_NAME])
                        .map(|o| o.matches("runid").count())
                        .unwrap_or(0);
                    replicas_seen >= replicas && sentinels_seen + 1 >= sentinels
                },
            )?;
        }
        Ok(SentinelSet {
            nodes,
            sentinels: watching,
            dir,
        })
    }

    /// `redis+sentinel://` naming every sentinel.
    pub fn url(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", list.join(","))
    }

    /// The master's port as the first sentinel that answers names it.
    pub fn master_port(&self) -> Result<u16> {
        for s in self.sentinels.iter().filter(|s| s.is_running()) {
            let out = cli(
                s.port,
                &[],
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            )?;
            if let Some(port) = out.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return Ok(port);
            }
        }
        bail!("no sentinel names a master")
    }

    /// SIGKILLs the master; returns its port.
    pub fn kill_master(&mut self) -> Result<u16> {
        let port = self.master_port()?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .context("the master is not one of the set's nodes")?;
        node.kill9();
        Ok(port)
    }

    /// Stops (`STOP`) or resumes (`CONT`) every replica, as a network
    /// that holds replication back would.
    pub fn signal_replicas(&self, signal: &str) -> Result<()> {
        let master = self.master_port()?;
        for n in self.nodes.iter().filter(|n| n.port != master) {
            n.signal(signal);
        }
        Ok(())
    }

    /// Closes the master's connections to its replicas (which, stopped,
    /// cannot connect again): what it writes from now on reaches no
    /// replica.
    pub fn cut_replication(&self) -> Result<()> {
        let master = self.master_port()?;
        cli(master, &[], &["CLIENT", "KILL", "TYPE", "replica"])?;
        Ok(())
    }

    /// Waits until the sentinels name a master other than `old`, and it
    /// says it is one; returns its port.
    pub fn wait_promoted(&self, old: u16, limit: Duration) -> Result<u16> {
        let mut promoted = 0;
        wait_until("a replica to be promoted", limit, || {
            match self.master_port() {
                Ok(p) if p != old => {
                    promoted = p;
                    cli(p, &[], &["ROLE"]).is_ok_and(|r| r.starts_with("master"))
                }
                _ => false,
            }
        })?;
        Ok(promoted)
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for n in self.sentinels.iter_mut().chain(self.nodes.iter_mut()) {
            n.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges it serves (a master's).
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster on loopback.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each, as `redis-cli
    /// --cluster create` lays them out; a node is failed over after 1 s.
    pub fn start(masters: usize, replicas: usize) -> Result<Self> {
        let dir = fresh_dir("cluster")?;
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = crate::free_port();
            let args = strings(&[
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            nodes.push(Node::spawn(&dir.join(format!("n{port}")), port, args)?);
        }
        for n in &nodes {
            wait_until("a cluster node to answer", Duration::from_secs(20), || {
                cli(n.port, &[], &["PING"]).is_ok_and(|o| o == "PONG")
            })?;
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let cluster = Cluster { nodes, dir };
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis+cluster://` naming every node.
    pub fn url(&self) -> String {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", list.join(","))
    }

    /// Waits until every running node says the cluster is ok and every
    /// slot is served.
    pub fn wait_ok(&self, limit: Duration) -> Result<()> {
        wait_until("the cluster to be ok", limit, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                cli(n.port, &[], &["CLUSTER", "INFO"]).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                })
            })
        })
    }

    /// The nodes as a running node sees them.
    pub fn topology(&self) -> Result<Vec<ClusterNode>> {
        let asked = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .context("no node runs")?;
        let text = cli(asked.port, &[], &["CLUSTER", "NODES"])?;
        let mut all = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 8 {
                continue;
            }
            let port = words[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            let flags = words[2];
            let slots = words[8..]
                .iter()
                .filter(|w| !w.starts_with('['))
                .filter_map(|w| match w.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => w.parse().ok().map(|s| (s, s)),
                })
                .collect();
            all.push(ClusterNode {
                id: words[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                slots,
            });
        }
        Ok(all)
    }

    /// The port of the master serving `slot`.
    pub fn master_of(&self, slot: u16) -> Result<u16> {
        self.topology()?
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
            .context("no master serves the slot")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill9();
        }
    }

    /// Moves `slots` slots from the master `from` to the master `to` (node
    /// ids), keys and all, as an operator does with `redis-cli --cluster
    /// reshard`.
    pub fn reshard(&self, from: &str, to: &str, slots: usize) -> Result<()> {
        let any = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .context("no node runs")?;
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", any.port)])
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster reshard")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster reshard failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
