//! Secret values masked in whatever the host keeps or shows of a plugin's
//! text: its log lines, its failure reasons, what it printed, the
//! destinations it asked for.
//!
//! A secret rarely appears only as itself. A plugin that reports an API's
//! answer echoes it inside JSON, escaped; URLs carry it percent-encoded;
//! Basic credentials carry `user:secret` in base64. So each secret is
//! searched for in every form it takes in practice ([`forms`]), all at once
//! (one Aho-Corasick automaton per queue, built when its settings are), and
//! every match becomes `[secret]`. Masking comes before any cut to a bound:
//! a cut first could leave half a secret just short of the mark, where no
//! search finds it ([`Secrets::bounded`]).

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

/// What a masked secret becomes.
pub const MASK: &str = "[secret]";

/// Secrets shorter than this are not masked: they would mask unrelated
/// text.
pub const MIN_SECRET: usize = 4;

/// The part of a secret's base64 that does not depend on its neighbours
/// must be at least this long (48 bits) to be searched for: shorter runs
/// match unrelated base64 by chance.
const MIN_BASE64_CORE: usize = 6;

/// One queue's secrets, ready to be masked.
#[derive(Clone, Default)]
pub struct Secrets {
    search: Option<AhoCorasick>,
    /// Per pattern: whether it is a run of base64, whose match widens
    /// over the neighbouring base64 characters that also carry bits of the
    /// secret.
    base64: Vec<bool>,
    /// The longest pattern, in bytes.
    longest: usize,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("patterns", &self.base64.len())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The masks of `values`: each value, and the password of a value that
    /// is a URL with credentials (a database or relay URL).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<(String, bool)> = Vec::new();
        for value in values {
            let mut add = |secret: &str| {
                for form in forms(secret) {
                    if !patterns.iter().any(|(p, _)| *p == form.0) {
                        patterns.push(form);
                    }
                }
            };
            add(value);
            if let Some(password) = url_password(value) {
                add(&password);
            }
        }
        if patterns.is_empty() {
            return Secrets::default();
        }
        let search = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|(p, _)| p.as_str()))
            .ok();
        Secrets {
            longest: patterns.iter().map(|(p, _)| p.len()).max().unwrap_or(0),
            base64: patterns.iter().map(|(_, b)| *b).collect(),
            search,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.search.is_none()
    }

    /// The longest text a secret takes: a prefix of a longer text may end
    /// in up to this many bytes of one, less one.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every form of every secret replaced by [`MASK`].
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let Some(search) = &self.search else {
            return Cow::Borrowed(text);
        };
        let mut matches = search.find_iter(text).peekable();
        if matches.peek().is_none() {
            return Cow::Borrowed(text);
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for m in matches {
            let (mut start, mut end) = (m.start(), m.end());
            if start < done {
                continue;
            }
            if self.base64[m.pattern().as_usize()] {
                // Up to three characters on each side still carry bits of
                // the secret's first and last bytes, and padding follows.
                for _ in 0..3 {
                    if start > done && is_base64(bytes[start - 1]) {
                        start -= 1;
                    }
                }
                for _ in 0..3 {
                    if end < bytes.len() && is_base64(bytes[end]) {
                        end += 1;
                    }
                }
                while end < bytes.len() && bytes[end] == b'=' {
                    end += 1;
                }
            }
            out.push_str(&text[done..start]);
            out.push_str(MASK);
            done = end;
        }
        out.push_str(&text[done..]);
        Cow::Owned(out)
    }

    /// `text` masked, then cut to at most `max` bytes (see
    /// [`crate::text::bounded`]).
    pub fn bounded(&self, text: &str, max: usize) -> String {
        crate::text::bounded(&self.mask(text), max)
    }
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// The password of a URL with credentials (`scheme://user:password@...`),
/// percent-decoded.
fn url_password(value: &str) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    let password = url.password()?;
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8()
        .ok()?
        .into_owned();
    (decoded.len() >= MIN_SECRET).then_some(decoded)
}

/// The texts `secret` takes in practice, each with whether it is a run of
/// base64: as it is; JSON-escaped (as serde_json and most encoders write
/// it, with non-ASCII escaped too, with `/` escaped, and escaped twice, as
/// JSON inside a JSON string is); percent-encoded (as a URL component, and
/// as a form value); and the runs of base64 that encode it wherever it
/// stands in the encoded text (`user:secret` in Basic credentials, say),
/// standard and URL-safe alphabets.
pub fn forms(secret: &str) -> Vec<(String, bool)> {
    if secret.len() < MIN_SECRET {
        return Vec::new();
    }
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut add = |text: String, base64: bool| {
        if !text.is_empty() && !out.iter().any(|(t, _)| *t == text) {
            out.push((text, base64));
        }
    };
    add(secret.to_owned(), false);
    let json = json_escaped(secret, false);
    add(json.replace('/', "\\/"), false);
    add(json_escaped(secret, true), false);
    add(json_escaped(secret, true).to_uppercase_hex(), false);
    add(json_escaped(&json, false), false);
    add(json, false);
    for set in [COMPONENT, UNRESERVED] {
        let encoded = percent_encoding::utf8_percent_encode(secret, set).to_string();
        add(encoded.to_lowercase_hex(), false);
        add(encoded.replace("%20", "+"), false);
        add(encoded, false);
    }
    let bytes = secret.as_bytes();
    for offset in 0..3 {
        // The secret starting `offset` bytes into a group of three: the
        // characters of the groups that lie wholly inside it.
        let skip = (3 - offset) % 3;
        let Some(core) = bytes.get(skip..) else {
            continue;
        };
        let core = &core[..core.len() / 3 * 3];
        if core.len() < MIN_BASE64_CORE {
            continue;
        }
        for engine in [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            add(engine.encode(core), true);
        }
    }
    out
}

