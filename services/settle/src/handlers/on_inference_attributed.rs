//! `InferenceAttributed` → `SettlementAttributed`: the contributors' part a settlement held for
//! want of a receipt (`held:unattributed:<model>`), paid out by the receipt computed later.
//!
//! The release's id derives from the settlement's and its append expects an empty subject, so
//! a settlement is released at most once whatever is redelivered. A release and a reversal of
//! the same settlement may race (the settler and a finance user); each side appends first and
//! looks for the other after, so whichever comes second sees the first and the release is
//! reversed too ([`reverse_release_of`]).

use provenant_bus::{Bus, Context, Delivery, Envelope, Error as BusError, Expect, HandleError, Upcasters};
use provenant_events::money::Amount;
use provenant_events::proto::common::v1::Principal as ProtoPrincipal;
use provenant_events::proto::inference::v1::{AttributionReceipt, InferenceAttributed};
use provenant_events::proto::settlement::v1::{InferenceSettled, Posting, SettlementAttributed, SettlementReversed};
use sea_orm::DatabaseTransaction;

use super::Settler;
use super::on_inference_served::{check_receipt_for_model, derived_uuid, open_period_at, reversal_event_id, reversal_id_for};
use crate::domain::inference::{self, Refusal};
use crate::domain::period::Periods;
use crate::domain::split::{self, account};
use crate::projections::{catalog, inferences};

/// The release of settlement `settlement_id`'s held part (one at most).
pub fn release_id_for(settlement_id: &str) -> String {
    derived_uuid("release", settlement_id).to_string()
}

fn release_event_id(settlement_id: &str) -> uuid::Uuid {
    derived_uuid("release-event", settlement_id)
}

fn refuse(code: &'static str, message: impl Into<String>) -> HandleError {
    let refusal = Refusal::new(code, message);
    metrics::counter!("settle_attributions_refused_total", "code" => refusal.code).increment(1);
    HandleError::rejected(refusal.code, refusal.message)
}

fn transient(error: impl Into<anyhow::Error>) -> HandleError {
    HandleError::Transient(error.into())
}

pub async fn handle(settler: &Settler, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
    let event: InferenceAttributed = delivery.decode(&settler.upcasters)?;
    if !settler.settings.attributors.contains(&delivery.envelope.producer) {
        return Err(refuse(
            "attribution.unauthorised_producer",
            format!("producer {:?} may not attribute inferences", delivery.envelope.producer),
        ));
    }
    if event.request_id.is_empty() || event.request_id != delivery.envelope.aggregate_id {
        return Err(refuse("inference.request_id_mismatch", "the request id must be the event's aggregate id"));
    }
    let receipt = event.receipt.as_ref().ok_or_else(|| refuse("attribution.receipt_missing", "the event carries no receipt"))?;
    let checked = inference::check_receipt(receipt).map_err(|refusal| refuse(refusal.code, refusal.message))?;
    // The inference precedes its attribution on the subject, but a retried settlement can be
    // redelivered after it: wait for it (a refused inference ends here in the dead letters).
    // Its settlement may be one this batch appended: confirm those before reading the log.
    delivery.confirm_deferred().await?;
    let settled_row = inferences::find(transaction, &event.inference_event_id)
        .await?
        .ok_or_else(|| transient(anyhow::anyhow!("inference event {} is not settled (yet)", event.inference_event_id)))?;
    if settled_row.request_id != event.request_id {
        return Err(refuse("attribution.request_mismatch", "the inference event settled another request"));
    }
    let Some(settlement_id) = settled_row.settlement_id else {
        return Err(refuse("attribution.not_settled", "the inference event was not settled"));
    };
    let settled: InferenceSettled = settler
        .bus
        .last_delivery(Context::Settlement, "settlement", &settlement_id)
        .await
        .map_err(transient)?
        .ok_or_else(|| transient(anyhow::anyhow!("settlement {settlement_id} is not in the log")))?
        .decode(&Upcasters::contract())?;
    let held_account = account::unattributed(&settled.model_id);
    let Some(held) = settled.postings.iter().find(|posting| posting.account == held_account) else {
        // Attributed with the inference already, or nothing was held: nothing to pay out.
        metrics::counter!("settle_attributions_total", "outcome" => "nothing_held").increment(1);
        return Ok(());
    };
    let held = held
        .amount
        .as_ref()
        .map(Amount::from_proto)
        .transpose()
        .map_err(|error| refuse("settlement.posting_invalid", error.to_string()))?;
    let held = held.ok_or_else(|| refuse("settlement.posting_invalid", "the held posting has no amount"))?;
    let model = check_weights(transaction, &settled.model_id, receipt).await?;
    let datanet_ids = model.datanet_ids();
    let datanet_ids: Vec<&str> = datanet_ids.iter().map(String::as_str).collect();
    check_receipt_for_model(settler, transaction, &checked, &settled.model_id, &datanet_ids)
        .await?
        .map_err(|refusal| refuse(refusal.code, refusal.message))?;
    let lines = split::release_postings(held.minor_units, &settled.model_id, &checked)
        .map_err(|error| HandleError::rejected("settlement.allocation_failed", error))?;
    let periods = settler.settings.periods();
    let period_id = open_period_at(&settler.bus, periods, delivery.envelope.occurred_at).await.map_err(transient)?;
    let release = SettlementAttributed {
        settlement_id: release_id_for(&settlement_id),
        attributed_settlement_id: settlement_id.clone(),
        inference_event_id: event.inference_event_id.clone(),
        attribution_event_id: delivery.envelope.event_id.to_string(),
        request_id: event.request_id.clone(),
        model_id: settled.model_id.clone(),
        receipt_id: receipt.receipt_id.clone(),
        postings: lines
            .iter()
            .map(|line| Posting {
                account: line.account.clone(),
                amount: Some(Amount { minor_units: line.minor_units, ..held.clone() }.to_proto()),
                datanet_id: line.datanet_id.clone(),
            })
            .collect(),
        period_id,
    };
    let mut envelope = Envelope::new(&release, settler.bus.producer()).caused_by(&delivery.envelope);
    envelope.event_id = release_event_id(&settlement_id);
    match settler.bus.publish(&envelope, &release, Expect::NoEvents).await {
        Ok(_) => metrics::counter!("settle_attributions_total", "outcome" => "released").increment(1),
        Err(BusError::Conflict { .. }) => {
            let last = settler.bus.last_event(Context::Settlement, "settlement", &release.settlement_id).await.map_err(transient)?;
            if last.and_then(|(_, id)| id) != Some(envelope.event_id.to_string()) {
                return Err(refuse("settlement.conflict", "another event holds this release's subject"));
            }
        }
        Err(error) => return Err(transient(error)),
    }
    // A reversal of the settlement that came meanwhile takes the release back with it.
    if settler.bus.last_sequence(Context::Settlement, "settlement", &reversal_id_for(&settlement_id)).await.map_err(transient)?.is_some() {
        reverse_release_of(&settler.bus, periods, &settlement_id, None).await.map_err(transient)?;
    }
    Ok(())
}

