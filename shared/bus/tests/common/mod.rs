//! A counting projection and helpers shared by the bus tests.
//!
//! The projection counts how many times each Datanet's events were applied, which is exactly
//! what an idempotency bug would change: every count must end at 1 per event.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::future::Future;
use std::time::{Duration, Instant};

use provenant_bus::{Bus, BusConfig, ConsumerConfig, Context, Delivery, Envelope, Expect, HandleError, Handler, Namespace, Upcasters};
use provenant_events::proto::datanet::v1::{DatanetCreated, DatanetSpec};
use provenant_test_support::TestDatabase;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};

pub struct CountingProjection {
    pub name: String,
    pub upcasters: Upcasters,
    /// Declared a pure projection, so that a store lacking events is refilled from the log.
    pub pure: bool,
}

impl CountingProjection {
    pub fn new(name: &str) -> CountingProjection {
        CountingProjection { name: name.to_owned(), upcasters: Upcasters::contract(), pure: false }
    }

    pub fn pure(name: &str) -> CountingProjection {
        CountingProjection { pure: true, ..CountingProjection::new(name) }
    }
}

impl Handler for CountingProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn context(&self) -> Context {
        Context::Datanet
    }

    fn filter_subjects(&self, namespace: &Namespace) -> Vec<String> {
        vec![namespace.aggregate_filter(Context::Datanet, "datanet")]
    }

    async fn handle(&self, transaction: &DatabaseTransaction, delivery: &Delivery) -> Result<(), HandleError> {
        let event: DatanetCreated = delivery.decode(&self.upcasters)?;
        if event.spec.as_ref().is_some_and(|spec| spec.name == "fail-transiently") {
            return Err(HandleError::Transient(anyhow::anyhow!("simulated outage")));
        }
        count_once_more(transaction, &event.datanet_id).await?;
        Ok(())
    }

    fn is_pure_projection(&self) -> bool {
        self.pure
    }
}

/// Adds one to the times `aggregate_id` was applied.
pub async fn count_once_more(transaction: &DatabaseTransaction, aggregate_id: &str) -> Result<(), sea_orm::DbErr> {
    let placeholder = match transaction.get_database_backend() {
        DbBackend::Postgres => "$1",
        _ => "?",
    };
    transaction
        .execute_raw(Statement::from_sql_and_values(
            transaction.get_database_backend(),
            format!(
                "INSERT INTO test_counts (aggregate_id, applied) VALUES ({placeholder}, 1) \
                 ON CONFLICT (aggregate_id) DO UPDATE SET applied = test_counts.applied + 1"
            ),
            [aggregate_id.into()],
        ))
        .await?;
    Ok(())
}

pub async fn migrate(database: &DatabaseConnection) {
    use sea_orm_migration::MigratorTrait;
    struct Migrator;
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![Box::new(provenant_bus::store::Migration)]
        }
    }
    Migrator::up(database, None).await.expect("bus migration runs");
    database
        .execute_unprepared("CREATE TABLE test_counts (aggregate_id VARCHAR(64) PRIMARY KEY, applied BIGINT NOT NULL)")
        .await
        .expect("test table");
}

/// (aggregate id, times applied), ordered.
pub async fn counts(database: &DatabaseConnection) -> Vec<(String, i64)> {
    let rows = database
        .query_all_raw(Statement::from_string(
            database.get_database_backend(),
            "SELECT aggregate_id, applied FROM test_counts ORDER BY aggregate_id",
        ))
        .await
        .expect("query");
    rows.into_iter().map(|row| (row.try_get_by_index(0).expect("id"), row.try_get_by_index(1).expect("count"))).collect()
}

pub async fn bus_on(url: &str) -> Bus {
    provenant_test_support::init_logs();
    let mut config = BusConfig::new(url, "bus-test");
    config.subject_root = provenant_test_support::unique_root();
    let bus = Bus::connect(&config).await.expect("connects");
    bus.declare_streams().await.expect("declares streams");
    bus
}

pub async fn shared_bus() -> Bus {
    bus_on(&provenant_test_support::nats_url()).await
}

pub async fn database(backend: provenant_test_support::Backend) -> (TestDatabase, DatabaseConnection) {
    let test_database = TestDatabase::create(backend).await.expect("test database");
    let connection = provenant_bus::store::connect(&test_database.url).await.expect("connects");
    migrate(&connection).await;
    (test_database, connection)
}

pub fn fast_consumer() -> ConsumerConfig {
    ConsumerConfig { batch_size: 64, ack_wait_seconds: 1, max_deliver: 4, initial_backoff_ms: 50, max_backoff_ms: 200 }
}

pub fn created(id: &str, name: &str) -> DatanetCreated {
    DatanetCreated { datanet_id: id.to_owned(), owner: None, spec: Some(DatanetSpec { name: name.to_owned(), ..Default::default() }) }
}

/// Publishes one DatanetCreated per id and returns their envelopes.
pub async fn publish_created(bus: &Bus, ids: &[String]) -> Vec<Envelope> {
    let mut envelopes = Vec::new();
    for id in ids {
        let event = created(id, "example");
        let envelope = Envelope::new(&event, bus.producer());
        bus.publish(&envelope, &event, Expect::NoEvents).await.expect("publishes");
        envelopes.push(envelope);
    }
    envelopes
}

pub fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|index| format!("{prefix}-{index:03}")).collect()
}

/// Polls `condition` until it holds, failing the test after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the durable consumer has nothing pending and nothing awaiting an ack.
pub async fn drained(bus: &Bus, consumer: &str) -> bool {
    let Ok(stream) = bus.jetstream().get_stream(bus.namespace().stream(Context::Datanet)).await else { return false };
    let Ok(mut consumer) = stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer).await else {
        return false;
    };
    match consumer.info().await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(_) => false,
    }
}
