//! The dead-letter record: the host's own fields, written before the
//! original ones, and how the original ones are read back.

use crate::message::Fields;

/// Dead-letter record fields, written before the original fields. Every
/// name the host writes starts with `dead-`; an original field named so is
/// kept as `orig-` + its name (see [`original_fields`]).
pub mod dead_fields {
    /// Why the message was dead-lettered.
    pub const REASON: &str = "dead-reason";
    /// The queue that gave up, or empty when the router did.
    pub const QUEUE: &str = "dead-queue";
    /// The stream the entry was read from.
    pub const SOURCE: &str = "dead-source";
    /// The entry's id in that stream.
    pub const SOURCE_ID: &str = "dead-source-id";
    /// Attempts made (0 when it was never handed to a plugin).
    pub const ATTEMPTS: &str = "dead-attempts";
    /// When, RFC 3339 UTC.
    pub const AT: &str = "dead-at";
    /// Content hash of the plugin that made the last attempt.
    pub const PLUGIN: &str = "dead-plugin";
    /// The last few failed attempts, a JSON array of strings, oldest first.
    pub const ERRORS: &str = "dead-errors";
    /// When the first attempt failed.
    pub const FIRST_FAILURE: &str = "dead-first-failure";
    /// When the last attempt failed.
    pub const LAST_FAILURE: &str = "dead-last-failure";
    /// An entry with more fields than one script command can carry, whole:
    /// a JSON array of names and values.
    pub const FIELDS: &str = "dead-fields";
    /// Set when the entry was deleted from its stream before it could be
    /// copied.
    pub const ORIGINAL: &str = "dead-original";
}

/// Undoes the renaming a dead-letter record applies to the original fields
/// (see `lua/dead_letter.lua`): `orig-dead-reason` was the producer's
/// `dead-reason`. Fields of the host's own (`dead-*`) are not original and
/// are left out.
pub fn original_fields(record: &Fields) -> Fields {
    record
        .iter()
        .filter(|(k, _)| !k.starts_with(b"dead-"))
        .map(|(k, v)| match k.strip_prefix(b"orig-") {
            Some(name) => (name.to_vec(), v.clone()),
            None => (k.clone(), v.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_fields_undo_the_renaming() {
        let f = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        let record = f(&[
            ("dead-reason", "host"),
            ("type", "a"),
            ("orig-dead-reason", "producer"),
            ("orig-orig-x", "1"),
        ]);
        assert_eq!(
            original_fields(&record),
            f(&[("type", "a"), ("dead-reason", "producer"), ("orig-x", "1")])
        );
    }
}
