use sea_orm_migration::prelude::*;

use crate::bands_table;

/// The LSH band index drops its `datanet_id` column: a row is `(band_key, accepted_sequence)`,
/// and the lookup keeps the Datanet's candidates when it reads them from
/// `accepted_contributions` (where `accepted_sequence` names one contribution of one Datanet).
/// The 36-character id was two thirds of each of the 20 rows an accepted contribution adds under
/// random keys; without it the table shrinks to 30 % (a `sqlite3` simulation of 8,000
/// contributions in batches of 512: 1.0 → 0.39 s of inserts, 8.7 → 2.6 MiB). A band key
/// already hashes the band's index with its rows, so Datanets sharing a key share a band of
/// the same text: the few extra candidates this reads are dropped by the join.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table the rows move to before it takes the index's name.
const REBUILT: &str = "near_duplicate_bands_keyed";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        bands_table::replace(
            manager,
            REBUILT,
            "band_key BIGINT NOT NULL, accepted_sequence BIGINT NOT NULL",
            "band_key, accepted_sequence",
            "(band_key, accepted_sequence) SELECT band_key, accepted_sequence FROM near_duplicate_bands",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        bands_table::replace(
            manager,
            REBUILT,
            "datanet_id VARCHAR(64) NOT NULL, band_key BIGINT NOT NULL, accepted_sequence BIGINT NOT NULL",
            "datanet_id, band_key, accepted_sequence",
            "(datanet_id, band_key, accepted_sequence) SELECT a.datanet_id, b.band_key, b.accepted_sequence \
             FROM near_duplicate_bands b JOIN accepted_contributions a ON a.accepted_sequence = b.accepted_sequence",
        )
        .await
    }
}
