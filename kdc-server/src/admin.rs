//! Remote administration (`/admin/principals…`), protected by the project's
//! own middleware: callers present a ticket for `kadmin/admin@REALM` and must
//! hold the `admin` role.

use std::time::Duration;

use auth_middleware::MissingAuthLayer;
use auth_middleware::{AuthRejection, AuthenticatedPrincipal, AuthorityPolicy, TicketAuthLayer};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use kdc_proto::{Kvno, Principal};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument as _;
use zeroize::Zeroizing;

use crate::api_error::ApiError;
use crate::api_json::ApiJson;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::error::KdcError;
use crate::kdc::{ADMIN_ROLE, Credential, Kdc, PrincipalSpec};
use crate::request::RequestContext;
use crate::state::AppState;
use crate::store::{PrincipalRecord, PrincipalUpdate};

/// Largest page of a principal listing.
pub(crate) const MAX_PAGE: u32 = 1000;

/// A principal as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PrincipalView {
    /// Full name.
    pub name: String,
    /// Immutable id.
    pub id: String,
    /// `user` or `service`.
    pub kind: String,
    /// Disabled principals get no tickets.
    pub disabled: bool,
    /// Roles.
    pub roles: Vec<String>,
    /// Lifetime override (seconds), if any.
    pub max_life_secs: Option<u64>,
    /// Renewable-lifetime override (seconds), if any.
    pub max_renew_secs: Option<u64>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Live key versions, newest first (only in single-principal answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvnos: Vec<Kvno>,
}

impl PrincipalView {
    fn of(r: &PrincipalRecord, kvnos: Vec<Kvno>) -> Self {
        Self {
            name: r.name.clone(),
            id: r.id.clone(),
            kind: r.kind.as_str().to_owned(),
            disabled: r.disabled,
            roles: r.roles.clone(),
            max_life_secs: r.max_life_secs,
            max_renew_secs: r.max_renew_secs,
            created_at: r.created_at,
            kvnos,
        }
    }
}

/// A page of principals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PrincipalPage {
    /// The principals, by name.
    pub principals: Vec<PrincipalView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Listing parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Names after this one.
    after: Option<String>,
    /// Page size (default 100, at most 1000).
    limit: Option<u32>,
}

/// `POST /admin/principals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    /// Name (a bare name gets the realm).
    name: String,
    /// `user` (needs `password_sealed`) or `service` (random key).
    kind: String,
    /// A user's initial password, sealed under the admin ticket's session key
    /// (usage `session-secret`): it never crosses the network in the clear.
    password_sealed: Option<String>,
    /// Roles.
    #[serde(default)]
    roles: Vec<String>,
    /// Lifetime override.
    max_life_secs: Option<u64>,
    /// Renewable-lifetime override.
    max_renew_secs: Option<u64>,
}

/// `PATCH /admin/principals/{name}`: absent fields stay as they are; `null`
/// clears an override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrincipal {
    disabled: Option<bool>,
    roles: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    max_life_secs: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    max_renew_secs: Option<Option<u64>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// `POST /admin/principals/{name}/rotate`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// A user's new password, sealed like [`CreatePrincipal`]'s (services: omit).
    password_sealed: Option<String>,
}

/// The answer to a rotation.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Rotated {
    /// The new key version.
    pub kvno: Kvno,
}

/// Opens a password the admin sealed under its session key.
fn open_password(who: &AuthenticatedPrincipal, sealed: &str) -> Result<Zeroizing<String>, KdcError> {
    let bytes = who
        .open_secret(sealed)
        .map_err(|_| KdcError::Malformed("password_sealed does not open under this session key".to_owned()))?;
    let pw = Zeroizing::new(
        String::from_utf8(bytes.to_vec()).map_err(|_| KdcError::Malformed("password must be UTF-8".to_owned()))?,
    );
    if pw.is_empty() || pw.len() > 1024 {
        return Err(KdcError::Malformed("password must be 1 to 1024 bytes".to_owned()));
    }
    Ok(pw)
}

async fn view(kdc: &Kdc, rec: &PrincipalRecord, now: u64) -> Result<PrincipalView, KdcError> {
    let kvnos = kdc.key_versions(rec, now).await?.into_iter().map(|k| k.kvno).collect();
    Ok(PrincipalView::of(rec, kvnos))
}

