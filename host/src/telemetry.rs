//! Traces: a span for each message the router routes and one for each
//! handling, continuing the trace of the producer's `traceparent` (W3C
//! Trace Context), exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (the standard `OTEL_*` variables apply: endpoint, headers,
//! `OTEL_BSP_SCHEDULE_DELAY`, ...). A handling's context goes on to the
//! plugin's outbound HTTP requests as their `traceparent`, unless the
//! plugin set one.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The exporter, flushed and stopped when dropped (at the end of `main`).
#[derive(Debug, Default)]
pub struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: traces not all exported: {e}");
        }
    }
}

/// The OpenTelemetry layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn layer<S>() -> (
    Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
    Telemetry,
)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return (None, Telemetry(None));
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "warning: OTEL_EXPORTER_OTLP_ENDPOINT is set, but traces cannot be exported: {e}"
            );
            return (None, Telemetry(None));
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("switchyard")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("switchyard");
    (
        Some(tracing_opentelemetry::layer().with_tracer(tracer)),
        Telemetry(Some(provider)),
    )
}

/// The most bytes of a producer's text (a message id, a type) a span
/// carries: spans go to a collector without the log's own cut.
pub const MAX_ATTRIBUTE: usize = 256;

/// Makes `span` a child of the trace a `traceparent` value names (an
/// invalid or missing one leaves it a root).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), value.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` naming `span`, when spans are exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// A `traceparent` header's value, if it is one (version 00, ids not all
/// zero): what the host passes on unchanged when it exports no spans.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// Installs the host's log output: to stderr, one write per event (so a
/// killed host loses no line it logged), in color only on a terminal,
/// every field bounded and escaped ([`crate::text::SafeFields`]); `RUST_LOG` overrides
/// the default level.
///
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the host's spans are exported
/// too (see [`crate::telemetry`]), whatever `RUST_LOG` says; the returned
/// guard flushes them when dropped.
pub fn init_logging(default_level: &str) -> Telemetry {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(crate::text::SafeFields)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let (traces, telemetry) = layer();
    let spans =
        tracing_subscriber::filter::Targets::new().with_target("switchyard", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(log)
        .with(traces.map(|t| t.with_filter(spans)))
        .init();
    telemetry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
    }
}
