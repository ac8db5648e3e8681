//! Schema migrations over a ledger that already holds settlements, on SQLite and PostgreSQL:
//! what was booked before a migration reads the same after it, and after its `down`.

use provenant_test_support::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, FromQueryResult, Statement};
use sea_orm_migration::MigratorTrait as _;
use settle::projections::ledger;

/// Migrations before `m20261206_000007_postings_by_sequence`, the bus's bookkeeping included.
const BEFORE_POSTINGS_BY_SEQUENCE: u32 = 7;

/// Two settlements in the shape before migration 7: postings keyed by settlement id, their
/// lines inserted out of order, and the second settlement's id sorting before the first's.
async fn book_old_shape(database: &DatabaseConnection) {
    for (settlement_id, sequence, fee) in [("s-b", 11, 1_000), ("s-a", 12, 500)] {
        database
            .execute_unprepared(&format!(
                "INSERT INTO ledger_transactions (settlement_id, kind, inference_event_id, request_id, model_id, period_id, \
                 currency, exponent, fee, policy_version, occurred_at, stream_sequence) VALUES ('{settlement_id}', 'inference', \
                 'e-{settlement_id}', 'r-{settlement_id}', 'm', '2026-11', 'EUR', 2, '{fee}', 1, '2026-11-02T10:00:00.000000Z', {sequence})"
            ))
            .await
            .expect("old transaction");
        let lines = [(1, "payable:contributor:ann", fee / 2, "d-en"), (0, "fees:caller:c", -fee, ""), (2, "payable:protocol", fee / 2, "")];
        for (line, account, amount, datanet) in lines {
            database
                .execute_unprepared(&format!(
                    "INSERT INTO ledger_postings (settlement_id, line, account, currency, exponent, amount, datanet_id) \
                     VALUES ('{settlement_id}', {line}, '{account}', 'EUR', 2, '{amount}', '{datanet}')"
                ))
                .await
                .expect("old posting");
        }
    }
}

#[derive(Debug, PartialEq, Eq, FromQueryResult)]
struct OldPosting {
    settlement_id: String,
    line: i32,
    account: String,
    amount: String,
}

#[tokio::test]
async fn postings_rekeyed_by_stream_sequence_keep_every_line_and_migrate_back() {
    provenant_test_support::init_logs();
    for backend in Backend::ALL {
        let test_database = TestDatabase::create(backend).await.expect("database");
        let database = provenant_bus::store::connect(&test_database.url).await.expect("connects");
        settle_migration::Migrator::up(&database, Some(BEFORE_POSTINGS_BY_SEQUENCE)).await.expect("migrates to the old shape");
        book_old_shape(&database).await;

        settle_migration::Migrator::up(&database, None).await.expect("migrates");
        for (settlement_id, sequence, fee) in [("s-b", 11, 1_000), ("s-a", 12, 500)] {
            let (transaction, lines) = ledger::find_transaction(&database, settlement_id).await.expect("reads").expect("booked");
            assert_eq!(transaction.stream_sequence, sequence, "{backend:?}");
            let read: Vec<(i64, i32, &str, String)> =
                lines.iter().map(|line| (line.stream_sequence, line.line, line.account.as_str(), line.amount.clone())).collect();
            let half = (fee / 2).to_string();
            assert_eq!(
                read,
                vec![
                    (sequence, 0, "fees:caller:c", (-fee).to_string()),
                    (sequence, 1, "payable:contributor:ann", half.clone()),
                    (sequence, 2, "payable:protocol", half),
                ],
                "{backend:?}: {settlement_id}'s lines, in line order"
            );
            assert_eq!(lines[1].datanet_id, "d-en", "{backend:?}");
        }
        let period = ledger::period_transactions(&database, "2026-11", i64::MAX).await.expect("reads the period");
        let per_settlement: Vec<(&str, usize)> =
            period.iter().map(|(transaction, lines)| (transaction.settlement_id.as_str(), lines.len())).collect();
        assert_eq!(per_settlement, [("s-b", 3), ("s-a", 3)], "{backend:?}: stream order, every line");

        settle_migration::Migrator::down(&database, Some(1)).await.expect("migrates back");
        let statement = Statement::from_string(
            database.get_database_backend(),
            "SELECT settlement_id, line, account, amount FROM ledger_postings ORDER BY settlement_id, line",
        );
        let old = OldPosting::find_by_statement(statement).all(&database).await.expect("reads the old shape");
        let keys: Vec<(&str, i32)> = old.iter().map(|posting| (posting.settlement_id.as_str(), posting.line)).collect();
        assert_eq!(keys, [("s-a", 0), ("s-a", 1), ("s-a", 2), ("s-b", 0), ("s-b", 1), ("s-b", 2)], "{backend:?}");
        assert_eq!(old[3], OldPosting { settlement_id: "s-b".into(), line: 0, account: "fees:caller:c".into(), amount: "-1000".into() });
        database.close().await.expect("closes");
        test_database.drop_database().await.expect("drops");
    }
}
