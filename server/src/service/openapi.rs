//! `GET /openapi.json`: the service described in OpenAPI 3, generated from the handlers'
//! own types.

use axum::Json;
use utoipa::OpenApi;

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{
    admin, check, configs, dashboard, events, forward_auth, health, keys, metrics, rules, stats,
    tickets,
};

/// The admin routes' bearer token.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate",
        description = "Rate limits checked over HTTP: a key service, a tiered check service and an admin API, on one limiter."
    ),
    paths(
        check::by_key,
        check::by_identifier,
        check::settle,
        check::status,
        forward_auth::check,
        health::health,
        dashboard::page,
        metrics::render,
        keys::configure,
        stats::key,
        stats::global,
        stats::client,
        configs::list,
        configs::create,
        configs::update,
        configs::remove,
        admin::reset,
        admin::reset_rule,
        rules::list,
        rules::set_client,
        rules::remove_client,
        rules::set_route,
        rules::remove_route,
        events::global_sse,
        events::client_sse,
        events::global_ws,
        events::client_ws,
        tickets::mint
    ),
    modifiers(&AdminToken),
    components(schemas(
        check::KeyAllowed,
        check::KeyRefused,
        check::CheckRequest,
        check::SettleRequest,
        check::SettleAnswer,
        check::CheckAllowed,
        check::CheckRefused,
        check::CheckRefusal,
        check::Status,
        check::BandView,
        forward_auth::BadForwardAuth,
        health::Health,
        keys::Configure,
        keys::Configured,
        tollgate::Calls,
        stats::KeyStats,
        stats::ClientStats,
        stats::GlobalStats,
        stats::LimitedClient,
        configs::Config,
        configs::NewConfig,
        configs::ConfigUpdate,
        configs::ConfigDeleted,
        admin::Reset,
        rules::RuleInForce,
        rules::StoredEntry,
        rules::RulesView,
        rules::EntryChanged,
        tickets::Ticket
    ))
)]
pub(crate) struct ApiDoc;

/// The service's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")), tag = "meta")]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
