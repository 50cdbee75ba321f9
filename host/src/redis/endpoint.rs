//! Where Redis is and how to reach it: a URL read into one of the three
//! deployments the host speaks to (one node, a master followed through
//! Sentinel, a Redis Cluster), with its credentials and TLS. Pure: nothing
//! here opens a connection ([`super::deployment`] does).
//!
//! The forms, credentials percent-encoded:
//!
//! - `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS,
//!   `redis+unix:///path` or `unix:///path`;
//! - `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db]`
//!   (sentinels on port 26379 by default), `rediss+sentinel://` for TLS to
//!   the sentinels and the master;
//! - `redis+cluster://[[user]:password@]host[:port][,host[:port]…]`,
//!   `rediss+cluster://` for TLS: any nodes of the cluster, the rest is
//!   found from them.
//!
//! The user and password in the URL are the data nodes'; `[redis]` in
//! queues.toml may give them instead (from the environment), and the
//! sentinels' own.

use std::fmt;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

/// The forms a Redis URL takes, for error messages.
pub const URL_FORMS: &str = "redis://[user:password@]host[:port][/db] (rediss:// for TLS), \
redis+sentinel://[user:password@]host:port[,host:port...]/master[/db], \
redis+cluster://[user:password@]host:port[,host:port...], or redis+unix:///path";

/// One node's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeAddr {
    Tcp { host: String, port: u16 },
    Unix(std::path::PathBuf),
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            NodeAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            NodeAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A user and password (ACL), or a password alone (`requirepass`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Credentials {
    /// `self`, each part replaced by `other`'s where it has one.
    fn overridden_by(&self, other: &Credentials) -> Credentials {
        Credentials {
            username: other.username.clone().or_else(|| self.username.clone()),
            password: other.password.clone().or_else(|| self.password.clone()),
        }
    }
}

/// The kind of deployment, and its nodes as the URL names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One node (perhaps a master whose replicas nobody follows).
    Node(NodeAddr),
    /// A master found through its sentinels.
    Sentinel {
        sentinels: Vec<NodeAddr>,
        master: String,
    },
    /// Any nodes of a Redis Cluster.
    Cluster { seeds: Vec<NodeAddr> },
}

/// What `[redis]` in queues.toml adds to the URL.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The data nodes' user and password, over the URL's.
    pub data: Credentials,
    /// The sentinels' own (Sentinel's `requirepass` or ACL user).
    pub sentinel: Credentials,
    /// PEM certificates of a private CA the servers' certificates may chain
    /// to, besides the web's roots.
    pub ca_pem: Option<Arc<[u8]>>,
}

impl Access {
    /// What `[redis]` adds to the URL (an empty value is one not given: a
    /// secret the command did not read).
    pub fn of(settings: &crate::config::RedisSettings) -> Access {
        let given = |v: &Option<String>| v.clone().filter(|t| !t.is_empty());
        Access {
            data: Credentials {
                username: given(&settings.username),
                password: given(&settings.password),
            },
            sentinel: Credentials {
                username: given(&settings.sentinel_username),
                password: given(&settings.sentinel_password),
            },
            ca_pem: settings.ca_file.as_ref().map(|c| c.pem.clone()),
        }
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("data", &self.data)
            .field("sentinel", &self.sentinel)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// A Redis deployment as the host reaches it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub topology: Topology,
    /// TLS to every node (and sentinel), the certificate and name verified.
    pub tls: bool,
    /// The database of the data nodes (0 on a cluster, which has no other).
    pub db: i64,
    /// The data nodes' credentials.
    pub data: Credentials,
    /// The sentinels' credentials, when they have any.
    pub sentinel: Credentials,
    /// Private CA certificates (PEM) trusted besides the web's roots.
    pub ca_pem: Option<Arc<[u8]>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            .field("db", &self.db)
            .field("data", &self.data)
            .field("sentinel", &self.sentinel)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// Why a URL is not one the host can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {problem}; expected {URL_FORMS}")]
pub struct BadUrl {
    /// The URL, its password masked.
    pub url: String,
    pub problem: String,
}

fn bad(problem: impl Into<String>) -> BadUrl {
    BadUrl {
        url: String::new(),
        problem: problem.into(),
    }
}

/// `url` with its user part, up to the last `@`, shown as `user:***`
/// (or `***` when it is not plainly a user and a password): a password is
/// never shown, however it is written.
fn masked(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let shown = match userinfo.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
                _ => "***".to_owned(),
            };
            format!("{scheme}{shown}@{after}")
        }
        None => url.to_owned(),
    }
}

impl Endpoint {
    /// Reads `url`, with what `[redis]` adds.
    pub fn parse(url: &str, access: &Access) -> Result<Endpoint, BadUrl> {
        Self::read(url, access).map_err(|e| BadUrl {
            url: masked(url),
            ..e
        })
    }

