//! Schema migrations of the validate service's projections, the same on SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod bands_table;
mod m20261126_000001_create_validation_tables;
mod m20261126_000002_seal_policy;
mod m20261207_000003_compact_band_index;
mod m20261207_000004_bands_keyed_alone;

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(provenant_bus::store::Migration),
            Box::new(m20261126_000001_create_validation_tables::Migration),
            Box::new(m20261126_000002_seal_policy::Migration),
            Box::new(m20261207_000003_compact_band_index::Migration),
            Box::new(m20261207_000004_bands_keyed_alone::Migration),
        ]
    }
}
