//! Event handlers behind seven durable consumers: four keep what settlement must know
//! ([`ModelProjector`], [`IndexProjector`], [`DatanetProjector`], [`PolicyProjector`]),
//! [`Settler`] judges each
//! `InferenceServed` and appends its `InferenceSettled` (and each late `InferenceAttributed`,
//! appending the `SettlementAttributed` that pays out what was held), [`LedgerProjector`] books
//! every settlement into the double-entry ledger, and [`PeriodProjector`] keeps closed periods and
//! their reports.
//!
//! The decision (which policy, which parties, which postings) is made once and recorded in the
//! log as `InferenceSettled`; the ledger is built from those events alone, so replaying the log
//! reproduces it exactly even though policies may change between the two.

mod on_inference_attributed;
mod on_inference_served;
mod on_inference_settled;

use std::collections::HashMap;

use provenant_bus::{Bus, Context, Deferred, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::DatanetCreated;
use provenant_events::proto::inference::v1::{InferenceAttributed, InferenceServed};
use provenant_events::proto::settlement::v1::{
    InferenceSettled, RevenuePolicySet, SettlementAttributed, SettlementPeriodClosed, SettlementReportIssued, SettlementReversed,
};
use provenant_events::proto::training::v1::{AttributionIndexBuilt, ModelKind, ModelRegistered};
use sea_orm::DatabaseTransaction;

use crate::configuration::SettlementConfig;
use crate::domain::policy::{PolicyError, RevenuePolicy};
use crate::projections::periods::{self, Artifact};
use crate::projections::{catalog, policies};

pub use on_inference_attributed::release_id_for;
pub(crate) use on_inference_attributed::reverse_release_of;
pub(crate) use on_inference_served::open_period_at;
pub use on_inference_served::{reversal_event_id, reversal_id_for, settlement_event_id, settlement_id_for};

/// Registered models (`ModelRegistered`): kind, weights digest, builder, pinned Datanets.
#[derive(Debug, Clone, Default)]
pub struct ModelProjector {
    upcasters: Upcasters,
}

impl ModelProjector {
    pub const NAME: &'static str = "settle-models";
}

impl Handler for ModelProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        ModelProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Training
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Training, "model")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.envelope.event_type != ModelRegistered::TYPE {
            return Ok(());
        }
        let event: ModelRegistered = delivery.decode(&self.upcasters)?;
        let kind = match event.kind() {
            ModelKind::Base => "base",
            ModelKind::Adapter => "adapter",
            ModelKind::Unspecified => return Err(HandleError::rejected("model.kind_missing", "a registered model without a kind")),
        };
        let datanet_ids: Vec<String> =
            event.lineage.iter().flat_map(|lineage| &lineage.snapshots).map(|pin| pin.datanet_id.clone()).collect();
        let row = catalog::models::Model {
            model_id: event.model_id,
            kind: kind.to_owned(),
            base_model_id: event.base_model_id,
            weights_sha256: event.weights.map(|weights| weights.sha256).unwrap_or_default(),
            builder_id: event.owner.map(|owner| owner.id).unwrap_or_default(),
            datanet_ids: serde_json::to_string(&datanet_ids).unwrap_or_else(|_| "[]".into()),
        };
        catalog::insert_model(transaction, row).await?;
        Ok(())
    }
}

/// Attribution indexes (`AttributionIndexBuilt`): which model each index digest belongs to, so
/// that the settler pays a receipt only when it names an index of the model that answered.
#[derive(Debug, Clone, Default)]
pub struct IndexProjector {
    upcasters: Upcasters,
}

impl IndexProjector {
    pub const NAME: &'static str = "settle-indexes";
}

impl Handler for IndexProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        IndexProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Training
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Training, "index")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.envelope.event_type != AttributionIndexBuilt::TYPE {
            return Ok(());
        }
        let event: AttributionIndexBuilt = delivery.decode(&self.upcasters)?;
        if event.model_id.is_empty() || event.index_sha256.is_empty() {
            return Err(HandleError::rejected("index.incomplete", "an attribution index without its model or digest"));
        }
        let row = catalog::indexes::Model { index_id: event.index_id, model_id: event.model_id, index_sha256: event.index_sha256 };
        catalog::insert_index(transaction, row).await?;
        Ok(())
    }
}

/// Datanet owners (`DatanetCreated`; ownership does not change).
#[derive(Debug, Clone, Default)]
pub struct DatanetProjector {
    upcasters: Upcasters,
}

impl DatanetProjector {
    pub const NAME: &'static str = "settle-datanets";
}

