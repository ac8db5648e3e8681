//! What a worker reads before it trains, straight from the event log and the object store
//! (a worker needs no database): the pinned snapshots, checked against their roots, the
//! Datanets' record formats, the contributions' contents, and a registered base model.

use std::collections::HashMap;

use futures::{StreamExt as _, TryStreamExt as _};
use model::{Device, ModelConfig, Transformer};
use provenant_bus::{BlobStore, Bus, Context, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{DatanetCreated, DatanetUpdated, SnapshotSealed};
use provenant_events::proto::training::v1::{self as proto, ModelKind, ModelRegistered};
use provenant_events::snapshot;

use super::JobError;
use crate::domain::examples::SnapshotData;
use crate::domain::spec::Pin;

/// Contents fetched at once from the object store.
const CONCURRENT_READS: usize = 16;

/// The pinned snapshots' verified entries, and the pins as lineage records them.
pub async fn snapshots(bus: &Bus, manifests: &BlobStore, pins: &[Pin]) -> Result<(Vec<SnapshotData>, Vec<proto::SnapshotPin>), JobError> {
    let upcasters = Upcasters::contract();
    let mut data = Vec::with_capacity(pins.len());
    let mut lineage = Vec::with_capacity(pins.len());
    for pin in pins {
        let delivery = bus
            .last_delivery(Context::Datanet, "snapshot", &pin.snapshot_id)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::fail("snapshot.not_found", format!("no sealed snapshot {}", pin.snapshot_id)))?;
        let sealed: SnapshotSealed = delivery.decode(&upcasters).map_err(|error| JobError::fail("snapshot.unreadable", error))?;
        if sealed.merkle_root != pin.merkle_root {
            return Err(JobError::fail(
                "snapshot.root_mismatch",
                format!("{} has root {}, the job pinned {}", pin.snapshot_id, sealed.merkle_root, pin.merkle_root),
            ));
        }
        let manifest = sealed.manifest.as_ref().ok_or_else(|| JobError::fail("snapshot.manifest_missing", "no manifest reference"))?;
        let bytes = manifests
            .get(&manifest.sha256)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::fail("snapshot.manifest_missing", format!("manifest {} is not stored", manifest.sha256)))?;
        let entries = snapshot::verified_entries(&bytes, &sealed.merkle_root, sealed.entry_count)
            .map_err(|error| JobError::fail(error.code(), format!("the manifest of {}: {error}", pin.snapshot_id)))?;
        let format = record_format(bus, &upcasters, &sealed.datanet_id).await?;
        lineage.push(proto::SnapshotPin {
            snapshot_id: pin.snapshot_id.clone(),
            datanet_id: sealed.datanet_id.clone(),
            merkle_root: sealed.merkle_root.clone(),
        });
        data.push(SnapshotData { snapshot_id: pin.snapshot_id.clone(), datanet_id: sealed.datanet_id.clone(), format, entries });
    }
    Ok((data, lineage))
}

async fn record_format(bus: &Bus, upcasters: &Upcasters, datanet_id: &str) -> Result<crate::domain::examples::RecordFormat, JobError> {
    let delivery = bus
        .last_delivery(Context::Datanet, "datanet", datanet_id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::fail("datanet.not_found", format!("no Datanet {datanet_id}")))?;
    let spec = match delivery.envelope.event_type.as_str() {
        DatanetCreated::TYPE => delivery.decode::<DatanetCreated>(upcasters).map(|event| event.spec),
        DatanetUpdated::TYPE => delivery.decode::<DatanetUpdated>(upcasters).map(|event| event.spec),
        other => return Err(JobError::fail("datanet.unreadable", format!("unexpected {other}"))),
    }
    .map_err(|error| JobError::fail("datanet.unreadable", error))?;
    spec.as_ref().and_then(crate::handlers::record_format).ok_or_else(|| JobError::fail("datanet.unreadable", "no record format"))
}

/// The content of every entry, by SHA-256.
pub async fn contents(contributions: &BlobStore, snapshots: &[SnapshotData]) -> Result<HashMap<String, Vec<u8>>, JobError> {
    let mut hashes: Vec<&str> =
        snapshots.iter().flat_map(|snapshot| snapshot.entries.iter().map(|entry| entry.content_sha256.as_str())).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let hashes: Vec<String> = hashes.into_iter().map(str::to_owned).collect();
    futures::stream::iter(hashes)
        .map(|sha256: String| {
            let contributions = contributions.clone();
            async move {
                let bytes = contributions
                    .get(&sha256)
                    .await
                    .map_err(JobError::transient)?
                    .ok_or_else(|| JobError::fail("data.content_missing", format!("content {sha256} is not stored")))?;
                Ok::<_, JobError>((sha256, bytes.to_vec()))
            }
        })
        .buffer_unordered(CONCURRENT_READS)
        .try_collect()
        .await
}

/// A registered base model, loaded on `device`, and its registration.
pub async fn base_model(
    bus: &Bus,
    models: &BlobStore,
    model_id: &str,
    device: &Device,
) -> Result<(Transformer, ModelRegistered), JobError> {
    let delivery = bus
        .last_delivery(Context::Training, "model", model_id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::fail("model.not_found", format!("no registered model {model_id}")))?;
    let registered: ModelRegistered = delivery.decode(&Upcasters::contract()).map_err(|error| JobError::fail("model.unreadable", error))?;
    if registered.kind() != ModelKind::Base {
        return Err(JobError::fail("job.base_is_adapter", format!("{model_id} is an adapter, not a base model")));
    }
    let fetch = |blob: Option<&provenant_events::proto::common::v1::BlobRef>, what: &'static str| {
        let sha256 = blob.map(|blob| blob.sha256.clone()).unwrap_or_default();
        async move {
            models
                .get(&sha256)
                .await
                .map_err(JobError::transient)?
                .ok_or_else(|| JobError::fail("model.artifact_missing", format!("the {what} of {model_id} is not stored")))
        }
    };
    let config_bytes = fetch(registered.config.as_ref(), "config").await?;
    let config: ModelConfig = serde_json::from_slice(&config_bytes).map_err(|error| JobError::fail("model.unreadable", error))?;
    let weights = fetch(registered.weights.as_ref(), "weights").await?;
    let model = Transformer::from_bytes(&config, &weights, device).map_err(|error| JobError::fail("model.unreadable", error))?;
    Ok((model, registered))
}
