use provenant_bus::{Delivery, HandleError};
use provenant_events::proto::training::v1::{ModelKind, ModelRegistered};
use sea_orm::{DatabaseTransaction, SqlErr};

use crate::api::models::ModelView;
use crate::projections::models;

/// Adds a model to the registry.
pub async fn handle(transaction: &DatabaseTransaction, delivery: &Delivery, event: ModelRegistered) -> Result<(), HandleError> {
    let at = delivery.envelope.occurred_at;
    let view = ModelView::from_event(event.clone(), &at.to_rfc3339());
    let row = models::Model {
        model_id: event.model_id.clone(),
        name: event.name.clone(),
        kind: if event.kind() == ModelKind::Adapter { "adapter" } else { "base" }.into(),
        base_model_id: view.base_model_id.clone(),
        owner_id: view.owner_id.clone(),
        job_id: view.lineage.as_ref().map(|lineage| lineage.job_id.clone()).unwrap_or_default(),
        weights_sha256: view.weights.as_ref().map(|weights| weights.sha256.clone()).unwrap_or_default(),
        held_out_perplexity_milli: i64::try_from(event.held_out_perplexity_milli).unwrap_or(i64::MAX),
        registration: serde_json::to_string(&view).map_err(|error| HandleError::Transient(error.into()))?,
        registered_at: at,
    };
    match models::insert(transaction, row).await {
        Ok(()) => Ok(()),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(HandleError::rejected("model.id_taken", format!("model {} registered twice", event.model_id)))
        }
        Err(error) => Err(error.into()),
    }
}
