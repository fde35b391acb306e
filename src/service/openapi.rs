//! `GET /openapi.json`: the service described in OpenAPI 3, generated from the handlers'
//! own types.

use axum::Json;
use utoipa::OpenApi;

use super::{check, health};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate",
        description = "Rate limits checked over HTTP: a key service, a tiered check service and an admin API, on one limiter."
    ),
    paths(check::by_key, check::by_identifier, health::health),
    components(schemas(
        check::KeyAllowed,
        check::KeyRefused,
        check::CheckRequest,
        check::CheckAllowed,
        check::CheckRefused,
        check::CheckRefusal,
        health::Health
    ))
)]
pub(crate) struct ApiDoc;

/// The service's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")), tag = "meta")]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
