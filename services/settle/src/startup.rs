use std::net::SocketAddr;

use anyhow::Context as _;
use provenant_bus::{Bus, BusConfig};
use provenant_runtime::{HttpConfig, Readiness, Shutdown};
use provenant_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::info;

/// The settle service's configuration (defaults in `configuration/base.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
}

impl Config {
    pub const BASE_YAML: &str = include_str!("../configuration/base.yaml");

    /// Embedded defaults, then configuration files, then `PROVENANT_…` variables.
    pub fn load() -> Result<Config, provenant_config::Error> {
        provenant_config::load(Config::BASE_YAML)
    }
}

/// The settle service, connected and bound, ready to run.
pub struct Application {
    bus: Bus,
    listener: TcpListener,
}

impl Application {
    /// Connects to NATS, declares the streams and binds the HTTP port: misconfiguration fails
    /// here, at boot.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let bus = Bus::connect(&config.bus).await.context("failed to connect to nats")?;
        bus.declare_streams().await.context("failed to declare streams")?;
        let listener = config.http.bind().await.with_context(|| format!("failed to bind {}:{}", config.http.host, config.http.port))?;
        Ok(Application { bus, listener })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves the operational endpoints until `shutdown` fires.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        info!(address = %self.address(), "settle listening");
        let readiness = Readiness::default().with_check("nats", self.bus.readiness_check());
        provenant_runtime::serve(self.listener, provenant_runtime::operational_routes(readiness), shutdown)
            .await
            .context("http server failed")
    }
}
