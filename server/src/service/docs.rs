//! `GET /docs`: Swagger UI, the interactive reference of this API, reading the one document
//! `/openapi.json` serves. Its files are compiled into the binary from utoipa-swagger-ui's
//! vendored copy: nothing is downloaded when the service is built or when the page loads.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_SECURITY_POLICY;
use axum::response::Response;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Swagger UI sets inline styles, so these pages allow them; scripts, images, fonts and
/// calls come from this service alone. The dashboard keeps its stricter policy.
const POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; \
                      img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// `/docs` (which redirects to `/docs/`) and Swagger UI's files under it.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let ui: Router<S> = SwaggerUi::new("/docs")
        .config(Config::from("/openapi.json"))
        .into();
    ui.layer(axum::middleware::map_response(with_policy))
}

async fn with_policy(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}
