//! Event handlers: one file per consumed event, dispatched by the durable consumers that keep
//! the projections in step with the Datanet stream: [`DatanetProjector`] (Datanet aggregates →
//! `projections::datanets`) and [`ContributionProjector`] (contribution aggregates →
//! `projections::contributions`).

mod on_contribution_decided;
mod on_contribution_submitted;
mod on_datanet_created;
mod on_datanet_updated;

use provenant_bus::{Context, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{
    ContributionAccepted, ContributionApproved, ContributionRejected, ContributionSubmitted, DatanetCreated, DatanetUpdated,
};
use sea_orm::DatabaseTransaction;

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
#[derive(Debug, Clone, Default)]
pub struct ContributionProjector {
    upcasters: Upcasters,
}

impl ContributionProjector {
    pub const NAME: &'static str = "ingest-contributions";

    pub fn new() -> ContributionProjector {
        ContributionProjector { upcasters: Upcasters::contract() }
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

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.envelope.event_type.as_str() {
            ContributionSubmitted::TYPE => {
                on_contribution_submitted::handle(transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionApproved::TYPE => {
                on_contribution_decided::on_approved(transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionAccepted::TYPE => {
                on_contribution_decided::on_accepted(transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            ContributionRejected::TYPE => {
                on_contribution_decided::on_rejected(transaction, delivery, delivery.decode(&self.upcasters)?).await
            }
            _ => Ok(()),
        }
    }
}
