//! Revenue-share policies: read a model's, set a new version.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provenant_bus::{Context, Envelope, Error as BusError, Expect};
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::settlement::v1::RevenuePolicySet;
use provenant_runtime::ApiError;
use provenant_runtime::api_error::{ApiJson, whole_number};
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};
use serde::{Deserialize, Serialize};

use super::{AppState, unavailable};
use crate::domain::policy::{Beneficiary, RevenuePolicy};
use crate::projections::{catalog, policies};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartView {
    pub beneficiary: Beneficiary,
    /// Parts per billion of every fee.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub share_ppb: u64,
}

/// A model's revenue-share policy. Version 0 is the configured default.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyView {
    pub model_id: String,
    pub version: u64,
    /// "model" (its own), "base" (its base model's) or "default".
    pub source: String,
    pub parts: Vec<PartView>,
}

/// A new version of a model's policy: the parts must name distinct beneficiaries and sum to
/// exactly 1,000,000,000 parts per billion.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    #[schema(min_items = 1, max_items = 4)]
    pub parts: Vec<PartView>,
}

fn view(model_id: &str, source: &str, policy: &RevenuePolicy) -> PolicyView {
    PolicyView {
        model_id: model_id.to_owned(),
        version: policy.version,
        source: source.to_owned(),
        parts: policy.parts.iter().map(|(beneficiary, share)| PartView { beneficiary: *beneficiary, share_ppb: *share }).collect(),
    }
}

fn model_not_found(model_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "model.not_found", format!("no registered model {model_id:?}"))
}

/// The policy that splits a model's fees now: its own, else its base model's, else the default.
#[utoipa::path(get, path = "/v1/revenue-policies/{model_id}", operation_id = "get_revenue_policy", tag = "policies", security(("api_key" = [])),
    params(("model_id" = String, Path, description = "A registered model or adapter")),
    responses((status = 200, description = "The policy in force", body = PolicyView), ErrorResponses))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Principal,
    Path(model_id): Path<String>,
) -> Result<axum::Json<PolicyView>, ApiError> {
    let model = catalog::find_model(&state.database, &model_id).await.map_err(unavailable)?.ok_or_else(|| model_not_found(&model_id))?;
    if let Some(row) = policies::find(&state.database, &model_id).await.map_err(unavailable)? {
        return Ok(axum::Json(view(&model_id, "model", &row.policy().map_err(unavailable)?)));
    }
    if model.is_adapter()
        && let Some(row) = policies::find(&state.database, &model.base_model_id).await.map_err(unavailable)?
    {
        return Ok(axum::Json(view(&model_id, "base", &row.policy().map_err(unavailable)?)));
    }
    Ok(axum::Json(view(&model_id, "default", &state.default_policy)))
}

/// Set the next version of a model's policy. Its builder or an admin may; fees settled from
/// then on split by it (settled fees are never re-split).
#[utoipa::path(put, path = "/v1/revenue-policies/{model_id}", operation_id = "set_revenue_policy", tag = "policies", security(("api_key" = [])),
    params(("model_id" = String, Path, description = "A registered model or adapter")),
    request_body = PolicyRequest,
    responses((status = 200, description = "The new version", body = PolicyView), ErrorResponses))]
pub async fn set(
    State(state): State<AppState>,
    caller: Principal,
    Path(model_id): Path<String>,
    ApiJson(request): ApiJson<PolicyRequest>,
) -> Result<axum::Json<PolicyView>, ApiError> {
    let model = catalog::find_model(&state.database, &model_id).await.map_err(unavailable)?.ok_or_else(|| model_not_found(&model_id))?;
    if model.builder_id != caller.id && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.not_builder", "only the model's builder or an admin sets its policy"));
    }
    let current = policies::find(&state.database, &model_id).await.map_err(unavailable)?;
    let version = current.as_ref().map_or(0, |row| u64::try_from(row.version).unwrap_or(0)) + 1;
    let policy = RevenuePolicy::new(version, request.parts.iter().map(|part| (part.beneficiary, part.share_ppb)))
        .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), error.to_string()))?;
    let event = RevenuePolicySet {
        model_id: model_id.clone(),
        version,
        parts: policy.to_proto(),
        set_by: Some(ProtoPrincipal {
            id: caller.id.clone(),
            kind: if caller.has(Role::Admin) { PrincipalKind::Admin } else { PrincipalKind::ModelBuilder }.into(),
        }),
    };
    // The projection may lag the stream; the stream's last sequence is what the append must follow.
    let last = state.bus.last_sequence(Context::Settlement, "policy", &model_id).await.map_err(|error| match error {
        BusError::Event(error) => ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_id", error.to_string()),
        other => ApiError::internal("bus.unavailable", other),
    })?;
    let projected = current.as_ref().map(|row| u64::try_from(row.stream_sequence).unwrap_or(0));
    let conflict = || ApiError::new(StatusCode::CONFLICT, "policy.conflict", "the policy changed meanwhile; read it and try again");
    if last != projected {
        return Err(conflict());
    }
    let expect = last.map_or(Expect::NoEvents, Expect::LastSequence);
    state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, expect).await.map_err(|error| match error {
        BusError::Conflict { .. } => conflict(),
        other => ApiError::internal("bus.unavailable", other),
    })?;
    let wanted = i64::try_from(version).unwrap_or(i64::MAX);
    await_projection(DEFAULT_WAIT, || async {
        policies::find(&state.database, &model_id).await.ok().flatten().is_some_and(|row| row.version >= wanted)
    })
    .await;
    Ok(axum::Json(view(&model_id, "model", &policy)))
}
