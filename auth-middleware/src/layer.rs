//! [`TicketAuthLayer`]: configuration (a builder with secure defaults) and the
//! shared state every request's validation uses.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kdc_proto::Keytab;
use kdc_proto::{Clock, JwkSet, KdcVerifier, Principal, SystemClock};
use tower::Layer;

use crate::error::ConfigError;
use crate::keys::{ServiceKeyring, check_jwks_uri, fetch_jwks, is_unrelated};
use crate::replay::{InMemoryReplayCache, ReplayCache};
use crate::service::TicketAuth;
use crate::verifier::{AuthorityPolicy, RoleRule, TicketVerifier, VerifierSettings};

enum KeytabSource {
    File(PathBuf),
    Memory(Box<Keytab>),
}

enum KdcKeySource {
    Given(JwkSet),
    Uri(String),
}

/// Counts of what the layer observed about the KDC's keys.
#[derive(Debug, Default)]
pub(crate) struct KeyEvents {
    /// Refreshes that replaced the JWK set with one sharing no key id.
    pub(crate) unrelated_replacements: std::sync::atomic::AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) verifier: TicketVerifier,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) realm: String,
    keytab_path: Option<PathBuf>,
    replay_state: Option<(PathBuf, Arc<InMemoryReplayCache>, crate::replay_state::StateLock)>,
    key_events: KeyEvents,
}

/// A tower layer that authenticates every request by ticket and
/// authenticator, refuses what fails (`401`/`403`/`503` problem+json), puts an
/// [`crate::AuthenticatedPrincipal`] in the extensions of what passes, and
/// signs each response with an `Authentication-Info: mutual="…"` reply.
///
/// Cheap to clone; clones share keys and caches.
#[derive(Clone)]
pub struct TicketAuthLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for TicketAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketAuthLayer").field("verifier", &self.shared.verifier).finish()
    }
}

impl TicketAuthLayer {
    /// Starts a configuration.
    pub fn builder() -> TicketAuthBuilder {
        TicketAuthBuilder::default()
    }

    /// Re-reads the keytab file (after `kdc keytab export` of a rotated key),
    /// without a restart. A no-op for an in-memory keytab.
    pub fn reload_keytab(&self) -> Result<(), ConfigError> {
        reload_keytab(&self.shared)
    }

    /// Saves the replay cache to its state file
    /// ([`TicketAuthBuilder::replay_state_file`]) as a clean snapshot, so the
    /// next start needs no warm-up. Call it once serving has stopped (after a
    /// graceful shutdown); a no-op without a state file.
    pub fn save_replay_state(&self) -> std::io::Result<()> {
        match &self.shared.replay_state {
            Some((path, cache, _)) => crate::replay_state::save(cache, path, self.shared.clock.now()),
            None => Ok(()),
        }
    }

    /// How many JWK-set refreshes replaced every KDC key at once (a new set
    /// sharing no key id with the old) or changed the key behind a key id:
    /// each is also logged as a warning.
    /// A KDC rotating its signing key publishes old and new together, so a
    /// non-zero count deserves a look.
    pub fn jwks_unrelated_replacements(&self) -> u64 {
        self.shared.key_events.unrelated_replacements.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The validation state (for direct use and for observing cache sizes).
    pub fn verifier(&self) -> &TicketVerifier {
        &self.shared.verifier
    }
}

fn reload_keytab(shared: &Shared) -> Result<(), ConfigError> {
    if let Some(path) = &shared.keytab_path {
        let keyring = ServiceKeyring::from_file(path, shared.clock.now())?;
        if keyring.principal() != &shared.verifier.service() {
            return Err(ConfigError::KeytabPrincipal {
                expected: shared.verifier.service().to_string(),
                found: keyring.principal().to_string(),
            });
        }
        shared.verifier.set_keyring(keyring);
    }
    Ok(())
}

impl<S> Layer<S> for TicketAuthLayer {
    type Service = TicketAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TicketAuth::new(inner, self.shared.clone())
    }
}

/// A certificate authority to trust for the JWK-set fetch.
enum KdcCa {
    File(PathBuf),
    Given(reqwest::Certificate),
}

impl KdcCa {
    fn load(self) -> Result<Vec<reqwest::Certificate>, ConfigError> {
        match self {
            KdcCa::Given(c) => Ok(vec![c]),
            KdcCa::File(path) => crate::tls::load_ca_file(&path).map_err(|e| ConfigError::CaCertificate {
                path,
                reason: match e {
                    crate::tls::TlsError::Certificate { reason, .. } => reason,
                    other => other.to_string(),
                },
            }),
        }
    }
}

