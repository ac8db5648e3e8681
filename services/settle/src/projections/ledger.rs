//! The double-entry ledger: one transaction per settlement, its postings, and running balances.
//!
//! Amounts are i128 minor units, stored as decimal strings (neither database has a 128-bit
//! integer) and summed in Rust, never in SQL.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{QueryOrder as _, QuerySelect as _};

use provenant_events::money::{Amount, parse_minor_units};

use crate::domain::period::Period;

pub mod transactions {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger_transactions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub settlement_id: String,
        /// "inference"; "attribution" (a late receipt paying out what an inference's settlement
        /// held, fee 0); "reversal" (every posting of another transaction negated).
        pub kind: String,
        pub inference_event_id: String,
        pub request_id: String,
        pub model_id: String,
        pub period_id: String,
        pub currency: String,
        pub exponent: i32,
        pub fee: String,
        pub policy_version: i64,
        pub occurred_at: String,
        pub stream_sequence: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod postings {
    use sea_orm::entity::prelude::*;

    /// A posting, keyed by its transaction's stream sequence (unique: each transaction comes
    /// from one event of the settlement stream), so that new postings are appended rather than
    /// scattered (see migration 7), and its line.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger_postings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub stream_sequence: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub line: i32,
        pub account: String,
        pub currency: String,
        pub exponent: i32,
        pub amount: String,
        /// The Datanet a Datanet owner's or contributor's credit was earned through; empty on
        /// other lines.
        pub datanet_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod balances {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger_balances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub account: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub currency: String,
        pub exponent: i32,
        pub balance: String,
        pub postings: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl Model {
        pub fn amount(&self) -> Result<provenant_events::money::Amount, DbErr> {
            super::stored_amount(&self.currency, self.exponent, &self.balance)
        }
    }
}

pub mod closed_periods {
    use sea_orm::entity::prelude::*;

    /// A period the ledger has seen closed (`SettlementPeriodClosed`), and through which
    /// settlement-stream sequence its report holds the period's settlements.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger_closed_periods")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub period_id: String,
        pub through_sequence: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The period the ledger books a settlement in: the one its event names, unless the ledger has
/// seen that period closed already, then the first after it that it has not. The settler picks
/// an open period, but the close may land between its look and its append; without this the
/// settlement would sit in a closed period after its report's last row and be paid out in no
/// report. Decided in log order, so a replay books every settlement where it was booked.
pub async fn booking_period(database: &impl ConnectionTrait, named: &str) -> Result<String, DbErr> {
    let mut period_id = named.to_owned();
    while closed_periods::Entity::find_by_id(period_id.clone()).one(database).await?.is_some() {
        match Period::from_id(&period_id) {
            Some(period) => period_id = period.next().id(),
            // Not written by the settler; booked where it says.
            None => break,
        }
    }
    Ok(period_id)
}

/// Records that `period_id` closed with its settlements through stream sequence `through`, and
/// moves those the ledger booked in it after `through` (appended while the close was being
/// decided, so in no report yet) to the next period it has not seen closed. Returns how many
/// moved. A close seen again changes nothing.
pub async fn close_period(database: &impl ConnectionTrait, period_id: &str, through: i64) -> Result<u64, DbErr> {
    let row = closed_periods::ActiveModel { period_id: Set(period_id.to_owned()), through_sequence: Set(through) };
    closed_periods::Entity::insert(row)
        .on_conflict(OnConflict::column(closed_periods::Column::PeriodId).do_nothing().to_owned())
        .exec_without_returning(database)
        .await?;
    let through = closed_periods::Entity::find_by_id(period_id.to_owned()).one(database).await?.map_or(through, |row| row.through_sequence);
    let next = booking_period(database, period_id).await?;
    let moved = transactions::Entity::update_many()
        .col_expr(transactions::Column::PeriodId, sea_orm::sea_query::Expr::value(next))
        .filter(transactions::Column::PeriodId.eq(period_id))
        .filter(transactions::Column::StreamSequence.gt(through))
        .exec(database)
        .await?;
    Ok(moved.rows_affected)
}

/// A checked transaction, ready to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub transaction: transactions::Model,
    /// In posting order; every amount in the fee's currency.
    pub postings: Vec<EntryLine>,
}

/// One posting of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLine {
    pub account: String,
    /// Empty unless the line is a credit earned through a Datanet.
    pub datanet_id: String,
    pub amount: Amount,
}

/// Records `entry` and moves the balances; `false` when the settlement was recorded before.
pub async fn record(database: &impl ConnectionTrait, entry: Entry) -> Result<bool, DbErr> {
    Ok(record_all(database, vec![entry]).await? == 1)
}

/// Records `entries` (a batch's settlements, in stream order) and moves the balances in a few
/// statements whatever their number; a settlement recorded before, or twice in `entries`, is
/// recorded once. Returns how many were new.
pub async fn record_all(database: &impl ConnectionTrait, entries: Vec<Entry>) -> Result<usize, DbErr> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // A few hundred ids per statement keeps well under either database's parameter bound.
    for chunk in entries.chunks(500) {
        let ids = chunk.iter().map(|entry| entry.transaction.settlement_id.clone());
        let recorded = transactions::Entity::find()
            .select_only()
            .column(transactions::Column::SettlementId)
            .filter(transactions::Column::SettlementId.is_in(ids))
            .into_tuple::<String>()
            .all(database)
            .await?;
        seen.extend(recorded);
    }
    let new: Vec<Entry> = entries.into_iter().filter(|entry| seen.insert(entry.transaction.settlement_id.clone())).collect();
    if new.is_empty() {
        return Ok(0);
    }
    let mut lines = Vec::new();
    for entry in &new {
        lines.extend(entry.postings.iter().enumerate().map(|(line, posting)| postings::ActiveModel {
            stream_sequence: Set(entry.transaction.stream_sequence),
            line: Set(i32::try_from(line).unwrap_or(i32::MAX)),
            account: Set(posting.account.clone()),
            currency: Set(posting.amount.currency.clone()),
            exponent: Set(exponent_column(posting.amount.exponent)),
            amount: Set(posting.amount.minor_units.to_string()),
            datanet_id: Set(posting.datanet_id.clone()),
        }));
    }
    let moved: Vec<&EntryLine> = new.iter().flat_map(|entry| &entry.postings).collect();
    add_to_balances(database, &moved).await?;
    let recorded = new.len();
    // 12 columns × 1,000 rows and 7 × 4,000 stay under SQLite's 32,766 bound parameters.
    for chunk in new.chunks(1_000) {
        let rows = chunk.iter().map(|entry| transactions::ActiveModel::from(entry.transaction.clone()));
        transactions::Entity::insert_many(rows).exec_without_returning(database).await?;
    }
    for chunk in lines.chunks(4_000) {
        postings::Entity::insert_many(chunk.to_vec()).exec_without_returning(database).await?;
    }
    Ok(recorded)
}

