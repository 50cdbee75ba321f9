//! The producer contract's partition rule, for a plugin or a program that
//! writes to the ingress itself (a plugin's own follow-ups need none: they
//! enter the partition of the message that published them).
//!
//! With `ingress.partitions = N` the hosts publish the partitions' ingress
//! streams, in order, as the Redis list `<ingress stream>:partitions`
//! (`chat:events:partitions`). A producer reads it once (and again now and
//! then, to follow a change of N) and writes each message to
//! `streams[crc32(key) % streams.len()]`, the key being the chat's
//! `ChatGuid` when the body has one, else the message id, so that the
//! events of one chat stay in one partition, in order. In Python:
//! `streams[zlib.crc32(key.encode()) % len(streams)]`; in .NET:
//! `streams[System.IO.Hashing.Crc32.HashToUInt32(Encoding.UTF8.GetBytes(key)) % streams.Length]`.

/// CRC-32 (IEEE 802.3, as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The index of the partition of `key` among `count` partitions.
pub fn index(key: &str, count: usize) -> usize {
    crc32(key.as_bytes()) as usize % count.max(1)
}

/// The stream of `key`'s partition, from the list the hosts publish.
pub fn stream<'a>(streams: &'a [String], key: &str) -> Option<&'a str> {
    (!streams.is_empty()).then(|| streams[index(key, streams.len())].as_str())
}

/// The key of a message: its body's `ChatGuid` when it has one (the chat
/// its events belong to), else its id.
pub fn key<'a>(body: &'a str, id: &'a str) -> std::borrow::Cow<'a, str> {
    match serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("ChatGuid")?.as_str().map(str::to_owned))
    {
        Some(guid) if !guid.is_empty() => guid.into(),
        _ => id.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_zlibs_crc32() {
        // zlib.crc32(b"123456789") == 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let streams: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        assert_eq!(stream(&streams, "123456789"), Some("s2"));
        assert_eq!(stream(&[], "x"), None);
        assert_eq!(key(r#"{"ChatGuid":"c-8f2a","SiteId":1}"#, "m1"), "c-8f2a");
        assert_eq!(key(r#"{"SiteId":1}"#, "m1"), "m1");
        assert_eq!(key("not json", "m1"), "m1");
    }
}
