//! Submitting contributions and reading their status.
//!
//! A submission is one plain-text record (`text/plain`, `text/markdown`), a batch of JSON
//! records (`application/x-ndjson`), or a file upload (`multipart/form-data`, part `file`,
//! `.txt`, `.md` or `.jsonl`). Its bytes are stored once in the object store under their
//! SHA-256; the answer (202) comes after `ContributionSubmitted` is durable. Whether the records
//! are acceptable is the validate service's decision, visible here as the status.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use provenant_bus::{Envelope, Expect};
use provenant_events::proto::common::v1::{BlobRef, Principal as ProtoPrincipal, PrincipalKind};
use provenant_events::proto::datanet::v1 as proto;
use serde::Serialize;
use uuid::Uuid;

use super::datanets::visible;
use super::{ApiError, ApiJson, AppState};
use crate::projections::{contributions, daily_usage};
use provenant_runtime::identity::{Principal, Role};
use provenant_runtime::openapi::{AnyText, ErrorResponses, ToSchema};
use provenant_runtime::pagination::{PageQuery, PageRequest};
use provenant_runtime::read_your_writes::DEFAULT_WAIT;

#[derive(Debug, Serialize, ToSchema)]
pub struct Reviewed {
    contribution_id: String,
    /// Always `reviewed`: the decision's effect shows on the contribution.
    status: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    PlainText,
    JsonLines,
}

impl Format {
    fn label(self) -> &'static str {
        match self {
            Format::PlainText => "plain_text",
            Format::JsonLines => "json_lines",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Format::PlainText => "text/plain",
            Format::JsonLines => "application/x-ndjson",
        }
    }

    fn from_file_name(name: &str) -> Option<Format> {
        let extension = name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase())?;
        match extension.as_str() {
            "txt" | "md" => Some(Format::PlainText),
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "contribution.too_large", format!("contributions are limited to {limit} bytes"))
}

/// The submitted bytes, their format and the uploaded file's name.
async fn read_submission(state: &AppState, request: Request) -> Result<(Bytes, Format, Option<String>), ApiError> {
    let limit = state.contribution_max_bytes;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let format = match essence.as_str() {
        "text/plain" | "text/markdown" => Format::PlainText,
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => Format::JsonLines,
        "multipart/form-data" => return read_upload(state, request).await,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "contribution.unsupported_media_type",
                "send text/plain, text/markdown, application/x-ndjson, or a multipart/form-data file",
            ));
        }
    };
    let body =
        axum::body::to_bytes(request.into_body(), usize::try_from(limit).unwrap_or(usize::MAX)).await.map_err(|_| too_large(limit))?;
    Ok((body, format, None))
}

async fn read_upload(state: &AppState, request: Request) -> Result<(Bytes, Format, Option<String>), ApiError> {
    let limit = state.contribution_max_bytes;
    let malformed = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "request.malformed_multipart", message);
    let mut multipart = Multipart::from_request(request, state).await.map_err(|rejection| malformed(rejection.body_text()))?;
    while let Some(field) = multipart.next_field().await.map_err(|error| malformed(error.body_text()))? {
        if field.name() != Some("file") {
            continue;
        }
        let file_name = field.file_name().unwrap_or_default().to_owned();
        let format = Format::from_file_name(&file_name).ok_or_else(|| {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "contribution.unsupported_file", "upload a .txt, .md or .jsonl file")
        })?;
        let bytes = field.bytes().await.map_err(|error| {
            if error.status() == StatusCode::PAYLOAD_TOO_LARGE { too_large(limit) } else { malformed(error.body_text()) }
        })?;
        if bytes.len() as u64 > limit {
            return Err(too_large(limit));
        }
        return Ok((bytes, format, Some(file_name)));
    }
    Err(malformed("no part named \"file\"".to_owned()))
}

fn record_count(bytes: &[u8], format: Format) -> u32 {
    match format {
        Format::PlainText => 1,
        Format::JsonLines => {
            let lines = bytes.split(|byte| *byte == b'\n').filter(|line| line.iter().any(|byte| !byte.is_ascii_whitespace())).count();
            u32::try_from(lines).unwrap_or(u32::MAX)
        }
    }
}