async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<PrincipalPage>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = s.kdc.list_principals(q.after.as_deref(), limit).await?;
    let next = (page.len() == limit as usize).then(|| page.last().map(|r| r.name.clone())).flatten();
    Ok(Json(PrincipalPage { principals: page.iter().map(|r| PrincipalView::of(r, vec![])).collect(), next }))
}

/// Runs an administrative change and records it in the audit trail (as
/// `kind`, on `target`, by the caller), failing closed: while the audit
/// trail is failing the change is not attempted, and a change the trail
/// could not record is answered `503 audit-unavailable` (saying it was
/// applied). A refused change is recorded too, as far as the trail allows.
/// `change` gets the state and the caller and returns its answer and its
/// success event (with the details only it knows: the canonical name, a key
/// version, what changed).
///
/// The change and its record run in a task of their own, which the request
/// only waits for: store writes finish on a blocking thread even when the
/// request is dropped (the client hangs up, the request times out, the
/// shutdown grace runs out), so a change run inside the request could be
/// saved and never recorded. `kdc serve` waits for these tasks before it
/// exits ([`crate::audit::AuditLog::changes_finished`]).
async fn audited<T, F>(
    s: &AppState,
    ctx: &RequestContext,
    who: &AuthenticatedPrincipal,
    kind: EventKind,
    target: &str,
    change: impl FnOnce(AppState, AuthenticatedPrincipal) -> F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<(T, AuditEvent), KdcError>> + Send + 'static,
{
    s.audit.check().map_err(|_| KdcError::AuditUnavailable { applied: false })?;
    let change = change(s.clone(), who.clone());
    let (s, ctx, actor) = (s.clone(), ctx.clone(), who.name().clone());
    let target = target.to_owned();
    let in_progress = s.audit.change_started();
    let task = async move {
        let _in_progress = in_progress;
        let result = change.await;
        let now = s.clock.now();
        match result {
            Ok((answer, event)) => {
                let event = ctx.stamp(event.actor(&actor).target_or(&target));
                s.audit.record(event, now).await.map_err(|_| KdcError::AuditUnavailable { applied: true })?;
                Ok(answer)
            }
            Err(e) => {
                let problem = e.problem_kind();
                let event = AuditEvent::new(kind, Outcome::of_refusal(problem))
                    .problem(problem.slug())
                    .actor(&actor)
                    .target(audit_target(&s.kdc, &target));
                let _ = s.audit.record(ctx.stamp(event), now).await;
                Err(e)
            }
        }
    };
    match tokio::spawn(task.instrument(tracing::Span::current())).await {
        Ok(result) => result.map_err(ApiError::from),
        // The task panicked: a bug, answered like any internal failure.
        Err(_) => Err(KdcError::Internal("an administrative change failed").into()),
    }
}

/// The principal a refused change was about, for its event: the canonical
/// name when the one given parses, else the name as given (which
/// [`AuditEvent::target`] cuts to a bounded length).
fn audit_target(kdc: &Kdc, given: &str) -> String {
    kdc.principal_name(given).map_or_else(|_| given.to_owned(), |n| n.to_string())
}

async fn create(
    State(s): State<AppState>,
    ctx: RequestContext,
    who: AuthenticatedPrincipal,
    ApiJson(req): ApiJson<CreatePrincipal>,
) -> Result<Response, ApiError> {
    let target = req.name.clone();
    audited(&s, &ctx, &who, EventKind::PrincipalCreated, &target, move |s, who| async move {
        let kdc = &s.kdc;
        let now = s.clock.now().as_secs();
        let name = kdc.principal_name(&req.name)?;
        let credential = match (req.kind.as_str(), req.password_sealed) {
            ("user", Some(sealed)) => Credential::Password(open_password(&who, &sealed)?),
            ("service", None) => Credential::Random,
            ("user", None) => return Err(KdcError::Malformed("a user needs a password".to_owned())),
            ("service", Some(_)) => {
                return Err(KdcError::InvalidOperation("service principals have random keys, never passwords"));
            }
            _ => return Err(KdcError::Malformed("kind must be \"user\" or \"service\"".to_owned())),
        };
        let spec = PrincipalSpec {
            name,
            credential,
            roles: req.roles,
            max_life_secs: req.max_life_secs,
            max_renew_secs: req.max_renew_secs,
        };
        let rec = kdc.create_principal(spec, now).await?;
        let event = AuditEvent::new(EventKind::PrincipalCreated, Outcome::Success).target(&rec.name).changes(json!({
            "kind": rec.kind.as_str(),
            "roles": rec.roles,
            "max_life_secs": rec.max_life_secs,
            "max_renew_secs": rec.max_renew_secs,
        }));
        Ok(((StatusCode::CREATED, Json(view(kdc, &rec, now).await?)).into_response(), event))
    })
    .await
}

async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<PrincipalView>, ApiError> {
    let name = s.kdc.principal_name(&name)?;
    let rec = s.kdc.get(&name).await?;
    Ok(Json(view(&s.kdc, &rec, s.clock.now().as_secs()).await?))
}

/// What an update sets, for the audit trail: the fields given, `null` for a
/// cleared override.
pub(crate) fn update_changes(update: &PrincipalUpdate) -> serde_json::Value {
    let mut changes = serde_json::Map::new();
    if let Some(d) = update.disabled {
        changes.insert("disabled".into(), json!(d));
    }
    if let Some(r) = &update.roles {
        changes.insert("roles".into(), json!(r));
    }
    if let Some(l) = update.max_life_secs {
        changes.insert("max_life_secs".into(), json!(l));
    }
    if let Some(r) = update.max_renew_secs {
        changes.insert("max_renew_secs".into(), json!(r));
    }
    serde_json::Value::Object(changes)
}

async fn update(
    State(s): State<AppState>,
    ctx: RequestContext,
    who: AuthenticatedPrincipal,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdatePrincipal>,
) -> Result<Json<PrincipalView>, ApiError> {
    audited(&s, &ctx, &who, EventKind::PrincipalUpdated, &name.clone(), move |s, _| async move {
        let kdc = &s.kdc;
        let name = kdc.principal_name(&name)?;
        let update = PrincipalUpdate {
            disabled: req.disabled,
            roles: req.roles,
            max_life_secs: req.max_life_secs,
            max_renew_secs: req.max_renew_secs,
        };
        let rec = kdc.update_principal(&name, &update).await?;
        let event = AuditEvent::new(EventKind::PrincipalUpdated, Outcome::Success)
            .target(&name)
            .changes(update_changes(&update));
        Ok((Json(view(kdc, &rec, s.clock.now().as_secs()).await?), event))
    })
    .await
}

async fn delete(
    State(s): State<AppState>,
    ctx: RequestContext,
    who: AuthenticatedPrincipal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    audited(&s, &ctx, &who, EventKind::PrincipalDeleted, &name.clone(), move |s, who| async move {
        let name = s.kdc.principal_name(&name)?;
        s.kdc.delete_principal(&name, Some(who.name())).await?;
        Ok((StatusCode::NO_CONTENT, AuditEvent::new(EventKind::PrincipalDeleted, Outcome::Success).target(&name)))
    })
    .await
}

async fn rotate(
    State(s): State<AppState>,
    ctx: RequestContext,
    who: AuthenticatedPrincipal,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Rotated>, ApiError> {
    audited(&s, &ctx, &who, EventKind::PrincipalRotated, &name.clone(), move |s, who| async move {
        let name = s.kdc.principal_name(&name)?;
        // The body is optional: services rotate with none.
        let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
            RotateRequest::default()
        } else {
            serde_json::from_slice(&body)
                .map_err(|_| KdcError::Malformed("body must be {} or {\"password_sealed\": \"…\"}".to_owned()))?
        };
        let password = req.password_sealed.as_deref().map(|p| open_password(&who, p)).transpose()?;
        let kvno = s.kdc.rotate(&name, password, s.clock.now().as_secs()).await?;
        Ok((
            Json(Rotated { kvno }),
            AuditEvent::new(EventKind::PrincipalRotated, Outcome::Success).target(&name).kvno(kvno),
        ))
    })
    .await
}

/// `POST /admin/principals/{name}/unlock`: lifts the principal's
/// pre-authentication lock-out ([`Kdc::unlock_principal`]); no body.
async fn unlock(
    State(s): State<AppState>,
    ctx: RequestContext,
    who: AuthenticatedPrincipal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    audited(&s, &ctx, &who, EventKind::PrincipalUnlocked, &name.clone(), move |s, _| async move {
        let name = s.kdc.principal_name(&name)?;
        s.kdc.unlock_principal(&name, s.clock.now().as_secs()).await?;
        Ok((StatusCode::NO_CONTENT, AuditEvent::new(EventKind::PrincipalUnlocked, Outcome::Success).target(&name)))
    })
    .await
}

/// A keytab sealed for the admin who asked (usage `session-secret-reply`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SealedKeytab {
    /// The JSON keytab, sealed under the admin ticket's session key.
    pub keytab_sealed: String,
}

