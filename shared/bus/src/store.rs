//! The consumer side's database plumbing: connecting to SQLite or PostgreSQL with the same
//! code, and the two tables through which every projection is idempotent.
//!
//! - `bus_processed_events` (consumer, event id): one row per event a consumer applied, written
//!   in the same transaction as the projection rows. A redelivered event finds its row and is
//!   acked without being applied again.
//! - `bus_consumer_checkpoints` (consumer): the last stream sequence the store accounts for
//!   (applied, a duplicate or dead-lettered), written with the batch. Compared at start with
//!   the server's ack floor, it tells a pure projection that its store lacks events.
//!
//! Every service's migrator runs [`Migration`] before its own migrations.

mod checkpoint;
mod migration;
mod processed_event;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

pub(crate) use checkpoint::{read as read_checkpoint, record_checkpoint};
pub use migration::Migration;
pub(crate) use processed_event::{record_processed, record_processed_batch};

/// Where a service keeps its projections.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://data/ingest.db?mode=rwc` (embedded default) or `postgres://user:pass@host/db`.
    /// Redacted in dumps: PostgreSQL URLs carry passwords.
    pub url: provenant_config::Secret<String>,
}

/// Opens a database by URL (`sqlite://path?mode=rwc`, `postgres://…`). SQLite files are put in
/// write-ahead-log mode so that readers never block the consumer's writes.
pub async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    // sqlx logs every statement at INFO: far too loud for a consumer applying thousands a second.
    options.sqlx_logging(false);
    // For a consumer writing batches of rows under random keys (measured with settle-bench):
    // - a multi-row insert inside a transaction keeps a statement journal (to undo itself alone
    //   if a row conflicts): in memory, not in a temporary file, whose writes took a sixth of
    //   the database thread's time;
    // - a page cache of 16 MiB per connection instead of 2, so that the pages a batch touches
    //   are read from memory rather than the file;
    // - a checkpoint every 8,192 WAL pages (32 MiB) instead of 1,000, so that a page written
    //   by several batches is copied back to the database once rather than after each.
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite.pragma("temp_store", "memory").pragma("cache_size", "-16384").pragma("wal_autocheckpoint", "8192")
    });
    let database = Database::connect(options).await?;
    if database.get_database_backend() == DbBackend::Sqlite {
        database.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    Ok(database)
}

/// How many connections an HTTP API reads a SQLite store through ([`readers`]).
pub const READ_CONNECTIONS: u32 = 4;

/// A pool for an HTTP API's reads of `database` (opened from `url` by [`connect`]). SQLite
/// opens one connection per pool, which a consumer's batch transaction holds from its first
/// statement to its commit, so that a request's read waited for the whole batch (measured
/// with `datanet-bench`: submissions read the Datanet and the quota total); in WAL mode
/// readers on their own connections see the last commit and never wait for the writer.
/// These connections are `query_only`, so the store keeps one writer. PostgreSQL pools
/// already hold several connections: `database` itself is returned, as for an in-memory
/// SQLite database, which a second pool would not share.
pub async fn readers(database: &DatabaseConnection, url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    if database.get_database_backend() != DbBackend::Sqlite || url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(database.clone());
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false).max_connections(READ_CONNECTIONS).min_connections(1);
    options.map_sqlx_sqlite_opts(|sqlite| sqlite.pragma("query_only", "ON"));
    Database::connect(options).await
}

/// A database that lives as long as the process, with the bookkeeping tables: for a consumer
/// whose effect is made idempotent by the log itself (a conditional append), so that its
/// processed-events rows only spare repeated work after a redelivery and need not survive a
/// restart. One connection, never recycled, because each in-memory SQLite connection is a
/// database of its own.
pub async fn in_memory() -> Result<DatabaseConnection, sea_orm::DbErr> {
    use sea_orm_migration::{MigrationTrait as _, SchemaManager};
    let mut options = ConnectOptions::new("sqlite::memory:");
    options.sqlx_logging(false).max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    let database = Database::connect(options).await?;
    Migration.up(&SchemaManager::new(&database)).await?;
    Ok(database)
}

/// A readiness check: ready while the database answers a ping.
pub fn readiness_check(
    database: &DatabaseConnection,
) -> impl Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
    let database = database.clone();
    move || {
        let database = database.clone();
        Box::pin(async move { database.ping().await.map_err(|error| error.to_string()) })
    }
}

/// Row counts of the bookkeeping tables, for tests and operators.
pub async fn processed_count(database: &impl ConnectionTrait, consumer: &str) -> Result<u64, sea_orm::DbErr> {
    processed_event::count(database, consumer).await
}
