//! `ContributionApproved` (the owner's go-ahead), `ContributionAccepted` and
//! `ContributionRejected` (the validate service's verdicts, or the owner's refusal).

use provenant_bus::{Delivery, HandleError};
use provenant_events::proto::datanet::v1::{ContributionAccepted, ContributionApproved, ContributionRejected};
use sea_orm::DatabaseTransaction;

use super::ContributionProjector;
use crate::projections::contributions::{self, Decision};

pub async fn on_approved(
    projector: &ContributionProjector,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionApproved,
) -> Result<(), HandleError> {
    let not_awaiting =
        || HandleError::rejected("contribution.not_awaiting_approval", format!("{} was not awaiting approval", event.contribution_id));
    let mut row = projector.current(transaction, &event.contribution_id).await?.ok_or_else(not_awaiting)?;
    if !contributions::approve(&mut row, delivery.stream_sequence) {
        return Err(not_awaiting());
    }
    projector.stage(row);
    Ok(())
}

pub async fn on_accepted(
    projector: &ContributionProjector,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionAccepted,
) -> Result<(), HandleError> {
    let decision = Decision::Accepted {
        quality_score_ppm: event.quality_score_ppm,
        duplicate_cluster_id: event.duplicate_cluster_id,
        flags: event.flags,
    };
    apply(projector, transaction, delivery, &event.contribution_id, decision).await
}

pub async fn on_rejected(
    projector: &ContributionProjector,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: ContributionRejected,
) -> Result<(), HandleError> {
    let reasons = event
        .reasons
        .iter()
        .map(|reason| serde_json::json!({ "code": reason.code, "message": reason.message, "record_index": reason.record_index }))
        .collect();
    apply(projector, transaction, delivery, &event.contribution_id, Decision::Rejected { reasons: serde_json::Value::Array(reasons) }).await
}

async fn apply(
    projector: &ContributionProjector,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    contribution_id: &str,
    decision: Decision,
) -> Result<(), HandleError> {
    let Some(mut row) = projector.current(transaction, contribution_id).await? else {
        return Err(HandleError::rejected("contribution.unknown", format!("verdict on unknown contribution {contribution_id}")));
    };
    contributions::decide(&mut row, decision, delivery.stream_sequence, delivery.envelope.occurred_at);
    projector.stage(row);
    Ok(())
}
