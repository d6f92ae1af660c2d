//! [`KdcClient`]: discovery, login, ticket cache, renewal, logout, and
//! authenticated calls to services with mutual-reply verification.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kdc_proto::limits::MAX_SEALED_LEN;
use kdc_proto::new_nonce;
use kdc_proto::{self, SealedObject, Usage};
use kdc_proto::{AUTHENTICATION_INFO, AuthenticationInfo, Challenge};
use kdc_proto::{
    Argon2Params, Authenticator, Clock, ErrorDetail, Kvno, Principal, Realm, RequestBinding, SecretKey, SystemClock,
    UnixMillis, derive_password_key, verify_mutual_reply,
};
use kdc_proto::{
    InitialTicketRequest, KdcConfiguration, Keytab, KeytabEntry, RenewRequest, ServiceTicketRequest, TicketReply,
};
use kdc_proto::{Problem, ProblemKind};
use kdc_proto::{SESSION_KID, authorization_value};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cache::{CacheContents, CachedDiscovery, CachedKdf, CachedTicket, MemoryCache, TicketCache};
use crate::error::SdkError;

/// Options of a [`KdcClient`], set with builder methods on
/// [`ClientOptions::default`]. The fields are private so that a new option
/// is not a breaking change.
///
/// ```
/// use std::sync::Arc;
/// use client_sdk::{ClientOptions, MemoryCache};
///
/// let options = ClientOptions::default()
///     .cache(Arc::new(MemoryCache::default()))
///     .max_response_body(1024 * 1024);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    cache: Arc<dyn TicketCache>,
    allow_insecure_http: bool,
    require_mutual: bool,
    clock: Arc<dyn Clock>,
    allow_service_host_mismatch: bool,
    max_response_body: usize,
    ca_certificates: Vec<reqwest::Certificate>,
}

impl ClientOptions {
    /// Where tickets are kept. Defaults to a [`MemoryCache`]; a
    /// [`crate::FileCache`] shares them between processes.
    pub fn cache(mut self, cache: Arc<dyn TicketCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Allow plain `http://` to hosts other than loopback. Defaults to false.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Require a valid mutual reply on every authenticated response.
    /// Defaults to true; turn off only for services that do not send one.
    pub fn require_mutual(mut self, require: bool) -> Self {
        self.require_mutual = require;
        self
    }

    /// Where "now" comes from. Defaults to the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Send to a URL whose host is not the one the service principal names
    /// (`HTTP/hello.example.test@REALM` names `hello.example.test`). Defaults
    /// to false: [`KdcClient::send`] and [`KdcClient::prepare`] refuse a
    /// mismatch with [`SdkError::ServiceHostMismatch`] before anything is
    /// sent. Loopback hosts (`127.0.0.0/8`, `::1`, `localhost`) are always
    /// allowed, for tests and local development.
    pub fn allow_service_host_mismatch(mut self, allow: bool) -> Self {
        self.allow_service_host_mismatch = allow;
        self
    }

    /// The longest service answer body the client reads, in bytes; a longer
    /// one (declared or streamed) fails with [`SdkError::ResponseTooLarge`].
    /// Defaults to [`DEFAULT_MAX_RESPONSE_BODY`] (16 MiB).
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// Certificate authorities to trust besides the platform's roots, for
    /// the KDC and services alike (a private CA: [`crate::tls::load_ca_file`];
    /// `tkt` reads `TKT_CA_CERT`). Defaults to none.
    pub fn ca_certificates(mut self, certificates: Vec<reqwest::Certificate>) -> Self {
        self.ca_certificates = certificates;
        self
    }
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
    /// The session key of the ticket the request went with (redacted in
    /// `Debug`), to open what the service sealed for this client.
    session_key: SecretKey,
}

impl ServiceResponse {
    /// Opens a secret the service sealed for this client under the session
    /// key of the ticket this request used (usage `session-secret-reply`,
    /// e.g. the admin API's `keytab_sealed`), at most
    /// [`MAX_SEALED_LEN`] bytes. Any failure is the same opaque
    /// [`SdkError::Protocol`].
    pub fn open_secret(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SdkError> {
        Ok(SealedObject::parse(sealed, MAX_SEALED_LEN)?.open(&self.session_key, Usage::SessionSecretReply)?)
    }
}

/// One request to a service, for [`KdcClient::send_request`]: a method, a
/// URL, headers and an optional body.
///
/// A body goes with `Content-Type: application/octet-stream` unless a
/// content type is given ([`Self::json`] gives `application/json`, or set
/// the header). The SDK sets `Authorization` and `Host` itself (the
/// authenticator binds the host), and the transport sets `Content-Length`
/// and `Transfer-Encoding`: giving any of these is refused with
/// [`SdkError::Invalid`].
///
/// ```
/// use client_sdk::ServiceRequest;
/// use reqwest::Method;
/// use reqwest::header::{ACCEPT, HeaderValue};
///
/// let request = ServiceRequest::new(Method::POST, "https://api.example.test/items")
///     .header(ACCEPT, HeaderValue::from_static("application/json"))
///     .json(&serde_json::json!({"name": "widget"}))?;
/// # Ok::<(), client_sdk::SdkError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

/// Headers a [`ServiceRequest`] may not carry: the SDK or the transport sets
/// them, and a second value would break the binding or the framing.
const RESERVED_HEADERS: [reqwest::header::HeaderName; 4] =
    [AUTHORIZATION, reqwest::header::HOST, reqwest::header::CONTENT_LENGTH, reqwest::header::TRANSFER_ENCODING];

impl ServiceRequest {
    /// A request without a body or extra headers.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self { method, url: url.into(), headers: HeaderMap::new(), body: None }
    }

