//! The dashboard's charts in a real browser (headless Chromium, see
//! `switchyard_tests::browser`), against a host process with a read-only
//! token: drawn from the host's own samples with data after a load, with
//! units, current values and tooltips; updated live; a queue removed and
//! one added by a reload leave and join them; a queue's page shows its
//! own; dead letters per hour by queue and reason class.

use std::time::Duration;

use serde_json::json;
use switchyard_tests::*;

const READ_TOKEN: &str = "charts-test-read-token";

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

/// The tooltip of the first point of a series that is not 0, or null.
fn nonzero_js(chart: &str, series: &str) -> String {
    format!(
        "const t = [...document.querySelectorAll('#{chart} g.series[data-series=\"{series}\"] circle title')].map(t => t.textContent).find(t => !/: 0 [a-z/ ]+$/.test(t)); return t || null"
    )
}

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
        // Refunds' two rejections, in the host's first seconds, are
        // failed attempts in a point (2 over its 5 s: 0.4/s).
        let failed = b.until(
            "Refunds' failed attempts drawn",
            &nonzero_js("chart-failed", "Refunds"),
        );
        let rate: f64 = failed
            .as_str()
            .and_then(|t| t.rsplit_once(": "))
            .and_then(|(_, v)| v.strip_suffix(" msg/s"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{failed}"));
        assert!(rate > 0.2 && rate <= 0.4, "{failed}");
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
            &nonzero_js("chart-rates", "failed"),
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
