//! Test harness: boots real KDCs on ephemeral loopback ports (in-process, or
//! as a `kdc` process) and speaks the protocol to them over HTTP with
//! `kdc-proto`, the way any client would.

// Test support: a panic on malformed test data is the right outcome.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context as _, bail};
use kdc_proto::Authenticator;
use kdc_proto::Usage;
use kdc_proto::{
    Argon2Params, AuthenticationInfo, Challenge, Clock, IssuedTicket, Kvno, Principal, SecretKey, SystemClock,
    UnixMillis, b64, derive_password_key,
};
use kdc_proto::{EncTicketPart, InitialTicketRequest, RenewRequest, ServiceTicketRequest, TicketReply};
use kdc_server::AllowedOrigins;
use kdc_server::AppState;
use kdc_server::Kdc;
use kdc_server::MasterKey;
use kdc_server::Policy;
use kdc_server::SqliteStore;
use kdc_server::ThrottlePolicy;
use kdc_server::{Credential, PrincipalSpec};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use zeroize::Zeroizing;

/// Alice's password in every test realm.
pub const ALICE_PW: &str = "correct horse battery staple";
/// Bob's password.
pub const BOB_PW: &str = "tr0ub4dor&3 and more";
/// The bootstrap admin's password.
pub const ADMIN_PW: &str = "bootstrap-admin-pass-123";
/// The realm.
pub const REALM: &str = "EXAMPLE.TEST";
/// Service A.
pub const SVC_A: &str = "HTTP/a.example.test@EXAMPLE.TEST";
/// Service B.
pub const SVC_B: &str = "HTTP/b.example.test@EXAMPLE.TEST";

/// A clock the test can move: the system clock plus an offset.
#[derive(Debug, Default)]
pub struct TestClock {
    offset_ms: AtomicI64,
}

impl TestClock {
    /// Moves the KDC's time forward (or back, with a negative value).
    pub fn advance_secs(&self, secs: i64) {
        self.offset_ms.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> UnixMillis {
        let base = SystemClock.now().0 as i64;
        UnixMillis((base + self.offset_ms.load(Ordering::SeqCst)).max(0) as u64)
    }
}

/// The current wall-clock time.
pub fn now() -> UnixMillis {
    SystemClock.now()
}

/// A KDC served in-process on `127.0.0.1:0`, with alice and bob (users),
/// services A and B, and a movable clock.
pub struct TestKdc {
    /// Base URL.
    pub url: String,
    /// The KDC, for direct administration in tests.
    pub kdc: Arc<Kdc>,
    /// Its clock.
    pub clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestKdc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates the standard test principals in `kdc`.
pub async fn add_standard_principals(kdc: &Kdc) -> anyhow::Result<()> {
    let now = now().as_secs();
    for (name, pw, roles) in [("alice", ALICE_PW, vec!["reader".to_owned()]), ("bob", BOB_PW, vec![])] {
        let spec = PrincipalSpec {
            name: kdc.principal_name(name)?,
            credential: Credential::Password(Zeroizing::new(pw.to_owned())),
            roles,
            max_life_secs: None,
            max_renew_secs: None,
        };
        kdc.create_principal(spec, now).await?;
    }
    for svc in [SVC_A, SVC_B] {
        let spec = PrincipalSpec {
            name: svc.parse()?,
            credential: Credential::Random,
            roles: vec![],
            max_life_secs: None,
            max_renew_secs: None,
        };
        kdc.create_principal(spec, now).await?;
    }
    Ok(())
}

impl TestKdc {
    /// Starts a KDC with the default policy.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Policy::default(), ThrottlePolicy::default()).await
    }

    /// Starts a KDC with the given policy and throttling.
    pub async fn start_with(policy: Policy, throttle: ThrottlePolicy) -> anyhow::Result<Self> {
        Self::start_full(policy, throttle, auth_middleware::ServeLimits::default()).await
    }

    /// Starts a KDC with the given policy, throttling and connection limits.
    pub async fn start_full(
        policy: Policy,
        throttle: ThrottlePolicy,
        limits: auth_middleware::ServeLimits,
    ) -> anyhow::Result<Self> {
        Self::start_configured(policy, throttle, limits, AllowedOrigins::default(), kdc_server::AuditLog::disabled())
            .await
    }

