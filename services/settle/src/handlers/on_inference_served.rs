//! `InferenceServed` → checks → `InferenceSettled`.
//!
//! The settlement's id and event id derive from the inference event's id, and the append
//! expects an empty subject: a retry after a crash (before or after the append) finds its own
//! settlement and adds nothing, so each inference event is settled exactly once.

use provenant_bus::{Bus, Context, Delivery, Envelope, Error as BusError, Expect, HandleError};
use provenant_events::money::Amount;
use provenant_events::proto::inference::v1::InferenceServed;
use provenant_events::proto::settlement::v1::{InferenceSettled, Posting};
use sea_orm::DatabaseTransaction;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::Settler;
use crate::domain::inference::{self, CheckedInference, CheckedReceipt, Refusal};
use crate::domain::period::Periods;
use crate::domain::split::{self, Parties, PinnedDatanet};
use crate::projections::{catalog, inferences, policies};

pub async fn handle(settler: &Settler, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
    let event: InferenceServed = delivery.decode(&settler.upcasters)?;
    let inference_event_id = delivery.envelope.event_id.to_string();
    let checked = inference::check(&event, &delivery.envelope.producer, &delivery.envelope.aggregate_id, settler.settings.limits())
        .map_err(refuse)?;
    let model_ids: Vec<&str> =
        std::iter::once(checked.base_model_id.as_str()).chain(checked.adapter.as_ref().map(|(adapter, _)| adapter.as_str())).collect();
    if !settler.settings.authorises(&delivery.envelope.producer, &model_ids) {
        return Err(refuse(Refusal::new(
            "inference.unauthorised_producer",
            format!("producer {:?} may not report inferences of {}", delivery.envelope.producer, model_ids.join(" + ")),
        )));
    }
    if let Some(earlier) = settled_event_of(settler, transaction, &checked.request_id).await?
        && earlier != inference_event_id
    {
        return Err(refuse(Refusal::new(
            "inference.request_conflict",
            format!("request {:?} was already settled from event {earlier}", checked.request_id),
        )));
    }
    let parties = parties(settler, transaction, &checked).await?;
    if let Some(receipt) = &checked.receipt {
        let datanet_ids: Vec<&str> = parties.datanets.iter().map(|datanet| datanet.datanet_id.as_str()).collect();
        check_receipt_for_model(settler, transaction, receipt, &parties.model_id, &datanet_ids).await?.map_err(refuse)?;
    }
    let policy = match governing_policy(settler, transaction, &checked).await? {
        Some(row) => row.policy()?,
        None => settler.default_policy.clone(),
    };
    let lines = split::postings(checked.fee.minor_units, &checked.caller_id, &policy, &parties, checked.receipt.as_ref())
        .map_err(|error| HandleError::rejected("settlement.allocation_failed", error))?;
    let settlement_id = settlement_id_for(&inference_event_id);
    let settled = InferenceSettled {
        settlement_id: settlement_id.clone(),
        inference_event_id: inference_event_id.clone(),
        request_id: checked.request_id.clone(),
        model_id: checked.settled_model_id().to_owned(),
        fee: Some(checked.fee.to_proto()),
        revenue_policy_version: policy.version,
        postings: lines
            .iter()
            .map(|line| Posting {
                account: line.account.clone(),
                amount: Some(Amount { minor_units: line.minor_units, ..checked.fee.clone() }.to_proto()),
                datanet_id: line.datanet_id.clone(),
            })
            .collect(),
        period_id: open_period(settler, delivery).await?,
    };
    append(settler, delivery, &settled).await?;
    let row = inferences::settled::Model {
        inference_event_id: inference_event_id.clone(),
        request_id: checked.request_id.clone(),
        payload_sha256: hex::encode(Sha256::digest(&delivery.payload)),
        settlement_id: Some(settlement_id),
    };
    // Written with the rest of the batch (`Settler::flush`).
    settler.requests.with(|known| known.insert(checked.request_id.clone(), Some(inference_event_id)));
    settler.settled.with(|settled| settled.push(row));
    metrics::counter!("settle_inferences_settled_total", "currency" => checked.fee.currency.clone()).increment(1);
    Ok(())
}

/// The inference event `request_id` was settled from, if any: what the batch settled or looked
/// up (`Settler::prepare`), else the database.
async fn settled_event_of(settler: &Settler, transaction: &DatabaseTransaction, request_id: &str) -> Result<Option<String>, HandleError> {
    let load =
        || async { Ok::<_, sea_orm::DbErr>(inferences::find_by_request(transaction, request_id).await?.map(|row| row.inference_event_id)) };
    Ok(settler.requests.get_or_load(&request_id.to_owned(), load).await?)
}

/// The policy governing the answer, read once per batch for each pair of models.
async fn governing_policy(
    settler: &Settler,
    transaction: &DatabaseTransaction,
    checked: &CheckedInference,
) -> Result<Option<policies::Model>, HandleError> {
    let key = (checked.settled_model_id().to_owned(), checked.base_model_id.clone());
    Ok(settler.policies.get_or_load(&key, || policies::governing(transaction, &key.0, &key.1)).await?)
}

