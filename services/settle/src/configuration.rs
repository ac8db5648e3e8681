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
    /// The settler's store: what it decides with (models, Datanet owners, indexes, policies) and
    /// what it decided (settled inferences, review items).
    pub database: DatabaseConfig,
    /// The ledger's store (transactions, postings, balances, periods): a projection of the
    /// settlement stream alone, so it may live apart. Absent: beside a SQLite file
    /// (`settle.db` → `settle-ledger.db`), so that the settler and the ledger projector do not
    /// take turns at one file's write lock; in the same database for any other URL.
    #[serde(default)]
    pub ledger_database: Option<DatabaseConfig>,
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

    /// The URL of the ledger's store, or `None` when it shares the settler's database (see
    /// [`Config::ledger_database`]).
    pub fn ledger_database_url(&self) -> Option<String> {
        let settler = self.database.url.expose();
        let url = match &self.ledger_database {
            Some(ledger) => ledger.url.expose().clone(),
            None => sqlite_sibling(settler, "-ledger")?,
        };
        (url != *settler).then_some(url)
    }
}

/// `sqlite://dir/name.db?query` → `sqlite://dir/name<suffix>.db?query`; `None` for any URL
/// but a SQLite file's (an in-memory database has no sibling).
fn sqlite_sibling(url: &str, suffix: &str) -> Option<String> {
    let (location, query) = url.split_once('?').map_or((url, None), |(location, query)| (location, Some(query)));
    let path = location.strip_prefix("sqlite://")?;
    if path.is_empty() || path.contains(":memory:") || query.is_some_and(|query| query.split('&').any(|pair| pair == "mode=memory")) {
        return None;
    }
    let sibling = match path.strip_suffix(".db") {
        Some(stem) => format!("{stem}{suffix}.db"),
        None => format!("{path}{suffix}"),
    };
    Some(match query {
        Some(query) => format!("sqlite://{sibling}?{query}"),
        None => format!("sqlite://{sibling}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(settler: &str, ledger: Option<&str>) -> Config {
        let mut config: Config = provenant_config::load_with(
            BASE_YAML,
            &provenant_config::Layers { directory: "/nonexistent".into(), environment: "test".into() },
            std::iter::empty::<(String, String)>(),
        )
        .expect("the embedded defaults load");
        config.database.url = provenant_config::Secret::new(settler.to_owned());
        config.ledger_database = ledger.map(|url| DatabaseConfig { url: provenant_config::Secret::new(url.to_owned()) });
        config
    }

    #[test]
    fn a_sqlite_files_ledger_lives_beside_it_unless_configured() {
        assert_eq!(
            with("sqlite://data/settle.db?mode=rwc", None).ledger_database_url().as_deref(),
            Some("sqlite://data/settle-ledger.db?mode=rwc")
        );
        assert_eq!(with("sqlite:///var/lib/pv/settle", None).ledger_database_url().as_deref(), Some("sqlite:///var/lib/pv/settle-ledger"));
        assert_eq!(with("sqlite://a.db", Some("sqlite://b.db")).ledger_database_url().as_deref(), Some("sqlite://b.db"));
    }

    #[test]
    fn any_other_database_holds_the_ledger_too_unless_configured() {
        for shared in ["postgres://pv@db/settle", "sqlite::memory:", "sqlite://shared?mode=memory&cache=shared"] {
            assert_eq!(with(shared, None).ledger_database_url(), None, "{shared}");
        }
        assert_eq!(with("sqlite://a.db", Some("sqlite://a.db")).ledger_database_url(), None);
        assert_eq!(with("postgres://pv@db/a", Some("postgres://pv@db/b")).ledger_database_url().as_deref(), Some("postgres://pv@db/b"));
    }
}
