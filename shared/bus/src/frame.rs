//! What every service does at boot before its own parts: connect to the event log, declare the
//! streams, bind its HTTP port; and at run time, serve its routes next to the operational ones
//! (health, readiness, metrics) until shutdown.

use std::net::SocketAddr;

use anyhow::Context as _;
use provenant_runtime::{HttpConfig, Readiness, Shutdown};
use tokio::net::TcpListener;
use tracing::info;

use crate::{Bus, BusConfig};

/// A service connected to NATS (streams declared) with its HTTP port bound.
pub struct ServiceFrame {
    pub bus: Bus,
    listener: TcpListener,
}

impl ServiceFrame {
    /// Connects and binds now, so that a bad URL or a taken port fails at boot.
    pub async fn build(bus: &BusConfig, http: &HttpConfig) -> anyhow::Result<ServiceFrame> {
        // The metrics recorder before anything records (what `provenant_telemetry::init` does in
        // a binary; here too for a service built in a test or embedded in another process).
        provenant_telemetry::metrics::prometheus();
        let bus = Bus::connect(bus).await.context("failed to connect to nats")?;
        bus.declare_streams().await.context("failed to declare streams")?;
        let listener = http.bind().await.with_context(|| format!("failed to bind {}:{}", http.host, http.port))?;
        Ok(ServiceFrame { bus, listener })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Readiness that every service has: connected to NATS.
    pub fn readiness(&self) -> Readiness {
        Readiness::default().with_check("nats", self.bus.readiness_check())
    }

    /// Serves `routes` and the operational routes until `shutdown` fires, then lets open
    /// requests finish.
    pub async fn serve(self, routes: axum::Router, readiness: Readiness, shutdown: Shutdown) -> anyhow::Result<()> {
        info!(service = self.bus.producer(), address = %self.address(), "listening");
        let routes = provenant_runtime::instrument_api(routes, self.bus.producer());
        let router = routes.merge(provenant_runtime::operational_routes(readiness));
        provenant_runtime::serve(self.listener, router, shutdown).await.context("http server failed")
    }
}
