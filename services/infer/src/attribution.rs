//! Receipts: every answer is attributed within its request, against the attribution index the
//! training job built for the model that answered (the adapter's for an adapter, the base's
//! otherwise).
//!
//! A query is one forward and backward pass on (prompt, output) with probes, giving the
//! output's projected gradient; one matrix–vector product scores it against every training
//! example and phantom; the span index finds verbatim reuse; `shared/attribution` turns both
//! into contributor shares. Indexes are followed from the log (`AttributionIndexBuilt`) and
//! loaded from the object store on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use attribution::{Attribution, BlockLayout, Index, Receipt};
use model::{Featurizer, Sequence, Transformer};
use provenant_bus::follow::Apply;
use provenant_bus::{BlobStore, Delivery, Event, Upcasters};
use provenant_events::proto::training::v1::AttributionIndexBuilt;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::warn;

/// Followed `AttributionIndexBuilt` events: each model's index digest, which is also where
/// its manifest is stored.
#[derive(Debug, Clone, Default)]
pub struct Indexes {
    inner: Arc<RwLock<HashMap<String, String>>>,
}

impl Indexes {
    /// Records an index; the first one built for a model stays (one job, one index).
    pub fn add(&self, event: &AttributionIndexBuilt) -> Result<(), String> {
        let manifest_sha256 = event.manifest.as_ref().map(|blob| blob.sha256.clone()).unwrap_or_default();
        if event.model_id.is_empty() || manifest_sha256.is_empty() {
            return Err(format!("index {} names no model or manifest", event.index_id));
        }
        if event.index_sha256 != manifest_sha256 {
            return Err(format!("index {} digest is not its manifest's", event.index_id));
        }
        let mut inner = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.entry(event.model_id.clone()).or_insert(manifest_sha256);
        Ok(())
    }

    fn get(&self, model_id: &str) -> Option<String> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(model_id).cloned()
    }
}

/// Feeds `AttributionIndexBuilt` into [`Indexes`].
pub struct IndexFollower {
    pub indexes: Indexes,
    pub upcasters: Upcasters,
}

impl Apply for IndexFollower {
    fn apply(&mut self, delivery: &Delivery) {
        if delivery.envelope.event_type != AttributionIndexBuilt::TYPE {
            return;
        }
        let outcome = delivery
            .decode::<AttributionIndexBuilt>(&self.upcasters)
            .map_err(|error| error.to_string())
            .and_then(|event| self.indexes.add(&event));
        if let Err(reason) = outcome {
            warn!(sequence = delivery.stream_sequence, %reason, "index follower: index skipped");
        }
    }
}

/// Why a receipt could not be computed (the answer is then recorded without one, and
/// settlement holds its attributable part until it is attributed).
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("object store: {0}")]
    Store(#[from] provenant_bus::Error),
    #[error("artifact {0} of the attribution index is not stored")]
    Missing(String),
    #[error("attribution index unusable: {0}")]
    Unusable(String),
}

/// A model with its index, ready to attribute answers: what a receipt is computed from, here
/// and in `provenant attribution explain`.
pub struct AttributedModel {
    index: Index,
    model: Transformer,
    featurizer: Featurizer,
}

fn unusable(error: impl std::fmt::Display) -> ReceiptError {
    ReceiptError::Unusable(error.to_string())
}

impl AttributedModel {
    /// Pairs a model (with its adapter attached, for an adapter) with its index; refused when
    /// the index was projected over other layers than the model has.
    pub fn new(index: Index, model: Transformer) -> Result<Self, ReceiptError> {
        let projection = &index.manifest.projection;
        let featurizer = Featurizer::new(&model, projection.seed, projection.per_side).map_err(unusable)?;
        let layout: Vec<BlockLayout> =
            featurizer.blocks().iter().map(|block| BlockLayout { name: block.name(), offset: block.offset, len: block.len }).collect();
        if layout != projection.blocks {
            return Err(unusable("the index was projected over other layers than this model has"));
        }
        Ok(Self { index, model, featurizer })
    }

    /// The attribution of `output` (its tokens) as an answer to `prompt` (its tokens, BOS
    /// first): one forward and backward pass, one scoring pass, span matching.
    pub fn attribute(&self, prompt: &[u32], output: &[u32]) -> Result<Attribution, ReceiptError> {
        let features = if output.is_empty() {
            // Nothing generated, nothing to explain: every score is zero.
            vec![0.0; self.featurizer.dim()]
        } else {
            let mut tokens = prompt.to_vec();
            tokens.extend_from_slice(output);
            let sequence = Sequence::answer(&tokens, prompt.len());
            self.featurizer.features(&self.model, &[sequence]).map_err(unusable)?
        };
        self.index.attribute(&features, output).map_err(unusable)
    }

