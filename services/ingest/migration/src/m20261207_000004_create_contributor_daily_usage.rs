use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What each contributor submitted on each UTC day, kept by the contribution projection with
/// each submission, so that the quota check on every submission reads one row. It used to
/// count and sum the contributor's contributions, which visited every contribution they had
/// ever made: the check grew with a contributor's history. Filled here from the contributions
/// already projected.
#[derive(DeriveIden)]
enum ContributorDailyUsage {
    Table,
    ContributorId,
    /// `YYYY-MM-DD`, UTC.
    Day,
    Items,
    Bytes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ContributorDailyUsage::Table)
                    .col(ColumnDef::new(ContributorDailyUsage::ContributorId).string_len(128).not_null())
                    .col(ColumnDef::new(ContributorDailyUsage::Day).string_len(10).not_null())
                    .col(ColumnDef::new(ContributorDailyUsage::Items).big_integer().not_null())
                    .col(ColumnDef::new(ContributorDailyUsage::Bytes).big_integer().not_null())
                    .primary_key(Index::create().col(ContributorDailyUsage::ContributorId).col(ContributorDailyUsage::Day))
                    .to_owned(),
            )
            .await?;
        // SQLite keeps a UTC timestamp as text that starts with its date; PostgreSQL as a
        // timestamptz, formatted in UTC.
        let day = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "to_char(submitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            _ => "substr(submitted_at, 1, 10)",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO contributor_daily_usage (contributor_id, day, items, bytes) \
                 SELECT contributor_id, {day}, COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) \
                 FROM contributions GROUP BY contributor_id, {day}"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ContributorDailyUsage::Table).to_owned()).await
    }
}
