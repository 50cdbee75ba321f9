//! What an operator grants a queue's plugin, and the checks that enforce
//! it. Pure: no I/O here.
//!
//! Outbound HTTP is granted by destination: `allowed_hosts` lists
//! `scheme://host[:port]`, the host exact, an IP address, or `*.` and a
//! domain for its subdomains. A request is checked twice: its URL against
//! the list, then every address its host resolves to, before connecting to
//! one of them (never resolving again): an address that is not public
//! (IANA's special-purpose ranges: loopback, private, link-local,
//! unspecified, and the like) is refused unless the grant that matched
//! names the host exactly, and a link-local one (169.254.169.254, where
//! clouds serve credentials) unless the grant is that address itself. So a
//! wildcard grant cannot be turned into a way to the host's own network by
//! a name that resolves there, nor an exact name into the cloud's metadata.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod addresses;

pub use addresses::{SPECIAL_V4, SPECIAL_V6, canonical, is_link_local, is_public, special};

/// A URL scheme a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The host part of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One name, exactly (lower-cased).
    Name(String),
    /// `*.example.com`: any subdomain of `example.com`, not the domain
    /// itself.
    Subdomains(String),
    /// One address.
    Ip(IpAddr),
}

/// One entry of `allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub scheme: Scheme,
    pub host: HostPattern,
    /// `None`: the scheme's default port.
    pub port: Option<u16>,
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(n) => write!(f, "{n}")?,
            HostPattern::Subdomains(d) => write!(f, "*.{d}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// A host as a request names it: a name, or an address in its one
/// canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestHost::Name(n) => write!(f, "{n}"),
            RequestHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RequestHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Reads the host of a URL. A name is lower-cased; an address must be
/// written the one standard way (dotted decimal, or bracketed IPv6): the
/// other forms resolvers accept (`2130706433`, `0x7f.1`, `0177.0.0.1`)
/// would slip past a check of names, so they are refused.
pub fn request_host(host: &str) -> Result<RequestHost, BadHost> {
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err(BadHost::Empty);
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| RequestHost::Ip(canonical(IpAddr::V6(ip))))
            .map_err(|_| BadHost::NotIpv6(host.to_owned()));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(RequestHost::Ip(IpAddr::V4(ip)));
    }
    // All digits, dots and hex: an address in a form other than the
    // standard one, or a name no DNS would hold.
    let numeric = host
        .split('.')
        .all(|part| !part.is_empty() && is_number_like(part));
    if numeric {
        return Err(BadHost::NonStandardAddress(host.to_owned()));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(BadHost::NotAName(host.to_owned()));
    }
    Ok(RequestHost::Name(host.to_ascii_lowercase()))
}

/// Why a host is not one a request may name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHost {
    #[error("no host")]
    Empty,
    #[error("{0:?} is not an IPv6 address")]
    NotIpv6(String),
    #[error("{0:?} is not an address in standard form (write a.b.c.d) nor a name")]
    NonStandardAddress(String),
    #[error("{0:?} is not a host name")]
    NotAName(String),
}

/// How an `allowed_hosts` entry is written.
const ENTRY_FORM: &str =
    "write scheme://host[:port], e.g. \"https://*.zendesk.com\" or \"http://127.0.0.1:8080\"";

/// Why an `allowed_hosts` entry cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: {problem}")]
pub struct BadEntry {
    pub entry: String,
    pub problem: EntryProblem,
}

/// What is wrong in an `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("{ENTRY_FORM}")]
    NoScheme,
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("only a scheme, host and port: {ENTRY_FORM}")]
    NotOnlyHost,
    #[error("an IPv6 address without its closing ]")]
    UnclosedIpv6,
    #[error("{0:?} is not a port")]
    Port(String),
    #[error("*. must be followed by a domain name")]
    Wildcard,
    #[error(transparent)]
    Host(#[from] BadHost),
}

