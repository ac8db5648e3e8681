//! The ingest HTTP API. Every failure answers with a stable machine-readable code, a human
//! message and the right status: bad input is a 4xx, never a 500.

mod admin;
mod contributions;
mod datanets;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use provenant_bus::{BlobStore, Bus};
use provenant_runtime::openapi::Link;
use sea_orm::DatabaseConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use provenant_runtime::identity::Directory;
use std::sync::Arc;

pub use provenant_runtime::{ApiError, ApiJson};

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    /// Read only: the projections are written by the consumers alone.
    pub database: DatabaseConnection,
    pub directory: Arc<Directory>,
    pub blobs: BlobStore,
    /// Largest accepted contribution, in bytes.
    pub contribution_max_bytes: u64,
    pub quotas: crate::configuration::ContributionsConfig,
    /// How far the contribution projection has got: a submission waits on it, not on the
    /// database, to answer once its contribution shows.
    pub contributions_projected: provenant_bus::Progress,
}

impl axum::extract::FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

/// The routes and their OpenAPI description, generated from the same handlers.
pub fn router(state: AppState) -> Router {
    let (routes, api) = documented_routes(state.contribution_max_bytes).with_state(state).split_for_parts();
    provenant_runtime::openapi::app(routes, describe(api))
}

/// The OpenAPI document alone (for `cargo xtask openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    describe(documented_routes(0).split_for_parts().1)
}

fn describe(api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut api = provenant_runtime::openapi::finish(
        api,
        "Provenant ingest",
        "Datanets and their contributions: create and describe Datanets, submit records, follow their review.",
    );
    provenant_runtime::openapi::add_links(&mut api, LINKS);
    api
}

/// Where a created resource leads next.
const LINKS: &[Link] = &[
    Link { from: CREATE_DATANET, name: "GetDatanet", to_operation_id: "get_datanet", parameters: DATANET_ID },
    Link { from: CREATE_DATANET, name: "UpdateDatanet", to_operation_id: "update_datanet", parameters: DATANET_ID },
    Link { from: CREATE_DATANET, name: "SubmitContribution", to_operation_id: "submit_contribution", parameters: DATANET_ID },
    Link { from: CREATE_DATANET, name: "DatanetStatistics", to_operation_id: "datanet_statistics", parameters: DATANET_ID },
    Link { from: SUBMIT, name: "GetContribution", to_operation_id: "get_contribution", parameters: CONTRIBUTION_ID },
    Link { from: SUBMIT, name: "ReviewContribution", to_operation_id: "review_contribution", parameters: CONTRIBUTION_ID },
    Link { from: ISSUE_KEY, name: "GetApiKey", to_operation_id: "get_api_key", parameters: KEY_ID },
    Link { from: ISSUE_KEY, name: "RevokeApiKey", to_operation_id: "revoke_api_key", parameters: KEY_ID },
];
const CREATE_DATANET: (&str, &str, &str) = ("POST", "/v1/datanets", "202");
const SUBMIT: (&str, &str, &str) = ("POST", "/v1/datanets/{datanet_id}/contributions", "202");
const DATANET_ID: &[(&str, &str)] = &[("datanet_id", "$response.body#/datanet_id")];
const ISSUE_KEY: (&str, &str, &str) = ("POST", "/v1/admin/api-keys", "201");
const KEY_ID: &[(&str, &str)] = &[("key_id", "$response.body#/key_id")];
const CONTRIBUTION_ID: &[(&str, &str)] = &[("contribution_id", "$response.body#/contribution_id")];

fn documented_routes(contribution_max_bytes: u64) -> OpenApiRouter<AppState> {
    // Multipart framing on top of the largest file; the handler enforces the exact limit.
    let body_limit = usize::try_from(contribution_max_bytes).unwrap_or(usize::MAX).saturating_add(64 * 1024);
    let (schemas, paths, submit) = routes!(contributions::submit);
    OpenApiRouter::new()
        .routes(routes!(datanets::list, datanets::create))
        .routes(routes!(datanets::get, datanets::update))
        .routes(routes!(contributions::statistics))
        .routes((schemas, paths, submit.layer(DefaultBodyLimit::max(body_limit))))
        .routes(routes!(contributions::list_mine))
        .routes(routes!(contributions::get))
        .routes(routes!(contributions::review))
        .routes(routes!(admin::issue, admin::list))
        .routes(routes!(admin::get, admin::revoke))
}
