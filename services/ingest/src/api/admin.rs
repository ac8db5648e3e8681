//! Issuing and revoking API keys, for admins. A key is shown once, in the answer that issues
//! it; only its SHA-256 goes into `ApiKeyIssued`, which every authenticating service follows.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::identity::role_to_proto;
use provenant_bus::{Context, Envelope, Error as BusError, Expect};
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::identity::v1::{ApiKeyIssued, ApiKeyRevoked};
use provenant_runtime::identity::{IssuedKey, Principal, Role, generate_key, hash_key, parse_principal_id};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, ApiJson, AppState};

const MAX_LABEL_CHARS: usize = 200;
/// As many as there are roles.
const MAX_ROLES: usize = 5;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueKey {
    /// Who the key authenticates as: 1 to 128 of `[A-Za-z0-9_-]`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$", example = "alice")]
    principal_id: String,
    #[schema(min_items = 1, max_items = 5)]
    roles: Vec<Role>,
    /// A note for people, such as "CI uploader".
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKeyView {
    key_id: String,
    principal_id: String,
    roles: Vec<Role>,
    label: String,
}

impl From<IssuedKey> for IssuedKeyView {
    fn from(key: IssuedKey) -> Self {
        IssuedKeyView { key_id: key.key_id, principal_id: key.principal.id, roles: key.principal.roles, label: key.label }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewKey {
    /// The key: shown this once, stored nowhere. Send it as `Authorization: Bearer <key>`.
    key: String,
    #[serde(flatten)]
    issued: IssuedKeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<IssuedKeyView>,
}

fn admin_principal(caller: &Principal) -> ProtoPrincipal {
    ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::Admin.into() }
}

fn not_found(key_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "api_key.not_found", format!("no live API key {key_id:?}"))
}

/// Issue an API key (admins only). The answer holds the key itself, once.
#[utoipa::path(post, path = "/v1/admin/api-keys", operation_id = "issue_api_key", tag = "admin", security(("api_key" = [])),
    request_body = IssueKey,
    responses(
        (status = 201, description = "Issued", body = NewKey, headers(("Location" = String, description = "The key's record"))),
        ErrorResponses,
    ))]
pub async fn issue(
    State(state): State<AppState>,
    caller: Principal,
    ApiJson(input): ApiJson<IssueKey>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Admin)?;
    let principal_id = parse_principal_id(&input.principal_id)
        .map_err(|message| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "api_key.principal_invalid", message))?;
    if input.roles.len() > MAX_ROLES {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "api_key.too_many_roles", format!("at most {MAX_ROLES} roles")));
    }
    let mut roles = Vec::new();
    for role in input.roles {
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "api_key.roles_missing", "a key needs at least one role"));
    }
    if input.label.chars().count() > MAX_LABEL_CHARS || input.label.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "api_key.label_invalid",
            format!("labels are up to {MAX_LABEL_CHARS} printable characters"),
        ));
    }
    let key = generate_key();
    let key_id = Uuid::now_v7().to_string();
    let event = ApiKeyIssued {
        key_id: key_id.clone(),
        principal_id: principal_id.clone(),
        roles: roles.iter().map(|role| role_to_proto(*role).into()).collect(),
        key_sha256: hex::encode(hash_key(&key)),
        issued_by: Some(admin_principal(&caller)),
        label: input.label.clone(),
    };
    state
        .bus
        .publish(&Envelope::new(&event, state.bus.producer()), &event, Expect::NoEvents)
        .await
        .map_err(|error| ApiError::internal("bus.unavailable", error))?;
    // Usable once this service's directory has it (the others follow within moments).
    await_projection(DEFAULT_WAIT, || async { state.directory.issued_key(&key_id).is_some() }).await;
    let location = format!("/v1/admin/api-keys/{key_id}");
    let body = NewKey { key, issued: IssuedKeyView { key_id, principal_id, roles, label: input.label } };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(body)))
}

/// The live issued keys (admins only; configured keys are not listed).
#[utoipa::path(get, path = "/v1/admin/api-keys", operation_id = "list_api_keys", tag = "admin", security(("api_key" = [])),
    responses((status = 200, description = "Live issued keys", body = KeyList), ErrorResponses))]
pub async fn list(State(state): State<AppState>, caller: Principal) -> Result<axum::Json<KeyList>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(axum::Json(KeyList { keys: state.directory.issued_keys().into_iter().map(IssuedKeyView::from).collect() }))
}

/// One live issued key (admins only).
#[utoipa::path(get, path = "/v1/admin/api-keys/{key_id}", operation_id = "get_api_key", tag = "admin", security(("api_key" = [])),
    params(("key_id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key's record", body = IssuedKeyView), ErrorResponses))]
pub async fn get(
    State(state): State<AppState>,
    caller: Principal,
    Path(key_id): Path<String>,
) -> Result<axum::Json<IssuedKeyView>, ApiError> {
    caller.require(Role::Admin)?;
    state.directory.issued_key(&key_id).map(|key| axum::Json(key.into())).ok_or_else(|| not_found(&key_id))
}

/// Revoke an issued key (admins only): it stops authenticating everywhere.
#[utoipa::path(delete, path = "/v1/admin/api-keys/{key_id}", operation_id = "revoke_api_key", tag = "admin", security(("api_key" = [])),
    params(("key_id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), ErrorResponses))]
pub async fn revoke(State(state): State<AppState>, caller: Principal, Path(key_id): Path<String>) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if state.directory.issued_key(&key_id).is_none() {
        return Err(not_found(&key_id));
    }
    let last = state
        .bus
        .last_sequence(Context::Identity, "api_key", &key_id)
        .await
        .map_err(|error| match error {
            BusError::Event(_) => not_found(&key_id),
            other => ApiError::internal("bus.unavailable", other),
        })?
        .ok_or_else(|| not_found(&key_id))?;
    let event = ApiKeyRevoked { key_id: key_id.clone(), revoked_by: Some(admin_principal(&caller)) };
    // Conditional on the issue being the key's last event: a concurrent revocation wins once.
    match state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, Expect::LastSequence(last)).await {
        Ok(_) => {}
        Err(BusError::Conflict { .. }) => return Err(not_found(&key_id)),
        Err(error) => return Err(ApiError::internal("bus.unavailable", error)),
    }
    await_projection(DEFAULT_WAIT, || async { state.directory.issued_key(&key_id).is_none() }).await;
    Ok(StatusCode::NO_CONTENT)
}
