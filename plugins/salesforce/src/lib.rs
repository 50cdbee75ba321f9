//! The Salesforce queue's handler: a Case for each ended chat and offline
//! message, upserted by the message id, so a redelivery updates the Case
//! it created instead of creating another.
//!
//! `PATCH <instance_url>/services/data/<api_version>/sobjects/Case/
//! <external_id_field>/<message id>` with a bearer token and the Case's
//! fields (`Subject`, `Description`, `Origin`, `SuppliedName`,
//! `SuppliedEmail`, `SuppliedPhone`, `SuppliedCompany`). Salesforce answers
//! 201 when it created the Case and 200 or 204 when it updated it. The
//! external id field is a custom text field of Case marked "External ID"
//! and "Unique".
//!
//! Answers: 2xx done; 408, 429, 5xx and connection failures retried (after
//! `Retry-After` if given); other statuses reject with the status and the
//! start of the answer (a 401 means the token expired or was revoked: the
//! dead letters can be replayed once it is replaced).
//!
//! Config: `instance_url` (`https://<domain>.my.salesforce.com`),
//! `api_version` (default `v60.0`), `external_id_field` (default
//! `Switchyard_Message_Id__c`), `access_token` (a secret:
//! `{ env = "..." }`).

use chat_events::Payload;
use serde_json::{Map, Value, json};
use switchyard_plugin::http::{self, Request};
use switchyard_plugin::{Failure, Handler, Message, config, log};

struct Salesforce;

/// The Case's fields for a message, or `None` for a type Salesforce does
/// not take.
fn case(payload: &Payload) -> Option<Map<String, Value>> {
    let mut fields = Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            fields.insert(k.into(), json!(v));
        }
    };
    match payload {
        Payload::ChatEnded(chat) => {
            put("Subject", Some(&chat.subject()));
            put("Description", Some(&chat.transcript()));
            put("Origin", Some("Chat"));
            put("SuppliedName", chat.visitor_name());
            put("SuppliedEmail", chat.visitor_email());
            put("SuppliedPhone", chat.pre_chat_phone.as_deref());
            put("SuppliedCompany", chat.pre_chat_company.as_deref());
        }
        Payload::OfflineMessageSubmitted(m) => {
            put("Subject", Some(&m.subject()));
            put("Description", Some(&m.description()));
            put("Origin", Some("Web"));
            put("SuppliedName", m.visitor_name());
            put("SuppliedEmail", m.visitor_email());
            put("SuppliedPhone", m.visitor_phone.as_deref());
            put("SuppliedCompany", m.visitor_company.as_deref());
        }
        _ => return None,
    }
    Some(fields)
}

impl Handler for Salesforce {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::reject(e.to_string()))?;
        let Some(fields) = case(&payload) else {
            return Err(Failure::reject(format!(
                "the Salesforce queue does not handle {}",
                message.message_type
            )));
        };
        let instance = config::required("instance_url")?;
        let version = config::get("api_version").unwrap_or_else(|| "v60.0".into());
        let field =
            config::get("external_id_field").unwrap_or_else(|| "Switchyard_Message_Id__c".into());
        let token = config::required("access_token")?;
        let url = format!(
            "{}/services/data/{}/sobjects/Case/{}/{}",
            instance.trim_end_matches('/'),
            http::encode(&version),
            http::encode(&field),
            http::encode(&message.id)
        );
        let response = Request::patch(&url)
            .bearer(&token)
            .json(&fields)
            .send()
            .map_err(|e| e.into_failure("upserting the Salesforce Case"))?;
        let response = http::check(response, "upserting the Salesforce Case")?;
        let answer: Value = response.json().unwrap_or_default();
        let verb = if response.status == 201 {
            "created"
        } else {
            "updated"
        };
        log::info(&format!(
            "salesforce: {verb} Case {} for {}",
            answer["id"],
            payload.summary()
        ));
        Ok(())
    }
}

switchyard_plugin::export!(Salesforce);
