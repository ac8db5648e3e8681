use provenant_bus::{BlobStore, Delivery, HandleError};
use provenant_events::proto::datanet::v1::SnapshotSealed;
use sea_orm::{DatabaseTransaction, SqlErr};

use crate::domain::snapshot;
use crate::projections::snapshots;

/// Records a sealed snapshot and its entries, read from the manifest it names and checked
/// against its Merkle root: a snapshot whose manifest does not prove its root is refused.
pub async fn handle(
    blobs: &BlobStore,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: SnapshotSealed,
) -> Result<(), HandleError> {
    let manifest = event.manifest.as_ref().ok_or_else(|| HandleError::rejected("snapshot.manifest_missing", "no manifest reference"))?;
    let bytes = blobs
        .get(&manifest.sha256)
        .await
        .map_err(|error| HandleError::Transient(error.into()))?
        .ok_or_else(|| HandleError::rejected("snapshot.manifest_missing", format!("manifest {} is not stored", manifest.sha256)))?;
    let entries = snapshot::verified_entries(&bytes, &event.merkle_root, event.entry_count)
        .map_err(|error| HandleError::rejected(error.code(), error))?;
    let row = snapshots::Model {
        snapshot_id: event.snapshot_id.clone(),
        datanet_id: event.datanet_id,
        ordinal: i64::try_from(event.ordinal).unwrap_or(i64::MAX),
        merkle_root: event.merkle_root,
        entry_count: i64::try_from(event.entry_count).unwrap_or(i64::MAX),
        manifest_sha256: manifest.sha256.clone(),
        sealed_at: delivery.envelope.occurred_at,
    };
    match snapshots::insert(transaction, row, &entries).await {
        Ok(()) => Ok(()),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(HandleError::rejected("snapshot.ordinal_taken", format!("{} repeats an ordinal", event.snapshot_id)))
        }
        Err(error) => Err(error.into()),
    }
}
