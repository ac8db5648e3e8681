use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each posting names the Datanet a Datanet owner's or contributor's credit was earned through
/// (empty on other lines, and on postings booked before this), so that a report can total each
/// Datanet's revenue. Also drops `settled_inferences.refusal_code`, which nothing ever wrote: a
/// refused inference goes to the dead letters with its code and is not recorded as settled.
#[derive(DeriveIden)]
enum LedgerPostings {
    Table,
    DatanetId,
}

#[derive(DeriveIden)]
enum SettledInferences {
    Table,
    RefusalCode,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(LedgerPostings::Table)
                    .add_column(ColumnDef::new(LedgerPostings::DatanetId).string().not_null().default(""))
                    .to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table(SettledInferences::Table).drop_column(SettledInferences::RefusalCode).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SettledInferences::Table)
                    .add_column(ColumnDef::new(SettledInferences::RefusalCode).string())
                    .to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table(LedgerPostings::Table).drop_column(LedgerPostings::DatanetId).to_owned()).await
    }
}