/// Adds postings to their accounts' balances in two statements whatever their number (a
/// statement per posting dominated the consumer's time): one read of the balances they touch,
/// one upsert of the new ones (per few thousand accounts).
async fn add_to_balances(database: &impl ConnectionTrait, postings: &[&EntryLine]) -> Result<(), DbErr> {
    if postings.is_empty() {
        return Ok(());
    }
    let mut moved: BTreeMap<(String, String), (Amount, i64)> = BTreeMap::new();
    for &EntryLine { account, amount, .. } in postings {
        let key = (account.clone(), amount.currency.clone());
        match moved.get_mut(&key) {
            Some((sum, count)) => {
                *sum = sum.checked_add(amount).map_err(|error| DbErr::Custom(format!("balance of {account}: {error}")))?;
                *count += 1;
            }
            None => {
                moved.insert(key, (amount.clone(), 1));
            }
        }
    }
    let accounts: Vec<String> = moved.keys().map(|(account, _)| account.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut current: BTreeMap<(String, String), balances::Model> = BTreeMap::new();
    for chunk in accounts.chunks(500) {
        let rows = balances::Entity::find().filter(balances::Column::Account.is_in(chunk.iter().cloned())).all(database).await?;
        current.extend(rows.into_iter().map(|row| ((row.account.clone(), row.currency.clone()), row)));
    }
    let mut rows = Vec::with_capacity(moved.len());
    for ((account, currency), (amount, count)) in moved {
        let (balance, postings) = match current.get(&(account.clone(), currency.clone())) {
            Some(row) => (
                row.amount()?.checked_add(&amount).map_err(|error| DbErr::Custom(format!("balance of {account}: {error}")))?,
                row.postings + count,
            ),
            None => (amount, count),
        };
        rows.push(balances::ActiveModel {
            account: Set(account),
            currency: Set(currency),
            exponent: Set(exponent_column(balance.exponent)),
            balance: Set(balance.minor_units.to_string()),
            postings: Set(postings),
        });
    }
    for chunk in rows.chunks(2_000) {
        balances::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([balances::Column::Account, balances::Column::Currency])
                    .update_columns([balances::Column::Balance, balances::Column::Postings])
                    .to_owned(),
            )
            .exec_without_returning(database)
            .await?;
    }
    Ok(())
}

