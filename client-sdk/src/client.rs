//! [`KdcClient`]: discovery, login, ticket cache, renewal, logout, and
//! authenticated calls to services with mutual-reply verification.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use kdc_proto::authenticator::authorization_value;
use kdc_proto::keys::long_term_kid;
use kdc_proto::limits::MAX_SEALED_LEN;
use kdc_proto::messages::{
    EncTicketPart, InitialTicketRequest, KdcConfiguration, PreAuthTimestamp, RenewRequest, ServiceTicketRequest,
    TicketReply,
};
use kdc_proto::seal::{self, SealedObject, Usage};
use kdc_proto::{
    Argon2Params, Authenticator, Clock, ErrorDetail, Principal, Realm, RequestBinding, SecretKey, SystemClock,
    UnixMillis, b64, derive_password_key, verify_mutual_reply,
};
use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cache::{CachedDiscovery, CachedTicket, MemoryCache, TicketCache};
use crate::error::SdkError;

/// Options of a [`KdcClient`].
#[derive(Clone)]
pub struct ClientOptions {
    /// Where tickets are kept. Defaults to a [`MemoryCache`].
    pub cache: Arc<dyn TicketCache>,
    /// Allow plain `http://` to hosts other than loopback. Defaults to false.
    pub allow_insecure_http: bool,
    /// Require a valid mutual reply on every authenticated response.
    /// Defaults to true; turn off only for services that do not send one.
    pub require_mutual: bool,
    /// Where "now" comes from. Defaults to the system clock.
    pub clock: Arc<dyn Clock>,
    /// Send to a URL whose host is not the one the service principal names
    /// (`HTTP/hello.example.test@REALM` names `hello.example.test`). Defaults
    /// to false: [`KdcClient::send`] and [`KdcClient::prepare`] refuse a
    /// mismatch with [`SdkError::ServiceHostMismatch`] before anything is
    /// sent. Loopback hosts (`127.0.0.0/8`, `::1`, `localhost`) are always
    /// allowed, for tests and local development.
    pub allow_service_host_mismatch: bool,
    /// The longest service answer body the client reads, in bytes; a longer
    /// one (declared or streamed) fails with [`SdkError::ResponseTooLarge`].
    /// Defaults to [`DEFAULT_MAX_RESPONSE_BODY`] (16 MiB).
    pub max_response_body: usize,
    /// Certificate authorities to trust besides the platform's roots, for
    /// the KDC and services alike (a private CA: [`crate::tls::load_ca_file`];
    /// `tkt` reads `TKT_CA_CERT`). Defaults to none.
    pub ca_certificates: Vec<reqwest::Certificate>,
}

/// The default of [`ClientOptions::max_response_body`]: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// The longest KDC answer body the client reads (discovery, challenges,
/// ticket replies, problem details), in bytes: 64 KiB. The largest honest
/// answer is a ticket reply, under 24 KiB (a ticket of at most
/// [`kdc_proto::limits::MAX_TICKET_LEN`] and a sealed part of at most
/// [`MAX_SEALED_LEN`], in JSON).
pub const MAX_KDC_RESPONSE_BYTES: usize = 64 * 1024;

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            cache: Arc::new(MemoryCache::default()),
            allow_insecure_http: false,
            require_mutual: true,
            clock: Arc::new(SystemClock),
            allow_service_host_mismatch: false,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            ca_certificates: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("require_mutual", &self.require_mutual)
            .field("allow_service_host_mismatch", &self.allow_service_host_mismatch)
            .field("max_response_body", &self.max_response_body)
            .field("ca_certificates", &self.ca_certificates.len())
            .finish_non_exhaustive()
    }
}

/// A verified response from a service.
#[derive(Debug, Clone)]
pub struct ServiceResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (covered by the mutual reply).
    pub body: Vec<u8>,
}

/// A ready `Authorization` value for one request, and the authenticator in it
/// (to check the mutual reply with).
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// `Ticket ticket="…", authenticator="…"`.
    pub authorization: String,
    /// The authenticator sent.
    pub authenticator: Authenticator,
    /// The ticket it goes with.
    pub ticket: CachedTicket,
}

