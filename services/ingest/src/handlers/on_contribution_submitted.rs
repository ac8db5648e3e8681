use provenant_bus::{Delivery, HandleError};
use provenant_events::proto::datanet::v1::{ContributionSubmitted, RecordFormat};
use sea_orm::DatabaseTransaction;

use super::ContributionProjector;
use crate::domain::datanet::parse_principal_id;
use crate::projections::contributions::{self, Submitted};

pub async fn handle(
    projector: &ContributionProjector,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionSubmitted,
) -> Result<(), HandleError> {
    let contributor = event.contributor.as_ref().map(|contributor| contributor.id.as_str()).unwrap_or_default();
    let contributor = parse_principal_id(contributor).map_err(|error| HandleError::rejected(error.code, error))?;
    let blob = event.blob.as_ref().ok_or_else(|| HandleError::rejected("contribution.blob_missing", "no content reference"))?;
    if blob.sha256.len() != 64 || !blob.sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(HandleError::rejected("contribution.hash_invalid", "content hash is not a SHA-256"));
    }
    let record_format = match event.record_format() {
        RecordFormat::PlainText => "plain_text",
        RecordFormat::JsonLines => "json_lines",
        RecordFormat::Unspecified => return Err(HandleError::rejected("contribution.record_format_missing", "record format unspecified")),
    };
    let submitted = Submitted {
        id: &event.contribution_id,
        datanet_id: &event.datanet_id,
        contributor_id: &contributor,
        content_sha256: &blob.sha256,
        size_bytes: blob.size_bytes,
        record_count: event.record_count,
        record_format,
        file_name: Some(event.file_name.as_str()).filter(|name| !name.is_empty()),
    };
    let Some(datanet) = projector.datanet(transaction, &event.datanet_id).await? else {
        // The Datanet's events travel through the other consumer and may not be applied yet.
        return Err(HandleError::Transient(anyhow::anyhow!("Datanet {} not in the read model yet", event.datanet_id)));
    };
    if projector.current(transaction, &event.contribution_id).await?.is_some() {
        return Err(HandleError::rejected("contribution.already_exists", format!("contribution {} exists", event.contribution_id)));
    }
    let awaiting_approval = datanet.contribution_policy == "owner_approval";
    // Written with the rest of the batch (`ContributionProjector::flush`).
    projector.count_usage(&contributor, delivery.envelope.occurred_at, blob.size_bytes);
    projector.stage(contributions::submitted_row(submitted, awaiting_approval, delivery.stream_sequence, delivery.envelope.occurred_at));
    Ok(())
}