fn is_number_like(part: &str) -> bool {
    let p = part.to_ascii_lowercase();
    if let Some(hex) = p.strip_prefix("0x") {
        return hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    p.chars().all(|c| c.is_ascii_digit())
}

impl AllowedHost {
    /// Reads one `allowed_hosts` entry: `scheme://host[:port]`.
    pub fn parse(text: &str) -> Result<AllowedHost, BadEntry> {
        let bad = |problem: EntryProblem| BadEntry {
            entry: text.to_owned(),
            problem,
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad(EntryProblem::NoScheme))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(bad(EntryProblem::Scheme(other.to_owned()))),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad(EntryProblem::NotOnlyHost));
        }
        let (host, port) = split_port(rest).map_err(bad)?;
        let host = if let Some(domain) = host.strip_prefix("*.") {
            match request_host(domain) {
                Ok(RequestHost::Name(d)) if d.contains('.') => HostPattern::Subdomains(d),
                _ => return Err(bad(EntryProblem::Wildcard)),
            }
        } else {
            match request_host(host).map_err(|e| bad(e.into()))? {
                RequestHost::Name(n) => HostPattern::Name(n),
                RequestHost::Ip(ip) => HostPattern::Ip(ip),
            }
        };
        Ok(AllowedHost { scheme, host, port })
    }

    /// Whether this grant covers a request, and how closely.
    fn covers(&self, scheme: Scheme, host: &RequestHost, port: u16) -> Option<Named> {
        if self.scheme != scheme || self.port.unwrap_or(scheme.default_port()) != port {
            return None;
        }
        match (&self.host, host) {
            (HostPattern::Name(g), RequestHost::Name(h)) if g == h => Some(Named::Name),
            (HostPattern::Subdomains(d), RequestHost::Name(h))
                if h.len() > d.len() + 1
                    && h.ends_with(d.as_str())
                    && h[..h.len() - d.len()].ends_with('.') =>
            {
                Some(Named::Wildcard)
            }
            (HostPattern::Ip(g), RequestHost::Ip(h)) if g == h => Some(Named::Address),
            _ => None,
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets).
fn split_port(text: &str) -> Result<(&str, Option<u16>), EntryProblem> {
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => (&text[..=end], text[end + 1..].strip_prefix(':')),
            None => return Err(EntryProblem::UnclosedIpv6),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| EntryProblem::Port(p.to_owned()))
        })
        .transpose()?;
    Ok((host, port))
}

/// A queue's HTTP grant: where its plugin may send requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    pub allowed: Vec<AllowedHost>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0} is not in the queue's allowed_hosts")]
    NotGranted(String),
    #[error(transparent)]
    BadDestination(BadHost),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error(
        "{host} resolves to {ip}, which is not a public address ({what}), and allowed_hosts does not name {host} exactly"
    )]
    NotPublic {
        host: String,
        ip: IpAddr,
        what: &'static str,
    },
    #[error(
        "{host} resolves to {ip}, a link-local address (where clouds serve their metadata and credentials), which only a grant of that address itself allows"
    )]
    LinkLocal { host: String, ip: IpAddr },
}

/// How closely the grant that covers a request names its host: the
/// closer, the more of the host's own network it may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Named {
    /// `*.domain`: public addresses only.
    Wildcard,
    /// The name exactly: any address but link-local.
    Name,
    /// The address itself: that address, whatever it is.
    Address,
}

/// A request's destination, once its URL was checked against the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: RequestHost,
    pub port: u16,
    /// How closely the grant names the host.
    pub named: Named,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl HttpGrant {
    /// Checks a request's URL parts against the grant.
    pub fn check(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
    ) -> Result<Destination, Denied> {
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(Denied::Scheme(other.to_owned()));
            }
        };
        let host = request_host(host).map_err(Denied::BadDestination)?;
        let port = port.unwrap_or(scheme.default_port());
        let named = self
            .allowed
            .iter()
            .filter_map(|g| g.covers(scheme, &host, port))
            .max();
        match named {
            Some(named) => Ok(Destination {
                scheme,
                host,
                port,
                named,
            }),
            None => Err(Denied::NotGranted(format!(
                "{}://{host}:{port}",
                scheme.as_str()
            ))),
        }
    }
}