/// Per-contributor daily quotas (UTC days), read from the projection's running totals (one
/// row, whatever the contributor's history). Submissions still in flight to the read model are
/// not counted yet, so a burst can overshoot by them.
async fn check_quota(state: &AppState, caller: &Principal, size: u64) -> Result<(), ApiError> {
    let (items, bytes) = daily_usage::on_day_of(&state.database, &caller.id, chrono::Utc::now())
        .await
        .map_err(|error| ApiError::internal("database.unavailable", error))?;
    if items >= state.quotas.daily_items_per_contributor {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota.daily_items_exceeded",
            format!("at most {} contributions a day; try again after midnight UTC", state.quotas.daily_items_per_contributor),
        ));
    }
    if bytes + size > state.quotas.daily_bytes_per_contributor {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota.daily_bytes_exceeded",
            format!("at most {} bytes a day; try again after midnight UTC", state.quotas.daily_bytes_per_contributor),
        ));
    }
    Ok(())
}

/// A Datanet's statistics: contributions by status, accepted records and bytes, contributors
/// and duplicate clusters.
#[utoipa::path(get, path = "/v1/datanets/{datanet_id}/stats", operation_id = "datanet_statistics", tag = "contributions", security(("api_key" = [])),
    params(("datanet_id" = String, Path, description = "The Datanet's id")),
    responses((status = 200, description = "Statistics", body = contributions::DatanetStatistics), ErrorResponses))]
pub async fn statistics(
    State(state): State<AppState>,
    caller: Principal,
    Path(datanet_id): Path<String>,
) -> Result<axum::Json<contributions::DatanetStatistics>, ApiError> {
    let datanet = visible(&state, &caller, &datanet_id).await?;
    let statistics =
        contributions::statistics(&state.database, &datanet.id).await.map_err(|error| ApiError::internal("database.unavailable", error))?;
    Ok(axum::Json(statistics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionAccepted {
    contribution_id: String,
    event_id: String,
    content_sha256: String,
    size_bytes: u64,
    record_count: u32,
    status: &'static str,
}

/// A file upload: part `file`, named `.txt`, `.md` or `.jsonl`.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Documentation only: the handler reads the multipart stream itself.
struct Upload {
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
}

/// Submit a contribution as the caller: one plain-text record, a batch of JSON lines, or a file.
///
/// Answers 202 once the content is in the object store and `ContributionSubmitted` is durable;
/// validation decides later (see the contribution's `status`).
#[utoipa::path(post, path = "/v1/datanets/{datanet_id}/contributions", operation_id = "submit_contribution", tag = "contributions", security(("api_key" = [])),
    params(("datanet_id" = String, Path, description = "The Datanet's id")),
    request_body(content(
        (AnyText = "text/plain"),
        (AnyText = "text/markdown"),
        (AnyText = "application/x-ndjson"),
        (Upload = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "Submitted", body = SubmissionAccepted,
            headers(("Location" = String, description = "The contribution"))),
        ErrorResponses,
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Principal,
    Path(datanet_id): Path<String>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Contributor)?;
    let datanet = visible(&state, &caller, &datanet_id).await?;
    let (bytes, format, file_name) = read_submission(&state, request).await?;
    if format.label() != datanet.record_format {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "contribution.format_mismatch",
            format!("this Datanet takes {} records", datanet.record_format),
        ));
    }
    let record_count = record_count(&bytes, format);
    if bytes.iter().all(u8::is_ascii_whitespace) || record_count == 0 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "contribution.empty", "the contribution has no content"));
    }
    check_quota(&state, &caller, bytes.len() as u64).await?;
    let stored = state.blobs.put(&bytes).await.map_err(|error| ApiError::internal("blobs.unavailable", error))?;
    let contribution_id = Uuid::now_v7().to_string();
    let event = proto::ContributionSubmitted {
        contribution_id: contribution_id.clone(),
        datanet_id: datanet.id.clone(),
        contributor: Some(ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::Contributor.into() }),
        blob: Some(BlobRef {
            sha256: stored.sha256.clone(),
            size_bytes: stored.size_bytes,
            bucket: stored.bucket.clone(),
            media_type: format.media_type().to_owned(),
        }),
        licence_spdx: datanet.licence_spdx.clone(),
        record_format: match format {
            Format::PlainText => proto::RecordFormat::PlainText,
            Format::JsonLines => proto::RecordFormat::JsonLines,
        }
        .into(),
        record_count,
        file_name: file_name.unwrap_or_default(),
    };
    let envelope = Envelope::new(&event, state.bus.producer());
    let published =
        state.bus.publish(&envelope, &event, Expect::NoEvents).await.map_err(|error| ApiError::internal("bus.unavailable", error))?;
    if state.quotas.await_read_model {
        // Past the deadline the answer goes out anyway: the submission stands.
        state.contributions_projected.reached(published.sequence, DEFAULT_WAIT).await;
    }
    let location = format!("/v1/contributions/{contribution_id}");
    let body = SubmissionAccepted {
        contribution_id,
        event_id: envelope.event_id.to_string(),
        content_sha256: stored.sha256,
        size_bytes: stored.size_bytes,
        record_count,
        status: "pending",
    };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContributionView {
    id: String,
    datanet_id: String,
    contributor_id: String,
    content_sha256: String,
    size_bytes: i64,
    record_count: i32,
    record_format: String,
    file_name: Option<String>,
    status: String,
    /// Why it was rejected: `[{"code", "message", "record_index"}]`.
    #[schema(value_type = Vec<Object>)]
    reasons: serde_json::Value,
    quality_score_ppm: Option<i32>,
    duplicate_cluster_id: Option<String>,
    flags: Vec<String>,
    submitted_at: String,
    decided_at: Option<String>,
}