    /// Adds a header (another value of a name already present is added, not
    /// replaced). Headers are not covered by the authenticator: what must
    /// not be altered on the way belongs in the body, which is.
    pub fn header(mut self, name: reqwest::header::HeaderName, value: reqwest::header::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The body, bound into the authenticator and covered by the mutual
    /// reply. Sent as `application/octet-stream` unless a `Content-Type`
    /// header is set.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// `value` as a JSON body, with `Content-Type: application/json`
    /// (replacing any content type set before).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, SdkError> {
        let body =
            serde_json::to_vec(value).map_err(|e| SdkError::Invalid { what: "JSON body", detail: e.to_string() })?;
        self.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body = Some(body);
        Ok(self)
    }
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
    /// Where the keys of the last keytab login come from, so the client can
    /// log in again by itself when its TGT runs out. Never written to the
    /// cache.
    keytab: Mutex<Option<KeytabLogin>>,
}

impl std::fmt::Debug for KdcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdcClient").field("kdc", &self.kdc_url).field("realm", &self.config.realm).finish()
    }
}

/// A keytab login the client can repeat: who, and where the keys are.
#[derive(Clone)]
struct KeytabLogin {
    principal: Principal,
    source: KeytabSource,
}

/// Where a keytab's keys come from.
#[derive(Clone)]
enum KeytabSource {
    /// Given in memory.
    Keys(Keytab),
    /// A file, read again at each login, so a keytab replaced on disk after
    /// a key rotation is picked up.
    File(PathBuf),
}

impl KeytabSource {
    fn load(&self) -> Result<Keytab, SdkError> {
        match self {
            Self::Keys(k) => Ok(k.clone()),
            Self::File(path) => load_keytab(path),
        }
    }

    /// Where it is, for messages.
    fn describe(&self) -> String {
        match self {
            Self::Keys(_) => "(the keytab given)".to_owned(),
            Self::File(path) => path.display().to_string(),
        }
    }
}

/// Reads a JSON keytab file, as `kdc keytab export` writes it.
pub fn load_keytab(path: &Path) -> Result<Keytab, SdkError> {
    let err = |reason: &str| SdkError::Keytab { path: path.display().to_string(), reason: reason.to_owned() };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(&e.to_string()))?);
    serde_json::from_slice(&bytes).map_err(|_| err("not a keytab"))
}

/// The key a keytab login uses: the newest version still live at `now`
/// (Unix seconds), the one the KDC calls current.
fn current_keytab_entry(keytab: &Keytab, now: u64) -> Option<&KeytabEntry> {
    keytab.keys.iter().filter(|k| k.expires_at.is_none_or(|e| e > now)).max_by_key(|k| k.kvno)
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
        return Err(SdkError::Discovery(format!("the KDC answered {}", resp.status())));
    }
    let max_age =
        resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(kdc_proto::max_age);
    let body = read_body(resp, MAX_KDC_RESPONSE_BYTES).await?;
    let config: KdcConfiguration = serde_json::from_slice(&body)
        .map_err(|_| SdkError::Discovery("the document is not a KDC configuration".into()))?;
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

