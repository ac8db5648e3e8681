//! `InferenceSettled` → one balanced ledger transaction (written with the rest of its batch); `SettlementAttributed` → the release
//! of what it held; `SettlementReversed` → its mirror; each booked in its period, or the next
//! open one when the ledger has seen that period closed (`ledger::booking_period`).

use provenant_bus::{Delivery, HandleError};
use provenant_events::money::Amount;
use provenant_events::proto::settlement::v1::{InferenceSettled, Posting, SettlementAttributed, SettlementReversed};
use sea_orm::DatabaseTransaction;

use crate::projections::ledger::{self, Entry, EntryLine, transactions};

/// The ledger transaction of an `InferenceSettled`, booked in `period_id` (see
/// `ledger::booking_period`), after checking that its postings balance in the fee's currency.
pub fn settlement_entry(delivery: &Delivery, event: InferenceSettled, period_id: String) -> Result<Entry, HandleError> {
    let invalid = |code: &'static str, message: String| HandleError::rejected(code, message);
    let fee = event.fee.as_ref().ok_or_else(|| invalid("settlement.fee_missing", "a settlement without a fee".into()))?;
    let fee = Amount::from_proto(fee).map_err(|error| invalid("settlement.fee_invalid", error.to_string()))?;
    let (postings, sum) = checked_postings(&event.postings, &fee).map_err(|message| invalid("settlement.posting_invalid", message))?;
    if sum.minor_units != 0 {
        return Err(invalid("settlement.unbalanced", format!("postings sum to {sum}, not zero")));
    }
    let entry = Entry {
        transaction: transactions::Model {
            settlement_id: event.settlement_id,
            kind: "inference".into(),
            inference_event_id: event.inference_event_id,
            request_id: event.request_id,
            model_id: event.model_id,
            period_id,
            currency: fee.currency.clone(),
            exponent: i32::try_from(fee.exponent).unwrap_or(i32::MAX),
            fee: fee.minor_units.to_string(),
            policy_version: i64::try_from(event.revenue_policy_version).unwrap_or(i64::MAX),
            occurred_at: delivery.envelope.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            stream_sequence: i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX),
        },
        postings,
    };
    Ok(entry)
}

/// Postings read from an event: each with an amount in `like`'s currency and exponent and a
/// named account; with their sum.
fn checked_postings(postings: &[Posting], like: &Amount) -> Result<(Vec<EntryLine>, Amount), String> {
    let mut checked = Vec::with_capacity(postings.len());
    let mut sum = like.zero_like();
    for posting in postings {
        let line = entry_line(posting)?;
        if line.amount.currency != like.currency || line.amount.exponent != like.exponent || line.account.is_empty() {
            return Err(format!("posting to {:?} is not in the settlement's currency", line.account));
        }
        sum = sum.checked_add(&line.amount).map_err(|error| error.to_string())?;
        checked.push(line);
    }
    Ok((checked, sum))
}

/// One posting of an event as a ledger line, if its amount reads.
fn entry_line(posting: &Posting) -> Result<EntryLine, String> {
    let amount = posting.amount.as_ref().ok_or_else(|| "a posting without an amount".to_owned())?;
    let amount = Amount::from_proto(amount).map_err(|error| error.to_string())?;
    Ok(EntryLine { account: posting.account.clone(), datanet_id: posting.datanet_id.clone(), amount })
}

/// `SettlementReversed` → a new transaction with every posting of the original negated (a
/// correction is a reversing entry; nothing is edited).
pub async fn handle_reversal(transaction: &DatabaseTransaction, delivery: &Delivery, event: SettlementReversed) -> Result<(), HandleError> {
    let invalid = |message: String| HandleError::rejected("reversal.invalid", message);
    let Some((original, lines)) = ledger::find_transaction(transaction, &event.reversed_settlement_id).await? else {
        // The original precedes its reversal in the same stream, so the ledger has it.
        return Err(invalid(format!("settlement {} is not in the ledger", event.reversed_settlement_id)));
    };
    let postings: Vec<EntryLine> = event.postings.iter().map(entry_line).collect::<Result<_, _>>().map_err(invalid)?;
    let mirrors = postings.len() == lines.len()
        && postings.iter().zip(&lines).all(|(EntryLine { account, datanet_id, amount }, line)| {
            account == &line.account
                && datanet_id == &line.datanet_id
                && amount.currency == line.currency
                && provenant_events::money::parse_minor_units(&line.amount).is_ok_and(|original| original == -amount.minor_units)
        });
    if !mirrors {
        return Err(invalid(format!("the postings do not mirror those of {}", original.settlement_id)));
    }
    let fee = provenant_events::money::parse_minor_units(&original.fee).map_err(|error| invalid(error.to_string()))?;
    let period_id = ledger::booking_period(transaction, &event.period_id).await?;
    let entry = following(original, delivery, event.settlement_id, "reversal", period_id, (-fee).to_string(), postings);
    ledger::record(transaction, entry).await?;
    Ok(())
}

/// A transaction that follows `original` (a reversal, a release): its inference, request,
/// model, currency and policy, with its own id, kind, period, fee, time and postings.
fn following(
    original: transactions::Model,
    delivery: &Delivery,
    settlement_id: String,
    kind: &str,
    period_id: String,
    fee: String,
    postings: Vec<EntryLine>,
) -> Entry {
    Entry {
        transaction: transactions::Model {
            settlement_id,
            kind: kind.to_owned(),
            period_id,
            fee,
            occurred_at: delivery.envelope.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            stream_sequence: i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX),
            ..original
        },
        postings,
    }
}

/// `SettlementAttributed` → a transaction that moves the held part of an earlier settlement to
/// the receipt's contributors and the model's base pool. No fee comes in: it only debits the
/// held account, by what that settlement credited it.
pub async fn handle_release(
    transaction: &DatabaseTransaction,
    delivery: &Delivery,
    event: SettlementAttributed,
) -> Result<(), HandleError> {
    let invalid = |message: String| HandleError::rejected("release.invalid", message);
    let Some((original, lines)) = ledger::find_transaction(transaction, &event.attributed_settlement_id).await? else {
        // The settlement precedes its release in the same stream, so the ledger has it.
        return Err(invalid(format!("settlement {} is not in the ledger", event.attributed_settlement_id)));
    };
    let held_account = crate::domain::split::account::unattributed(&original.model_id);
    let held = lines
        .iter()
        .find(|line| line.account == held_account)
        .ok_or_else(|| invalid(format!("{} held nothing", original.settlement_id)))?;
    let held = ledger::stored_amount(&original.currency, original.exponent, &held.amount).map_err(|error| invalid(error.to_string()))?;
    let (postings, sum) = checked_postings(&event.postings, &held).map_err(invalid)?;
    let debited: Vec<i128> = postings.iter().filter(|line| line.account == held_account).map(|line| line.amount.minor_units).collect();
    if sum.minor_units != 0 || debited != [-held.minor_units] {
        return Err(invalid(format!("the postings must debit {held_account} by the {} held, once, and sum to zero", held.minor_units)));
    }
    let period_id = ledger::booking_period(transaction, &event.period_id).await?;
    let entry = following(original, delivery, event.settlement_id, "attribution", period_id, "0".into(), postings);
    ledger::record(transaction, entry).await?;
    Ok(())
}
