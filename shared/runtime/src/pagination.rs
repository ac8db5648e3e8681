//! Keyset pagination shared by the list endpoints: `?after=<id>&limit=<1..=500>`, pages ordered
//! by id, and `next_after` on every page but the last.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;

use crate::ApiError;

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 500;

/// The query parameters of a list endpoint, as documented: `params(PageQuery)`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_after` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    /// Items per page.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u64>,
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u64,
}

impl PageRequest {
    /// The `after` of the next page: the last id, when the page came back full.
    pub fn next_after<'a>(&self, ids: impl DoubleEndedIterator<Item = &'a str> + ExactSizeIterator) -> Option<String> {
        let full = ids.len() as u64 == self.limit;
        ids.last().filter(|_| full).map(str::to_owned)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(raw) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection: QueryRejection| ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_query", rejection.body_text()))?;
        let limit = raw.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "request.invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(PageRequest { after: raw.after, limit })
    }
}
