//! W3C trace context across NATS: the publisher injects the current span's context into the
//! message headers, the consumer makes its handler span a child of it, so one trace runs from
//! an HTTP request through every service that reacts to its events.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Setter<F>(F);

impl<F: FnMut(&str, String)> Injector for Setter<F> {
    fn set(&mut self, key: &str, value: String) {
        (self.0)(key, value);
    }
}

/// Calls `set(name, value)` for each trace-context header of the current span
/// (`traceparent`, and `tracestate` when present). Does nothing outside a sampled trace.
pub fn inject_current(set: impl FnMut(&str, String)) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Setter(set));
}

/// Makes `span` a child of the trace context found by `get` (header lookup). Missing or
/// malformed context leaves the span a root, which is what a message from outside deserves.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let carrier = Carrier { traceparent, tracestate };
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ignored_when_span_disabled = span.set_parent(context);
}

struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}
