use std::net::SocketAddr;

use anyhow::Context as _;
use provenant_bus::{BlobStore, Consumer, ServiceFrame};
use provenant_runtime::Shutdown;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait as _;

use crate::api::{self, AppState};
use crate::configuration::Config;
use crate::handlers::{ContributionValidator, PolicyProjector, SnapshotProjector};
use provenant_runtime::identity::Directory;
use std::sync::Arc;

/// The validate service, connected and bound, ready to run.
pub struct Application {
    config: Config,
    frame: ServiceFrame,
    database: DatabaseConnection,
    blobs: BlobStore,
    manifests: BlobStore,
    directory: Arc<Directory>,
}

impl Application {
    /// Connects to NATS (streams, the contributions bucket), opens and migrates the database,
    /// binds the HTTP port.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let directory = Arc::new(Directory::from_config(&config.identity).context("invalid identity configuration")?);
        let frame = ServiceFrame::build(&config.bus, &config.http).await?;
        let database = open_database(&config.database).await?;
        let blobs = frame.bus.blob_store("contributions").await.context("failed to open the contributions bucket")?;
        let manifests = frame.bus.blob_store("snapshots").await.context("failed to open the snapshots bucket")?;
        Ok(Application { config, frame, database, blobs, manifests, directory })
    }

    pub fn address(&self) -> SocketAddr {
        self.frame.address()
    }

    /// Runs both consumers and the operational endpoints until `shutdown` fires; a consumer
    /// that fails stops the service.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Application { config, frame, database, blobs, manifests, directory } = self;
        let readiness = frame.readiness().with_check("database", provenant_bus::store::readiness_check(&database));
        let identity = provenant_bus::identity::follow_identity(&frame.bus, directory.clone(), shutdown.clone())
            .await
            .context("failed to load the issued API keys")?;
        // The policy and snapshot projections fill a store lacking events (a lost volume, a
        // restored backup) from the log; the validator appends its verdicts, so it never replays.
        let policies = Consumer::new(frame.bus.clone(), database.clone(), PolicyProjector::default(), config.consumer.clone());
        let validator = ContributionValidator::new(frame.bus.clone(), blobs, manifests.clone(), config.validation.clone());
        let contributions = Consumer::new(frame.bus.clone(), database.clone(), validator, config.consumer.clone());
        let snapshots = Consumer::new(frame.bus.clone(), database.clone(), SnapshotProjector::new(manifests.clone()), config.consumer);
        let routes = api::router(AppState { bus: frame.bus.clone(), database: database.clone(), directory, manifests });
        let (served, policies, contributions, snapshots) = tokio::join!(
            frame.serve(routes, readiness, shutdown.clone()),
            provenant_bus::run_until_stopped(policies, shutdown.clone()),
            provenant_bus::run_until_stopped(contributions, shutdown.clone()),
            provenant_bus::run_until_stopped(snapshots, shutdown.clone()),
        );
        database.close().await.context("failed to close the database")?;
        identity.abort();
        served?;
        policies.context("policy projection failed")?;
        contributions.context("contribution validation failed")?;
        snapshots.context("snapshot projection failed")?;
        Ok(())
    }
}

/// Opens the database and brings its schema up to date; `--migrate-only` runs just this (the
/// deployment's migration step) and exits.
pub async fn open_database(config: &provenant_bus::store::DatabaseConfig) -> anyhow::Result<DatabaseConnection> {
    let database = provenant_bus::store::connect(config.url.expose()).await.context("failed to open the database")?;
    validate_migration::Migrator::up(&database, None).await.context("failed to migrate the database")?;
    Ok(database)
}
