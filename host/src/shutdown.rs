//! Signals: the first SIGINT or SIGTERM asks the host to stop reading and
//! drain; a second one asks it to exit now, leaving what did not finish
//! pending for redelivery.

use tokio_util::sync::CancellationToken;

/// The two stages of stopping.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop reading, finish what is in flight (within the shutdown timeout).
    pub drain: CancellationToken,
    /// Stop waiting: exit at once.
    pub now: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Fires `shutdown.drain` on the first SIGINT or SIGTERM and
/// `shutdown.now` on the second.
pub fn on_signals(shutdown: Shutdown) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for first in [true, false] {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if first {
                tracing::info!(
                    event = "shutting_down",
                    signal = which,
                    "Shutting down: no new messages are read; in-flight handlers may finish (send it again to exit now)."
                );
                shutdown.drain.cancel();
            } else {
                tracing::warn!(
                    event = "exiting_now",
                    signal = which,
                    "Exiting now: messages in flight stay pending and will be delivered again."
                );
                shutdown.now.cancel();
            }
        }
    });
    Ok(())
}
