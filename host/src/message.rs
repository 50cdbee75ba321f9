//! A message as the chat server sent it: the fields of one stream entry read
//! into a type, a body, an id and headers.
//!
//! The producer contract: `type` names the message type (required), `body`
//! holds the JSON payload, `id` is the message id (optional: the stream entry
//! id stands in). Producers built for CAP may send `cap-msg-name` and
//! `cap-msg-id` instead. Every other field is a header and travels with the
//! message unchanged.

use std::fmt;

/// The field holding the message type.
pub const TYPE_FIELD: &str = "type";
/// The field holding the JSON payload.
pub const BODY_FIELD: &str = "body";
/// The field holding the producer's message id.
pub const ID_FIELD: &str = "id";
/// CAP's header for the message name (topic); an alias of `type`.
pub const CAP_NAME_FIELD: &str = "cap-msg-name";
/// CAP's header for the message id; an alias of `id`.
pub const CAP_ID_FIELD: &str = "cap-msg-id";

/// The field/value pairs of one stream entry, in the order Redis returned
/// them.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Most fields one entry may have. A chat event has four or five; the
/// bound keeps every entry within what one Redis command issued from a
/// script can carry (Lua's `unpack` stops near 8,000 values).
pub const MAX_FIELDS: usize = 1000;

/// Bytes a message id or type may have; a longer one is refused (it would
/// be copied into every log line and dead letter about the message).
pub const MAX_NAME: usize = 256;

/// The size of an entry as the limits count it: the bytes of every field
/// name and value.
pub fn entry_bytes(fields: &Fields) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub message_type: String,
    pub body: String,
    /// Every field but `type`, `body` and `id`, in order.
    pub headers: Vec<(String, String)>,
}

/// Why an entry cannot be a message. Each is permanent: the entry goes to the
/// dead-letter stream with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    MissingType,
    EmptyType,
    MissingBody,
    BodyNotJson(String),
    /// The body does not match its type's payload in the chat events
    /// schema (a route with `validate = true`): the payload's name, what is
    /// wrong.
    DoesNotMatch {
        payload: String,
        errors: String,
    },
    /// The type or id is longer than [`MAX_NAME`] bytes: (field, bytes).
    TooLong(&'static str, usize),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::MissingType => write!(f, "missing field `type` (or `cap-msg-name`)"),
            Malformed::EmptyType => write!(f, "field `type` is empty"),
            Malformed::MissingBody => write!(f, "missing field `body`"),
            Malformed::BodyNotJson(e) => write!(f, "body is not valid JSON: {e}"),
            Malformed::DoesNotMatch { payload, errors } => {
                write!(f, "body does not match the schema's {payload}: {errors}")
            }
            Malformed::TooLong(field, bytes) => write!(
                f,
                "field `{field}` is {bytes} bytes, more than the {MAX_NAME} allowed"
            ),
        }
    }
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The id and type of an entry that is a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub message_type: String,
}

/// Reads the type and id of an entry; `entry_id` is the id of last resort.
fn identity(entry_id: &str, fields: &Fields) -> Result<Identity, Malformed> {
    let message_type = field(fields, TYPE_FIELD)
        .or_else(|| field(fields, CAP_NAME_FIELD))
        .ok_or(Malformed::MissingType)?;
    if message_type.len() > MAX_NAME {
        return Err(Malformed::TooLong(TYPE_FIELD, message_type.len()));
    }
    let message_type = text(message_type).trim().to_owned();
    if message_type.is_empty() {
        return Err(Malformed::EmptyType);
    }
    let id = field(fields, ID_FIELD).or_else(|| field(fields, CAP_ID_FIELD));
    if let Some(id) = id
        && id.len() > MAX_NAME
    {
        return Err(Malformed::TooLong(ID_FIELD, id.len()));
    }
    let id = id
        .map(text)
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| entry_id.to_owned());
    Ok(Identity { id, message_type })
}

impl Message {
    /// Checks that an entry is a message, its body JSON included, and
    /// returns its id and type: what the router decides on. Nothing of the
    /// body or the headers is copied.
    pub fn check(entry_id: &str, fields: &Fields) -> Result<Identity, Malformed> {
        let identity = identity(entry_id, fields)?;
        let body = field(fields, BODY_FIELD).ok_or(Malformed::MissingBody)?;
        // Validate without building a value: a body can be a large transcript.
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map_err(|e| Malformed::BodyNotJson(e.to_string()))?;
        Ok(identity)
    }

