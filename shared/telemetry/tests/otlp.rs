//! With an OTLP endpoint configured, spans reach it over OTLP/HTTP (protobuf) by the time
//! `shutdown` returns. The receiver is a real HTTP server in the test process.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use provenant_telemetry::{LogFormat, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_configured_otlp_endpoint_and_flushed_on_shutdown() {
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let content_type = headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
                sink.lock().expect("lock").push((content_type, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = TelemetryConfig { log_format: LogFormat::Json, log_filter: "warn".into(), otlp_endpoint: Some(endpoint) };
    let telemetry = provenant_telemetry::init("otlp-test", &config).expect("initialises");
    // The span layer has its own filter: a quiet log level must not silence spans.
    tracing::info_span!("contribution_received", contribution = "c-1").in_scope(|| tracing::info!("inside"));
    telemetry.shutdown().await.expect("flushes");

    let received = received.lock().expect("lock");
    assert!(!received.is_empty(), "no OTLP request arrived");
    let (content_type, body) = &received[0];
    assert_eq!(content_type, "application/x-protobuf");
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|window| window == needle);
    assert!(contains(b"contribution_received"), "the span's name is in the export");
    assert!(contains(b"otlp-test"), "the service name is in the resource");
}
