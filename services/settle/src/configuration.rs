use std::collections::BTreeMap;

use provenant_bus::store::DatabaseConfig;
use provenant_bus::{BusConfig, ConsumerConfig};
use provenant_runtime::HttpConfig;
use provenant_runtime::identity::IdentityConfig;
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

use crate::domain::inference::CountLimits;
use crate::domain::period::{PeriodLength, Periods};
use crate::domain::policy::{Beneficiary, PolicyError, RevenuePolicy};

/// The settle service's configuration (defaults in `configuration/base.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub database: DatabaseConfig,
    pub consumer: ConsumerConfig,
    pub telemetry: TelemetryConfig,
    pub settlement: SettlementConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// Producer name → the model ids it may report inferences for (`"*"`: any).
    pub producers: BTreeMap<String, Vec<String>>,
    /// Producers whose `InferenceAttributed` (a receipt computed after the fact) pays out the
    /// contributors' part held for an inference that came without one.
    #[serde(default = "default_attributors")]
    pub attributors: Vec<String>,
    pub max_prompt_tokens: u32,
    pub max_output_tokens: u32,
    /// Beneficiary → parts per billion, for models without a policy of their own.
    pub default_policy: BTreeMap<Beneficiary, u64>,
    /// How long after a period ends before it may be closed: late inference events of the
    /// period still land in it meanwhile (after the close they go to the next open period).
    pub close_grace_seconds: u64,
    /// How long a settlement period is: `month` (the default), `day`, `hour` or `minute`.
    #[serde(default)]
    pub period: PeriodLength,
}

impl SettlementConfig {
    pub fn limits(&self) -> CountLimits {
        CountLimits { max_prompt_tokens: self.max_prompt_tokens, max_output_tokens: self.max_output_tokens }
    }

    pub fn periods(&self) -> Periods {
        Periods {
            length: self.period,
            close_grace: chrono::Duration::seconds(i64::try_from(self.close_grace_seconds).unwrap_or(i64::MAX / 1_000)),
        }
    }

    /// The default policy, checked (version 0).
    pub fn default_policy(&self) -> Result<RevenuePolicy, PolicyError> {
        RevenuePolicy::new(0, self.default_policy.iter().map(|(beneficiary, share)| (*beneficiary, *share)))
    }

    /// Whether `producer` may report inferences served by `model_ids` (base, then adapter).
    pub fn authorises(&self, producer: &str, model_ids: &[&str]) -> bool {
        self.producers.get(producer).is_some_and(|allowed| {
            allowed.iter().any(|model| model == "*") || model_ids.iter().all(|id| allowed.iter().any(|model| model == id))
        })
    }
}

fn default_attributors() -> Vec<String> {
    vec!["infer".to_owned()]
}

pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

impl Config {
    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(BASE_YAML)
    }
}
