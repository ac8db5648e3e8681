use sea_orm_migration::prelude::*;

/// Creates the bookkeeping tables of idempotent consumers (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_bus_consumer_bookkeeping"
    }
}

#[derive(DeriveIden)]
enum BusProcessedEvents {
    Table,
    Consumer,
    EventId,
    StreamSequence,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum BusConsumerCheckpoints {
    Table,
    Consumer,
    LastStreamSequence,
    LastEventId,
    UpdatedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BusProcessedEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(BusProcessedEvents::Consumer).string_len(128).not_null())
                    .col(ColumnDef::new(BusProcessedEvents::EventId).string_len(64).not_null())
                    .col(ColumnDef::new(BusProcessedEvents::StreamSequence).big_integer().not_null())
                    .col(ColumnDef::new(BusProcessedEvents::ProcessedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(BusProcessedEvents::Consumer).col(BusProcessedEvents::EventId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BusConsumerCheckpoints::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(BusConsumerCheckpoints::Consumer).string_len(128).not_null().primary_key())
                    .col(ColumnDef::new(BusConsumerCheckpoints::LastStreamSequence).big_integer().not_null())
                    .col(ColumnDef::new(BusConsumerCheckpoints::LastEventId).string_len(64).not_null())
                    .col(ColumnDef::new(BusConsumerCheckpoints::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(BusConsumerCheckpoints::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(BusProcessedEvents::Table).to_owned()).await
    }
}
