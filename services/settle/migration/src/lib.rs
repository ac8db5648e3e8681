//! Schema migrations of the settle service's projections and ledger, the same on SQLite and
//! PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_settlement_tables;
mod m20261126_000002_create_periods;
mod m20261127_000003_index_transactions_by_request;
mod m20261127_000004_create_ledger_closed_periods;
mod m20261206_000005_datanet_of_postings;
mod m20261206_000006_create_settle_indexes;
mod m20261206_000007_postings_by_sequence;

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(provenant_bus::store::Migration),
            Box::new(m20261126_000001_create_settlement_tables::Migration),
            Box::new(m20261126_000002_create_periods::Migration),
            Box::new(m20261127_000003_index_transactions_by_request::Migration),
            Box::new(m20261127_000004_create_ledger_closed_periods::Migration),
            Box::new(m20261206_000005_datanet_of_postings::Migration),
            Box::new(m20261206_000006_create_settle_indexes::Migration),
            Box::new(m20261206_000007_postings_by_sequence::Migration),
        ]
    }
}
