//! The ingest HTTP API. Every failure answers with a stable machine-readable code, a human
//! message and the right status: bad input is a 4xx, never a 500.

mod contributions;
mod datanets;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use provenant_bus::{BlobStore, Bus};
use sea_orm::DatabaseConnection;

use provenant_runtime::identity::Directory;
use std::sync::Arc;

pub use provenant_runtime::{ApiError, ApiJson};

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub database: DatabaseConnection,
    pub directory: Arc<Directory>,
    pub blobs: BlobStore,
    /// Largest accepted contribution, in bytes.
    pub contribution_max_bytes: u64,
    pub quotas: crate::configuration::ContributionsConfig,
}

impl axum::extract::FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/datanets", get(datanets::list).post(datanets::create))
        .route("/v1/datanets/{datanet_id}", get(datanets::get).put(datanets::update))
        .route("/v1/datanets/{datanet_id}/stats", get(contributions::statistics))
        .route(
            "/v1/datanets/{datanet_id}/contributions",
            post(contributions::submit)
                // Multipart framing on top of the largest file; the handler enforces the exact limit.
                .layer(DefaultBodyLimit::max(
                    usize::try_from(state.contribution_max_bytes).unwrap_or(usize::MAX).saturating_add(64 * 1024),
                )),
        )
        .route("/v1/contributions", get(contributions::list_mine))
        .route("/v1/contributions/{contribution_id}", get(contributions::get))
        .route("/v1/contributions/{contribution_id}/review", post(contributions::review))
        .fallback(|| async { ApiError::new(axum::http::StatusCode::NOT_FOUND, "route.not_found", "no such route") })
        .with_state(state)
}
