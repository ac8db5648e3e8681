use anyhow::anyhow;
use provenant_bus::{Delivery, HandleError};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{ContributionApproved, ContributionSubmitted};
use sea_orm::DatabaseTransaction;

use super::ContributionValidator;
use super::on_contribution_submitted::judge;
use crate::projections::held;

/// The owner approved a held submission: judge it now, like any other.
pub async fn handle(
    validator: &ContributionValidator,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionApproved,
) -> Result<(), HandleError> {
    let Some(row) = held::release(transaction, &event.contribution_id).await? else {
        return Err(HandleError::rejected(
            "contribution.not_awaiting_approval",
            format!("{} is not held for approval", event.contribution_id),
        ));
    };
    // The held bytes are the original event as received; they are decoded, never re-encoded.
    let version = u32::try_from(row.schema_version).unwrap_or(1);
    let submission: ContributionSubmitted = validator.upcasters.decode_stored(ContributionSubmitted::TYPE, version, &row.submission)?;
    let contributor = submission.contributor.as_ref().map(|principal| principal.id.clone()).unwrap_or_default();
    let policy = validator
        .policy(transaction, &submission.datanet_id)
        .await?
        .ok_or_else(|| HandleError::Transient(anyhow!("rules of Datanet {} not known yet", submission.datanet_id)))?;
    judge(validator, transaction, delivery, submission, contributor, &policy).await
}