    fn read(url: &str, access: &Access) -> Result<Endpoint, BadUrl> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("this is not a Redis URL"));
        };
        if url.contains('#') {
            // redis-rs reads `#insecure` as "do not verify the certificate's
            // name": the host always verifies.
            return Err(bad(
                "a Redis URL has no fragment (#...): TLS is always verified",
            ));
        }
        let (kind, tls) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => ("node", false),
            "rediss" => ("node", true),
            "redis+unix" | "unix" => ("unix", false),
            "redis+sentinel" => ("sentinel", false),
            "rediss+sentinel" => ("sentinel", true),
            "redis+cluster" => ("cluster", false),
            "rediss+cluster" => ("cluster", true),
            other => return Err(bad(format!("{other}:// is not a Redis URL scheme"))),
        };
        let mut db: i64 = 0;
        if kind == "unix" {
            let (rest, query) = match rest.split_once('?') {
                Some((r, q)) => (r, Some(q)),
                None => (rest, None),
            };
            if !rest.starts_with('/') {
                return Err(bad("a socket URL names an absolute path"));
            }
            for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("db", n)) => db = parse_db(n)?,
                    _ => return Err(bad(format!("unknown URL parameter {pair:?}"))),
                }
            }
            let path = percent_decode_str(rest).decode_utf8_lossy().into_owned();
            return Ok(Endpoint {
                topology: Topology::Node(NodeAddr::Unix(path.into())),
                tls: false,
                db,
                data: Credentials::default().overridden_by(&access.data),
                sentinel: access.sentinel.clone(),
                ca_pem: access.ca_pem.clone(),
            });
        }
        // The user part ends at the last `@`: a password written without
        // percent-encoding its `/` or `?` is still never read as a host or
        // a path (nor quoted in an error).
        let (userinfo, after) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let (after, query) = match after.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (after, None),
        };
        if query.is_some_and(|q| !q.is_empty()) {
            return Err(bad(
                "a Redis URL takes no parameters here (credentials and the CA file go in [redis] of queues.toml)",
            ));
        }
        let (hosts, path) = match after.split_once('/') {
            Some((a, p)) => (a, p),
            None => (after, ""),
        };
        let mut data = Credentials::default();
        if let Some(u) = userinfo {
            let (user, password) = match u.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (u, None),
            };
            let decode = |t: &str| percent_decode_str(t).decode_utf8_lossy().into_owned();
            data.username = Some(decode(user)).filter(|u| !u.is_empty());
            data.password = password.map(decode).filter(|p| !p.is_empty());
        }
        let default_port = if kind == "sentinel" { 26379 } else { 6379 };
        let nodes = hosts
            .split(',')
            .map(|h| parse_host(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let topology = match kind {
            "node" => {
                let [node] = nodes.as_slice() else {
                    return Err(bad(
                        "a redis:// URL names one host; use redis+sentinel:// or redis+cluster:// for several",
                    ));
                };
                match segments.as_slice() {
                    [] => {}
                    [n] => db = parse_db(n)?,
                    _ => return Err(bad(format!("{path:?} is not a database number"))),
                }
                Topology::Node(node.clone())
            }
            "sentinel" => {
                let (master, rest) = match segments.split_first() {
                    Some((m, rest)) => (m, rest),
                    None => {
                        return Err(bad(
                            "a redis+sentinel:// URL names the master after the sentinels: /mymaster",
                        ));
                    }
                };
                match rest {
                    [] => {}
                    [n] => db = parse_db(n)?,
                    _ => return Err(bad(format!("{path:?} is not a master name and database"))),
                }
                Topology::Sentinel {
                    sentinels: nodes,
                    master: percent_decode_str(master).decode_utf8_lossy().into_owned(),
                }
            }
            _ => {
                if !segments.is_empty() {
                    return Err(bad(
                        "a Redis Cluster has only database 0: a redis+cluster:// URL has no path",
                    ));
                }
                Topology::Cluster { seeds: nodes }
            }
        };
        Ok(Endpoint {
            topology,
            tls,
            db,
            data: data.overridden_by(&access.data),
            sentinel: access.sentinel.clone(),
            ca_pem: access.ca_pem.clone(),
        })
    }

    /// A Redis Cluster: every key of a step must share a slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// What the log and errors name: the nodes and the master's name,
    /// never a credential.
    pub fn describe(&self) -> String {
        let list = |nodes: &[NodeAddr]| {
            nodes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let tls = if self.tls { " (TLS)" } else { "" };
        match &self.topology {
            Topology::Node(node) => format!("{node}{tls}"),
            Topology::Sentinel { sentinels, master } => {
                format!("master {master:?} of sentinels {}{tls}", list(sentinels))
            }
            Topology::Cluster { seeds } => format!("cluster at {}{tls}", list(seeds)),
        }
    }
}

fn parse_db(text: &str) -> Result<i64, BadUrl> {
    text.parse::<i64>()
        .ok()
        .filter(|n| (0..=1_000_000).contains(n))
        .ok_or_else(|| bad(format!("{text:?} is not a database number")))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host(text: &str, default_port: u16) -> Result<NodeAddr, BadUrl> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("{text:?}: an IPv6 address without its ']'")))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad(format!("{text:?} is not host:port"))),
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad(format!("{text:?}: a host is missing")));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(format!("{p:?} is not a port")))?,
    };
    Ok(NodeAddr::Tcp {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Endpoint, BadUrl> {
        Endpoint::parse(url, &Access::default())
    }

    fn tcp(host: &str, port: u16) -> NodeAddr {
        NodeAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn reads_each_deployment() {
        let e = parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(e.topology, Topology::Node(tcp("127.0.0.1", 6380)));
        assert_eq!((e.db, e.tls), (2, false));

        let e = parse("rediss://app:p%40ss@cache.example.com").unwrap();
        assert_eq!(e.topology, Topology::Node(tcp("cache.example.com", 6379)));
        assert!(e.tls);
        assert_eq!(e.data.username.as_deref(), Some("app"));
        assert_eq!(e.data.password.as_deref(), Some("p@ss"));

        let e = parse("redis://:secret@[::1]:7000/").unwrap();
        assert_eq!(e.topology, Topology::Node(tcp("::1", 7000)));
        assert_eq!(e.data.username, None);
        assert_eq!(e.data.password.as_deref(), Some("secret"));
        assert_eq!(e.describe(), "[::1]:7000");

        let e = parse("redis+sentinel://s1,s2:26380,10.0.0.3/mymaster/1").unwrap();
        assert_eq!(
            e.topology,
            Topology::Sentinel {
                sentinels: vec![tcp("s1", 26379), tcp("s2", 26380), tcp("10.0.0.3", 26379)],
                master: "mymaster".into()
            }
        );
        assert_eq!(e.db, 1);
        assert_eq!(
            e.describe(),
            "master \"mymaster\" of sentinels s1:26379,s2:26380,10.0.0.3:26379"
        );

        let e = parse("rediss+cluster://u:p@n1:7000,n2:7001").unwrap();
        assert!(e.is_cluster() && e.tls);
        assert_eq!(e.describe(), "cluster at n1:7000,n2:7001 (TLS)");

        let e = parse("redis+unix:///run/redis.sock?db=3").unwrap();
        assert_eq!(
            e.topology,
            Topology::Node(NodeAddr::Unix("/run/redis.sock".into()))
        );
        assert_eq!(e.db, 3);
    }

    #[test]
    fn access_overrides_the_url() {
        let access = Access {
            data: Credentials {
                username: Some("switchyard".into()),
                password: Some("from-env".into()),
            },
            ..Default::default()
        };
        let e = Endpoint::parse("redis://old:pw@h", &access).unwrap();
        assert_eq!(e.data, access.data);
        let partial = Access {
            data: Credentials {
                username: None,
                password: Some("from-env".into()),
            },
            ..Default::default()
        };
        let e = Endpoint::parse("redis://app@h", &partial).unwrap();
        assert_eq!(e.data.password.as_deref(), Some("from-env"));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (url, says) in [
            ("127.0.0.1:6379", "not a Redis URL"),
            ("http://h", "http:// is not a Redis URL scheme"),
            ("rediss://h/#insecure", "TLS is always verified"),
            ("redis://a,b", "names one host"),
            ("redis+sentinel://s1,s2", "names the master"),
            ("redis+cluster://a,b/1", "only database 0"),
            ("redis://h:99999", "is not a port"),
            ("redis://h/x", "is not a database number"),
            ("redis://h?password=x", "go in [redis]"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.contains("expected redis://"), "{url}: {e}");
        }
        let e = parse("redis://u:hunter2@a,b/0").unwrap_err().to_string();
        assert!(e.starts_with("\"redis://u:***@a,b/0\": "), "{e}");
        // A password with a raw `/`, `?` or `@`, or a URL without a scheme:
        // the password is in no error.
        for url in [
            "redis://u:hun/ter2@h:99999",
            "redis://u:hun?ter2@h/x",
            "redis://u:hu@nter2@a,b",
            "u:hunter2@h:6379",
            "redis://hunter2@h:0",
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("ter2"), "{url}: {e}");
        }
        let ok = parse("redis://u:pa/ss@h:6380").unwrap();
        assert_eq!(ok.data.password.as_deref(), Some("pa/ss"));
        assert_eq!(ok.topology, Topology::Node(tcp("h", 6380)));
    }

    #[test]
    fn a_description_never_holds_a_credential() {
        let e = parse("redis+sentinel://u:hunter2@s1/m").unwrap();
        assert!(!e.describe().contains("hunter2"));
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