impl Destination {
    /// Checks an address the destination's host resolved to (or the
    /// address it names): a non-public one only for a host the grant names
    /// exactly, and a link-local one only when the grant is that address.
    pub fn check_address(&self, ip: IpAddr) -> Result<IpAddr, Denied> {
        let ip = canonical(ip);
        let host = || self.host.to_string();
        match (special(ip), self.named) {
            (None, _) | (Some(_), Named::Address) => Ok(ip),
            (Some(_), Named::Name) if is_link_local(ip) => {
                Err(Denied::LinkLocal { host: host(), ip })
            }
            (Some(_), Named::Name) => Ok(ip),
            (Some(what), Named::Wildcard) => Err(Denied::NotPublic {
                host: host(),
                ip,
                what,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(entries: &[&str]) -> HttpGrant {
        HttpGrant {
            allowed: entries
                .iter()
                .map(|e| AllowedHost::parse(e).unwrap())
                .collect(),
        }
    }

    #[test]
    fn entries_are_read_or_refused_with_the_form() {
        let ok = [
            ("https://*.zendesk.com", "https://*.zendesk.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("HTTPS://API.Example.com/", "https://api.example.com"),
            ("http://[::1]:9000", "http://[::1]:9000"),
        ];
        for (text, shown) in ok {
            assert_eq!(
                AllowedHost::parse(text).unwrap().to_string(),
                shown,
                "{text}"
            );
        }
        for bad in [
            "zendesk.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://*.com",
            "http://2130706433",
            "http://x.com:99999",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn requests_are_checked_against_the_grant() {
        let g = grant(&[
            "https://*.zendesk.com",
            "http://127.0.0.1:8080",
            "https://hooks.example.com",
        ]);
        // (scheme, host, port) -> Ok(how it is named) or the start of the
        // refusal
        type Case<'a> = (&'a str, &'a str, Option<u16>, Result<Named, &'a str>);
        let cases: &[Case] = &[
            ("https", "acme.zendesk.com", None, Ok(Named::Wildcard)),
            ("https", "a.b.zendesk.com", Some(443), Ok(Named::Wildcard)),
            (
                "https",
                "zendesk.com",
                None,
                Err("https://zendesk.com:443 is not in"),
            ),
            (
                "https",
                "evilzendesk.com",
                None,
                Err("https://evilzendesk.com:443 is not in"),
            ),
            (
                "http",
                "acme.zendesk.com",
                None,
                Err("http://acme.zendesk.com:80 is not in"),
            ),
            (
                "https",
                "acme.zendesk.com",
                Some(8443),
                Err("https://acme.zendesk.com:8443"),
            ),
            ("http", "127.0.0.1", Some(8080), Ok(Named::Address)),
            (
                "http",
                "127.0.0.1",
                Some(8081),
                Err("http://127.0.0.1:8081 is not in"),
            ),
            (
                "http",
                "localhost",
                Some(8080),
                Err("http://localhost:8080 is not in"),
            ),
            (
                "http",
                "2130706433",
                Some(8080),
                Err("\"2130706433\" is not an address in standard form"),
            ),
            (
                "http",
                "0x7f.0.0.1",
                Some(8080),
                Err("\"0x7f.0.0.1\" is not an address in standard form"),
            ),
            ("http", "[::ffff:127.0.0.1]", Some(8080), Ok(Named::Address)),
            ("https", "HOOKS.example.com.", None, Ok(Named::Name)),
            (
                "gopher",
                "hooks.example.com",
                None,
                Err("scheme \"gopher\""),
            ),
        ];
        for (scheme, host, port, want) in cases {
            let got = g.check(scheme, host, *port);
            match (want, &got) {
                (Ok(named), Ok(d)) => assert_eq!(d.named, *named, "{scheme}://{host}"),
                (Err(start), Err(e)) => {
                    assert!(e.to_string().starts_with(start), "{scheme}://{host}: {e}")
                }
                _ => panic!("{scheme}://{host}:{port:?}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn addresses_a_wildcard_name_resolves_to_must_be_public() {
        let g = grant(&["https://*.zendesk.com", "http://internal.example:8080"]);
        let wild = g.check("https", "acme.zendesk.com", None).unwrap();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::ffff:192.168.1.1",
            "fd00::1",
            "fe80::1",
            "100.64.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                wild.check_address(ip).is_err(),
                "{ip} allowed through a wildcard"
            );
        }
        for ip in ["93.184.216.34", "2606:4700::6810:85e5"] {
            assert!(
                wild.check_address(ip.parse().unwrap()).is_ok(),
                "{ip} refused"
            );
        }
        let exact = g.check("http", "internal.example", Some(8080)).unwrap();
        assert!(exact.check_address("10.0.0.5".parse().unwrap()).is_ok());
        let e = wild
            .check_address("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "acme.zendesk.com resolves to 169.254.169.254, which is not a public address (link-local), and allowed_hosts does not name acme.zendesk.com exactly"
        );
    }

    #[test]
    fn link_local_needs_a_grant_of_the_address_itself() {
        let g = grant(&[
            "http://metadata.internal",
            "http://169.254.169.254",
            "http://[fe80::1]:8080",
        ]);
        let by_name = g.check("http", "metadata.internal", None).unwrap();
        for ip in [
            "169.254.169.254",
            "fe80::a9fe:a9fe",
            "::ffff:169.254.169.254",
        ] {
            let e = by_name.check_address(ip.parse().unwrap()).unwrap_err();
            assert!(matches!(e, Denied::LinkLocal { .. }), "{ip}: {e}");
        }
        // A name exactly granted may still reach the host's own network.
        assert!(by_name.check_address("10.1.2.3".parse().unwrap()).is_ok());
        assert!(by_name.check_address("127.0.0.1".parse().unwrap()).is_ok());
        let literal = g.check("http", "169.254.169.254", None).unwrap();
        assert!(
            literal
                .check_address("169.254.169.254".parse().unwrap())
                .is_ok()
        );
        let literal6 = g.check("http", "[fe80::1]", Some(8080)).unwrap();
        assert!(literal6.check_address("fe80::1".parse().unwrap()).is_ok());
    }
}
