use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::Error as BusError;
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_runtime::ApiError;
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};
use serde::Serialize;

use super::AppState;
use crate::domain::merkle;
use crate::domain::snapshot::Entry;
use crate::projections::{accepted, policies, snapshots};
use crate::sealing::{self, SealError};
use uuid::Uuid;

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal("database.unavailable", error)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sealed {
    snapshot_id: String,
    ordinal: u64,
    merkle_root: String,
    entry_count: u64,
    manifest_sha256: String,
}

/// Seal every contribution accepted so far into the Datanet's next snapshot: the previous
/// snapshot's entries in their order, then those accepted since, in order of acceptance. Only the
/// owner (or an admin) may.
#[utoipa::path(post, path = "/v1/datanets/{datanet_id}/snapshots", operation_id = "seal_snapshot", tag = "snapshots", security(("api_key" = [])),
    params(("datanet_id" = String, Path, description = "The Datanet's id")),
    responses(
        (status = 202, description = "Sealed", body = Sealed, headers(("Location" = String, description = "The snapshot"))),
        ErrorResponses,
    ))]
pub async fn seal(State(state): State<AppState>, caller: Principal, Path(datanet_id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "datanet.not_found", format!("no Datanet {datanet_id:?}"));
    let policy = policies::find(&state.database, &datanet_id).await.map_err(unavailable)?.ok_or_else(not_found)?;
    if policy.owner_id != caller.id && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.not_owner", "only the Datanet's owner seals its snapshots"));
    }
    let entries: Vec<Entry> =
        accepted::all_in_order(&state.database, &datanet_id).await.map_err(unavailable)?.into_iter().map(Entry::from).collect();
    let sealed_by = ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::DatanetOwner.into() };
    let event = sealing::seal(&state.bus, &state.manifests, &state.database, &datanet_id, &entries, sealed_by, Uuid::now_v7())
        .await
        .map_err(|error| match error {
            SealError::Empty => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "snapshot.empty", "the Datanet has no accepted contribution yet")
            }
            SealError::Contended => {
                ApiError::new(StatusCode::CONFLICT, "snapshot.conflict", "other snapshots are being sealed at the same time; try again")
            }
            SealError::Bus(BusError::Event(error)) => ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_id", error.to_string()),
            SealError::Blobs(error) => ApiError::internal("blobs.unavailable", error),
            other => ApiError::internal("snapshot.unavailable", other),
        })?;
    await_projection(DEFAULT_WAIT, || async { snapshots::find(&state.database, &event.snapshot_id).await.ok().flatten().is_some() }).await;
    let location = format!("/v1/snapshots/{}", event.snapshot_id);
    let body = Sealed {
        manifest_sha256: event.manifest.map(|manifest| manifest.sha256).unwrap_or_default(),
        snapshot_id: event.snapshot_id,
        ordinal: event.ordinal,
        merkle_root: event.merkle_root,
        entry_count: event.entry_count,
    };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotView {
    snapshot_id: String,
    datanet_id: String,
    ordinal: i64,
    merkle_root: String,
    entry_count: i64,
    manifest_sha256: String,
    sealed_at: String,
}

async fn find(state: &AppState, snapshot_id: &str) -> Result<snapshots::Model, ApiError> {
    snapshots::find(&state.database, snapshot_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "snapshot.not_found", format!("no snapshot {snapshot_id:?}")))
}

/// One sealed snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{snapshot_id}", operation_id = "get_snapshot", tag = "snapshots", security(("api_key" = [])),
    params(("snapshot_id" = String, Path, description = "`<datanet id>-<ordinal>`")),
    responses((status = 200, description = "The snapshot", body = SnapshotView), ErrorResponses))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Principal,
    Path(snapshot_id): Path<String>,
) -> Result<axum::Json<SnapshotView>, ApiError> {
    let row = find(&state, &snapshot_id).await?;
    Ok(axum::Json(SnapshotView {
        snapshot_id: row.snapshot_id,
        datanet_id: row.datanet_id,
        ordinal: row.ordinal,
        merkle_root: row.merkle_root,
        entry_count: row.entry_count,
        manifest_sha256: row.manifest_sha256,
        sealed_at: row.sealed_at.to_rfc3339(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProof {
    snapshot_id: String,
    merkle_root: String,
    tree_size: usize,
    leaf_index: usize,
    /// The entry's manifest line; its leaf hash is SHA-256(0x00 || line).
    leaf: String,
    leaf_hash: String,
    /// Sibling hashes from the leaf up (RFC 6962).
    audit_path: Vec<String>,
}

/// The RFC 6962 inclusion proof of one contribution in a sealed snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{snapshot_id}/proofs/{contribution_id}", operation_id = "inclusion_proof", tag = "snapshots", security(("api_key" = [])),
    params(
        ("snapshot_id" = String, Path, description = "`<datanet id>-<ordinal>`"),
        ("contribution_id" = String, Path, description = "The contribution's id"),
    ),
    responses((status = 200, description = "The proof", body = InclusionProof), ErrorResponses))]
pub async fn proof(
    State(state): State<AppState>,
    _caller: Principal,
    Path((snapshot_id, contribution_id)): Path<(String, String)>,
) -> Result<axum::Json<InclusionProof>, ApiError> {
    let row = find(&state, &snapshot_id).await?;
    let entries = snapshots::entries_of(&state.database, &snapshot_id).await.map_err(unavailable)?;
    let leaf_index = entries.iter().position(|entry| entry.contribution_id == contribution_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "snapshot.entry_not_found",
            format!("contribution {contribution_id:?} is not in {snapshot_id}"),
        )
    })?;
    let leaves: Vec<merkle::Hash> = entries.iter().map(Entry::leaf_hash).collect();
    let audit_path = merkle::inclusion_proof(&leaves, leaf_index).map_err(|error| ApiError::internal("snapshot.proof_failed", error))?;
    Ok(axum::Json(InclusionProof {
        snapshot_id,
        merkle_root: row.merkle_root,
        tree_size: leaves.len(),
        leaf_index,
        leaf: entries[leaf_index].line(),
        leaf_hash: hex::encode(leaves[leaf_index]),
        audit_path: audit_path.iter().map(hex::encode).collect(),
    }))
}
