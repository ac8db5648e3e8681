use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Closed periods and their reports (from `SettlementPeriodClosed` / `SettlementReportIssued`).
#[derive(DeriveIden)]
enum SettlementPeriods {
    Table,
    PeriodId,
    StartsAt,
    EndsAt,
    ThroughSequence,
    SettlementCount,
    ClosedBy,
    ReportSha256,
    /// JSON array of `{format, sha256, size_bytes, bucket}`; empty until the report is issued.
    Artifacts,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SettlementPeriods::Table)
                    .col(ColumnDef::new(SettlementPeriods::PeriodId).string().not_null().primary_key())
                    .col(ColumnDef::new(SettlementPeriods::StartsAt).string().not_null())
                    .col(ColumnDef::new(SettlementPeriods::EndsAt).string().not_null())
                    .col(ColumnDef::new(SettlementPeriods::ThroughSequence).big_integer().not_null())
                    .col(ColumnDef::new(SettlementPeriods::SettlementCount).big_integer().not_null())
                    .col(ColumnDef::new(SettlementPeriods::ClosedBy).string().not_null())
                    .col(ColumnDef::new(SettlementPeriods::ReportSha256).string())
                    .col(ColumnDef::new(SettlementPeriods::Artifacts).text().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(SettlementPeriods::Table).to_owned()).await
    }
}
