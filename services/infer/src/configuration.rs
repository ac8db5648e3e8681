use provenant_bus::{BusConfig, ConsumerConfig};
use provenant_runtime::HttpConfig;
use provenant_runtime::identity::IdentityConfig;
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// The infer service's configuration (defaults in `configuration/base.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
    pub serving: ServingConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub late_receipts: LateReceiptsConfig,
}

/// Attributing inference events that came without a receipt ([`crate::late_receipts`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LateReceiptsConfig {
    pub enabled: bool,
    /// How long after a model registers its index may still come; events for a model without
    /// one are retried until then, refused (`attribution.no_index`) after.
    pub index_wait_seconds: u64,
    /// Each event costs a forward and backward pass, so batches are small; `max_deliver` and
    /// the backoff bound how long an event waits for its model's index.
    pub consumer: ConsumerConfig,
}

impl Default for LateReceiptsConfig {
    fn default() -> Self {
        LateReceiptsConfig {
            enabled: true,
            index_wait_seconds: 3_600,
            consumer: ConsumerConfig {
                batch_size: 8,
                ack_wait_seconds: 60,
                max_deliver: 12,
                initial_backoff_ms: 2_000,
                max_backoff_ms: 60_000,
            },
        }
    }
}

/// How requests are decoded and how many adapters stay loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    /// Requests decoded together in one forward pass per base model, whatever their adapters;
    /// more wait for a free row.
    pub max_batch_size: usize,
    /// Decoding threads per base model, each batching its own requests; 0 (the default): one
    /// per core on a CPU backend (Burn's CPU backend runs an operation on one core), one on a
    /// GPU (where one thread keeps every request in one pass).
    #[serde(default)]
    pub decode_threads: usize,
    /// `max_tokens` when a request names none.
    pub default_max_tokens: u32,
    /// The largest `max_tokens` accepted.
    pub max_tokens_limit: u32,
    /// The longest prompt accepted, in bytes, before tokenising (the context length bounds
    /// it again, in tokens).
    pub max_prompt_bytes: usize,
    /// Adapters kept loaded (merged onto their base) in RAM, least recently used evicted first.
    pub adapter_cache_entries: usize,
    /// Adapter model ids that are loaded at first use and never evicted.
    #[serde(default)]
    pub pinned_adapters: Vec<String>,
    /// Keep every prompt and answer in the `transcripts` bucket, under the digests
    /// `InferenceServed` names, so that a receipt can be recomputed later
    /// (`provenant attribution explain`).
    #[serde(default = "keep")]
    pub keep_transcripts: bool,
}

impl ServingConfig {
    /// [`decode_threads`](Self::decode_threads) with 0 resolved for this build's backend.
    pub fn decoding_threads(&self) -> usize {
        if self.decode_threads > 0 {
            self.decode_threads
        } else if model::backend::Backend::preferred().is_gpu() {
            1
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

fn keep() -> bool {
    true
}

pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

impl Config {
    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(BASE_YAML)
    }
}
