use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Datanets {
    Table,
    Id,
    Name,
    Description,
    Tags,
    LicenceSpdx,
    RecordFormat,
    Visibility,
    ContributionPolicy,
    OwnerId,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Datanets::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Datanets::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Datanets::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Datanets::Description).text().not_null())
                    .col(ColumnDef::new(Datanets::Tags).text().not_null())
                    .col(ColumnDef::new(Datanets::LicenceSpdx).string_len(64).not_null())
                    .col(ColumnDef::new(Datanets::RecordFormat).string_len(32).not_null())
                    .col(ColumnDef::new(Datanets::Visibility).string_len(32).not_null())
                    .col(ColumnDef::new(Datanets::ContributionPolicy).string_len(32).not_null())
                    .col(ColumnDef::new(Datanets::OwnerId).string_len(128).not_null())
                    .col(ColumnDef::new(Datanets::Version).big_integer().not_null())
                    .col(ColumnDef::new(Datanets::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Datanets::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("datanets_by_owner").table(Datanets::Table).col(Datanets::OwnerId).col(Datanets::Id).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Datanets::Table).to_owned()).await
    }
}
