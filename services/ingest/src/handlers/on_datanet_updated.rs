use provenant_bus::{Delivery, HandleError};
use provenant_events::proto::datanet::v1::DatanetUpdated;
use sea_orm::DatabaseTransaction;

use crate::domain::datanet::DatanetSpec;
use crate::projections::datanets;

pub async fn handle(transaction: &DatabaseTransaction, delivery: &Delivery, event: DatanetUpdated) -> Result<(), HandleError> {
    let spec = event.spec.ok_or_else(|| HandleError::rejected("datanet.spec_missing", "DatanetUpdated without a spec"))?;
    let spec = DatanetSpec::try_from(spec).map_err(|error| HandleError::rejected(error.code, error))?;
    let updated = datanets::update(transaction, &event.datanet_id, &spec, delivery.stream_sequence, delivery.envelope.occurred_at).await?;
    if updated { Ok(()) } else { Err(HandleError::rejected("datanet.unknown", format!("update of unknown Datanet {}", event.datanet_id))) }
}