    /// Starts a KDC with the default policy that lets pages from `origins`
    /// call it (CORS).
    pub async fn start_with_cors(origins: &[&str]) -> anyhow::Result<Self> {
        let origins = AllowedOrigins::parse(origins)?;
        let limits = auth_middleware::ServeLimits::default();
        Self::start_configured(
            Policy::default(),
            ThrottlePolicy::default(),
            limits,
            origins,
            kdc_server::AuditLog::disabled(),
        )
        .await
    }

    /// Starts a KDC with the default policy that records to `audit`.
    pub async fn start_with_audit(audit: kdc_server::AuditLog) -> anyhow::Result<Self> {
        Self::start_configured(
            Policy::default(),
            ThrottlePolicy::default(),
            Default::default(),
            AllowedOrigins::default(),
            audit,
        )
        .await
    }

    /// Starts a KDC with the given policy, throttling, connection limits,
    /// CORS origins and audit trail.
    pub async fn start_configured(
        policy: Policy,
        throttle: ThrottlePolicy,
        limits: auth_middleware::ServeLimits,
        cors: AllowedOrigins,
        audit: kdc_server::AuditLog,
    ) -> anyhow::Result<Self> {
        Self::start_inner(policy, throttle, limits, cors, audit, None).await
    }

    /// Starts a KDC with the default policy whose replay cache and
    /// pre-authentication throttle are in the Redis at `url`, under
    /// `namespace` (as `kdc serve --replay-cache-url` does, under
    /// `kdc/<realm>`): KDCs started so on one namespace share them.
    pub async fn start_sharing(url: &str, namespace: &str) -> anyhow::Result<Self> {
        let (limits, cors, audit) = (Default::default(), AllowedOrigins::default(), kdc_server::AuditLog::disabled());
        Self::start_inner(Policy::default(), ThrottlePolicy::default(), limits, cors, audit, Some((url, namespace)))
            .await
    }

    async fn start_inner(
        policy: Policy,
        throttle: ThrottlePolicy,
        limits: auth_middleware::ServeLimits,
        cors: AllowedOrigins,
        audit: kdc_server::AuditLog,
        shared: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteStore::open(&dir.path().join("kdc.sqlite3")).await?);
        let master = SecretKey::generate();
        Kdc::initialize(
            store.as_ref(),
            &MasterKey::new(master.clone()),
            &REALM.parse()?,
            Zeroizing::new(ADMIN_PW.to_owned()),
            now().as_secs(),
        )
        .await?;
        let mut kdc = Kdc::open(store, MasterKey::new(master), policy, throttle, now()).await?;
        if let Some((url, namespace)) = shared {
            kdc.share_replay_cache_as(url, namespace).await?;
        }
        let kdc = Arc::new(kdc);
        add_standard_principals(&kdc).await?;
        let clock = Arc::new(TestClock::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let admin_replay = dir.path().join("admin-replay.state");
        let state = AppState::new(kdc.clone(), clock.clone(), format!("http://{addr}"), Some(&admin_replay))
            .await?
            .with_cors(cors)
            .with_audit(audit);
        let task = tokio::spawn(async move {
            let _ = kdc_server::serve_with(listener, state, limits, std::future::pending()).await;
        });
        Ok(Self { url: format!("http://{addr}"), kdc, clock, _dir: dir, task })
    }

    /// A protocol client for this KDC.
    pub fn client(&self) -> ProtoClient {
        ProtoClient::new(&self.url)
    }

