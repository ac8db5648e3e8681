use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use provenant_bus::{BlobStore, Consumer, ServiceFrame};
use provenant_runtime::Shutdown;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait as _;

use crate::api::{self, AppState};
use crate::configuration::Config;
use crate::handlers::{ContributionProjector, DatanetProjector};
use provenant_runtime::identity::Directory;

/// The ingest service, connected and bound, ready to run.
pub struct Application {
    config: Config,
    frame: ServiceFrame,
    database: DatabaseConnection,
    /// The HTTP API's connections to the same store (see `provenant_bus::store::readers`).
    readers: DatabaseConnection,
    directory: Arc<Directory>,
    blobs: BlobStore,
}

impl Application {
    /// Connects to NATS (declaring the streams), opens and migrates the database, and binds
    /// the HTTP port, so that any misconfiguration fails here, at boot.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let directory = Arc::new(Directory::from_config(&config.identity).context("invalid identity configuration")?);
        let frame = ServiceFrame::build(&config.bus, &config.http).await?;
        let database = open_database(&config.database).await?;
        let readers = provenant_bus::store::readers(&database, config.database.url.expose())
            .await
            .context("failed to open the database for reading")?;
        let blobs = frame.bus.blob_store("contributions").await.context("failed to open the contributions bucket")?;
        Ok(Application { config, frame, database, readers, directory, blobs })
    }

    pub fn address(&self) -> SocketAddr {
        self.frame.address()
    }

    /// Serves HTTP and runs the projection until `shutdown` fires; then stops pulling, lets
    /// the batch in hand commit and ack, finishes open requests, and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Application { config, frame, database, readers, directory, blobs } = self;
        let readiness = frame.readiness().with_check("database", provenant_bus::store::readiness_check(&database));
        let identity = provenant_bus::identity::follow_identity(&frame.bus, directory.clone(), shutdown.clone())
            .await
            .context("failed to load the issued API keys")?;
        // Both are pure projections: a store lacking events (a lost volume, a restored backup) is
        // filled from the log.
        let datanets = Consumer::new(frame.bus.clone(), database.clone(), DatanetProjector::new(), config.consumer.clone());
        let contributions = Consumer::new(frame.bus.clone(), database.clone(), ContributionProjector::new(), config.consumer);
        let routes = api::router(AppState {
            bus: frame.bus.clone(),
            database: readers.clone(),
            directory,
            blobs,
            contribution_max_bytes: config.contributions.max_bytes,
            quotas: config.contributions.clone(),
            contributions_projected: contributions.progress(),
        });
        let (served, datanets_outcome, contributions_outcome) = tokio::join!(
            frame.serve(routes, readiness, shutdown.clone()),
            provenant_bus::run_until_stopped(datanets, shutdown.clone()),
            provenant_bus::run_until_stopped(contributions, shutdown.clone()),
        );
        readers.close().await.context("failed to close the database")?;
        database.close().await.context("failed to close the database")?;
        identity.abort();
        served?;
        datanets_outcome.context("datanet projection failed")?;
        contributions_outcome.context("contribution projection failed")?;
        Ok(())
    }
}

/// Opens the database and brings its schema up to date; `--migrate-only` runs just this (the
/// deployment's migration step) and exits.
pub async fn open_database(config: &provenant_bus::store::DatabaseConfig) -> anyhow::Result<DatabaseConnection> {
    let database = provenant_bus::store::connect(config.url.expose()).await.context("failed to open the database")?;
    ingest_migration::Migrator::up(&database, None).await.context("failed to migrate the database")?;
    Ok(database)
}
