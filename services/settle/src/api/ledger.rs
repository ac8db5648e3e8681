//! Finance views of the ledger. Amounts are integer minor units as decimal strings.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use provenant_bus::{Context, Envelope, Error as BusError, Expect};
use provenant_events::money::Amount;
use provenant_events::proto::common::v1::{Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::settlement::v1::{Posting, SettlementReversed};
use provenant_runtime::ApiError;
use provenant_runtime::api_error::ApiJson;
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::pagination::{DEFAULT_LIMIT, MAX_LIMIT, PageQuery, PageRequest};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};
use sea_orm::{AccessMode, DatabaseBackend, IsolationLevel, TransactionTrait as _};
use serde::{Deserialize, Serialize};

use super::{AppState, unavailable};
use crate::domain::split::{Totals, account};
use crate::handlers::{open_period_at, reversal_event_id, reversal_id_for, reverse_release_of};
use crate::projections::inferences;
use crate::projections::ledger::{self, balances};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MoneyView {
    pub currency: String,
    pub exponent: u32,
    /// Signed minor units, as a decimal string.
    pub minor_units: String,
}

impl From<&Amount> for MoneyView {
    fn from(amount: &Amount) -> Self {
        MoneyView { currency: amount.currency.clone(), exponent: amount.exponent, minor_units: amount.minor_units.to_string() }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PostingView {
    pub account: String,
    /// Debits negative, credits positive.
    pub amount: MoneyView,
    /// The Datanet a Datanet owner's or contributor's credit was earned through; absent on
    /// other lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datanet_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettlementView {
    pub settlement_id: String,
    pub kind: String,
    pub inference_event_id: String,
    pub request_id: String,
    pub model_id: String,
    pub period_id: String,
    pub fee: MoneyView,
    pub revenue_policy_version: u64,
    pub occurred_at: String,
    pub postings: Vec<PostingView>,
}

fn finance(caller: &Principal) -> Result<(), ApiError> {
    caller.require(Role::Finance)
}

fn money(currency: &str, exponent: i32, minor_units: &str) -> Result<Amount, ApiError> {
    ledger::stored_amount(currency, exponent, minor_units).map_err(unavailable)
}

/// One settlement: the fee and the balanced postings it was split into (finance).
#[utoipa::path(get, path = "/v1/settlements/{settlement_id}", operation_id = "get_settlement", tag = "ledger", security(("api_key" = [])),
    params(("settlement_id" = String, Path, description = "The settlement's id")),
    responses((status = 200, description = "The settlement", body = SettlementView), ErrorResponses))]
pub async fn settlement(
    State(state): State<AppState>,
    caller: Principal,
    Path(settlement_id): Path<String>,
) -> Result<axum::Json<SettlementView>, ApiError> {
    finance(&caller)?;
    let found = ledger::find_transaction(&state.ledger, &settlement_id).await.map_err(unavailable)?;
    let (transaction, lines) = found.ok_or_else(|| settlement_not_found(&settlement_id))?;
    Ok(axum::Json(settlement_view(transaction, &lines)?))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettlementList {
    pub items: Vec<SettlementView>,
}

/// What happened to one request's fee (finance): its settlement, the payout of what it held
/// (kind `attribution`) and any reversals, in the order they were booked.
#[utoipa::path(get, path = "/v1/requests/{request_id}/settlements", operation_id = "request_settlements", tag = "ledger", security(("api_key" = [])),
    params(("request_id" = String, Path, description = "The inference's request id")),
    responses((status = 200, description = "The request's transactions", body = SettlementList), ErrorResponses))]
pub async fn request_settlements(
    State(state): State<AppState>,
    caller: Principal,
    Path(request_id): Path<String>,
) -> Result<axum::Json<SettlementList>, ApiError> {
    finance(&caller)?;
    let found = ledger::request_transactions(&state.ledger, &request_id).await.map_err(unavailable)?;
    if found.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "settlement.not_found", format!("no settlement for request {request_id:?}")));
    }
    let items = found.into_iter().map(|(transaction, lines)| settlement_view(transaction, &lines)).collect::<Result<_, _>>()?;
    Ok(axum::Json(SettlementList { items }))
}