    /// The live keys of a service, as its keytab would hold them.
    pub async fn service_key(&self, name: &str) -> anyhow::Result<SecretKey> {
        let kt = self.kdc.keytab(&name.parse()?, now().as_secs()).await?;
        Ok(kt.keys.first().context("no key")?.key.clone())
    }
}

/// A `kdc` process (the real binary) serving a data directory.
pub struct KdcProcess {
    /// Base URL.
    pub url: String,
    child: tokio::process::Child,
}

/// Runs `kdc ARGS` (the binary at `bin`) to completion with `stdin`,
/// returning stdout; fails on a non-zero exit.
pub async fn kdc_command(bin: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .env_remove("KDC_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(mut i), Some(s)) = (child.stdin.take(), stdin) {
        i.write_all(s.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("kdc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

impl KdcProcess {
    /// Starts `kdc serve` (the binary at `bin`) on `data` at an ephemeral
    /// loopback port.
    pub async fn start(bin: &Path, data: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, data, &[]).await
    }

    /// Like [`Self::start`], with more arguments for `kdc serve`.
    pub async fn start_with(bin: &Path, data: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(bin, data, extra, Stdio::null(), "warn").await
    }

    /// Like [`Self::start_with`], logging at `info` (one line per request)
    /// to the file `log`.
    pub async fn start_logged(bin: &Path, data: &Path, extra: &[&str], log: &Path) -> anyhow::Result<Self> {
        Self::spawn(bin, data, extra, Stdio::from(std::fs::File::create(log)?), "info").await
    }

    async fn spawn(bin: &Path, data: &Path, extra: &[&str], stderr: Stdio, filter: &str) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(bin)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KDC_LOG", filter)
            .env_remove("KDC_MASTER_KEY")
            .env_remove("KDC_LOG_FORMAT")
            .env_remove("KDC_AUDIT_LOG")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
                .await
                .context("kdc did not start in time")??
                .context("kdc exited before serving")?;
            if let Some(idx) = line.find("https://").or_else(|| line.find("http://")) {
                break line[idx..].split_whitespace().next().unwrap_or_default().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { url, child })
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits up to `within` for the process to exit by itself.
    pub async fn exited(mut self, within: std::time::Duration) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(within, self.child.wait()).await.context("still running")??)
    }

    /// `kill -9`.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// `kill -TERM`, then waits for the exit.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let status = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait()).await??)
    }
}

/// What a login or ticket exchange gave the client.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The ticket.
    pub ticket: String,
    /// The decrypted client part.
    pub enc: EncTicketPart,
    /// The client.
    pub client: Principal,
}

impl Credentials {
    fn new(issued: IssuedTicket, client: Principal) -> Self {
        Self { ticket: issued.ticket, enc: issued.part, client }
    }

    /// The ticket as `kdc_proto::exchange` takes it.
    pub fn issued(&self) -> IssuedTicket {
        IssuedTicket { ticket: self.ticket.clone(), part: self.enc.clone() }
    }
}

/// An HTTP response reduced to what tests look at.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// `WWW-Authenticate`, if any.
    pub www_authenticate: Option<String>,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// Body as JSON (Null if it is not JSON).
    pub body: Value,
}

/// A minimal protocol client built on `kdc-proto` and reqwest.
#[derive(Debug, Clone)]
pub struct ProtoClient {
    /// Base URL.
    pub url: String,
    http: reqwest::Client,
}

/// A fresh random nonce.
pub use kdc_proto::new_nonce as nonce;

impl ProtoClient {
    /// A client for the KDC at `url`.
    pub fn new(url: &str) -> Self {
        Self::with_http(url, reqwest::Client::new())
    }

    /// A client for the KDC at `url` over `http`: one bound to another
    /// loopback address (`local_address`), or sending extra headers.
    pub fn with_http(url: &str, http: reqwest::Client) -> Self {
        Self { url: url.trim_end_matches('/').to_owned(), http }
    }

    /// POSTs a JSON value (or raw bytes) to `path`.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<Answer> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        Self::answer(r).await
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<Answer> {
        self.post_raw(path, "application/json", serde_json::to_vec(body)?).await
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        Self::answer(self.http.get(format!("{}{path}", self.url)).send().await?).await
    }

