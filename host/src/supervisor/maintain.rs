//! Keeping the streams bounded and the groups free of dead consumers.

use redis::aio::ConnectionManager;

use crate::config::Config;
use crate::stream::{Keys, retention};

/// One round of retention: trims the streams and removes consumers of
/// processes that are gone.
pub(super) async fn maintain(
    conn: &mut ConnectionManager,
    config: &Config,
    keys: &Keys,
    consumer: &str,
) -> crate::redis::StreamResult<()> {
    let r = &config.retention;
    let mut streams = vec![config.ingress.stream.clone()];
    streams.extend(config.queues.keys().map(|q| keys.queue_stream(q)));
    for stream in &streams {
        let trimmed = retention::trim_handled(conn, stream, r.keep_handled).await?;
        if trimmed > 0 {
            tracing::debug!(stream = %stream, trimmed, "Trimmed handled entries.");
        }
        let removed =
            retention::remove_idle_consumers(conn, stream, keys.group(), r.idle_consumer, consumer)
                .await?;
        if !removed.is_empty() {
            tracing::info!(stream = %stream, consumers = %removed.join(","), "Removed consumers idle with nothing pending.");
        }
    }
    let dead = keys.dead_letter();
    let trimmed = retention::trim_dead_letters(conn, &dead, r).await?;
    if trimmed > 0 {
        tracing::info!(stream = %dead, trimmed, "Trimmed dead letters past their retention.");
    }
    Ok(())
}