fn settlement_not_found(settlement_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "settlement.not_found", format!("no settlement {settlement_id:?}"))
}

fn settlement_view(transaction: ledger::transactions::Model, lines: &[ledger::postings::Model]) -> Result<SettlementView, ApiError> {
    let postings = lines
        .iter()
        .map(|line| {
            Ok(PostingView {
                account: line.account.clone(),
                amount: (&money(&line.currency, line.exponent, &line.amount)?).into(),
                datanet_id: Some(line.datanet_id.clone()).filter(|id| !id.is_empty()),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(SettlementView {
        fee: (&money(&transaction.currency, transaction.exponent, &transaction.fee)?).into(),
        settlement_id: transaction.settlement_id,
        kind: transaction.kind,
        inference_event_id: transaction.inference_event_id,
        request_id: transaction.request_id,
        model_id: transaction.model_id,
        period_id: transaction.period_id,
        revenue_policy_version: u64::try_from(transaction.policy_version).unwrap_or(0),
        occurred_at: transaction.occurred_at,
        postings,
    })
}

/// Why a settlement is reversed (for the evidence).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalRequest {
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// Reverse a settlement (finance): a new transaction with every posting negated, booked in the
/// open month. Nothing is edited, a closed period's report stays as issued, and a settlement is
/// reversed at most once.
#[utoipa::path(post, path = "/v1/settlements/{settlement_id}/reverse", operation_id = "reverse_settlement", tag = "ledger", security(("api_key" = [])),
    params(("settlement_id" = String, Path, description = "The settlement to reverse")),
    request_body = ReversalRequest,
    responses((status = 201, description = "The reversing transaction", body = SettlementView), ErrorResponses))]
pub async fn reverse(
    State(state): State<AppState>,
    caller: Principal,
    Path(settlement_id): Path<String>,
    ApiJson(request): ApiJson<ReversalRequest>,
) -> Result<(StatusCode, axum::Json<SettlementView>), ApiError> {
    finance(&caller)?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1_000 || reason.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reversal.reason_invalid",
            "a reason is 1 to 1,000 printable characters",
        ));
    }
    let found = ledger::find_transaction(&state.ledger, &settlement_id).await.map_err(unavailable)?;
    let (original, lines) = found.ok_or_else(|| settlement_not_found(&settlement_id))?;
    match original.kind.as_str() {
        "inference" => {}
        "attribution" => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "settlement.is_attribution",
                "a release is reversed with the settlement it pays out; reverse that one",
            ));
        }
        _ => {
            return Err(ApiError::new(StatusCode::CONFLICT, "settlement.is_reversal", "a reversal is not reversed; settle again instead"));
        }
    }
    let period_id = open_period_at(&state.bus, state.periods, chrono::Utc::now())
        .await
        .map_err(|error| ApiError::internal("bus.unavailable", error))?;
    let postings = lines
        .iter()
        .map(|line| {
            let amount = money(&line.currency, line.exponent, &line.amount)?;
            Ok(Posting {
                account: line.account.clone(),
                amount: Some(Amount { minor_units: -amount.minor_units, ..amount }.to_proto()),
                datanet_id: line.datanet_id.clone(),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let reversal_id = reversal_id_for(&settlement_id);
    let event = SettlementReversed {
        settlement_id: reversal_id.clone(),
        reversed_settlement_id: settlement_id.clone(),
        reason: reason.to_owned(),
        postings,
        period_id,
        reversed_by: Some(ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::Finance.into() }),
    };
    let mut envelope = Envelope::new(&event, state.bus.producer());
    envelope.event_id = reversal_event_id(&settlement_id);
    let published = state.bus.publish(&envelope, &event, Expect::NoEvents).await;
    // A release of the settlement's held part goes with it (also when an earlier attempt
    // appended the reversal); looked for after the append, so a release racing this reversal is
    // caught here or by the settler (see reverse_release_of).
    if matches!(published, Ok(_) | Err(BusError::Conflict { .. })) {
        reverse_release_of(&state.bus, state.periods, &settlement_id, event.reversed_by.clone())
            .await
            .map_err(|error| ApiError::internal("bus.unavailable", error))?;
    }
    published.map_err(|error| match error {
        BusError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "settlement.already_reversed", format!("{settlement_id} is reversed"))
        }
        other => ApiError::internal("bus.unavailable", other),
    })?;
    await_projection(DEFAULT_WAIT, || async { ledger::find_transaction(&state.ledger, &reversal_id).await.ok().flatten().is_some() }).await;
    let booked = ledger::find_transaction(&state.ledger, &reversal_id).await.map_err(unavailable)?;
    let (transaction, lines) =
        booked.ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ledger.behind", "reversed; the ledger shows it shortly"))?;
    Ok((StatusCode::CREATED, axum::Json(settlement_view(transaction, &lines)?)))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalanceView {
    pub account: String,
    pub balance: MoneyView,
    pub postings: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalancePage {
    pub items: Vec<BalanceView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

fn balance_view(row: &balances::Model) -> Result<BalanceView, ApiError> {
    Ok(BalanceView {
        account: row.account.clone(),
        balance: (&row.amount().map_err(unavailable)?).into(),
        postings: u64::try_from(row.postings).unwrap_or(0),
    })
}

/// Every account's balance per currency, in account order (finance).
#[utoipa::path(get, path = "/v1/ledger/accounts", operation_id = "list_account_balances", tag = "ledger", security(("api_key" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of balances", body = BalancePage), ErrorResponses))]
pub async fn accounts(State(state): State<AppState>, caller: Principal, page: PageRequest) -> Result<axum::Json<BalancePage>, ApiError> {
    finance(&caller)?;
    let rows = ledger::balances_page(&state.ledger, page.after.as_deref(), page.limit).await.map_err(unavailable)?;
    let items: Vec<BalanceView> = rows.iter().map(balance_view).collect::<Result<_, _>>()?;
    let next_after = page.next_after(items.iter().map(|item| item.account.as_str()));
    Ok(axum::Json(BalancePage { items, next_after }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatementView {
    pub principal_id: String,
    /// The caller's own payable accounts (as contributor, model builder, Datanet owner).
    pub balances: Vec<BalanceView>,
}

/// The caller's own balances, whatever their role: only their own accounts.
#[utoipa::path(get, path = "/v1/statements/me", operation_id = "get_own_statement", tag = "ledger", security(("api_key" = [])),
    responses((status = 200, description = "The caller's balances", body = StatementView), ErrorResponses))]
pub async fn statement(State(state): State<AppState>, caller: Principal) -> Result<axum::Json<StatementView>, ApiError> {
    let accounts = account::owned_by(&caller.id);
    let rows = ledger::balances_of(&state.ledger, &accounts).await.map_err(unavailable)?;
    let balances = rows.iter().map(balance_view).collect::<Result<_, _>>()?;
    Ok(axum::Json(StatementView { principal_id: caller.id, balances }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CurrencyReconciliation {
    pub currency: String,
    pub exponent: u32,
    /// What callers were charged (the fee accounts' debits, as a positive amount).
    pub fees_in: String,
    /// Owed to contributors, builders, Datanet owners and the protocol.
    pub payable: String,
    /// Of which the protocol's.
    pub protocol: String,
    /// In models' base pools (mass no contributor explains).
    pub pooled: String,
    /// Contributors' parts held until an inference is attributed.
    pub held: String,
    /// fees_in = payable + pooled + held, exactly.
    pub balanced: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReconciliationView {
    pub currencies: Vec<CurrencyReconciliation>,
    /// Every posting in the journal, summed per account, equals the running balances.
    pub journal_matches_balances: bool,
    /// `InferenceSettled` events in the log.
    pub settlements_in_log: u64,
    /// Transactions in the ledger (equal to the log's settlements once the ledger caught up).
    pub ledger_transactions: u64,
    /// Inference events the settler settled (read from its own store after the ledger).
    pub settled_inferences: u64,
    pub ledger_matches_log: bool,
}

/// Reconciliation: per currency, fees in = payouts + protocol + pools + held, exactly; the
/// balances against the journal; the ledger against the event log (finance).
#[utoipa::path(get, path = "/v1/reconciliation", operation_id = "reconcile", tag = "ledger", security(("api_key" = [])),
    responses((status = 200, description = "The reconciliation", body = ReconciliationView), ErrorResponses))]
pub async fn reconciliation(State(state): State<AppState>, caller: Principal) -> Result<axum::Json<ReconciliationView>, ApiError> {
    finance(&caller)?;
    // Log first: the ledger can only have caught up further by the time it is read.
    let settlements_in_log =
        state.bus.count_messages(Context::Settlement, "settlement").await.map_err(|error| ApiError::internal("bus.unavailable", error))?;
    // Every figure from one snapshot of the ledger, so that they agree with each other.
    let snapshot = match state.ledger.get_database_backend() {
        DatabaseBackend::Postgres => state.ledger.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await,
        _ => state.ledger.begin().await,
    }
    .map_err(unavailable)?;
    let rows = ledger::all_balances(&snapshot).await.map_err(unavailable)?;
    let mut sums: BTreeMap<(String, u32), Totals> = BTreeMap::new();
    let mut from_balances: BTreeMap<(String, String), i128> = BTreeMap::new();
    for row in &rows {
        let amount = row.amount().map_err(unavailable)?;
        from_balances.insert((row.account.clone(), amount.currency.clone()), amount.minor_units);
        sums.entry((amount.currency.clone(), amount.exponent)).or_default().add(&row.account, amount.minor_units);
    }
    let mut from_journal: BTreeMap<(String, String), i128> = BTreeMap::new();
    for (account, amount) in ledger::all_posting_amounts(&snapshot).await.map_err(unavailable)? {
        *from_journal.entry((account, amount.currency)).or_default() += amount.minor_units;
    }
    let currencies = sums
        .into_iter()
        .map(|((currency, exponent), totals)| CurrencyReconciliation {
            currency,
            exponent,
            fees_in: totals.fees_in().to_string(),
            payable: totals.payable.to_string(),
            protocol: totals.protocol.to_string(),
            pooled: totals.pooled.to_string(),
            held: totals.held.to_string(),
            balanced: totals.balanced(),
        })
        .collect();
    let ledger_transactions = ledger::count_transactions(&snapshot).await.map_err(unavailable)?;
    snapshot.commit().await.map_err(unavailable)?;
    // The settler's own store, read after the ledger's: it is ahead of the ledger, never behind.
    let settled_inferences = inferences::count_settled(&state.database).await.map_err(unavailable)?;
    Ok(axum::Json(ReconciliationView {
        currencies,
        journal_matches_balances: from_balances == from_journal,
        settlements_in_log,
        ledger_transactions,
        settled_inferences,
        ledger_matches_log: settlements_in_log == ledger_transactions,
    }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewView {
    pub id: i64,
    pub code: String,
    pub inference_event_id: String,
    pub detail: String,
    pub stream_sequence: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewPage {
    pub items: Vec<ReviewView>,
    pub next_after: Option<String>,
}

/// `?after=<review id>&limit=<1..=500>`: review ids are integers, so the cursor is one.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// The `next_after` of the previous page.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Items per page.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u64>,
}

/// Inference events that need a person: an id that came again with a different body (finance).
#[utoipa::path(get, path = "/v1/reviews", operation_id = "list_reviews", tag = "ledger", security(("api_key" = [])),
    params(ReviewQuery),
    responses((status = 200, description = "A page of review items", body = ReviewPage), ErrorResponses))]
pub async fn reviews(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<axum::Json<ReviewPage>, ApiError> {
    finance(&caller)?;
    let Query(query) = query.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_query", rejection.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_after", "after is a review id, 0 or more"));
    }
    let rows = inferences::reviews_after(&state.database, after, limit).await.map_err(unavailable)?;
    let full = rows.len() as u64 == limit;
    let next_after = rows.last().filter(|_| full).map(|row| row.id.to_string());
    let items = rows
        .into_iter()
        .map(|row| ReviewView {
            id: row.id,
            code: row.code,
            inference_event_id: row.inference_event_id,
            detail: row.detail,
            stream_sequence: row.stream_sequence,
        })
        .collect();
    Ok(axum::Json(ReviewPage { items, next_after }))
}
