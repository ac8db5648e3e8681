use std::net::SocketAddr;

use anyhow::Context as _;
use provenant_bus::{Bus, Consumer};
use provenant_runtime::{Readiness, Shutdown};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait as _;
use tokio::net::TcpListener;
use tracing::info;

use crate::api::{self, AppState};
use crate::configuration::Config;
use crate::handlers::DatanetProjector;

/// The ingest service, connected and bound, ready to run.
pub struct Application {
    config: Config,
    bus: Bus,
    database: DatabaseConnection,
    listener: TcpListener,
}

impl Application {
    /// Connects to NATS (declaring the streams), opens and migrates the database, and binds
    /// the HTTP port, so that any misconfiguration fails here, at boot.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let bus = Bus::connect(&config.bus).await.context("failed to connect to nats")?;
        bus.declare_streams().await.context("failed to declare streams")?;
        let database = provenant_bus::store::connect(config.database.url.expose()).await.context("failed to open the database")?;
        ingest_migration::Migrator::up(&database, None).await.context("failed to migrate the database")?;
        let listener = config.http.bind().await.with_context(|| format!("failed to bind {}:{}", config.http.host, config.http.port))?;
        Ok(Application { config, bus, database, listener })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves HTTP and runs the projection until `shutdown` fires; then stops pulling, lets
    /// the batch in hand commit and ack, finishes open requests, and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Application { config, bus, database, listener } = self;
        info!(address = %listener.local_addr()?, "ingest listening");
        let readiness = readiness(&bus, &database);
        let router =
            api::router(AppState { bus: bus.clone(), database: database.clone() }).merge(provenant_runtime::operational_routes(readiness));
        let projector = Consumer::new(bus, database.clone(), DatanetProjector::new(), config.consumer);
        let consumer_stop = shutdown.clone();
        let (served, consumed) = tokio::join!(provenant_runtime::serve(listener, router, shutdown.clone()), async move {
            let outcome = projector.run(consumer_stop.cancelled_owned()).await;
            // A consumer that dies takes the service down with it rather than serving stale reads.
            shutdown.cancel();
            outcome
        },);
        database.close().await.context("failed to close the database")?;
        served.context("http server failed")?;
        consumed.context("datanet projection failed")?;
        Ok(())
    }
}

fn readiness(bus: &Bus, database: &DatabaseConnection) -> Readiness {
    Readiness::default().with_check("nats", bus.readiness_check()).with_check("database", provenant_bus::store::readiness_check(database))
}
