//! The train HTTP API for model builders: submit, read, list and cancel training jobs; read
//! the model registry.

pub mod jobs;
pub mod models;

use std::sync::Arc;

use axum::Router;
use provenant_bus::{BlobStore, Bus};
use provenant_runtime::ApiError;
use provenant_runtime::identity::Directory;
use sea_orm::DatabaseConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::configuration::Limits;

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub database: DatabaseConnection,
    pub directory: Arc<Directory>,
    pub limits: Limits,
    /// Weights, configs and metrics.
    pub models: BlobStore,
}

impl axum::extract::FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

pub(crate) fn unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal("database.unavailable", error)
}

/// The routes and their OpenAPI description, generated from the same handlers.
pub fn router(state: AppState) -> Router {
    let (routes, api) = documented_routes().with_state(state).split_for_parts();
    provenant_runtime::openapi::app(routes, describe(api))
}

/// The OpenAPI document alone (for `--dump-openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    describe(documented_routes().split_for_parts().1)
}

fn describe(api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut api = provenant_runtime::openapi::finish(
        api,
        "Provenant train",
        "Training jobs on pinned Datanet snapshots (full or LoRA), their progress, and the registry of the models they produce, with lineage.",
    );
    provenant_runtime::openapi::add_links(&mut api, LINKS);
    api
}

const SUBMIT: (&str, &str, &str) = ("POST", "/v1/training-jobs", "202");
const JOB_ID: &[(&str, &str)] = &[("job_id", "$response.body#/job_id")];

/// Where a submitted job leads next.
const LINKS: &[provenant_runtime::openapi::Link] = &[
    provenant_runtime::openapi::Link { from: SUBMIT, name: "GetJob", to_operation_id: "get_training_job", parameters: JOB_ID },
    provenant_runtime::openapi::Link { from: SUBMIT, name: "CancelJob", to_operation_id: "cancel_training_job", parameters: JOB_ID },
];

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(models::list))
        .routes(routes!(models::get))
        .routes(routes!(models::metrics))
}
