use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Contributions {
    Table,
    Id,
    DatanetId,
    ContributorId,
    ContentSha256,
    SizeBytes,
    RecordCount,
    RecordFormat,
    FileName,
    Status,
    Reasons,
    QualityScorePpm,
    DuplicateClusterId,
    Flags,
    Version,
    SubmittedAt,
    DecidedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Contributions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Contributions::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Contributions::DatanetId).string_len(64).not_null())
                    .col(ColumnDef::new(Contributions::ContributorId).string_len(128).not_null())
                    .col(ColumnDef::new(Contributions::ContentSha256).string_len(64).not_null())
                    .col(ColumnDef::new(Contributions::SizeBytes).big_integer().not_null())
                    .col(ColumnDef::new(Contributions::RecordCount).integer().not_null())
                    .col(ColumnDef::new(Contributions::RecordFormat).string_len(32).not_null())
                    .col(ColumnDef::new(Contributions::FileName).string_len(255).null())
                    .col(ColumnDef::new(Contributions::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Contributions::Reasons).text().not_null())
                    .col(ColumnDef::new(Contributions::QualityScorePpm).integer().null())
                    .col(ColumnDef::new(Contributions::DuplicateClusterId).string_len(64).null())
                    .col(ColumnDef::new(Contributions::Flags).text().not_null())
                    .col(ColumnDef::new(Contributions::Version).big_integer().not_null())
                    .col(ColumnDef::new(Contributions::SubmittedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Contributions::DecidedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("contributions_by_contributor")
                    .table(Contributions::Table)
                    .col(Contributions::ContributorId)
                    .col(Contributions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("contributions_by_datanet")
                    .table(Contributions::Table)
                    .col(Contributions::DatanetId)
                    .col(Contributions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Contributions::Table).to_owned()).await
    }
}
