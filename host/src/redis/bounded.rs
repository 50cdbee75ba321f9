//! Reading new entries through a consumer group without ever holding more
//! than the bounds.
//!
//! Producers decide how large an entry is, and XREADGROUP hands over whole
//! entries; a general client (redis-rs) parses a reply into memory
//! whatever its size. This connection speaks just enough of the Redis
//! protocol (RESP2: AUTH, SELECT, XREADGROUP) to read a reply value by
//! value (over TCP, TLS or a socket, to whichever node serves the stream:
//! the master a Sentinel names, the node of the stream's cluster slot):
//! a value that would take its entry over `max_bytes`, or an entry
//! with too many fields, is read off the socket and dropped, and the entry
//! is returned as its size ([`ReadEntry::TooLarge`]). So what a read holds
//! is bounded by its count times `max_bytes`, while Redis does no more work
//! than for a plain XREADGROUP, and the read can block until entries
//! arrive.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::deployment::Redis;
use super::endpoint::NodeAddr;
use super::read::{Bounds, ReadEntry};
use super::reply::Entry;
use crate::redis::{StreamError, StreamResult};

/// The longest line a reply header may have (`*<count>`, `$<length>`, an
/// error message): anything longer is not a reply this reader understands.
const MAX_LINE: usize = 4096;
/// The longest a stream name or entry id may be.
const MAX_NAME: usize = 1024;

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Duplex for T {}

/// A connection for bounded blocking reads, opened on first use, again
/// after an error, and to another node when the stream's node changed (a
/// failover, a slot moved).
pub struct BoundedReader {
    redis: Redis,
    conn: Option<(NodeAddr, BufStream<Box<dyn Duplex>>)>,
}

impl std::fmt::Debug for BoundedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedReader")
            .field("node", &self.conn.as_ref().map(|(n, _)| n))
            .finish_non_exhaustive()
    }
}

/// Where in a reply a read failed.
fn protocol(detail: impl Into<String>) -> StreamError {
    StreamError::protocol("reading entries", detail)
}

fn io(what: &str, e: std::io::Error) -> StreamError {
    StreamError::io(what, e)
}

/// One command as RESP: an array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// How long opening a connection (TCP, TLS, AUTH) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl BoundedReader {
    /// A reader of `redis`; it connects at its first read.
    pub fn new(redis: &Redis) -> Self {
        BoundedReader {
            redis: redis.clone(),
            conn: None,
        }
    }

    /// Drops the connection; the next read opens another.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    async fn connect(&self, node: &NodeAddr) -> StreamResult<BufStream<Box<dyn Duplex>>> {
        let what = format!("connecting to Redis at {node}");
        let open = async {
            let stream: Box<dyn Duplex> = match node {
                NodeAddr::Tcp { host, port } => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                        .await
                        .map_err(|e| io(&what, e))?;
                    let _ = tcp.set_nodelay(true);
                    match self.redis.tls() {
                        None => Box::new(tcp),
                        Some(config) => {
                            let name = rustls::pki_types::ServerName::try_from(host.clone())
                                .map_err(|e| {
                                    StreamError::protocol(&what, format!("{host:?}: {e}"))
                                })?;
                            let tls = tokio_rustls::TlsConnector::from(config)
                                .connect(name, tcp)
                                .await
                                .map_err(|e| io(&what, e))?;
                            Box::new(tls)
                        }
                    }
                }
                NodeAddr::Unix(path) => Box::new(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| io(&what, e))?,
                ),
            };
            let mut conn = BufStream::new(stream);
            let credentials = self.redis.credentials();
            if let Some(password) = &credentials.password {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                if let Some(user) = &credentials.username {
                    args.push(user.as_bytes());
                }
                args.push(password.as_bytes());
                simple(&mut conn, &encode(&args), "authenticating").await?;
            }
            if self.redis.db() != 0 {
                let db = self.redis.db().to_string();
                simple(
                    &mut conn,
                    &encode(&[b"SELECT", db.as_bytes()]),
                    "selecting the database",
                )
                .await?;
            }
            Ok(conn)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| io(&what, std::io::ErrorKind::TimedOut.into()))?
    }

    /// Reads up to `count` entries of `stream` never delivered to `group`,
    /// for `consumer`, waiting up to `block` for one to arrive (not at all
    /// when `block` is zero). Each entry comes whole if it is within
    /// `bounds`, else as its size.
    pub async fn read_new(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
        bounds: Bounds,
    ) -> StreamResult<Vec<ReadEntry>> {
        let result = self
            .try_read(stream, group, consumer, count, block, bounds)
            .await;
        if let Err(e) = &result {
            // After an error the connection may be mid-reply: start over.
            // A reply Redis sent as an error leaves it clean, but a fresh
            // connection costs little.
            tracing::trace!(error = %e, redis = %self.redis.describe(), "Bounded reader reset.");
            self.conn = None;
            if e.is_outage() || e.kind == super::RedisFailure::Moved {
                // Perhaps another node serves the stream now.
                self.redis.topology_changed().await;
            }
        }
        result.map_err(|e| StreamError {
            what: format!("reading {stream:?}"),
            ..e
        })
    }

    async fn try_read(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
        bounds: Bounds,
    ) -> StreamResult<Vec<ReadEntry>> {
        let node = self.redis.node_for(stream).await?;
        if self.conn.as_ref().is_none_or(|(at, _)| *at != node) {
            let conn = self.connect(&node).await?;
            self.conn = Some((node, conn));
        }
        let (_, conn) = self.conn.as_mut().expect("just connected");
        let (count, block_ms) = (count.to_string(), block.as_millis().to_string());
        let mut args: Vec<&[u8]> = vec![
            b"XREADGROUP",
            b"GROUP",
            group.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
        ];
        if !block.is_zero() {
            args.extend([b"BLOCK".as_slice(), block_ms.as_bytes()]);
        }
        args.extend([b"STREAMS".as_slice(), stream.as_bytes(), b">"]);
        let command = encode(&args);
        let exchange = async {
            conn.write_all(&command)
                .await
                .map_err(|e| io("sending a read", e))?;
            conn.flush().await.map_err(|e| io("sending a read", e))?;
            read_reply(conn, bounds).await
        };
        // Above the block time: a slow answer is not taken for a dead server.
        let limit = block + Duration::from_secs(10);
        match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io(
                &format!("reading {stream:?}"),
                std::io::ErrorKind::TimedOut.into(),
            )),
        }
    }
}

