//! Sealing a Datanet's accepted contributions into its next snapshot: on the owner's request
//! (the API), or by the Datanet's policy, after every N accepted contributions (the validator).
//!
//! The next ordinal comes from the stream, never from the read model alone (which may lag):
//! starting after the newest snapshot the read model knows, every ordinal whose subject already
//! holds an event is skipped, and the publish is conditional on the subject being empty. An
//! ordinal that already holds the very event being sealed (same event id) is an earlier attempt
//! that got through: it is the answer, so a retried policy seal never seals twice.

use std::collections::HashSet;

use provenant_bus::{BlobStore, Bus, Context, Envelope, Error as BusError, Expect, StoredBlob, Upcasters};
use provenant_events::proto::common::v1::{BlobRef, Principal};
use provenant_events::proto::datanet::v1::SnapshotSealed;
use sea_orm::{ConnectionTrait, DbErr};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::snapshot::{self, Entry};
use crate::projections::{accepted, snapshots};

/// Ordinals probed before giving up: far more than concurrent seals of one Datanet can take.
const MAX_PROBES: u32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the Datanet has no accepted contribution yet")]
    Empty,
    #[error("no free ordinal after {MAX_PROBES} probes")]
    Contended,
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("object store: {0}")]
    Blobs(anyhow::Error),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The snapshot to extend is missing or does not verify: sealing after it would break the chain.
    #[error("the previous snapshot cannot be read: {0}")]
    Unreadable(String),
}

