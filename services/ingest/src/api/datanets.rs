use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::{Context, Envelope, Error as BusError, Expect};
use provenant_events::proto::common::v1::{Principal, PrincipalKind};
use provenant_events::proto::datanet::v1 as proto;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, ApiJson, AppState};
use crate::domain::datanet::{DatanetSpec, DatanetSpecInput, parse_principal_id};
use crate::projections::datanets;

/// The body of `POST /v1/datanets`: the spec's fields plus `owner_id`, the owning principal
/// (until API keys arrive in issue 3 the caller names it). Split by hand because serde
/// cannot refuse unknown fields through `flatten`.
fn split_create_body(mut body: serde_json::Map<String, serde_json::Value>) -> Result<(String, DatanetSpecInput), ApiError> {
    let owner = match body.remove("owner_id") {
        Some(serde_json::Value::String(owner)) => owner,
        _ => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "request.invalid_body", "owner_id: a string is required")),
    };
    let spec = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "request.invalid_body", error.to_string()))?;
    Ok((owner, spec))
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    datanet_id: String,
    event_id: String,
    /// Stream sequence of the event: pass it as `If-Match` to update what you just wrote.
    version: u64,
}

/// `POST /v1/datanets`: answers 202 once `DatanetCreated` is durable in JetStream; the read
/// model catches up a moment later.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let (owner, spec) = split_create_body(body)?;
    let owner_id = parse_principal_id(&owner)?;
    let spec = DatanetSpec::try_from(spec)?;
    let datanet_id = Uuid::now_v7().to_string();
    let event = proto::DatanetCreated {
        datanet_id: datanet_id.clone(),
        owner: Some(Principal { id: owner_id, kind: PrincipalKind::DatanetOwner.into() }),
        spec: Some((&spec).into()),
    };
    let envelope = Envelope::new(&event, state.bus.producer());
    let published = state.bus.publish(&envelope, &event, Expect::NoEvents).await.map_err(publish_error)?;
    let location = format!("/v1/datanets/{datanet_id}");
    let body = Accepted { datanet_id, event_id: envelope.event_id.to_string(), version: published.sequence };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)))
}

/// `PUT /v1/datanets/{id}`: replaces the spec. `If-Match: <version>` makes the update
/// conditional on the version the caller read; without it, on the latest stored event.
pub async fn update(
    State(state): State<AppState>,
    Path(datanet_id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<DatanetSpecInput>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = DatanetSpec::try_from(input)?;
    let expected = match headers.get(header::IF_MATCH) {
        Some(value) => value
            .to_str()
            .ok()
            .map(|value| value.trim_matches('"'))
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "request.if_match_invalid", "If-Match must be a version number"))?,
        None => state
            .bus
            .last_sequence(Context::Datanet, "datanet", &datanet_id)
            .await
            .map_err(|error| match error {
                BusError::Event(_) => not_found(&datanet_id),
                other => ApiError::internal("bus.unavailable", other),
            })?
            .ok_or_else(|| not_found(&datanet_id))?,
    };
    let event = proto::DatanetUpdated { datanet_id: datanet_id.clone(), updated_by: None, spec: Some((&spec).into()) };
    let envelope = Envelope::new(&event, state.bus.producer());
    let published = state.bus.publish(&envelope, &event, Expect::LastSequence(expected)).await.map_err(publish_error)?;
    let body = Accepted { datanet_id, event_id: envelope.event_id.to_string(), version: published.sequence };
    Ok((StatusCode::ACCEPTED, axum::Json(body)))
}

fn publish_error(error: BusError) -> ApiError {
    match error {
        BusError::Conflict { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "datanet.version_conflict",
            "the Datanet changed since the version you read (or does not exist); read it again",
        ),
        BusError::Event(error) => ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_id", error.to_string()),
        other => ApiError::internal("bus.unavailable", other),
    }
}

fn not_found(datanet_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "datanet.not_found", format!("no Datanet {datanet_id:?}"))
}

#[derive(Debug, Serialize)]
pub struct DatanetView {
    id: String,
    name: String,
    description: String,
    tags: Vec<String>,
    licence: String,
    record_format: String,
    visibility: String,
    contribution_policy: String,
    owner_id: String,
    version: i64,
    created_at: String,
    updated_at: String,
}

impl From<datanets::Model> for DatanetView {
    fn from(row: datanets::Model) -> Self {
        DatanetView {
            tags: serde_json::from_str(&row.tags).unwrap_or_default(),
            id: row.id,
            name: row.name,
            description: row.description,
            licence: row.licence_spdx,
            record_format: row.record_format,
            visibility: row.visibility,
            contribution_policy: row.contribution_policy,
            owner_id: row.owner_id,
            version: row.version,
            created_at: row.created_at.to_rfc3339(),
            updated_at: row.updated_at.to_rfc3339(),
        }
    }
}

pub async fn get(State(state): State<AppState>, Path(datanet_id): Path<String>) -> Result<axum::Json<DatanetView>, ApiError> {
    let row = datanets::find(&state.database, &datanet_id).await.map_err(|error| ApiError::internal("database.unavailable", error))?;
    row.map(|row| axum::Json(row.into())).ok_or_else(|| not_found(&datanet_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct DatanetPage {
    datanets: Vec<DatanetView>,
    /// Pass as `after` for the next page; absent on the last page.
    next_after: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<DatanetPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_query", rejection.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_limit", "limit must be between 1 and 500"));
    }
    let rows = datanets::list(&state.database, query.after.as_deref(), limit)
        .await
        .map_err(|error| ApiError::internal("database.unavailable", error))?;
    let next_after = (rows.len() as u64 == limit).then(|| rows.last().map(|row| row.id.clone())).flatten();
    Ok(axum::Json(DatanetPage { datanets: rows.into_iter().map(DatanetView::from).collect(), next_after }))
}
