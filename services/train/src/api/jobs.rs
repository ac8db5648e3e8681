use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use model::ModelConfig;
use provenant_bus::{Envelope, Expect};
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::training::v1::{TrainingJobCancelled, TrainingJobRequested};
use provenant_runtime::ApiError;
use provenant_runtime::api_error::ApiJson;
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::pagination::{PageQuery, PageRequest};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};
use serde::Serialize;
use uuid::Uuid;

use super::models::ModelView;
use super::{AppState, unavailable};
use crate::domain::spec::{Base, JobRequest, JobSpec, SpecError};
use crate::projections::{jobs, models, snapshots};

fn refused(error: SpecError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code, error.message)
}

/// Checks the pins and the base against what the service knows: every snapshot sealed with
/// the root the builder expects, the base a registered base model the spec fits.
async fn resolve(state: &AppState, spec: &JobSpec) -> Result<(), ApiError> {
    for pin in &spec.snapshots {
        let snapshot = snapshots::find(&state.database, &pin.snapshot_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| refused(SpecError::new("snapshot.not_found", format!("no sealed snapshot {:?}", pin.snapshot_id))))?;
        if snapshot.merkle_root != pin.merkle_root {
            return Err(refused(SpecError::new(
                "snapshot.root_mismatch",
                format!("snapshot {} has root {}, not {}", pin.snapshot_id, snapshot.merkle_root, pin.merkle_root),
            )));
        }
    }
    if let Base::Registered { model_id } = &spec.base {
        let row = models::find(&state.database, model_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| refused(SpecError::new("model.not_found", format!("no registered model {model_id:?}"))))?;
        if row.kind != "base" {
            return Err(refused(SpecError::new("job.base_is_adapter", format!("{model_id} is an adapter, not a base model"))));
        }
        let view: ModelView = serde_json::from_str(&row.registration).map_err(|error| ApiError::internal("model.unreadable", error))?;
        let shape = view.architecture.ok_or_else(|| ApiError::internal("model.unreadable", "registered without an architecture"))?;
        let config = ModelConfig::new(
            shape.vocab_size as usize,
            shape.layers as usize,
            shape.heads as usize,
            shape.width as usize,
            shape.context_length as usize,
        );
        spec.check_against(&config).map_err(refused)?;
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    job_id: String,
    status: String,
}

/// Submit a training job: a base (a new architecture, or a registered base model), pinned
/// sealed snapshots, full training or a LoRA adapter, hyperparameters and a seed. Answered
/// once `TrainingJobRequested` is durable; a worker picks the job up from the queue.
#[utoipa::path(post, path = "/v1/training-jobs", operation_id = "submit_training_job", tag = "jobs", security(("api_key" = [])),
    request_body = JobRequest,
    responses(
        (status = 202, description = "Queued", body = Submitted, headers(("Location" = String, description = "The job"))),
        ErrorResponses,
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Principal,
    ApiJson(request): ApiJson<JobRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if !caller.has(Role::ModelBuilder) && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.forbidden", "submitting training jobs needs the model_builder role"));
    }
    let spec = request.parse(&state.limits).map_err(refused)?;
    resolve(&state, &spec).await?;
    let job_id = Uuid::now_v7().to_string();
    let event = TrainingJobRequested {
        job_id: job_id.clone(),
        requested_by: Some(ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::ModelBuilder.into() }),
        spec: Some(spec.to_proto()),
    };
    let envelope = Envelope::new(&event, state.bus.producer());
    state.bus.publish(&envelope, &event, Expect::NoEvents).await.map_err(|error| ApiError::internal("bus.unavailable", error))?;
    await_projection(DEFAULT_WAIT, || async { jobs::find(&state.database, &job_id).await.ok().flatten().is_some() }).await;
    let location = format!("/v1/training-jobs/{job_id}");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(Submitted { job_id, status: jobs::QUEUED.into() })))
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    job_id: String,
    name: String,
    requested_by: String,
    /// queued, running, completed, failed or cancelled.
    status: String,
    step: i64,
    total_steps: i64,
    /// Mean training loss of the last reported step.
    loss: Option<f64>,
    tokens_per_second: Option<i64>,
    /// 1 for the first worker to run it, one more for each resumption.
    attempt: i32,
    worker_id: Option<String>,
    /// Step of the last checkpoint, from which a new worker resumes.
    checkpoint_step: Option<i64>,
    model_id: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    #[schema(value_type = Object)]
    spec: serde_json::Value,
    requested_at: String,
    updated_at: String,
}