/// Characters a URL component keeps as they are (JavaScript's
/// `encodeURIComponent`): letters, digits and `-_.!~*'()`.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// RFC 3986's unreserved characters only: letters, digits and `-._~`.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The inside of the JSON string of `text`; with `ascii`, every
/// non-ASCII character as `\uXXXX` (surrogate pairs past the BMP), as
/// Python's `json.dumps` writes by default.
fn json_escaped(text: &str, ascii: bool) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default();
    if !ascii {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Hex digits in escapes written the other case.
trait HexCase {
    fn to_uppercase_hex(&self) -> String;
    fn to_lowercase_hex(&self) -> String;
}

impl HexCase for String {
    /// `\u00e9` as `\u00E9`.
    fn to_uppercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut rest = self.as_str();
        while let Some(i) = rest.find("\\u") {
            out.push_str(&rest[..i + 2]);
            let hex_end = (i + 6).min(rest.len());
            out.push_str(&rest[i + 2..hex_end].to_ascii_uppercase());
            rest = &rest[hex_end..];
        }
        out.push_str(rest);
        out
    }

    /// `%C3%A9` as `%c3%a9`.
    fn to_lowercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut rest = self.as_str();
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..=i]);
            let hex_end = (i + 3).min(rest.len());
            out.push_str(&rest[i + 1..hex_end].to_ascii_lowercase());
            rest = &rest[hex_end..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const SECRET: &str = "S3CRET-ab\"c\\d/e é+f%g h";

    fn masked(text: &str) -> String {
        Secrets::new([SECRET]).mask(text).into_owned()
    }

    #[test]
    fn every_form_of_a_secret_is_masked() {
        let json = serde_json::to_string(&serde_json::json!({ "token": SECRET })).unwrap();
        let twice = serde_json::to_string(&serde_json::json!({ "answer": json })).unwrap();
        let cases = [
            format!("token {SECRET} refused"),
            json.clone(),
            twice,
            json.replace('/', "\\/"),
            // Python's json.dumps: non-ASCII escaped.
            json.replace('é', "\\u00e9"),
            json.replace('é', "\\u00E9"),
            format!(
                "https://api.example/?t={}",
                percent_encoding::utf8_percent_encode(SECRET, COMPONENT)
            ),
            format!(
                "t={}",
                percent_encoding::utf8_percent_encode(SECRET, UNRESERVED)
                    .to_string()
                    .to_lowercase_hex()
            ),
            format!(
                "t={}",
                percent_encoding::utf8_percent_encode(SECRET, UNRESERVED)
                    .to_string()
                    .replace("%20", "+")
            ),
        ];
        for text in cases {
            let out = masked(&text);
            assert!(out.contains(MASK), "{text} -> {out}");
            assert!(!out.contains("S3CRET"), "{text} -> {out}");
            assert!(!out.contains("RET-ab"), "{text} -> {out}");
        }
    }

    #[test]
    fn base64_of_the_secret_is_masked_wherever_it_stands() {
        // Basic credentials put the secret after a user name of any
        // length: every alignment within base64's groups of three.
        for user in ["", "u", "us", "user", "agent@example.com/token"] {
            for engine in [&STANDARD, &URL_SAFE] {
                let plain = format!("{user}:{SECRET}");
                let encoded = engine.encode(&plain);
                let text = format!("Authorization: Basic {encoded} was refused");
                let out = masked(&text);
                assert!(out.contains(MASK), "{plain}: {out}");
                // What is left decodes to no part of the secret longer
                // than a byte or two of its ends.
                let left: String = out
                    .split(MASK)
                    .flat_map(|p| p.split(' '))
                    .filter(|w| w.len() >= 4)
                    .filter_map(|w| engine.decode(w.trim_end_matches('=')).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .collect();
                assert!(!left.contains("CRET"), "{plain}: {out} leaves {left:?}");
                assert!(out.ends_with(" was refused"), "{out}");
            }
        }
    }

    #[test]
    fn a_url_secret_masks_its_password_alone_too() {
        let s = Secrets::new(["postgres://app:p%40ss-w0rd@db.internal/chat"]);
        assert_eq!(s.mask("login p@ss-w0rd failed"), "login [secret] failed");
        assert_eq!(
            s.mask("postgres://app:p%40ss-w0rd@db.internal/chat down"),
            "[secret] down"
        );
    }

    #[test]
    fn short_values_are_not_masked_and_text_without_secrets_is_kept() {
        let s = Secrets::new(["abc", "longer-secret"]);
        assert_eq!(s.mask("abc def"), "abc def");
        assert!(matches!(s.mask("nothing here"), Cow::Borrowed(_)));
        assert!(Secrets::new(["ab"]).is_empty());
    }

    #[test]
    fn masking_comes_before_the_cut() {
        let s = Secrets::new(["S3CRET-abcdefghijklmnopqrstuvwxyz"]);
        // The secret straddles the cut: masked whole, then cut.
        let text = format!("{}S3CRET-abcdefghijklmnopqrstuvwxyz", "x".repeat(1020));
        let out = s.bounded(&text, 1024);
        assert!(!out.contains("S3C"), "{out}");
        assert!(out.ends_with("x[sec… [4 more bytes]"), "{out}");
    }
}
