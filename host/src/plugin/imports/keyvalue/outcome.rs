//! What a key-value operation tells the plugin, whichever store holds the
//! buckets (Redis, or memory for `switchyard invoke`).

/// Why a key-value operation failed, as the plugin is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the queue has no key-value grant ([queues.<name>.keyvalue] in queues.toml)")]
    NotGranted,
    #[error("{0}")]
    Invalid(String),
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error("the store failed: {0}")]
    Store(String),
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    Yes,
    /// The key changed since the handle was made.
    Changed,
}
