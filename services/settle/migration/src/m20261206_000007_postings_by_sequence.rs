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

/// The postings table under a temporary name, keyed by `key` (a stream sequence or a
/// settlement id) and line.
fn keyed_by(key: ColumnDef, key_column: LedgerPostings) -> TableCreateStatement {
    Table::create()
        .table(Rekeyed::Table)
        .col(key)
        .col(ColumnDef::new(LedgerPostings::Line).integer().not_null())
        .col(ColumnDef::new(LedgerPostings::Account).string().not_null())
        .col(ColumnDef::new(LedgerPostings::Currency).string().not_null())
        .col(ColumnDef::new(LedgerPostings::Exponent).integer().not_null())
        .col(ColumnDef::new(LedgerPostings::Amount).string().not_null())
        .col(ColumnDef::new(LedgerPostings::DatanetId).string().not_null().default(""))
        .primary_key(Index::create().col(key_column).col(LedgerPostings::Line))
        .to_owned()
}

/// Copies every posting into the rekeyed table with its transaction's `key` (a column of
/// `ledger_transactions`, found through `joined_by`, which both tables have), then puts the
/// rekeyed table in the old one's place.
async fn rekey(manager: &SchemaManager<'_>, key: &str, joined_by: &str) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "INSERT INTO ledger_postings_rekeyed ({key}, line, account, currency, exponent, amount, datanet_id) \
             SELECT t.{key}, p.line, p.account, p.currency, p.exponent, p.amount, p.datanet_id \
             FROM ledger_postings p JOIN ledger_transactions t ON t.{joined_by} = p.{joined_by}"
        ))
        .await?;
    manager.drop_table(Table::drop().table(LedgerPostings::Table).to_owned()).await?;
    manager.rename_table(Table::rename().table(Rekeyed::Table, LedgerPostings::Table).to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sequence = ColumnDef::new(LedgerPostings::StreamSequence).big_integer().not_null().to_owned();
        manager.create_table(keyed_by(sequence, LedgerPostings::StreamSequence)).await?;
        rekey(manager, "stream_sequence", "settlement_id").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let settlement = ColumnDef::new(LedgerPostings::SettlementId).string().not_null().to_owned();
        manager.create_table(keyed_by(settlement, LedgerPostings::SettlementId)).await?;
        rekey(manager, "settlement_id", "stream_sequence").await?;
        manager
            .create_index(
                Index::create().name("ledger_postings_by_account").table(LedgerPostings::Table).col(LedgerPostings::Account).to_owned(),
            )
            .await
    }
}
