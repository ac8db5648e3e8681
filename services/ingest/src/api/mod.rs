//! The ingest HTTP API. Every failure answers with a stable machine-readable code, a human
//! message and the right status: bad input is a 4xx, never a 500.

mod datanets;
mod error;

use axum::Router;
use axum::routing::get;
use provenant_bus::Bus;
use sea_orm::DatabaseConnection;

use crate::identity::Directory;
use std::sync::Arc;

pub use error::{ApiError, ApiJson};

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub database: DatabaseConnection,
    pub directory: Arc<Directory>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/datanets", get(datanets::list).post(datanets::create))
        .route("/v1/datanets/{datanet_id}", get(datanets::get).put(datanets::update))
        .fallback(|| async { ApiError::new(axum::http::StatusCode::NOT_FOUND, "route.not_found", "no such route") })
        .with_state(state)
}
