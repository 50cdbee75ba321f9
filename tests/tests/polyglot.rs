//! Plugins of contract 0.2.0 in Python (componentize-py, its wasi:http
//! helpers) and JavaScript (componentize-js, `fetch`) make real HTTP
//! calls through the host, under the same grants as Rust plugins: a
//! request reaches the granted server, answers map to retry (honouring
//! Retry-After) or reject, and an ungranted destination is refused.

use std::time::Duration;

use switchyard_standins::{Api, Scripted, StandIn};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_plugins_call_http_under_the_grants() {
    let server = StandIn::start(Api::Echo).await.unwrap();
    let elsewhere = StandIn::start(Api::Echo).await.unwrap();
    let queue = |name: &str, plugin: &str, url: &str| {
        format!(
            "[queues.{name}]\nplugin = \"@PLUGINS@/{plugin}\"\nallowed_hosts = [\"{}\"]\n\
             max_attempts = 3\nretry_delay = \"50ms\"\nvisibility_timeout = \"3s\"\n\
             [queues.{name}.config]\nurl = \"{url}\"\n",
            server.url()
        )
    };
    let forward = format!("{}/inbox", server.url());
    let denied = format!("{}/inbox", elsewhere.url());
    let mut host = TestHost::start_with(TestConfig::new(&format!(
        "[routes]\n\"py\" = [\"Py\"]\n\"js\" = [\"Js\"]\n\"away\" = [\"PyAway\", \"JsAway\"]\n{}{}{}{}",
        queue("Py", "python_forward.wasm", &forward),
        queue("Js", "js_forward.wasm", &forward),
        queue("PyAway", "python_forward.wasm", &denied),
        queue("JsAway", "js_forward.wasm", &denied),
    ))).await;
    let metrics = host.metrics.clone();
    let settled = |want: &'static [(&'static str, u64)]| {
        let m = metrics.clone();
        async move {
            wait_for(LIMIT, "the queues settled their messages", || {
                let q = m.queues();
                let done = want.iter().all(|(name, n)| {
                    q.get(*name)
                        .is_some_and(|c| c.succeeded + c.dead_lettered == *n)
                });
                async move { done }
            })
            .await;
        }
    };

    // A plain call: the server gets the message as JSON, keyed by its id.
    for lang in ["py", "js"] {
        let body = format!("{{\"lang\":\"{lang}\"}}");
        host.send(lang, &format!("{lang}-1"), &body).await;
    }
    settled(&[("Py", 1), ("Js", 1)]).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/inbox");
        let event = r.json();
        let lang = event["data"]["lang"].as_str().unwrap();
        assert_eq!(
            r.header("idempotency-key"),
            Some(format!("{lang}-1").as_str())
        );
        assert_eq!(event["id"], format!("{lang}-1"));
        assert_eq!(event["type"], lang);
        // The body's length is known: it is sent with it, not chunked.
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str()),
            "{lang}: {:?}",
            r.headers
        );
        assert_eq!(r.header("transfer-encoding"), None, "{lang}");
    }

    // 503 with Retry-After, then success: retried after the server's delay.
    for lang in ["py", "js"] {
        server.push(Scripted::status(503).with_header("retry-after", "1"));
        host.send(lang, &format!("{lang}-2"), "{}").await;
        let queue: &'static [(&'static str, u64)] = if lang == "py" {
            &[("Py", 2)]
        } else {
            &[("Js", 2)]
        };
        settled(queue).await;
        let r = server.requests();
        let tries: Vec<_> = r
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(format!("{lang}-2").as_str()))
            .collect();
        assert_eq!(tries.len(), 2, "{lang}");
        assert_eq!(tries[0].status, 503);
        let waited = tries[1].at - tries[0].at;
        assert!(
            waited >= Duration::from_millis(950),
            "{lang}: Retry-After honoured, waited {waited:?}"
        );
    }

    // Any other 4xx rejects at once; an ungranted destination is refused.
    for lang in ["py", "js"] {
        server.push(Scripted::answer(422, "{\"error\":\"no\"}"));
        host.send(lang, &format!("{lang}-3"), "{}").await;
    }
    host.send("away", "away-1", "{}").await;
    settled(&[("Py", 3), ("Js", 3), ("PyAway", 1), ("JsAway", 1)]).await;
    host.stop().await;
    assert!(elsewhere.requests().is_empty());
    let dead = dead_letters(&mut host.conn, &host.cfg).await;
    let reason = |queue: &str| {
        dead.iter()
            .find(|d| d.queue == queue)
            .map(|d| (d.reason.clone(), d.attempts.clone()))
            .unwrap_or_else(|| panic!("no dead letter from {queue}: {dead:?}"))
    };
    for queue in ["Py", "Js"] {
        let (reason, attempts) = reason(queue);
        assert!(
            reason.contains("HTTP 422: {\"error\":\"no\"}"),
            "{queue}: {reason}"
        );
        assert_eq!(attempts, "1", "{queue}");
    }
    let (py_away, attempts) = reason("PyAway");
    assert!(py_away.contains("denied by the host"), "{py_away}");
    assert_eq!(attempts, "1");
    // fetch reports every failure of the request alike (a TypeError, as
    // the WHATWG spec has it): a JS plugin cannot tell a refusal from a
    // network failure, so it retries until max_attempts. On a loaded
    // machine the JS runtime (componentize-js 0.23) sometimes traps on the
    // failed fetch instead ("event loop error, but no exception is
    // pending"): a failed attempt all the same, retried alike.
    let (js_away, attempts) = reason("JsAway");
    assert!(
        js_away.contains("NetworkError") || js_away.contains("event loop error"),
        "{js_away}"
    );
    assert_eq!(attempts, "3");
}
