//! Prometheus metrics. Code records with the `metrics` macros anywhere; each process installs
//! one recorder and serves its text exposition on `/metrics` (see `provenant-runtime`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. The all-in-one binary runs
/// every service in one process, so they share it (each metric carries a `service` label
/// where it matters).
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then ours only renders
        // what is recorded through it, which is nothing, and that is visible in tests.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    prometheus().render()
}