async fn keytab(
    State(s): State<AppState>,
    ctx: RequestContext,
    who: AuthenticatedPrincipal,
    Path(name): Path<String>,
) -> Result<Json<SealedKeytab>, ApiError> {
    // Key material leaves the KDC: audited like a change, and the sealed
    // keytab is only answered once the event is recorded.
    audited(&s, &ctx, &who, EventKind::KeytabExported, &name.clone(), move |s, who| async move {
        let name = s.kdc.principal_name(&name)?;
        let kt = s.kdc.keytab(&name, s.clock.now().as_secs()).await?;
        let json = Zeroizing::new(serde_json::to_vec(&kt).map_err(|_| KdcError::Internal("keytab encoding"))?);
        let keytab_sealed = who.seal_secret(&json).map_err(|_| KdcError::Internal("sealing the keytab failed"))?;
        let kvnos = kt.keys.iter().map(|k| k.kvno).collect();
        let event = AuditEvent::new(EventKind::KeytabExported, Outcome::Success).target(&name).kvnos(kvnos);
        Ok((Json(SealedKeytab { keytab_sealed }), event))
    })
    .await
}

/// The admin routes: `(method, path, handler)`, all behind the admin layer.
pub(crate) fn admin_routes() -> Vec<(axum::http::Method, &'static str, axum::routing::MethodRouter<AppState>)> {
    use axum::http::Method;
    use axum::routing::{MethodFilter, on};
    vec![
        (Method::GET, "/admin/principals", on(MethodFilter::GET, list)),
        (Method::POST, "/admin/principals", on(MethodFilter::POST, create)),
        (Method::GET, "/admin/principals/{name}", on(MethodFilter::GET, show)),
        (Method::PATCH, "/admin/principals/{name}", on(MethodFilter::PATCH, update)),
        (Method::DELETE, "/admin/principals/{name}", on(MethodFilter::DELETE, delete)),
        (Method::POST, "/admin/principals/{name}/rotate", on(MethodFilter::POST, rotate)),
        (Method::POST, "/admin/principals/{name}/unlock", on(MethodFilter::POST, unlock)),
        (Method::GET, "/admin/principals/{name}/keytab", on(MethodFilter::GET, keytab)),
    ]
}

