//! The validate HTTP API: sealing snapshots and proving a contribution's inclusion.

mod snapshots;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use provenant_bus::{BlobStore, Bus};
use provenant_runtime::ApiError;
use provenant_runtime::identity::Directory;
use sea_orm::DatabaseConnection;

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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/datanets/{datanet_id}/snapshots", post(snapshots::seal))
        .route("/v1/snapshots/{snapshot_id}", get(snapshots::get))
        .route("/v1/snapshots/{snapshot_id}/proofs/{contribution_id}", get(snapshots::proof))
        .fallback(|| async { ApiError::new(axum::http::StatusCode::NOT_FOUND, "route.not_found", "no such route") })
        .with_state(state)
}