    async fn answer(r: reqwest::Response) -> anyhow::Result<Answer> {
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let status = r.status().as_u16();
        let content_type = h("content-type").unwrap_or_default();
        let www_authenticate = h("www-authenticate");
        let retry_after = h("retry-after");
        let bytes = r.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, content_type, www_authenticate, retry_after, body })
    }

    /// The pre-auth challenge for `client` (the first leg of a login).
    pub async fn challenge(&self, client: &str) -> anyhow::Result<Answer> {
        let req = InitialTicketRequest::without_pre_auth(client.parse()?, nonce());
        self.post("/tickets/initial", &req).await
    }

    /// Derives `client`'s key from `password` with the challenge's parameters.
    pub async fn derive_key(&self, client: &str, password: &str) -> anyhow::Result<SecretKey> {
        let ch = self.challenge(client).await?;
        let salt = ch.body["salt"].as_str().context("challenge without salt")?.to_owned();
        let params: Argon2Params = serde_json::from_value(ch.body["argon2"].clone())?;
        let pw = password.to_owned();
        Ok(tokio::task::spawn_blocking(move || derive_password_key(pw.as_bytes(), &salt, params)).await??)
    }

    /// POSTs a ticket request: the KDC's reply, still sealed, or its refusal.
    async fn exchange(&self, path: &str, req: &impl serde::Serialize) -> anyhow::Result<Result<TicketReply, Answer>> {
        let a = self.post(path, req).await?;
        if a.status != 200 {
            return Ok(Err(a));
        }
        Ok(Ok(serde_json::from_value(a.body)?))
    }

    /// Builds a pre-authenticated initial-ticket request.
    pub fn initial_request(key: &SecretKey, client: &str, at: UnixMillis) -> anyhow::Result<InitialTicketRequest> {
        Ok(InitialTicketRequest::pre_authenticated(client.parse()?, key, Kvno(1), nonce(), at)?)
    }

    /// Sends an initial-ticket request and opens the reply with `key`.
    pub async fn initial(
        &self,
        key: &SecretKey,
        req: &InitialTicketRequest,
    ) -> anyhow::Result<Result<Credentials, Answer>> {
        Ok(match self.exchange("/tickets/initial", req).await? {
            Ok(reply) => Ok(Credentials::new(reply.open_initial(req, key, now())?, req.client.clone())),
            Err(refusal) => Err(refusal),
        })
    }

    /// Full login: challenge, key derivation, pre-authenticated request.
    pub async fn login(&self, client: &str, password: &str) -> anyhow::Result<Credentials> {
        let key = self.derive_key(client, password).await?;
        let req = Self::initial_request(&key, client, now())?;
        match self.initial(&key, &req).await? {
            Ok(c) => Ok(c),
            Err(a) => bail!("login failed: {} {}", a.status, a.body),
        }
    }

    /// Builds a service-ticket request for `service` from `tgt`.
    pub fn tgs_request(tgt: &Credentials, service: &str, at: UnixMillis) -> anyhow::Result<ServiceTicketRequest> {
        Ok(ServiceTicketRequest::new(&tgt.client, &tgt.issued(), service.parse()?, nonce(), at)?)
    }

    /// Sends a service-ticket request and opens the reply.
    pub async fn tgs(
        &self,
        tgt: &Credentials,
        req: &ServiceTicketRequest,
    ) -> anyhow::Result<Result<Credentials, Answer>> {
        Ok(match self.exchange("/tickets", req).await? {
            Ok(reply) => Ok(Credentials::new(reply.open_service(req, &tgt.issued(), now())?, tgt.client.clone())),
            Err(refusal) => Err(refusal),
        })
    }

    /// A service ticket, failing on any refusal.
    pub async fn service_ticket(&self, tgt: &Credentials, service: &str) -> anyhow::Result<Credentials> {
        let req = Self::tgs_request(tgt, service, now())?;
        match self.tgs(tgt, &req).await? {
            Ok(c) => Ok(c),
            Err(a) => bail!("service ticket refused: {} {}", a.status, a.body),
        }
    }

    /// Builds a renewal request for `creds`.
    pub fn renew_request(creds: &Credentials, at: UnixMillis) -> anyhow::Result<RenewRequest> {
        Ok(RenewRequest::new(&creds.client, &creds.issued(), nonce(), at)?)
    }

    /// Renews `creds`.
    pub async fn renew(&self, creds: &Credentials, at: UnixMillis) -> anyhow::Result<Result<Credentials, Answer>> {
        let req = Self::renew_request(creds, at)?;
        Ok(match self.exchange("/tickets/renew", &req).await? {
            Ok(reply) => Ok(Credentials::new(reply.open_renewal(&req, &creds.issued(), now())?, creds.client.clone())),
            Err(refusal) => Err(refusal),
        })
    }
}