impl Kdc {
    /// Whether the caller of an admin request is an administrator *now*: the
    /// principal its ticket names, re-read by immutable id, still exists
    /// under the same name, is enabled, and holds [`ADMIN_ROLE`] in the
    /// store. The roles baked into its ticket only got it past the admin
    /// layer; a principal disabled, deleted, re-created or demoted since the
    /// ticket was issued is no longer an administrator.
    pub async fn is_current_admin(&self, caller: &AuthenticatedPrincipal) -> Result<bool, KdcError> {
        match self.current_principal(caller.client_id(), caller.name()).await {
            Ok(rec) => Ok(rec.roles.iter().any(|r| r == ADMIN_ROLE)),
            Err(KdcError::ClientNotPermitted) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Runs inside the admin layer on every admin request: re-reads the caller
/// ([`Kdc::is_current_admin`]) and refuses one who is no longer an
/// administrator with exactly the answer the layer gives a ticket without
/// the role (`403 insufficient-role`), so the answer does not say whether
/// the caller was disabled, deleted or demoted. One SQLite lookup by primary
/// key per admin request, no cache: admin calls are rare, and a cache would
/// need invalidating on writes from other processes (the `kdc` command).
pub(crate) async fn require_current_admin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<AuthenticatedPrincipal>().cloned() else {
        // The admin layer puts the caller there; without it the routes are
        // wired wrong, and the answer is a refusal.
        return MissingAuthLayer.into_response();
    };
    match s.kdc.is_current_admin(&caller).await {
        Ok(true) => next.run(req).await,
        Ok(false) => {
            let event = AuditEvent::new(EventKind::AdminRefused, Outcome::Refused)
                .actor(caller.name())
                .problem("insufficient-role")
                .reason(Some("not-current-admin"));
            let event = match req.extensions().get::<RequestContext>() {
                Some(ctx) => ctx.stamp(event),
                None => event,
            };
            let _ = s.audit.record(event, s.clock.now()).await;
            AuthRejection::MissingRole.into_response_for(s.kdc.realm().as_str())
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The admin routes with their guards, ready to merge into the KDC's
/// router: the admin layer ([`AppState::admin`]) authenticates and checks
/// the role in the ticket, then [`require_current_admin`] checks the store.
pub(crate) fn admin_router(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for (_, path, handler) in admin_routes() {
        router = router.route(path, handler);
    }
    router
        // Inner: runs only for requests the admin layer let through.
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_current_admin))
        // Inside the admin layer, so that the mutual reply it adds covers the
        // rewritten body and the problem's `instance`.
        .layer(axum::middleware::map_response(crate::http::uniform_errors))
        .layer(axum::middleware::map_response(crate::request::problem_instance))
        .layer(state.admin.clone())
}

/// Builds the layer that guards the admin routes: the KDC's own
/// `kadmin/admin` keys (refreshed by [`refresh_admin_keys`]) and its own JWK
/// set, role `admin` required.
///
/// With a shared replay cache ([`Kdc::share_replay_cache`]) the layer's
/// replay cache is in that Redis too, so an admin request replayed at another
/// KDC instance is refused. Otherwise, with `replay_state`, it is kept across
/// clean restarts in that file (see [`auth_middleware::TicketAuthBuilder::replay_state_file`]);
/// without it, admin requests are refused as stale for the first max-skew
/// after a start.
pub(crate) async fn admin_layer(
    kdc: &Kdc,
    clock: std::sync::Arc<dyn kdc_proto::Clock>,
    replay_state: Option<&std::path::Path>,
) -> Result<TicketAuthLayer, KdcError> {
    let name = Principal::admin_service(kdc.realm());
    let kt = kdc.keytab(&name, clock.now().as_secs()).await?;
    let mut builder = TicketAuthLayer::builder();
    if let Some(url) = kdc.replay_cache_url() {
        // Shared with the other KDC instances (the state file is not used).
        builder = builder.redis_replay_cache(url);
    } else if let Some(path) = replay_state {
        builder = builder.replay_state_file(path);
    }
    builder
        .keytab(kt)
        // `kadmin/admin` names no host: the admin API is reached under the
        // KDC's own address, whatever it is. The authority is still bound.
        .authorities(AuthorityPolicy::Any)
        .kdc_keys(kdc.jwks())
        .require_role("/admin", ADMIN_ROLE)
        // Admin writes carry passwords and policy: their bodies must be bound.
        .require_body_binding(true)
        // The realm's skew (`policy.max_skew_secs`) holds for every
        // authenticator sent to the KDC, admin requests included.
        .max_clock_skew(Duration::from_secs(kdc.policy().max_skew_secs))
        .clock(clock)
        .build()
        .await
        .map_err(|_| KdcError::Internal("admin layer"))
}

/// Keeps the admin layer's keys in step with the store (a `kdc principal
/// rotate kadmin/admin` from another process is picked up within `every`,
/// and at once when the store announces it, as PostgreSQL does).
pub(crate) async fn refresh_admin_keys(state: AppState, layer: TicketAuthLayer, every: Duration) {
    let name = Principal::admin_service(state.kdc.realm());
    let mut last: Option<Vec<Kvno>> = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A rotation of `kadmin/admin` at another KDC on a shared store is
    // announced: the keys are re-read at once, not at the next tick.
    let mut changes = state.kdc.store().changes(crate::store::ChangeTopic::PrincipalKeys);
    loop {
        crate::store::tick_or_change(&mut ticks, &mut changes).await;
        let Ok(kt) = state.kdc.keytab(&name, state.clock.now().as_secs()).await else { continue };
        let kvnos: Vec<Kvno> = kt.keys.iter().map(|k| k.kvno).collect();
        if last.as_ref() == Some(&kvnos) {
            continue;
        }
        if let Ok(ring) = auth_middleware::ServiceKeyring::from_keytab(&kt, state.clock.now()) {
            layer.verifier().set_keyring(ring);
            last = Some(kvnos);
        }
    }
}
