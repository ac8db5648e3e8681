use provenant_bus::store::DatabaseConfig;
use provenant_bus::{BusConfig, ConsumerConfig};
use provenant_runtime::HttpConfig;
use provenant_runtime::identity::IdentityConfig;
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// The validate service's configuration (defaults in `configuration/base.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub database: DatabaseConfig,
    pub consumer: ConsumerConfig,
    pub telemetry: TelemetryConfig,
    pub validation: ValidationConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
}

/// The rules every Datanet shares; per-Datanet policy comes from its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Estimated Jaccard similarity of word shingles at which a text is a near duplicate.
    pub near_duplicate_threshold: f64,
    /// Shortest acceptable record, in characters.
    pub min_chars: usize,
    /// Largest acceptable record, in bytes.
    pub max_record_bytes: usize,
}

pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

impl Config {
    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(BASE_YAML)
    }
}
