use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The periods the ledger has seen closed, in its own log order: a settlement booked after its
/// period's close goes to the next open period (see `projections::ledger::booking_period`).
#[derive(DeriveIden)]
enum LedgerClosedPeriods {
    Table,
    PeriodId,
    ThroughSequence,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LedgerClosedPeriods::Table)
                    .col(ColumnDef::new(LedgerClosedPeriods::PeriodId).string().not_null().primary_key())
                    .col(ColumnDef::new(LedgerClosedPeriods::ThroughSequence).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(LedgerClosedPeriods::Table).to_owned()).await
    }
}
