//! Event handlers: one file per consumed event, dispatched by the durable consumers that keep
//! the projections in step with the Datanet stream: [`DatanetProjector`] (Datanet aggregates →
//! `projections::datanets`) and [`ContributionProjector`] (contribution aggregates →
//! `projections::contributions`).

mod on_contribution_decided;
mod on_contribution_submitted;
mod on_datanet_created;
mod on_datanet_updated;

use std::collections::{BTreeMap, HashMap, HashSet};

use provenant_bus::{Context, Deferred, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{
    ContributionAccepted, ContributionApproved, ContributionRejected, ContributionSubmitted, DatanetCreated, DatanetUpdated,
};
use sea_orm::{DatabaseTransaction, DbErr};

use crate::projections::{contributions, datanets};

/// Durable consumer of Datanet aggregate events into the `datanets` projection.
#[derive(Debug, Clone)]
pub struct DatanetProjector {
    upcasters: Upcasters,
}

impl DatanetProjector {
    pub const NAME: &'static str = "ingest-datanets";

    pub fn new() -> DatanetProjector {
        DatanetProjector { upcasters: Upcasters::contract() }
    }
}

impl Default for DatanetProjector {
    fn default() -> Self {
        DatanetProjector::new()
    }
}

impl Handler for DatanetProjector {
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
        match delivery.envelope.event_type.as_str() {
            DatanetCreated::TYPE => on_datanet_created::handle(transaction, delivery, delivery.decode(&self.upcasters)?).await,
            DatanetUpdated::TYPE => on_datanet_updated::handle(transaction, delivery, delivery.decode(&self.upcasters)?).await,
            // A later event type on this aggregate is not this projection's concern.
            _ => Ok(()),
        }
    }
}

/// Durable consumer of contribution aggregate events into the `contributions` projection.
/// Contributions and their status. A batch's rows are written together at its end (one read of
/// the rows its events name, one upsert), so that a submission costs no statement of its own.
#[derive(Debug, Clone, Default)]
pub struct ContributionProjector {
    upcasters: Upcasters,
    batch: Deferred<ContributionBatch>,
}

/// What the contribution projector keeps while it applies a batch.
#[derive(Debug, Default)]
struct ContributionBatch {
    /// Rows as the batch has left them, not written yet.
    staged: BTreeMap<String, contributions::Model>,
    /// The contributions whose stored rows were read for the whole batch (`prepare`) ...
    looked_up: HashSet<String>,
    /// ... those of them that exist, and the rows the batch wrote.
    stored: HashMap<String, contributions::Model>,
    /// Datanets read this batch (their contribution policy).
    datanets: HashMap<String, Option<datanets::Model>>,
}

impl ContributionProjector {
    pub const NAME: &'static str = "ingest-contributions";

    pub fn new() -> ContributionProjector {
        ContributionProjector { upcasters: Upcasters::contract(), batch: Deferred::default() }
    }

    /// Contribution `id` as the batch has left it so far: staged, else as stored.
    pub(crate) async fn current(&self, transaction: &DatabaseTransaction, id: &str) -> Result<Option<contributions::Model>, DbErr> {
        let known = self.batch.with(|batch| {
            let row = batch.staged.get(id).or_else(|| batch.stored.get(id)).cloned();
            row.map(Some).or_else(|| batch.looked_up.contains(id).then_some(None))
        });
        match known {
            Some(known) => Ok(known),
            None => contributions::find(transaction, id).await,
        }
    }

    /// Keeps `row` (new or changed) for the end of the batch.
    pub(crate) fn stage(&self, row: contributions::Model) {
        self.batch.with(|batch| batch.staged.insert(row.id.clone(), row));
    }

    /// Datanet `id`, read once per batch.
    pub(crate) async fn datanet(&self, transaction: &DatabaseTransaction, id: &str) -> Result<Option<datanets::Model>, DbErr> {
        if let Some(known) = self.batch.with(|batch| batch.datanets.get(id).cloned()) {
            return Ok(known);
        }
        let found = datanets::find(transaction, id).await?;
        self.batch.with(|batch| batch.datanets.insert(id.to_owned(), found.clone()));
        Ok(found)
    }
}

impl Handler for ContributionProjector {
    fn name(&self) -> &str {
        ContributionProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "contribution")]
    }

    async fn prepare(&self, transaction: &DatabaseTransaction, deliveries: &[&Delivery]) -> Result<(), HandleError> {
        // A contribution event's aggregate is its contribution; one that names another is
        // looked up on its own.
        let ids: Vec<String> = deliveries.iter().map(|delivery| delivery.envelope.aggregate_id.clone()).collect();
        let stored = contributions::find_all(transaction, &ids).await?;
        self.batch.with(|batch| {
            batch.looked_up.extend(ids);
            batch.stored.extend(stored.into_iter().map(|row| (row.id.clone(), row)));
        });
        Ok(())
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            ContributionSubmitted::TYPE => {
                on_contribution_submitted::handle(self, transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionApproved::TYPE => {
                on_contribution_decided::on_approved(self, transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionAccepted::TYPE => {
                on_contribution_decided::on_accepted(self, transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionRejected::TYPE => {
                on_contribution_decided::on_rejected(self, transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            _ => Ok(()),
        }
    }

    async fn flush(&self, transaction: &DatabaseTransaction) -> Result<(), HandleError> {
        let staged = self.batch.with(|batch| std::mem::take(&mut batch.staged));
        contributions::save_all(transaction, staged.values().cloned().collect()).await?;
        self.batch.with(|batch| batch.stored.extend(staged));
        Ok(())
    }

    fn discard(&self) {
        self.batch.reset();
    }
}
