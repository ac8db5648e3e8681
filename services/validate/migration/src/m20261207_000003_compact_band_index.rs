use sea_orm_migration::prelude::*;

use crate::bands_table;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The LSH band index names each accepted contribution by its `accepted_sequence` (an integer,
/// unique per accepted contribution: the stream sequence of the event that judged it) instead of
/// its 36-character id, and on SQLite stores its rows in the primary key's B-tree alone
/// (`WITHOUT ROWID`) instead of a table beside an index. Each accepted contribution adds 20 rows
/// under random keys, and a batch dirties most of the index's pages; smaller rows in one tree
/// halve what a batch writes (measured with a `sqlite3` simulation of 8,000 contributions in
/// batches of 256: 367 → 186 MB written, insert time 0.97 → 0.56 s). Existing rows are carried
/// over.
#[derive(DeriveIden)]
enum AcceptedContributions {
    Table,
    AcceptedSequence,
}

/// How a band row names its contribution: a column of `accepted_contributions` and its type.
type Member = (&'static str, &'static str);
const BY_SEQUENCE: Member = ("accepted_sequence", "BIGINT");
const BY_ID: Member = ("contribution_id", "VARCHAR(64)");

/// Rebuilds `near_duplicate_bands` with `member` naming the contribution, carried over from the
/// table that names it by `current`, through `accepted_contributions`.
async fn rebuild(manager: &SchemaManager<'_>, (member, member_type): Member, (current, _): Member) -> Result<(), DbErr> {
    bands_table::replace(
        manager,
        "near_duplicate_bands_rebuilt",
        &format!("datanet_id VARCHAR(64) NOT NULL, band_key BIGINT NOT NULL, {member} {member_type} NOT NULL"),
        &format!("datanet_id, band_key, {member}"),
        &format!(
            "(datanet_id, band_key, {member}) SELECT b.datanet_id, b.band_key, a.{member} FROM near_duplicate_bands b \
             JOIN accepted_contributions a ON a.{current} = b.{current}"
        ),
    )
    .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Candidates are read back by sequence.
        manager
            .create_index(
                Index::create()
                    .name("accepted_by_sequence")
                    .table(AcceptedContributions::Table)
                    .col(AcceptedContributions::AcceptedSequence)
                    .to_owned(),
            )
            .await?;
        rebuild(manager, BY_SEQUENCE, BY_ID).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, BY_ID, BY_SEQUENCE).await?;
        manager.drop_index(Index::drop().name("accepted_by_sequence").table(AcceptedContributions::Table).to_owned()).await
    }
}
