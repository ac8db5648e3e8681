use provenant_bus::{Delivery, HandleError};
use provenant_events::proto::datanet::v1::DatanetCreated;
use sea_orm::{DatabaseTransaction, SqlErr};

use crate::domain::datanet::{DatanetSpec, parse_principal_id};
use crate::projections::datanets;

pub async fn handle(transaction: &DatabaseTransaction, delivery: &Delivery, event: DatanetCreated) -> Result<(), HandleError> {
    let spec = event.spec.ok_or_else(|| HandleError::rejected("datanet.spec_missing", "DatanetCreated without a spec"))?;
    let spec = DatanetSpec::try_from(spec).map_err(|error| HandleError::rejected(error.code, error))?;
    let owner = event.owner.map(|owner| owner.id).unwrap_or_default();
    let owner = parse_principal_id(&owner).map_err(|error| HandleError::rejected(error.code, error))?;
    match datanets::insert(transaction, &event.datanet_id, &owner, &spec, delivery.stream_sequence, delivery.envelope.occurred_at).await {
        Ok(()) => Ok(()),
        // Our publisher refuses a second creation (expected sequence 0); a copy from another
        // producer is a contract violation, not something to apply.
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(HandleError::rejected("datanet.already_exists", format!("Datanet {} exists", event.datanet_id)))
        }
        Err(error) => Err(error.into()),
    }
}
