use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::{Context, Envelope, Error as BusError, Expect};
use provenant_events::proto::common::v1::PrincipalKind;
use provenant_events::proto::datanet::v1 as proto;
use serde::Serialize;
use uuid::Uuid;

use super::{ApiError, ApiJson, AppState};
use crate::domain::datanet::{DatanetSpec, DatanetSpecInput};
use crate::projections::datanets;
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::pagination::{PageQuery, PageRequest};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};

/// The documented request body of create and update: [`DatanetSpecInput`]'s fields, plus the
/// rule tying `json_schema` to `record_format`, which a derived schema cannot say.
#[derive(Debug)]
pub struct DatanetSpecBody;

impl utoipa::PartialSchema for DatanetSpecBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type};
        use utoipa::openapi::{Ref, Schema};
        let format = |value: &str| ObjectBuilder::new().schema_type(Type::String).enum_values(Some([value]));
        let variant = || ObjectBuilder::new().schema_type(SchemaType::AnyValue);
        let plain_text = variant()
            .title(Some("plain text: no JSON Schema"))
            .property("record_format", format("plain_text"))
            .property("json_schema", ObjectBuilder::new().schema_type(Type::Null));
        let json_lines = variant()
            .title(Some("JSON lines: a JSON Schema for every record"))
            .property("record_format", format("json_lines"))
            .property("json_schema", ObjectBuilder::new().schema_type(Type::Object))
            .required("record_format")
            .required("json_schema");
        let rule = OneOfBuilder::new().item(plain_text).item(json_lines);
        Schema::AllOf(AllOfBuilder::new().item(Ref::from_schema_name("DatanetSpecInput")).item(rule).build()).into()
    }
}

impl ToSchema for DatanetSpecBody {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((DatanetSpecInput::name().into_owned(), <DatanetSpecInput as utoipa::PartialSchema>::schema()));
        <DatanetSpecInput as ToSchema>::schemas(schemas);
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    datanet_id: String,
    event_id: String,
    /// Stream sequence of the event: pass it as `If-Match` to update what you just wrote.
    version: u64,
}

/// Create a Datanet; the caller becomes its owner.
///
/// Answers 202 once `DatanetCreated` is durable in JetStream and the read model has it (or,
/// if the read model lags by more than a moment, with the event durable and the read to follow).
#[utoipa::path(post, path = "/v1/datanets", operation_id = "create_datanet", tag = "datanets", security(("api_key" = [])),
    request_body = DatanetSpecBody,
    responses(
        (status = 202, description = "Created", body = Accepted, headers(("Location" = String, description = "The new Datanet"))),
        ErrorResponses,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    ApiJson(input): ApiJson<DatanetSpecInput>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::DatanetOwner)?;
    let spec = DatanetSpec::try_from(input).map_err(invalid)?;
    let datanet_id = Uuid::now_v7().to_string();
    let event = proto::DatanetCreated {
        datanet_id: datanet_id.clone(),
        owner: Some(proto_principal(&caller, PrincipalKind::DatanetOwner)),
        spec: Some((&spec).into()),
    };
    let envelope = Envelope::new(&event, state.bus.producer());
    let published = state.bus.publish(&envelope, &event, Expect::NoEvents).await.map_err(publish_error)?;
    await_version(&state, &datanet_id, published.sequence).await;
    let location = format!("/v1/datanets/{datanet_id}");
    let body = Accepted { datanet_id, event_id: envelope.event_id.to_string(), version: published.sequence };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)))
}

/// Replace a Datanet's description; only its owner (or an admin) may.
///
/// `If-Match: <version>` makes the update conditional on the version the caller read; without
/// it, on the latest stored event. A lost race is a 409.
#[utoipa::path(put, path = "/v1/datanets/{datanet_id}", operation_id = "update_datanet", tag = "datanets", security(("api_key" = [])),
    params(
        ("datanet_id" = String, Path, description = "The Datanet's id"),
        ("If-Match" = Option<String>, Header, description = "The `version` you read", nullable = false, pattern = r#"^"?[0-9]{1,18}"?$"#),
    ),
    request_body = DatanetSpecBody,
    responses((status = 202, description = "Updated", body = Accepted), ErrorResponses))]
