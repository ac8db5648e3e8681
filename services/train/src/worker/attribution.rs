//! The end of every training job: the attribution index of the model it trained
//! (`shared/attribution`), stored in the object store and announced by `AttributionIndexBuilt`.
//!
//! Features are the model's projected per-example gradients over every training example (the
//! adapter's gradients for a LoRA job); the held-out examples, which the model never trained
//! on, are the phantom controls whose scores estimate the noise floor.

use attribution::{BlockLayout, BuiltIndex, ExampleRow, ExampleTable, IndexInput, Projection};
use model::{Featurizer, Sequence, Transformer};
use provenant_bus::Envelope;
use provenant_events::proto::training::v1::AttributionIndexBuilt;
use tracing::info;

use super::JobError;
use super::job::{blob_ref, derived_id};
use crate::configuration::AttributionConfig;
use crate::domain::examples::{Dataset, Split};

/// What the index is built for.
pub(super) struct Subject {
    pub model: Transformer,
    pub model_id: String,
    pub model_weights_sha256: String,
    pub base_weights_sha256: String,
    pub seed: u64,
}

/// The tokens of one example in its split's stream.
fn tokens_of(stream: &[u32], offset: u64, count: u64) -> &[u32] {
    &stream[offset as usize..(offset + count) as usize]
}

/// Featurises every example and builds the index (CPU-heavy: run it off the async runtime).
pub(super) fn build(subject: &Subject, dataset: Dataset, config: &AttributionConfig) -> Result<BuiltIndex, JobError> {
    let failed = |error: &dyn std::fmt::Display| JobError::fail("attribution.failed", error);
    let featurizer = Featurizer::new(&subject.model, subject.seed, config.per_side).map_err(|error| failed(&error))?;
    // Probes need no parameter gradients: featurise the frozen inference copy.
    let frozen = subject.model.inference();
    let trained: Vec<_> = dataset.examples.iter().filter(|example| example.split == Split::Train).collect();
    let phantoms: Vec<_> = dataset.examples.iter().filter(|example| example.split == Split::HeldOut).take(config.max_phantoms).collect();
    let featurise = |sequences: Vec<&[u32]>| -> Result<Vec<f32>, JobError> {
        let mut features = Vec::with_capacity(sequences.len() * featurizer.dim());
        // An example too short to predict anything has no gradient: a zero row.
        for chunk in sequences.chunks(config.batch_examples.max(1)) {
            let usable: Vec<Sequence<'_>> =
                chunk.iter().filter(|tokens| tokens.len() >= 2).map(|tokens| Sequence::trained(tokens)).collect();
            let computed =
                if usable.is_empty() { Vec::new() } else { featurizer.features(&frozen, &usable).map_err(|error| failed(&error))? };
            let mut rows = computed.chunks_exact(featurizer.dim());
            for tokens in chunk {
                match tokens.len() >= 2 {
                    true => features.extend_from_slice(rows.next().expect("one row per usable sequence")),
                    false => features.extend(std::iter::repeat_n(0.0, featurizer.dim())),
                }
            }
        }
        Ok(features)
    };
    let features =
        featurise(trained.iter().map(|example| tokens_of(&dataset.train_tokens, example.token_offset, example.token_count)).collect())?;
    let phantom_features =
        featurise(phantoms.iter().map(|example| tokens_of(&dataset.held_out_tokens, example.token_offset, example.token_count)).collect())?;
    let rows = trained
        .iter()
        .map(|example| ExampleRow {
            example: example.example,
            contribution_id: example.contribution_id.clone(),
            contributor_id: example.contributor_id.clone(),
            duplicate_cluster_id: example.duplicate_cluster_id.clone(),
            token_offset: example.token_offset,
            token_count: example.token_count,
            datanet_id: example.datanet_id.clone(),
        })
        .collect();
    let table = ExampleTable::new(rows).map_err(|error| failed(&error))?;
    let projection = Projection { seed: subject.seed, per_side: config.per_side, dim: featurizer.dim(), blocks: block_layout(&featurizer) };
    attribution::build(IndexInput {
        model_id: subject.model_id.clone(),
        model_weights_sha256: subject.model_weights_sha256.clone(),
        base_weights_sha256: subject.base_weights_sha256.clone(),
        projection,
        features,
        phantoms: phantom_features,
        table,
        tokens: dataset.train_tokens,
        precision: config.precision,
        damping: config.damping,
        rules: config.rules.clone(),
    })
    .map_err(|error| failed(&error))
}

/// The featurizer's blocks as the manifest names them; a query's featurizer must match.
pub fn block_layout(featurizer: &Featurizer) -> Vec<BlockLayout> {
    featurizer.blocks().iter().map(|block| BlockLayout { name: block.name(), offset: block.offset, len: block.len }).collect()
}

/// Stores the artifacts and the manifest, and appends `AttributionIndexBuilt` once (a retry
/// finds its own event there and goes on).
pub(super) async fn publish(worker: &super::Worker, cause: &Envelope, job_id: &str, built: BuiltIndex) -> Result<(), JobError> {
    let mut spans = None;
    for (sha256, bytes) in &built.artifacts {
        let stored = worker.stores.models.put(bytes).await.map_err(JobError::transient)?;
        if *sha256 == built.manifest.spans.sha256 {
            spans = Some(blob_ref(stored, "application/vnd.provenant.span-index"));
        }
    }
    let manifest = worker.stores.models.put(&built.manifest_bytes).await.map_err(JobError::transient)?;
    let index_id = super::job::index_id_of(job_id);
    let event = AttributionIndexBuilt {
        index_id: index_id.clone(),
        model_id: built.manifest.model_id.clone(),
        model_weights_sha256: built.manifest.model_weights_sha256.clone(),
        manifest: Some(blob_ref(manifest, "application/vnd.provenant.attribution-index+json")),
        index_sha256: built.index_sha256.clone(),
        example_count: built.manifest.example_count,
        phantom_count: built.manifest.phantom_count,
        projection_dim: u32::try_from(built.manifest.projection.dim).unwrap_or(u32::MAX),
        projection_seed: built.manifest.projection.seed,
        precision: built.manifest.precision.name().to_owned(),
        span_index: spans,
    };
    super::job::create_once(worker, cause, &event, derived_id(job_id, "attribution-index-built"), "attribution.id_taken").await?;
    info!(
        job_id,
        index_id,
        model_id = event.model_id,
        examples = event.example_count,
        phantoms = event.phantom_count,
        dim = event.projection_dim,
        "attribution index built"
    );
    Ok(())
}