pub async fn find_transaction(
    database: &impl ConnectionTrait,
    settlement_id: &str,
) -> Result<Option<(transactions::Model, Vec<postings::Model>)>, DbErr> {
    let Some(transaction) = transactions::Entity::find_by_id(settlement_id.to_owned()).one(database).await? else {
        return Ok(None);
    };
    let lines = postings::Entity::find()
        .filter(postings::Column::StreamSequence.eq(transaction.stream_sequence))
        .order_by_asc(postings::Column::Line)
        .all(database)
        .await?;
    Ok(Some((transaction, lines)))
}

/// Every transaction of request `request_id` (its settlement, a release, reversals), in stream
/// order, with postings.
pub async fn request_transactions(
    database: &impl ConnectionTrait,
    request_id: &str,
) -> Result<Vec<(transactions::Model, Vec<postings::Model>)>, DbErr> {
    let rows = transactions::Entity::find()
        .filter(transactions::Column::RequestId.eq(request_id))
        .order_by_asc(transactions::Column::StreamSequence)
        .all(database)
        .await?;
    with_postings(database, rows).await
}

/// Balances in account order, after `after` (an account name), at most `limit`.
pub async fn balances_page(database: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<balances::Model>, DbErr> {
    let mut query = balances::Entity::find().order_by_asc(balances::Column::Account).order_by_asc(balances::Column::Currency);
    if let Some(after) = after {
        query = query.filter(balances::Column::Account.gt(after));
    }
    query.limit(limit).all(database).await
}

pub async fn balances_of(database: &impl ConnectionTrait, accounts: &[String]) -> Result<Vec<balances::Model>, DbErr> {
    balances::Entity::find()
        .filter(balances::Column::Account.is_in(accounts.iter().cloned()))
        .order_by_asc(balances::Column::Account)
        .order_by_asc(balances::Column::Currency)
        .all(database)
        .await
}

/// Every balance (for reconciliation; one row per account and currency).
pub async fn all_balances(database: &impl ConnectionTrait) -> Result<Vec<balances::Model>, DbErr> {
    balances::Entity::find().order_by_asc(balances::Column::Account).order_by_asc(balances::Column::Currency).all(database).await
}

pub async fn count_transactions(database: &impl ConnectionTrait) -> Result<u64, DbErr> {
    transactions::Entity::find().count(database).await
}

/// Every posting's amount, for checking the balances against the journal.
pub async fn all_posting_amounts(database: &impl ConnectionTrait) -> Result<Vec<(String, Amount)>, DbErr> {
    let rows = postings::Entity::find().all(database).await?;
    rows.into_iter().map(|row| Ok((row.account.clone(), stored_amount(&row.currency, row.exponent, &row.amount)?))).collect()
}

fn exponent_column(exponent: u32) -> i32 {
    i32::try_from(exponent).unwrap_or(i32::MAX)
}

pub(crate) fn stored_amount(currency: &str, exponent: i32, minor_units: &str) -> Result<Amount, DbErr> {
    let unreadable = |error: String| DbErr::Custom(format!("stored amount {minor_units:?} {currency}: {error}"));
    let minor_units = parse_minor_units(minor_units).map_err(|error| unreadable(error.to_string()))?;
    Amount::new(currency, u32::try_from(exponent).map_err(|error| unreadable(error.to_string()))?, minor_units)
        .map_err(|error| unreadable(error.to_string()))
}

/// The stream sequence of the latest settlement in the ledger (0 when it is empty).
pub async fn last_stream_sequence(database: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let last = transactions::Entity::find().order_by_desc(transactions::Column::StreamSequence).one(database).await?;
    Ok(last.map_or(0, |row| row.stream_sequence))
}

/// One posting of a period's report: what the report needs and nothing it already has from
/// the transaction (its settlement id, currency, exponent), so that 10^7 of them read fast.
#[derive(Clone, Debug, PartialEq, Eq, sea_orm::FromQueryResult)]
pub struct PeriodPosting {
    /// The transaction's stream sequence: where its run of postings ends.
    pub stream_sequence: i64,
    pub account: String,
    pub amount: String,
    pub datanet_id: String,
}

/// A period's settlements up to `through` (a stream sequence), in stream order, with postings
/// in line order.
pub async fn period_transactions(
    database: &(impl ConnectionTrait + sea_orm::StreamTrait),
    period_id: &str,
    through: i64,
) -> Result<Vec<(transactions::Model, Vec<PeriodPosting>)>, DbErr> {
    use futures::TryStreamExt as _;
    use sea_orm::ExprTrait as _;
    use sea_orm::FromQueryResult as _;
    use sea_orm::sea_query::{Alias, Expr, Order, Query};

    let settled = transactions::Entity::find()
        .filter(transactions::Column::PeriodId.eq(period_id))
        .filter(transactions::Column::StreamSequence.lte(through))
        .order_by_asc(transactions::Column::StreamSequence)
        .all(database)
        .await?;
    // The period's postings in one pass, in the same order (a report of 10^6 settlements spent
    // most of its time in 2,000 `IN (…)` lookups), streamed: each transaction takes the run of
    // postings that carries its sequence.
    let p = Alias::new("p");
    let query = Query::select()
        .column((transactions::Entity, transactions::Column::StreamSequence))
        .columns([postings::Column::Account, postings::Column::Amount, postings::Column::DatanetId].map(|column| (p.clone(), column)))
        .from_as(postings::Entity, p.clone())
        .inner_join(
            transactions::Entity,
            Expr::col((transactions::Entity, transactions::Column::StreamSequence)).equals((p.clone(), postings::Column::StreamSequence)),
        )
        .and_where(Expr::col((transactions::Entity, transactions::Column::PeriodId)).eq(period_id))
        .and_where(Expr::col((transactions::Entity, transactions::Column::StreamSequence)).lte(through))
        .order_by((transactions::Entity, transactions::Column::StreamSequence), Order::Asc)
        .order_by((p.clone(), postings::Column::Line), Order::Asc)
        .to_owned();
    let statement = ConnectionTrait::get_database_backend(database).build(&query);
    let mut lines = std::pin::pin!(PeriodPosting::find_by_statement(statement).stream(database).await?);
    let mut next = lines.try_next().await?;
    let mut with_lines = Vec::with_capacity(settled.len());
    for transaction in settled {
        let mut own = Vec::new();
        while let Some(line) = next.take_if(|line| line.stream_sequence == transaction.stream_sequence) {
            own.push(line);
            next = lines.try_next().await?;
        }
        with_lines.push((transaction, own));
    }
    Ok(with_lines)
}

/// Each transaction with its postings, in line order.
async fn with_postings(
    database: &impl ConnectionTrait,
    settled: Vec<transactions::Model>,
) -> Result<Vec<(transactions::Model, Vec<postings::Model>)>, DbErr> {
    let mut lines: std::collections::HashMap<i64, Vec<postings::Model>> = std::collections::HashMap::new();
    // In chunks, so that no statement carries more parameters than a database accepts.
    for chunk in settled.chunks(500) {
        let rows = postings::Entity::find()
            .filter(postings::Column::StreamSequence.is_in(chunk.iter().map(|row| row.stream_sequence)))
            .order_by_asc(postings::Column::StreamSequence)
            .order_by_asc(postings::Column::Line)
            .all(database)
            .await?;
        for row in rows {
            lines.entry(row.stream_sequence).or_default().push(row);
        }
    }
    Ok(settled
        .into_iter()
        .map(|row| {
            let postings = lines.remove(&row.stream_sequence).unwrap_or_default();
            (row, postings)
        })
        .collect())
}
