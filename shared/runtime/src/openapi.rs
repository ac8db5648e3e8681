//! The OpenAPI 3.1 description of a service's HTTP API, generated from its handlers with
//! utoipa, served as `/openapi.json` with a Swagger UI at `/docs` (assets compiled in).
//!
//! Every service documents errors the same way: one [`ErrorBody`] schema for every 4xx, and
//! 503 for a dependency that is down. The schemas here are the ones the handlers serialise, so
//! the document cannot drift from the answers; schemathesis checks that in `make test`.

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub use utoipa::{IntoParams, OpenApi as DeriveOpenApi, ToSchema};

/// The name of the bearer-key security scheme every authenticated operation refers to.
pub const API_KEY_SCHEME: &str = "api_key";

/// Completes a generated document: title, version, the API-key scheme and the shared schemas.
pub fn finish(mut api: OpenApi, title: &str, description: &str) -> OpenApi {
    api.info = InfoBuilder::new().title(title).version(env!("CARGO_PKG_VERSION")).description(Some(description)).build();
    let shared = ComponentsBuilder::new()
        .security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key")
                    .description(Some("`Authorization: Bearer pvk_…`, issued by an admin"))
                    .build(),
            ),
        )
        .schema_from::<crate::api_error::ErrorBody>()
        .schema_from::<crate::api_error::ErrorDetail>()
        .build();
    match api.components.as_mut() {
        Some(components) => {
            components.schemas.extend(shared.schemas);
            components.security_schemes.extend(shared.security_schemes);
        }
        None => api.components = Some(shared),
    }
    api
}

/// `/openapi.json` and the Swagger UI at `/docs`.
pub fn routes(api: OpenApi) -> Router {
    SwaggerUi::new("/docs").url("/openapi.json", api).into()
}

/// The error answers every operation may give, for `responses(…, ErrorResponses)`: any 4xx
/// (bad input, authentication, permission, conflict, quota) and 503 when a dependency is down.
#[derive(Debug)]
pub struct ErrorResponses;

impl utoipa::IntoResponses for ErrorResponses {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        use utoipa::openapi::response::ResponseBuilder;
        use utoipa::openapi::{ContentBuilder, Ref};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
                .build()
                .into()
        };
        [
            ("4XX".to_owned(), error("The request was refused; `error.code` says why")),
            ("503".to_owned(), error("A dependency (NATS, the database) is unavailable; retry later")),
        ]
        .into_iter()
        .collect()
    }
}

/// An OpenAPI link: what a successful answer lets the client (and schemathesis's stateful
/// phase) call next, with which of the answer's values as parameters.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The operation whose answer carries the link, and the status: `("POST", "/v1/datanets", "202")`.
    pub from: (&'static str, &'static str, &'static str),
    pub name: &'static str,
    pub to_operation_id: &'static str,
    /// Target parameter (`datanet_id`, `header.If-Match`) → runtime expression (`$response.body#/datanet_id`).
    pub parameters: &'static [(&'static str, &'static str)],
}

/// A service's HTTP app: its documented routes, the document they were generated into (at
/// `/openapi.json` and `/docs`), and a JSON 404 with a stable code for every other path.
pub fn app(routes: Router, api: OpenApi) -> Router {
    routes
        .merge(self::routes(api))
        .fallback(|| async { crate::ApiError::new(axum::http::StatusCode::NOT_FOUND, "route.not_found", "no such route") })
}

/// Adds `links` to their responses.
///
/// # Panics
/// When a link names an operation or response the document does not have: a programming
/// error that the services' document tests catch.
pub fn add_links(api: &mut OpenApi, links: &[Link]) {
    use utoipa::openapi::RefOr;
    for link in links {
        let (method, path, status) = link.from;
        let item = api.paths.paths.get_mut(path).unwrap_or_else(|| panic!("no path {path}"));
        let operation = match method {
            "GET" => item.get.as_mut(),
            "POST" => item.post.as_mut(),
            "PUT" => item.put.as_mut(),
            "DELETE" => item.delete.as_mut(),
            other => panic!("unsupported method {other}"),
        }
        .unwrap_or_else(|| panic!("no {method} {path}"));
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) else {
            panic!("no inline {status} response on {method} {path}")
        };
        let mut builder = utoipa::openapi::link::LinkBuilder::new().operation_id(link.to_operation_id);
        for (parameter, expression) in link.parameters {
            builder = builder.parameter(*parameter, *expression);
        }
        response.links.insert(link.name.to_owned(), RefOr::T(builder.build()));
    }
}

/// A request body of any bytes (plain text, Markdown, JSON lines): its schema accepts every
/// value, because the service, not the document, judges the text.
#[derive(Debug)]
pub struct AnyText;

impl utoipa::PartialSchema for AnyText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
        ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some("Any text; the service judges it")).build().into()
    }
}

impl utoipa::ToSchema for AnyText {}
