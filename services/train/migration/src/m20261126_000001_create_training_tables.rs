use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The record format of each Datanet (how a worker cuts contributions into examples).
#[derive(DeriveIden)]
enum TrainingDatanets {
    Table,
    DatanetId,
    RecordFormat,
}

/// Sealed snapshots a job may pin: the root to check a pin against and the manifest to read.
#[derive(DeriveIden)]
enum TrainingSnapshots {
    Table,
    SnapshotId,
    DatanetId,
    MerkleRoot,
    EntryCount,
    ManifestSha256,
}

/// Every training job and where it stands, from the `TrainingJob*` events.
#[derive(DeriveIden)]
enum TrainingJobs {
    Table,
    JobId,
    Name,
    RequestedBy,
    /// The job's spec as the API shows it (JSON).
    Spec,
    Status,
    Step,
    TotalSteps,
    LossMicro,
    TokensPerSecond,
    Attempt,
    WorkerId,
    CheckpointStep,
    ModelId,
    ErrorCode,
    ErrorMessage,
    RequestedAt,
    UpdatedAt,
}

/// The model registry, from `ModelRegistered`.
#[derive(DeriveIden)]
enum Models {
    Table,
    ModelId,
    Name,
    Kind,
    BaseModelId,
    OwnerId,
    JobId,
    WeightsSha256,
    HeldOutPerplexityMilli,
    /// The registration as the API shows it, lineage and artifacts included (JSON).
    Registration,
    RegisteredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrainingDatanets::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(TrainingDatanets::DatanetId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(TrainingDatanets::RecordFormat).string_len(32).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TrainingSnapshots::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(TrainingSnapshots::SnapshotId).string_len(128).not_null().primary_key())
                    .col(ColumnDef::new(TrainingSnapshots::DatanetId).string_len(64).not_null())
                    .col(ColumnDef::new(TrainingSnapshots::MerkleRoot).string_len(64).not_null())
                    .col(ColumnDef::new(TrainingSnapshots::EntryCount).big_integer().not_null())
                    .col(ColumnDef::new(TrainingSnapshots::ManifestSha256).string_len(64).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TrainingJobs::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(TrainingJobs::JobId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(TrainingJobs::Name).string_len(128).not_null())
                    .col(ColumnDef::new(TrainingJobs::RequestedBy).string_len(128).not_null())
                    .col(ColumnDef::new(TrainingJobs::Spec).text().not_null())
                    .col(ColumnDef::new(TrainingJobs::Status).string_len(16).not_null())
                    .col(ColumnDef::new(TrainingJobs::Step).big_integer().not_null())
                    .col(ColumnDef::new(TrainingJobs::TotalSteps).big_integer().not_null())
                    .col(ColumnDef::new(TrainingJobs::LossMicro).big_integer().null())
                    .col(ColumnDef::new(TrainingJobs::TokensPerSecond).big_integer().null())
                    .col(ColumnDef::new(TrainingJobs::Attempt).integer().not_null())
                    .col(ColumnDef::new(TrainingJobs::WorkerId).string_len(128).null())
                    .col(ColumnDef::new(TrainingJobs::CheckpointStep).big_integer().null())
                    .col(ColumnDef::new(TrainingJobs::ModelId).string_len(64).null())
                    .col(ColumnDef::new(TrainingJobs::ErrorCode).string_len(64).null())
                    .col(ColumnDef::new(TrainingJobs::ErrorMessage).text().null())
                    .col(ColumnDef::new(TrainingJobs::RequestedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(TrainingJobs::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Models::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Models::ModelId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Models::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Models::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Models::BaseModelId).string_len(64).null())
                    .col(ColumnDef::new(Models::OwnerId).string_len(128).not_null())
                    .col(ColumnDef::new(Models::JobId).string_len(64).not_null())
                    .col(ColumnDef::new(Models::WeightsSha256).string_len(64).not_null())
                    .col(ColumnDef::new(Models::HeldOutPerplexityMilli).big_integer().not_null())
                    .col(ColumnDef::new(Models::Registration).text().not_null())
                    .col(ColumnDef::new(Models::RegisteredAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Models::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(TrainingJobs::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(TrainingSnapshots::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(TrainingDatanets::Table).to_owned()).await
    }
}
