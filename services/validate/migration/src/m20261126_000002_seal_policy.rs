use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DatanetPolicies {
    Table,
    /// Seal a snapshot after every N accepted contributions; 0: only on the owner's request.
    SealEveryAccepted,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(DatanetPolicies::Table)
                    .add_column(ColumnDef::new(DatanetPolicies::SealEveryAccepted).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(DatanetPolicies::Table).drop_column(DatanetPolicies::SealEveryAccepted).to_owned()).await
    }
}
