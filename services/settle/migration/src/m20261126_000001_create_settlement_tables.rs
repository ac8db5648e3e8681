use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Registered models, as far as settlement needs them: who built each, which Datanets fed it.
#[derive(DeriveIden)]
enum SettleModels {
    Table,
    ModelId,
    Kind,
    BaseModelId,
    WeightsSha256,
    BuilderId,
    /// JSON array of the Datanet ids of the model's pinned snapshots, one per snapshot.
    DatanetIds,
}

/// Datanet owners (from `DatanetCreated`).
#[derive(DeriveIden)]
enum SettleDatanets {
    Table,
    DatanetId,
    OwnerId,
}

/// The latest revenue-share policy of each model.
#[derive(DeriveIden)]
enum RevenuePolicies {
    Table,
    ModelId,
    Version,
    /// JSON array of `{beneficiary, share_ppb}`.
    Parts,
    SetBy,
    /// Stream sequence of the policy's latest event (the expected sequence of the next one).
    StreamSequence,
}

/// Every inference event the settler judged: its body digest (so that the same id with another
/// body is caught) and the settlement it led to, or the reason it was refused.
#[derive(DeriveIden)]
enum SettledInferences {
    Table,
    InferenceEventId,
    RequestId,
    PayloadSha256,
    SettlementId,
    RefusalCode,
}

/// Inference events that need a person: the same idempotency key with a different body.
#[derive(DeriveIden)]
enum SettlementReviews {
    Table,
    Id,
    Code,
    InferenceEventId,
    Detail,
    StreamSequence,
}

/// One balanced double-entry transaction per `InferenceSettled` (or reversal).
#[derive(DeriveIden)]
enum LedgerTransactions {
    Table,
    SettlementId,
    Kind,
    InferenceEventId,
    RequestId,
    ModelId,
    PeriodId,
    Currency,
    Exponent,
    /// Minor units as a decimal string: amounts are i128, which neither database holds.
    Fee,
    PolicyVersion,
    OccurredAt,
    StreamSequence,
}

#[derive(DeriveIden)]
enum LedgerPostings {
    Table,
    SettlementId,
    Line,
    Account,
    Currency,
    Exponent,
    /// Signed minor units as a decimal string: debits negative, credits positive.
    Amount,
}

/// Running balance of each account in each currency.
#[derive(DeriveIden)]
enum LedgerBalances {
    Table,
    Account,
    Currency,
    Exponent,
    Balance,
    Postings,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SettleModels::Table)
                    .col(ColumnDef::new(SettleModels::ModelId).string().not_null().primary_key())
                    .col(ColumnDef::new(SettleModels::Kind).string().not_null())
                    .col(ColumnDef::new(SettleModels::BaseModelId).string().not_null())
                    .col(ColumnDef::new(SettleModels::WeightsSha256).string().not_null())
                    .col(ColumnDef::new(SettleModels::BuilderId).string().not_null())
                    .col(ColumnDef::new(SettleModels::DatanetIds).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SettleDatanets::Table)
                    .col(ColumnDef::new(SettleDatanets::DatanetId).string().not_null().primary_key())
                    .col(ColumnDef::new(SettleDatanets::OwnerId).string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RevenuePolicies::Table)
                    .col(ColumnDef::new(RevenuePolicies::ModelId).string().not_null().primary_key())
                    .col(ColumnDef::new(RevenuePolicies::Version).big_integer().not_null())
                    .col(ColumnDef::new(RevenuePolicies::Parts).text().not_null())
                    .col(ColumnDef::new(RevenuePolicies::SetBy).string().not_null())
                    .col(ColumnDef::new(RevenuePolicies::StreamSequence).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SettledInferences::Table)
                    .col(ColumnDef::new(SettledInferences::InferenceEventId).string().not_null().primary_key())
                    .col(ColumnDef::new(SettledInferences::RequestId).string().not_null())
                    .col(ColumnDef::new(SettledInferences::PayloadSha256).string().not_null())
                    .col(ColumnDef::new(SettledInferences::SettlementId).string())
                    .col(ColumnDef::new(SettledInferences::RefusalCode).string())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("settled_inferences_by_request")
                    .table(SettledInferences::Table)
                    .col(SettledInferences::RequestId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SettlementReviews::Table)
                    .col(ColumnDef::new(SettlementReviews::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(SettlementReviews::Code).string().not_null())
                    .col(ColumnDef::new(SettlementReviews::InferenceEventId).string().not_null())
                    .col(ColumnDef::new(SettlementReviews::Detail).text().not_null())
                    .col(ColumnDef::new(SettlementReviews::StreamSequence).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LedgerTransactions::Table)
                    .col(ColumnDef::new(LedgerTransactions::SettlementId).string().not_null().primary_key())
                    .col(ColumnDef::new(LedgerTransactions::Kind).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::InferenceEventId).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::RequestId).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::ModelId).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::PeriodId).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::Currency).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::Exponent).integer().not_null())
                    .col(ColumnDef::new(LedgerTransactions::Fee).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::PolicyVersion).big_integer().not_null())
                    .col(ColumnDef::new(LedgerTransactions::OccurredAt).string().not_null())
                    .col(ColumnDef::new(LedgerTransactions::StreamSequence).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ledger_transactions_by_period")
                    .table(LedgerTransactions::Table)
                    .col(LedgerTransactions::PeriodId)
                    .col(LedgerTransactions::StreamSequence)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LedgerPostings::Table)
                    .col(ColumnDef::new(LedgerPostings::SettlementId).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Line).integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Account).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Currency).string().not_null())
                    .col(ColumnDef::new(LedgerPostings::Exponent).integer().not_null())
                    .col(ColumnDef::new(LedgerPostings::Amount).string().not_null())
                    .primary_key(Index::create().col(LedgerPostings::SettlementId).col(LedgerPostings::Line))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("ledger_postings_by_account").table(LedgerPostings::Table).col(LedgerPostings::Account).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LedgerBalances::Table)
                    .col(ColumnDef::new(LedgerBalances::Account).string().not_null())
                    .col(ColumnDef::new(LedgerBalances::Currency).string().not_null())
                    .col(ColumnDef::new(LedgerBalances::Exponent).integer().not_null())
                    .col(ColumnDef::new(LedgerBalances::Balance).string().not_null())
                    .col(ColumnDef::new(LedgerBalances::Postings).big_integer().not_null())
                    .primary_key(Index::create().col(LedgerBalances::Account).col(LedgerBalances::Currency))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LedgerBalances::Table.into_iden(),
            LedgerPostings::Table.into_iden(),
            LedgerTransactions::Table.into_iden(),
            SettlementReviews::Table.into_iden(),
            SettledInferences::Table.into_iden(),
            RevenuePolicies::Table.into_iden(),
            SettleDatanets::Table.into_iden(),
            SettleModels::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
