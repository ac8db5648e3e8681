//! Event handlers: one file per consumed event, dispatched by the durable consumers that keep
//! the projections in step with the Datanet stream: [`DatanetProjector`] (Datanet aggregates →
//! `projections::datanets`) and [`ContributionProjector`] (contribution aggregates →
//! `projections::contributions`).

mod on_contribution_decided;
mod on_contribution_submitted;
mod on_datanet_created;
mod on_datanet_updated;

use std::collections::{BTreeSet, HashMap};

use provenant_bus::{Context, Deferred, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{
    ContributionAccepted, ContributionApproved, ContributionRejected, ContributionSubmitted, DatanetCreated, DatanetUpdated,
};
use sea_orm::{DatabaseTransaction, DbErr};

use crate::projections::{contributions, daily_usage, datanets};

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
        match delivery.envelope.event_type.as_str() {
            DatanetCreated::TYPE => on_datanet_created::handle(transaction, delivery, delivery.decode(&self.upcasters)?).await,
            DatanetUpdated::TYPE => on_datanet_updated::handle(transaction, delivery, delivery.decode(&self.upcasters)?).await,
            // A later event type on this aggregate is not this projection's concern.
            _ => Ok(()),
        }
    }
}

/// Durable consumer of contribution aggregate events into the `contributions` projection. A
/// batch's rows are written together at its end (one read of the rows its events name, one
/// upsert), so that a submission costs no statement of its own.
#[derive(Debug, Clone, Default)]
pub struct ContributionProjector {
    upcasters: Upcasters,
    /// Each contribution the batch names as the batch has left it so far (`None`: none such),
    /// read for the whole batch in `prepare` or when first asked ...
    rows: Deferred<HashMap<String, Option<contributions::Model>>>,
    /// ... the ids of those it changed, to write at its end ...
    staged: Deferred<BTreeSet<String>>,
    /// ... the Datanets it read (their contribution policy) ...
    datanets: Deferred<HashMap<String, Option<datanets::Model>>>,
    /// ... and what its submissions add to their contributors' daily quotas.
    usage: Deferred<daily_usage::Additions>,
}

impl ContributionProjector {
    pub const NAME: &'static str = "ingest-contributions";

    pub fn new() -> ContributionProjector {
        ContributionProjector { upcasters: Upcasters::contract(), ..ContributionProjector::default() }
    }

    /// Contribution `id` as the batch has left it so far.
    pub(crate) async fn current(&self, transaction: &DatabaseTransaction, id: &str) -> Result<Option<contributions::Model>, DbErr> {
        self.rows.get_or_load(&id.to_owned(), || contributions::find(transaction, id)).await
    }

    /// Keeps `row` (new or changed) for the end of the batch.
    pub(crate) fn stage(&self, row: contributions::Model) {
        self.staged.with(|staged| staged.insert(row.id.clone()));
        self.rows.with(|rows| rows.insert(row.id.clone(), Some(row)));
    }

    /// Counts a submission into its contributor's day, for the end of the batch.
    pub(crate) fn count_usage(&self, contributor_id: &str, at: chrono::DateTime<chrono::Utc>, size_bytes: u64) {
        self.usage.with(|usage| daily_usage::count(usage, contributor_id, at, size_bytes));
    }

    /// Datanet `id`, read once per batch.
    pub(crate) async fn datanet(&self, transaction: &DatabaseTransaction, id: &str) -> Result<Option<datanets::Model>, DbErr> {
        self.datanets.get_or_load(&id.to_owned(), || datanets::find(transaction, id)).await
    }
}

impl Handler for ContributionProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

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
        self.rows.with(|rows| {
            rows.extend(ids.into_iter().map(|id| (id, None)));
            rows.extend(stored.into_iter().map(|row| (row.id.clone(), Some(row))));
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
        let staged = self.staged.take();
        let rows = self.rows.with(|rows| staged.iter().filter_map(|id| rows.get(id).cloned().flatten()).collect());
        contributions::save_all(transaction, rows).await?;
        daily_usage::add(transaction, self.usage.take()).await?;
        Ok(())
    }

    fn discard(&self) {
        self.rows.reset();
        self.staged.reset();
        self.datanets.reset();
        self.usage.reset();
    }
}
