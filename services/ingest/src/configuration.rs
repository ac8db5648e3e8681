use provenant_bus::store::DatabaseConfig;
use provenant_bus::{BusConfig, ConsumerConfig};
use provenant_runtime::HttpConfig;
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

use provenant_runtime::identity::IdentityConfig;

/// The ingest service's configuration (defaults in `configuration/base.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub database: DatabaseConfig,
    pub consumer: ConsumerConfig,
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    pub contributions: ContributionsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributionsConfig {
    /// Largest contribution (one text, one batch, one file), in bytes.
    pub max_bytes: u64,
    /// Per contributor and UTC day: contributions, and their bytes.
    pub daily_items_per_contributor: u64,
    pub daily_bytes_per_contributor: u64,
}

pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

impl Config {
    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(BASE_YAML)
    }
}
