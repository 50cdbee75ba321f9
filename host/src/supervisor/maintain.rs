//! Keeping the streams bounded and the groups free of dead consumers, in
//! every partition recorded (drained ones too: their dead letters age).

use crate::redis::Conn;

use crate::config::Config;
use crate::stream::{Keys, registry, retention};

/// One round of retention: trims the streams and removes consumers of
/// processes that are gone.
pub(super) async fn maintain(
    conn: &mut Conn,
    config: &Config,
    keys: &Keys,
    consumer: &str,
) -> crate::redis::StreamResult<()> {
    let r = &config.retention;
    let mut partitions = keys.partitions(config.ingress.partitions);
    for k in registry::read(conn, keys).await? {
        if !partitions.contains(&k.partition) {
            partitions.push(k.partition);
        }
    }
    for partition in &partitions {
        let mut streams = vec![partition.ingress.clone()];
        streams.extend(config.queues.keys().map(|q| partition.queue_stream(q)));
        for stream in &streams {
            let trimmed = retention::trim_handled(conn, stream, r.keep_handled).await?;
            if trimmed > 0 {
                tracing::debug!(stream = %stream, trimmed, "Trimmed handled entries.");
            }
            let removed = retention::remove_idle_consumers(
                conn,
                stream,
                keys.group(),
                r.idle_consumer,
                consumer,
            )
            .await?;
            if !removed.is_empty() {
                tracing::info!(stream = %stream, consumers = %removed.join(","), "Removed consumers idle with nothing pending.");
            }
        }
        let dead = partition.dead_letter();
        let trimmed = retention::trim_dead_letters(conn, &dead, r).await?;
        if trimmed > 0 {
            tracing::info!(stream = %dead, trimmed, "Trimmed dead letters past their retention.");
        }
    }
    Ok(())
}
