use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What validation needs to know of each Datanet: its rules.
#[derive(DeriveIden)]
enum DatanetPolicies {
    Table,
    DatanetId,
    OwnerId,
    RecordFormat,
    ContributionPolicy,
    PersonalDataAction,
    JsonSchema,
}

/// Every accepted contribution: its content hash, duplicate cluster and MinHash signature.
#[derive(DeriveIden)]
enum AcceptedContributions {
    Table,
    ContributionId,
    DatanetId,
    ContributorId,
    ContentSha256,
    ClusterId,
    Signature,
    /// Stream sequence of the submission: the order of acceptance, and of snapshot entries.
    AcceptedSequence,
}

/// Submissions to approval-policy Datanets, held (as the submitted event's bytes) until the
/// owner approves.
#[derive(DeriveIden)]
enum HeldContributions {
    Table,
    ContributionId,
    DatanetId,
    SchemaVersion,
    Submission,
}

/// Sealed snapshots and their ordered entries (the manifest, kept for inclusion proofs).
#[derive(DeriveIden)]
enum Snapshots {
    Table,
    SnapshotId,
    DatanetId,
    Ordinal,
    MerkleRoot,
    EntryCount,
    ManifestSha256,
    SealedAt,
}

#[derive(DeriveIden)]
enum SnapshotEntries {
    Table,
    SnapshotId,
    Position,
    ContributionId,
    ContentSha256,
    ContributorId,
    ClusterId,
}

/// LSH band keys of accepted contributions, for near-duplicate candidates.
#[derive(DeriveIden)]
enum NearDuplicateBands {
    Table,
    DatanetId,
    BandKey,
    ContributionId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DatanetPolicies::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(DatanetPolicies::DatanetId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(DatanetPolicies::OwnerId).string_len(128).not_null())
                    .col(ColumnDef::new(DatanetPolicies::RecordFormat).string_len(32).not_null())
                    .col(ColumnDef::new(DatanetPolicies::ContributionPolicy).string_len(32).not_null())
                    .col(ColumnDef::new(DatanetPolicies::PersonalDataAction).string_len(32).not_null())
                    .col(ColumnDef::new(DatanetPolicies::JsonSchema).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AcceptedContributions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AcceptedContributions::ContributionId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(AcceptedContributions::DatanetId).string_len(64).not_null())
                    .col(ColumnDef::new(AcceptedContributions::ContributorId).string_len(128).not_null())
                    .col(ColumnDef::new(AcceptedContributions::ContentSha256).string_len(64).not_null())
                    .col(ColumnDef::new(AcceptedContributions::ClusterId).string_len(64).not_null())
                    .col(ColumnDef::new(AcceptedContributions::Signature).binary().null())
                    .col(ColumnDef::new(AcceptedContributions::AcceptedSequence).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("accepted_by_content")
                    .table(AcceptedContributions::Table)
                    .col(AcceptedContributions::DatanetId)
                    .col(AcceptedContributions::ContentSha256)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NearDuplicateBands::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(NearDuplicateBands::DatanetId).string_len(64).not_null())
                    .col(ColumnDef::new(NearDuplicateBands::BandKey).big_integer().not_null())
                    .col(ColumnDef::new(NearDuplicateBands::ContributionId).string_len(64).not_null())
                    .primary_key(
                        Index::create()
                            .col(NearDuplicateBands::DatanetId)
                            .col(NearDuplicateBands::BandKey)
                            .col(NearDuplicateBands::ContributionId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Snapshots::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Snapshots::SnapshotId).string_len(128).not_null().primary_key())
                    .col(ColumnDef::new(Snapshots::DatanetId).string_len(64).not_null())
                    .col(ColumnDef::new(Snapshots::Ordinal).big_integer().not_null())
                    .col(ColumnDef::new(Snapshots::MerkleRoot).string_len(64).not_null())
                    .col(ColumnDef::new(Snapshots::EntryCount).big_integer().not_null())
                    .col(ColumnDef::new(Snapshots::ManifestSha256).string_len(64).not_null())
                    .col(ColumnDef::new(Snapshots::SealedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("snapshots_by_ordinal")
                    .table(Snapshots::Table)
                    .col(Snapshots::DatanetId)
                    .col(Snapshots::Ordinal)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SnapshotEntries::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(SnapshotEntries::SnapshotId).string_len(128).not_null())
                    .col(ColumnDef::new(SnapshotEntries::Position).big_integer().not_null())
                    .col(ColumnDef::new(SnapshotEntries::ContributionId).string_len(64).not_null())
                    .col(ColumnDef::new(SnapshotEntries::ContentSha256).string_len(64).not_null())
                    .col(ColumnDef::new(SnapshotEntries::ContributorId).string_len(128).not_null())
                    .col(ColumnDef::new(SnapshotEntries::ClusterId).string_len(64).not_null())
                    .primary_key(Index::create().col(SnapshotEntries::SnapshotId).col(SnapshotEntries::Position))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HeldContributions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(HeldContributions::ContributionId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(HeldContributions::DatanetId).string_len(64).not_null())
                    .col(ColumnDef::new(HeldContributions::SchemaVersion).integer().not_null())
                    .col(ColumnDef::new(HeldContributions::Submission).binary().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(HeldContributions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SnapshotEntries::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Snapshots::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(NearDuplicateBands::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AcceptedContributions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(DatanetPolicies::Table).to_owned()).await
    }
}
