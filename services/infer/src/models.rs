//! Loaded models: a base model, once used, stays loaded with its decoding threads
//! ([`Batcher`]); adapters are kept as their low-rank factors (a few kB to MB each, never a
//! copy of the base) in a least-recently-used RAM cache (pinned ones are never evicted),
//! filled from the object store on first use, and joined to their base's batches per request.
//!
//! Loading is single-flight: concurrent first requests for one model wait on one load, and a
//! failed load leaves nothing behind, so the next request tries again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use model::backend::inference_device;
use model::{AdapterWeights, ModelConfig, Transformer};
use provenant_bus::BlobStore;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::batching::{BatchStats, Batcher};
use crate::catalog::{CatalogModel, Resolved};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An artifact the registration names is not in the object store.
    #[error("the {0} of model {1} is not stored")]
    Missing(&'static str, String),
    /// The artifact is there but does not load (corrupt, or for another base).
    #[error("model {0} does not load: {1}")]
    Unloadable(String, String),
    /// The object store did not answer.
    #[error("object store: {0}")]
    Store(#[from] provenant_bus::Error),
}

type Slot<T> = Arc<OnceCell<Arc<T>>>;

/// A loaded base: its weights and the thread that decodes every request for it.
pub struct LoadedBase {
    pub model: Arc<Transformer>,
    pub batcher: Batcher,
}

/// What a request runs on: its base, and its adapter's factors if it names one.
pub struct Serving {
    pub base: Arc<LoadedBase>,
    pub adapter: Option<(String, Arc<AdapterWeights>)>,
}

struct CachedAdapter {
    slot: Slot<AdapterWeights>,
    base_model_id: String,
    last_used: u64,
}

/// What `/v1/adapters` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoadedAdapter {
    pub model_id: String,
    pub base_model_id: String,
    pub pinned: bool,
}

/// Cache counters for `/v1/adapters` and metrics.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    pub hits: u64,
    pub loads: u64,
    pub evictions: u64,
    pub capacity: usize,
}

/// Base models and adapters, loaded on first use.
pub struct ModelCache {
    store: BlobStore,
    max_batch_rows: usize,
    decode_threads: usize,
    bases: Mutex<HashMap<String, Slot<LoadedBase>>>,
    adapters: Mutex<HashMap<String, CachedAdapter>>,
    capacity: usize,
    pinned: Vec<String>,
    clock: AtomicU64,
    hits: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
}

impl ModelCache {
    /// A cache whose bases decode on `decode_threads` threads each, up to `max_batch_rows`
    /// requests per forward pass of a thread.
    pub fn new(store: BlobStore, capacity: usize, pinned: Vec<String>, max_batch_rows: usize, decode_threads: usize) -> ModelCache {
        ModelCache {
            store,
            max_batch_rows,
            decode_threads,
            bases: Mutex::default(),
            adapters: Mutex::default(),
            capacity: capacity.max(1),
            pinned,
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// What answers for `resolved`: the base, and the adapter's factors if it names one.
    pub async fn get(&self, resolved: &Resolved) -> Result<Serving, LoadError> {
        let base_slot = Arc::clone(lock(&self.bases).entry(resolved.base.model_id.clone()).or_default());
        let base = self.fill(&base_slot, || self.load_base(&resolved.base)).await?;
        let Some(adapter) = &resolved.adapter else { return Ok(Serving { base, adapter: None }) };
        let slot = self.adapter_slot(adapter);
        let weights = self.fill(&slot, || self.load_adapter(&resolved.base, adapter)).await?;
        Ok(Serving { base, adapter: Some((adapter.model_id.clone(), weights)) })
    }

    /// Adapters in the cache, loaded or loading.
    pub fn loaded_adapters(&self) -> Vec<LoadedAdapter> {
        let adapters = lock(&self.adapters);
        let mut list: Vec<LoadedAdapter> = adapters
            .iter()
            .filter(|(_, cached)| cached.slot.initialized())
            .map(|(id, cached)| LoadedAdapter {
                model_id: id.clone(),
                base_model_id: cached.base_model_id.clone(),
                pinned: self.pinned.contains(id),
            })
            .collect();
        list.sort_by(|left, right| left.model_id.cmp(&right.model_id));
        list
    }

    /// Each loaded base's decoding counters.
    pub fn batch_stats(&self) -> Vec<(String, BatchStats)> {
        let mut list: Vec<(String, BatchStats)> =
            lock(&self.bases).iter().filter_map(|(id, slot)| slot.get().map(|base| (id.clone(), base.batcher.stats()))).collect();
        list.sort_by(|left, right| left.0.cmp(&right.0));
        list
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            capacity: self.capacity,
        }
    }

    async fn fill<T, F, Fut>(&self, slot: &Slot<T>, load: F) -> Result<Arc<T>, LoadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, LoadError>>,
    {
        if let Some(model) = slot.get() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("infer_model_cache_hits_total").increment(1);
            return Ok(Arc::clone(model));
        }
        let model = slot
            .get_or_try_init(|| async {
                let started = std::time::Instant::now();
                let model = load().await?;
                self.loads.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("infer_model_loads_total").increment(1);
                metrics::histogram!("infer_model_load_seconds").record(started.elapsed().as_secs_f64());
                Ok::<_, LoadError>(Arc::new(model))
            })
            .await?;
        Ok(Arc::clone(model))
    }

