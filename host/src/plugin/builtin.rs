//! Handlers built into the host (`builtin:NAME`): native code, trusted, no
//! sandbox; and the ones a program embedding the host registers.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::*;
use crate::config::BUILTIN_PREFIX;

/// A handler built into the host: native code, trusted, no sandbox. The
/// benchmarks measure the WebAssembly path against these, on the same
/// reading, hand-off and settling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Succeeds at once: discards a queue's messages.
    Noop,
    /// POSTs the message's body to the queue's config `url`, through the
    /// queue's HTTP client (its grant, limits and connection pool), and
    /// succeeds on a 2xx answer.
    HttpPost,
    /// A handler the program embedding the host registered with
    /// [`register_native`], by its index.
    Registered(usize),
}

/// The built-in handlers, by name.
pub(crate) const BUILTINS: &[(&str, Builtin)] =
    &[("noop", Builtin::Noop), ("http-post", Builtin::HttpPost)];

/// A native handler registered by the program that embeds the host: what
/// a benchmark measures a plugin against, with the queue's grants (its
/// SQL pool, its HTTP client) at hand in the [`CallContext`].
pub type NativeHandler = dyn for<'a> Fn(
        &'a CallContext,
        &'a Delivery,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>>
    + Send
    + Sync;

pub(crate) type Registry = std::sync::RwLock<Vec<(String, Arc<NativeHandler>)>>;

pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Makes `handler` the handler of queues whose plugin is `builtin:NAME`, in
/// this process. Registering a name again replaces the handler.
pub fn register_native(name: &str, handler: Arc<NativeHandler>) {
    let mut registry = registry().write().expect("registry lock");
    match registry.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = handler,
        None => registry.push((name.to_owned(), handler)),
    }
}

impl Builtin {
    pub(crate) async fn run(self, cx: &CallContext, message: &Delivery) -> Outcome {
        match self {
            Builtin::Noop => Outcome::Success,
            Builtin::HttpPost => http_post(cx, message).await,
            Builtin::Registered(index) => {
                let handler = registry().read().expect("registry lock")[index].1.clone();
                handler(cx, message).await
            }
        }
    }
}

/// [`Builtin::HttpPost`].
async fn http_post(cx: &CallContext, message: &Delivery) -> Outcome {
    use http_body_util::BodyExt;
    let retry = |reason: String| Outcome::Retry {
        reason,
        delay: None,
    };
    let Some(url) = cx.config.get("url").and_then(|v| v.as_str()) else {
        return retry("the queue's config has no `url`".into());
    };
    let body = http_body_util::Full::new(bytes::Bytes::from(message.body.clone()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = match ::http::Request::post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", message.id.as_str())
        .body(body)
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Reject {
                reason: format!("the request: {e}"),
            };
        }
    };
    let deadline = Instant::now() + cx.timeout;
    match cx.http.clone().send(request, 1, deadline, None).await {
        Ok(response) => {
            let status = response.status();
            match response.into_body().collect().await {
                Ok(_) if status.is_success() => Outcome::Success,
                Ok(_) => retry(format!("HTTP {status}")),
                Err(e) => retry(format!("reading the answer: {e}")),
            }
        }
        Err(e) => retry(e.to_string()),
    }
}

/// The built-in handler named `name` (what follows `builtin:`), or why
/// there is none, with the names there are.
pub fn builtin(name: &str) -> Result<Builtin, LoadError> {
    if let Some((_, run)) = BUILTINS.iter().find(|(n, _)| *n == name) {
        return Ok(*run);
    }
    let registered = registry().read().expect("registry lock");
    if let Some(index) = registered.iter().position(|(n, _)| n == name) {
        return Ok(Builtin::Registered(index));
    }
    Err(LoadError::UnknownBuiltin {
        name: name.to_owned(),
        known: BUILTINS
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(registered.iter().map(|(n, _)| n.clone()))
            .map(|n| format!("{BUILTIN_PREFIX}{n}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}
