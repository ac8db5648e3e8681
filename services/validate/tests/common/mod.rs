//! Events as the ingest service would publish them, for the validate service's tests.

#![allow(dead_code, reason = "each test binary uses a different part")]

use provenant_bus::{Bus, Envelope, Expect};
use provenant_events::proto::common::v1::{BlobRef, Principal};
use provenant_events::proto::datanet::v1::{
    ContributionPolicy, ContributionSubmitted, DatanetCreated, DatanetSpec, PersonalDataAction, RecordFormat,
};

/// A plain-text Datanet owned by `owner`.
pub async fn create_datanet_with_policy(bus: &Bus, id: &str, personal_data: PersonalDataAction, policy: ContributionPolicy) {
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
            ..Default::default()
        }),
    };
    bus.publish(&Envelope::new(&event, "ingest"), &event, Expect::NoEvents).await.expect("datanet");
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
