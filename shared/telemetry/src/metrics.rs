//! Prometheus metrics. Code records with the `metrics` macros anywhere; each process installs
//! one recorder and serves its text exposition on `/metrics` (see `provenant-runtime`).

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. The all-in-one binary runs
/// every service in one process, so they share it (each metric carries a `service` label
/// where it matters).
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Durations as histograms (aggregatable across replicas, unlike summaries), with
        // buckets from a millisecond (a settlement) to two minutes (a cold model load).
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
            .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full("infer_batch_rows".to_owned()), &ROWS_BUCKETS))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then ours only renders
        // what is recorded through it, which is nothing, and that is visible in tests.
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    prometheus().render()
}

const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];
const ROWS_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Help text for every metric the services record, so that the exposition is lint-clean for
/// Prometheus tooling (`promtool check metrics`, which the tests run) and readable on its own.
fn describe() {
    describe_counter!("http_requests_total", "HTTP API requests answered, by service, method, route template and status");
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP API request, by service, method and route template"
    );
    describe_counter!("bus_events_published_total", "Events appended to the log, by event type");
    describe_counter!("bus_events_applied_total", "Events a consumer applied to its projection, by consumer");
    describe_counter!(
        "bus_events_ignored_total",
        "Events of types a consumer does not handle, acknowledged without a processed-event row, by consumer"
    );
    describe_counter!("bus_events_duplicate_total", "Redelivered events a consumer recognised and did not apply again, by consumer");
    describe_counter!("bus_redeliveries_total", "Events a consumer sent back for a later retry after a transient failure, by consumer");
    describe_counter!(
        "bus_dead_letters_total",
        "Events a consumer gave up on and recorded in the dead-letter stream, by consumer and reason code"
    );
    describe_counter!(
        "bus_store_fills_total",
        "Times a projection found its store lacking events the server saw it acknowledge and refilled it from the log, by consumer"
    );
    describe_gauge!(
        "bus_consumer_pending",
        "Messages of its stream still waiting for the consumer after the last one it received, by consumer"
    );
    describe_counter!("train_steps_total", "Optimiser steps this process trained");
    describe_gauge!("train_loss", "Training loss of the last step this process trained");
    describe_gauge!("train_tokens_per_second", "Training throughput of the last step this process trained");
    describe_counter!("train_jobs_finished_total", "Training jobs this process finished, by outcome (completed, failed)");
    describe_counter!("infer_requests_served_total", "Completions served, by whether an adapter served them");
    describe_counter!("infer_tokens_total", "Prompt and generated tokens, by kind");
    describe_histogram!("infer_batch_rows", "Requests decoded together in one forward pass");
    describe_counter!("infer_model_cache_hits_total", "Model and adapter lookups answered from memory");
    describe_counter!("infer_model_loads_total", "Models and adapters loaded from the object store");
    describe_histogram!("infer_model_load_seconds", Unit::Seconds, "Time to load a model or adapter from the object store");
    describe_counter!("infer_adapter_evictions_total", "Adapters evicted from memory to make room");
    describe_histogram!("infer_receipt_seconds", Unit::Seconds, "Time to compute an attribution receipt within a request");
    describe_counter!("infer_receipts_failed_total", "Answers served without a receipt because attribution failed");
    describe_counter!("infer_late_receipts_total", "Receipts computed after the fact for inference events that came without one");
    describe_counter!("infer_late_receipts_refused_total", "Inference events the late-receipt consumer refused, by reason code");
    describe_counter!("settle_inferences_settled_total", "Inference events settled into the ledger, by currency");
    describe_counter!("settle_inferences_refused_total", "Inference events the settler refused, by reason code");
    describe_counter!("settle_attributions_total", "Late receipts the settler handled, by outcome");
    describe_counter!("settle_attributions_refused_total", "Late receipts the settler refused, by reason code");
    describe_counter!("settle_reviews_total", "Events recorded for a finance review (an event id seen again with another body), by code");
}
