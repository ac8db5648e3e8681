//! The settle HTTP API: revenue-share policies (model builders, admins), the finance views of
//! the ledger (settlements, balances, statements, reconciliation, review items), and periods
//! (close a month, its reports).

mod ledger;
mod periods;
mod policies;

use std::sync::Arc;

use axum::Router;
use provenant_bus::{BlobStore, Bus};
use provenant_runtime::ApiError;
use provenant_runtime::identity::Directory;
use sea_orm::DatabaseConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::policy::RevenuePolicy;

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    /// The settler's store: models, policies, settled inferences, review items.
    pub database: DatabaseConnection,
    /// The ledger's store: transactions, postings, balances, periods (the same database unless
    /// configured apart).
    pub ledger: DatabaseConnection,
    pub directory: Arc<Directory>,
    pub default_policy: RevenuePolicy,
    /// The bucket of settlement reports.
    pub reports: BlobStore,
    /// How long after a month ends before it may be closed.
    pub periods: crate::domain::period::Periods,
}

impl axum::extract::FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal("database.unavailable", error)
}

/// The routes and their OpenAPI description, generated from the same handlers.
pub fn router(state: AppState) -> Router {
    let (routes, api) = documented_routes().with_state(state).split_for_parts();
    provenant_runtime::openapi::app(routes, describe(api))
}

/// The OpenAPI document alone (for tests and the API fuzzing run).
pub fn openapi() -> utoipa::openapi::OpenApi {
    describe(documented_routes().split_for_parts().1)
}

fn describe(api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    provenant_runtime::openapi::finish(
        api,
        "Provenant settle",
        "Revenue-share policies per model, and the double-entry ledger that inference fees are split into: settlements, balances, \
         a principal's own statement, reconciliation and items for review. Amounts are integer minor units as decimal strings.",
    )
}

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(policies::get, policies::set))
        .routes(routes!(ledger::settlement))
        .routes(routes!(ledger::request_settlements))
        .routes(routes!(ledger::reverse))
        .routes(routes!(ledger::accounts))
        .routes(routes!(ledger::statement))
        .routes(routes!(ledger::reconciliation))
        .routes(routes!(ledger::reviews))
        .routes(routes!(periods::list))
        .routes(routes!(periods::close))
        .routes(routes!(periods::download))
}
