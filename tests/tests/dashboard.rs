//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver (Debian's chromium and chromium-driver) over WebDriver. The
//! host runs as a process with an admin token. Every page loads without a
//! console error and shows the running host's queues, dead letters and
//! routes; a producer's `<script>` is shown as text; the actions are off
//! until the token is entered; a replay clicked on a dead letter's page
//! puts the message back, and the queue's new plugin handles it; "replay
//! all that match" and "delete all that match" act on the filter's dead
//! letters only after the page's confirmation, and a cancelled one changes
//! nothing.

//! Screenshots are kept in `target/screenshots/`; the charts are tested in
//! `charts.rs`.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "dashboard-test-token";
const READ_TOKEN: &str = "dashboard-test-read-token";

/// One HTTP/1.1 request; the status and the body as JSON (or as a JSON
/// string when it is not JSON).
fn http(
    method: &str,
    port: u16,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let r = net::http(method, port, path, &headers, &body);
    (r.status, r.json())
}

/// Waits until the Refunds queue has handled `n` messages.
async fn refunds_succeeded(port: u16, n: u64) {
    wait_for_value(LIMIT, &format!("Refunds handled {n}"), async || {
        let (_, o) = http("GET", port, "/api/overview", None, Some(READ_TOKEN));
        let refunds = o["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "Refunds").cloned());
        if refunds.is_some_and(|q| q["succeeded"] == n) {
            Ok(())
        } else {
            Err(o.to_string())
        }
    })
    .await
}

fn config_text(port: u16, refunds_plugin: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
stats_interval = "200ms"
[ingress]
stream = "@PREFIX@:ingress"
visibility_timeout = "1s"
partitions = 3
[routes]
"order.placed" = ["Orders"]
"order.refunded" = ["Refunds"]
"chat.ended" = {{ queues = ["Orders"], validate = true }}
[queues.Orders]
plugin = "@PLUGINS@/noop.wasm"
concurrency = {{ min = 1, max = 4 }}
[queues.Refunds]
plugin = "@PLUGINS@/{refunds_plugin}.wasm"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_host_and_replays_a_dead_letter() {
    init_logs();
    let redis = Redis::start();
    let port = free_port();
    let cfg = TestConfig::new(&config_text(port, "always_reject"));
    let mut conn = redis.conn().await;
    for n in 0..3 {
        let id = format!("o-{n}");
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "order.placed"), ("id", &id), ("body", "{}")],
        )
        .await;
    }
    let hostile =
        r#"{"order":7,"note":"<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"}"#;
    for (kind, id, body) in [
        ("order.refunded", "r-1", hostile),
        ("order.refunded", "r-2", "{}"),
        ("order.lost", "x-1", "{}"),
        ("order.lost", "x-2", "{}"),
    ] {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", kind), ("id", id), ("body", body)],
        )
        .await;
    }

    let log = cfg.dir.join("host.log");
    let _host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
            ("SWITCHYARD_ADMIN_READ_TOKEN", READ_TOKEN),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    wait_for(LIMIT, "four dead letters", || {
        let (mut conn, cfg) = (conn.clone(), &cfg);
        async move { dead_letters(&mut conn, cfg).await.len() == 4 }
    })
    .await;
    let refund = dead_letters(&mut conn, &cfg)
        .await
        .into_iter()
        .find(|d| d.message_id == "r-1")
        .unwrap();

    // The queue's plugin is fixed while the host runs.
    let fixed = config_text(port, "noop").replace("@PLUGINS@", plugin_dir().to_str().unwrap());
    let current = std::fs::read_to_string(&cfg.path).unwrap();
    let head = &current[..current.find("\n[admin]").unwrap()];
    let tmp = cfg.path.with_extension("tmp");
    std::fs::write(&tmp, format!("{head}\n{fixed}")).unwrap();
    std::fs::rename(&tmp, &cfg.path).unwrap();
    let noop = version_hash(&std::fs::read(plugin("noop")).unwrap());
    wait_for_value(LIMIT, "the edit applied", async || {
        let (_, o) = http("GET", port, "/api/overview", None, Some(READ_TOKEN));
        let refunds = o["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "Refunds").cloned());
        if refunds.is_some_and(|q| q["plugin"]["version"] == noop.as_str()) {
            Ok(())
        } else {
            Err(o.to_string())
        }
    })
    .await;

    let base = format!("http://127.0.0.1:{port}");
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let b = &browser;
    tokio::task::block_in_place(|| {
        // Nothing without a token but the page that asks for one.
        b.open(&format!("{base}/#/"));
        let asked = b.until(
            "the request for a token",
            "const m = document.querySelector('main .message'); return m && m.textContent",
        );
        assert!(
            asked.as_str().unwrap().starts_with("Enter the admin token"),
            "{asked}"
        );
        b.screenshot("token-asked");
        b.type_into("#token", READ_TOKEN);
        b.click("#token-form button");

        // Queues, live, with the read-only token.
        let rows = b.until(
            "the queues table",
            "const r = document.querySelectorAll('#queues tbody tr'); return r.length ? [...r].map(x => x.dataset.queue) : null",
        );
        assert_eq!(rows, json!(["Orders", "Refunds"]));
        b.until(
            "a rate computed from two updates",
            "const c = document.querySelector('#queues tbody tr td:nth-child(2)'); return c && c.textContent !== '–'",
        );
        let handled = b.script(
            "return document.querySelector('#queues tbody tr td:nth-child(8)').textContent",
        );
        assert_eq!(handled, json!("3"));
        // Three partitions: a table of them, partition 0 first.
        let partitions = b.until(
            "the partitions table",
            "const r = document.querySelectorAll('#partitions tbody tr'); return r.length ? [...r].map(x => [x.dataset.partition, x.children[2].textContent]) : null",
        );
        let partitions = partitions.as_array().unwrap();
        assert_eq!(partitions.len(), 3, "{partitions:?}");
        assert_eq!(partitions[0], json!(["0", "active"]));
        assert!(
            partitions.iter().all(|p| p[1] == "active"),
            "{partitions:?}"
        );
        b.screenshot("queues");

        // Routes.
        b.open(&format!("{base}/#/routes"));
        let routes = b.until(
            "the routes",
            "const r = document.querySelectorAll('#routes tbody tr'); return r.length ? [...r].map(x => x.textContent) : null",
        );
        assert_eq!(
            routes,
            json!([
                "chat.endedOrderschecked against the schema",
                "order.placedOrdersany JSON",
                "order.refundedRefundsany JSON"
            ])
        );
        b.screenshot("routes");

        // A queue's page: its dead letter and settings.
        b.open(&format!("{base}/#/queue/Refunds"));
        let reason = b.until(
            "the queue's dead letters",
            "const c = document.querySelector('#dead-letters tbody tr td.reason'); return c && c.textContent",
        );
        assert!(
            reason.as_str().unwrap().contains("rejected by the plugin"),
            "{reason}"
        );
        b.until(
            "the settings",
            "return document.querySelectorAll('#settings tr').length > 5",
        );
        b.screenshot("queue");

        // Dead letters, filtered.
        b.open(&format!("{base}/#/dead"));
        let ids = b.until(
            "the dead letters",
            "const r = document.querySelectorAll('#dead-letters tbody tr'); return document.querySelector('form.filters') && r.length ? [...r].map(x => x.dataset.id) : null",
        );
        assert_eq!(ids.as_array().unwrap().len(), 4);
        assert_eq!(
            b.script("return document.getElementById('replay-all').disabled"),
            json!(true)
        );
        b.screenshot("dead-letters");
        b.open(&format!("{base}/#/dead?queue=(router)"));
        b.until(
            "the router's only",
            "const r = document.querySelectorAll('#dead-letters tbody tr'); return r.length === 2",
        );

        // One dead letter: the producer's markup is text; no action with
        // the read-only token.
        b.open(&format!("{base}/#/dead/{}", refund.id));
        let body = b.until(
            "the body",
            "const p = document.getElementById('body'); return p && p.textContent",
        );
        assert!(
            body.as_str()
                .unwrap()
                .contains("<script>window.pwned=1</script>"),
            "{body}"
        );
        assert_eq!(b.script("return window.pwned === undefined && document.querySelectorAll('main script, main img').length === 0"), json!(true));
        assert_eq!(
            b.script("return document.getElementById('replay').disabled"),
            json!(true)
        );
        b.screenshot("dead-letter");

        // The admin token entered; replay clicked.
        b.type_into("#token", TOKEN);
        b.click("#token-form button");
        b.until(
            "the replay button enabled",
            "const r = document.getElementById('replay'); return r && !r.disabled",
        );
        b.click("#replay");
        let outcome = b.until(
            "the replay's outcome",
            "const o = document.getElementById('outcome'); return o && o.textContent",
        );
        assert!(
            outcome.as_str().unwrap().starts_with("Replayed to "),
            "{outcome}"
        );
        b.screenshot("replayed");
        let errors = b.errors();
        assert!(errors.is_empty(), "console errors: {errors:?}");
    });

    // The replayed message is handled by the fixed plugin.
    refunds_succeeded(port, 1).await;
    assert_eq!(dead_letters(&mut conn, &cfg).await.len(), 3);

    // All that match a filter: replayed, then deleted, each after the
    // page's confirmation.
    tokio::task::block_in_place(|| {
        b.open(&format!("{base}/#/dead?queue=Refunds"));
        b.until(
            "Refunds' one dead letter, actions enabled",
            "const r = document.querySelectorAll('#dead-letters tbody tr'); const b = document.getElementById('replay-all'); return r.length === 1 && b && !b.disabled",
        );
        b.click("#replay-all");
        let asked = b.alert();
        assert_eq!(
            asked, "Replay every dead letter that matches (1 shown)?",
            "{asked}"
        );
        b.answer_alert(true);
        let outcome = b.until(
            "the replay's outcome",
            "const o = document.getElementById('outcome'); return o && o.textContent",
        );
        assert_eq!(outcome, json!("1 replayed"));
    });
    refunds_succeeded(port, 2).await;
    let left: Vec<String> = dead_letters(&mut conn, &cfg)
        .await
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    assert_eq!(left, ["x-1", "x-2"]);

    tokio::task::block_in_place(|| {
        b.open(&format!("{base}/#/dead?queue=(router)"));
        b.until(
            "the router's two, actions enabled",
            "const r = document.querySelectorAll('#dead-letters tbody tr'); const b = document.getElementById('delete-all'); return r.length === 2 && b && !b.disabled",
        );
        // Cancelled: nothing is deleted.
        b.click("#delete-all");
        assert_eq!(
            b.alert(),
            "Delete every dead letter that matches (2 shown)?"
        );
        b.answer_alert(false);
        assert_eq!(
            b.script("return document.getElementById('outcome').textContent"),
            json!("")
        );
    });
    assert_eq!(dead_letters(&mut conn, &cfg).await.len(), 2);
    tokio::task::block_in_place(|| {
        b.click("#delete-all");
        b.alert();
        b.answer_alert(true);
        let outcome = b.until(
            "the delete's outcome",
            "const o = document.getElementById('outcome'); return o && o.textContent",
        );
        assert_eq!(outcome, json!("2 deleted"));
        b.until(
            "the emptied list",
            "return document.getElementById('no-dead') !== null",
        );
        b.screenshot("all-deleted");
        let errors = b.errors();
        assert!(errors.is_empty(), "console errors: {errors:?}");
    });
    assert!(dead_letters(&mut conn, &cfg).await.is_empty());

    // The API refuses actions without the token, with a wrong one, and
    // with the read-only one; reads need a token too.
    let action = json!({ "ids": ["1-0"] });
    let (status, _) = http("POST", port, "/api/dead/replay", Some(&action), None);
    assert_eq!(status, 401);
    let (status, _) = http(
        "POST",
        port,
        "/api/dead/delete",
        Some(&action),
        Some("wrong"),
    );
    assert_eq!(status, 401);
    let (status, body) = http(
        "POST",
        port,
        "/api/dead/delete",
        Some(&action),
        Some(READ_TOKEN),
    );
    assert_eq!(status, 403, "{body}");
    for path in ["/api/overview", "/api/dead", "/api/queues/Refunds"] {
        let (status, _) = http("GET", port, path, None, None);
        assert_eq!(status, 401, "{path}");
        let (status, _) = http("GET", port, path, None, Some("wrong"));
        assert_eq!(status, 401, "{path}");
    }
    let (status, body) = http("GET", port, "/api/dead?since=soon", None, Some(READ_TOKEN));
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "since: \"soon\" is not a duration like 30m, 1h or 7d"
    );
    let (status, _) = http("GET", port, "/api/queues/Nope", None, Some(TOKEN));
    assert_eq!(status, 404);
    drop(browser);
}