/// Configuration of a [`TicketAuthLayer`].
pub struct TicketAuthBuilder {
    service: Option<Principal>,
    keytab: Option<KeytabSource>,
    kdc_keys: Option<KdcKeySource>,
    jwks_refresh: Option<Duration>,
    keytab_reload: Option<Duration>,
    jwks_allow_loopback_http: bool,
    kdc_ca: Vec<KdcCa>,
    settings: VerifierSettings,
    replay: Option<Arc<dyn ReplayCache>>,
    replay_state: Option<PathBuf>,
    redis_url: Option<String>,
    clock: Arc<dyn Clock>,
}

impl Default for TicketAuthBuilder {
    fn default() -> Self {
        Self {
            service: None,
            keytab: None,
            kdc_keys: None,
            jwks_refresh: None,
            keytab_reload: None,
            jwks_allow_loopback_http: false,
            kdc_ca: Vec::new(),
            settings: VerifierSettings::default(),
            replay: None,
            replay_state: None,
            redis_url: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl TicketAuthBuilder {
    /// The service principal. Defaults to the keytab's; when given, the
    /// keytab must be for it.
    pub fn service_principal(mut self, p: Principal) -> Self {
        self.service = Some(p);
        self
    }

    /// Reads the keytab from a file (`kdc keytab export`). Required, or
    /// [`Self::keytab`].
    pub fn keytab_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.keytab = Some(KeytabSource::File(path.into()));
        self
    }

    /// Uses an in-memory keytab.
    pub fn keytab(mut self, keytab: Keytab) -> Self {
        self.keytab = Some(KeytabSource::Memory(Box::new(keytab)));
        self
    }

    /// Polls the keytab file every `every` and reloads it when it changed.
    /// Defaults to off ([`TicketAuthLayer::reload_keytab`] reloads on demand).
    pub fn keytab_reload_interval(mut self, every: Duration) -> Self {
        self.keytab_reload = Some(every);
        self
    }

    /// Fetches the KDC's signing keys from its `jwks_uri` at build time and
    /// refreshes them periodically. Required, or [`Self::kdc_keys`]. Only
    /// `https` is accepted (see [`Self::jwks_allow_loopback_http`]); the body
    /// is read up to [`crate::keys::MAX_JWKS_BYTES`].
    pub fn kdc_jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.kdc_keys = Some(KdcKeySource::Uri(uri.into()));
        self
    }

    /// Allows fetching the JWK set over plain `http` from a loopback address
    /// (a KDC on the same machine; tests). Defaults to false: https only.
    pub fn jwks_allow_loopback_http(mut self, allow: bool) -> Self {
        self.jwks_allow_loopback_http = allow;
        self
    }

    /// Trusts the certificate authorities in a PEM file (a private CA)
    /// besides the platform's roots when fetching the JWK set over https.
    /// Read at [`Self::build`]; repeatable.
    pub fn kdc_ca_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.kdc_ca.push(KdcCa::File(path.into()));
        self
    }

    /// Trusts the given certificate authorities besides the platform's
    /// roots when fetching the JWK set over https.
    pub fn kdc_ca_certificates(mut self, certs: impl IntoIterator<Item = reqwest::Certificate>) -> Self {
        self.kdc_ca.extend(certs.into_iter().map(KdcCa::Given));
        self
    }

    /// Uses a given JWK set for the KDC's signing keys.
    pub fn kdc_keys(mut self, set: JwkSet) -> Self {
        self.kdc_keys = Some(KdcKeySource::Given(set));
        self
    }

    /// How often to refresh keys fetched from a `jwks_uri`. Defaults to what
    /// the KDC's `Cache-Control: max-age` says (its default is 5 minutes),
    /// kept between 10 s and a day, else 5 minutes.
    pub fn jwks_refresh_interval(mut self, every: Duration) -> Self {
        self.jwks_refresh = Some(every);
        self
    }

