//! `http_requests_total` and `http_request_duration_seconds` for every API route.
//!
//! Labelled by the matched route's template (`/v1/datanets/{datanet_id}`), never the raw path,
//! so that ids do not each make a series of their own. Added with `route_layer`, it sees only
//! requests that matched a route; a 404 for an unknown path is not counted.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware: `instrument_api` puts it on every API route.
pub async fn record(State(service): State<std::sync::Arc<str>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let service = service.to_string();
    metrics::histogram!("http_request_duration_seconds", "service" => service.clone(), "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "service" => service, "method" => method, "route" => route, "status" => status).increment(1);
    response
}
