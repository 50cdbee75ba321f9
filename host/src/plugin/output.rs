//! What a plugin writes to stdout and stderr, captured.
//!
//! Writing must always succeed: a plugin that prints a long transcript
//! while debugging must not fail (wasmtime's memory pipe refuses writes past
//! its capacity, which makes Rust's `print!` panic). So this stream accepts
//! every write, keeps the first [`KEEP`] bytes of a call, and counts the
//! rest. The host takes what was kept after each call.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes kept of one call's output: a panic message fits. What is shown is
/// cut again, to [`crate::text::MAX_OUTPUT`].
pub const KEEP: usize = 16 * 1024;

/// A plugin's stdout and stderr, interleaved as written.
#[derive(Debug, Clone, Default)]
pub struct CapturedOutput(Arc<Mutex<Captured>>);

#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    /// Bytes written past [`KEEP`].
    dropped: u64,
}

impl CapturedOutput {
    fn append(&self, bytes: &[u8]) {
        let mut c = self.0.lock().expect("output lock");
        let room = KEEP.saturating_sub(c.kept.len());
        let take = room.min(bytes.len());
        c.kept.extend_from_slice(&bytes[..take]);
        c.dropped += (bytes.len() - take) as u64;
    }

    /// What was written since the last call, trimmed, with `secrets`
    /// masked, then cut to `max` bytes with the cut marked; and empties the
    /// capture.
    pub fn take(&self, secrets: &crate::secrets::Secrets, max: usize) -> String {
        let (kept, mut dropped) = {
            let mut c = self.0.lock().expect("output lock");
            (std::mem::take(&mut c.kept), std::mem::take(&mut c.dropped))
        };
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        if dropped > 0 {
            // Cut at KEEP, the text may end in the first bytes of a
            // secret, which no search would find: they go too.
            let mut cut = text.len().saturating_sub(secrets.longest());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            dropped += (text.len() - cut) as u64;
            text.truncate(cut);
        }
        let masked = secrets.mask(text.trim());
        let mut end = max.min(masked.len());
        while !masked.is_char_boundary(end) {
            end -= 1;
        }
        let rest = (masked.len() - end) as u64 + dropped;
        let mut shown = masked[..end].to_owned();
        if rest > 0 {
            shown.push_str(&format!("… [{rest} more bytes]"));
        }
        shown
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: what does not fit is counted, not refused.
        Ok(64 * 1024)
    }
}

impl Pollable for CapturedOutput {
    // `async fn ready(&mut self) {}` as the trait declares it (with
    // async-trait): always ready.
    fn ready<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async {})
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_accepted_and_the_rest_counted() {
        let none = crate::secrets::Secrets::default();
        let mut out = CapturedOutput::default();
        for _ in 0..10 {
            out.write(Bytes::from(vec![b'x'; 4096])).unwrap();
        }
        assert!(out.check_write().unwrap() > 0);
        let text = out.take(&none, 8);
        assert_eq!(text, format!("xxxxxxxx… [{} more bytes]", 40960 - 8));
        assert_eq!(out.take(&none, 8), "", "taking empties the capture");
        out.write(Bytes::from_static(b" short \n")).unwrap();
        assert_eq!(out.take(&none, 100), "short");
    }

    #[test]
    fn secrets_are_masked_before_the_cut_even_at_the_end_of_what_was_kept() {
        let secret = "S3CRET-0123456789abcdef";
        let secrets = crate::secrets::Secrets::new([secret]);
        let mut out = CapturedOutput::default();
        // One secret straddles the 1 KiB shown, one is cut by KEEP.
        let mut text = "x".repeat(1020);
        text.push_str(secret);
        text.push_str(&"y".repeat(KEEP - text.len() - 10));
        text.push_str(secret);
        out.write(Bytes::from(text)).unwrap();
        let shown = out.take(&secrets, 1024);
        assert!(!shown.contains("S3C"), "{shown}");
        let all = {
            out.write(Bytes::from(format!("{}{secret}", "y".repeat(KEEP - 10))))
                .unwrap();
            out.take(&secrets, usize::MAX)
        };
        assert!(!all.contains("S3C"), "{}", &all[all.len() - 60..]);
        let (kept, mark) = all.split_once('…').unwrap();
        assert!(kept.bytes().all(|b| b == b'y'), "{mark}");
        assert!(mark.ends_with(" more bytes]"), "{mark}");
    }
}
