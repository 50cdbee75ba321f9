//! What an operator grants a queue's plugin, and the checks that enforce
//! it. Pure: no I/O here.
//!
//! Outbound HTTP is granted by destination: `allowed_hosts` lists
//! `scheme://host[:port]`, the host exact, an IP address, or `*.` and a
//! domain for its subdomains. A request is checked twice: its URL against
//! the list, then every address its host resolves to, before connecting to
//! one of them (never resolving again): an address that is not public
//! (loopback, private, link-local such as 169.254.169.254, unspecified,
//! and the like) is refused unless the grant that matched names the host
//! exactly. So a wildcard grant cannot be turned into a way to the host's
//! own network by a name that resolves there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
pub fn request_host(host: &str) -> Result<RequestHost, String> {
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| RequestHost::Ip(canonical(IpAddr::V6(ip))))
            .map_err(|_| format!("{host:?} is not an IPv6 address"));
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
        return Err(format!(
            "{host:?} is not an address in standard form (write a.b.c.d) nor a name"
        ));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok(RequestHost::Name(host.to_ascii_lowercase()))
}

fn is_number_like(part: &str) -> bool {
    let p = part.to_ascii_lowercase();
    if let Some(hex) = p.strip_prefix("0x") {
        return hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    p.chars().all(|c| c.is_ascii_digit())
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4
/// address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether an address is on the public internet. Everything else
/// (loopback, private, shared, link-local, unspecified, multicast,
/// broadcast, documentation and benchmarking ranges, IPv6 unique-local,
/// and IPv4 tunnelled in IPv6) can reach the host's own network.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || s[0] == 0x0064 && s[1] == 0xff9b
                || v6.to_ipv4().is_some())
        }
    }
}

impl AllowedHost {
    /// Reads one `allowed_hosts` entry: `scheme://host[:port]`.
    pub fn parse(text: &str) -> Result<AllowedHost, String> {
        let form = "write scheme://host[:port], e.g. \"https://*.zendesk.com\" or \"http://127.0.0.1:8080\"";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?}: {form}"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("{text:?}: scheme {other:?} is not http or https")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(format!("{text:?}: only a scheme, host and port: {form}"));
        }
        let (host, port) = split_port(rest).map_err(|e| format!("{text:?}: {e}"))?;
        let host = if let Some(domain) = host.strip_prefix("*.") {
            match request_host(domain) {
                Ok(RequestHost::Name(d)) if d.contains('.') => HostPattern::Subdomains(d),
                _ => return Err(format!("{text:?}: *. must be followed by a domain name")),
            }
        } else {
            match request_host(host).map_err(|e| format!("{text:?}: {e}"))? {
                RequestHost::Name(n) => HostPattern::Name(n),
                RequestHost::Ip(ip) => HostPattern::Ip(ip),
            }
        };
        Ok(AllowedHost { scheme, host, port })
    }

    /// Whether this grant covers a request, and if so whether it names the
    /// host exactly (which lets it resolve to a non-public address).
    fn covers(&self, scheme: Scheme, host: &RequestHost, port: u16) -> Option<bool> {
        if self.scheme != scheme || self.port.unwrap_or(scheme.default_port()) != port {
            return None;
        }
        match (&self.host, host) {
            (HostPattern::Name(g), RequestHost::Name(h)) if g == h => Some(true),
            (HostPattern::Subdomains(d), RequestHost::Name(h))
                if h.len() > d.len() + 1
                    && h.ends_with(d.as_str())
                    && h[..h.len() - d.len()].ends_with('.') =>
            {
                Some(false)
            }
            (HostPattern::Ip(g), RequestHost::Ip(h)) if g == h => Some(true),
            _ => None,
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets).
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => (&text[..=end], text[end + 1..].strip_prefix(':')),
            None => return Err("an IPv6 address without its closing ]".into()),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port")))
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
    #[error("{0}")]
    BadDestination(String),
    #[error(
        "{host} resolves to {ip}, which is not a public address, and allowed_hosts does not name {host} exactly"
    )]
    NotPublic { host: String, ip: IpAddr },
}

/// A request's destination, once its URL was checked against the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: RequestHost,
    pub port: u16,
    /// The grant names the host exactly: its addresses may be non-public.
    pub exact: bool,
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
                return Err(Denied::BadDestination(format!(
                    "scheme {other:?} is not http or https"
                )));
            }
        };
        let host = request_host(host).map_err(Denied::BadDestination)?;
        let port = port.unwrap_or(scheme.default_port());
        let exact = self
            .allowed
            .iter()
            .filter_map(|g| g.covers(scheme, &host, port))
            .max();
        match exact {
            Some(exact) => Ok(Destination {
                scheme,
                host,
                port,
                exact,
            }),
            None => Err(Denied::NotGranted(format!(
                "{}://{host}:{port}",
                scheme.as_str()
            ))),
        }
    }
}

impl Destination {
    /// Checks an address the destination's host resolved to: a non-public
    /// one only for a host the grant names exactly (an address granted is
    /// named exactly too).
    pub fn check_address(&self, ip: IpAddr) -> Result<IpAddr, Denied> {
        let ip = canonical(ip);
        if is_public(ip) || self.exact {
            Ok(ip)
        } else {
            Err(Denied::NotPublic {
                host: self.host.to_string(),
                ip,
            })
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
        // (scheme, host, port) -> Ok(exact) or the start of the refusal
        type Case<'a> = (&'a str, &'a str, Option<u16>, Result<bool, &'a str>);
        let cases: &[Case] = &[
            ("https", "acme.zendesk.com", None, Ok(false)),
            ("https", "a.b.zendesk.com", Some(443), Ok(false)),
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
            ("http", "127.0.0.1", Some(8080), Ok(true)),
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
            ("http", "[::ffff:127.0.0.1]", Some(8080), Ok(true)),
            ("https", "HOOKS.example.com.", None, Ok(true)),
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
                (Ok(exact), Ok(d)) => assert_eq!(d.exact, *exact, "{scheme}://{host}"),
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
            "acme.zendesk.com resolves to 169.254.169.254, which is not a public address, and allowed_hosts does not name acme.zendesk.com exactly"
        );
    }
}