/// A client of one KDC.
pub struct KdcClient {
    http: reqwest::Client,
    config: KdcConfiguration,
    kdc_url: String,
    options: ClientOptions,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    offsets: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for KdcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdcClient").field("kdc", &self.kdc_url).field("realm", &self.config.realm).finish()
    }
}

/// Whether `url` may be used: https always, http only to loopback unless allowed.
pub fn check_transport(url: &Url, allow_insecure_http: bool) -> Result<(), SdkError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            if is_loopback(url) || allow_insecure_http {
                Ok(())
            } else {
                Err(SdkError::InsecureTransport(url.host_str().unwrap_or_default().to_owned()))
            }
        }
        other => Err(SdkError::Invalid { what: "URL", detail: format!("unsupported scheme {other}") }),
    }
}

/// Whether `url`'s host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether two host names are the same host: DNS names compare without
/// case, and a trailing dot (the fully qualified form) makes no difference.
fn same_host(a: &str, b: &str) -> bool {
    !a.is_empty() && a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Whether `method` is idempotent (RFC 9110, section 9.2.2): sending it twice
/// has the effect of sending it once, so re-sending after a refusal nobody
/// can authenticate is harmless even when the refusal was forged and the
/// service had in fact carried out the first request.
fn is_idempotent(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE].contains(method)
}

/// Reads a body, refusing it as soon as it passes `limit` bytes: a declared
/// `Content-Length` over the limit is refused before reading, and a body
/// without one (chunked, or a length that lies) is cut off while streaming.
/// The KDC's discovery document: from the cache while its `max-age` lasts,
/// else fetched (and cached when the KDC allows). When the KDC cannot be
/// reached at all, an expired cached copy is used rather than failing: it
/// was fetched under the same rules, and every answer the KDC gives is
/// checked on its own merits anyway.
async fn discovery(
    http: &reqwest::Client,
    base: &Url,
    kdc_url: &str,
    options: &ClientOptions,
) -> Result<KdcConfiguration, SdkError> {
    let kdc = kdc_url.trim_end_matches('/');
    let now = options.clock.now().as_secs();
    let cached = options.cache.snapshot()?.discovery.filter(|d| d.kdc == kdc);
    if let Some(d) = cached.as_ref().filter(|d| now < d.fresh_until) {
        return Ok(d.config.clone());
    }
    let url = base
        .join("/.well-known/kdc-configuration")
        .map_err(|e| SdkError::Invalid { what: "URL", detail: e.to_string() })?;
    let resp = match http.get(url).send().await {
        Ok(r) => r,
        // A certificate problem is not "unreachable": report it rather than
        // fall back to a cached copy.
        Err(e) => match SdkError::from(e) {
            SdkError::Http(e) if e.is_connect() || e.is_timeout() => {
                return cached.map(|d| d.config).ok_or(SdkError::Http(e));
            }
            other => return Err(other),
        },
    };
    if !resp.status().is_success() {
        return Err(SdkError::Kdc(format!("discovery answered {}", resp.status())));
    }
    let max_age = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(kdc_proto::caching::max_age);
    let body = read_body(resp, MAX_KDC_RESPONSE_BYTES).await?;
    let config: KdcConfiguration = serde_json::from_slice(&body)
        .map_err(|_| SdkError::Kdc("the discovery document is not a KDC configuration".into()))?;
    if let Some(age) = max_age.filter(|a| *a > 0) {
        let fresh =
            CachedDiscovery { kdc: kdc.to_owned(), config: config.clone(), fresh_until: now.saturating_add(age) };
        options.cache.update(&mut |c| c.discovery = Some(fresh.clone()))?;
    }
    Ok(config)
}

