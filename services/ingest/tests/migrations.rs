//! Schema migrations over a store that already holds contributions, on SQLite and PostgreSQL.

use chrono::{TimeZone as _, Utc};
use ingest::projections::{contributions, daily_usage};
use provenant_test_support::{Backend, TestDatabase};
use sea_orm::EntityTrait as _;
use sea_orm_migration::MigratorTrait as _;

/// Migrations before `m20261207_000004_create_contributor_daily_usage`, the bus's bookkeeping
/// included.
const BEFORE_DAILY_USAGE: u32 = 3;

fn contribution(id: &str, contributor_id: &str, size_bytes: u64, at: chrono::DateTime<Utc>) -> contributions::Model {
    let submitted = contributions::Submitted {
        id,
        datanet_id: "d-1",
        contributor_id,
        content_sha256: &"a".repeat(64),
        size_bytes,
        record_count: 1,
        record_format: "plain_text",
        file_name: None,
    };
    contributions::submitted_row(submitted, false, 1, at)
}

#[tokio::test]
async fn the_daily_quota_totals_are_filled_from_the_contributions_already_projected() {
    provenant_test_support::init_logs();
    for backend in Backend::ALL {
        let test_database = TestDatabase::create(backend).await.expect("database");
        let database = provenant_bus::store::connect(&test_database.url).await.expect("connects");
        ingest_migration::Migrator::up(&database, Some(BEFORE_DAILY_USAGE)).await.expect("migrates to the old shape");
        // Late on one UTC day and early the next: the days are UTC dates, whatever the hour.
        let late = Utc.with_ymd_and_hms(2026, 12, 6, 23, 59, 59).single().expect("a time");
        let early = Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 1).single().expect("a time");
        let rows = vec![
            contribution("c-1", "bob", 100, late),
            contribution("c-2", "bob", 250, late),
            contribution("c-3", "bob", 7, early),
            contribution("c-4", "alice", 1_000, early),
        ];
        contributions::save_all(&database, rows).await.expect("old contributions");

        ingest_migration::Migrator::up(&database, None).await.expect("migrates");
        assert_eq!(daily_usage::on_day_of(&database, "bob", late).await.expect("reads"), (2, 350), "{backend:?}");
        assert_eq!(daily_usage::on_day_of(&database, "bob", early).await.expect("reads"), (1, 7), "{backend:?}");
        assert_eq!(daily_usage::on_day_of(&database, "alice", early).await.expect("reads"), (1, 1_000), "{backend:?}");
        assert_eq!(daily_usage::on_day_of(&database, "alice", late).await.expect("reads"), (0, 0), "{backend:?}");
        assert_eq!(daily_usage::Entity::find().all(&database).await.expect("reads").len(), 3, "{backend:?}");

        ingest_migration::Migrator::down(&database, Some(1)).await.expect("migrates back");
        ingest_migration::Migrator::up(&database, None).await.expect("migrates again");
        assert_eq!(daily_usage::on_day_of(&database, "bob", late).await.expect("reads"), (2, 350), "{backend:?}: refilled");
        database.close().await.expect("closes");
        test_database.drop_database().await.expect("drop");
    }
}
