use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LedgerTransactions {
    Table,
    RequestId,
    StreamSequence,
}

/// Finance looks a request's settlements up by its request id (`GET /v1/requests/{id}/settlements`).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("ledger_transactions_by_request")
                    .table(LedgerTransactions::Table)
                    .col(LedgerTransactions::RequestId)
                    .col(LedgerTransactions::StreamSequence)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ledger_transactions_by_request").table(LedgerTransactions::Table).to_owned()).await
    }
}
