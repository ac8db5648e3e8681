//! `store::readers` against real SQLite and PostgreSQL: an HTTP API's reads neither wait for a
//! consumer's open transaction nor see it, see its commit, and cannot write.

use std::time::Duration;

use provenant_bus::store;
use provenant_test_support::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait as _, DbBackend, Statement, TransactionTrait as _};

async fn count(database: &impl sea_orm::ConnectionTrait) -> i64 {
    let statement = Statement::from_string(database.get_database_backend(), "SELECT COUNT(*) AS n FROM readers_probe");
    let row = database.query_one_raw(statement).await.expect("counts").expect("a row");
    row.try_get::<i64>("", "n").expect("a count")
}

#[tokio::test]
async fn readers_see_commits_without_waiting_for_an_open_transaction_and_cannot_write() {
    for backend in Backend::ALL {
        let test_database = TestDatabase::create(backend).await.expect("database");
        let writer = store::connect(&test_database.url).await.expect("connects");
        writer.execute_unprepared("CREATE TABLE readers_probe (id BIGINT PRIMARY KEY)").await.expect("table");
        let readers = store::readers(&writer, &test_database.url).await.expect("readers");

        let transaction = writer.begin().await.expect("begins");
        transaction.execute_unprepared("INSERT INTO readers_probe (id) VALUES (1)").await.expect("inserts");
        // SQLite's writer pool has one connection, held by the transaction: a read through it
        // would wait until the commit. The readers answer at once, from the last commit.
        let read = tokio::time::timeout(Duration::from_secs(5), count(&readers)).await;
        assert_eq!(read.expect("the read does not wait for the writer"), 0, "{backend:?}");
        transaction.commit().await.expect("commits");
        assert_eq!(count(&readers).await, 1, "{backend:?}");

        if writer.get_database_backend() == DbBackend::Sqlite {
            let refused = readers.execute_unprepared("INSERT INTO readers_probe (id) VALUES (2)").await;
            assert!(refused.is_err(), "a reader connection wrote");
        }
        readers.close().await.expect("closes");
        writer.close().await.expect("closes");
        test_database.drop_database().await.expect("drops");
    }
}
