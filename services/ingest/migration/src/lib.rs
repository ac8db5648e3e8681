//! Schema migrations of the ingest service's projections, the same on SQLite and PostgreSQL.
//! The bus's bookkeeping tables come first: every projection writes its checkpoint there.

pub use sea_orm_migration::prelude::*;

mod m20261125_000002_create_datanets;
mod m20261126_000003_create_contributions;
mod m20261207_000004_create_contributor_daily_usage;

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(provenant_bus::store::Migration),
            Box::new(m20261125_000002_create_datanets::Migration),
            Box::new(m20261126_000003_create_contributions::Migration),
            Box::new(m20261207_000004_create_contributor_daily_usage::Migration),
        ]
    }
}
