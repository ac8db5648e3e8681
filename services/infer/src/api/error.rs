//! Errors as OpenAI's API shapes them, so that OpenAI clients raise their usual exceptions:
//! `{"error": {"message", "type", "param", "code"}}`. `code` is stable and machine-readable.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use provenant_runtime::identity::Principal;
use serde::Serialize;
use tracing::error;

use super::AppState;

/// An error answer.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"message": "no model \"en/xx\"", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}))]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`
    /// or `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Stable: `model_not_found`, `context_length_exceeded`, `invalid_parameter`, …
    pub code: String,
}

impl OpenAiError {
    /// A bad request field.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_parameter",
            param: Some(param),
            message: message.into(),
        }
    }

    /// A field this server does not implement, set to something other than its default.
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> OpenAiError {
        OpenAiError { code: "unsupported_parameter", ..OpenAiError::invalid(param, message) }
    }

    pub fn model_not_found(requested: &str) -> OpenAiError {
        OpenAiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            param: Some("model"),
            message: format!("no model {requested:?}: name a registered base model, or <base>/<adapter>"),
        }
    }

    pub fn context_length_exceeded(prompt_tokens: usize, context: usize) -> OpenAiError {
        OpenAiError {
            code: "context_length_exceeded",
            message: format!("the prompt is {prompt_tokens} tokens; this model's context is {context}, and the answer needs at least one"),
            ..OpenAiError::invalid("prompt", "")
        }
    }

    pub fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> OpenAiError {
        OpenAiError { status, kind, code, param: None, message: message.into() }
    }

    /// A dependency of ours is down or broken: logged here, answered 503 without details.
    pub fn unavailable(code: &'static str, error: impl std::fmt::Display) -> OpenAiError {
        error!(%error, code, "request failed");
        OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", code, "temporarily unavailable, retry later")
    }

    pub fn body(&self) -> OpenAiErrorBody {
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.map(str::to_owned),
                code: self.code.to_owned(),
            },
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// The caller, from `Authorization: Bearer <api key>` (what OpenAI clients send).
#[derive(Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorised = |code, message: &str| OpenAiError::new(StatusCode::UNAUTHORIZED, "authentication_error", code, message);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorised("missing_api_key", "send Authorization: Bearer <api key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| unauthorised("malformed_authorization", "use the Bearer scheme: Authorization: Bearer <api key>"))?;
        state.directory.authenticate(key).map(Caller).ok_or_else(|| unauthorised("invalid_api_key", "unknown API key"))
    }
}

/// `axum::Json` whose rejections are OpenAI-shaped.
#[derive(Debug)]
pub struct OpenAiJson<T>(pub T);

impl<T, S> FromRequest<S> for OpenAiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(OpenAiJson(value)),
            Err(rejection) => {
                let (status, code) = match &rejection {
                    JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json"),
                    JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
                    JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
                    JsonRejection::BytesRejection(error) => (error.status(), "unreadable_body"),
                    _ => (StatusCode::BAD_REQUEST, "invalid_body"),
                };
                Err(OpenAiError::new(status, "invalid_request_error", code, rejection.body_text()))
            }
        }
    }
}

/// The error answers every inference operation may give.
#[derive(Debug)]
pub struct OpenAiErrorResponses;

impl utoipa::IntoResponses for OpenAiErrorResponses {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        use utoipa::openapi::response::ResponseBuilder;
        use utoipa::openapi::{ContentBuilder, Ref};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("OpenAiErrorBody"))).build())
                .build()
                .into()
        };
        [
            ("4XX".to_owned(), error("Bad input, unknown model, missing or invalid API key, unpriced model")),
            ("503".to_owned(), error("A dependency (NATS, the object store) is unavailable; retry")),
        ]
        .into_iter()
        .collect()
    }
}
