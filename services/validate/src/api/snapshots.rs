use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::{Envelope, Error as BusError, Expect};
use provenant_events::proto::common::v1::{BlobRef, Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::datanet::v1::SnapshotSealed;
use provenant_runtime::ApiError;
use provenant_runtime::identity::{Principal, Role};
use serde::Serialize;

use super::AppState;
use crate::domain::merkle;
use crate::domain::snapshot::{self, Entry};
use crate::projections::{accepted, policies, snapshots};

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal("database.unavailable", error)
}

#[derive(Debug, Serialize)]
pub struct Sealed {
    snapshot_id: String,
    ordinal: u64,
    merkle_root: String,
    entry_count: u64,
    manifest_sha256: String,
}

/// `POST /v1/datanets/{id}/snapshots`: seals every contribution accepted so far, in order of
/// acceptance, into the Datanet's next snapshot. Only the owner (or an admin) may.
pub async fn seal(State(state): State<AppState>, caller: Principal, Path(datanet_id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "datanet.not_found", format!("no Datanet {datanet_id:?}"));
    let policy = policies::find(&state.database, &datanet_id).await.map_err(unavailable)?.ok_or_else(not_found)?;
    if policy.owner_id != caller.id && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.not_owner", "only the Datanet's owner seals its snapshots"));
    }
    let entries: Vec<Entry> =
        accepted::all_in_order(&state.database, &datanet_id).await.map_err(unavailable)?.into_iter().map(Entry::from).collect();
    if entries.is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "snapshot.empty", "the Datanet has no accepted contribution yet"));
    }
    let previous = snapshots::latest(&state.database, &datanet_id).await.map_err(unavailable)?;
    let ordinal = previous.as_ref().map_or(1, |previous| previous.ordinal as u64 + 1);
    let stored =
        state.manifests.put(&snapshot::manifest(&entries)).await.map_err(|error| ApiError::internal("blobs.unavailable", error))?;
    let merkle_root = hex::encode(snapshot::root(&entries));
    let event = SnapshotSealed {
        snapshot_id: format!("{datanet_id}-{ordinal}"),
        datanet_id: datanet_id.clone(),
        ordinal,
        merkle_root: merkle_root.clone(),
        entry_count: entries.len() as u64,
        manifest: Some(BlobRef {
            sha256: stored.sha256.clone(),
            size_bytes: stored.size_bytes,
            bucket: stored.bucket,
            media_type: "application/x-ndjson".to_owned(),
        }),
        sealed_by: Some(ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::DatanetOwner.into() }),
        previous_snapshot_id: previous.map(|previous| previous.snapshot_id).unwrap_or_default(),
    };
    // The snapshot id carries its ordinal: two concurrent seals of one ordinal, one wins.
    match state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, Expect::NoEvents).await {
        Ok(_) => {}
        Err(BusError::Conflict { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "snapshot.conflict",
                "another snapshot was sealed at the same time; try again",
            ));
        }
        Err(error) => return Err(ApiError::internal("bus.unavailable", error)),
    }
    let location = format!("/v1/snapshots/{}", event.snapshot_id);
    let body =
        Sealed { snapshot_id: event.snapshot_id, ordinal, merkle_root, entry_count: event.entry_count, manifest_sha256: stored.sha256 };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)))
}

#[derive(Debug, Serialize)]
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

/// `GET /v1/snapshots/{id}`.
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

#[derive(Debug, Serialize)]
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

/// `GET /v1/snapshots/{id}/proofs/{contribution_id}`: the RFC 6962 inclusion proof of one
/// contribution in a sealed snapshot.
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
