//! `/v1/models` (OpenAI's list and retrieve), `/v1/adapters` (what is loaded), and
//! `/v1/pricing/{model_id}` (a model's price, set by its owner or an admin as
//! `PricingPolicySet`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use provenant_bus::{Context, Envelope, Expect, Upcasters};
use provenant_events::money::{Amount, parse_minor_units};
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::inference::v1::PricingPolicySet;
use provenant_runtime::identity::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::completions::FeeView;
use super::error::{Caller, OpenAiError, OpenAiErrorResponses, OpenAiJson};
use crate::batching::BatchStats;
use crate::catalog::{Price, Resolved, price_of};
use crate::models::{CacheStats, LoadedAdapter};

/// A servable model, in OpenAI's shape plus Provenant's ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    /// What requests name: `<base name>` or `<base name>/<adapter name>`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    pub created: i64,
    pub owned_by: String,
    /// The registry id of the model that answers (the adapter's, for an adapter).
    pub model_id: String,
    pub base_model_id: String,
    pub priced: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelObject>,
}

fn model_object(state: &AppState, resolved: &Resolved) -> ModelObject {
    let served = resolved.served();
    ModelObject {
        id: resolved.served_name(),
        object: "model".to_owned(),
        created: served.created,
        owned_by: if served.owner_id.is_empty() { "provenant".to_owned() } else { served.owner_id.clone() },
        model_id: served.model_id.clone(),
        base_model_id: resolved.base.model_id.clone(),
        priced: state.catalog.price(resolved).is_some(),
    }
}

/// Lists the servable models: every base, and every adapter under its base.
#[utoipa::path(get, path = "/v1/models", tag = "models", responses((status = 200, body = ModelList), OpenAiErrorResponses), security(("api_key" = [])))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> Json<ModelList> {
    let data = state.catalog.servable().iter().map(|resolved| model_object(&state, resolved)).collect();
    Json(ModelList { object: "list".to_owned(), data })
}