/// A header's value parsed as `T`; `None` when absent or not one.
fn typed_header<T: std::str::FromStr>(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<T> {
    headers.get(name)?.to_str().ok()?.parse().ok()
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

/// The key-derivation parameters of a pre-authentication challenge (the
/// members of a `preauth-required` or `preauth-failed` problem), refused
/// outside [`Argon2Params::FLOOR`]..=[`Argon2Params::CEILING`].
fn challenge_params(problem: &Problem) -> Result<CachedKdf, SdkError> {
    let salt = problem.get("salt").and_then(Value::as_str).ok_or(SdkError::BadKdcReply)?.to_owned();
    let argon2: Argon2Params = serde_json::from_value(problem.get("argon2").cloned().unwrap_or_default())
        .map_err(|_| SdkError::BadKdcReply)?;
    argon2.check_acceptable().map_err(|e| SdkError::WeakKeyDerivation(e.to_string()))?;
    Ok(CachedKdf { salt, argon2 })
}

/// The password key, derived off the async runtime (Argon2id takes tens of
/// milliseconds by design).
async fn derive(password: &Zeroizing<String>, kdf: &CachedKdf) -> Result<SecretKey, SdkError> {
    kdf.argon2.check_acceptable().map_err(|e| SdkError::WeakKeyDerivation(e.to_string()))?;
    let (password, kdf) = (password.clone(), kdf.clone());
    tokio::task::spawn_blocking(move || derive_password_key(password.as_bytes(), &kdf.salt, kdf.argon2))
        .await
        .map_err(|_| SdkError::Internal("the key derivation task failed"))?
        .map_err(|e| SdkError::WeakKeyDerivation(e.to_string()))
}

/// A KDC refusal: status, headers and its problem (`about:blank` when the
/// body is not problem+json), read with the [`MAX_KDC_RESPONSE_BYTES`] cap.
async fn problem(resp: reqwest::Response) -> Result<(StatusCode, HeaderMap, Problem), SdkError> {
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = read_body(resp, MAX_KDC_RESPONSE_BYTES).await?;
    Ok((status, headers, Problem::parse(&body, status.as_u16())))
}

fn kdc_refusal(status: StatusCode, headers: &HeaderMap, problem: Problem) -> SdkError {
    match (status.as_u16(), problem.kind) {
        (429, _) => {
            SdkError::Throttled { retry_after: typed_header(headers, reqwest::header::RETRY_AFTER).unwrap_or(60) }
        }
        (401, ProblemKind::TicketExpired | ProblemKind::InvalidTicket) => SdkError::NotLoggedIn,
        (status, kind) => SdkError::Kdc { kind, status },
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
            keytab: Mutex::new(None),
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

    /// Logs in with a password: derives the key with Argon2id, pre-authenticates,
    /// and caches the TGT. The password is not kept.
    ///
    /// The key-derivation parameters (salt and Argon2id cost) come from the
    /// KDC's challenge, which costs a round trip, or from the cache, where a
    /// successful login leaves them (public values, never the key): a second
    /// login sends pre-authentication in its first request. If the
    /// parameters changed meanwhile, the KDC refuses it with a new challenge,
    /// and the client derives again with those (that refused attempt counts
    /// as one failure toward the KDC's throttling). Costs below
    /// [`Argon2Params::FLOOR`] or above [`Argon2Params::CEILING`] are refused
    /// before any work with [`SdkError::WeakKeyDerivation`]: the challenge is
    /// unauthenticated.
    pub async fn login(&self, principal: &Principal, password: &str) -> Result<(), SdkError> {
        let password = Zeroizing::new(password.to_owned());
        let cached = self.options.cache.snapshot()?.kdf.get(&principal.to_string()).cloned();
        let mut from_cache = cached.is_some();
        let mut kdf = match cached {
            Some(k) => k,
            None => self.challenge(principal).await?,
        };
        loop {
            let key = derive(&password, &kdf).await?;
            match self.initial_exchange(principal, &key, Kvno(1)).await? {
                Ok(tgt) => {
                    self.forget_keytab();
                    return self.logged_in(principal, tgt, Some(kdf), false);
                }
                // The cached parameters are stale: once more with the KDC's.
                Err(challenge) if from_cache && challenge != kdf => {
                    from_cache = false;
                    kdf = challenge;
                }
                Err(_) => return Err(SdkError::LoginFailed),
            }
        }
    }

    /// Logs in as a service with its keytab, as `kinit -k` does: the client
    /// pre-authenticates with the keytab's current key (no challenge, no key
    /// derivation: one round trip) and caches the TGT. The keys stay in this
    /// client's memory, never in the cache: when the TGT runs out (past the
    /// refresh point, not renewable, or refused by the KDC) the client logs
    /// in again by itself.
    pub async fn login_with_keytab(&self, keytab: &Keytab) -> Result<(), SdkError> {
        let login = KeytabLogin { principal: keytab.principal.clone(), source: KeytabSource::Keys(keytab.clone()) };
        self.keytab_login(login).await
    }

    /// [`Self::login_with_keytab`] with the keytab in a file (as
    /// `kdc keytab export` writes it). The file is read again at every
    /// automatic login, so replacing it after a key rotation is enough.
    pub async fn login_with_keytab_file(&self, path: impl AsRef<Path>) -> Result<(), SdkError> {
        let path = path.as_ref().to_owned();
        let keytab = load_keytab(&path)?;
        self.keytab_login(KeytabLogin { principal: keytab.principal, source: KeytabSource::File(path) }).await
    }

    async fn keytab_login(&self, login: KeytabLogin) -> Result<(), SdkError> {
        self.login_from_keytab(&login, false).await?;
        *self.keytab.lock().unwrap_or_else(|p| p.into_inner()) = Some(login);
        Ok(())
    }

    /// One keytab login: the TGT, cached. `again` (an automatic login of
    /// the principal already logged in) keeps the cached service tickets:
    /// they are still good, and dropping them would cost a service-ticket
    /// exchange each.
    async fn login_from_keytab(&self, login: &KeytabLogin, again: bool) -> Result<(Principal, CachedTicket), SdkError> {
        let keytab = login.source.load()?;
        let who = keytab.principal.clone();
        if who != login.principal {
            return Err(SdkError::Invalid {
                what: "keytab",
                detail: format!("it now holds the keys of {who}, not {}", login.principal),
            });
        }
        if who.realm() != &self.config.realm {
            return Err(SdkError::Invalid {
                what: "keytab",
                detail: format!("{who} is not of the KDC's realm {}", self.config.realm),
            });
        }
        let entry = current_keytab_entry(&keytab, self.now().as_secs()).ok_or_else(|| SdkError::Keytab {
            path: login.source.describe(),
            reason: "no live key in it".to_owned(),
        })?;
        match self.initial_exchange(&who, &entry.key, entry.kvno).await? {
            Ok(tgt) => {
                self.logged_in(&who, tgt.clone(), None, again)?;
                Ok((who, tgt))
            }
            Err(_) => Err(SdkError::KeytabLoginFailed { principal: who.to_string() }),
        }
    }

    fn forget_keytab(&self) {
        *self.keytab.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The keytab login to repeat for `who`, the principal the cache says
    /// is logged in (`None`: nobody): only when it is the keytab's, so a
    /// shared cache another process logged in to as someone else is left
    /// alone.
    fn keytab_for(&self, who: Option<&Principal>) -> Option<KeytabLogin> {
        let login = self.keytab.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        who.is_none_or(|w| w == &login.principal).then_some(login)
    }

    /// Records a login in the cache: who, where, the TGT, and (for a
    /// password login) the key-derivation parameters that worked. Cached
    /// service tickets are dropped unless `keep_tickets` and they are the
    /// same principal's.
    fn logged_in(
        &self,
        who: &Principal,
        tgt: CachedTicket,
        kdf: Option<CachedKdf>,
        keep_tickets: bool,
    ) -> Result<(), SdkError> {
        let kdc = self.kdc_url.clone();
        self.options.cache.update(&mut |c| {
            if !keep_tickets || c.principal.as_ref() != Some(who) {
                c.tickets.clear();
            }
            c.principal = Some(who.clone());
            c.kdc = Some(kdc.clone());
            c.tgt = Some(tgt.clone());
            if let Some(k) = &kdf {
                c.kdf.insert(who.to_string(), k.clone());
            }
        })
    }

    /// The KDC's pre-authentication challenge for `principal`: a request
    /// without pre-authentication data.
    async fn challenge(&self, principal: &Principal) -> Result<CachedKdf, SdkError> {
        let ask = InitialTicketRequest::without_pre_auth(principal.clone(), new_nonce());
        let resp = self.http.post(&self.config.initial_ticket_endpoint).json(&ask).send().await?;
        let (status, headers, problem) = problem(resp).await?;
        if status != StatusCode::UNAUTHORIZED || problem.kind != ProblemKind::PreauthRequired {
            return Err(kdc_refusal(status, &headers, problem));
        }
        challenge_params(&problem)
    }

    /// One pre-authenticated initial exchange under `key` (of version
    /// `kvno`, named in the pre-authentication's `kid`): the TGT, or the
    /// challenge that came with a `preauth-failed` refusal (wrong key, or
    /// parameters that changed).
    async fn initial_exchange(
        &self,
        principal: &Principal,
        key: &SecretKey,
        kvno: Kvno,
    ) -> Result<Result<CachedTicket, CachedKdf>, SdkError> {
        let req = InitialTicketRequest::pre_authenticated(principal.clone(), key, kvno, new_nonce(), self.now())?;
        let resp = self.http.post(&self.config.initial_ticket_endpoint).json(&req).send().await?;
        if !resp.status().is_success() {
            let (status, headers, problem) = problem(resp).await?;
            return match (status, &problem.kind) {
                (StatusCode::UNAUTHORIZED, ProblemKind::PreauthFailed | ProblemKind::PreauthRequired) => {
                    Ok(Err(challenge_params(&problem)?))
                }
                _ => Err(kdc_refusal(status, &headers, problem)),
            };
        }
        let reply: TicketReply = kdc_json(resp).await?;
        Ok(Ok(reply.open_initial(&req, key, self.now()).map_err(|_| SdkError::BadKdcReply)?))
    }

    /// Who is logged in, per the cache.
    pub fn principal(&self) -> Result<Principal, SdkError> {
        self.options.cache.snapshot()?.principal.ok_or(SdkError::NotLoggedIn)
    }

    /// Logs out: every cached ticket and session key is wiped (a file cache
    /// is removed), and the keys of a keytab login are forgotten.
    pub async fn logout(&self) -> Result<(), SdkError> {
        self.forget_keytab();
        self.options.cache.destroy()
    }

    /// The TGT: from the cache while fresh; past its refresh point, renewed
    /// when renewable, else (or when renewal fails) obtained again with the
    /// keytab of a keytab login; a TGT that is still valid is used as it is
    /// when neither works.
    async fn tgt(&self) -> Result<(Principal, CachedTicket), SdkError> {
        let fresh = |c: CacheContents, now: u64| match (c.principal, c.tgt) {
            (Some(who), Some(tgt)) if tgt.valid_at(now) && !tgt.needs_refresh(now) => Some((who, tgt)),
            _ => None,
        };
        if let Some(current) = fresh(self.options.cache.snapshot()?, self.now().as_secs()) {
            return Ok(current);
        }
        let flight = self.flight("krbtgt");
        let _guard = flight.lock().await;
        let now = self.now().as_secs();
        let contents = self.options.cache.snapshot()?;
        if let Some(current) = fresh(contents.clone(), now) {
            return Ok(current);
        }
        let usable = match (contents.principal.clone(), contents.tgt) {
            (Some(who), Some(tgt)) if tgt.valid_at(now) => Some((who, tgt)),
            _ => None,
        };
        if let Some((who, tgt)) = &usable
            && tgt.part.renew_till.is_some_and(|rt| rt > now)
            && let Ok(renewed) = self.renew(who, tgt).await
        {
            let r = renewed.clone();
            self.options.cache.update(&mut |c| c.tgt = Some(r.clone()))?;
            return Ok((who.clone(), renewed));
        }
        if let Some(login) = self.keytab_for(contents.principal.as_ref()) {
            match self.login_from_keytab(&login, true).await {
                Ok(fresh) => return Ok(fresh),
                // The KDC is unreachable or refuses: a TGT that still works is
                // better than none.
                Err(e) if usable.is_none() => return Err(e),
                Err(_) => {}
            }
        }
        usable.ok_or(SdkError::NotLoggedIn)
    }

    /// Renews a renewable ticket.
    pub async fn renew(&self, client: &Principal, t: &CachedTicket) -> Result<CachedTicket, SdkError> {
        let req = RenewRequest::new(client, t, new_nonce(), self.now())?;
        let reply = self.exchange(&self.config.renew_endpoint, &req).await?;
        reply.open_renewal(&req, t, self.now()).map_err(|_| SdkError::BadKdcReply)
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
        let renewable = cached.filter(|t| t.valid_at(now) && t.part.renew_till.is_some_and(|rt| rt > now));
        let ticket = match renewable {
            Some(t) => match self.renew(&who, &t).await {
                Ok(r) => r,
                Err(_) => self.new_service_ticket(who, tgt, service).await?,
            },
            None => self.new_service_ticket(who, tgt, service).await?,
        };
        self.keep_service_ticket(&key, &ticket)?;
        Ok(ticket)
    }

    /// A new ticket for `service` from the KDC, whatever the cache holds
    /// (and cached in place of it): after the service's roles or the
    /// client's changed, or to start a fresh session key. Goes through a
    /// service-ticket exchange, never a renewal.
    pub async fn refresh_service_ticket(&self, service: &Principal) -> Result<CachedTicket, SdkError> {
        let key = service.to_string();
        let flight = self.flight(&key);
        let _guard = flight.lock().await;
        let (who, tgt) = self.tgt().await?;
        let ticket = self.new_service_ticket(who, tgt, service).await?;
        self.keep_service_ticket(&key, &ticket)?;
        Ok(ticket)
    }

    fn keep_service_ticket(&self, key: &str, ticket: &CachedTicket) -> Result<(), SdkError> {
        self.options.cache.update(&mut |c| {
            c.tickets.insert(key.to_owned(), ticket.clone());
        })
    }

    /// A service-ticket exchange; when the KDC refuses the TGT (expired,
    /// or no longer valid) after a keytab login, logs in again with the
    /// keytab and asks once more.
    async fn new_service_ticket(
        &self,
        who: Principal,
        tgt: CachedTicket,
        service: &Principal,
    ) -> Result<CachedTicket, SdkError> {
        match self.fetch_service_ticket(&who, &tgt, service).await {
            Err(SdkError::NotLoggedIn) => {
                let Some(login) = self.keytab_for(Some(&who)) else { return Err(SdkError::NotLoggedIn) };
                let (who, tgt) = {
                    let flight = self.flight("krbtgt");
                    let _guard = flight.lock().await;
                    // Another caller may have logged in again meanwhile.
                    let c = self.options.cache.snapshot()?;
                    match (c.principal, c.tgt) {
                        (Some(w), Some(t)) if t.ticket != tgt.ticket && t.valid_at(self.now().as_secs()) => (w, t),
                        _ => self.login_from_keytab(&login, true).await?,
                    }
                };
                self.fetch_service_ticket(&who, &tgt, service).await
            }
            other => other,
        }
    }

    async fn fetch_service_ticket(
        &self,
        who: &Principal,
        tgt: &CachedTicket,
        service: &Principal,
    ) -> Result<CachedTicket, SdkError> {
        let req = ServiceTicketRequest::new(who, tgt, service.clone(), new_nonce(), self.now())?;
        let reply = self.exchange(&self.config.ticket_endpoint, &req).await?;
        reply.open_service(&req, tgt, self.now()).map_err(|_| SdkError::BadKdcReply)
    }

    /// POSTs a TGS or renewal request to `endpoint`: the KDC's reply, still
    /// sealed, or its refusal as an error.
    async fn exchange(&self, endpoint: &str, request: &impl serde::Serialize) -> Result<TicketReply, SdkError> {
        let resp = self.http.post(endpoint).json(request).send().await?;
        if !resp.status().is_success() {
            let (s, h, p) = problem(resp).await?;
            return Err(kdc_refusal(s, &h, p));
        }
        kdc_json(resp).await
    }

    /// Seals `secret` for `service` under the session key of this client's
    /// ticket for it (usage `session-secret`, as
    /// `AuthenticatedPrincipal::open_secret` in the middleware opens it):
    /// how a value that must stay confidential even without TLS travels in
    /// a request body, e.g. the admin API's `password_sealed`.
    ///
    /// It opens only under that ticket's session key: send it right away
    /// with [`Self::send_request`], which uses the same cached ticket. If the
    /// service refuses that ticket and the request is retried with a new
    /// one, the service cannot open the value (the admin API answers `400`):
    /// seal it again.
    pub async fn seal_for(&self, service: &Principal, secret: &[u8]) -> Result<String, SdkError> {
        let ticket = self.service_ticket(service).await?;
        Ok(kdc_proto::seal(ticket.session_key(), SESSION_KID, Usage::SessionSecret, secret)?)
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
        let sealed = authenticator.seal(ticket.session_key(), Usage::Authenticator)?;
        Ok(PreparedRequest {
            authorization: authorization_value(&ticket.ticket, &sealed),
            authenticator,
            ticket: ticket.clone(),
        })
    }

    /// Calls `url` on `service` with a ticket and a fresh authenticator bound
    /// to the request (and to `body` when given, sent as
    /// `application/octet-stream`), and verifies the mutual reply over the
    /// status and body. [`Self::send_request`] takes headers and a content
    /// type (e.g. a JSON body); this is it without them.
    pub async fn send(
        &self,
        service: &Principal,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ServiceResponse, SdkError> {
        let mut request = ServiceRequest::new(method, url);
        if let Some(b) = body {
            request = request.body(b);
        }
        self.send_request(service, request).await
    }

    /// Sends `request` to `service` with a ticket and a fresh authenticator
    /// bound to it (method, host, path with query, and the body when there
    /// is one), and verifies the mutual reply over the status and body.
    ///
    /// - A body goes with its `Content-Type` header, or
    ///   `application/octet-stream` when none is set ([`ServiceRequest`]).
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
    pub async fn send_request(
        &self,
        service: &Principal,
        request: ServiceRequest,
    ) -> Result<ServiceResponse, SdkError> {
        let ServiceRequest { method, url, mut headers, body } = request;
        if let Some(reserved) = RESERVED_HEADERS.iter().find(|h| headers.contains_key(*h)) {
            return Err(SdkError::Invalid { what: "header", detail: format!("{reserved} is set by the SDK") });
        }
        if body.is_some() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        }
        let url = parse_url(&url)?;
        check_transport(&url, self.options.allow_insecure_http)?;
        self.check_service_host(service, &url)?;
        let (mut renewed_ticket, mut corrected_clock) = (false, false);
        loop {
            let ticket = self.service_ticket(service).await?;
            let prepared = self.prepare_with(&ticket, &method, &url, body.as_deref())?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .header(AUTHORIZATION, &prepared.authorization);
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let resp = req.send().await?;
            let (status, headers) = (resp.status(), resp.headers().clone());
            let bytes = read_body(resp, self.options.max_response_body).await?;
            let mutual = typed_header::<AuthenticationInfo>(&headers, AUTHENTICATION_INFO).map(|i| i.mutual);
            if mutual.is_none() && matches!(status.as_u16(), 401 | 403 | 503) {
                let (error, server_time) = match typed_header(&headers, WWW_AUTHENTICATE) {
                    Some(Challenge::Ticket { error, server_time, .. }) => (error, server_time),
                    _ => (None, None),
                };
                let kind = error.unwrap_or_else(|| Problem::parse(&bytes, status.as_u16()).kind);
                let refused = SdkError::Refused { kind: kind.clone(), status: status.as_u16() };
                match kind {
                    ProblemKind::TicketExpired | ProblemKind::KvnoUnknown if !renewed_ticket => {
                        renewed_ticket = true;
                        self.options.cache.update(&mut |c| {
                            c.tickets.remove(&service.to_string());
                        })?;
                        let authenticated = server_time.is_some_and(|sealed| {
                            ErrorDetail::open(&sealed, ticket.session_key(), &prepared.authenticator).is_ok()
                        });
                        if !authenticated && !is_idempotent(&method) {
                            return Err(refused);
                        }
                    }
                    ProblemKind::ClockSkew | ProblemKind::StaleAuthenticator if !corrected_clock => {
                        corrected_clock = true;
                        let sealed = server_time.ok_or(refused)?;
                        let detail = ErrorDetail::open(&sealed, ticket.session_key(), &prepared.authenticator)
                            .map_err(|_| SdkError::MutualAuthFailed)?;
                        let offset = i64::try_from(detail.server_time.0).unwrap_or(i64::MAX)
                            - i64::try_from(self.now().0).unwrap_or(i64::MAX);
                        self.offsets.lock().unwrap_or_else(|p| p.into_inner()).insert(authority(&url), offset);
                    }
                    _ => return Err(refused),
                }
                continue;
            }
            match mutual {
                Some(m) => {
                    verify_mutual_reply(&m, ticket.session_key(), &prepared.authenticator, status.as_u16(), &bytes)
                        .map_err(|_| SdkError::MutualAuthFailed)?
                }
                None if self.options.require_mutual => return Err(SdkError::MutualAuthFailed),
                None => {}
            }
            return Ok(ServiceResponse { status, headers, body: bytes, session_key: ticket.part.session_key });
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
            sealing: kdc_proto::SealingAlgorithms {
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
            keytab: Mutex::new(None),
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
        let lax = client("https://kdc.example.test", ClientOptions::default().allow_service_host_mismatch(true));
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

    fn entry(kvno: u32, expires_at: Option<u64>) -> KeytabEntry {
        KeytabEntry { kvno: Kvno(kvno), key: SecretKey::generate(), expires_at }
    }

    #[test]
    fn a_keytab_login_uses_the_newest_live_key() {
        let keytab = |keys| Keytab { version: 1, principal: "HTTP/a.example.test@EXAMPLE.TEST".parse().unwrap(), keys };
        let kt = keytab(vec![entry(1, Some(500)), entry(3, None), entry(2, Some(900))]);
        assert_eq!(current_keytab_entry(&kt, 100).map(|e| e.kvno), Some(Kvno(3)));
        // Listed in any order; retired versions are never used.
        let kt = keytab(vec![entry(1, Some(500)), entry(2, Some(900))]);
        assert_eq!(current_keytab_entry(&kt, 100).map(|e| e.kvno), Some(Kvno(2)));
        assert_eq!(current_keytab_entry(&kt, 600).map(|e| e.kvno), Some(Kvno(2)));
        assert!(current_keytab_entry(&kt, 900).is_none());
    }

    #[test]
    fn a_keytab_file_error_names_the_file_not_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.keytab");
        std::fs::write(&path, br#"{"version":1,"principal":"HTTP/a@R","keys":[{"kvno":1,"key":"c2VjcmV0"}],"x":1}"#)
            .unwrap();
        let e = load_keytab(&path).unwrap_err();
        assert!(matches!(e, SdkError::Keytab { .. }));
        let text = e.to_string();
        assert!(text.contains("svc.keytab") && text.contains("not a keytab") && !text.contains("c2VjcmV0"), "{text}");
    }

    #[test]
    fn challenge_parameters_are_checked_before_any_work() {
        let problem = |members: Value| Problem::parse(members.to_string().as_bytes(), 401);
        let ok = serde_json::json!({"salt": "kdc-http/v1 salt:alice@EXAMPLE.TEST", "argon2": Argon2Params::DEFAULT});
        let kdf = challenge_params(&problem(ok.clone())).unwrap();
        assert_eq!((kdf.salt.as_str(), kdf.argon2), ("kdc-http/v1 salt:alice@EXAMPLE.TEST", Argon2Params::DEFAULT));
        let weak = serde_json::json!({"salt": "s", "argon2": {"m_kib": 8, "t": 1, "p": 1}});
        assert!(matches!(challenge_params(&problem(weak)), Err(SdkError::WeakKeyDerivation(_))));
        assert!(matches!(challenge_params(&problem(serde_json::json!({"salt": "s"}))), Err(SdkError::BadKdcReply)));
        let no_salt = problem(serde_json::json!({"argon2": ok["argon2"]}));
        assert!(matches!(challenge_params(&no_salt), Err(SdkError::BadKdcReply)));
    }

    #[test]
    fn a_json_request_carries_its_content_type() {
        let r =
            ServiceRequest::new(Method::POST, "https://a.example.test/x").json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(r.headers.get(CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(r.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        // A type given before is replaced, not doubled.
        let r = ServiceRequest::new(Method::POST, "https://a.example.test/x")
            .header(CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .json(&1)
            .unwrap();
        assert_eq!(r.headers.get_all(CONTENT_TYPE).iter().count(), 1);
    }

    #[tokio::test]
    async fn headers_the_sdk_sets_are_refused_before_anything_is_sent() {
        // The KDC and the service do not exist: a refusal must come first.
        let c = client("https://kdc.invalid", ClientOptions::default());
        let svc: Principal = "HTTP/a.invalid@EXAMPLE.TEST".parse().unwrap();
        for name in RESERVED_HEADERS {
            let r = ServiceRequest::new(Method::GET, "https://a.invalid/x")
                .header(name.clone(), HeaderValue::from_static("1"));
            let e = c.send_request(&svc, r).await.unwrap_err();
            assert!(
                matches!(&e, SdkError::Invalid { what: "header", detail } if detail.contains(name.as_str())),
                "{e}"
            );
        }
    }
}
