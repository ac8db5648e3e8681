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

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
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
        let body = Body { error: Detail { code: self.code, message: &self.message } };
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
