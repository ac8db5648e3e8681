//! `ContributionApproved` (the owner's go-ahead), `ContributionAccepted` and
//! `ContributionRejected` (the validate service's verdicts, or the owner's refusal).

use provenant_bus::{Delivery, HandleError};
use provenant_events::proto::datanet::v1::{ContributionAccepted, ContributionApproved, ContributionRejected};
use sea_orm::DatabaseTransaction;

use crate::projections::contributions::{self, Decision};

pub async fn on_approved(transaction: &DatabaseTransaction, delivery: &Delivery, event: ContributionApproved) -> Result<(), HandleError> {
    if contributions::mark_approved(transaction, &event.contribution_id, delivery.stream_sequence).await? {
        Ok(())
    } else {
        Err(HandleError::rejected("contribution.not_awaiting_approval", format!("{} was not awaiting approval", event.contribution_id)))
    }
}

pub async fn on_accepted(transaction: &DatabaseTransaction, delivery: &Delivery, event: ContributionAccepted) -> Result<(), HandleError> {
    let decision = Decision::Accepted {
        quality_score_ppm: event.quality_score_ppm,
        duplicate_cluster_id: event.duplicate_cluster_id,
        flags: event.flags,
    };
    apply(transaction, delivery, &event.contribution_id, decision).await
}

pub async fn on_rejected(transaction: &DatabaseTransaction, delivery: &Delivery, event: ContributionRejected) -> Result<(), HandleError> {
    let reasons = event
        .reasons
        .iter()
        .map(|reason| serde_json::json!({ "code": reason.code, "message": reason.message, "record_index": reason.record_index }))
        .collect();
    apply(transaction, delivery, &event.contribution_id, Decision::Rejected { reasons: serde_json::Value::Array(reasons) }).await
}

async fn apply(
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    contribution_id: &str,
    decision: Decision,
) -> Result<(), HandleError> {
    let known =
        contributions::decide(transaction, contribution_id, decision, delivery.stream_sequence, delivery.envelope.occurred_at).await?;
    if known {
        Ok(())
    } else {
        Err(HandleError::rejected("contribution.unknown", format!("verdict on unknown contribution {contribution_id}")))
    }
}
