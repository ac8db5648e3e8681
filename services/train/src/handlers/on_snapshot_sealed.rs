use provenant_bus::HandleError;
use provenant_events::proto::datanet::v1::SnapshotSealed;
use sea_orm::{DatabaseTransaction, SqlErr};

use crate::projections::snapshots;

/// Records a sealed snapshot as pinnable. The manifest is checked against the root by the
/// worker that reads it, where the check protects the training data.
pub async fn handle(transaction: &DatabaseTransaction, event: SnapshotSealed) -> Result<(), HandleError> {
    let manifest = event.manifest.ok_or_else(|| HandleError::rejected("snapshot.manifest_missing", "no manifest reference"))?;
    let row = snapshots::Model {
        snapshot_id: event.snapshot_id.clone(),
        datanet_id: event.datanet_id,
        merkle_root: event.merkle_root,
        entry_count: i64::try_from(event.entry_count).unwrap_or(i64::MAX),
        manifest_sha256: manifest.sha256,
    };
    match snapshots::insert(transaction, row).await {
        Ok(()) => Ok(()),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(HandleError::rejected("snapshot.id_taken", format!("snapshot {} sealed twice", event.snapshot_id)))
        }
        Err(error) => Err(error.into()),
    }
}
