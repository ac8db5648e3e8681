use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;

/// An error answer: `{"error": {"code": "...", "message": "..."}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "datanet.not_found", "message": "no Datanet \"x\""}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `<area>.<reason>`, such as `quota.daily_items_exceeded`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// A failure of ours or of a dependency: logged here, once, and answered without details.
    pub fn internal(code: &'static str, error: impl std::fmt::Display) -> ApiError {
        error!(%error, code, "request failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, "temporarily unavailable, retry later")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, axum::Json(body)).into_response()
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s with stable codes.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "request.not_json", "send Content-Type: application/json")
                }
                JsonRejection::JsonSyntaxError(error) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "request.malformed_json", error.body_text())
                }
                JsonRejection::JsonDataError(error) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "request.invalid_body", error.body_text())
                }
                JsonRejection::BytesRejection(error) => ApiError::new(error.status(), "request.unreadable_body", error.body_text()),
                other => ApiError::new(StatusCode::BAD_REQUEST, "request.invalid", other.body_text()),
            }),
        }
    }
}

/// `#[serde(deserialize_with = "whole_number")]`: an unsigned integer field that also takes the
/// JSON numbers `3.0` and `3e2`, which JSON Schema (and so every generated client) calls integers.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(value), _) => Some(value),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range and fraction are checked first")]
        (None, Some(value)) if value.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&value) => Some(value as u64),
        _ => None,
    };
    whole.and_then(|value| T::try_from(value).ok()).ok_or_else(|| D::Error::custom(format!("{number} is not a whole number in range")))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[serde(deserialize_with = "super::whole_number")]
        n: u32,
    }

    #[test]
    fn whole_numbers_in_any_json_spelling_are_accepted_and_the_rest_refused() {
        for (text, expected) in [("3", 3), ("3.0", 3), ("3e2", 300), ("0.0", 0)] {
            let sample: Sample = serde_json::from_str(&format!(r#"{{"n": {text}}}"#)).expect(text);
            assert_eq!(sample.n, expected, "{text}");
        }
        for text in ["3.5", "-1", "5e9", "\"3\"", "1e400"] {
            assert!(serde_json::from_str::<Sample>(&format!(r#"{{"n": {text}}}"#)).is_err(), "{text} must be refused");
        }
    }
}
