use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Postings keyed by their transaction's stream sequence and line, in place of its settlement
/// id and line: settlement ids are hashes, so each new posting went to a random place in the
/// key's B-tree, and a batch of a few hundred settlements dirtied (and wrote to the SQLite WAL)
/// most of that index's pages; a stream sequence only grows, so new postings are appended.
/// Each transaction comes from one event of the settlement stream, so its sequence is unique.
/// Also drops `ledger_postings_by_account`, which no query reads (statements come from the
/// balances) and every posting paid to keep.
#[derive(DeriveIden)]
enum LedgerPostings {
    Table,
    SettlementId,
    StreamSequence,
    Line,
    Account,
    Currency,
    Exponent,
    Amount,
    DatanetId,
}

#[derive(DeriveIden)]
enum Rekeyed {
    #[sea_orm(iden = "ledger_postings_rekeyed")]
    Table,
}

const POSTING_COLUMNS: &str = "line, account, currency, exponent, amount, datanet_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rekeyed::Table)
                    .col(ColumnDef::new(LedgerPostings::StreamSequence).big_integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Line).integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Account).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Currency).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Exponent).integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Amount).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::DatanetId).string().not_null().default(""))
                    .primary_key(Index::create().col(LedgerPostings::StreamSequence).col(LedgerPostings::Line))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO ledger_postings_rekeyed (stream_sequence, {POSTING_COLUMNS}) \
                 SELECT t.stream_sequence, p.line, p.account, p.currency, p.exponent, p.amount, p.datanet_id \
                 FROM ledger_postings p JOIN ledger_transactions t ON t.settlement_id = p.settlement_id"
            ))
            .await?;
        manager.drop_table(Table::drop().table(LedgerPostings::Table).to_owned()).await?;
        manager.rename_table(Table::rename().table(Rekeyed::Table, LedgerPostings::Table).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rekeyed::Table)
                    .col(ColumnDef::new(LedgerPostings::SettlementId).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Line).integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Account).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Currency).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Exponent).integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Amount).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::DatanetId).string().not_null().default(""))
                    .primary_key(Index::create().col(LedgerPostings::SettlementId).col(LedgerPostings::Line))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO ledger_postings_rekeyed (settlement_id, {POSTING_COLUMNS}) \
                 SELECT t.settlement_id, p.line, p.account, p.currency, p.exponent, p.amount, p.datanet_id \
                 FROM ledger_postings p JOIN ledger_transactions t ON t.stream_sequence = p.stream_sequence"
            ))
            .await?;
        manager.drop_table(Table::drop().table(LedgerPostings::Table).to_owned()).await?;
        manager.rename_table(Table::rename().table(Rekeyed::Table, LedgerPostings::Table).to_owned()).await?;
        manager
            .create_index(
                Index::create().name("ledger_postings_by_account").table(LedgerPostings::Table).col(LedgerPostings::Account).to_owned(),
            )
            .await
    }
}
