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
    /// Read-your-writes: a submission answers once its own read model shows it (up to 2 s), so
    /// a `GET` right after finds it. Off, the answer comes as soon as the event is durable:
    /// faster for bulk importers that do not read back at once.
    #[serde(default = "await_read_model_default")]
    pub await_read_model: bool,
}

fn await_read_model_default() -> bool {
    true
}

pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

impl Config {
    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(BASE_YAML)
    }
}
