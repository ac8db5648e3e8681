use provenant_bus::store::DatabaseConfig;
use provenant_bus::{BusConfig, ConsumerConfig};
use provenant_runtime::HttpConfig;
use provenant_runtime::identity::IdentityConfig;
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// The train service's configuration (defaults in `configuration/base.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub database: DatabaseConfig,
    pub consumer: ConsumerConfig,
    pub telemetry: TelemetryConfig,
    pub workers: WorkersConfig,
    pub limits: Limits,
    #[serde(default)]
    pub identity: IdentityConfig,
}

/// How training workers pull, heartbeat and give up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Workers run beside the API (0 on API-only pods when workers run on GPU nodes).
    pub count: usize,
    /// Seconds without a heartbeat after which a job is handed to another worker.
    pub ack_wait_seconds: u64,
    pub heartbeat_seconds: u64,
    /// Deliveries of one job before it fails with `worker.attempts_exhausted`.
    pub max_attempts: u32,
    pub progress_interval_ms: u64,
    /// The attribution index every job builds at its end.
    #[serde(default)]
    pub attribution: AttributionConfig,
}

/// How the attribution index is built (`shared/attribution`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// Projected width of each side of a layer: a plain layer's block is `per_side²` wide.
    pub per_side: usize,
    /// `f16` or `int8`.
    pub precision: attribution::Precision,
    /// Fisher damping, as a fraction of each block's mean diagonal.
    pub damping: f64,
    /// Held-out examples featurised as phantom controls, at most.
    pub max_phantoms: usize,
    /// Examples per featurisation pass.
    pub batch_examples: usize,
    /// The receipt rules recorded in the index.
    pub rules: attribution::ReceiptRules,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            per_side: 4,
            precision: attribution::Precision::F16,
            damping: 0.1,
            max_phantoms: 256,
            batch_examples: 16,
            rules: attribution::ReceiptRules::default(),
        }
    }
}

/// The largest job the service accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_steps: u64,
    pub max_layers: usize,
    pub max_width: usize,
    pub max_context_length: usize,
    pub max_batch_size: usize,
    pub max_snapshots: usize,
}

pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

impl Config {
    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(BASE_YAML)
    }
}
