//! Which partitions a host reads: those `ingress.partitions` asks for, and
//! every other one recorded and not drained yet (see
//! [`crate::stream::registry`]), so that changing the count on a running
//! deployment loses nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;

use crate::stream::Partition;
use crate::stream::registry::{self, Known, State};

use super::*;

/// How often the record of partitions is read again.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(5);

impl Supervisor {
    /// The partitions the running configuration asks for.
    fn active(&self) -> Vec<Partition> {
        self.host.keys.partitions(self.config().ingress.partitions)
    }

    /// Records the configured partitions (at start, and when an edit
    /// changes their count) and reads every partition not drained.
    pub(super) async fn register_partitions(&mut self) -> Result<()> {
        let active = self.active();
        let mut conn = self.host.conn.clone();
        let known = registry::register(&mut conn, &self.host.keys, &active).await?;
        self.registered = Some(active.len());
        self.sync_partitions(&active, &known).await
    }

    async fn sync_partitions(&mut self, active: &[Partition], known: &[Known]) -> Result<()> {
        let mut wanted: BTreeSet<Partition> = active.iter().cloned().collect();
        wanted.extend(
            known
                .iter()
                .filter(|k| k.state != State::Drained)
                .map(|k| k.partition.clone()),
        );
        for p in &wanted {
            self.read_partition(p).await?;
        }
        let done: Vec<Partition> = self
            .partitions
            .keys()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        for p in done {
            self.release_partition(&p);
        }
        Ok(())
    }

    /// Marks retired partitions that are empty as drained, and drained
    /// ones that gained an entry as retired again; then reads what the
    /// record says (another host may have changed it).
    pub(super) async fn check_partitions(&mut self) -> Result<()> {
        let active = self.active();
        if self.registered != Some(active.len()) {
            // Recording the count failed at the last edit: again.
            return self.register_partitions().await;
        }
        let keys = self.host.keys.clone();
        let mut conn = self.host.conn.clone();
        let queues: Vec<String> = self.config().queues.keys().cloned().collect();
        let known = registry::read(&mut conn, &keys).await?;
        for k in &known {
            if active.contains(&k.partition) {
                continue;
            }
            let p = &k.partition;
            match k.state {
                State::Active => {}
                State::Retired => {
                    if registry::is_drained(&mut conn, &keys, p, &queues).await? {
                        registry::set(&mut conn, &keys, p, State::Drained).await?;
                        tracing::info!(event = "partition_drained", partition = %p.id(), ingress = %p.ingress, "A retired partition is drained: no longer read.");
                    }
                }
                State::Drained => {
                    if !registry::is_drained(&mut conn, &keys, p, &queues).await? {
                        registry::set(&mut conn, &keys, p, State::Retired).await?;
                        tracing::warn!(event = "partition_revived", partition = %p.id(), ingress = %p.ingress, "A drained partition has entries again (a producer still writes to it?): read until drained.");
                    }
                }
            }
        }
        let known = registry::read(&mut conn, &keys).await?;
        self.sync_partitions(&active, &known).await
    }
}