async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, SdkError> {
    let declared = resp.content_length().unwrap_or(0);
    if declared > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(SdkError::ResponseTooLarge { limit });
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(SdkError::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A KDC answer's JSON body, read with the [`MAX_KDC_RESPONSE_BYTES`] cap.
async fn kdc_json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, SdkError> {
    let body = read_body(resp, MAX_KDC_RESPONSE_BYTES).await?;
    serde_json::from_slice(&body).map_err(|_| SdkError::BadKdcReply)
}

fn parse_url(s: &str) -> Result<Url, SdkError> {
    Url::parse(s).map_err(|e| SdkError::Invalid { what: "URL", detail: e.to_string() })
}

fn nonce() -> String {
    b64::encode(&SecretKey::generate().expose()[..12])
}

/// The `error` (or another) parameter of a `WWW-Authenticate` value.
pub fn www_authenticate_param(headers: &HeaderMap, name: &str) -> Option<String> {
    let h = headers.get(reqwest::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let pat = format!("{name}=\"");
    let i = h.find(&pat)? + pat.len();
    Some(h.get(i..)?.split('"').next()?.to_owned())
}

/// The `Host` header value reqwest sends for `url` (the port only when it is
/// not the scheme's default, as `Url::port` reports it): the authority the
/// request binding commits to.
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn authority(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

fn open_enc(token: &str, key: &SecretKey, usage: Usage) -> Result<EncTicketPart, SdkError> {
    let obj = SealedObject::parse(token, MAX_SEALED_LEN).map_err(|_| SdkError::BadKdcReply)?;
    let plain = obj.open(key, usage).map_err(|_| SdkError::BadKdcReply)?;
    serde_json::from_slice(&plain).map_err(|_| SdkError::BadKdcReply)
}

/// Checks an opened reply part against what was asked, trusting only it.
fn accept(
    enc: EncTicketPart,
    ticket: String,
    nonce: &str,
    service: &Principal,
    now: u64,
) -> Result<CachedTicket, SdkError> {
    if enc.nonce != nonce || &enc.service != service || enc.end_time <= now || enc.start_time > enc.end_time {
        return Err(SdkError::BadKdcReply);
    }
    Ok(CachedTicket {
        service: enc.service,
        ticket,
        session_key: enc.session_key,
        start_time: enc.start_time,
        end_time: enc.end_time,
        renew_till: enc.renew_till,
        flags: enc.flags,
        kvno: enc.kvno,
    })
}

/// A KDC refusal: status, headers and problem+json body (`Null` when the
/// body is not JSON), read with the [`MAX_KDC_RESPONSE_BYTES`] cap.
async fn problem(resp: reqwest::Response) -> Result<(StatusCode, HeaderMap, Value), SdkError> {
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = read_body(resp, MAX_KDC_RESPONSE_BYTES).await?;
    Ok((status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn problem_kind(body: &Value) -> &str {
    body.get("type").and_then(Value::as_str).and_then(|t| t.rsplit(':').next()).unwrap_or("")
}

fn kdc_refusal(status: StatusCode, headers: &HeaderMap, body: &Value) -> SdkError {
    match (status.as_u16(), problem_kind(body)) {
        (429, _) => SdkError::Throttled {
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(60),
        },
        (401, "ticket-expired" | "invalid-ticket") => SdkError::NotLoggedIn,
        (403, _) => SdkError::Kdc("client-not-permitted: this principal may not obtain tickets (disabled?)".into()),
        (_, kind) if !kind.is_empty() => SdkError::Kdc(kind.to_owned()),
        (s, _) => SdkError::Kdc(format!("status {s}")),
    }
}

impl KdcClient {
    /// Connects to the KDC at `kdc_url` by reading its discovery document.
    ///
    /// The client never follows redirects, from the KDC or from services: a
    /// redirect is an answer like any other (from a service, checked against
    /// its mutual reply and returned), so no request, authenticator or body
    /// goes to a host the caller did not name.
    pub async fn discover(kdc_url: &str, options: ClientOptions) -> Result<Self, SdkError> {
        let base = parse_url(kdc_url)?;
        check_transport(&base, options.allow_insecure_http)?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(options.ca_certificates.iter().cloned())
            .build()?;
        let config = discovery(&http, &base, kdc_url, &options).await?;
        for endpoint in [&config.initial_ticket_endpoint, &config.ticket_endpoint, &config.renew_endpoint] {
            check_transport(&parse_url(endpoint)?, options.allow_insecure_http)?;
        }
        Ok(Self {
            http,
            config,
            kdc_url: kdc_url.trim_end_matches('/').to_owned(),
            options,
            in_flight: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
        })
    }

    /// The KDC's realm.
    pub fn realm(&self) -> &Realm {
        &self.config.realm
    }

    /// Parses a principal name; a bare name gets the KDC's realm.
    pub fn principal_name(&self, name: &str) -> Result<Principal, SdkError> {
        Principal::parse_with_default_realm(name, &self.config.realm)
            .map_err(|e| SdkError::Invalid { what: "principal", detail: e.to_string() })
    }

    /// The ticket cache.
    pub fn cache(&self) -> &dyn TicketCache {
        self.options.cache.as_ref()
    }

    fn now(&self) -> UnixMillis {
        self.options.clock.now()
    }

    fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_owned()).or_default().clone()
    }

    /// Logs in: fetches the pre-auth challenge, derives the key from the
    /// password with Argon2id (refusing, before any work, costs below
    /// [`Argon2Params::FLOOR`] or above [`Argon2Params::CEILING`] with
    /// [`SdkError::WeakKeyDerivation`]: the challenge is unauthenticated),
    /// pre-authenticates, and caches the TGT. The password is not kept.
    pub async fn login(&self, principal: &Principal, password: &str) -> Result<(), SdkError> {
        let password = Zeroizing::new(password.to_owned());
        let endpoint = self.config.initial_ticket_endpoint.clone();
        let ask = InitialTicketRequest {
            client: principal.clone(),
            service: None,
            nonce: nonce(),
            lifetime_secs: None,
            renewable: None,
            pre_auth: None,
        };
        let (status, headers, body) = problem(self.http.post(&endpoint).json(&ask).send().await?).await?;
        if status != StatusCode::UNAUTHORIZED || problem_kind(&body) != "preauth-required" {
            return Err(kdc_refusal(status, &headers, &body));
        }
        let salt = body.get("salt").and_then(Value::as_str).ok_or(SdkError::BadKdcReply)?.to_owned();
        let params: Argon2Params = serde_json::from_value(body.get("argon2").cloned().unwrap_or_default())
            .map_err(|_| SdkError::BadKdcReply)?;
        params.check_acceptable().map_err(|e| SdkError::WeakKeyDerivation(e.to_string()))?;
        let key = tokio::task::spawn_blocking(move || derive_password_key(password.as_bytes(), &salt, params))
            .await
            .map_err(|_| SdkError::Kdc("key derivation task failed".into()))?
            .map_err(|e| SdkError::WeakKeyDerivation(e.to_string()))?;
        let n = nonce();
        let pa = PreAuthTimestamp { ts: self.now(), nonce: n.clone() };
        let pre_auth = seal::seal_json(&key, &long_term_kid(principal, kdc_proto::Kvno(1)), Usage::PreAuth, &pa)?;
        let req = InitialTicketRequest { nonce: n.clone(), pre_auth: Some(pre_auth), ..ask };
        let resp = self.http.post(&endpoint).json(&req).send().await?;
        if !resp.status().is_success() {
            let (status, headers, body) = problem(resp).await?;
            return Err(match (status.as_u16(), problem_kind(&body)) {
                (401, "preauth-failed") => SdkError::LoginFailed,
                (401, "clock-skew") => SdkError::Kdc("clock-skew: this machine's clock is off; fix it".into()),
                _ => kdc_refusal(status, &headers, &body),
            });
        }
        let reply: TicketReply = kdc_json(resp).await?;
        let tgs = Principal::ticket_granting(&self.config.realm);
        let enc = open_enc(&reply.enc_part, &key, Usage::AsReply)?;
        let tgt = accept(enc, reply.ticket, &n, &tgs, self.now().as_secs())?;
        let kdc = self.kdc_url.clone();
        let who = principal.clone();
        self.options.cache.update(&mut |c| {
            c.principal = Some(who.clone());
            c.kdc = Some(kdc.clone());
            c.tgt = Some(tgt.clone());
            c.tickets.clear();
        })
    }

    /// Who is logged in, per the cache.
    pub fn principal(&self) -> Result<Principal, SdkError> {
        self.options.cache.snapshot()?.principal.ok_or(SdkError::NotLoggedIn)
    }

    /// Logs out: every cached ticket and session key is wiped (a file cache is removed).
    pub async fn logout(&self) -> Result<(), SdkError> {
        self.options.cache.destroy()
    }

    /// The TGT, renewed first when past the refresh point and renewable.
    async fn tgt(&self) -> Result<(Principal, CachedTicket), SdkError> {
        let now = self.now().as_secs();
        let c = self.options.cache.snapshot()?;
        let (Some(who), Some(tgt)) = (c.principal, c.tgt) else { return Err(SdkError::NotLoggedIn) };
        if !tgt.valid_at(now) {
            return Err(SdkError::NotLoggedIn);
        }
        if tgt.needs_refresh(now) && tgt.renew_till.is_some_and(|rt| rt > now) {
            let flight = self.flight("krbtgt");
            let _guard = flight.lock().await;
            let fresh = self.options.cache.snapshot()?.tgt.ok_or(SdkError::NotLoggedIn)?;
            if !fresh.needs_refresh(now) {
                return Ok((who, fresh));
            }
            if let Ok(renewed) = self.renew(&who, &fresh).await {
                let r = renewed.clone();
                self.options.cache.update(&mut |c| c.tgt = Some(r.clone()))?;
                return Ok((who, renewed));
            }
        }
        Ok((who, tgt))
    }

    /// Renews a renewable ticket.
    pub async fn renew(&self, client: &Principal, t: &CachedTicket) -> Result<CachedTicket, SdkError> {
        let n = nonce();
        let authenticator = Authenticator::new(client.clone(), self.now(), &RenewRequest::binding_for(&n))
            .seal(&t.session_key, Usage::TgsAuthenticator)?;
        let req = RenewRequest { ticket: t.ticket.clone(), authenticator, nonce: n.clone() };
        let resp = self.http.post(&self.config.renew_endpoint).json(&req).send().await?;
        if !resp.status().is_success() {
            let (s, h, b) = problem(resp).await?;
            return Err(kdc_refusal(s, &h, &b));
        }
        let reply: TicketReply = kdc_json(resp).await?;
        let enc = open_enc(&reply.enc_part, &t.session_key, Usage::TgsReply)?;
        accept(enc, reply.ticket, &n, &t.service, self.now().as_secs())
    }

    /// A ticket for `service`: from the cache while fresh, otherwise renewed
    /// or fetched with the TGT. Concurrent callers share one KDC request.
    pub async fn service_ticket(&self, service: &Principal) -> Result<CachedTicket, SdkError> {
        let key = service.to_string();
        let fresh =
            |c: Option<&CachedTicket>, now: u64| c.filter(|t| t.valid_at(now) && !t.needs_refresh(now)).cloned();
        if let Some(t) = fresh(self.options.cache.snapshot()?.tickets.get(&key), self.now().as_secs()) {
            return Ok(t);
        }
        let flight = self.flight(&key);
        let _guard = flight.lock().await;
        let now = self.now().as_secs();
        let cached = self.options.cache.snapshot()?.tickets.get(&key).cloned();
        if let Some(t) = fresh(cached.as_ref(), now) {
            return Ok(t);
        }
        let (who, tgt) = self.tgt().await?;
        let renewable = cached.filter(|t| t.valid_at(now) && t.renew_till.is_some_and(|rt| rt > now));
        let ticket = match renewable {
            Some(t) => match self.renew(&who, &t).await {
                Ok(r) => r,
                Err(_) => self.fetch_service_ticket(&who, &tgt, service).await?,
            },
            None => self.fetch_service_ticket(&who, &tgt, service).await?,
        };
        let t = ticket.clone();
        self.options.cache.update(&mut |c| {
            c.tickets.insert(key.clone(), t.clone());
        })?;
        Ok(ticket)
    }

    async fn fetch_service_ticket(
        &self,
        who: &Principal,
        tgt: &CachedTicket,
        service: &Principal,
    ) -> Result<CachedTicket, SdkError> {
        let n = nonce();
        let binding = ServiceTicketRequest::binding_for(service, &n, None, None);
        let authenticator =
            Authenticator::new(who.clone(), self.now(), &binding).seal(&tgt.session_key, Usage::TgsAuthenticator)?;
        let req = ServiceTicketRequest {
            tgt: tgt.ticket.clone(),
            authenticator,
            service: service.clone(),
            nonce: n.clone(),
            lifetime_secs: None,
            renewable: None,
        };
        let resp = self.http.post(&self.config.ticket_endpoint).json(&req).send().await?;
        if !resp.status().is_success() {
            let (s, h, b) = problem(resp).await?;
            return Err(kdc_refusal(s, &h, &b));
        }
        let reply: TicketReply = kdc_json(resp).await?;
        let enc = open_enc(&reply.enc_part, &tgt.session_key, Usage::TgsReply)?;
        accept(enc, reply.ticket, &n, service, self.now().as_secs())
    }

    /// The host `service` names: its instance (`HTTP/<host>@REALM`), except
    /// for the realm's admin service, `kadmin/admin`, which the KDC serves.
    fn service_host(&self, service: &Principal) -> Option<String> {
        if service == &Principal::admin_service(&self.config.realm) {
            return parse_url(&self.kdc_url).ok()?.host_str().map(str::to_owned);
        }
        service.instance().map(str::to_owned)
    }

    /// Refuses a URL whose host is not the one `service` names, unless it is
    /// loopback or [`ClientOptions::allow_service_host_mismatch`] is set. A
    /// ticket opens at any host holding the service's key; the check keeps a
    /// mistyped or substituted URL from receiving what was meant for the
    /// named host.
    fn check_service_host(&self, service: &Principal, url: &Url) -> Result<(), SdkError> {
        if self.options.allow_service_host_mismatch || is_loopback(url) {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let expected = self.service_host(service);
        if expected.as_deref().is_some_and(|e| same_host(e, host)) {
            return Ok(());
        }
        Err(SdkError::ServiceHostMismatch {
            service: service.to_string(),
            expected: expected.unwrap_or_else(|| "(none)".to_owned()),
            host: host.to_owned(),
        })
    }

    fn offset_for(&self, url: &Url) -> i64 {
        *self.offsets.lock().unwrap_or_else(|p| p.into_inner()).get(&authority(url)).unwrap_or(&0)
    }

    /// Builds the `Authorization` value for one request to `url` (binding
    /// the body when given), without sending it. Refuses, as
    /// [`Self::send`] does, a URL whose host is not the one `service` names.
    pub async fn prepare(
        &self,
        service: &Principal,
        method: &Method,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<PreparedRequest, SdkError> {
        let url = parse_url(url)?;
        check_transport(&url, self.options.allow_insecure_http)?;
        self.check_service_host(service, &url)?;
        let ticket = self.service_ticket(service).await?;
        self.prepare_with(&ticket, method, &url, body)
    }

    fn prepare_with(
        &self,
        ticket: &CachedTicket,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<PreparedRequest, SdkError> {
        let who = self.principal()?;
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let at = UnixMillis(self.now().0.saturating_add_signed(self.offset_for(url)));
        let binding = RequestBinding::new(method.as_str(), &host_header(url), &path_and_query, body);
        let authenticator = Authenticator::new(who, at, &binding);
        let sealed = authenticator.seal(&ticket.session_key, Usage::Authenticator)?;
        Ok(PreparedRequest {
            authorization: authorization_value(&ticket.ticket, &sealed),
            authenticator,
            ticket: ticket.clone(),
        })
    }

    /// Calls `url` on `service` with a ticket and a fresh authenticator bound
    /// to the request (and to `body` when given), and verifies the mutual
    /// reply over the status and body.
    ///
    /// - The URL's host must be the one `service` names (`HTTP/<host>@REALM`),
    ///   or loopback, unless [`ClientOptions::allow_service_host_mismatch`]:
    ///   else [`SdkError::ServiceHostMismatch`], before anything is sent.
    /// - On `ticket_expired`/`kvno_unknown` it drops the cached ticket and,
    ///   for an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE),
    ///   retries once with a new one. Such a refusal carries nothing sealed
    ///   under the session key, so anyone on the path can forge it after the
    ///   service has carried out the request: a POST or PATCH is not re-sent,
    ///   the caller gets [`SdkError::Refused`] and decides (the next call
    ///   gets a new ticket). A refusal that carries a detail opening under
    ///   the session key for this authenticator is the service's own, and is
    ///   retried whatever the method.
    /// - On `clock_skew` or `stale_authenticator` it learns the server's
    ///   clock offset — only from the time sealed under the session key, so
    ///   these refusals are authenticated — and retries, once.
    /// - Redirects are not followed: a `3xx` is the service's answer, checked
    ///   against the mutual reply like any status and returned.
    /// - The body is read up to [`ClientOptions::max_response_body`]; a
    ///   longer one fails with [`SdkError::ResponseTooLarge`].
    pub async fn send(
        &self,
        service: &Principal,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ServiceResponse, SdkError> {
        let url = parse_url(url)?;
        check_transport(&url, self.options.allow_insecure_http)?;
        self.check_service_host(service, &url)?;
        let (mut renewed_ticket, mut corrected_clock) = (false, false);
        loop {
            let ticket = self.service_ticket(service).await?;
            let prepared = self.prepare_with(&ticket, &method, &url, body.as_deref())?;
            let mut req = self.http.request(method.clone(), url.clone()).header(AUTHORIZATION, &prepared.authorization);
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let resp = req.send().await?;
            let (status, headers) = (resp.status(), resp.headers().clone());
            let bytes = read_body(resp, self.options.max_response_body).await?;
            let mutual = headers
                .get("authentication-info")
                .and_then(|v| v.to_str().ok())
                .and_then(|h| Some(h.get(h.find("mutual=\"")? + 8..)?.split('"').next()?.to_owned()));
            if mutual.is_none() && matches!(status.as_u16(), 401 | 403 | 503) {
                let code = www_authenticate_param(&headers, "error").unwrap_or_else(|| status.as_u16().to_string());
                match code.as_str() {
                    "ticket_expired" | "kvno_unknown" if !renewed_ticket => {
                        renewed_ticket = true;
                        self.options.cache.update(&mut |c| {
                            c.tickets.remove(&service.to_string());
                        })?;
                        let authenticated = www_authenticate_param(&headers, "server_time").is_some_and(|sealed| {
                            ErrorDetail::open(&sealed, &ticket.session_key, &prepared.authenticator).is_ok()
                        });
                        if !authenticated && !is_idempotent(&method) {
                            return Err(SdkError::Refused { code });
                        }
                    }
                    "clock_skew" | "stale_authenticator" if !corrected_clock => {
                        corrected_clock = true;
                        let sealed =
                            www_authenticate_param(&headers, "server_time").ok_or(SdkError::Refused { code })?;
                        let detail = ErrorDetail::open(&sealed, &ticket.session_key, &prepared.authenticator)
                            .map_err(|_| SdkError::MutualAuthFailed)?;
                        let offset = i64::try_from(detail.server_time.0).unwrap_or(i64::MAX)
                            - i64::try_from(self.now().0).unwrap_or(i64::MAX);
                        self.offsets.lock().unwrap_or_else(|p| p.into_inner()).insert(authority(&url), offset);
                    }
                    _ => return Err(SdkError::Refused { code }),
                }
                continue;
            }
            match mutual {
                Some(m) => {
                    verify_mutual_reply(&m, &ticket.session_key, &prepared.authenticator, status.as_u16(), &bytes)
                        .map_err(|_| SdkError::MutualAuthFailed)?
                }
                None if self.options.require_mutual => return Err(SdkError::MutualAuthFailed),
                None => {}
            }
            return Ok(ServiceResponse { status, headers, body: bytes });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of a KDC at `kdc_url` that never talks to it.
    fn client(kdc_url: &str, options: ClientOptions) -> KdcClient {
        let config = KdcConfiguration {
            realm: "EXAMPLE.TEST".parse().unwrap(),
            protocol_version: "1".into(),
            issuer: kdc_url.into(),
            initial_ticket_endpoint: format!("{kdc_url}/tickets/initial"),
            ticket_endpoint: format!("{kdc_url}/tickets"),
            renew_endpoint: format!("{kdc_url}/tickets/renew"),
            jwks_uri: format!("{kdc_url}/.well-known/jwks.json"),
            sealing: kdc_proto::messages::SealingAlgorithms {
                alg: "dir".into(),
                enc: "A256GCM".into(),
                kdf: "HKDF-SHA256".into(),
            },
            signing_alg_values_supported: vec!["EdDSA".into()],
            argon2_defaults: Argon2Params::DEFAULT,
            argon2_floor: Argon2Params::FLOOR,
            max_clock_skew_secs: 300,
            default_ticket_lifetime_secs: 36_000,
            max_renewable_lifetime_secs: 604_800,
            max_ticket_bytes: 6144,
        };
        KdcClient {
            http: reqwest::Client::new(),
            config,
            kdc_url: kdc_url.into(),
            options,
            in_flight: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
        }
    }

    fn check(c: &KdcClient, service: &str, url: &str) -> Result<(), SdkError> {
        c.check_service_host(&service.parse().unwrap(), &parse_url(url).unwrap())
    }

    #[test]
    fn the_url_host_must_be_the_one_the_service_names() {
        let c = client("https://kdc.example.test", ClientOptions::default());
        let svc = "HTTP/hello.example.test@EXAMPLE.TEST";
        for ok in [
            "https://hello.example.test/x",
            "https://HELLO.example.TEST:8443/x",
            "https://hello.example.test./x",
            "http://127.0.0.1:8080/x",
            "http://127.9.9.9/x",
            "http://[::1]:8080/x",
            "http://localhost/x",
            "http://LOCALHOST./x",
        ] {
            assert!(check(&c, svc, ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://other.example.test/x",
            "https://hello.example.test.evil.test/x",
            "https://evil.test/hello.example.test",
            "https://10.0.0.1/x",
            "https://[::2]/x",
            "https://localhost.evil.test/x",
        ] {
            let e = check(&c, svc, bad).unwrap_err();
            assert!(matches!(&e, SdkError::ServiceHostMismatch { expected, .. } if expected == "hello.example.test"));
            assert!(e.to_string().contains("hello.example.test"), "{e}");
        }
        // A principal that names no host matches no remote host.
        assert!(check(&c, "backup@EXAMPLE.TEST", "https://backup.example.test/").is_err());
        // The admin service is the KDC's.
        assert!(check(&c, "kadmin/admin@EXAMPLE.TEST", "https://kdc.example.test/admin/principals").is_ok());
        assert!(check(&c, "kadmin/admin@EXAMPLE.TEST", "https://admin/admin/principals").is_err());
        // Told otherwise, anything goes.
        let lax = client(
            "https://kdc.example.test",
            ClientOptions { allow_service_host_mismatch: true, ..Default::default() },
        );
        assert!(check(&lax, svc, "https://other.example.test/x").is_ok());
    }

    #[test]
    fn only_idempotent_methods_are_retried_on_an_unauthenticated_refusal() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT, Method::from_bytes(b"LOCK").unwrap()] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
