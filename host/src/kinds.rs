//! The fixed kinds that label what the host counts and logs, each with the
//! one word metrics, log lines and dead-letter records use for it, and its
//! place in arrays of counters.

/// Why a call did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Trap,
    Timeout,
    MemoryCap,
    Instantiate,
}

impl FailureKind {
    /// Every kind, in the order of their counters.
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::MemoryCap,
        FailureKind::Instantiate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryCap => "memory_cap",
            FailureKind::Instantiate => "instantiate",
        }
    }

    /// Its place in [`FailureKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a plugin reaches through the host, under its queue's grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Http,
    KeyValue,
    Sql,
    Mail,
    Publish,
}

impl Capability {
    /// Every capability, in the order of their counters.
    pub const ALL: [Capability; 5] = [
        Capability::Http,
        Capability::KeyValue,
        Capability::Sql,
        Capability::Mail,
        Capability::Publish,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Capability::Http => "http",
            Capability::KeyValue => "keyvalue",
            Capability::Sql => "sql",
            Capability::Mail => "mail",
            Capability::Publish => "publish",
        }
    }

    /// Its place in [`Capability::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_follow_the_tables() {
        for (i, k) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{}", k.label());
        }
        for (i, c) in Capability::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{}", c.label());
        }
    }
}
