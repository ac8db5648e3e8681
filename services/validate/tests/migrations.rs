//! Schema migrations over a store that already holds accepted contributions, on SQLite and
//! PostgreSQL.

use provenant_test_support::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait as _, EntityTrait as _, IntoActiveModel as _, Statement};
use sea_orm_migration::MigratorTrait as _;
use validate::domain::near_duplicates::Signature;
use validate::projections::accepted;

/// Migrations before `m20261207_000003_compact_band_index`, the bus's bookkeeping included.
const BEFORE_COMPACT_BANDS: u32 = 3;

const TEXTS: [&str; 2] = [
    "You have an unusual equipment for success. Be sure to use it properly, and often, and well.",
    "A journey of a thousand miles begins with a single step, and then a great many more of them.",
];

fn row(index: usize) -> (accepted::Model, Signature) {
    let signature = Signature::of(TEXTS[index]).expect("words");
    let row = accepted::Model {
        contribution_id: format!("c-{index}"),
        datanet_id: "d-1".into(),
        contributor_id: format!("contributor-{index}"),
        content_sha256: format!("{index:064}"),
        cluster_id: format!("c-{index}"),
        signature: None,
        accepted_sequence: 100 + index as i64,
    };
    (accepted::with_signature(row, Some(&signature)), signature)
}

/// The contribution ids the band index names, through whichever column it has.
async fn band_members(database: &impl sea_orm::ConnectionTrait, column: &str) -> Vec<String> {
    let backend = database.get_database_backend();
    let sql = format!("SELECT DISTINCT CAST({column} AS VARCHAR(64)) AS member FROM near_duplicate_bands ORDER BY member");
    let rows = database.query_all_raw(Statement::from_string(backend, sql)).await.expect("reads the bands");
    rows.into_iter().map(|row| row.try_get::<String>("", "member").expect("a member")).collect()
}

#[tokio::test]
async fn the_band_index_is_carried_over_to_sequences_and_back() {
    provenant_test_support::init_logs();
    for backend in Backend::ALL {
        let test_database = TestDatabase::create(backend).await.expect("database");
        let database = provenant_bus::store::connect(&test_database.url).await.expect("connects");
        validate_migration::Migrator::up(&database, Some(BEFORE_COMPACT_BANDS)).await.expect("migrates to the old shape");
        let rows: Vec<(accepted::Model, Signature)> = (0..TEXTS.len()).map(row).collect();
        for (row, signature) in &rows {
            accepted::Entity::insert(row.clone().into_active_model()).exec_without_returning(&database).await.expect("old row");
            for key in signature.band_keys() {
                let sql = format!(
                    "INSERT INTO near_duplicate_bands (datanet_id, band_key, contribution_id) VALUES ('d-1', {}, '{}')",
                    key as i64, row.contribution_id
                );
                database.execute_unprepared(&sql).await.expect("old band row");
            }
        }

        validate_migration::Migrator::up(&database, None).await.expect("migrates");
        assert_eq!(band_members(&database, "accepted_sequence").await, ["100", "101"], "{backend:?}");
        for (row, signature) in &rows {
            let keys: Vec<u64> = signature.band_keys().collect();
            let found = accepted::sharing_bands(&database, &["d-1".to_owned()], &keys).await.expect("reads");
            assert_eq!(found, std::slice::from_ref(row), "{backend:?}: the candidates of {}", row.contribution_id);
            let elsewhere = accepted::sharing_bands(&database, &["d-2".to_owned()], &keys).await.expect("reads");
            assert_eq!(elsewhere, [], "{backend:?}: another Datanet's rows are no candidates");
        }

        // Back through `m20261207_000004_bands_keyed_alone` (the Datanet column comes back from
        // the contributions) and `m20261207_000003_compact_band_index`.
        validate_migration::Migrator::down(&database, Some(1)).await.expect("migrates back one step");
        assert_eq!(band_members(&database, "datanet_id").await, ["d-1"], "{backend:?}");
        assert_eq!(band_members(&database, "accepted_sequence").await, ["100", "101"], "{backend:?}");
        validate_migration::Migrator::down(&database, Some(1)).await.expect("migrates back another");
        assert_eq!(band_members(&database, "contribution_id").await, ["c-0", "c-1"], "{backend:?}");
        validate_migration::Migrator::up(&database, None).await.expect("migrates again");
        assert_eq!(band_members(&database, "accepted_sequence").await, ["100", "101"], "{backend:?}: carried over again");
        let band_rows = database
            .query_one_raw(Statement::from_string(database.get_database_backend(), "SELECT COUNT(*) AS n FROM near_duplicate_bands"))
            .await
            .expect("counts")
            .expect("a row")
            .try_get::<i64>("", "n")
            .expect("a count");
        assert_eq!(band_rows, 2 * 20, "{backend:?}: every band row carried over once");
        database.close().await.expect("closes");
        test_database.drop_database().await.expect("drop");
    }
}