    /// Reads a queue's entry into a message, taking its fields: the body and
    /// the headers are moved, not copied. The body's JSON is not parsed
    /// again: the router checked it ([`Message::check`]) before it wrote
    /// the entry to the queue's stream; it must be UTF-8 (JSON is).
    pub fn read(entry_id: &str, fields: Fields) -> Result<Message, Malformed> {
        let Identity { id, message_type } = identity(entry_id, &fields)?;
        let mut body = None;
        let mut headers = Vec::with_capacity(fields.len().saturating_sub(3));
        for (k, v) in fields {
            if k == BODY_FIELD.as_bytes() {
                body.get_or_insert(v);
            } else if k != TYPE_FIELD.as_bytes() && k != ID_FIELD.as_bytes() {
                headers.push((owned_text(k), owned_text(v)));
            }
        }
        let body = body.ok_or(Malformed::MissingBody)?;
        let body = String::from_utf8(body).map_err(|e| Malformed::BodyNotJson(e.to_string()))?;
        Ok(Message {
            id,
            message_type,
            body,
            headers,
        })
    }
}

/// Bytes as text, without a copy when they are UTF-8.
fn owned_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| text(e.as_bytes()))
}

/// The header that counts how many publications led to a message.
pub const HOPS_HEADER: &str = "switchyard-hops";

/// A follow-up message a call published, held until the call is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub message_type: String,
    pub body: String,
    /// The plugin's headers, then `switchyard-hops`.
    pub headers: Vec<(String, String)>,
}

impl Published {
    /// The fields of its ingress entry.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields = vec![
            (TYPE_FIELD.to_owned(), self.message_type.clone()),
            (ID_FIELD.to_owned(), self.id.clone()),
            (BODY_FIELD.to_owned(), self.body.clone()),
        ];
        fields.extend(self.headers.iter().cloned());
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn reads_type_body_id_and_headers() {
        let m = Message::read(
            "1-0",
            fields(&[
                ("type", "chat.ended"),
                ("body", r#"{"SiteId":1}"#),
                ("id", "m-1"),
                ("trace", "abc"),
            ]),
        )
        .unwrap();
        assert_eq!(m.id, "m-1");
        assert_eq!(m.message_type, "chat.ended");
        assert_eq!(m.body, r#"{"SiteId":1}"#);
        assert_eq!(m.headers, [("trace".to_string(), "abc".to_string())]);
    }

    #[test]
    fn accepts_cap_headers_and_falls_back_to_the_entry_id() {
        let m = Message::read(
            "7-1",
            fields(&[("cap-msg-name", "chat.started"), ("body", "{}")]),
        )
        .unwrap();
        assert_eq!(m.message_type, "chat.started");
        assert_eq!(m.id, "7-1");
        let m = Message::check(
            "7-1",
            &fields(&[("cap-msg-id", "x"), ("cap-msg-name", "a"), ("body", "[]")]),
        )
        .unwrap();
        assert_eq!(m.id, "x");
    }

    /// A queue's copy was checked whole by the router; reading it again
    /// takes its fields, and checks all but the body's JSON.
    #[test]
    fn a_queue_reads_what_the_router_checked() {
        let entry = fields(&[("type", "a"), ("body", "{}"), ("h", "v")]);
        let id = Message::check("1-0", &entry).unwrap();
        let m = Message::read("1-0", entry).unwrap();
        assert_eq!((m.id, m.message_type), (id.id, id.message_type));
        assert_eq!(m.headers, [("h".to_string(), "v".to_string())]);
        assert_eq!(
            Message::read("1-0", fields(&[("type", "a")])),
            Err(Malformed::MissingBody)
        );
        assert!(
            Message::read(
                "1-0",
                vec![
                    (b"type".to_vec(), b"a".to_vec()),
                    (b"body".to_vec(), vec![0xff])
                ]
            )
            .is_err()
        );
    }

    #[test]
    fn names_what_is_malformed() {
        assert_eq!(
            Message::check("1-0", &fields(&[("body", "{}")])),
            Err(Malformed::MissingType)
        );
        assert_eq!(
            Message::check("1-0", &fields(&[("type", " "), ("body", "{}")])),
            Err(Malformed::EmptyType)
        );
        assert_eq!(
            Message::check("1-0", &fields(&[("type", "a")])),
            Err(Malformed::MissingBody)
        );
        let e = Message::check("1-0", &fields(&[("type", "a"), ("body", "{nope")])).unwrap_err();
        assert!(e.to_string().starts_with("body is not valid JSON"), "{e}");
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            Message::check(
                "1-0",
                &fields(&[("type", "a"), ("id", &long), ("body", "{}")])
            ),
            Err(Malformed::TooLong("id", MAX_NAME + 1))
        );
        assert_eq!(
            Message::check("1-0", &fields(&[("type", &long), ("body", "{}")]))
                .unwrap_err()
                .to_string(),
            "field `type` is 257 bytes, more than the 256 allowed"
        );
    }
}