impl Handler for DatanetProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        DatanetProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "datanet")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.envelope.event_type != DatanetCreated::TYPE {
            return Ok(());
        }
        let event: DatanetCreated = delivery.decode(&self.upcasters)?;
        let owner = event.owner.map(|owner| owner.id).unwrap_or_default();
        catalog::insert_datanet(transaction, &event.datanet_id, &owner).await?;
        Ok(())
    }
}

/// Each model's latest revenue-share policy (`RevenuePolicySet`), checked again on the way in:
/// a policy whose parts are not one whole never moves money.
#[derive(Debug, Clone, Default)]
pub struct PolicyProjector {
    upcasters: Upcasters,
}

impl PolicyProjector {
    pub const NAME: &'static str = "settle-policies";
}

impl Handler for PolicyProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        PolicyProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Settlement
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Settlement, "policy")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        let event: RevenuePolicySet = delivery.decode(&self.upcasters)?;
        let policy = RevenuePolicy::from_proto(event.version, &event.parts)
            .map_err(|error: PolicyError| HandleError::rejected(error.code(), error))?;
        let set_by = event.set_by.map(|principal| principal.id).unwrap_or_default();
        policies::upsert(transaction, &event.model_id, &policy, &set_by, delivery.stream_sequence).await?;
        Ok(())
    }
}

/// Judges every `InferenceServed` (ours and external producers') and appends its
/// `InferenceSettled`, and every `InferenceAttributed` (a receipt computed after the fact) and
/// appends the `SettlementAttributed` that pays out what was held; refused events go to the
/// dead-letter stream with their reason.
#[derive(Clone)]
pub struct Settler {
    pub(crate) bus: Bus,
    pub(crate) settings: SettlementConfig,
    pub(crate) default_policy: RevenuePolicy,
    pub(crate) upcasters: Upcasters,
    /// Models and Datanet owners, asked for with every inference and never changed.
    pub(crate) catalog: std::sync::Arc<catalog::Cache>,
    /// What the settler keeps while it applies a batch, so that a batch of settlements costs a
    /// few statements rather than three per settlement: settled inferences not written yet ...
    pub(crate) settled: Deferred<Vec<crate::projections::inferences::settled::Model>>,
    /// ... the event each request was settled from (`None`: not settled), read for the whole
    /// batch in `prepare` or when first asked, and set by the batch's own settlements ...
    pub(crate) requests: Deferred<HashMap<String, Option<String>>>,
    /// ... and the policy governing each (settled model, base model) answer, read once per
    /// batch: a policy set meanwhile governs the next batch, as it would a later event.
    pub(crate) policies: Deferred<HashMap<(String, String), Option<policies::Model>>>,
}

impl Settler {
    pub const NAME: &'static str = "settle-inferences";

    pub fn new(bus: Bus, settings: SettlementConfig) -> Result<Settler, PolicyError> {
        let default_policy = settings.default_policy()?;
        Ok(Settler {
            bus,
            settings,
            default_policy,
            upcasters: Upcasters::contract(),
            catalog: std::sync::Arc::default(),
            settled: Deferred::default(),
            requests: Deferred::default(),
            policies: Deferred::default(),
        })
    }
}

impl Handler for Settler {
    fn name(&self) -> &str {
        Settler::NAME
    }

    fn context(&self) -> Context {
        Context::Inference
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Inference, "request")]
    }

    async fn prepare(&self, transaction: &DatabaseTransaction, deliveries: &[&Delivery]) -> Result<(), HandleError> {
        // An inference event's aggregate is its request (`inference::check` refuses any other).
        let requests: Vec<String> = deliveries
            .iter()
            .filter(|delivery| delivery.envelope.event_type == InferenceServed::TYPE)
            .map(|delivery| delivery.envelope.aggregate_id.clone())
            .collect();
        let settled = crate::projections::inferences::find_by_requests(transaction, &requests).await?;
        self.requests.with(|known| {
            known.extend(requests.into_iter().map(|request| (request, None)));
            known.extend(settled.into_iter().map(|row| (row.request_id, Some(row.inference_event_id))));
        });
        Ok(())
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            InferenceServed::TYPE => on_inference_served::handle(self, transaction, delivery).await,
            // A receipt computed after the fact pays out what the settlement held for it.
            InferenceAttributed::TYPE => {
                self.flush(transaction).await?;
                on_inference_attributed::handle(self, transaction, delivery).await
            }
            _ => Ok(()),
        }
    }

    async fn on_duplicate(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        self.flush(transaction).await?;
        on_inference_served::on_duplicate(transaction, delivery).await
    }

    async fn flush(&self, transaction: &DatabaseTransaction) -> Result<(), HandleError> {
        crate::projections::inferences::insert_settled(transaction, self.settled.take()).await?;
        Ok(())
    }

    fn discard(&self) {
        self.settled.reset();
        self.requests.reset();
        self.policies.reset();
    }
}

