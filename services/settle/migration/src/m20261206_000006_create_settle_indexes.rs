use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The attribution indexes the training service built (`AttributionIndexBuilt`): which model
/// each index digest belongs to, so that a receipt is paid only when it names an index of the
/// model that answered.
#[derive(DeriveIden)]
enum SettleIndexes {
    Table,
    IndexId,
    ModelId,
    IndexSha256,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SettleIndexes::Table)
                    .col(ColumnDef::new(SettleIndexes::IndexId).string().not_null().primary_key())
                    .col(ColumnDef::new(SettleIndexes::ModelId).string().not_null())
                    .col(ColumnDef::new(SettleIndexes::IndexSha256).string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("settle_indexes_by_digest").table(SettleIndexes::Table).col(SettleIndexes::IndexSha256).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(SettleIndexes::Table).to_owned()).await
    }
}
