//! The infer HTTP API: OpenAI-compatible completions, chat completions and models, the adapter
//! cache, and per-model pricing. Errors are OpenAI-shaped ([`error`]).

pub mod completions;
pub mod error;
pub mod models;
pub mod requests;

use std::sync::Arc;

use axum::Router;
use provenant_bus::Bus;
use provenant_runtime::identity::Directory;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::attribution::Attributor;
use crate::catalog::Catalog;
use crate::configuration::ServingConfig;
use crate::models::ModelCache;

#[derive(Clone)]
pub struct AppState {
    pub bus: Bus,
    pub catalog: Catalog,
    pub cache: Arc<ModelCache>,
    pub attributor: Arc<Attributor>,
    /// Where prompts and answers are kept (when `serving.keep_transcripts`).
    pub transcripts: Option<provenant_bus::BlobStore>,
    pub directory: Arc<Directory>,
    pub serving: ServingConfig,
}

/// The routes and their OpenAPI description, generated from the same handlers.
pub fn router(state: AppState) -> Router {
    let (routes, api) = documented_routes().with_state(state.clone()).split_for_parts();
    // A model name may hold a `/` (`<base>/<adapter>`), which OpenAPI path parameters cannot
    // describe, so retrieving one model is served but not documented.
    let routes = routes.merge(Router::new().route("/v1/models/{*model}", axum::routing::get(models::retrieve)).with_state(state));
    provenant_runtime::openapi::app(routes, describe(api))
}

/// The OpenAPI document alone (for `--dump-openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    describe(documented_routes().split_for_parts().1)
}

fn describe(api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut api = provenant_runtime::openapi::finish(
        api,
        "Provenant infer",
        "OpenAI-compatible completions and chat completions from one base model and its LoRA adapters; every answer is priced and recorded as InferenceServed.",
    );
    let schemas =
        utoipa::openapi::ComponentsBuilder::new().schema_from::<error::OpenAiErrorBody>().schema_from::<error::OpenAiErrorDetail>().build();
    if let Some(components) = api.components.as_mut() {
        components.schemas.extend(schemas.schemas);
    }
    api
}

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(completions::completions))
        .routes(routes!(completions::chat_completions))
        .routes(routes!(models::list))
        .routes(routes!(models::adapters))
        .routes(routes!(models::get_price, models::set_price))
}