    /// Allowed clock skew. Defaults to 300 s.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.settings.max_skew_secs = skew.as_secs();
        self
    }

    /// Refuses requests that carry a body their authenticator does not bind.
    /// Defaults to false (method and path with query are always bound).
    pub fn require_body_binding(mut self, required: bool) -> Self {
        self.settings.require_body_binding = required;
        self
    }

    /// Largest request body read to check a body binding. Defaults to 1 MiB.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.settings.max_body_bytes = max;
        self
    }

    /// Largest response body buffered to sign in the mutual reply (a larger
    /// one becomes a `500`). Defaults to 16 MiB.
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.settings.max_response_bytes = max;
        self
    }

    /// Which authorities (`Host` values) this service answers for. Defaults
    /// to [`AuthorityPolicy::ServiceInstance`]: the service principal's
    /// instance, or loopback.
    pub fn authorities(mut self, policy: AuthorityPolicy) -> Self {
        self.settings.authorities = policy;
        self
    }

    /// Requires `role` for every path under `path_prefix` (`403` otherwise),
    /// matched segment-wise on the normalised path (see [`RoleRule`]).
    pub fn require_role(mut self, path_prefix: impl Into<String>, role: impl Into<String>) -> Self {
        self.settings.role_rules.push(RoleRule { path_prefix: path_prefix.into(), role: role.into() });
        self
    }

    /// The replay cache. Defaults to [`InMemoryReplayCache::with_defaults`]
    /// created at build time, which refuses as stale, for the first max-skew
    /// after a start, authenticators an earlier process might have accepted
    /// (see [`Self::replay_state_file`] to avoid that warm-up); services with
    /// several instances share one instead.
    pub fn replay_cache(mut self, cache: Arc<dyn ReplayCache>) -> Self {
        self.replay = Some(cache);
        self
    }

    /// Keeps the default in-memory replay cache across restarts in `path`
    /// (a versioned file, locked while the cache lives): loaded at build, saved by
    /// [`TicketAuthLayer::save_replay_state`] at a graceful shutdown. A clean
    /// restart then needs no warm-up; after a crash the warm-up applies.
    /// Ignored when [`Self::replay_cache`] is given.
    pub fn replay_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.replay_state = Some(path.into());
        self
    }

    /// Shares the replay cache with the service's other instances in the
    /// Redis at `url` (`redis://[user:password@]host:port[/db]`; see
    /// [`crate::replay_redis`]), under the service principal's namespace.
    /// A replay at a sibling instance is then refused too; a Redis that cannot
    /// be reached makes requests fail closed (`503` + `Retry-After`) until it
    /// answers again. Takes precedence over [`Self::replay_state_file`];
    /// [`Self::replay_cache`] takes precedence over it. Redis may be down at
    /// build time.
    pub fn redis_replay_cache(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Where "now" comes from. Defaults to the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Loads the keys and builds the layer. Fetches the JWK set when a
    /// `jwks_uri` was given, and starts the refresh and reload tasks (so it
    /// must run inside a Tokio runtime).
    pub async fn build(self) -> Result<TicketAuthLayer, ConfigError> {
        let now = self.clock.now();
        let (keyring, keytab_path) = match self.keytab.ok_or(ConfigError::MissingKeytab)? {
            KeytabSource::File(path) => (ServiceKeyring::from_file(&path, now)?, Some(path)),
            KeytabSource::Memory(kt) => (ServiceKeyring::from_keytab(&kt, now)?, None),
        };
        if let Some(expected) = self.service.as_ref().filter(|e| *e != keyring.principal()) {
            return Err(ConfigError::KeytabPrincipal {
                expected: expected.to_string(),
                found: keyring.principal().to_string(),
            });
        }
        let (jwks, jwks_uri) = match self.kdc_keys.ok_or(ConfigError::MissingKdcKeys)? {
            KdcKeySource::Given(set) => (set, None),
            KdcKeySource::Uri(uri) => {
                let url = check_jwks_uri(&uri, self.jwks_allow_loopback_http)?;
                let roots = self.kdc_ca.into_iter().map(KdcCa::load).collect::<Result<Vec<_>, _>>()?;
                let http = reqwest::Client::builder()
                    .tls_certs_merge(roots.into_iter().flatten())
                    .timeout(Duration::from_secs(10))
                    // The keys come from the URL configured, not from wherever it points.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| ConfigError::Jwks { uri: uri.clone(), reason: e.to_string() })?;
                let fetched = fetch_jwks(&http, &url).await?;
                (fetched.set.clone(), Some((http, url, fetched)))
            }
        };
        let (replay, replay_state): (Arc<dyn ReplayCache>, _) = match (self.replay, self.redis_url, self.replay_state) {
            (Some(cache), _, _) => (cache, None),
            (None, Some(url), _) => {
                let config = crate::replay_redis::RedisReplayConfig {
                    max_window: Duration::from_secs(self.settings.max_skew_secs.saturating_mul(2)),
                    ..crate::replay_redis::RedisReplayConfig::new(keyring.principal().to_string())
                };
                let cache = crate::replay_redis::connect(&url, config)
                    .await
                    .map_err(|e| ConfigError::ReplayCache(e.to_string()))?;
                (cache, None)
            }
            (None, None, Some(path)) => {
                let (cap, per) = (InMemoryReplayCache::DEFAULT_CAPACITY, InMemoryReplayCache::DEFAULT_PER_PRINCIPAL);
                let (cache, kind, held) = crate::replay_state::open(&path, cap, per, now)
                    .map_err(|source| ConfigError::ReplayState { path: path.clone(), source })?;
                if kind == crate::replay_state::StartKind::Unclean {
                    tracing::warn!(
                        path = %path.display(),
                        "the replay cache was not saved at the last stop: authenticators made before the next \
                         max-skew window ends are refused as stale"
                    );
                }
                let cache = Arc::new(cache);
                (cache.clone(), Some((path, cache, held)))
            }
            (None, None, None) => (Arc::new(InMemoryReplayCache::with_defaults(now)), None),
        };
        let realm = keyring.principal().realm().to_string();
        let verifier = TicketVerifier::new(keyring, KdcVerifier::from_jwks(&jwks), replay, self.settings);
        let shared = Arc::new(Shared {
            verifier,
            clock: self.clock,
            realm,
            keytab_path,
            replay_state,
            key_events: KeyEvents::default(),
        });
        if let Some((http, url, fetched)) = jwks_uri {
            spawn_jwks_refresh(Arc::downgrade(&shared), http, url, fetched, self.jwks_refresh);
        }
        if let (Some(every), Some(_)) = (self.keytab_reload, &shared.keytab_path) {
            spawn_keytab_reload(Arc::downgrade(&shared), every);
        }
        Ok(TicketAuthLayer { shared })
    }
}

