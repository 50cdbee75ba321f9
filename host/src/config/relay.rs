//! A mail relay's URL, read: `smtp://host[:port][/hello-name][?tls=...]`
//! or `smtps://host[:port]`, with the credentials in it or beside it.

use std::borrow::Cow;
use std::fmt;

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    /// STARTTLS; `required`: fail if the relay does not offer it.
    StartTls {
        required: bool,
    },
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// Why a relay's URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRelay {
    #[error(transparent)]
    Url(#[from] url::ParseError),
    #[error("no host")]
    NoHost,
    #[error("tls={0:?}: expected tls=required or tls=opportunistic (smtp://) or none (smtps://)")]
    Tls(String),
    #[error("the scheme {0:?} is neither smtp nor smtps")]
    Scheme(String),
    #[error("credentials: {0}")]
    Credentials(#[source] std::str::Utf8Error),
}

/// A relay, from `smtp_url` and the credentials beside it.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The name the host gives in its greeting (the URL's path), if any.
    pub hello: Option<String>,
    /// User and password, percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("login", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl SmtpRelay {
    /// Reads `url`; `username` and `password`, when given, are the
    /// credentials instead of the URL's. Ports default to 25 (plain), 587
    /// (STARTTLS) and 465 (TLS).
    pub fn parse(
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<SmtpRelay, BadRelay> {
        let url = url::Url::parse(url)?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(BadRelay::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None | Some("none")) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTls { required: false }, 587),
            ("smtps", None) => (Security::Implicit, 465),
            ("smtp" | "smtps", Some(other)) => return Err(BadRelay::Tls(other.to_owned())),
            (scheme, _) => return Err(BadRelay::Scheme(scheme.to_owned())),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(BadRelay::Credentials)
        };
        let credentials = match (url.password(), username, password) {
            (_, Some(user), Some(password)) => Some((user.to_owned(), password.to_owned())),
            (Some(password), _, _) => Some((decode(url.username())?, decode(password)?)),
            _ => None,
        };
        let name = url.path().trim_matches('/');
        Ok(SmtpRelay {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            hello: (!name.is_empty()).then(|| name.to_owned()),
            credentials,
        })
    }

    /// Whether a login could go out unencrypted: credentials, no TLS (or
    /// STARTTLS only if offered, which whoever is on the path can strip),
    /// and a relay beyond loopback.
    pub fn credentials_in_clear(&self) -> bool {
        let loopback = self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| crate::grants::canonical(ip).is_loopback());
        self.credentials.is_some()
            && !loopback
            && matches!(
                self.security,
                Security::Plain | Security::StartTls { required: false }
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_security_and_login() {
        let r = SmtpRelay::parse("smtp://relay.example", None, None).unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.security),
            ("relay.example", 25, Security::Plain)
        );
        assert!(r.credentials.is_none());
        let r =
            SmtpRelay::parse("smtp://u%40x:p%3Aw@relay.example?tls=required", None, None).unwrap();
        assert_eq!(
            (r.port, r.security),
            (587, Security::StartTls { required: true })
        );
        assert_eq!(r.credentials, Some(("u@x".into(), "p:w".into())));
        let r = SmtpRelay::parse("smtps://relay.example:2465", Some("a"), Some("b")).unwrap();
        assert_eq!((r.port, r.security), (2465, Security::Implicit));
        assert_eq!(r.credentials, Some(("a".into(), "b".into())));
        let r = SmtpRelay::parse("smtp://[::1]:2525/mail.chat.example", None, None).unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 2525));
        assert_eq!(r.hello.as_deref(), Some("mail.chat.example"));
        for bad in [
            "http://relay.example",
            "smtp://relay.example?tls=yes",
            "smtp://",
            "relay",
        ] {
            assert!(SmtpRelay::parse(bad, None, None).is_err(), "{bad}");
        }
    }
}