/// The id of the KDC key that signed `ticket` (a service ticket sealed under
/// `service_key`): the `kid` of the signature inside, read without checking it.
pub fn ticket_signing_kid(ticket: &str, service_key: &SecretKey) -> anyhow::Result<String> {
    let sealed = kdc_proto::SealedTicket::parse(ticket)?;
    let jws = sealed.sealed.open(service_key, Usage::Ticket)?;
    let header = std::str::from_utf8(&jws)?.split('.').next().context("not a JWS")?;
    let header: Value = serde_json::from_slice(&b64::decode(header, "JWS header")?)?;
    Ok(header["kid"].as_str().context("no kid")?.to_owned())
}

/// The key ids a KDC at `url` publishes in its JWK set, in order.
pub async fn published_kids(url: &str) -> anyhow::Result<Vec<String>> {
    let set: kdc_proto::JwkSet =
        reqwest::get(format!("{url}/.well-known/jwks.json")).await?.error_for_status()?.json().await?;
    Ok(set.keys.into_iter().map(|k| k.kid).collect())
}

/// A service behind `TicketAuthLayer`, served in-process on `127.0.0.1:0`,
/// sharing the KDC's movable clock. Routes: `GET /hello` → `hello, <name>`,
/// `GET /roles` → the roles, `POST /echo` → the body, `GET /admin/x`
/// (role `admin` required).
pub struct TestService {
    /// Base URL.
    pub url: String,
    /// The layer (keytab reload, cache sizes).
    pub layer: auth_middleware::TicketAuthLayer,
    /// The keytab file the layer reads.
    pub keytab_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes a service's current keytab from the KDC to `path`.
pub async fn write_keytab(kdc: &TestKdc, service: &str, path: &Path) -> anyhow::Result<()> {
    let kt = kdc.kdc.keytab(&service.parse()?, now().as_secs()).await?;
    std::fs::write(path, serde_json::to_vec(&kt)?)?;
    Ok(())
}

impl TestService {
    /// Starts `service` with its keytab from `kdc` and a default layer.
    pub async fn start(kdc: &TestKdc, service: &str) -> anyhow::Result<Self> {
        Self::start_with(kdc, service, |b| b).await
    }

    /// Starts `service`, letting the test adjust the layer's configuration.
    pub async fn start_with(
        kdc: &TestKdc,
        service: &str,
        configure: impl FnOnce(auth_middleware::TicketAuthBuilder) -> auth_middleware::TicketAuthBuilder,
    ) -> anyhow::Result<Self> {
        Self::start_on(kdc, service, "127.0.0.1:0", configure).await
    }