/// How long to wait before the next refresh: the interval configured, else
/// the KDC's `max-age` (at least 10 s), else 5 minutes.
fn refresh_delay(configured: Option<Duration>, max_age_secs: Option<u64>) -> Duration {
    configured.unwrap_or_else(|| Duration::from_secs(max_age_secs.map_or(300, |a| a.max(10))))
}

fn spawn_jwks_refresh(
    shared: Weak<Shared>,
    http: reqwest::Client,
    url: reqwest::Url,
    first: crate::keys::FetchedJwks,
    every: Option<Duration>,
) {
    tokio::spawn(async move {
        let mut delay = refresh_delay(every, first.max_age_secs);
        let mut last = first.set;
        loop {
            tokio::time::sleep(delay).await;
            let Some(s) = shared.upgrade() else { return };
            let fetched = fetch_jwks(&http, &url).await;
            if let Ok(f) = &fetched {
                delay = refresh_delay(every, f.max_age_secs);
            }
            match fetched.map(|f| f.set) {
                Ok(set) if set != last => {
                    if is_unrelated(&last, &set) {
                        s.key_events.unrelated_replacements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            uri = %url,
                            "the KDC's JWK set was replaced by one sharing no key id with the previous, or \
                             changing the key behind a key id: tickets signed under the old keys are refused"
                        );
                    }
                    s.verifier.set_kdc_keys(KdcVerifier::from_jwks(&set));
                    last = set;
                }
                Ok(_) => {}
                // Keep the keys we have: a KDC briefly down must not lock clients out.
                Err(e) => tracing::warn!(error = %e, "KDC key refresh failed; keeping the current keys"),
            }
        }
    });
}

fn spawn_keytab_reload(shared: Weak<Shared>, every: Duration) {
    tokio::spawn(async move {
        let mut last_modified = None;
        loop {
            tokio::time::sleep(every).await;
            let Some(s) = shared.upgrade() else { return };
            let Some(path) = &s.keytab_path else { return };
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified.is_some() && modified != last_modified {
                match reload_keytab(&s) {
                    Ok(()) => last_modified = modified,
                    Err(e) => tracing::warn!(error = %e, "keytab reload failed; keeping the current keys"),
                }
            }
        }
    });
}
