//! Event handlers behind two durable consumers: [`CatalogProjector`] keeps what a job may pin
//! (Datanet record formats, sealed snapshots); [`JobProjector`] keeps jobs and the model
//! registry, and queues each requested job for the workers.

mod on_job_event;
mod on_model_registered;
mod on_snapshot_sealed;

use provenant_bus::{Context, Delivery, HandleError, Handler, Namespace, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::datanet::v1::{self as datanet, DatanetCreated, DatanetSpec, DatanetUpdated, SnapshotSealed};
use provenant_events::proto::training::v1::ModelRegistered;
use sea_orm::DatabaseTransaction;

use crate::domain::examples::RecordFormat;
use crate::projections::datanets;
use crate::queue::WorkQueue;

/// The record format a Datanet spec names, if any.
pub fn record_format(spec: &DatanetSpec) -> Option<RecordFormat> {
    match spec.record_format() {
        datanet::RecordFormat::PlainText => Some(RecordFormat::PlainText),
        datanet::RecordFormat::JsonLines => Some(RecordFormat::JsonLines),
        datanet::RecordFormat::Unspecified => None,
    }
}

/// Durable consumer of Datanet and snapshot events.
#[derive(Debug, Clone, Default)]
pub struct CatalogProjector {
    upcasters: Upcasters,
}

impl CatalogProjector {
    pub const NAME: &'static str = "train-catalog";
}

impl Handler for CatalogProjector {
    fn is_pure_projection(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        CatalogProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "datanet"), namespace.aggregate_filter(Context::Datanet, "snapshot")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        let (datanet_id, spec) = match delivery.envelope.event_type.as_str() {
            DatanetCreated::TYPE => {
                let event: DatanetCreated = delivery.decode(&self.upcasters)?;
                (event.datanet_id, event.spec)
            }
            DatanetUpdated::TYPE => {
                let event: DatanetUpdated = delivery.decode(&self.upcasters)?;
                (event.datanet_id, event.spec)
            }
            SnapshotSealed::TYPE => return on_snapshot_sealed::handle(transaction, delivery.decode(&self.upcasters)?).await,
            _ => return Ok(()),
        };
        let format = spec
            .as_ref()
            .and_then(record_format)
            .ok_or_else(|| HandleError::rejected("datanet.record_format_missing", "Datanet event without a record format"))?;
        datanets::upsert(transaction, &datanet_id, format).await?;
        Ok(())
    }
}

/// Durable consumer of job and model events.
#[derive(Clone)]
pub struct JobProjector {
    queue: WorkQueue,
    upcasters: Upcasters,
}

impl JobProjector {
    pub const NAME: &'static str = "train-jobs";

    pub fn new(queue: WorkQueue) -> JobProjector {
        JobProjector { queue, upcasters: Upcasters::contract() }
    }
}

impl Handler for JobProjector {
    fn name(&self) -> &str {
        JobProjector::NAME
    }

    fn context(&self) -> Context {
        Context::Training
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Training, "job"), namespace.aggregate_filter(Context::Training, "model")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        if delivery.envelope.event_type == ModelRegistered::TYPE {
            return on_model_registered::handle(transaction, delivery, delivery.decode(&self.upcasters)?).await;
        }
        on_job_event::handle(&self.queue, &self.upcasters, transaction, delivery).await
    }
}
