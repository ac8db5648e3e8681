use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use provenant_bus::{Consumer, ServiceFrame};
use provenant_runtime::Shutdown;
use provenant_runtime::identity::Directory;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait as _;

use crate::api::{self, AppState};
use crate::configuration::Config;
use crate::handlers::{CatalogProjector, JobProjector};
use crate::queue::WorkQueue;
use crate::worker::{Stores, Worker};

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The API, the projections and `workers.count` workers.
    Service,
    /// Workers only (GPU nodes): NATS and the object store, no database; health endpoints only.
    WorkerOnly,
}

/// The train service, connected and bound, ready to run.
pub struct Application {
    config: Config,
    frame: ServiceFrame,
    database: Option<DatabaseConnection>,
    queue: WorkQueue,
    stores: Stores,
    directory: Arc<Directory>,
}

impl Application {
    /// Connects to NATS (streams, the work queue, the buckets), opens and migrates the
    /// database (service mode), binds the HTTP port.
    pub async fn build(config: Config, mode: Mode) -> anyhow::Result<Application> {
        let directory = Arc::new(Directory::from_config(&config.identity).context("invalid identity configuration")?);
        // Every job's index records these rules: refuse bad ones at boot, not at a job's end.
        config.workers.attribution.rules.check().context("invalid workers.attribution.rules")?;
        let frame = ServiceFrame::build(&config.bus, &config.http).await?;
        let queue = WorkQueue::declare(&frame.bus).await.context("failed to declare the training queue")?;
        let stores = Stores::open(&frame.bus).await.context("failed to open the object store buckets")?;
        let database = match mode {
            Mode::WorkerOnly => None,
            Mode::Service => {
                let database = open_database(&config.database).await?;
                Some(database)
            }
        };
        Ok(Application { config, frame, database, queue, stores, directory })
    }

    pub fn address(&self) -> SocketAddr {
        self.frame.address()
    }

    /// Runs until `shutdown` fires; a consumer that fails stops the service.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Application { config, frame, database, queue, stores, directory } = self;
        let worker_count = if database.is_some() { config.workers.count } else { config.workers.count.max(1) };
        let workers: Vec<Worker> =
            (0..worker_count).map(|_| Worker::new(frame.bus.clone(), queue.clone(), stores.clone(), config.workers.clone())).collect();
        let Some(database) = database else {
            let readiness = frame.readiness();
            let (served, worked) = tokio::join!(
                frame.serve(axum::Router::new(), readiness, shutdown.clone()),
                crate::worker::run_workers(workers, shutdown.clone())
            );
            served?;
            return worked;
        };
        let readiness = frame.readiness().with_check("database", provenant_bus::store::readiness_check(&database));
        let identity = provenant_bus::identity::follow_identity(&frame.bus, directory.clone(), shutdown.clone())
            .await
            .context("failed to load the issued API keys")?;
        // A pure projection: a store lacking events (a lost volume, a restored backup) is filled
        // from the log. The job projector queues work, so it never replays.
        let catalog = Consumer::new(frame.bus.clone(), database.clone(), CatalogProjector::default(), config.consumer.clone());
        let jobs = Consumer::new(frame.bus.clone(), database.clone(), JobProjector::new(queue), config.consumer.clone());
        let routes = api::router(AppState {
            bus: frame.bus.clone(),
            database: database.clone(),
            directory,
            limits: config.limits.clone(),
            models: stores.models.clone(),
        });
        let (served, catalog, jobs, worked) = tokio::join!(
            frame.serve(routes, readiness, shutdown.clone()),
            provenant_bus::run_until_stopped(catalog, shutdown.clone()),
            provenant_bus::run_until_stopped(jobs, shutdown.clone()),
            crate::worker::run_workers(workers, shutdown.clone()),
        );
        database.close().await.context("failed to close the database")?;
        identity.abort();
        served?;
        catalog.context("catalog projection failed")?;
        jobs.context("job projection failed")?;
        worked.context("training workers failed")?;
        Ok(())
    }
}

/// Opens the database and brings its schema up to date; `--migrate-only` runs just this (the
/// deployment's migration step) and exits.
pub async fn open_database(config: &provenant_bus::store::DatabaseConfig) -> anyhow::Result<DatabaseConnection> {
    let database = provenant_bus::store::connect(config.url.expose()).await.context("failed to open the database")?;
    train_migration::Migrator::up(&database, None).await.context("failed to migrate the database")?;
    Ok(database)
}