impl From<contributions::Model> for ContributionView {
    fn from(row: contributions::Model) -> Self {
        ContributionView {
            reasons: serde_json::from_str(&row.reasons).unwrap_or_default(),
            flags: serde_json::from_str(&row.flags).unwrap_or_default(),
            submitted_at: row.submitted_at.to_rfc3339(),
            decided_at: row.decided_at.map(|at| at.to_rfc3339()),
            id: row.id,
            datanet_id: row.datanet_id,
            contributor_id: row.contributor_id,
            content_sha256: row.content_sha256,
            size_bytes: row.size_bytes,
            record_count: row.record_count,
            record_format: row.record_format,
            file_name: row.file_name,
            status: row.status,
            quality_score_ppm: row.quality_score_ppm,
            duplicate_cluster_id: row.duplicate_cluster_id,
        }
    }
}

/// One contribution and its status, for its contributor, the Datanet's owner and admins.
#[utoipa::path(get, path = "/v1/contributions/{contribution_id}", operation_id = "get_contribution", tag = "contributions", security(("api_key" = [])),
    params(("contribution_id" = String, Path, description = "The contribution's id")),
    responses((status = 200, description = "The contribution", body = ContributionView), ErrorResponses))]
pub async fn get(
    State(state): State<AppState>,
    caller: Principal,
    Path(contribution_id): Path<String>,
) -> Result<axum::Json<ContributionView>, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "contribution.not_found", format!("no contribution {contribution_id:?}"));
    let row = contributions::find(&state.database, &contribution_id)
        .await
        .map_err(|error| ApiError::internal("database.unavailable", error))?
        .ok_or_else(not_found)?;
    if row.contributor_id != caller.id && !caller.has(Role::Admin) {
        let owns_datanet = visible(&state, &caller, &row.datanet_id).await.is_ok_and(|datanet| datanet.owner_id == caller.id);
        if !owns_datanet {
            return Err(not_found());
        }
    }
    Ok(axum::Json(row.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContributionPage {
    contributions: Vec<ContributionView>,
    next_after: Option<String>,
}

/// The caller's own contributions, oldest first.
#[utoipa::path(get, path = "/v1/contributions", operation_id = "list_my_contributions", tag = "contributions", security(("api_key" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of contributions", body = ContributionPage), ErrorResponses))]
pub async fn list_mine(
    State(state): State<AppState>,
    caller: Principal,
    page: PageRequest,
) -> Result<axum::Json<ContributionPage>, ApiError> {
    let rows = contributions::list_by_contributor(&state.database, &caller.id, page.after.as_deref(), page.limit)
        .await
        .map_err(|error| ApiError::internal("database.unavailable", error))?;
    let next_after = page.next_after(rows.iter().map(|row| row.id.as_str()));
    Ok(axum::Json(ContributionPage { contributions: rows.into_iter().map(ContributionView::from).collect(), next_after }))
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    decision: Decision,
    /// Shown to the contributor when rejecting.
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: String,
}

/// The Datanet's owner approves (validation then decides) or rejects a contribution to an
/// `owner_approval` Datanet.
#[utoipa::path(post, path = "/v1/contributions/{contribution_id}/review", operation_id = "review_contribution", tag = "contributions", security(("api_key" = [])),
    params(("contribution_id" = String, Path, description = "The contribution's id")),
    request_body = Review,
    responses((status = 202, description = "Reviewed", body = Reviewed), ErrorResponses))]
