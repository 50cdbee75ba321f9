//! Text from outside the host made safe to keep, log and show.
//!
//! Producers choose message ids, types and headers; plugins choose their
//! failure reasons, log lines and what they print. None of it may grow the
//! host's memory, logs or dead letters without bound, and none of it may
//! forge a log line or move an operator's terminal cursor. So every such
//! text is cut to a bound where it enters the host ([`bounded`]), and every
//! log line escapes control characters in all of its fields ([`SafeFields`],
//! installed by [`crate::telemetry::init_logging`]), whichever call site
//! logged it.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Bytes kept of a reason a plugin gives for a failure (retry or reject).
pub const MAX_REASON: usize = 1024;
/// Bytes kept of what a plugin wrote to stdout and stderr in one call, when
/// it is appended to a failure's reason or logged.
pub const MAX_OUTPUT: usize = 1024;
/// Bytes of one field value a log line shows: a backstop behind the bounds
/// above, so that no call site can write an unbounded line.
pub const MAX_LOG_FIELD: usize = 8 * 1024;

/// `text` cut to at most `max` bytes (at a character boundary), the cut
/// marked with how much was left out.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

/// Bytes read as text, invalid UTF-8 replaced, cut to `max` bytes.
pub fn bounded_lossy(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len().min(max.saturating_add(4));
    let text = String::from_utf8_lossy(&bytes[..cut]);
    if cut == bytes.len() {
        bounded(&text, max)
    } else {
        let mut end = max.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… [{} more bytes]", &text[..end], bytes.len() - end)
    }
}

/// Writes `text` with every control character escaped: `\n`, `\r`, `\t`,
/// `\\`-style for the common ones, `\u{..}` for the rest (C0, DEL, C1, and
/// the Unicode line and paragraph separators). Printable text, non-ASCII
/// letters included, is written as it is.
pub fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(i) = rest.find(needs_escape) {
        out.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().expect("found at i");
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c => write!(out, "\\u{{{:x}}}", c as u32)?,
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.write_str(rest)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Displays a text with its control characters escaped (see
/// [`write_escaped`]): for output that is not a log line, such as
/// `switchyard status`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0)
    }
}

/// Formats the fields of every log event: values cut to
/// [`MAX_LOG_FIELD`] bytes and control characters escaped, so that a
/// newline in a producer's message id or a plugin's log text cannot start a
/// line of its own. The message is written first, without its name; the
/// other fields as `name=value`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeFields;

impl<'writer> FormatFields<'writer> for SafeFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = SafeVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct SafeVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl SafeVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        // Formatted into a bounded buffer first: a huge value costs at most
        // the bound.
        let mut buf = BoundedBuf::new(MAX_LOG_FIELD);
        let _ = buf.write_fmt(value);
        self.result = (|| {
            if !self.first {
                self.writer.write_char(' ')?;
            }
            self.first = false;
            if field.name() == "message" {
                write_escaped(&mut self.writer, &buf.text)?;
                if buf.dropped > 0 {
                    write!(self.writer, "… [{} more bytes]", buf.dropped)?;
                }
                return Ok(());
            }
            write!(self.writer, "{}=", field.name())?;
            // A value that could be read as more than one field (a space,
            // `=`, a quote) is quoted, so that a producer's id of
            // `x outcome=success` stays one value.
            let quote =
                buf.dropped > 0 || buf.text.is_empty() || buf.text.contains([' ', '=', '"', '\\']);
            if !quote {
                return write_escaped(&mut self.writer, &buf.text);
            }
            self.writer.write_char('"')?;
            let mut rest = buf.text.as_str();
            while let Some(i) = rest.find(['"', '\\']) {
                write_escaped(&mut self.writer, &rest[..i])?;
                write!(self.writer, "\\{}", &rest[i..i + 1])?;
                rest = &rest[i + 1..];
            }
            write_escaped(&mut self.writer, rest)?;
            if buf.dropped > 0 {
                write!(self.writer, "… [{} more bytes]", buf.dropped)?;
            }
            self.writer.write_char('"')
        })();
    }
}

impl Visit for SafeVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// A `fmt::Write` that keeps the first `max` bytes and counts the rest.
struct BoundedBuf {
    text: String,
    max: usize,
    dropped: usize,
}

impl BoundedBuf {
    fn new(max: usize) -> Self {
        BoundedBuf {
            text: String::new(),
            max,
            dropped: 0,
        }
    }
}

impl fmt::Write for BoundedBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.max - self.text.len();
        if s.len() <= room && self.dropped == 0 {
            self.text.push_str(s);
            return Ok(());
        }
        let mut end = room.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        if self.dropped == 0 {
            self.text.push_str(&s[..end]);
            self.dropped += s.len() - end;
        } else {
            self.dropped += s.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_a_character_boundary_and_says_how_much() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdef", 3), "abc… [3 more bytes]");
        // 'é' is two bytes: a cut inside it moves back.
        assert_eq!(bounded("aéb", 2), "a… [3 more bytes]");
        assert_eq!(bounded_lossy(b"ab\xffcd", 10), "ab\u{fffd}cd");
        assert_eq!(bounded_lossy(&[b'x'; 100], 4), "xxxx… [96 more bytes]");
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let cases = [
            ("plain", "plain"),
            ("a\nb", "a\\nb"),
            (
                "2026-01-01T00:00:00Z\r\nINFO forged",
                "2026-01-01T00:00:00Z\\r\\nINFO forged",
            ),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("tab\there", "tab\\there"),
            ("nul\0", "nul\\u{0}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("Zürich 北京", "Zürich 北京"),
        ];
        for (input, want) in cases {
            assert_eq!(Escaped(input).to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn log_fields_are_escaped_and_bounded() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(SafeFields)
            .with_writer(move || writer.clone())
            .finish();
        let huge = "y".repeat(MAX_LOG_FIELD * 3);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(msg_id = %"m-1\nINFO forged line", big = %huge, "Handled {}.", "x\ny");
            tracing::info!(msg_id = %"x outcome=success queue=Admin", quote = %"a\"b\\c", empty = %"", plain = %"p-1", "Next.");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("Handled x\\ny."), "{out}");
        assert!(out.contains("msg_id=\"m-1\\nINFO forged line\""), "{out}");
        let next = out.lines().nth(1).unwrap();
        assert!(
            next.ends_with(
                r#"Next. msg_id="x outcome=success queue=Admin" quote="a\"b\\c" empty="" plain=p-1"#
            ),
            "{next}"
        );
        assert!(
            out.contains(&format!("… [{} more bytes]", MAX_LOG_FIELD * 2)),
            "{}",
            &out[..200]
        );
        assert!(out.len() < MAX_LOG_FIELD + 600, "{}", out.len());
    }
}
