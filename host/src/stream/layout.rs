//! The key layout: every key the host uses, by partition.
//!
//! The ingress is split into `ingress.partitions` partitions, and so is
//! every queue. A partition's keys (its ingress stream, its queues'
//! streams and failure records, its dead letters) share one Redis Cluster
//! hash tag, so every step over them (routing an entry to its queues,
//! settling a message, publishing its follow-ups, replaying a dead letter)
//! stays one atomic script on one node, while partitions spread over the
//! cluster's masters.
//!
//! Partition 0's ingress is the ingress stream itself (`chat:events`), so
//! a producer written for one stream keeps working. On one node or a
//! Sentinel master its other keys have the names they had before there
//! were partitions (`switchyard:queue:<Queue>`, `switchyard:dead`, ...);
//! on a cluster they carry the ingress stream's name as their tag
//! (`switchyard:{chat:events}:queue:<Queue>`), the slot of `chat:events`.
//! The 16,384 slots are cut in `N` equal stretches: partition 0 lies in the
//! one its stream's name hashes to, and partition `p` (`p` ≥ 1) has a tag
//! `{p-j}` chosen to hash to the middle of another, so each stretch holds
//! one partition. On a cluster whose `M` masters hold equal ranges of slots
//! (as `redis-cli --cluster create` makes them) each master then holds
//! `N/M` partitions (`floor` or `ceil` of it when `M` does not divide
//! `N`). Partition `p`'s ingress is `chat:events:{p-j}`, its queue streams
//! `switchyard:{p-j}:queue:<Queue>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::redis::slots::{SLOTS, key_slot};

/// The names of the host's keys that do not belong to a partition, and the
/// partitions of a given count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    ingress: String,
    /// Partition 0 carries a tag too: every key of a step must share a slot.
    cluster: bool,
}

impl Keys {
    /// The keys of a configuration on a deployment (a cluster or not).
    pub fn of(config: &crate::config::Config, cluster: bool) -> Self {
        Keys::new(&config.host.prefix, &config.ingress.stream, cluster)
    }

    /// The keys of a deployment with key prefix `prefix` and ingress
    /// stream `ingress`, on a cluster or not.
    pub fn new(prefix: &str, ingress: &str, cluster: bool) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            ingress: ingress.to_owned(),
            cluster,
        }
    }

    /// The consumer group on the ingress streams and on every queue stream.
    pub fn group(&self) -> &str {
        &self.prefix
    }

    /// The ingress stream as configured: partition 0's.
    pub fn ingress(&self) -> &str {
        &self.ingress
    }

    /// The start of every key of a queue's key-value state: the braces keep
    /// a queue's keys in one Redis Cluster slot.
    pub fn keyvalue(&self, queue: &str) -> String {
        format!("{}:kv:{{{queue}}}:", self.prefix)
    }

    /// The hosts' record of every partition ever used (a hash: ingress
    /// stream to its tag and state), so that partitions left by a change
    /// of `ingress.partitions` are drained and their dead letters found.
    pub fn registry(&self) -> String {
        format!("{}:partitions", self.prefix)
    }

    /// The list producers read: the ingress stream of each partition, in
    /// order (see the producer contract).
    pub fn producer_list(&self) -> String {
        format!("{}:partitions", self.ingress)
    }

    /// The `n` partitions.
    pub fn partitions(&self, n: usize) -> Vec<Partition> {
        tags(&self.ingress, n)
            .iter()
            .enumerate()
            .map(|(p, tag)| {
                if p == 0 {
                    self.first()
                } else {
                    self.tagged(tag)
                }
            })
            .collect()
    }

    /// Partition 0.
    pub fn first(&self) -> Partition {
        Partition {
            prefix: self.prefix.clone(),
            ingress: self.ingress.clone(),
            tag: self.cluster.then(|| self.ingress.clone()),
            first: true,
        }
    }

    /// The partition whose [`Partition::id`] is `id`.
    pub fn by_id(&self, id: &str) -> Partition {
        if id == "0" {
            self.first()
        } else {
            self.tagged(id)
        }
    }

    /// The partition of tag `tag` (as the registry records it).
    pub fn tagged(&self, tag: &str) -> Partition {
        if tag.is_empty() || tag == self.ingress {
            return self.first();
        }
        Partition {
            prefix: self.prefix.clone(),
            ingress: format!("{}:{{{tag}}}", self.ingress),
            tag: Some(tag.to_owned()),
            first: false,
        }
    }
}

/// One partition's keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    prefix: String,
    /// Its ingress stream.
    pub ingress: String,
    /// Its hash tag; none for partition 0 off a cluster.
    tag: Option<String>,
    /// Partition 0, whose ingress is the configured stream itself (on a
    /// cluster its tag is that stream's name, which no other tag is).
    first: bool,
}

