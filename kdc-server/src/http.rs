//! Thin axum glue: the route table, JSON extraction with problem+json
//! rejections, and the handlers that adapt HTTP to [`Kdc`] calls.

use std::future::Future;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use kdc_proto::{ALG, ENC};
use kdc_proto::{Argon2Params, UnixMillis, limits};
use kdc_proto::{
    InitialTicketRequest, KdcConfiguration, RenewRequest, SealingAlgorithms, ServiceTicketRequest, TicketReply,
};
use serde_json::json;

use auth_middleware::ServeLimits;

use crate::api_error::ApiError;
use crate::api_json::ApiJson;
use crate::audit::{AuditEvent, EventKind, Exchange, Outcome};
use crate::error::KdcError;
use crate::exchange::Parties;
use crate::request::{RequestContext, RequestTracking};
use crate::state::AppState;

/// Records the end of a ticket exchange in the audit trail and makes it the
/// answer. A failed audit write is counted and logged by the audit log but
/// does not hold the answer back (`docs/AUDIT.md`: issuance stays available).
///
/// The `preauth-required` challenge is not recorded: it opens every login,
/// proves nothing, and anyone can ask for one for free, so recording it
/// would let unauthenticated traffic fill the audit disk twice as fast for
/// nothing (the login that follows is recorded, either way).
async fn audited_exchange(
    s: &AppState,
    ctx: &RequestContext,
    exchange: Exchange,
    parties: Parties,
    result: Result<TicketReply, ApiError>,
    now: UnixMillis,
) -> Result<Json<TicketReply>, ApiError> {
    let event = match &result {
        Err(e) if matches!(e.error(), KdcError::PreAuthRequired(_)) => return result.map(Json),
        Ok(_) if exchange == Exchange::Renew => AuditEvent::new(EventKind::TicketRenewed, Outcome::Success),
        Ok(_) => AuditEvent::new(EventKind::TicketIssued, Outcome::Success),
        Err(e) => {
            let kind = e.error().problem_kind();
            AuditEvent::new(EventKind::TicketRefused, Outcome::of_refusal(kind))
                .problem(kind.slug())
                .reason(parties.reason)
        }
    };
    let mut event = event.exchange(exchange);
    if let Some(client) = &parties.client {
        event = event.actor(client);
    }
    if let Some(service) = &parties.service {
        event = event.service(service);
    }
    let _ = s.audit.record(ctx.stamp(event), now).await;
    result.map(Json)
}

async fn initial_ticket(
    State(s): State<AppState>,
    ctx: RequestContext,
    body: Result<ApiJson<InitialTicketRequest>, ApiError>,
) -> Result<Json<TicketReply>, ApiError> {
    let now = s.clock.now();
    let mut parties = Parties::default();
    let result = match body {
        Ok(ApiJson(req)) => s
            .kdc
            .initial_ticket(req, ctx.client, now, &mut parties)
            .await
            .map_err(|e| ApiError::in_realm(s.kdc.refused(e), s.kdc.realm())),
        Err(e) => Err(e),
    };
    audited_exchange(&s, &ctx, Exchange::Initial, parties, result, now).await
}

async fn service_ticket(
    State(s): State<AppState>,
    ctx: RequestContext,
    body: Result<ApiJson<ServiceTicketRequest>, ApiError>,
) -> Result<Json<TicketReply>, ApiError> {
    let now = s.clock.now();
    let mut parties = Parties::default();
    let result = match body {
        Ok(ApiJson(req)) => s
            .kdc
            .service_ticket(req, now, &mut parties)
            .await
            .map_err(|e| ApiError::in_realm(s.kdc.refused(e), s.kdc.realm())),
        Err(e) => Err(e),
    };
    audited_exchange(&s, &ctx, Exchange::Service, parties, result, now).await
}

async fn renew(
    State(s): State<AppState>,
    ctx: RequestContext,
    body: Result<ApiJson<RenewRequest>, ApiError>,
) -> Result<Json<TicketReply>, ApiError> {
    let now = s.clock.now();
    let mut parties = Parties::default();
    let result = match body {
        Ok(ApiJson(req)) => s
            .kdc
            .renew_ticket(req, now, &mut parties)
            .await
            .map_err(|e| ApiError::in_realm(s.kdc.refused(e), s.kdc.realm())),
        Err(e) => Err(e),
    };
    audited_exchange(&s, &ctx, Exchange::Renew, parties, result, now).await
}

/// `body` with `Cache-Control: public, max-age=…`: clients, services and
/// caches in between may keep discovery and the JWK set that long.
fn cacheable<T>(body: T) -> ([(header::HeaderName, String); 1], T) {
    let age = kdc_proto::DISCOVERY_MAX_AGE_SECS;
    ([(header::CACHE_CONTROL, format!("public, max-age={age}"))], body)
}

