//! Redis Cluster's key slots: the slot of a key (CRC16 of its hash tag, or
//! of the whole key), and the map of slots to masters that `CLUSTER SLOTS`
//! gives.

use redis::Value;

use super::endpoint::NodeAddr;

/// How many slots a cluster has.
pub const SLOTS: u16 = 16384;

/// CRC16-CCITT (XModem), the checksum Redis Cluster hashes keys with, a
/// byte at a time.
const CRC16: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of a key that is hashed: what is between the first `{` and the
/// next `}`, when that is not empty; else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// Which master serves which slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Ranges of slots (inclusive), sorted, with their master.
    ranges: Vec<(u16, u16, NodeAddr)>,
}

impl SlotMap {
    /// Not read yet (or read from a node that knew of no slots).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The master serving `slot`, as the map says.
    pub fn master_of(&self, slot: u16) -> Option<&NodeAddr> {
        let i = self.ranges.partition_point(|(_, end, _)| *end < slot);
        self.ranges
            .get(i)
            .filter(|(start, _, _)| *start <= slot)
            .map(|(_, _, node)| node)
    }

    /// Every master, each once.
    pub fn masters(&self) -> Vec<NodeAddr> {
        let mut all: Vec<NodeAddr> = self.ranges.iter().map(|(_, _, n)| n.clone()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Reads a `CLUSTER SLOTS` reply, given by `asked` (a master whose
    /// address is empty or `?` in the reply is the node asked).
    pub fn parse(reply: &Value, asked: &NodeAddr) -> Result<SlotMap, String> {
        let unexpected = || format!("unexpected CLUSTER SLOTS reply: {reply:?}");
        let Value::Array(items) = reply else {
            return Err(unexpected());
        };
        let int = |v: &Value| match v {
            Value::Int(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let mut ranges = Vec::new();
        for item in items {
            let Value::Array(parts) = item else {
                return Err(unexpected());
            };
            let (Some(start), Some(end), Some(Value::Array(master))) = (
                parts.first().and_then(int),
                parts.get(1).and_then(int),
                parts.get(2),
            ) else {
                return Err(unexpected());
            };
            let host = master.first().and_then(text).unwrap_or_default();
            let port = master.get(1).and_then(int).ok_or_else(unexpected)?;
            let node = if host.is_empty() || host == "?" {
                match asked {
                    NodeAddr::Tcp { host, .. } => NodeAddr::Tcp {
                        host: host.clone(),
                        port,
                    },
                    unix => unix.clone(),
                }
            } else {
                NodeAddr::Tcp { host, port }
            };
            ranges.push((start, end, node));
        }
        ranges.sort_by_key(|(start, _, _)| *start);
        Ok(SlotMap { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Redis Cluster's specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // CLUSTER KEYSLOT of these, as redis-server 7 answers.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"switchyard:{7-42}:queue:Email"), b"7-42");
    }

    #[test]
    fn the_map_answers_by_slot() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let range = |a: i64, b: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
                Value::Array(vec![bulk("10.0.0.9"), Value::Int(7005), bulk("replica")]),
            ])
        };
        let reply = Value::Array(vec![
            range(10923, 16383, "10.0.0.3", 7002),
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "", 7001),
        ]);
        let asked = NodeAddr::Tcp {
            host: "10.0.0.2".into(),
            port: 7001,
        };
        let map = SlotMap::parse(&reply, &asked).unwrap();
        let host = |slot| map.master_of(slot).unwrap().to_string();
        assert_eq!(host(0), "10.0.0.1:7000");
        assert_eq!(host(5460), "10.0.0.1:7000");
        assert_eq!(host(5461), "10.0.0.2:7001");
        assert_eq!(host(16383), "10.0.0.3:7002");
        assert_eq!(map.masters().len(), 3);
        assert!(SlotMap::parse(&Value::Int(1), &asked).is_err());
    }
}
