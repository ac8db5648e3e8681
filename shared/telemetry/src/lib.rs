//! Telemetry for every Provenant process: `tracing` logs (pretty or JSON), an OpenTelemetry
//! OTLP span exporter switched on by configuration, W3C trace context carried across NATS in
//! message headers ([`propagation`]), and Prometheus metrics ([`metrics`]).
//!
//! Start with [`init`]; keep the returned [`Telemetry`] and call [`Telemetry::shutdown`] last,
//! so buffered spans are flushed before the process exits.

pub mod metrics;
pub mod propagation;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter for logs; `RUST_LOG` itself overrides it when set.
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// OTLP/HTTP endpoint ("http://collector:4318/v1/traces"); no spans are exported when absent.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { log_format: LogFormat::Pretty, log_filter: default_log_filter(), otlp_endpoint: None }
    }
}

/// sqlx logs every statement at INFO and async-nats is chatty on reconnects.
fn default_log_filter() -> String {
    "info,sqlx=warn,sea_orm=warn,async_nats=warn".to_owned()
}

/// The handle that owns the span exporter; dropping it without [`Telemetry::shutdown`] loses
/// the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber for `service`. Call once per process, before anything logs.
pub fn init(service: &str, config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    install_crypto_provider();
    // Install the metrics recorder before anything records: earlier samples would be lost.
    metrics::prometheus();
    let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_filter.clone());
    let log_layer = match config.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).boxed(),
    }
    .with_filter(EnvFilter::try_new(&log_filter).context("invalid log filter")?);

    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(service, endpoint)?),
        None => None,
    };
    // The span layer has its own filter, so a quiet log level does not silence the spans.
    let span_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service.to_owned()))
            .with_filter(EnvFilter::new("info,sqlx=warn,sea_orm=warn,async_nats=warn,h2=warn,hyper=warn"))
    });
    tracing_subscriber::registry()
        .with(log_layer)
        .with(span_layer)
        .try_init()
        .context("a global tracing subscriber is already installed")?;
    Ok(Telemetry { provider })
}

fn otlp_provider(service: &str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    // The blocking client runs on the batch processor's own thread; the async one panicked
    // there with "no reactor running" and dropped every span (see shared/DESIGN.md).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .context("failed to build the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build())
}

/// reqwest is built without a default TLS provider; rustls needs one chosen before any client
/// (ours or the OTLP exporter's) is built, or it panics. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

impl Telemetry {
    /// Flushes and stops the span exporter. The flush blocks on HTTP, so it runs off the
    /// runtime's worker threads.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(provider) = self.provider {
            tokio::task::spawn_blocking(move || provider.shutdown())
                .await
                .context("span flush task panicked")?
                .context("failed to flush spans")?;
        }
        Ok(())
    }
}