/// Books every `InferenceSettled`, release (`SettlementAttributed`) and reversal into the ledger,
/// and follows period closes (`SettlementPeriodClosed`) so that a settlement the settler appended
/// while its period was being closed is booked in the next open period, not lost after the
/// closed one's report.
///
/// Settlements, nearly every event, are written together at the end of their batch (a few
/// statements for hundreds of them); any other event first writes those before it, since it
/// reads the ledger or changes where settlements are booked.
#[derive(Debug, Clone, Default)]
pub struct LedgerProjector {
    upcasters: Upcasters,
    /// Settlements not written yet, in stream order ...
    entries: Deferred<Vec<crate::projections::ledger::Entry>>,
    /// ... and the booking period of each period a settlement named (they change only with a
    /// close, which writes and forgets both first).
    booking: Deferred<HashMap<String, String>>,
}

impl LedgerProjector {
    pub const NAME: &'static str = "settle-ledger";
}

impl Handler for LedgerProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        LedgerProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Settlement
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Settlement, "settlement"), namespace.aggregate_filter(Context::Settlement, "period")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.envelope.event_type == InferenceSettled::TYPE {
            let event: InferenceSettled = delivery.decode(&self.upcasters)?;
            let named = &event.period_id;
            let period_id = self.booking.get_or_load(named, || crate::projections::ledger::booking_period(transaction, named)).await?;
            let entry = on_inference_settled::settlement_entry(delivery, event, period_id)?;
            self.entries.with(|entries| entries.push(entry));
            return Ok(());
        }
        // What follows reads the ledger or moves settlements between periods.
        self.flush(transaction).await?;
        self.booking.reset();
        match delivery.envelope.event_type.as_str() {
            SettlementPeriodClosed::TYPE => {
                let event: SettlementPeriodClosed = delivery.decode(&self.upcasters)?;
                let through = i64::try_from(event.through_sequence).unwrap_or(i64::MAX);
                let moved = crate::projections::ledger::close_period(transaction, &event.period_id, through).await?;
                if moved > 0 {
                    tracing::info!(period_id = %event.period_id, moved, "settlements appended during the close go to the next open period");
                }
                Ok(())
            }
            SettlementReversed::TYPE => {
                let event: SettlementReversed = delivery.decode(&self.upcasters)?;
                on_inference_settled::handle_reversal(transaction, delivery, event).await
            }
            SettlementAttributed::TYPE => {
                let event: SettlementAttributed = delivery.decode(&self.upcasters)?;
                on_inference_settled::handle_release(transaction, delivery, event).await
            }
            _ => Ok(()),
        }
    }

    async fn flush(&self, transaction: &DatabaseTransaction) -> Result<(), HandleError> {
        let entries = self.entries.take();
        if !entries.is_empty() {
            crate::projections::ledger::record_all(transaction, entries).await?;
        }
        Ok(())
    }

    fn discard(&self) {
        self.entries.reset();
        self.booking.reset();
    }
}

/// Closed periods (`SettlementPeriodClosed`) and their reports (`SettlementReportIssued`).
#[derive(Debug, Clone, Default)]
pub struct PeriodProjector {
    upcasters: Upcasters,
}

impl PeriodProjector {
    pub const NAME: &'static str = "settle-periods";
}

impl Handler for PeriodProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        PeriodProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Settlement
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Settlement, "period"), namespace.aggregate_filter(Context::Settlement, "report")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            SettlementPeriodClosed::TYPE => {
                let event: SettlementPeriodClosed = delivery.decode(&self.upcasters)?;
                let row = periods::Model {
                    period_id: event.period_id,
                    starts_at: event.starts_at,
                    ends_at: event.ends_at,
                    through_sequence: i64::try_from(event.through_sequence).unwrap_or(i64::MAX),
                    settlement_count: i64::try_from(event.settlement_count).unwrap_or(i64::MAX),
                    closed_by: event.closed_by.map(|principal| principal.id).unwrap_or_default(),
                    report_sha256: None,
                    artifacts: "[]".into(),
                };
                periods::insert_closed(transaction, row).await?;
                Ok(())
            }
            SettlementReportIssued::TYPE => {
                let event: SettlementReportIssued = delivery.decode(&self.upcasters)?;
                let artifacts: Vec<Artifact> = event.artifacts.iter().filter_map(Artifact::from_proto).collect();
                if periods::record_report(transaction, &event.period_id, &event.report_sha256, &artifacts).await? {
                    Ok(())
                } else {
                    Err(HandleError::rejected(
                        "report.period_not_closed",
                        format!("a report for period {} before its close", event.period_id),
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}