/// An inference event id seen again: if its body differs from the one settled, that is recorded
/// for review (the first body stands; nothing is paid twice).
pub async fn on_duplicate(transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
    let inference_event_id = delivery.envelope.event_id.to_string();
    let Some(settled) = inferences::find(transaction, &inference_event_id).await? else {
        return Ok(());
    };
    let payload_sha256 = hex::encode(Sha256::digest(&delivery.payload));
    if settled.payload_sha256 != payload_sha256 {
        tracing::warn!(%inference_event_id, "an inference event id came again with a different body; recorded for review");
        metrics::counter!("settle_reviews_total", "code" => "inference.conflicting_duplicate").increment(1);
        let detail = format!("settled body sha256 {}, this body sha256 {payload_sha256}", settled.payload_sha256);
        inferences::insert_review(transaction, "inference.conflicting_duplicate", &inference_event_id, &detail, delivery.stream_sequence)
            .await?;
    }
    Ok(())
}

/// The settlement of an inference event (UUIDv8 from its id).
pub fn settlement_id_for(inference_event_id: &str) -> String {
    derived_uuid("settlement", inference_event_id).to_string()
}

/// The reversal of a settlement (one at most).
pub fn reversal_id_for(settlement_id: &str) -> String {
    derived_uuid("reversal", settlement_id).to_string()
}

/// The event id of that reversal's `SettlementReversed`.
pub fn reversal_event_id(settlement_id: &str) -> Uuid {
    derived_uuid("reversal-event", settlement_id)
}

/// The event id of that settlement's `InferenceSettled`.
pub fn settlement_event_id(inference_event_id: &str) -> Uuid {
    derived_uuid("settlement-event", inference_event_id)
}

