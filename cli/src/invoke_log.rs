//! What `switchyard invoke` shows of a call's log: the plugin's own lines
//! (the host logs them with target `plugin`) and what it wrote to stdout
//! and stderr, taken from the host's events as they happen; the host's own
//! warnings go to stderr as usual.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// The lines taken so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Taken>>);

#[derive(Debug, Default)]
struct Taken {
    /// (level, message) of the plugin's lines.
    lines: Vec<(String, String)>,
    /// What it wrote to stdout and stderr.
    output: Option<String>,
}

impl Capture {
    /// The plugin's lines and output, taken.
    pub(crate) fn take(&self) -> (Vec<(String, String)>, Option<String>) {
        let mut t = self.0.lock().expect("capture lock");
        (std::mem::take(&mut t.lines), t.output.take())
    }
}

/// The fields of one event that matter here.
#[derive(Default)]
struct Fields {
    message: String,
    output: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "output" => self.output = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "output" => self.output = Some(text),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut taken = self.0.lock().expect("capture lock");
        if meta.target() == "plugin" {
            taken
                .lines
                .push((meta.level().as_str().to_lowercase(), fields.message));
        } else if let Some(output) = fields.output {
            taken.output = Some(output);
        }
    }
}

/// Logging for `invoke`: the plugin's lines and output captured, the
/// host's warnings and errors (but those) to stderr.
pub(crate) fn init() -> Capture {
    use tracing_subscriber::prelude::*;
    let capture = Capture::default();
    // A denied request is in the report's requests already.
    let quiet = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target() != "plugin"
            && meta.target() != "switchyard::events"
            && *meta.level() <= tracing::Level::WARN
    });
    let log = tracing_subscriber::fmt::layer()
        .fmt_fields(switchyard::text::SafeFields)
        .with_writer(std::io::stderr)
        .with_filter(quiet);
    tracing_subscriber::registry()
        .with(log)
        .with(
            capture
                .clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        )
        .init();
    capture
}
