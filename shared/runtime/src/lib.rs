//! Process plumbing every service shares: the shutdown signal and token, the health,
//! readiness and metrics routes, serving an axum router until shutdown, and the HTTP API
//! conventions (errors with stable codes, API-key identity, keyset pagination).
//!
//! Shutdown lives here: [`shutdown_signal`] resolves on the first SIGTERM or SIGINT (a second
//! one exits at once); services receive a [`Shutdown`] token, stop pulling new work when it
//! fires, finish and ack what is in flight, then return.

pub mod allocator;
pub mod api_error;
pub mod identity;
pub mod openapi;
pub mod pagination;
pub mod read_your_writes;
pub mod request_metrics;
pub mod request_trace;

pub use api_error::{ApiError, ApiJson};

/// Puts every API route of `service` in its server span ([`request_trace`]) and counts and
/// times it ([`request_metrics`]). Added with `route_layer`, so a 404 for an unknown path is
/// neither traced nor counted.
pub fn instrument_api(routes: Router, service: &str) -> Router {
    // A process without an API (a training worker) has nothing to wrap, and axum refuses to.
    if !routes.has_routes() {
        return routes;
    }
    let service = Arc::<str>::from(service);
    routes
        .route_layer(axum::middleware::from_fn_with_state(service.clone(), request_metrics::record))
        .route_layer(axum::middleware::from_fn_with_state(service, request_trace::trace))
}

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken as Shutdown;
use tracing::{info, warn};

/// Resolves on the first SIGTERM or SIGINT. A second signal exits the process at once, for
/// an operator who does not want to wait for in-flight work.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    info!("shutdown requested, finishing in-flight work (signal again to exit now)");
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second signal, exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM, only SIGINT stops this process");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// A token that fires when `signal` resolves.
pub fn shutdown_on(signal: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    let token = Shutdown::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    token
}

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Named checks that must all pass before the process takes traffic (NATS connected,
/// database reachable, …). Liveness only says the process answers.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

#[derive(Serialize)]
struct CheckReport {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Readiness {
    #[must_use]
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Readiness
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    async fn report(&self) -> (bool, Vec<CheckReport>) {
        let mut reports = Vec::with_capacity(self.checks.len());
        for (name, check) in &self.checks {
            let result = check().await;
            reports.push(CheckReport { name, ok: result.is_ok(), error: result.err() });
        }
        (reports.iter().all(|report| report.ok), reports)
    }
}

/// `/health/live`, `/health/ready` and `/metrics` (Prometheus text format).
pub fn operational_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health/live", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route(
            "/health/ready",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let (ready, checks) = readiness.report().await;
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    let body = serde_json::json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": checks });
                    (status, axum::Json(body)).into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], provenant_telemetry::metrics::render()) }),
        )
}

/// Serves `router` on `listener` until `shutdown` fires, then lets open requests finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Where a service listens for HTTP.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub host: String,
    /// 0 picks a free port (tests); the bound address is reported by the application.
    pub port: u16,
}

impl HttpConfig {
    /// Binds now, so that a taken port fails at boot rather than after connecting everything.
    pub async fn bind(&self) -> std::io::Result<TcpListener> {
        TcpListener::bind((self.host.as_str(), self.port)).await
    }
}

/// `--dump-openapi`: prints the service's OpenAPI document (JSON), for client generators.
#[allow(clippy::print_stdout, reason = "the document is the command's output")]
pub fn print_openapi(api: &utoipa::openapi::OpenApi) -> anyhow::Result<()> {
    println!("{}", api.to_pretty_json()?);
    Ok(())
}

/// `--dump-config`: prints the effective configuration, secrets redacted.
#[allow(clippy::print_stdout, reason = "the dump is the command's output")]
pub fn print_config<T: Serialize>(config: &T) -> anyhow::Result<()> {
    println!("{}", provenant_config::dump(config)?);
    Ok(())
}
