//! Settlement periods: close a month, list closed ones, download their reports.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::{Context, Envelope, Error as BusError, Expect};
use provenant_events::money::Amount;
use provenant_events::proto::common::v1::{BlobRef, Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::settlement::v1::{PayoutTotal, ReportArtifact, SettlementPeriodClosed, SettlementReportIssued};
use provenant_runtime::ApiError;
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{ErrorResponses, ToSchema};
use provenant_runtime::read_your_writes::{DEFAULT_WAIT, await_projection};
use serde::Serialize;

use super::{AppState, unavailable};
use crate::domain::period::Period;
use crate::projections::ledger;
use crate::projections::periods::{self, Artifact};
use crate::reports::{self, Report};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeriodView {
    pub period_id: String,
    pub starts_at: String,
    pub ends_at: String,
    /// The period holds its month's settlements up to this settlement-stream sequence.
    pub through_sequence: i64,
    pub settlement_count: i64,
    pub closed_by: String,
    /// SHA-256 of the canonical JSON report (absent until the report is issued).
    pub report_sha256: Option<String>,
    pub artifacts: Vec<Artifact>,
}

impl From<periods::Model> for PeriodView {
    fn from(row: periods::Model) -> Self {
        PeriodView {
            artifacts: row.artifacts(),
            period_id: row.period_id,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            through_sequence: row.through_sequence,
            settlement_count: row.settlement_count,
            closed_by: row.closed_by,
            report_sha256: row.report_sha256,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeriodList {
    pub items: Vec<PeriodView>,
}

fn bus_error(error: BusError) -> ApiError {
    ApiError::internal("bus.unavailable", error)
}

fn parse_period(state: &AppState, period_id: &str) -> Result<Period, ApiError> {
    state.periods.parse(period_id).map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "period.invalid", error.to_string()))
}

/// Close a period (finance; a month unless `settlement.period` says otherwise) once it has
/// ended: its settlements so far are fixed into `SettlementPeriodClosed`, and its report
/// (canonical JSON, CSV, Parquet) is stored and announced by `SettlementReportIssued`.
/// Settlements of the period that arrive later go to the next open period. Closing a closed period whose report is missing (a crash between the two events)
/// issues the report.
#[utoipa::path(post, path = "/v1/periods/{period_id}/close", operation_id = "close_period", tag = "periods", security(("api_key" = [])),
    params(("period_id" = String, Path, description = "A period: YYYY-MM (months, the default), YYYY-MM-DD, YYYY-MM-DDTHH or YYYY-MM-DDTHHMM, as settlement.period sets", pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])(-[0-3][0-9](T[0-2][0-9]([0-5][0-9])?)?)?$")),
    responses((status = 201, description = "Closed, report issued", body = PeriodView), ErrorResponses))]