async fn configuration(State(s): State<AppState>) -> impl IntoResponse {
    let base = s.public_url.as_str();
    let p = s.kdc.policy();
    cacheable(Json(KdcConfiguration {
        realm: s.kdc.realm().clone(),
        protocol_version: "kdc-http/v1".to_owned(),
        issuer: base.to_owned(),
        initial_ticket_endpoint: format!("{base}/tickets/initial"),
        ticket_endpoint: format!("{base}/tickets"),
        renew_endpoint: format!("{base}/tickets/renew"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        sealing: SealingAlgorithms { alg: ALG.to_owned(), enc: ENC.to_owned(), kdf: "HKDF-SHA256".to_owned() },
        signing_alg_values_supported: vec!["EdDSA".to_owned()],
        argon2_defaults: Argon2Params::DEFAULT,
        argon2_floor: Argon2Params::FLOOR,
        max_clock_skew_secs: p.max_skew_secs,
        default_ticket_lifetime_secs: p.max_life_secs,
        max_renewable_lifetime_secs: p.max_renew_secs,
        max_ticket_bytes: limits::MAX_TICKET_LEN,
    }))
}

async fn jwks(State(s): State<AppState>) -> impl IntoResponse {
    cacheable(Json(s.kdc.jwks()))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, Response> {
    match s.kdc.store().ping().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            Err((StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable" }))).into_response())
        }
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&s.kdc, &s.audit))
}

/// Whether an answer's body is JSON (problem+json, or `/readyz`'s status).
fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .is_some_and(|ct| ct == "application/json" || ct == kdc_proto::PROBLEM_CONTENT_TYPE)
}

/// Rewrites an error answer whose body is not JSON into the problem for its
/// status. Handlers answer with [`ApiError`], but axum's own extractors
/// (`Query`, `Path`) refuse in `text/plain` that echoes the input; this keeps
/// every refusal in the one documented shape. Other headers are kept.
pub(crate) async fn uniform_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&resp) {
        return resp;
    }
    let Some(error) = crate::api_error::error_for_rejection(status) else { return resp };
    let (parts, _) = resp.into_parts();
    let mut fixed = ApiError::from(error).into_response();
    // The problem's own headers (its content type, a challenge) win; every
    // value of every other header of the original is kept.
    let own: Vec<header::HeaderName> = fixed.headers().keys().cloned().collect();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && !own.contains(name) {
            fixed.headers_mut().append(name.clone(), value.clone());
        }
    }
    fixed
}

async fn not_found() -> ApiError {
    KdcError::NotFound.into()
}

async fn method_not_allowed() -> ApiError {
    KdcError::MethodNotAllowed.into()
}

/// Every route the KDC serves: `(method, path, handler)`. The router is built
/// from this table alone, and a test checks it against `openapi.yaml`.
pub(crate) fn route_table() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::POST, "/tickets/initial", on(MethodFilter::POST, initial_ticket)),
        (Method::POST, "/tickets", on(MethodFilter::POST, service_ticket)),
        (Method::POST, "/tickets/renew", on(MethodFilter::POST, renew)),
        (Method::GET, "/.well-known/kdc-configuration", on(MethodFilter::GET, configuration)),
        (Method::GET, "/.well-known/jwks.json", on(MethodFilter::GET, jwks)),
        (Method::GET, "/healthz", on(MethodFilter::GET, healthz)),
        (Method::GET, "/readyz", on(MethodFilter::GET, readyz)),
        (Method::GET, "/metrics", on(MethodFilter::GET, metrics)),
    ]
}

/// Every route, public and admin, as `(method, path)`.
pub fn all_routes() -> Vec<(Method, &'static str)> {
    route_table().into_iter().chain(crate::admin::admin_routes()).map(|(m, p, _)| (m, p)).collect()
}

/// The KDC's HTTP application.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in route_table() {
        router = router.route(path, handler);
    }
    router
        .merge(crate::admin::admin_router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(uniform_errors))
        .layer(DefaultBodyLimit::max(limits::MAX_REQUEST_BODY))
        // Outside the admin layer (a preflight carries no ticket) and
        // `uniform_errors` (refusals carry the CORS headers too); inside the
        // request tracking, so preflights get a request id and a log line.
        .layer(axum::middleware::from_fn_with_state(state.cors.layer(), crate::cors::cors))
        // Outermost: the request id, `instance` in problems, and the one log
        // line per request (never a header or body: they carry tickets and
        // authenticators).
        .layer(axum::middleware::from_fn_with_state(
            RequestTracking::new(&state.kdc.throttle.policy().trusted_proxies),
            crate::request::track,
        ))
        .with_state(state)
}

/// Serves the application on `listener` until `shutdown` completes, with the
/// default [`ServeLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ServeLimits::default(), shutdown).await
}

/// Serves the application on `listener` within `limits` (request-head and
/// request deadlines, idle keep-alive, connections per address) until
/// `shutdown` completes.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, state, limits, None, shutdown).await
}

/// [`serve_with`], over TLS when `tls` is given (its certificate as it is
/// at each handshake, so a reload applies to new connections).
pub async fn serve_with_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ServeLimits,
    tls: Option<&auth_middleware::ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    /// Stops the admin-key refresher when serving ends or is dropped.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _refresher = AbortOnDrop(tokio::spawn(crate::admin::refresh_admin_keys(
        state.clone(),
        state.admin.clone(),
        std::time::Duration::from_secs(10),
    )));
    // Publishes a rotation made by the `kdc` command, retires old keys.
    let _signing_keys = AbortOnDrop(tokio::spawn(crate::signing_keys::refresh(
        state.kdc.clone(),
        state.clock.clone(),
        state.admin.clone(),
        std::time::Duration::from_secs(crate::signing_keys::RELOAD_INTERVAL_SECS),
    )));
    let admin = state.admin.clone();
    let stopped = match tls {
        Some(tls) => auth_middleware::serve_tls(listener, app(state), limits, tls, shutdown).await?,
        None => auth_middleware::serve(listener, app(state), limits, shutdown).await?,
    };
    if stopped.drained {
        // Every request has been answered: keep the admin replay cache for
        // the next start.
        admin.save_replay_state()
    } else {
        // A request may still be accepted after a snapshot: leave the file
        // saying "running", so the next start warms up instead.
        tracing::warn!("not saving the admin replay cache: requests were still open at shutdown");
        Ok(())
    }
}
