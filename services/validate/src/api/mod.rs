//! The validate HTTP API: sealing snapshots and proving a contribution's inclusion.

mod snapshots;

use std::sync::Arc;

use axum::Router;
use provenant_bus::{BlobStore, Bus};
use provenant_runtime::identity::Directory;
use sea_orm::DatabaseConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub database: DatabaseConnection,
    pub directory: Arc<Directory>,
    /// The bucket of snapshot manifests.
    pub manifests: BlobStore,
}

impl axum::extract::FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

/// The routes and their OpenAPI description, generated from the same handlers.
pub fn router(state: AppState) -> Router {
    let (routes, api) = documented_routes().with_state(state).split_for_parts();
    provenant_runtime::openapi::app(routes, describe(api))
}

/// The OpenAPI document alone (for `cargo xtask openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    describe(documented_routes().split_for_parts().1)
}

fn describe(api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    provenant_runtime::openapi::finish(
        api,
        "Provenant validate",
        "Sealed Datanet snapshots: seal the accepted contributions, read a snapshot, prove a contribution's inclusion.",
    )
}

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(snapshots::seal)).routes(routes!(snapshots::get)).routes(routes!(snapshots::proof))
}