pub async fn close(State(state): State<AppState>, caller: Principal, Path(period_id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Finance)?;
    let period = parse_period(&state, &period_id)?;
    let closable_at = period.ends_at() + state.periods.close_grace;
    if chrono::Utc::now() < closable_at {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "period.not_ended",
            format!("{} can be closed from {}", period.id(), closable_at.to_rfc3339()),
        ));
    }
    // The period's rows are read once: the close event's totals and the report come from them.
    let (closed, report) = match state.bus.last_delivery(Context::Settlement, "period", &period.id()).await.map_err(bus_error)? {
        Some(delivery) => {
            if state.bus.last_sequence(Context::Settlement, "report", &period.id()).await.map_err(bus_error)?.is_some() {
                return Err(ApiError::new(StatusCode::CONFLICT, "period.already_closed", format!("{} is closed", period.id())));
            }
            let closed = delivery
                .decode::<SettlementPeriodClosed>(&provenant_bus::Upcasters::contract())
                .map_err(|error| ApiError::internal("event.unreadable", error))?;
            let report = report_for(&state, period, closed.through_sequence).await?;
            (closed, report)
        }
        None => append_close(&state, &caller, period).await?,
    };
    let (report_sha256, artifacts) = issue_report(&state, &report).await?;
    // Read-your-writes for the period list; the answer does not depend on it.
    await_projection(DEFAULT_WAIT, || async {
        periods::find(&state.ledger, &period.id()).await.ok().flatten().is_some_and(|row| row.report_sha256.is_some())
    })
    .await;
    let view = PeriodView {
        period_id: closed.period_id,
        starts_at: closed.starts_at,
        ends_at: closed.ends_at,
        through_sequence: i64::try_from(closed.through_sequence).unwrap_or(i64::MAX),
        settlement_count: i64::try_from(closed.settlement_count).unwrap_or(i64::MAX),
        closed_by: closed.closed_by.map(|principal| principal.id).unwrap_or_default(),
        report_sha256: Some(report_sha256),
        artifacts,
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Waits for the ledger to hold every settlement in the log, then fixes the period at the
/// latest one and appends `SettlementPeriodClosed`.
async fn append_close(state: &AppState, caller: &Principal, period: Period) -> Result<(SettlementPeriodClosed, Report), ApiError> {
    let caught_up = await_projection(std::time::Duration::from_secs(10), || async {
        let in_log = state.bus.count_messages(Context::Settlement, "settlement").await.ok();
        let in_ledger = ledger::count_transactions(&state.ledger).await.ok();
        in_log.is_some() && in_log == in_ledger
    })
    .await;
    if !caught_up {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger.behind",
            "the ledger is still catching up with the log; try again",
        ));
    }
    let through = u64::try_from(ledger::last_stream_sequence(&state.ledger).await.map_err(unavailable)?).unwrap_or(0);
    let report = report_for(state, period, through).await?;
    let event = SettlementPeriodClosed {
        period_id: period.id(),
        starts_at: report.starts_at.clone(),
        ends_at: report.ends_at.clone(),
        settlement_count: report.settlement_count,
        fees_in: report
            .currencies
            .iter()
            .map(|totals| money(&totals.currency, totals.exponent, &totals.fees_in))
            .collect::<Result<_, _>>()?,
        payouts: report
            .payouts
            .iter()
            .map(|payout| {
                Ok(PayoutTotal {
                    beneficiary_account: payout.account.clone(),
                    amount: Some(money(&payout.currency, payout.exponent, &payout.amount)?),
                })
            })
            .collect::<Result<_, ApiError>>()?,
        closed_by: Some(ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::Finance.into() }),
        through_sequence: through,
    };
    state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, Expect::NoEvents).await.map_err(|error| match error {
        BusError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "period.already_closed", format!("{} is closed", period.id())),
        other => bus_error(other),
    })?;
    Ok((event, report))
}

fn money(currency: &str, exponent: u32, minor_units: &str) -> Result<provenant_events::proto::common::v1::Money, ApiError> {
    let units = provenant_events::money::parse_minor_units(minor_units).map_err(|error| ApiError::internal("report.invalid", error))?;
    Ok(Amount::new(currency, exponent, units).map_err(|error| ApiError::internal("report.invalid", error))?.to_proto())
}

async fn report_for(state: &AppState, period: Period, through: u64) -> Result<Report, ApiError> {
    let through = i64::try_from(through).unwrap_or(i64::MAX);
    let settled = ledger::period_transactions(&state.ledger, &period.id(), through).await.map_err(unavailable)?;
    Ok(reports::build(period, u64::try_from(through).unwrap_or(0), settled))
}

