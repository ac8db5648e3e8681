//! `provenant up`: every service in one process, exactly the libraries the pods run.

use std::path::PathBuf;

use anyhow::Context as _;
use provenant_bus::BusConfig;
use provenant_config::{Layers, Secret};
use provenant_runtime::Shutdown;
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::embedded_nats::EmbeddedNats;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub http: HttpPorts,
    pub telemetry: TelemetryConfig,
    /// API keys of the ingest API (see `provenant api-key new`).
    #[serde(default)]
    pub identity: provenant_runtime::identity::IdentityConfig,
    #[serde(default)]
    pub settlement: SettlementOverrides,
}

/// What `up` lets the settle service's configuration say differently.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementOverrides {
    /// Other services that publish the inferences they serve, each with the model ids it may
    /// report (`"*"`: any); added to settle's `settlement.producers`, beside infer itself.
    #[serde(default)]
    pub producers: std::collections::BTreeMap<String, Vec<String>>,
    /// settle's `settlement.period` (`month` by default).
    pub period: Option<settle::domain::period::PeriodLength>,
    /// settle's `settlement.close_grace_seconds` (3600 by default).
    pub close_grace_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// An existing server; empty to start the embedded one. May carry credentials.
    pub url: Secret<String>,
    pub server_binary: String,
    pub embedded_port: u16,
    pub subject_root: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPorts {
    pub host: String,
    pub ingest_port: u16,
    pub validate_port: u16,
    pub train_port: u16,
    pub infer_port: u16,
    pub settle_port: u16,
}

impl Config {
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(include_str!("../configuration/base.yaml"))
    }
}

/// A service's own defaults, without environment overrides: in one process the services
/// would all read the same `PROVENANT_HTTP__PORT`, so `up` sets what differs itself.
fn service_defaults<T: serde::de::DeserializeOwned>(base_yaml: &str) -> anyhow::Result<T> {
    let layers = Layers { directory: PathBuf::from("/nonexistent"), environment: "embedded".to_owned() };
    Ok(provenant_config::load_with(base_yaml, &layers, std::iter::empty())?)
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize()?;
    let embedded = if config.nats.url.expose().is_empty() {
        Some(EmbeddedNats::start(&config.nats.server_binary, &data_dir, config.nats.embedded_port).await?)
    } else {
        None
    };
    let nats_url = embedded.as_ref().map_or_else(|| config.nats.url.expose().clone(), |nats| nats.url.clone());
    let bus = |producer: &str| BusConfig { subject_root: config.nats.subject_root.clone(), ..BusConfig::new(&nats_url, producer) };
    let http = |port: u16| provenant_runtime::HttpConfig { host: config.http.host.clone(), port };

    let mut ingest: ingest::Config = service_defaults(ingest::configuration::BASE_YAML)?;
    ingest.bus = bus("ingest");
    ingest.http = http(config.http.ingest_port);
    ingest.identity = config.identity.clone();
    ingest.database.url = Secret::new(format!("sqlite://{}?mode=rwc", data_dir.join("ingest.db").display()));
    let mut validate: validate::Config = service_defaults(validate::BASE_YAML)?;
    validate.bus = bus("validate");
    validate.http = http(config.http.validate_port);
    validate.identity = config.identity.clone();
    validate.database.url = Secret::new(format!("sqlite://{}?mode=rwc", data_dir.join("validate.db").display()));
    let mut train: train::Config = service_defaults(train::BASE_YAML)?;
    train.bus = bus("train");
    train.http = http(config.http.train_port);
    train.identity = config.identity.clone();
    train.database.url = Secret::new(format!("sqlite://{}?mode=rwc", data_dir.join("train.db").display()));
    let mut infer: infer::Config = service_defaults(infer::BASE_YAML)?;
    infer.bus = bus("infer");
    infer.http = http(config.http.infer_port);
    infer.identity = config.identity.clone();
    let mut settle: settle::Config = service_defaults(settle::BASE_YAML)?;
    settle.bus = bus("settle");
    settle.http = http(config.http.settle_port);
    settle.identity = config.identity.clone();
    settle.settlement.producers.extend(config.settlement.producers.clone());
    settle.settlement.period = config.settlement.period.unwrap_or(settle.settlement.period);
    settle.settlement.close_grace_seconds = config.settlement.close_grace_seconds.unwrap_or(settle.settlement.close_grace_seconds);
    settle.database.url = Secret::new(format!("sqlite://{}?mode=rwc", data_dir.join("settle.db").display()));

    let outcome = async {
        let ingest = ingest::Application::build(ingest).await.context("ingest failed to start")?;
        let validate = validate::Application::build(validate).await.context("validate failed to start")?;
        let train = train::Application::build(train, train::Mode::Service).await.context("train failed to start")?;
        let infer = infer::Application::build(infer).await.context("infer failed to start")?;
        let settle = settle::Application::build(settle).await.context("settle failed to start")?;
        info!(
            ingest = %ingest.address(), validate = %validate.address(), train = %train.address(),
            infer = %infer.address(), settle = %settle.address(), nats = %nats_url, data_dir = %data_dir.display(),
            "provenant is up"
        );
        // One service failing stops them all: a half-running suite is worse than a stopped one.
        let stop_all_on_error = |result: anyhow::Result<()>| {
            if result.is_err() {
                shutdown.cancel();
            }
            result
        };
        let (ingest, validate, train, infer, settle) = tokio::join!(
            async { stop_all_on_error(ingest.run_until_stopped(shutdown.clone()).await) },
            async { stop_all_on_error(validate.run_until_stopped(shutdown.clone()).await) },
            async { stop_all_on_error(train.run_until_stopped(shutdown.clone()).await) },
            async { stop_all_on_error(infer.run_until_stopped(shutdown.clone()).await) },
            async { stop_all_on_error(settle.run_until_stopped(shutdown.clone()).await) },
        );
        ingest.context("ingest")?;
        validate.context("validate")?;
        train.context("train")?;
        infer.context("infer")?;
        settle.context("settle")
    }
    .await;
    if let Some(embedded) = embedded {
        embedded.stop().await?;
    }
    info!("provenant stopped");
    outcome
}
