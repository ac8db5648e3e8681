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
use crate::handlers::{DatanetProjector, IndexProjector, LedgerProjector, ModelProjector, PeriodProjector, PolicyProjector, Settler};

/// The settle service, connected and bound, ready to run.
pub struct Application {
    config: Config,
    frame: ServiceFrame,
    databases: Databases,
    directory: Arc<Directory>,
    settler: Settler,
}

impl Application {
    /// Checks the configuration, connects to NATS, opens and migrates the database, binds.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let directory = Arc::new(Directory::from_config(&config.identity).context("invalid identity configuration")?);
        let frame = ServiceFrame::build(&config.bus, &config.http).await?;
        let settler = Settler::new(frame.bus.clone(), config.settlement.clone()).context("invalid settlement.default_policy")?;
        let databases = open_databases(&config).await?;
        Ok(Application { config, frame, databases, directory, settler })
    }

    pub fn address(&self) -> SocketAddr {
        self.frame.address()
    }

    /// Runs the seven consumers and the HTTP API until `shutdown` fires; a consumer that fails
    /// stops the service.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Application { config, frame, databases: Databases { settler: database, ledger: ledger_database }, directory, settler } = self;
        let readiness = frame
            .readiness()
            .with_check("database", provenant_bus::store::readiness_check(&database))
            .with_check("ledger_database", provenant_bus::store::readiness_check(&ledger_database));
        let identity = provenant_bus::identity::follow_identity(&frame.bus, directory.clone(), shutdown.clone())
            .await
            .context("failed to load the issued API keys")?;
        let consumer = |config: &Config| config.consumer.clone();
        // A store may lack what the log holds (a lost volume, a restored backup, a deployment
        // upgraded from one SQLite file, a ledger given a database of its own): each pure
        // projection fills it from the log (`Handler::is_pure_projection`). Without its
        // catalogue the settler would retry every inference for ever.
        let models = Consumer::new(frame.bus.clone(), database.clone(), ModelProjector::default(), consumer(&config));
        let indexes = Consumer::new(frame.bus.clone(), database.clone(), IndexProjector::default(), consumer(&config));
        let datanets = Consumer::new(frame.bus.clone(), database.clone(), DatanetProjector::default(), consumer(&config));
        let policies = Consumer::new(frame.bus.clone(), database.clone(), PolicyProjector::default(), consumer(&config));
        let default_policy = settler.default_policy.clone();
        // The settler appends, so it never replays: its appends are in the log already.
        let inferences = Consumer::new(frame.bus.clone(), database.clone(), settler, consumer(&config));
        let ledger = Consumer::new(frame.bus.clone(), ledger_database.clone(), LedgerProjector::default(), consumer(&config));
        let periods = Consumer::new(frame.bus.clone(), ledger_database.clone(), PeriodProjector::default(), consumer(&config));
        let reports = frame.bus.blob_store("reports").await.context("failed to open the reports bucket")?;
        let state = AppState {
            bus: frame.bus.clone(),
            database: database.clone(),
            ledger: ledger_database.clone(),
            directory,
            default_policy,
            reports,
            periods: config.settlement.periods(),
        };
        let routes = api::router(state);
        let (served, models, indexes, datanets, policies, inferences, ledger, periods) = tokio::join!(
            frame.serve(routes, readiness, shutdown.clone()),
            provenant_bus::run_until_stopped(models, shutdown.clone()),
            provenant_bus::run_until_stopped(indexes, shutdown.clone()),
            provenant_bus::run_until_stopped(datanets, shutdown.clone()),
            provenant_bus::run_until_stopped(policies, shutdown.clone()),
            provenant_bus::run_until_stopped(inferences, shutdown.clone()),
            provenant_bus::run_until_stopped(ledger, shutdown.clone()),
            provenant_bus::run_until_stopped(periods, shutdown.clone()),
        );
        Databases { settler: database, ledger: ledger_database }.close().await.context("failed to close the databases")?;
        identity.abort();
        served?;
        models.context("model projection failed")?;
        indexes.context("index projection failed")?;
        datanets.context("Datanet projection failed")?;
        policies.context("policy projection failed")?;
        inferences.context("settling inferences failed")?;
        ledger.context("ledger projection failed")?;
        periods.context("period projection failed")?;
        Ok(())
    }
}

/// The service's two stores (one database unless they live apart, see
/// [`Config::ledger_database_url`]).
#[derive(Debug, Clone)]
pub struct Databases {
    /// Models, Datanet owners, indexes, policies, settled inferences, review items.
    pub settler: DatabaseConnection,
    /// The ledger and periods.
    pub ledger: DatabaseConnection,
}

impl Databases {
    pub async fn close(self) -> Result<(), sea_orm::DbErr> {
        self.settler.close().await?;
        self.ledger.close().await
    }
}

/// Opens both stores and brings their schema up to date; `--migrate-only` runs just this (the
/// deployment's migration step) and exits. Both carry every table: each uses its own.
pub async fn open_databases(config: &Config) -> anyhow::Result<Databases> {
    let settler = open_database(config.database.url.expose()).await?;
    let ledger = match config.ledger_database_url() {
        Some(url) => open_database(&url).await.context("the ledger's database")?,
        None => settler.clone(),
    };
    Ok(Databases { settler, ledger })
}

/// Opens a database and brings its schema up to date.
pub async fn open_database(url: &str) -> anyhow::Result<DatabaseConnection> {
    let database = provenant_bus::store::connect(url).await.context("failed to open the database")?;
    settle_migration::Migrator::up(&database, None).await.context("failed to migrate the database")?;
    Ok(database)
}
