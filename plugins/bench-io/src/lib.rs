//! Benchmark plugin (contract 0.2.0): for each message, the one operation
//! its queue's config `do` names, so the benchmarks can set its cost
//! beside a native baseline:
//!
//! - `post`: POSTs the body to `url` with the message id as
//!   `Idempotency-Key`, and succeeds on a 2xx answer (as the built-in
//!   `http-post` handler does natively);
//! - `kv`: reads a key of bucket `bench` and writes it back changed (one
//!   `get` and one `set`), among 1,000 keys;
//! - `publish`: publishes one message of type `bench.out` with the body;
//! - `mail`: sends one mail from `from` to `to`, the body as its text.

use switchyard_plugin::bindings::switchyard::plugin::publish;
use switchyard_plugin::http::{self, Request};
use switchyard_plugin::{Failure, Handler, Message, config, kv, mail};

struct BenchIo;

impl Handler for BenchIo {
    fn handle(message: Message) -> Result<(), Failure> {
        match config::get("do").as_deref() {
            Some("post") => {
                let url = config::required("url")?;
                let response = Request::post(&url)
                    .idempotency_key(&message.id)
                    .json_text(message.body)
                    .send()
                    .map_err(|e| e.into_failure("posting"))?;
                http::check(response, "posting").map(drop)
            }
            Some("kv") => {
                let bucket = kv::open("bench").map_err(|e| Failure::retry(kv::error_text(&e)))?;
                let n: u64 = message.id.parse().unwrap_or(0);
                let key = format!("k{}", n % 1000);
                let old = bucket
                    .get(&key)
                    .map_err(|e| Failure::retry(kv::error_text(&e)))?
                    .unwrap_or_default();
                let new = if old.len() >= 64 {
                    Vec::new()
                } else {
                    [old, vec![b'x']].concat()
                };
                bucket
                    .set(&key, &new)
                    .map_err(|e| Failure::retry(kv::error_text(&e)))
            }
            Some("publish") => publish::publish("bench.out", &message.body, &[])
                .map(drop)
                .map_err(Failure::reject),
            Some("get") => {
                let url = config::required("url")?;
                let response = Request::get(&url)
                    .send()
                    .map_err(|e| e.into_failure("getting"))?;
                http::check(response, "getting").map(drop)
            }
            Some("mail") => {
                let from = config::required("from")?;
                let to = config::required("to")?;
                let mut email = mail::new(&from, vec![to], &format!("Message {}", message.id));
                email.text = Some(message.body);
                mail::send(&email)
                    .map(drop)
                    .map_err(|e| mail::into_failure(e, "mailing"))
            }
            Some("nothing") => Ok(()),
            other => Err(Failure::reject(format!("unknown `do`: {other:?}"))),
        }
    }
}

switchyard_plugin::export!(BenchIo);