pub async fn review(
    State(state): State<AppState>,
    caller: Principal,
    Path(contribution_id): Path<String>,
    ApiJson(review): ApiJson<Review>,
) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "contribution.not_found", format!("no contribution {contribution_id:?}"));
    let row = contributions::find(&state.database, &contribution_id)
        .await
        .map_err(|error| ApiError::internal("database.unavailable", error))?
        .ok_or_else(not_found)?;
    let datanet = visible(&state, &caller, &row.datanet_id).await.map_err(|_| not_found())?;
    if datanet.owner_id != caller.id && !caller.has(Role::Admin) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "auth.not_owner", "only the Datanet's owner reviews its contributions"));
    }
    if row.status != "awaiting_approval" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "contribution.not_awaiting_approval",
            format!("the contribution is {}", row.status),
        ));
    }
    if review.reason.chars().count() > 1_000 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "review.reason_too_long", "reasons are limited to 1,000 characters"));
    }
    let reviewer = ProtoPrincipal { id: caller.id.clone(), kind: PrincipalKind::DatanetOwner.into() };
    // Conditional on the contribution's last event: a concurrent review or verdict makes this a 409.
    let expect = Expect::LastSequence(u64::try_from(row.version).unwrap_or(0));
    let published = match review.decision {
        Decision::Approve => {
            let event = proto::ContributionApproved {
                contribution_id: row.id.clone(),
                datanet_id: row.datanet_id.clone(),
                approved_by: Some(reviewer),
            };
            state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, expect).await
        }
        Decision::Reject => {
            let message = if review.reason.is_empty() { "rejected by the Datanet's owner".to_owned() } else { review.reason };
            let event = proto::ContributionRejected {
                contribution_id: row.id.clone(),
                datanet_id: row.datanet_id.clone(),
                contributor: Some(ProtoPrincipal { id: row.contributor_id.clone(), kind: PrincipalKind::Contributor.into() }),
                reasons: vec![proto::RejectionReason { code: "owner.rejected".to_owned(), message, record_index: None }],
            };
            state.bus.publish(&Envelope::new(&event, state.bus.producer()), &event, expect).await
        }
    };
    match published {
        Ok(_) => Ok((StatusCode::ACCEPTED, axum::Json(Reviewed { contribution_id: row.id, status: "reviewed" }))),
        Err(provenant_bus::Error::Conflict { .. }) => {
            Err(ApiError::new(StatusCode::CONFLICT, "contribution.changed", "the contribution changed since it was read; read it again"))
        }
        Err(error) => Err(ApiError::internal("bus.unavailable", error)),
    }
}
