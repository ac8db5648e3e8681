//! One trace across NATS: the span that publishes an event is the parent of the consumer's
//! span that applies it. (Its own test binary: it installs the global subscriber.)

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use provenant_bus::{Consumer, Envelope, Expect};
use provenant_test_support::Backend;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn a_trace_started_at_publish_continues_in_the_consumers_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this test binary");

    let bus = shared_bus().await;
    let (_test_database, database) = database(Backend::Sqlite).await;
    let event = created("traced-1", "traced");
    async {
        bus.publish(&Envelope::new(&event, "test"), &event, Expect::NoEvents).await.expect("publishes");
    }
    .instrument(tracing::info_span!("contribution_request"))
    .await;

    let consumer = Consumer::new(bus.clone(), database.clone(), CountingProjection::new("traced"), fast_consumer());
    let shutdown = provenant_runtime::Shutdown::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { consumer.run(async move { stop.cancelled().await }).await });
    eventually(Duration::from_secs(20), "event applied", || async { counts(&database).await.len() == 1 }).await;
    shutdown.cancel();
    task.await.expect("task").expect("consumer");
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let request = spans.iter().find(|span| span.name == "contribution_request").expect("request span exported");
    let handled = spans.iter().find(|span| span.name == "handle_event").expect("consumer span exported");
    assert_eq!(handled.span_context.trace_id(), request.span_context.trace_id(), "same trace");
    assert_eq!(handled.parent_span_id, request.span_context.span_id(), "the consumer span is a child of the publishing span");
}