pub async fn update(
    State(state): State<AppState>,
    caller: Principal,
    Path(datanet_id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<DatanetSpecInput>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = DatanetSpec::try_from(input).map_err(invalid)?;
    let current = visible(&state, &caller, &datanet_id).await?;
    if current.owner_id != caller.id && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.not_owner", "only the Datanet's owner can change it"));
    }
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
    let updated_by = Some(proto_principal(&caller, PrincipalKind::DatanetOwner));
    let event = proto::DatanetUpdated { datanet_id: datanet_id.clone(), updated_by, spec: Some((&spec).into()) };
    let envelope = Envelope::new(&event, state.bus.producer());
    let published = state.bus.publish(&envelope, &event, Expect::LastSequence(expected)).await.map_err(publish_error)?;
    await_version(&state, &datanet_id, published.sequence).await;
    let body = Accepted { datanet_id, event_id: envelope.event_id.to_string(), version: published.sequence };
    Ok((StatusCode::ACCEPTED, axum::Json(body)))
}

/// Read-your-writes: until the read model holds `version` of the Datanet (or a moment passes).
async fn await_version(state: &AppState, datanet_id: &str, version: u64) {
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    await_projection(DEFAULT_WAIT, || async {
        datanets::find(&state.database, datanet_id).await.ok().flatten().is_some_and(|row| row.version >= version)
    })
    .await;
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

fn invalid(error: crate::domain::datanet::ValidationError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code, error.message)
}

fn proto_principal(caller: &Principal, kind: PrincipalKind) -> provenant_events::proto::common::v1::Principal {
    let kind = if caller.has(Role::Admin) && !caller.roles.contains(&Role::DatanetOwner) { PrincipalKind::Admin } else { kind };
    provenant_events::proto::common::v1::Principal { id: caller.id.clone(), kind: kind.into() }
}

/// The Datanet as `caller` may see it: private ones exist only for their owner and admins.
pub(super) async fn visible(state: &AppState, caller: &Principal, datanet_id: &str) -> Result<datanets::Model, ApiError> {
    let row = datanets::find(&state.database, datanet_id).await.map_err(|error| ApiError::internal("database.unavailable", error))?;
    row.filter(|row| may_see(caller, row)).ok_or_else(|| not_found(datanet_id))
}

fn may_see(caller: &Principal, row: &datanets::Model) -> bool {
    row.visibility != "private" || row.owner_id == caller.id || caller.has(Role::Admin)
}

fn not_found(datanet_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "datanet.not_found", format!("no Datanet {datanet_id:?}"))
}

#[derive(Debug, Serialize, ToSchema)]
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

/// One Datanet (private ones only for their owner and admins).
#[utoipa::path(get, path = "/v1/datanets/{datanet_id}", operation_id = "get_datanet", tag = "datanets", security(("api_key" = [])),
    params(("datanet_id" = String, Path, description = "The Datanet's id")),
    responses((status = 200, description = "The Datanet", body = DatanetView), ErrorResponses))]
pub async fn get(
    State(state): State<AppState>,
    caller: Principal,
    Path(datanet_id): Path<String>,
) -> Result<axum::Json<DatanetView>, ApiError> {
    Ok(axum::Json(visible(&state, &caller, &datanet_id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatanetPage {
    datanets: Vec<DatanetView>,
    /// Pass as `after` for the next page; absent on the last page.
    next_after: Option<String>,
}

/// The Datanets the caller may see, by id.
#[utoipa::path(get, path = "/v1/datanets", operation_id = "list_datanets", tag = "datanets", security(("api_key" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of Datanets", body = DatanetPage), ErrorResponses))]
pub async fn list(State(state): State<AppState>, caller: Principal, page: PageRequest) -> Result<axum::Json<DatanetPage>, ApiError> {
    let rows = datanets::list(&state.database, page.after.as_deref(), page.limit)
        .await
        .map_err(|error| ApiError::internal("database.unavailable", error))?;
    let next_after = page.next_after(rows.iter().map(|row| row.id.as_str()));
    let datanets = rows.into_iter().filter(|row| may_see(&caller, row)).map(DatanetView::from).collect();
    Ok(axum::Json(DatanetPage { datanets, next_after }))
}