impl From<jobs::Model> for JobView {
    fn from(row: jobs::Model) -> Self {
        JobView {
            spec: serde_json::from_str(&row.spec).unwrap_or(serde_json::Value::Null),
            job_id: row.job_id,
            name: row.name,
            requested_by: row.requested_by,
            status: row.status,
            step: row.step,
            total_steps: row.total_steps,
            loss: row.loss_micro.map(|micro| micro as f64 / 1e6),
            tokens_per_second: row.tokens_per_second,
            attempt: row.attempt,
            worker_id: row.worker_id,
            checkpoint_step: row.checkpoint_step,
            model_id: row.model_id,
            error_code: row.error_code,
            error_message: row.error_message,
            requested_at: row.requested_at.to_rfc3339(),
            updated_at: row.updated_at.to_rfc3339(),
        }
    }
}

async fn find(state: &AppState, job_id: &str) -> Result<jobs::Model, ApiError> {
    jobs::find(&state.database, job_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "job.not_found", format!("no training job {job_id:?}")))
}

/// One job and its progress.
#[utoipa::path(get, path = "/v1/training-jobs/{job_id}", operation_id = "get_training_job", tag = "jobs", security(("api_key" = [])),
    params(("job_id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = JobView), ErrorResponses))]
pub async fn get(State(state): State<AppState>, _caller: Principal, Path(job_id): Path<String>) -> Result<axum::Json<JobView>, ApiError> {
    Ok(axum::Json(find(&state, &job_id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    jobs: Vec<JobView>,
    next_after: Option<String>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/v1/training-jobs", operation_id = "list_training_jobs", tag = "jobs", security(("api_key" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of jobs", body = JobPage), ErrorResponses))]
pub async fn list(State(state): State<AppState>, _caller: Principal, page: PageRequest) -> Result<axum::Json<JobPage>, ApiError> {
    let rows = jobs::page(&state.database, page.after.as_deref(), page.limit).await.map_err(unavailable)?;
    let next_after = page.next_after(rows.iter().map(|row| row.job_id.as_str()));
    Ok(axum::Json(JobPage { jobs: rows.into_iter().map(JobView::from).collect(), next_after }))
}

/// Cancel a job that has not finished. The worker running it stops at its next progress
/// report (its append meets the cancellation and is refused); a queued job never starts.
#[utoipa::path(post, path = "/v1/training-jobs/{job_id}/cancel", operation_id = "cancel_training_job", tag = "jobs", security(("api_key" = [])),
    params(("job_id" = String, Path, description = "The job's id")),
    responses((status = 202, description = "Cancelled", body = JobView), ErrorResponses))]
pub async fn cancel(State(state): State<AppState>, caller: Principal, Path(job_id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let row = find(&state, &job_id).await?;
    if row.requested_by != caller.id && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.not_requester", "only the job's requester (or an admin) cancels it"));
    }
    if jobs::is_terminal(&row.status) {
        return Err(ApiError::new(StatusCode::CONFLICT, "job.finished", format!("the job is already {}", row.status)));
    }
    let event = TrainingJobCancelled {
        job_id: job_id.clone(),
        cancelled_by: Some(ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::ModelBuilder.into() }),
    };
    // Appended without a sequence check: a cancellation is a fact from the requester, and the
    // worker's next checked append is what notices it.
    let envelope = Envelope::new(&event, state.bus.producer());
    state.bus.publish(&envelope, &event, Expect::Any).await.map_err(|error| ApiError::internal("bus.unavailable", error))?;
    let cancelled =
        || async { jobs::find(&state.database, &job_id).await.ok().flatten().is_some_and(|job| jobs::is_terminal(&job.status)) };
    await_projection(DEFAULT_WAIT, cancelled).await;
    Ok((StatusCode::ACCEPTED, axum::Json(JobView::from(find(&state, &job_id).await?))))
}