    /// Like [`Self::start_with`], listening on `addr` (a restarted service
    /// comes back on the address its clients know; binding is retried for a
    /// moment while the previous listener closes).
    pub async fn start_on(
        kdc: &TestKdc,
        service: &str,
        addr: &str,
        configure: impl FnOnce(auth_middleware::TicketAuthBuilder) -> auth_middleware::TicketAuthBuilder,
    ) -> anyhow::Result<Self> {
        use auth_middleware::{AuthenticatedPrincipal, TicketAuthLayer};
        use axum::routing::{get, post};
        let dir = tempfile::tempdir()?;
        let keytab_path = dir.path().join("service.keytab");
        write_keytab(kdc, service, &keytab_path).await?;
        // A state file that does not exist yet: a first start, no warm-up.
        let builder = TicketAuthLayer::builder()
            .keytab_file(&keytab_path)
            .replay_state_file(dir.path().join("replay.state"))
            .kdc_jwks_uri(format!("{}/.well-known/jwks.json", kdc.url))
            // The test KDC serves plain http on loopback.
            .jwks_allow_loopback_http(true)
            .require_role("/admin", "admin")
            .clock(kdc.clock.clone());
        let layer = configure(builder).build().await?;
        let app = axum::Router::new()
            .route("/hello", get(|who: AuthenticatedPrincipal| async move { format!("hello, {}", who.name()) }))
            .route("/roles", get(|who: AuthenticatedPrincipal| async move { who.roles().join(",") }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route("/admin/x", get(|| async { "admin area" }))
            .layer(layer.clone());
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, layer, keytab_path, _dir: dir, task })
    }
}

/// A response from a service, with the raw body.
#[derive(Debug, Clone)]
pub struct ServiceAnswer {
    /// Status.
    pub status: u16,
    /// `WWW-Authenticate`.
    pub www_authenticate: Option<String>,
    /// `Authentication-Info`.
    pub authentication_info: Option<String>,
    /// `Retry-After`.
    pub retry_after: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl ServiceAnswer {
    /// Reads status, the authentication headers and the body of `r`.
    pub async fn read(r: reqwest::Response) -> anyhow::Result<Self> {
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, www_authenticate, authentication_info, retry_after) =
            (r.status().as_u16(), h("www-authenticate"), h("authentication-info"), h("retry-after"));
        let body = r.bytes().await?.to_vec();
        Ok(Self { status, www_authenticate, authentication_info, retry_after, body })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `WWW-Authenticate`, parsed.
    pub fn challenge(&self) -> Option<Challenge> {
        self.www_authenticate.as_deref()?.parse().ok()
    }

    /// The `error` parameter of `WWW-Authenticate`.
    pub fn error_code(&self) -> Option<String> {
        match self.challenge()? {
            Challenge::Ticket { error, .. } => Some(error?.error_code().into_owned()),
            _ => None,
        }
    }

    /// The `server_time` parameter of `WWW-Authenticate`: the sealed time of
    /// a clock refusal.
    pub fn sealed_server_time(&self) -> Option<String> {
        match self.challenge()? {
            Challenge::Ticket { server_time, .. } => server_time,
            _ => None,
        }
    }

    /// The sealed mutual reply.
    pub fn mutual(&self) -> Option<String> {
        Some(self.authentication_info.as_deref()?.parse::<AuthenticationInfo>().ok()?.mutual)
    }
}

/// Builds `Authorization` for one request to the absolute `url` with
/// `creds`, at time `at`, bound to the `Host` reqwest sends for it.
pub fn ap_authorization(
    creds: &Credentials,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    at: UnixMillis,
) -> (String, Authenticator) {
    let url = reqwest::Url::parse(url).expect("an absolute URL");
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let binding = kdc_proto::RequestBinding::new(method, &authority, &path_and_query, body);
    let a = Authenticator::new(creds.client.clone(), at, &binding);
    let sealed = a.seal(&creds.enc.session_key, Usage::Authenticator).expect("sealing an authenticator");
    (kdc_proto::authorization_value(&creds.ticket, &sealed), a)
}

/// Sends one request with an explicit `Authorization` value (or none).
pub async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<Vec<u8>>,
) -> anyhow::Result<ServiceAnswer> {
    let mut req = http.request(method.parse()?, url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    ServiceAnswer::read(req.send().await?).await
}

/// Sends `GET url` with `authorization`, naming `host` in the `Host` header
/// (an instance reached under another name, or a captured request moved).
pub async fn get_with_host(url: &str, host: &str, authorization: &str) -> ServiceAnswer {
    let r = reqwest::Client::new().get(url).header("host", host).header("authorization", authorization).send().await;
    ServiceAnswer::read(r.expect("sending a request")).await.expect("reading an answer")
}

/// `url` (a PostgreSQL URL) with its database replaced by `name`.
pub fn postgres_url_with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = base[scheme_end..].find('/').map_or(base, |i| &base[..scheme_end + i]);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// One authenticated call: builds the authenticator (binding the body when
/// given), sends, and returns the answer and the authenticator sent.
pub async fn call_service(
    http: &reqwest::Client,
    creds: &Credentials,
    method: &str,
    base: &str,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(ServiceAnswer, Authenticator)> {
    let url = format!("{base}{path_and_query}");
    let (authz, a) = ap_authorization(creds, method, &url, body.as_deref(), now());
    let ans = send(http, method, &url, Some(&authz), body).await?;
    Ok((ans, a))
}
