//! A server span for every API request, continuing the caller's W3C trace context.
//!
//! A client that sends `traceparent` (and `tracestate`) gets the request's span as a child of
//! its own; the events the handler publishes carry that context on (`provenant_bus`), so one
//! trace runs from the caller through every service that reacts. Without the header the
//! request starts a trace of its own. Named like OpenTelemetry's HTTP server spans:
//! `POST /v1/datanets/{datanet_id}/contributions`, with the route template, never the raw
//! path, and the response status.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The middleware: `instrument_api` puts it on every API route.
pub async fn trace(State(service): State<Arc<str>>, request: Request, next: Next) -> Response {
    let span = request_span(&service, &request);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // OpenTelemetry's rule for servers: a 4xx is the caller's error, not the span's.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

fn request_span(service: &str, request: &Request) -> tracing::Span {
    let method = request.method().as_str();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http_request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        service,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let header = |name: &str| request.headers().get(name).and_then(|value| value.to_str().ok());
    provenant_telemetry::propagation::continue_trace(&span, header("traceparent"), header("tracestate"));
    span
}