/// The receipt must name the weights of the settled model (and of its base, for an adapter);
/// the model, for the checks that follow.
async fn check_weights(
    transaction: &DatabaseTransaction,
    model_id: &str,
    receipt: &AttributionReceipt,
) -> Result<catalog::models::Model, HandleError> {
    let model = catalog::find_model(transaction, model_id)
        .await?
        .ok_or_else(|| transient(anyhow::anyhow!("settled model {model_id} is not projected")))?;
    let (base_weights, adapter_weights) = if model.is_adapter() {
        let base = catalog::find_model(transaction, &model.base_model_id)
            .await?
            .ok_or_else(|| transient(anyhow::anyhow!("base model {} is not projected", model.base_model_id)))?;
        (base.weights_sha256, model.weights_sha256.clone())
    } else {
        (model.weights_sha256.clone(), String::new())
    };
    if receipt.model_weights_sha256 != base_weights || receipt.adapter_weights_sha256 != adapter_weights {
        return Err(refuse("attribution.weights_mismatch", format!("the receipt was not computed with the weights of {model_id}")));
    }
    Ok(model)
}

/// Reverses the release of `settlement_id`'s held part, if one was appended; a no-op when there
/// is none or it is reversed already. Called after a settlement's reversal (by the finance API)
/// and after a release whose settlement was reversed (by the settler).
pub(crate) async fn reverse_release_of(
    bus: &Bus,
    periods: Periods,
    settlement_id: &str,
    reversed_by: Option<ProtoPrincipal>,
) -> anyhow::Result<()> {
    let release_id = release_id_for(settlement_id);
    let Some(delivery) = bus.last_delivery(Context::Settlement, "settlement", &release_id).await? else {
        return Ok(());
    };
    let release: SettlementAttributed = delivery.decode(&Upcasters::contract())?;
    let mut postings = Vec::with_capacity(release.postings.len());
    for posting in &release.postings {
        let amount = posting.amount.as_ref().ok_or_else(|| anyhow::anyhow!("release {release_id} has a posting without an amount"))?;
        let amount = Amount::from_proto(amount)?;
        postings.push(Posting {
            account: posting.account.clone(),
            amount: Some(Amount { minor_units: -amount.minor_units, ..amount }.to_proto()),
            datanet_id: posting.datanet_id.clone(),
        });
    }
    let reversal = SettlementReversed {
        settlement_id: reversal_id_for(&release_id),
        reversed_settlement_id: release_id.clone(),
        reason: format!("the settlement it pays out ({settlement_id}) was reversed"),
        postings,
        period_id: open_period_at(bus, periods, chrono::Utc::now()).await?,
        reversed_by,
    };
    let mut envelope = Envelope::new(&reversal, bus.producer());
    envelope.event_id = reversal_event_id(&release_id);
    match bus.publish(&envelope, &reversal, Expect::NoEvents).await {
        Ok(_) | Err(BusError::Conflict { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
