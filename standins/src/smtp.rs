//! An SMTP server that receives mail and keeps it for inspection, on a
//! free loopback port: the mail relay of the demo and the tests.
//!
//! It speaks enough of ESMTP for a real client (EHLO, PIPELINING, 8BITMIME,
//! SMTPUTF8, AUTH PLAIN and LOGIN when it is given credentials, STARTTLS or
//! TLS from the first byte when it is given a certificate, MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT), keeps every mail with its
//! envelope and whether it came encrypted, and can be told to answer the next transactions with a given
//! reply at a given stage ([`SmtpReceiver::push`]), as a relay refusing a
//! mailbox (550) or asking to try later (451) does.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The largest mail kept (DATA past it is refused).
const MAX_DATA: usize = 16 * 1024 * 1024;

/// One mail as received.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope's sender (`MAIL FROM`).
    pub from: String,
    /// Whether the session was encrypted (TLS) when the mail was sent.
    pub tls: bool,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message: headers and body, as sent (dot-unstuffed).
    pub data: String,
    /// The connection it came on (1, 2, ...).
    pub connection: u64,
    pub at: SystemTime,
}

impl ReceivedMail {
    /// The first header of that name, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(head(&self.data), name)
    }

    /// The body's parts, each as (content type, decoded text): one for a
    /// single-part mail, one per part of a multipart one.
    pub fn parts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out, 0);
        out
    }

    /// The decoded text of the first part of that content type
    /// (`text/plain`, `text/html`).
    pub fn part(&self, content_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(content_type))
            .map(|(_, text)| text)
    }
}

fn head(data: &str) -> &str {
    data.split_once("\r\n\r\n").map_or(data, |(h, _)| h)
}

