use provenant_bus::{Delivery, HandleError, Upcasters};
use provenant_events::Event as _;
use provenant_events::proto::training::v1::{
    TrainingJobCancelled, TrainingJobCheckpointed, TrainingJobCompleted, TrainingJobFailed, TrainingJobProgressed, TrainingJobRequested,
    TrainingJobStarted,
};
use sea_orm::ActiveValue::Set;
use sea_orm::{DatabaseTransaction, SqlErr};

use crate::domain::spec::JobSpec;
use crate::projections::jobs;
use crate::queue::WorkQueue;

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Moves a job's row along its life, and queues a requested job for the workers.
pub async fn handle(
    queue: &WorkQueue,
    upcasters: &Upcasters,
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
) -> Result<(), HandleError> {
    let at = delivery.envelope.occurred_at;
    match delivery.envelope.event_type.as_str() {
        TrainingJobRequested::TYPE => {
            let event: TrainingJobRequested = delivery.decode(upcasters)?;
            let proto_spec = event.spec.ok_or_else(|| HandleError::rejected("job.spec_missing", "TrainingJobRequested without a spec"))?;
            let spec = JobSpec::from_proto(&proto_spec).map_err(|error| HandleError::rejected(error.code, error))?;
            let row = jobs::Model {
                job_id: event.job_id.clone(),
                name: spec.name.clone(),
                requested_by: event.requested_by.map(|principal| principal.id).unwrap_or_default(),
                spec: serde_json::to_string(&spec.to_request()).map_err(|error| HandleError::Transient(error.into()))?,
                status: jobs::QUEUED.into(),
                step: 0,
                total_steps: clamp(spec.train.steps),
                loss_micro: None,
                tokens_per_second: None,
                attempt: 0,
                worker_id: None,
                checkpoint_step: None,
                model_id: None,
                error_code: None,
                error_message: None,
                requested_at: at,
                updated_at: at,
            };
            match jobs::insert(transaction, row).await {
                Ok(()) => {}
                Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    return Err(HandleError::rejected("job.id_taken", format!("job {} requested twice", event.job_id)));
                }
                Err(error) => return Err(error.into()),
            }
            // Queued from here rather than by the API, so a request whose event is durable is
            // always queued, even if the API died right after publishing it. Idempotent (see
            // `WorkQueue::enqueue`); if the transaction then fails, the redelivery queues again
            // and the duplicate is dropped.
            queue.enqueue(&event.job_id).await.map_err(|error| HandleError::Transient(error.into()))?;
        }
        TrainingJobStarted::TYPE => {
            let event: TrainingJobStarted = delivery.decode(upcasters)?;
            jobs::update(transaction, &event.job_id, at, |job| {
                job.status = Set(jobs::RUNNING.into());
                job.attempt = Set(i32::try_from(event.attempt).unwrap_or(i32::MAX));
                job.worker_id = Set(Some(event.worker_id.clone()));
            })
            .await?;
        }
        TrainingJobProgressed::TYPE => {
            let event: TrainingJobProgressed = delivery.decode(upcasters)?;
            jobs::update(transaction, &event.job_id, at, |job| {
                job.status = Set(jobs::RUNNING.into());
                job.step = Set(clamp(event.step));
                job.total_steps = Set(clamp(event.total_steps));
                job.loss_micro = Set(Some(clamp(event.loss_micro)));
                job.tokens_per_second = Set(Some(clamp(event.tokens_per_second)));
            })
            .await?;
        }
        TrainingJobCheckpointed::TYPE => {
            let event: TrainingJobCheckpointed = delivery.decode(upcasters)?;
            jobs::update(transaction, &event.job_id, at, |job| job.checkpoint_step = Set(Some(clamp(event.step)))).await?;
        }
        TrainingJobCompleted::TYPE => {
            let event: TrainingJobCompleted = delivery.decode(upcasters)?;
            jobs::update(transaction, &event.job_id, at, |job| {
                job.status = Set(jobs::COMPLETED.into());
                job.step = Set(clamp(event.steps));
                job.model_id = Set(Some(event.model_id.clone()));
            })
            .await?;
        }
        TrainingJobFailed::TYPE => {
            let event: TrainingJobFailed = delivery.decode(upcasters)?;
            jobs::update(transaction, &event.job_id, at, |job| {
                job.status = Set(jobs::FAILED.into());
                job.error_code = Set(Some(event.code.clone()));
                job.error_message = Set(Some(event.message.clone()));
            })
            .await?;
        }
        TrainingJobCancelled::TYPE => {
            let event: TrainingJobCancelled = delivery.decode(upcasters)?;
            jobs::update(transaction, &event.job_id, at, |job| job.status = Set(jobs::CANCELLED.into())).await?;
        }
        _ => {}
    }
    Ok(())
}
