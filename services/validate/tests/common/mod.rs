//! Events as the ingest service would publish them, for the validate service's tests.

#![allow(dead_code, reason = "each test binary uses a different part")]

use provenant_bus::{Bus, BusConfig, ConsumerConfig, Envelope, Expect};
use provenant_config::Secret;
use provenant_events::proto::common::v1::{BlobRef, Principal};
use provenant_events::proto::datanet::v1::{
    ContributionPolicy, ContributionSubmitted, DatanetCreated, DatanetSpec, PersonalDataAction, RecordFormat,
};
use provenant_test_support::{Backend, TestDatabase};
use validate::Config;

/// A plain-text Datanet owned by `owner`.
pub async fn create_datanet_with_policy(bus: &Bus, id: &str, personal_data: PersonalDataAction, policy: ContributionPolicy) {
    create_datanet_sealing_every(bus, id, personal_data, policy, 0).await;
}

/// A plain-text Datanet owned by `owner` that seals a snapshot after every `every` accepted.
pub async fn create_datanet_sealing_every(bus: &Bus, id: &str, personal_data: PersonalDataAction, policy: ContributionPolicy, every: u32) {
    let event = DatanetCreated {
        datanet_id: id.into(),
        owner: Some(Principal { id: "owner".into(), kind: 2 }),
        spec: Some(DatanetSpec {
            name: id.into(),
            licence_spdx: "CC0-1.0".into(),
            record_format: RecordFormat::PlainText.into(),
            visibility: 1,
            contribution_policy: policy.into(),
            personal_data_action: personal_data.into(),
            seal_every_accepted: every,
            ..Default::default()
        }),
    };
    bus.publish(&Envelope::new(&event, "ingest"), &event, Expect::NoEvents).await.expect("datanet");
}

/// Waits until the running validator's policy projection has applied every Datanet event
/// published so far. A submission whose Datanet's rules are not known yet is retried after a
/// backoff, and submissions made meanwhile are judged first: a test that needs contributions
/// accepted in the order it submits them waits for this before submitting.
pub async fn policies_caught_up(bus: &Bus) {
    let stream = bus.jetstream().get_stream(bus.namespace().stream(provenant_bus::Context::Datanet)).await.expect("stream");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let consumer =
            stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>(validate::handlers::PolicyProjector::NAME).await;
        if let Ok(mut consumer) = consumer
            && let Ok(info) = consumer.info().await
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the validator's policy projection did not catch up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Stores the content and submits it, as the ingest service does; returns the contribution id.
pub async fn submit(bus: &Bus, datanet: &str, contributor: &str, content: &[u8]) -> String {
    let stored = bus.blob_store("contributions").await.expect("bucket").put(content).await.expect("stored");
    let id = uuid::Uuid::now_v7().to_string();
    let event = ContributionSubmitted {
        contribution_id: id.clone(),
        datanet_id: datanet.into(),
        contributor: Some(Principal { id: contributor.into(), kind: 1 }),
        blob: Some(BlobRef {
            sha256: stored.sha256,
            size_bytes: stored.size_bytes,
            bucket: stored.bucket,
            media_type: "text/plain".into(),
        }),
        licence_spdx: "CC0-1.0".into(),
        record_format: RecordFormat::PlainText.into(),
        record_count: 1,
        file_name: String::new(),
    };
    bus.publish(&Envelope::new(&event, "ingest"), &event, Expect::NoEvents).await.expect("submitted");
    id
}

/// Consumer settings that make redelivery after a simulated crash take about a second.
pub fn fast_consumer() -> ConsumerConfig {
    ConsumerConfig { batch_size: 32, ack_wait_seconds: 1, max_deliver: 6, initial_backoff_ms: 50, max_backoff_ms: 300 }
}

/// The service's defaults on a free port, a fresh subject root and its own database.
pub async fn config(backend: Backend) -> (Config, TestDatabase) {
    provenant_test_support::init_logs();
    let database = TestDatabase::create(backend).await.expect("database");
    let layers = provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() };
    let mut config: Config = provenant_config::load_with(validate::BASE_YAML, &layers, std::iter::empty()).expect("defaults");
    config.http.port = 0;
    config.bus = BusConfig {
        subject_root: provenant_test_support::unique_root(),
        ..BusConfig::new(&provenant_test_support::nats_url(), "validate")
    };
    config.database.url = Secret::new(database.url.clone());
    config.consumer = fast_consumer();
    (config, database)
}