    /// The adapter's cache slot, marked as just used; makes room by evicting the least
    /// recently used unpinned adapter.
    fn adapter_slot(&self, adapter: &CatalogModel) -> Slot<AdapterWeights> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut adapters = lock(&self.adapters);
        if let Some(cached) = adapters.get_mut(&adapter.model_id) {
            cached.last_used = now;
            return Arc::clone(&cached.slot);
        }
        while adapters.len() >= self.capacity {
            let victim = adapters
                .iter()
                .filter(|(id, _)| !self.pinned.contains(id))
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(id, _)| id.clone());
            let Some(victim) = victim else { break };
            adapters.remove(&victim);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("infer_adapter_evictions_total").increment(1);
        }
        let slot = Slot::default();
        adapters.insert(
            adapter.model_id.clone(),
            CachedAdapter { slot: Arc::clone(&slot), base_model_id: adapter.base_model_id.clone(), last_used: now },
        );
        slot
    }

    async fn load_base(&self, base: &CatalogModel) -> Result<LoadedBase, LoadError> {
        let config = self.config_of(base).await?;
        let weights = self.blob(&base.weights_sha256, "weights", base).await?;
        let id = base.model_id.clone();
        let model = blocking(move || {
            Transformer::from_bytes(&config, &weights, &inference_device()).map_err(|error| LoadError::Unloadable(id, error.to_string()))
        })
        .await?;
        let model = Arc::new(model);
        let batcher = Batcher::start(Arc::clone(&model), base.weights_sha256.clone(), self.max_batch_rows, self.decode_threads)
            .map_err(|error| LoadError::Unloadable(base.model_id.clone(), format!("no decoding thread: {error}")))?;
        Ok(LoadedBase { model, batcher })
    }

    async fn load_adapter(&self, base: &CatalogModel, adapter: &CatalogModel) -> Result<AdapterWeights, LoadError> {
        let bytes = self.blob(&adapter.weights_sha256, "weights", adapter).await?;
        let weights =
            AdapterWeights::from_bytes(&bytes).map_err(|error| LoadError::Unloadable(adapter.model_id.clone(), error.to_string()))?;
        if weights.base_digest != base.weights_sha256 {
            let reason = format!("trained on base weights {}, not {}", weights.base_digest, base.weights_sha256);
            return Err(LoadError::Unloadable(adapter.model_id.clone(), reason));
        }
        Ok(weights)
    }

    async fn config_of(&self, model: &CatalogModel) -> Result<ModelConfig, LoadError> {
        let bytes = self.blob(&model.config_sha256, "config", model).await?;
        serde_json::from_slice(&bytes).map_err(|error| LoadError::Unloadable(model.model_id.clone(), format!("config: {error}")))
    }

    async fn blob(&self, sha256: &str, what: &'static str, model: &CatalogModel) -> Result<Vec<u8>, LoadError> {
        let bytes = self.store.get(sha256).await?.ok_or_else(|| LoadError::Missing(what, model.model_id.clone()))?;
        Ok(bytes.to_vec())
    }
}

/// Runs CPU-heavy loading off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, LoadError> + Send + 'static) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(LoadError::Unloadable("?".to_owned(), format!("the loading task failed: {error}"))))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