fn header_of(head: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = &mut value {
            if line.starts_with([' ', '\t']) {
                v.push_str(line);
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}

/// A header's value without its `; parameters`, and one parameter of it.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn collect_parts(entity: &str, out: &mut Vec<(String, String)>, depth: usize) {
    let (head, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
    let content_type = header_of(head, "content-type").unwrap_or_else(|| "text/plain".into());
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if kind.starts_with("multipart/") && depth < 8 {
        if let Some(boundary) = param(&content_type, "boundary") {
            let marker = format!("--{boundary}");
            for piece in body.split(&marker).skip(1) {
                if piece.starts_with("--") {
                    break;
                }
                let piece = piece.strip_prefix("\r\n").unwrap_or(piece);
                let piece = piece.strip_suffix("\r\n").unwrap_or(piece);
                collect_parts(piece, out, depth + 1);
            }
        }
        return;
    }
    let encoding = header_of(head, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .unwrap_or_default(),
        "quoted-printable" => quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    out.push((kind, String::from_utf8_lossy(&bytes).into_owned()));
}

fn quoted_printable(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Where in a transaction a scripted reply is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mail,
    Rcpt,
    /// After the data's final dot: the mail was transferred, and refused.
    Data,
}

/// A reply to give instead of accepting, once; a 2xx reply at [`Stage::Data`]
/// accepts the mail (keeps it) with that text, to let one mail through
/// before a refusal scripted after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stage: Stage,
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn new(stage: Stage, code: u16, text: &str) -> Self {
        Reply {
            stage,
            code,
            text: text.to_owned(),
        }
    }
}

/// How a receiver is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A client must log in (AUTH PLAIN or LOGIN) with these before
    /// sending.
    pub credentials: Option<(String, String)>,
    /// TLS with this configuration: offered as STARTTLS, or from the first
    /// byte with `implicit_tls`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (`smtps://`) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Mail sent before STARTTLS is refused (`530`).
    pub require_tls: bool,
}

#[derive(Debug, Default)]
struct Shared {
    mails: Mutex<Vec<ReceivedMail>>,
    script: Mutex<VecDeque<Reply>>,
    connections: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    options: Options,
    arrived: tokio::sync::Notify,
}

/// A running receiver; stopped when dropped.
#[derive(Debug)]
pub struct SmtpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpReceiver {
    /// Starts a receiver on a free loopback port that takes mail from
    /// anyone.
    pub async fn start() -> std::io::Result<SmtpReceiver> {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), None).await
    }

    /// Starts a receiver on `addr`; with `credentials`, a client must
    /// authenticate (AUTH PLAIN or LOGIN) before sending.
    pub async fn start_on(
        addr: SocketAddr,
        credentials: Option<(String, String)>,
    ) -> std::io::Result<SmtpReceiver> {
        Self::start_with(
            addr,
            Options {
                credentials,
                ..Options::default()
            },
        )
        .await
    }

    /// Starts a receiver on `addr` set up as `options` says.
    pub async fn start_with(addr: SocketAddr, options: Options) -> std::io::Result<SmtpReceiver> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            ..Default::default()
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let number = serving.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let open = serving.open.fetch_add(1, Ordering::Relaxed) + 1;
                serving.max_open.fetch_max(open, Ordering::Relaxed);
                let shared = serving.clone();
                sessions.spawn(async move {
                    let _ = serve(&shared, tcp, number).await;
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                });
                while sessions.try_join_next().is_some() {}
            }
        });
        Ok(SmtpReceiver { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:<port>`, or `smtps://` for TLS from the first
    /// byte.
    pub fn url(&self) -> String {
        let scheme = if self.shared.options.implicit_tls {
            "smtps"
        } else {
            "smtp"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Every mail accepted so far, in order.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.mails.lock().expect("lock").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The most connections open at once so far.
    pub fn max_open(&self) -> u64 {
        self.shared.max_open.load(Ordering::Relaxed)
    }

    /// Answers the next transaction that reaches `reply.stage` with it.
    pub fn push(&self, reply: Reply) {
        self.shared.script.lock().expect("lock").push_back(reply);
    }

    /// Waits until at least `n` mails have arrived, at most `limit`;
    /// returns how many have.
    pub async fn wait_mails(&self, n: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.shared.arrived.notified();
            let count = self.shared.mails.lock().expect("lock").len();
            if count >= n {
                return count;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.shared.mails.lock().expect("lock").len();
            }
        }
    }

    /// A few lines on what it received, for the demo.
    pub fn summary(&self) -> String {
        let mails = self.mails();
        let mut text = format!("{} mails received", mails.len());
        for m in mails.iter().rev().take(5).rev() {
            text.push_str(&format!(
                "\n  to {}: {}",
                m.to.join(", "),
                m.header("subject").unwrap_or_default()
            ));
        }
        text
    }
}

impl Shared {
    fn scripted(&self, stage: Stage) -> Option<Reply> {
        let mut script = self.script.lock().expect("lock");
        let first = script.front()?;
        (first.stage == stage).then(|| script.pop_front()).flatten()
    }
}

fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(arg, |(a, _)| a);
    inner.trim().to_owned()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a session ended.
enum Ended {
    Closed,
    /// The client asked for STARTTLS: go on over TLS on this stream.
    StartTls(Box<dyn Io>),
}

/// One connection: a session, in TLS from the start or after STARTTLS.
async fn serve(shared: &Shared, tcp: TcpStream, connection: u64) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let acceptor = shared
        .options
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    let mut stream: Box<dyn Io> = Box::new(tcp);
    let mut tls = false;
    if let Some(acceptor) = acceptor.as_ref().filter(|_| shared.options.implicit_tls) {
        stream = Box::new(acceptor.accept(stream).await?);
        tls = true;
    }
    loop {
        match session(shared, stream, connection, tls).await? {
            Ended::Closed => return Ok(()),
            Ended::StartTls(plain) => {
                let acceptor = acceptor.as_ref().expect("offered only with a certificate");
                stream = Box::new(acceptor.accept(plain).await?);
                tls = true;
            }
        }
    }
}

async fn session(
    shared: &Shared,
    stream: Box<dyn Io>,
    connection: u64,
    tls: bool,
) -> std::io::Result<Ended> {
    let mut read = BufReader::new(stream);
    // After STARTTLS the client greets again, without a new banner.
    if !tls || shared.options.implicit_tls {
        read.get_mut()
            .write_all(b"220 switchyard-standin ESMTP\r\n")
            .await?;
    }
    let offers_tls = !tls && shared.options.tls.is_some();
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut authenticated = shared.options.credentials.is_none();
    let mut line = String::new();
    loop {
        line.clear();
        if (&mut read).take(64 * 1024).read_line(&mut line).await? == 0 {
            return Ok(Ended::Closed);
        }
        let command = line.trim_end();
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let mut r = String::from(
                    "250-switchyard-standin\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n",
                );
                if offers_tls {
                    r.push_str("250-STARTTLS\r\n");
                }
                if shared.options.credentials.is_some() {
                    r.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                r.push_str("250 SIZE 16777216");
                r
            }
            "HELO" => "250 switchyard-standin".into(),
            "STARTTLS" if !offers_tls => "454 4.7.0 TLS not available".into(),
            // A command sent before the handshake would be taken as if it
            // had come encrypted (CVE-2011-0411's command injection).
            "STARTTLS" if !read.buffer().is_empty() => {
                "501 5.5.1 Commands pipelined after STARTTLS".into()
            }
            "STARTTLS" => {
                read.get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await?;
                return Ok(Ended::StartTls(read.into_inner()));
            }
            "AUTH" => {
                let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
                let decoded = |s: &str| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                let given = match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let response = if initial.is_empty() {
                            read.get_mut().write_all(b"334 \r\n").await?;
                            line.clear();
                            read.read_line(&mut line).await?;
                            line.clone()
                        } else {
                            initial.to_owned()
                        };
                        let plain = decoded(&response);
                        let mut fields = plain.split('\0').skip(1);
                        Some((
                            fields.next().unwrap_or_default().to_owned(),
                            fields.next().unwrap_or_default().to_owned(),
                        ))
                    }
                    "LOGIN" => {
                        read.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        line.clear();
                        read.read_line(&mut line).await?;
                        let user = decoded(&line);
                        read.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        line.clear();
                        read.read_line(&mut line).await?;
                        Some((user, decoded(&line)))
                    }
                    _ => None,
                };
                match (given, &shared.options.credentials) {
                    (Some(given), Some(expected)) if given == *expected => {
                        authenticated = true;
                        "235 2.7.0 Authentication successful".into()
                    }
                    (None, _) => "504 5.5.4 Unrecognized authentication type".into(),
                    _ => "535 5.7.8 Authentication credentials invalid".into(),
                }
            }
            "MAIL" if !tls && shared.options.require_tls => {
                "530 5.7.0 Must issue a STARTTLS command first".into()
            }
            "MAIL" if !authenticated => "530 5.7.0 Authentication required".into(),
            "MAIL" => match shared.scripted(Stage::Mail) {
                Some(r) => format!("{} {}", r.code, r.text),
                None => {
                    from = Some(address(arg.split_once(':').map_or("", |(_, a)| a)));
                    to.clear();
                    "250 2.1.0 OK".into()
                }
            },
            "RCPT" if from.is_none() => "503 5.5.1 MAIL first".into(),
            "RCPT" => match shared.scripted(Stage::Rcpt) {
                Some(r) => format!("{} {}", r.code, r.text),
                None => {
                    to.push(address(arg.split_once(':').map_or("", |(_, a)| a)));
                    "250 2.1.5 OK".into()
                }
            },
            "DATA" if to.is_empty() => "503 5.5.1 RCPT first".into(),
            "DATA" => {
                read.get_mut()
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                let mut too_big = false;
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(Ended::Closed);
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let l = line.strip_prefix('.').unwrap_or(&line);
                    if data.len() + l.len() > MAX_DATA {
                        too_big = true;
                    } else {
                        data.push_str(l);
                    }
                }
                let scripted = if too_big {
                    None
                } else {
                    shared.scripted(Stage::Data)
                };
                if too_big {
                    "552 5.3.4 Message too big".into()
                } else if let Some(r) = scripted.as_ref().filter(|r| r.code >= 300) {
                    format!("{} {}", r.code, r.text)
                } else {
                    let mail = ReceivedMail {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        tls,
                        data,
                        connection,
                        at: SystemTime::now(),
                    };
                    let n = {
                        let mut mails = shared.mails.lock().expect("lock");
                        mails.push(mail);
                        mails.len()
                    };
                    shared.arrived.notify_waiters();
                    scripted.map_or_else(
                        || format!("250 2.0.0 OK queued as {n}"),
                        |r| format!("{} {}", r.code, r.text),
                    )
                }
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".into()
            }
            "NOOP" => "250 2.0.0 OK".into(),
            "QUIT" => {
                read.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(Ended::Closed);
            }
            _ => "502 5.5.2 Command not recognized".into(),
        };
        // One write a reply: a line split over two writes waits for the
        // client's delayed ACK (Nagle) before its end is sent.
        read.get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_multipart_mail_are_decoded() {
        let data = "Subject: Hi\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 =\r\nau lait\r\n--b1\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--b1--\r\n";
        let mail = ReceivedMail {
            from: "a@b.example".into(),
            tls: false,
            to: vec!["c@d.example".into()],
            data: data.into(),
            connection: 1,
            at: SystemTime::now(),
        };
        assert_eq!(mail.header("subject").as_deref(), Some("Hi"));
        assert_eq!(mail.part("text/plain").as_deref(), Some("Café au lait"));
        assert_eq!(mail.part("text/html").as_deref(), Some("<b>hi</b>"));
    }
}
