//! Log records for embedders: the library's `tracing` events, with the plan / VM / disk they
//! happened in, handed to a callback (the C ABI's log callback, Python's `logging`).
//!
//! The CLI formats events itself (`tracing-subscriber`'s fmt layer); a C program or a Python
//! script has its own logging and wants our records there, each with its context. A record's
//! fields hold the event's own fields and those of every span around it, outermost first
//! (`plan`, `vm`, `disk`, ...), so a sink can filter or index on them; its `text` is the usual
//! one-line form, `message key=value ...`.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = seen.clone();
//! let layer = vmigrate::logging::ForwardLayer::new(tracing::Level::INFO, move |r: &vmigrate::logging::Record| {
//!     sink.lock().unwrap().push(r.text());
//! });
//! tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
//!     let _vm = tracing::info_span!(target: "vmigrate::demo", "vm", vm = "database").entered();
//!     tracing::info!(target: "vmigrate::demo", bytes = 42, "disk copied");
//!     tracing::debug!(target: "vmigrate::demo", "not forwarded: below INFO");
//!     tracing::info!(target: "hyper::proto", "not forwarded: not ours");
//! });
//! assert_eq!(*seen.lock().unwrap(), vec!["disk copied vm=database bytes=42".to_string()]);
//! ```

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Severity.
    pub level: Level,
    /// Module path of the code that logged (`vmigrate_core::engine`, ...).
    pub target: String,
    /// The event's message.
    pub message: String,
    /// Span fields (outermost span first), then the event's own fields, as `(name, value)`.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// `message key=value ...`, the form a line-oriented log wants.
    pub fn text(&self) -> String {
        let mut s = self.message.clone();
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={v}");
        }
        s
    }
}

/// Collects fields as strings; `message` apart.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

/// A span's fields, kept in its extensions until it closes.
struct SpanFields(Vec<(String, String)>);

/// A `tracing-subscriber` layer that hands every event of the vmigrate crates at or above a level
/// to a callback, as a [`Record`]. Events of dependencies (HTTP, Kubernetes clients) and more
/// verbose ones are disabled at their call sites, so they cost nothing. The callback runs on
/// whichever thread logged (tokio workers included): it must not block for long and must not
/// call back into a blocking vmigrate API.
pub struct ForwardLayer<F> {
    max: Level,
    sink: F,
}

impl<F> ForwardLayer<F>
where
    F: Fn(&Record) + Send + Sync + 'static,
{
    /// Forward events of `max` and more severe ones to `sink`.
    pub fn new(max: Level, sink: F) -> Self {
        ForwardLayer { max, sink }
    }
}

impl<F> ForwardLayer<F> {
    /// Our crates' spans (the context of every record) and events up to `max`.
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        // Levels compare by verbosity: TRACE is the "largest".
        meta.target().starts_with("vmigrate") && (meta.is_span() || *meta.level() <= self.max)
    }
}

impl<S, F> Layer<S> for ForwardLayer<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: Fn(&Record) + Send + Sync + 'static,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(f.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        values.record(&mut f);
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            match ext.get_mut::<SpanFields>() {
                Some(SpanFields(v)) => v.extend(f.fields),
                None => ext.insert(SpanFields(f.fields)),
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !self.wants(meta) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let mut fields = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(v)) = span.extensions().get::<SpanFields>() {
                    fields.extend(v.iter().cloned());
                }
            }
        }
        fields.extend(f.fields);
        (self.sink)(&Record { level: *meta.level(), target: meta.target().to_string(), message: f.message, fields });
    }
}

/// Make `layer` the process-wide subscriber. Returns `false` when another subscriber was
/// installed first (by the embedding program, or by an earlier call): ours is then not used.
pub fn install<L>(layer: L) -> bool
where
    L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn records_carry_span_context_outermost_first_and_respect_the_level() {
        let seen: Arc<Mutex<Vec<Record>>> = Arc::default();
        let sink = seen.clone();
        let layer = ForwardLayer::new(Level::DEBUG, move |r: &Record| sink.lock().expect("lock").push(r.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let _plan = tracing::info_span!("plan", plan = "move-webapp-vmware").entered();
            let vm = tracing::info_span!("vm", vm = "database", phase = tracing::field::Empty);
            vm.record("phase", "CopyDisks");
            let _vm = vm.entered();
            let _disk = tracing::info_span!("disk", disk = 2000).entered();
            tracing::warn!(error = "boom", "could not save status");
            tracing::trace!("too verbose");
            tracing::error!(target: "kube_client::client", "not ours");
        });
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "{seen:?}");
        let r = &seen[0];
        assert_eq!(r.level, Level::WARN);
        assert!(r.target.ends_with("logging::tests"), "{}", r.target);
        assert_eq!(r.message, "could not save status");
        let want: Vec<(String, String)> = [
            ("plan", "move-webapp-vmware"),
            ("vm", "database"),
            ("phase", "CopyDisks"),
            ("disk", "2000"),
            ("error", "boom"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.fields, want);
        assert_eq!(
            r.text(),
            "could not save status plan=move-webapp-vmware vm=database phase=CopyDisks disk=2000 error=boom"
        );
    }
}
