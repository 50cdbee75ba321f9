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

//! Screenshots are kept in `target/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
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

/// A chromedriver and one browser session, ended when dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    shots: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver; scripts/setup.sh --tests installs it)",
            );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < LIMIT, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, session) = http(
            "POST",
            port,
            "/session",
            Some(&json!({ "capabilities": { "alwaysMatch": {
                "goog:chromeOptions": { "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,800", "--hide-scrollbars"
                ]},
                "goog:loggingPrefs": { "browser": "ALL" }
            }}})),
            None,
        );
        assert_eq!(status, 200, "{session}");
        let shots = repo_root().join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            port,
            session: session["value"]["sessionId"].as_str().unwrap().to_owned(),
            shots,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = http(
            method,
            self.port,
            &format!("/session/{}{path}", self.session),
            (!body.is_null()).then_some(&body),
            None,
        );
        assert_eq!(status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Waits until `script` returns something other than null or false.
    fn until(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            // An element can exist before its text is filled in: an empty
            // string is not an answer yet.
            let v = self.script(script);
            if !v.is_null() && v != Value::Bool(false) && v != Value::String(String::new()) {
                return v;
            }
            if started.elapsed() > LIMIT {
                let page = self.script(
                    "return location.hash + ': ' + document.getElementById('main').textContent",
                );
                self.screenshot("failed");
                panic!("timed out waiting for: {what}; the page shows {page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, css: &str) -> String {
        let e = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        e.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Waits for a dialog (`confirm()`) and returns its text.
    fn alert(&self) -> String {
        let started = Instant::now();
        loop {
            let (status, value) = http(
                "GET",
                self.port,
                &format!("/session/{}/alert/text", self.session),
                None,
                None,
            );
            if status == 200 {
                return value["value"].as_str().unwrap_or_default().to_owned();
            }
            assert!(started.elapsed() < LIMIT, "no dialog opened: {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Answers the open dialog: OK, or Cancel.
    fn answer_alert(&self, accept: bool) {
        let verb = if accept { "accept" } else { "dismiss" };
        self.call("POST", &format!("/alert/{verb}"), json!({}));
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let path = self.shots.join(format!("dashboard-{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The browser's console and page errors since the last call.
    fn errors(&self) -> Vec<String> {
        let log = self.call("POST", "/se/log", json!({ "type": "browser" }));
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            self.port,
            &format!("/session/{}", self.session),
            None,
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
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
            json!(["order.placedOrders", "order.refundedRefunds"])
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

fn charts_config(port: u16, queues: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
stats_interval = "200ms"
[routes]
"order.placed" = ["Orders"]
"order.refunded" = ["Refunds"]
"order.audited" = ["Audit"]
{queues}
"#
    )
}

const ORDERS_AND_REFUNDS: &str = r#"
[queues.Orders]
plugin = "@PLUGINS@/noop.wasm"
[queues.Refunds]
plugin = "@PLUGINS@/always_reject.wasm"
[queues.Audit]
plugin = "@PLUGINS@/noop.wasm"
"#;

/// The count of points a chart draws for one series.
fn points_js(chart: &str, series: &str) -> String {
    format!(
        "return document.querySelectorAll('#{chart} g.series[data-series=\"{series}\"] circle').length"
    )
}

/// The charts: drawn from the host's own samples with data after a load,
/// with units, current values and tooltips; updated live; a queue removed
/// and one added by a reload leave and join them; a queue's page shows its
/// own; dead letters per hour by queue and reason class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_trends_live_and_follow_reloads() {
    init_logs();
    let redis = Redis::start();
    let port = free_port();
    let cfg = TestConfig::new(&charts_config(port, ORDERS_AND_REFUNDS));
    let mut conn = redis.conn().await;
    for (kind, id) in [
        ("order.refunded", "r-1"),
        ("order.refunded", "r-2"),
        ("order.lost", "x-1"),
    ] {
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", kind), ("id", id), ("body", "{}")],
        )
        .await;
    }
    // Orders and audits, 20 a second each, while the test runs.
    let producer = {
        let (mut conn, ingress) = (conn.clone(), cfg.ingress().to_owned());
        tokio::spawn(async move {
            for n in 0u64.. {
                for kind in ["order.placed", "order.audited"] {
                    let id = format!("{kind}-{n}");
                    xadd(
                        &mut conn,
                        &ingress,
                        &[("type", kind), ("id", &id), ("body", "{}")],
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let log = cfg.dir.join("host.log");
    let _host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[
            ("SWITCHYARD_ADMIN_READ_TOKEN", READ_TOKEN),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();

    let base = format!("http://127.0.0.1:{port}");
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let b = &browser;
    tokio::task::block_in_place(|| {
        b.open(&format!("{base}/#/"));
        b.type_into("#token", READ_TOKEN);
        b.click("#token-form button");
        // A point every 5 s: two of Orders' after a few samples.
        b.until(
            "two points of Orders' handled rate",
            &format!("{} >= 2", points_js("chart-handled", "Orders")),
        );
        let legend = b.script(
            "return [...document.querySelectorAll('#chart-handled li')].map(l => [l.dataset.series, l.querySelector('strong').textContent])",
        );
        let legend = legend.as_array().unwrap();
        let names: Vec<&str> = legend.iter().map(|l| l[0].as_str().unwrap()).collect();
        assert_eq!(names, ["Audit", "Orders", "Refunds"], "{legend:?}");
        // The current value, with its unit: Orders handles about 20/s.
        let current = legend[1][1].as_str().unwrap();
        let rate: f64 = current.strip_suffix(" msg/s").unwrap().parse().unwrap();
        assert!(rate > 5.0 && rate < 40.0, "{current}");
        assert_eq!(
            b.script("return document.querySelector('#chart-handled figcaption').textContent"),
            json!("Handled (msg/s)")
        );
        // Axes: three value ticks and three times.
        assert_eq!(
            b.script("return document.querySelectorAll('#chart-handled text.tick').length"),
            json!(6)
        );
        let tooltip = b.script(
            "return document.querySelector('#chart-handled g.series[data-series=\"Orders\"] circle title').textContent",
        );
        assert!(
            tooltip.as_str().unwrap().starts_with("Orders at ")
                && tooltip.as_str().unwrap().ends_with(" msg/s"),
            "{tooltip}"
        );
        // Refunds' rejections are failed attempts; its backlog is drawn.
        b.until(
            "Refunds' failed attempts drawn",
            &format!("{} >= 1", points_js("chart-failed", "Refunds")),
        );
        for chart in ["chart-backlog", "chart-pending", "chart-concurrency"] {
            let n = b.script(&points_js(chart, "Orders"));
            assert!(n.as_u64().unwrap() >= 2, "{chart}: {n}");
        }
        // Dead letters per hour: Refunds' rejections and the router's
        // message of no route, with their counts.
        let bars = b.until(
            "the dead-letter bars",
            "const r = [...document.querySelectorAll('#chart-dead rect.bar')]; return r.length ? r.map(x => x.querySelector('title').textContent.replace(/^\\S+ /, '')).sort() : null",
        );
        assert_eq!(
            bars,
            json!([
                "(router) · no_route: 1 dead letters",
                "Refunds · rejected: 2 dead letters"
            ])
        );
        b.call(
            "POST",
            "/window/rect",
            json!({ "width": 1400, "height": 1150 }),
        );
        b.screenshot("charts");

        // Live: more points without a reload of the page.
        let before = b
            .script(&points_js("chart-handled", "Orders"))
            .as_u64()
            .unwrap();
        b.until(
            "a new point",
            &format!("{} > {before}", points_js("chart-handled", "Orders")),
        );
        // The last hour: the minute in progress at least.
        b.click("#span-hour");
        b.until(
            "the hour's points",
            &format!("{} >= 1", points_js("chart-handled", "Orders")),
        );
        assert_eq!(
            b.script("return document.getElementById('span-hour').className"),
            json!("")
        );
        b.click("#span-minutes");
    });

    // Orders removed by a reload, Returns added.
    let current = std::fs::read_to_string(&cfg.path).unwrap();
    let head = &current[..current.find("\n[admin]").unwrap()];
    let queues = ORDERS_AND_REFUNDS.replace(
        "[queues.Orders]\nplugin = \"@PLUGINS@/noop.wasm\"\n",
        "[queues.Returns]\nplugin = \"@PLUGINS@/noop.wasm\"\n",
    );
    let text = charts_config(port, &queues)
        .replace(
            "\"order.placed\" = [\"Orders\"]\n",
            "\"order.returned\" = [\"Returns\"]\n",
        )
        .replace("@PLUGINS@", plugin_dir().to_str().unwrap());
    let tmp = cfg.path.with_extension("tmp");
    std::fs::write(&tmp, format!("{head}\n{text}")).unwrap();
    std::fs::rename(&tmp, &cfg.path).unwrap();
    tokio::task::block_in_place(|| {
        b.until(
            "Orders gone from the charts, Returns in them",
            "const l = [...document.querySelectorAll('#chart-handled li')].map(l => l.dataset.series); return l.join() === 'Audit,Refunds,Returns'",
        );
    });
    for n in 0..5 {
        let id = format!("ret-{n}");
        xadd(
            &mut conn,
            cfg.ingress(),
            &[("type", "order.returned"), ("id", &id), ("body", "{}")],
        )
        .await;
    }
    tokio::task::block_in_place(|| {
        // Its points start at the reload: a handled rate once it has two
        // samples, and what it handled shows.
        b.until(
            "Returns' handled messages drawn",
            "const c = [...document.querySelectorAll('#chart-handled g.series[data-series=\"Returns\"] circle title')]; return c.some(t => !t.textContent.endsWith(': 0 msg/s'))",
        );
        assert_eq!(b.script(&points_js("chart-handled", "Orders")), json!(0));
        b.screenshot("charts-after-reload");

        // A queue's page: its own lines, its own dead letters.
        b.open(&format!("{base}/#/queue/Refunds"));
        b.until(
            "Refunds' failed attempts",
            &format!("{} >= 1", points_js("chart-rates", "failed")),
        );
        let bars = b.script(
            "return [...document.querySelectorAll('#chart-dead rect.bar')].map(x => x.dataset.series)",
        );
        assert_eq!(bars, json!(["Refunds · rejected"]));
        let before = b
            .script(&points_js("chart-waiting", "backlog"))
            .as_u64()
            .unwrap();
        b.until(
            "the queue page's charts updated",
            &format!("{} > {before}", points_js("chart-waiting", "backlog")),
        );
        b.screenshot("queue-charts");
        let errors = b.errors();
        assert!(errors.is_empty(), "console errors: {errors:?}");
    });
    producer.abort();
    drop(browser);
}