    /// The receipt of request `request_id`: its attribution, named by the weights it was
    /// computed with and by this index's digest.
    pub fn receipt(
        &self,
        request_id: &str,
        base_weights_sha256: &str,
        adapter_weights_sha256: &str,
        prompt: &[u32],
        output: &[u32],
    ) -> Result<Receipt, ReceiptError> {
        Ok(Receipt {
            receipt_id: receipt_id(request_id),
            // The index's own method: an index built before v2 still gives v1 receipts.
            method: self.index.manifest.method.clone(),
            model_weights_sha256: base_weights_sha256.to_owned(),
            adapter_weights_sha256: adapter_weights_sha256.to_owned(),
            index_sha256: self.index.index_sha256.clone(),
            attribution: self.attribute(prompt, output)?,
        })
    }
}

/// The index whose manifest is stored under `manifest_sha256`, with every artifact it names,
/// each checked against its digest.
pub async fn fetch_index(store: &BlobStore, manifest_sha256: &str) -> Result<Index, ReceiptError> {
    let fetch = |sha256: String| async move {
        let bytes = store.get(&sha256).await?.ok_or_else(|| ReceiptError::Missing(sha256.clone()))?;
        Ok::<_, ReceiptError>(bytes.to_vec())
    };
    let manifest_bytes = fetch(manifest_sha256.to_owned()).await?;
    let manifest = attribution::Manifest::from_bytes(&manifest_bytes).map_err(unusable)?;
    let mut artifacts = HashMap::new();
    for artifact in manifest.artifacts() {
        artifacts.insert(artifact.sha256.clone(), fetch(artifact.sha256.clone()).await?);
    }
    tokio::task::spawn_blocking(move || Index::assemble(&manifest_bytes, &artifacts).map_err(unusable))
        .await
        .map_err(|error| unusable(format!("the loading task failed: {error}")))?
}

/// What answered a request.
pub struct Answered<'a> {
    pub request_id: &'a str,
    /// The base model, as the batcher holds it.
    pub base: &'a Arc<Transformer>,
    pub base_weights_sha256: &'a str,
    /// The adapter's model id and weights digest, when one answered.
    pub adapter: Option<(&'a str, &'a str)>,
    pub base_model_id: &'a str,
    pub prompt: &'a [u32],
    pub output: &'a [u32],
}

/// Loads indexes on first use and writes receipts.
pub struct Attributor {
    store: BlobStore,
    indexes: Indexes,
    loaded: Mutex<HashMap<String, Arc<OnceCell<Arc<AttributedModel>>>>>,
}

impl Attributor {
    pub fn new(store: BlobStore, indexes: Indexes) -> Self {
        Self { store, indexes, loaded: Mutex::default() }
    }

    /// Whether an index has been built for `model_id` (loaded or not).
    pub fn has_index(&self, model_id: &str) -> bool {
        self.indexes.get(model_id).is_some()
    }

    /// The receipt of one answer, or `None` when no index has been built for its model.
    pub async fn receipt(&self, answered: Answered<'_>) -> Result<Option<Receipt>, ReceiptError> {
        let model_id = answered.adapter.map_or(answered.base_model_id, |(adapter_id, _)| adapter_id);
        let Some(manifest_sha256) = self.indexes.get(model_id) else { return Ok(None) };
        let slot =
            Arc::clone(self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(model_id.to_owned()).or_default());
        let loaded = slot.get_or_try_init(|| self.load(&manifest_sha256, &answered)).await?;
        let loaded = Arc::clone(loaded);
        let request_id = answered.request_id.to_owned();
        let base_weights_sha256 = answered.base_weights_sha256.to_owned();
        let adapter_weights_sha256 = answered.adapter.map(|(_, sha256)| sha256.to_owned()).unwrap_or_default();
        let (prompt, output) = (answered.prompt.to_vec(), answered.output.to_vec());
        let started = std::time::Instant::now();
        let receipt = tokio::task::spawn_blocking(move || {
            loaded.receipt(&request_id, &base_weights_sha256, &adapter_weights_sha256, &prompt, &output)
        })
        .await
        .map_err(|error| unusable(format!("the attribution task failed: {error}")))??;
        metrics::histogram!("infer_receipt_seconds").record(started.elapsed().as_secs_f64());
        Ok(Some(receipt))
    }

    async fn load(&self, manifest_sha256: &str, answered: &Answered<'_>) -> Result<Arc<AttributedModel>, ReceiptError> {
        let index = fetch_index(&self.store, manifest_sha256).await?;
        let adapter_bytes = match answered.adapter {
            Some((_, sha256)) => Some(self.store.get(sha256).await?.ok_or_else(|| ReceiptError::Missing(sha256.to_owned()))?),
            None => None,
        };
        let base = Transformer::clone(answered.base);
        tokio::task::spawn_blocking(move || {
            let model = match adapter_bytes {
                Some(bytes) => base.load_adapter(&bytes).map_err(unusable)?,
                None => base,
            };
            AttributedModel::new(index, model).map(Arc::new)
        })
        .await
        .map_err(|error| unusable(format!("the loading task failed: {error}")))?
    }
}

/// A receipt's id: derived from its request, so recomputing it gives the same id.
fn receipt_id(request_id: &str) -> String {
    let digest = Sha256::digest(format!("provenant/receipt/{request_id}").as_bytes());
    uuid::Uuid::new_v8(digest[..16].try_into().expect("16 bytes")).to_string()
}
