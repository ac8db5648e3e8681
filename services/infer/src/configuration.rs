use provenant_bus::BusConfig;
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
}

/// How requests are decoded and how many adapters stay loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    /// Requests decoded together in one forward pass per base model, whatever their adapters;
    /// more wait for a free row.
    pub max_batch_size: usize,
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
