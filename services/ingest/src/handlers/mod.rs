//! Event handlers: one file per consumed event, dispatched by [`DatanetProjector`], the durable
//! consumer that keeps `projections::datanets` in step with the Datanet stream.

mod on_datanet_created;
mod on_datanet_updated;

use provenant_bus::{Context, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{DatanetCreated, DatanetUpdated};
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