pub(super) fn derived_uuid(purpose: &str, source_id: &str) -> Uuid {
    let digest = Sha256::new().chain_update(purpose).chain_update([0]).chain_update(source_id).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// The period a settlement belongs to: the period (a calendar month in UTC by default) the
/// inference was served in, or, when that period is closed already, the next one that is not.
async fn open_period(settler: &Settler, delivery: &Delivery) -> Result<String, HandleError> {
    open_period_at(&settler.bus, settler.settings.periods(), delivery.envelope.occurred_at)
        .await
        .map_err(|error| HandleError::Transient(error.into()))
}

/// The first period from the one holding `instant` that is not closed. Read from the stream,
/// not a projection, so that a just-closed period is seen; skipped while the period cannot have
/// been closed yet (a period closes only its grace after it ends), which is nearly every event
/// for monthly periods, so that the common case costs no round trip.
pub(crate) async fn open_period_at(bus: &Bus, periods: Periods, instant: chrono::DateTime<chrono::Utc>) -> Result<String, BusError> {
    let mut period = periods.containing(instant);
    if chrono::Utc::now() + CLOCK_SKEW < period.ends_at() + periods.close_grace {
        return Ok(period.id());
    }
    while bus.last_sequence(Context::Settlement, "period", &period.id()).await?.is_some() {
        period = period.next();
    }
    Ok(period.id())
}

/// How far the closer's clock may run ahead of the settler's.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

fn refuse(refusal: Refusal) -> HandleError {
    metrics::counter!("settle_inferences_refused_total", "code" => refusal.code).increment(1);
    HandleError::rejected(refusal.code, refusal.message)
}

/// The builder and Datanet owners of the settled model, after checking that the event names
/// registered models with their registered weights. A model the stream has but the catalogue
/// does not yet is a lag (retry); one the stream lacks is refused.
async fn parties(settler: &Settler, transaction: &DatabaseTransaction, checked: &CheckedInference) -> Result<Parties, HandleError> {
    let base = known_model(settler, transaction, &checked.base_model_id).await?;
    if base.is_adapter() {
        return Err(refuse(Refusal::new("inference.not_a_base", format!("{} is an adapter, not a base model", base.model_id))));
    }
    if base.weights_sha256 != checked.base_weights_sha256 {
        return Err(refuse(Refusal::new("inference.weights_mismatch", format!("the base weights are not those of {}", base.model_id))));
    }
    let settled = match &checked.adapter {
        None => base,
        Some((adapter_id, weights)) => {
            let adapter = known_model(settler, transaction, adapter_id).await?;
            if !adapter.is_adapter() || adapter.base_model_id != base.model_id {
                return Err(refuse(Refusal::new(
                    "inference.not_an_adapter",
                    format!("{adapter_id} is not an adapter of {}", base.model_id),
                )));
            }
            if &adapter.weights_sha256 != weights {
                return Err(refuse(Refusal::new(
                    "inference.weights_mismatch",
                    format!("the adapter weights are not those of {adapter_id}"),
                )));
            }
            adapter
        }
    };
    Ok(Parties {
        datanets: pinned_datanets(settler, transaction, &settled).await?,
        model_id: settled.model_id,
        builder_id: settled.builder_id,
    })
}

/// The model's Datanets with their owners, in Datanet id order.
async fn pinned_datanets(
    settler: &Settler,
    transaction: &DatabaseTransaction,
    model: &catalog::models::Model,
) -> Result<Vec<PinnedDatanet>, HandleError> {
    let mut snapshots: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for datanet_id in model.datanet_ids() {
        *snapshots.entry(datanet_id).or_default() += 1;
    }
    let mut datanets = Vec::with_capacity(snapshots.len());
    for (datanet_id, snapshots) in snapshots {
        let owner_id = settler
            .catalog
            .datanet_owner(transaction, &datanet_id)
            .await?
            .ok_or_else(|| HandleError::Transient(anyhow::anyhow!("Datanet {datanet_id} is not projected yet")))?;
        datanets.push(PinnedDatanet { datanet_id, owner_id, snapshots });
    }
    Ok(datanets)
}

/// A receipt pays only for the model it was computed for (`model_id`, trained on
/// `datanet_ids`; the adapter for an adapter's answer), with the inference or late:
/// - a share may name only one of the model's Datanets (or none), else it would credit a
///   Datanet with revenue it did not earn;
/// - it must name an attribution index the training service built for the model, else its
///   shares may come from another model's examples.
///
/// The outer error is a failure to look (a lag in the index projection is retried: an index the
/// log has but the projection lacks); the inner one a refusal, which each caller counts as its own.
pub(super) async fn check_receipt_for_model(
    settler: &Settler,
    transaction: &DatabaseTransaction,
    receipt: &CheckedReceipt,
    model_id: &str,
    datanet_ids: &[&str],
) -> Result<Result<(), Refusal>, HandleError> {
    let foreign = receipt.shares.iter().find(|share| !share.datanet_id.is_empty() && !datanet_ids.contains(&share.datanet_id.as_str()));
    if let Some(share) = foreign {
        return Ok(Err(Refusal::new(
            "inference.receipt_datanet_unknown",
            format!(
                "the receipt credits {} through Datanet {:?}, which model {model_id} was not trained on",
                share.contributor_id, share.datanet_id
            ),
        )));
    }
    if receipt.index_sha256.is_empty() {
        return Ok(Err(Refusal::new("inference.receipt_index_unknown", "the receipt names no attribution index")));
    }
    let mut models = settler.catalog.index_models(transaction, &receipt.index_sha256).await?;
    if models.is_empty() {
        // Every index the log announced is projected once the projection holds as many; only
        // then is one missing from it unknown. The index is looked up again after the count:
        // under PostgreSQL's read committed each statement reads afresh, so an index projected
        // since the first lookup is in the count, and must then be found too.
        let announced =
            settler.bus.count_messages(Context::Training, "index").await.map_err(|error| HandleError::Transient(error.into()))?;
        if catalog::count_indexes(transaction).await? < announced {
            return Err(HandleError::Transient(anyhow::anyhow!("index {} is not projected (yet)", receipt.index_sha256)));
        }
        models = settler.catalog.index_models(transaction, &receipt.index_sha256).await?;
    }
    if models.iter().any(|indexed| indexed == model_id) {
        return Ok(Ok(()));
    }
    if !models.is_empty() {
        return Ok(Err(Refusal::new(
            "inference.receipt_index_mismatch",
            format!("index {} was built for {}, not for {model_id}", receipt.index_sha256, models.join(", ")),
        )));
    }
    Ok(Err(Refusal::new("inference.receipt_index_unknown", format!("no attribution index {} was built", receipt.index_sha256))))
}

async fn known_model(settler: &Settler, transaction: &DatabaseTransaction, model_id: &str) -> Result<catalog::models::Model, HandleError> {
    if let Some(model) = settler.catalog.model(transaction, model_id).await? {
        return Ok(model);
    }
    match settler.bus.last_sequence(Context::Training, "model", model_id).await {
        Ok(Some(_)) => Err(HandleError::Transient(anyhow::anyhow!("model {model_id} is registered but not projected yet"))),
        Ok(None) => Err(refuse(Refusal::new("inference.unknown_model", format!("no model {model_id} is registered")))),
        // An id that cannot even form a subject names no model.
        Err(BusError::Event(_)) => Err(refuse(Refusal::new("inference.unknown_model", format!("no model {model_id:?} is registered")))),
        Err(error) => Err(HandleError::Transient(error.into())),
    }
}

/// Sends the settlement and leaves its confirmation to the batch (see `provenant_bus::Outbox`):
/// a retry that finds its own earlier append there is fine; another event there is not.
async fn append(settler: &Settler, delivery: &Delivery, settled: &InferenceSettled) -> Result<(), HandleError> {
    let mut envelope = Envelope::new(settled, settler.bus.producer()).caused_by(&delivery.envelope);
    envelope.event_id = settlement_event_id(&settled.inference_event_id);
    let pending = settler.bus.send(&envelope, settled, Expect::NoEvents).await.map_err(|error| HandleError::Transient(error.into()))?;
    delivery.confirm_append_before_commit(
        &settler.bus,
        pending,
        "settlement.conflict",
        "another event holds this settlement's subject".into(),
    );
    Ok(())
}
