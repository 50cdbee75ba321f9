//! Traces over OTLP/HTTP: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the host
//! (a process) exports a `route` span and a `handle` span (queue, message
//! id, attempt, plugin version, outcome) in the trace of the producer's
//! `traceparent`, and the plugin's outbound HTTP request carries the
//! handling span's context. A local OTLP receiver decodes what it gets.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use switchyard_standins::{Api, StandIn};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(30);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver on loopback: keeps every span posted to
/// `/v1/traces` (protobuf), answers 200.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (kept, seen) = (spans.clone(), paths.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (kept, seen) = (kept.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(tcp.try_clone().unwrap());
                    let mut tcp = tcp;
                    // Requests one after another on a kept-alive connection.
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            reader.read_line(&mut header).unwrap();
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = header.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                length = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        seen.lock().unwrap().push(path);
                        let request = ExportTraceServiceRequest::decode(body.as_slice())
                            .expect("an OTLP protobuf ExportTraceServiceRequest");
                        for resource in request.resource_spans {
                            for scope in resource.scope_spans {
                                kept.lock().unwrap().extend(scope.spans);
                            }
                        }
                        let _ = tcp.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                        );
                    }
                });
            }
        });
        Receiver { port, spans, paths }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(n) => Some(n.to_string()),
            Any::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_producers_trace_and_reach_the_plugins_requests() {
    init_logs();
    let receiver = Receiver::start();
    let echo = StandIn::start(Api::Echo).await.unwrap();
    let redis = Redis::start();
    let cfg = TestConfig::new(&format!(
        r#"
[routes]
"probe" = ["Probe"]
[queues.Probe]
plugin = "@PLUGINS@/io_probe.wasm"
allowed_hosts = ["{}"]
max_attempts = 1
"#,
        echo.url()
    ));
    let mut conn = redis.conn().await;
    let body = json!({
        "steps": [{ "http": { "method": "GET", "url": format!("{}/traced", echo.url()) } }],
        "then": "report",
    })
    .to_string();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    xadd(
        &mut conn,
        cfg.ingress(),
        &[
            ("type", "probe"),
            ("id", "t-1"),
            ("body", &body),
            ("traceparent", &traceparent),
        ],
    )
    .await;
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let log = cfg.dir.join("host.log");
    let mut host = HostProcess::spawn_with(
        &cfg.path,
        redis.url(),
        &log,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "warn"),
        ],
    )
    .unwrap();
    let report = probe_report(&mut conn, &cfg, "t-1", LIMIT).await;
    assert_eq!(report[0]["status"], 200, "{report:?}");
    host.signal("TERM");
    host.wait(LIMIT).expect("the host stops");

    let spans = wait_for_value(LIMIT, "the route and handle spans", async || {
        let spans = receiver.spans();
        if spans.iter().any(|s| s.name == "route") && spans.iter().any(|s| s.name == "handle Probe")
        {
            Ok(spans)
        } else {
            Err(format!("{spans:#?}"))
        }
    })
    .await;
    assert!(
        receiver
            .paths
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == "/v1/traces"),
        "{:?}",
        receiver.paths.lock().unwrap()
    );
    let route = spans.iter().find(|s| s.name == "route").unwrap();
    let handle = spans.iter().find(|s| s.name == "handle Probe").unwrap();
    for span in [route, handle] {
        assert_eq!(hex(&span.trace_id), TRACE, "{span:#?}");
        assert_eq!(hex(&span.parent_span_id), PARENT, "{span:#?}");
    }
    assert_eq!(attribute(route, "msg_id").as_deref(), Some("t-1"));
    assert_eq!(attribute(handle, "queue").as_deref(), Some("Probe"));
    assert_eq!(attribute(handle, "msg_id").as_deref(), Some("t-1"));
    assert_eq!(attribute(handle, "attempt").as_deref(), Some("1"));
    assert_eq!(
        attribute(handle, "plugin"),
        Some(version_hash(&std::fs::read(plugin("io_probe")).unwrap()))
    );
    assert_eq!(attribute(handle, "outcome").as_deref(), Some("reject"));

    // The plugin's request went on in the handling's trace.
    let request = echo
        .requests()
        .into_iter()
        .find(|r| r.path == "/traced")
        .expect("the plugin's request");
    assert_eq!(
        request.header("traceparent"),
        Some(format!("00-{TRACE}-{}-01", hex(&handle.span_id)).as_str()),
    );
}