/// Sends a command whose reply is a simple string (`+OK`).
async fn simple(
    conn: &mut BufStream<Box<dyn Duplex>>,
    command: &[u8],
    what: &str,
) -> StreamResult<()> {
    conn.write_all(command).await.map_err(|e| io(what, e))?;
    conn.flush().await.map_err(|e| io(what, e))?;
    let line = read_line(conn).await?;
    match line.first() {
        Some(b'+') => Ok(()),
        Some(b'-') => Err(StreamError::from_reply(what, &line[1..])),
        _ => Err(protocol(format!("unexpected reply to {what}"))),
    }
}

async fn read_line(conn: &mut BufStream<Box<dyn Duplex>>) -> StreamResult<Vec<u8>> {
    let mut line = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| io("reading a reply", e))?;
    if n == 0 {
        return Err(io(
            "reading a reply",
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol("a reply line too long or cut short"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// A header line: `<kind><number>`, the number of an array's items or a
/// bulk string's bytes; -1 for nil. An error reply is returned as an error.
async fn header(conn: &mut BufStream<Box<dyn Duplex>>, kind: u8) -> StreamResult<i64> {
    let line = read_line(conn).await?;
    match line.first() {
        Some(b'-') => Err(StreamError::from_reply("reading entries", &line[1..])),
        Some(k) if *k == kind => std::str::from_utf8(&line[1..])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| protocol("a malformed length")),
        _ => Err(protocol(format!(
            "expected '{}', found {:?}",
            kind as char,
            String::from_utf8_lossy(&line[..line.len().min(32)])
        ))),
    }
}

/// A bulk string of at most `max` bytes.
async fn small_bulk(conn: &mut BufStream<Box<dyn Duplex>>, max: usize) -> StreamResult<Vec<u8>> {
    let len = header(conn, b'$').await?;
    if len < 0 || len as usize > max {
        return Err(protocol("a name or id that is nil or too long"));
    }
    let mut buf = vec![0; len as usize + 2];
    conn.read_exact(&mut buf)
        .await
        .map_err(|e| io("reading a reply", e))?;
    buf.truncate(len as usize);
    Ok(buf)
}

/// Reads and drops `n` bytes.
async fn skip(conn: &mut BufStream<Box<dyn Duplex>>, n: u64) -> StreamResult<()> {
    let copied = tokio::io::copy(&mut (&mut *conn).take(n), &mut tokio::io::sink())
        .await
        .map_err(|e| io("reading a reply", e))?;
    if copied < n {
        return Err(io(
            "reading a reply",
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(())
}

/// Reads an XREADGROUP reply for one stream.
async fn read_reply(
    conn: &mut BufStream<Box<dyn Duplex>>,
    bounds: Bounds,
) -> StreamResult<Vec<ReadEntry>> {
    let streams = header(conn, b'*').await?;
    if streams <= 0 {
        // Nothing arrived within the block time.
        return Ok(Vec::new());
    }
    if streams != 1 || header(conn, b'*').await? != 2 {
        return Err(protocol("a reply for other than one stream"));
    }
    small_bulk(conn, MAX_NAME).await?;
    let count = header(conn, b'*').await?.max(0);
    let mut entries = Vec::with_capacity(count.min(10_000) as usize);
    for _ in 0..count {
        if header(conn, b'*').await? != 2 {
            return Err(protocol("an entry that is not [id, fields]"));
        }
        let id = String::from_utf8(small_bulk(conn, MAX_NAME).await?)
            .map_err(|_| protocol("an entry id that is not text"))?;
        let values = header(conn, b'*').await?;
        if values < 0 {
            // The entry was deleted while pending: nothing to hand over.
            continue;
        }
        let fields = values as u64 / 2;
        let mut too_large = fields > bounds.max_fields as u64;
        let mut bytes: u64 = 0;
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for _ in 0..values {
            let len = header(conn, b'$').await?;
            if len < 0 {
                kept.push(Vec::new());
                continue;
            }
            let len = len as u64;
            bytes += len;
            if too_large || bytes > bounds.max_bytes as u64 {
                // Over a bound: read off the socket, never held.
                too_large = true;
                kept.clear();
                skip(conn, len + 2).await?;
                continue;
            }
            let mut buf = vec![0; len as usize + 2];
            conn.read_exact(&mut buf)
                .await
                .map_err(|e| io("reading a reply", e))?;
            buf.truncate(len as usize);
            kept.push(buf);
        }
        if too_large {
            entries.push(ReadEntry::TooLarge {
                id,
                deliveries: 1,
                bytes,
                fields,
            });
        } else {
            let mut values = kept.into_iter();
            let mut pairs = Vec::with_capacity(fields as usize);
            while let (Some(k), Some(v)) = (values.next(), values.next()) {
                pairs.push((k, v));
            }
            entries.push(ReadEntry::Whole {
                entry: Entry { id, fields: pairs },
                deliveries: 1,
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `reply` as if Redis had sent it.
    async fn parse(reply: &[u8], bounds: Bounds) -> StreamResult<Vec<ReadEntry>> {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        server.write_all(reply).await.unwrap();
        drop(server);
        let mut conn = BufStream::new(Box::new(client) as Box<dyn Duplex>);
        read_reply(&mut conn, bounds).await
    }

    fn bounds(max_bytes: usize, max_fields: usize) -> Bounds {
        Bounds {
            max_bytes,
            max_fields,
        }
    }

    /// An XREADGROUP reply for stream `s` with the given entries.
    fn reply(entries: &[(&str, &[&[u8]])]) -> Vec<u8> {
        let mut out = format!("*1\r\n*2\r\n$1\r\ns\r\n*{}\r\n", entries.len()).into_bytes();
        for (id, values) in entries {
            out.extend_from_slice(
                format!("*2\r\n${}\r\n{id}\r\n*{}\r\n", id.len(), values.len()).as_bytes(),
            );
            for v in *values {
                out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    #[tokio::test]
    async fn entries_within_bounds_come_whole_and_others_as_their_size() {
        let big = vec![b'x'; 5000];
        let r = reply(&[
            ("1-0", &[b"type", b"a", b"body", b"{}"]),
            ("2-0", &[b"type", b"a", b"body", &big]),
            ("3-0", &[b"k1", b"v", b"k2", b"v", b"k3", b"v"]),
            ("4-0", &[b"type", b"b"]),
        ]);
        let got = parse(&r, bounds(1000, 2)).await.unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            ReadEntry::Whole {
                entry: Entry {
                    id: "1-0".into(),
                    fields: vec![
                        (b"type".to_vec(), b"a".to_vec()),
                        (b"body".to_vec(), b"{}".to_vec())
                    ]
                },
                deliveries: 1
            }
        );
        assert_eq!(
            got[1],
            ReadEntry::TooLarge {
                id: "2-0".into(),
                deliveries: 1,
                bytes: 5009,
                fields: 2
            }
        );
        assert_eq!(
            got[2],
            ReadEntry::TooLarge {
                id: "3-0".into(),
                deliveries: 1,
                bytes: 9,
                fields: 3
            }
        );
        // The reply after a skipped entry is still read right.
        assert!(matches!(&got[3], ReadEntry::Whole { entry, .. } if entry.id == "4-0"));
    }

    #[tokio::test]
    async fn nothing_arrived_and_errors() {
        assert!(parse(b"*-1\r\n", bounds(10, 10)).await.unwrap().is_empty());
        let e = parse(
            b"-NOGROUP No such key 's' or consumer group 'g'\r\n",
            bounds(10, 10),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, crate::redis::RedisFailure::MissingGroup);
        let e = parse(b"-LOADING Redis is loading\r\n", bounds(10, 10))
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::redis::RedisFailure::Outage);
        let e = parse(
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$5\r\nab",
            bounds(10, 10),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, crate::redis::RedisFailure::Outage, "{e}");
    }
}
