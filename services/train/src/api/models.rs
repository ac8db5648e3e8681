use axum::extract::{Path, State};
use axum::http::StatusCode;
use provenant_events::proto::common::v1::BlobRef;
use provenant_events::proto::training::v1::{ModelKind, ModelRegistered};
use provenant_runtime::ApiError;
use provenant_runtime::identity::Principal;
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::pagination::{PageQuery, PageRequest};
use serde::{Deserialize, Serialize};

use super::{AppState, unavailable};
use crate::projections::models;

/// A stored artifact, content-addressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub sha256: String,
    pub size_bytes: u64,
    pub bucket: String,
    pub media_type: String,
}

impl From<BlobRef> for Artifact {
    fn from(blob: BlobRef) -> Self {
        Artifact { sha256: blob.sha256, size_bytes: blob.size_bytes, bucket: blob.bucket, media_type: blob.media_type }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PinnedSnapshot {
    pub snapshot_id: String,
    pub datanet_id: String,
    pub merkle_root: String,
}

/// Everything a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lineage {
    pub job_id: String,
    pub snapshots: Vec<PinnedSnapshot>,
    /// Digest of the example → contribution → contributor → cluster table.
    pub example_table_sha256: String,
    pub example_table: Option<Artifact>,
    pub seed: u64,
    pub code_version: String,
    /// Digest of the base weights an adapter or fine-tune started from (empty from scratch).
    pub base_weights_sha256: String,
    pub steps: u32,
    pub batch_size: u32,
    pub sequence_length: u32,
    pub learning_rate: f64,
    pub warmup_steps: u32,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArchitectureView {
    pub vocab_size: u32,
    pub layers: u32,
    pub heads: u32,
    pub width: u32,
    pub context_length: u32,
    pub tokenizer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoraView {
    pub rank: u32,
    pub alpha: f64,
    pub targets: Vec<String>,
}

/// A registered base model or adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    pub model_id: String,
    pub name: String,
    /// `base` or `adapter`.
    pub kind: String,
    pub base_model_id: Option<String>,
    pub owner_id: String,
    pub architecture: Option<ArchitectureView>,
    pub lora: Option<LoraView>,
    pub weights: Option<Artifact>,
    pub tokenizer: Option<Artifact>,
    pub config: Option<Artifact>,
    pub metrics: Option<Artifact>,
    pub lineage: Option<Lineage>,
    pub held_out_perplexity: f64,
    pub registered_at: String,
}

impl ModelView {
    pub fn from_event(event: ModelRegistered, registered_at: &str) -> ModelView {
        let kind = match event.kind() {
            ModelKind::Adapter => "adapter",
            _ => "base",
        };
        ModelView {
            kind: kind.to_owned(),
            base_model_id: Some(event.base_model_id).filter(|id| !id.is_empty()),
            owner_id: event.owner.map(|owner| owner.id).unwrap_or_default(),
            architecture: event.architecture.map(|shape| ArchitectureView {
                vocab_size: shape.vocab_size,
                layers: shape.layers,
                heads: shape.heads,
                width: shape.width,
                context_length: shape.context_length,
                tokenizer: shape.tokenizer,
            }),
            lora: event.lora.map(|lora| LoraView { rank: lora.rank, alpha: f64::from(lora.alpha_milli) / 1_000.0, targets: lora.targets }),
            weights: event.weights.map(Artifact::from),
            tokenizer: event.tokenizer.map(Artifact::from),
            config: event.config.map(Artifact::from),
            metrics: event.metrics.map(Artifact::from),
            lineage: event.lineage.map(|lineage| {
                let hyper = lineage.hyperparameters.unwrap_or_default();
                Lineage {
                    job_id: lineage.job_id,
                    snapshots: lineage
                        .snapshots
                        .into_iter()
                        .map(|pin| PinnedSnapshot {
                            snapshot_id: pin.snapshot_id,
                            datanet_id: pin.datanet_id,
                            merkle_root: pin.merkle_root,
                        })
                        .collect(),
                    example_table_sha256: lineage.example_table_sha256,
                    example_table: lineage.example_table.map(Artifact::from),
                    seed: lineage.seed,
                    code_version: lineage.code_version,
                    base_weights_sha256: lineage.base_weights_sha256,
                    steps: hyper.steps,
                    batch_size: hyper.batch_size,
                    sequence_length: hyper.sequence_length,
                    learning_rate: f64::from(hyper.learning_rate_micro) / 1e6,
                    warmup_steps: hyper.warmup_steps,
                    weight_decay: f64::from(hyper.weight_decay_micro) / 1e6,
                }
            }),
            held_out_perplexity: event.held_out_perplexity_milli as f64 / 1_000.0,
            model_id: event.model_id,
            name: event.name,
            registered_at: registered_at.to_owned(),
        }
    }
}

fn view(row: models::Model) -> Result<ModelView, ApiError> {
    serde_json::from_str(&row.registration).map_err(|error| ApiError::internal("model.unreadable", error))
}

/// One registered model or adapter, with its lineage.
#[utoipa::path(get, path = "/v1/models/{model_id}", operation_id = "get_model", tag = "models", security(("api_key" = [])),
    params(("model_id" = String, Path, description = "The model's id")),
    responses((status = 200, description = "The model", body = ModelView), ErrorResponses))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Principal,
    Path(model_id): Path<String>,
) -> Result<axum::Json<ModelView>, ApiError> {
    let row = models::find(&state.database, &model_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "model.not_found", format!("no model {model_id:?}")))?;
    Ok(axum::Json(view(row)?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelPage {
    models: Vec<ModelView>,
    next_after: Option<String>,
}

/// The registry, by model id.
#[utoipa::path(get, path = "/v1/models", operation_id = "list_models", tag = "models", security(("api_key" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of models", body = ModelPage), ErrorResponses))]
pub async fn list(State(state): State<AppState>, _caller: Principal, page: PageRequest) -> Result<axum::Json<ModelPage>, ApiError> {
    let rows = models::page(&state.database, page.after.as_deref(), page.limit).await.map_err(unavailable)?;
    let next_after = page.next_after(rows.iter().map(|row| row.model_id.as_str()));
    let models = rows.into_iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(ModelPage { models, next_after }))
}

/// The metrics a model was registered with (held-out perplexity, its base's on the same
/// held-out tokens, token and example counts), as stored in the object store.
#[utoipa::path(get, path = "/v1/models/{model_id}/metrics", operation_id = "get_model_metrics", tag = "models", security(("api_key" = [])),
    params(("model_id" = String, Path, description = "The model's id")),
    responses((status = 200, description = "The metrics", body = Object), ErrorResponses))]
pub async fn metrics(
    State(state): State<AppState>,
    _caller: Principal,
    Path(model_id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let row = models::find(&state.database, &model_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "model.not_found", format!("no model {model_id:?}")))?;
    let sha256 = view(row)?.metrics.map(|metrics| metrics.sha256).unwrap_or_default();
    let bytes = state
        .models
        .get(&sha256)
        .await
        .map_err(|error| ApiError::internal("blobs.unavailable", error))?
        .ok_or_else(|| ApiError::internal("model.metrics_missing", format!("metrics {sha256} are not stored")))?;
    serde_json::from_slice(&bytes).map(axum::Json).map_err(|error| ApiError::internal("model.unreadable", error))
}