/// One model, by the name requests use (`<base>` or `<base>/<adapter>`; ids or names). Not in
/// the OpenAPI document: the name may hold a `/`, which OpenAPI path parameters cannot.
pub async fn retrieve(State(state): State<AppState>, _caller: Caller, Path(model): Path<String>) -> Result<Json<ModelObject>, OpenAiError> {
    let resolved = state.catalog.resolve(&model).ok_or_else(|| OpenAiError::model_not_found(&model))?;
    Ok(Json(model_object(&state, &resolved)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdapterCache {
    pub loaded: Vec<LoadedAdapter>,
    pub cache: CacheStats,
    /// Per loaded base: forward passes, and the rows (of any adapter) they carried.
    pub decoding: Vec<BaseDecoding>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BaseDecoding {
    pub base_model_id: String,
    #[serde(flatten)]
    pub stats: BatchStats,
}

/// The adapters loaded in this replica's RAM cache, and its counters.
#[utoipa::path(get, path = "/v1/adapters", tag = "models", responses((status = 200, body = AdapterCache), OpenAiErrorResponses), security(("api_key" = [])))]
pub async fn adapters(State(state): State<AppState>, _caller: Caller) -> Json<AdapterCache> {
    let decoding = state.cache.batch_stats().into_iter().map(|(base_model_id, stats)| BaseDecoding { base_model_id, stats }).collect();
    Json(AdapterCache { loaded: state.cache.loaded_adapters(), cache: state.cache.stats(), decoding })
}

/// A price to set: amounts in integer minor units of one currency, as decimal strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    /// ISO 4217 code or token symbol: 3 to 12 upper-case letters or digits.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Decimals between a minor and a whole unit (EUR: 2), at most 18.
    #[schema(example = 2)]
    pub exponent: u32,
    #[schema(example = "1")]
    pub per_request: String,
    #[schema(example = "5")]
    pub per_1k_prompt_tokens: String,
    #[schema(example = "20")]
    pub per_1k_output_tokens: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub model_id: String,
    pub version: u64,
    pub per_request: FeeView,
    pub per_1k_prompt_tokens: FeeView,
    pub per_1k_output_tokens: FeeView,
}

fn price_view(model_id: &str, price: &Price) -> PriceView {
    PriceView {
        model_id: model_id.to_owned(),
        version: price.version,
        per_request: FeeView::from(&price.per_request),
        per_1k_prompt_tokens: FeeView::from(&price.per_1k_prompt_tokens),
        per_1k_output_tokens: FeeView::from(&price.per_1k_output_tokens),
    }
}

/// A model's own price (an adapter without one is billed at its base's).
#[utoipa::path(
    get,
    path = "/v1/pricing/{model_id}",
    tag = "pricing",
    params(("model_id" = String, Path, description = "Registry id of a base model or adapter")),
    responses((status = 200, body = PriceView), OpenAiErrorResponses),
    security(("api_key" = []))
)]
pub async fn get_price(
    State(state): State<AppState>,
    _caller: Caller,
    Path(model_id): Path<String>,
) -> Result<Json<PriceView>, OpenAiError> {
    let price = state.catalog.own_price(&model_id).ok_or_else(|| {
        OpenAiError::new(StatusCode::NOT_FOUND, "not_found_error", "price_not_found", format!("no price set for model {model_id:?}"))
    })?;
    Ok(Json(price_view(&model_id, &price)))
}

/// Sets a model's price as its next `PricingPolicySet` version. Its owner (a model builder)
/// or an admin may.
#[utoipa::path(
    put,
    path = "/v1/pricing/{model_id}",
    tag = "pricing",
    params(("model_id" = String, Path, description = "Registry id of a base model or adapter")),
    request_body = PriceRequest,
    responses((status = 200, description = "The new price, durable in the log", body = PriceView), OpenAiErrorResponses),
    security(("api_key" = []))
)]
pub async fn set_price(
    State(state): State<AppState>,
    caller: Caller,
    Path(model_id): Path<String>,
    OpenAiJson(request): OpenAiJson<PriceRequest>,
) -> Result<Json<PriceView>, OpenAiError> {
    let model = state.catalog.model(&model_id).ok_or_else(|| OpenAiError::model_not_found(&model_id))?;
    let caller = caller.0;
    let owner = caller.has(Role::ModelBuilder) && caller.id == model.owner_id;
    if !owner && !caller.has(Role::Admin) {
        return Err(OpenAiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "not_model_owner",
            "only the model's owner or an admin sets its price",
        ));
    }
    let amount = |text: &str, field: &'static str| {
        let units = parse_minor_units(text).map_err(|error| OpenAiError::invalid(field, error.to_string()))?;
        if units < 0 {
            return Err(OpenAiError::invalid(field, "prices are not negative"));
        }
        let amount =
            Amount::new(&request.currency, request.exponent, units).map_err(|error| OpenAiError::invalid("currency", error.to_string()))?;
        Ok(amount.to_proto())
    };
    // The version and the append check come from the log itself: another replica's follower
    // may not have applied the last price yet.
    let last = state
        .bus
        .last_delivery(Context::Inference, "pricing", &model_id)
        .await
        .map_err(|error| OpenAiError::unavailable("bus_unavailable", error))?;
    let (version, expect) = match &last {
        None => (1, Expect::NoEvents),
        Some(delivery) => {
            let current: PricingPolicySet =
                delivery.decode(&Upcasters::contract()).map_err(|error| OpenAiError::unavailable("pricing_unreadable", error))?;
            (current.version + 1, Expect::LastSequence(delivery.stream_sequence))
        }
    };
    let event = PricingPolicySet {
        model_id: model_id.clone(),
        version,
        per_request: Some(amount(&request.per_request, "per_request")?),
        per_1k_prompt_tokens: Some(amount(&request.per_1k_prompt_tokens, "per_1k_prompt_tokens")?),
        per_1k_output_tokens: Some(amount(&request.per_1k_output_tokens, "per_1k_output_tokens")?),
        set_by: Some(ProtoPrincipal {
            id: caller.id.clone(),
            kind: if owner { PrincipalKind::ModelBuilder } else { PrincipalKind::Admin }.into(),
        }),
    };
    let price = price_of(&event).map_err(|reason| OpenAiError::invalid("currency", reason))?;
    let envelope = Envelope::new(&event, state.bus.producer());
    state.bus.publish(&envelope, &event, expect).await.map_err(|error| match error {
        provenant_bus::Error::Conflict { .. } => OpenAiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "price_conflict",
            "the price changed meanwhile; read it and retry",
        ),
        other => OpenAiError::unavailable("bus_unavailable", other),
    })?;
    // The follower applies the same version again later, which changes nothing.
    state.catalog.set_price(&event).map_err(|reason| OpenAiError::invalid("currency", reason))?;
    Ok(Json(price_view(&model_id, &price)))
}