/// Seals the Datanet's next snapshot, as event `event_id`: the entries of the snapshot it follows,
/// in their order, then every contribution of `accepted` (in that order) not among them. So each
/// snapshot extends the one before it, even when contributions were accepted out of submission
/// order (a submission retried for want of its Datanet's rules is overtaken by later ones), and an
/// inclusion proof's leaf index never changes from one snapshot to the next.
///
/// The snapshot followed is read from the stream and its manifest, never from the read model,
/// which may not have projected it yet.
pub async fn seal(
    bus: &Bus,
    manifests: &BlobStore,
    database: &impl ConnectionTrait,
    datanet_id: &str,
    accepted: &[Entry],
    sealed_by: Principal,
    event_id: Uuid,
) -> Result<SnapshotSealed, SealError> {
    if accepted.is_empty() {
        return Err(SealError::Empty);
    }
    let known = snapshots::latest(database, datanet_id).await?;
    let mut ordinal = known.map_or(1, |latest| u64::try_from(latest.ordinal).unwrap_or(0) + 1);
    // The entries built for an ordinal, and their stored manifest: a conflict on publishing
    // probes the same ordinal again and reuses them.
    let mut built: Option<(u64, Vec<Entry>, StoredBlob)> = None;
    for _ in 0..MAX_PROBES {
        let snapshot_id = format!("{datanet_id}-{ordinal}");
        match bus.last_event(Context::Datanet, "snapshot", &snapshot_id).await? {
            Some((_, Some(existing))) if existing == event_id.to_string() => return sealed_event(bus, &snapshot_id).await,
            Some(_) => {
                ordinal += 1;
                continue;
            }
            None => {}
        }
        if built.as_ref().is_none_or(|(built_for, ..)| *built_for != ordinal) {
            let previous =
                if ordinal > 1 { entries_of_sealed(bus, manifests, &format!("{datanet_id}-{}", ordinal - 1)).await? } else { Vec::new() };
            let entries = extend(previous, accepted);
            let stored = manifests.put(&snapshot::manifest(&entries)).await.map_err(|error| SealError::Blobs(error.into()))?;
            built = Some((ordinal, entries, stored));
        }
        let (_, entries, stored) = built.as_ref().expect("built for this ordinal above");
        let event = SnapshotSealed {
            snapshot_id: snapshot_id.clone(),
            datanet_id: datanet_id.to_owned(),
            ordinal,
            merkle_root: hex::encode(snapshot::root(entries)),
            entry_count: entries.len() as u64,
            manifest: Some(BlobRef {
                sha256: stored.sha256.clone(),
                size_bytes: stored.size_bytes,
                bucket: stored.bucket.clone(),
                media_type: "application/x-ndjson".to_owned(),
            }),
            sealed_by: Some(sealed_by.clone()),
            previous_snapshot_id: if ordinal > 1 { format!("{datanet_id}-{}", ordinal - 1) } else { String::new() },
        };
        let mut envelope = Envelope::new(&event, bus.producer());
        envelope.event_id = event_id;
        match bus.publish(&envelope, &event, Expect::NoEvents).await {
            Ok(_) => return Ok(event),
            // Taken between the probe and the publish: probe it again (it may be ours).
            Err(BusError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(SealError::Contended)
}

/// `previous` in its order, then the entries of `accepted` it lacks, in theirs.
fn extend(mut previous: Vec<Entry>, accepted: &[Entry]) -> Vec<Entry> {
    let included: HashSet<String> = previous.iter().map(|entry| entry.contribution_id.clone()).collect();
    previous.extend(accepted.iter().filter(|entry| !included.contains(&entry.contribution_id)).cloned());
    previous
}

/// The sealed snapshot `snapshot_id` as the stream holds it.
async fn sealed_event(bus: &Bus, snapshot_id: &str) -> Result<SnapshotSealed, SealError> {
    let delivery = bus
        .last_delivery(Context::Datanet, "snapshot", snapshot_id)
        .await?
        .ok_or_else(|| SealError::Unreadable(format!("{snapshot_id} is not in the stream")))?;
    delivery.decode(&Upcasters::contract()).map_err(|error| SealError::Unreadable(format!("{snapshot_id}: {error}")))
}

/// The entries of the sealed snapshot `snapshot_id`, from its manifest, checked against its root.
async fn entries_of_sealed(bus: &Bus, manifests: &BlobStore, snapshot_id: &str) -> Result<Vec<Entry>, SealError> {
    let sealed = sealed_event(bus, snapshot_id).await?;
    let reference = sealed.manifest.ok_or_else(|| SealError::Unreadable(format!("{snapshot_id} names no manifest")))?;
    let bytes = manifests
        .get(&reference.sha256)
        .await
        .map_err(|error| SealError::Blobs(error.into()))?
        .ok_or_else(|| SealError::Unreadable(format!("the manifest of {snapshot_id} is not stored")))?;
    snapshot::verified_entries(&bytes, &sealed.merkle_root, sealed.entry_count)
        .map_err(|error| SealError::Unreadable(format!("the manifest of {snapshot_id}: {error}")))
}

/// The policy "seal after every `every` accepted contributions", applied right after one more
/// was accepted (inside the validator's transaction, so the count includes it). The snapshot
/// holds the `count` accepted contributions (the previous snapshot's, then the rest), and its event id is a function of the
/// Datanet and that count, so a retry after a crash finds the snapshot it already sealed.
pub async fn seal_by_policy(
    bus: &Bus,
    manifests: &BlobStore,
    database: &impl ConnectionTrait,
    datanet_id: &str,
    every: u64,
) -> Result<Option<SnapshotSealed>, SealError> {
    let count = accepted::count(database, datanet_id).await?;
    if every == 0 || count == 0 || count % every != 0 {
        return Ok(None);
    }
    let covered =
        snapshots::latest(database, datanet_id).await?.is_some_and(|latest| u64::try_from(latest.entry_count).unwrap_or(0) >= count);
    if covered {
        return Ok(None); // the owner sealed these (or more) already
    }
    let entries: Vec<Entry> = accepted::all_in_order(database, datanet_id).await?.into_iter().map(Entry::from).collect();
    let digest = Sha256::digest(format!("validate-policy-seal:{datanet_id}:{count}"));
    let event_id = Uuid::new_v8(digest[..16].try_into().expect("a SHA-256 has 32 bytes"));
    let sealed_by = Principal { id: "validate".to_owned(), kind: provenant_events::proto::common::v1::PrincipalKind::Service.into() };
    seal(bus, manifests, database, datanet_id, &entries, sealed_by, event_id).await.map(Some)
}