impl Partition {
    fn key(&self, rest: &str) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{{{tag}}}:{rest}", self.prefix),
            None => format!("{}:{rest}", self.prefix),
        }
    }

    /// What operators see: `0` for the ingress stream itself, else the
    /// tag (`3-20931`).
    pub fn id(&self) -> &str {
        match &self.tag {
            Some(tag) if !self.first => tag,
            _ => "0",
        }
    }

    /// The tag the registry records (`""` for partition 0).
    pub fn registry_tag(&self) -> &str {
        if self.first { "" } else { self.id() }
    }

    /// Partition 0: the configured ingress stream.
    pub fn is_first(&self) -> bool {
        self.first
    }

    /// The stream of `queue` in this partition.
    pub fn queue_stream(&self, queue: &str) -> String {
        self.key(&format!("queue:{queue}"))
    }

    /// This partition's dead letters.
    pub fn dead_letter(&self) -> String {
        self.key("dead")
    }

    /// The failures recorded for `queue`'s messages of this partition.
    pub fn errors(&self, queue: &str) -> String {
        self.key(&format!("errors:{queue}"))
    }

    /// A dead letter's id as operators give it: the entry id, followed by
    /// `@<partition>` outside partition 0.
    pub fn dead_letter_ref(&self, entry_id: &str) -> String {
        if self.first {
            entry_id.to_owned()
        } else {
            format!("{entry_id}@{}", self.id())
        }
    }
}

/// Splits a dead letter's id as operators give it into the entry id and
/// the partition's id (`0` when none is given).
pub fn split_dead_letter_ref(text: &str) -> (&str, &str) {
    match text.split_once('@') {
        Some((id, partition)) => (id, partition),
        None => (text, "0"),
    }
}

/// The tags of `n` partitions of `ingress` (partition 0's is the stream's
/// own name), computed once per count.
fn tags(ingress: &str, n: usize) -> Arc<Vec<String>> {
    /// The tags computed so far, by ingress stream and count.
    type Computed = HashMap<(String, usize), Arc<Vec<String>>>;
    static KNOWN: OnceLock<Mutex<Computed>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    let key = (ingress.to_owned(), n);
    if let Some(t) = known.lock().expect("tags lock").get(&key) {
        return t.clone();
    }
    // The slot ring cut in `n` equal stretches: partition 0 is in the one
    // its stream's name hashes to, each other partition in the middle of
    // another.
    let slots = SLOTS as usize;
    let stretch_of = |slot: usize| slot * n / slots;
    let first = stretch_of(key_slot(ingress.as_bytes()) as usize);
    let mut all = vec![ingress.to_owned()];
    for (p, stretch) in (1..n).zip((0..n).filter(|s| *s != first)) {
        let target = ((2 * stretch + 1) * slots / (2 * n)) as u16;
        let tag = (0u64..)
            .map(|j| format!("{p}-{j}"))
            .find(|t| key_slot(t.as_bytes()) == target)
            .expect("some j hashes to every slot");
        all.push(tag);
    }
    let all = Arc::new(all);
    known.lock().expect("tags lock").insert(key, all.clone());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_off_a_cluster_keeps_the_names_of_before() {
        let keys = Keys::new("switchyard", "chat:events", false);
        let [p] = keys.partitions(1).try_into().unwrap();
        assert_eq!(p.ingress, "chat:events");
        assert_eq!(p.queue_stream("Email"), "switchyard:queue:Email");
        assert_eq!(p.dead_letter(), "switchyard:dead");
        assert_eq!(p.errors("Email"), "switchyard:errors:Email");
        assert_eq!(p.id(), "0");
        assert_eq!(p.dead_letter_ref("5-0"), "5-0");
    }

    #[test]
    fn on_a_cluster_each_partitions_keys_share_its_slot() {
        let keys = Keys::new("switchyard", "chat:events", true);
        let parts = keys.partitions(6);
        assert_eq!(parts[0].ingress, "chat:events");
        assert_eq!(
            parts[0].queue_stream("Email"),
            "switchyard:{chat:events}:queue:Email"
        );
        for p in &parts {
            let slot = key_slot(p.ingress.as_bytes());
            for key in [
                p.queue_stream("Email"),
                p.dead_letter(),
                p.errors("Zendesk"),
            ] {
                assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
            }
        }
        assert!(parts[3].ingress.starts_with("chat:events:{3-"));
        assert_eq!(keys.tagged(parts[3].id()), parts[3]);
        assert_eq!(keys.tagged(""), parts[0]);
        let r = parts[3].dead_letter_ref("5-0");
        assert_eq!(split_dead_letter_ref(&r), ("5-0", parts[3].id()));
        assert_eq!(split_dead_letter_ref("5-0"), ("5-0", "0"));
    }

    #[test]
    fn partitions_spread_evenly_over_the_masters() {
        // Three masters with the ranges `redis-cli --cluster create` gives.
        let master = |slot: u16| match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        };
        for ingress in ["chat:events", "events", "x"] {
            let keys = Keys::new("switchyard", ingress, true);
            for n in [3, 6, 9, 12, 4, 5, 7] {
                let mut per = [0usize; 3];
                for p in keys.partitions(n) {
                    per[master(key_slot(p.ingress.as_bytes()))] += 1;
                }
                let (lo, hi) = (n / 3, n.div_ceil(3));
                assert!(
                    per.iter().all(|c| (lo..=hi).contains(c)),
                    "{ingress} in {n} partitions: {per:?}"
                );
            }
        }
    }
}