/// Stores the three renderings and appends `SettlementReportIssued` (once per period); returns
/// the report's SHA-256 and where its renderings are.
async fn issue_report(state: &AppState, report: &Report) -> Result<(String, Vec<Artifact>), ApiError> {
    let rendered = report.render().map_err(|error| ApiError::internal("report.unrenderable", error))?;
    let mut artifacts = Vec::with_capacity(3);
    for (format, bytes, media_type) in [
        ("json", &rendered.json, "application/json"),
        ("csv", &rendered.csv, "text/csv"),
        ("parquet", &rendered.parquet, "application/vnd.apache.parquet"),
    ] {
        let stored = state.reports.put(bytes).await.map_err(|error| ApiError::internal("blobs.unavailable", error))?;
        artifacts.push(ReportArtifact {
            format: format.to_owned(),
            blob: Some(BlobRef {
                sha256: stored.sha256,
                size_bytes: stored.size_bytes,
                bucket: stored.bucket,
                media_type: media_type.to_owned(),
            }),
        });
    }
    let views = artifacts.iter().filter_map(Artifact::from_proto).collect();
    let event = SettlementReportIssued {
        report_id: report.period_id.clone(),
        period_id: report.period_id.clone(),
        report_sha256: rendered.sha256.clone(),
        artifacts,
    };
    match state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, Expect::NoEvents).await {
        Ok(_) => Ok((rendered.sha256, views)),
        Err(BusError::Conflict { .. }) => {
            Err(ApiError::new(StatusCode::CONFLICT, "period.already_closed", format!("{} already has its report", report.period_id)))
        }
        Err(error) => Err(bus_error(error)),
    }
}

/// Closed periods with their report digests (finance).
#[utoipa::path(get, path = "/v1/periods", operation_id = "list_periods", tag = "periods", security(("api_key" = [])),
    responses((status = 200, description = "Closed periods", body = PeriodList), ErrorResponses))]
pub async fn list(State(state): State<AppState>, caller: Principal) -> Result<axum::Json<PeriodList>, ApiError> {
    caller.require(Role::Finance)?;
    let rows = periods::all(&state.ledger).await.map_err(unavailable)?;
    Ok(axum::Json(PeriodList { items: rows.into_iter().map(PeriodView::from).collect() }))
}

/// Download a closed period's report: `json` (canonical; its SHA-256 is the event's), `csv` or
/// `parquet` (one row per posting, with its settlement's evidence) (finance).
#[utoipa::path(get, path = "/v1/periods/{period_id}/reports/{format}", operation_id = "download_report", tag = "periods", security(("api_key" = [])),
    params(("period_id" = String, Path, description = "A period: YYYY-MM (months, the default), YYYY-MM-DD, YYYY-MM-DDTHH or YYYY-MM-DDTHHMM, as settlement.period sets", pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])(-[0-3][0-9](T[0-2][0-9]([0-5][0-9])?)?)?$"), ("format" = String, Path, description = "json, csv or parquet", pattern = "^(json|csv|parquet)$")),
    responses((status = 200, description = "The report file", content((serde_json::Value = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"))), ErrorResponses))]
pub async fn download(
    State(state): State<AppState>,
    caller: Principal,
    Path((period_id, format)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Finance)?;
    let period = parse_period(&state, &period_id)?;
    let media_type = match format.as_str() {
        "json" => "application/json",
        "csv" => "text/csv; charset=utf-8",
        "parquet" => "application/vnd.apache.parquet",
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "report.unknown_format", "format is json, csv or parquet")),
    };
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "report.not_found", format!("no report for {}", period.id()));
    let row = periods::find(&state.ledger, &period.id()).await.map_err(unavailable)?.ok_or_else(not_found)?;
    let artifact = row.artifacts().into_iter().find(|artifact| artifact.format == format).ok_or_else(not_found)?;
    let bytes =
        state.reports.get(&artifact.sha256).await.map_err(|error| ApiError::internal("blobs.unavailable", error))?.ok_or_else(not_found)?;
    let file_name = format!("attachment; filename=\"settlement-{}.{format}\"", period.id());
    Ok(([(header::CONTENT_TYPE, media_type.to_owned()), (header::CONTENT_DISPOSITION, file_name)], bytes))
}
