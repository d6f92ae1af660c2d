//! The KDC itself: its realm, keys and store, and the principal operations
//! shared by the `kdc` command and the HTTP API. No HTTP here; time is an
//! argument.

use std::sync::Arc;

use kdc_proto::password_salt;
use kdc_proto::{
    Argon2Params, JwkSet, KdcSigningKey, KdcVerifier, Kvno, LongTermKey, Principal, Realm, SecretKey, b64,
    derive_password_key, limits,
};
use kdc_proto::{Keytab, KeytabEntry};
use zeroize::Zeroizing;

use crate::error::KdcError;
use crate::master_key::MasterKey;
use crate::policy::Policy;
use crate::signing_keys::{self, KeyState, KeyTimings, RotationError, Schedule, SigningKeyRotation, SigningKeys};
use crate::store::{
    NewPrincipal, PasswordDerivation, PrincipalKind, PrincipalRecord, PrincipalStore, RealmInit, StoreError, StoredKey,
    StoredSigningKey,
};
use crate::throttle::{PreAuthThrottle, Throttle, ThrottlePolicy};
use auth_middleware::{InMemoryReplayCache, ReplayCache};

/// Name of the bootstrap administrator created by `kdc init`.
pub(crate) const BOOTSTRAP_ADMIN: &str = "admin";
/// The role that grants administration.
pub(crate) const ADMIN_ROLE: &str = "admin";
/// Capacity of the KDC's replay cache (entries).
pub(crate) const REPLAY_CAPACITY: usize = 1_000_000;
/// Most replay-cache entries one principal may hold: one authenticated client
/// flooding the KDC cannot lock the others out.
pub(crate) const REPLAY_PER_PRINCIPAL: usize = 100_000;

/// How a new principal gets its first key.
pub enum Credential {
    /// A user: key derived from this password with Argon2id.
    Password(Zeroizing<String>),
    /// A service: a random key.
    Random,
}

/// A principal to create.
pub struct PrincipalSpec {
    /// Its name.
    pub name: Principal,
    /// Password or random key.
    pub credential: Credential,
    /// Roles copied into its tickets.
    pub roles: Vec<String>,
    /// Lifetime override, seconds.
    pub max_life_secs: Option<u64>,
    /// Renewable-lifetime override, seconds.
    pub max_renew_secs: Option<u64>,
}

/// The key distribution center.
pub struct Kdc {
    store: Arc<dyn PrincipalStore>,
    realm: Realm,
    master: MasterKey,
    /// The signing keys as last loaded from the store; replaced whole by
    /// [`Kdc::reload_signing_keys`], read (never locked for long) per ticket.
    signing: std::sync::RwLock<Arc<SigningKeys>>,
    policy: Policy,
    pub(crate) replay: Arc<dyn ReplayCache>,
    /// The Redis shared by every instance (`--replay-cache-url`), if any:
    /// the admin layer's replay cache goes there too.
    replay_cache_url: Option<String>,
    pub(crate) throttle: Throttle,
    /// Secret for the keys of principals that do not exist, so a wrong
    /// password and an unknown name take the same path.
    pub(crate) fake_key_secret: SecretKey,
    pub(crate) issued: IssuedCounters,
    /// Presented tickets (TGTs, renewals) whose seal and signature verified.
    pub(crate) verified_tickets: auth_middleware::VerifiedTicketCache,
    /// A principal id with live keys and a key sealed for it, for the unknown-name
    /// path of pre-authentication to do the work a real name does.
    pub(crate) decoy: (String, StoredKey),
    /// Refused exchanges by problem kind.
    refusals: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Pre-authentication challenges answered: the first step of a normal
    /// login, so not counted among the refusals.
    challenges: std::sync::atomic::AtomicU64,
}

/// Tickets issued since start, by exchange.
#[derive(Debug, Default)]
pub struct IssuedCounters {
    /// Initial (AS) exchanges that issued a ticket.
    pub initial: std::sync::atomic::AtomicU64,
    /// Service-ticket (TGS) exchanges that issued a ticket.
    pub service: std::sync::atomic::AtomicU64,
    /// Renewals.
    pub renewed: std::sync::atomic::AtomicU64,
}

/// A snapshot of [`Kdc`]'s counters ([`Kdc::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KdcStats {
    /// Initial (AS) exchanges that issued a ticket since start.
    pub issued_initial: u64,
    /// Service-ticket (TGS) exchanges that issued a ticket since start.
    pub issued_service: u64,
    /// Renewals since start.
    pub renewed: u64,
    /// Pre-authentication challenges answered since start.
    pub preauth_challenges: u64,
    /// Refused exchanges since start, by problem kind slug.
    pub refusals: std::collections::BTreeMap<&'static str, u64>,
    /// Entries in the replay cache (0 for a shared one in Redis).
    pub replay_cache_entries: u64,
    /// Exchanges refused because the shared replay cache or throttle (Redis)
    /// could not be reached or did not answer in time.
    pub replay_cache_unavailable: u64,
    /// Entries in the verified-ticket cache.
    pub verified_ticket_cache_entries: u64,
    /// Failed-pre-authentication counters held by the throttle.
    pub throttle_entries: u64,
}

impl std::fmt::Debug for Kdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kdc").field("realm", &self.realm).finish_non_exhaustive()
    }
}

fn new_principal_id() -> String {
    let mut id = [0u8; 16];
    rand::fill(&mut id[..]);
    b64::encode(id)
}

fn key_owner(principal_id: &str, kvno: Kvno) -> String {
    format!("{principal_id}#{kvno}")
}

/// Validates role names and count.
pub(crate) fn check_roles(roles: &[String]) -> Result<(), KdcError> {
    if roles.len() > limits::MAX_ROLES {
        return Err(KdcError::Malformed(format!("at most {} roles", limits::MAX_ROLES)));
    }
    let mut seen = std::collections::HashSet::with_capacity(roles.len());
    if !roles.iter().all(|r| seen.insert(r.as_str())) {
        return Err(KdcError::Malformed("duplicate roles".to_owned()));
    }
    for r in roles {
        if r.is_empty()
            || r.len() > limits::MAX_ROLE_LEN
            || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(KdcError::Malformed(format!(
                "invalid role {r:?}: 1-{} of letters, digits, '-', '_', '.', ':'",
                limits::MAX_ROLE_LEN
            )));
        }
    }
    Ok(())
}

async fn derive_blocking(
    password: Zeroizing<String>,
    salt: String,
    params: Argon2Params,
) -> Result<SecretKey, KdcError> {
    tokio::task::spawn_blocking(move || derive_password_key(password.as_bytes(), &salt, params))
        .await
        .map_err(|_| KdcError::Internal("key derivation task failed"))?
        .map_err(|_| KdcError::Internal("key derivation failed"))
}

impl Kdc {
    /// Initialises an empty store: realm, signing key, `krbtgt/REALM`,
    /// `kadmin/admin` and the bootstrap administrator (`admin`, role `admin`),
    /// whose password must pass the [`crate::password_policy`] like any
    /// user's.
    pub async fn initialize(
        store: &dyn PrincipalStore,
        master: &MasterKey,
        realm: &Realm,
        admin_password: Zeroizing<String>,
        now_secs: u64,
    ) -> Result<(), KdcError> {
        let signer = KdcSigningKey::generate();
        let signing_key = StoredSigningKey {
            kid: signer.kid().to_owned(),
            sealed: master.seal_key(&format!("signing#{}", signer.kid()), &SecretKey::from_bytes(*signer.seed()))?,
            created_at: now_secs,
            activates_at: now_secs,
            // The realm's first key: no other key could sign while it
            // waited for a publication, so none is waited for.
            published_at: Some(now_secs),
            retires_at: None,
        };
        let tgs = Self::prepare(master, service_spec(Principal::ticket_granting(realm)), now_secs).await?;
        let kadmin = Self::prepare(master, service_spec(Principal::admin_service(realm)), now_secs).await?;
        let admin_name =
            Principal::new(BOOTSTRAP_ADMIN, None, realm.clone()).map_err(|_| KdcError::Internal("admin name"))?;
        let admin = Self::prepare(
            master,
            PrincipalSpec {
                name: admin_name,
                credential: Credential::Password(admin_password),
                roles: vec![ADMIN_ROLE.to_owned()],
                max_life_secs: None,
                max_renew_secs: None,
            },
            now_secs,
        )
        .await?;
        let init = RealmInit { realm: realm.to_string(), signing_key, principals: vec![tgs, kadmin, admin] };
        store.initialize(&init).await.map_err(|e| match e {
            StoreError::AlreadyInitialized => KdcError::InvalidOperation("this data directory already holds a realm"),
            e => e.into(),
        })
    }

    /// Opens an initialised store; `now` starts the replay cache.
    pub async fn open(
        store: Arc<dyn PrincipalStore>,
        master: MasterKey,
        policy: Policy,
        throttle: ThrottlePolicy,
        now: kdc_proto::UnixMillis,
    ) -> Result<Self, KdcError> {
        let realm: Realm = store
            .realm()
            .await?
            .ok_or(KdcError::InvalidOperation("the data directory holds no realm: run `kdc init`"))?
            .parse()
            .map_err(|_| KdcError::Store(StoreError::Corrupt("realm")))?;
        let stored = store.signing_keys().await?;
        let signing = SigningKeys::load(&stored, &master, &policy, now.as_secs(), None)?;
        let tgs = store
            .principal_by_name(&Principal::ticket_granting(&realm).to_string())
            .await?
            .ok_or(KdcError::Store(StoreError::Corrupt("no ticket-granting principal")))?;
        let decoy_kvno = Kvno(u32::MAX);
        let decoy = StoredKey {
            kvno: decoy_kvno,
            sealed: master.seal_key(&key_owner(&tgs.id, decoy_kvno), &SecretKey::generate())?,
            password: None,
            created_at: now.as_secs(),
            expires_at: None,
        };
        Ok(Self {
            store,
            realm,
            master,
            signing: std::sync::RwLock::new(Arc::new(signing)),
            policy,
            replay: Arc::new(InMemoryReplayCache::new(REPLAY_CAPACITY, REPLAY_PER_PRINCIPAL, now)),
            replay_cache_url: None,
            throttle: Throttle::Local(PreAuthThrottle::new(throttle)),
            fake_key_secret: SecretKey::generate(),
            issued: IssuedCounters::default(),
            verified_tickets: auth_middleware::VerifiedTicketCache::new(100_000),
            refusals: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            challenges: std::sync::atomic::AtomicU64::new(0),
            decoy: (tgs.id, decoy),
        })
    }

    /// Shares the replay cache (authenticators of the TGS and renewal
    /// exchanges, pre-authentication timestamps, the admin API's
    /// authenticators) and the failed-pre-authentication throttle with every
    /// KDC instance configured with the same Redis (`--replay-cache-url`), so
    /// a request replayed at a sibling instance is refused, and a lock-out
    /// reached at one holds at all. Redis may be down now: what needs it
    /// fails closed (`503` + `Retry-After`) until it answers. Call before
    /// [`crate::http::AppState::new`], which builds the admin layer.
    pub async fn share_replay_cache(&mut self, url: &str) -> Result<(), KdcError> {
        let namespace = format!("kdc/{}", self.realm);
        self.share_replay_cache_as(url, &namespace).await
    }

    /// [`Self::share_replay_cache`] under another namespace than
    /// `kdc/<realm>` (tests that share one Redis keep apart so).
    pub async fn share_replay_cache_as(&mut self, url: &str, namespace: &str) -> Result<(), KdcError> {
        let bad_url = KdcError::InvalidOperation("--replay-cache-url is not a usable Redis URL");
        let config = auth_middleware::RedisReplayConfig {
            per_principal: REPLAY_PER_PRINCIPAL,
            max_window: std::time::Duration::from_secs(self.policy.max_skew_secs.saturating_mul(2)),
            ..auth_middleware::RedisReplayConfig::new(namespace)
        };
        let cache = auth_middleware::connect_redis_replay_cache(url, config).await.map_err(|_| bad_url)?;
        let throttle = crate::throttle_redis::SharedThrottle::new(url, namespace, self.throttle.policy().clone())
            .map_err(|_| KdcError::InvalidOperation("--replay-cache-url is not a usable Redis URL"))?;
        self.replay = cache;
        self.throttle = Throttle::Shared(throttle);
        self.replay_cache_url = Some(url.to_owned());
        Ok(())
    }

    /// The Redis URL of the shared replay cache, if one is configured.
    pub fn replay_cache_url(&self) -> Option<&str> {
        self.replay_cache_url.as_deref()
    }

    /// The realm.
    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    /// The ticket policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The published signing keys (`/.well-known/jwks.json`): every key not
    /// retired, the next one included, latest activation first.
    pub fn jwks(&self) -> JwkSet {
        self.signing_keys().jwks().clone()
    }

    /// The signing keys as last loaded.
    pub fn signing_keys(&self) -> Arc<SigningKeys> {
        self.signing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// For a serving KDC (only: it publishes what it loads): re-reads the
    /// signing keys from the store (a rotation made by another process),
    /// drops keys retired by `now_secs`, and records in the store that it
    /// publishes, from `now_secs`, any key no KDC published before, so that
    /// key signs only a publish floor later. Cheap when nothing changed: one
    /// small query. Returns whether the published set changed.
    pub async fn reload_signing_keys(&self, now_secs: u64) -> Result<bool, KdcError> {
        let before = self.signing_keys();
        let mut held = Arc::clone(&before);
        let stored = self.store.signing_keys().await?;
        if !held.is_current(&stored, now_secs) {
            held = self.replace_signing_keys(&stored, now_secs, &held)?;
        }
        // Recorded once the set holding them is served (above), never
        // before: a recorded publication must not precede the real one.
        let unpublished = held.unpublished();
        if !unpublished.is_empty() {
            self.store.record_signing_keys_published(&unpublished, now_secs).await?;
            // Another KDC may have recorded an earlier publication: use the
            // stored one, as every KDC on this store does.
            let stored = self.store.signing_keys().await?;
            held = self.replace_signing_keys(&stored, now_secs, &held)?;
        }
        Ok(held.jwks() != before.jwks())
    }

    /// Loads `stored` (reusing the keys `previous` holds) and serves it.
    fn replace_signing_keys(
        &self,
        stored: &[StoredSigningKey],
        now_secs: u64,
        previous: &SigningKeys,
    ) -> Result<Arc<SigningKeys>, KdcError> {
        let fresh = Arc::new(SigningKeys::load(stored, &self.master, &self.policy, now_secs, Some(previous))?);
        *self.signing.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Rotates the KDC's signing key: stores a new key that a serving KDC
    /// publishes from now on (or from when one starts) and that signs from
    /// `now_secs + publish_delay` (default
    /// [`signing_keys::DEFAULT_PUBLISH_DELAY_SECS`], never below
    /// [`signing_keys::publish_floor_secs`]), or a publish floor after a KDC
    /// first publishes it if that is later; and schedules the retirement of
    /// the key signing today once every ticket it can sign has expired. One
    /// rotation at a time: refused while a key does not sign yet.
    pub async fn rotate_signing_key(
        &self,
        publish_delay: Option<u64>,
        now_secs: u64,
    ) -> Result<SigningKeyRotation, RotationError> {
        let timings = KeyTimings::of(&self.policy);
        let floor = timings.publish_floor;
        let delay = match publish_delay {
            Some(d) if d < floor => return Err(RotationError::TooSoon { requested: d, floor }),
            Some(d) if d > signing_keys::MAX_PUBLISH_DELAY_SECS => {
                return Err(RotationError::TooLate { requested: d, max: signing_keys::MAX_PUBLISH_DELAY_SECS });
            }
            Some(d) => d,
            None => signing_keys::DEFAULT_PUBLISH_DELAY_SECS.max(floor),
        };
        let pending = |stored: &[StoredSigningKey]| {
            let schedule = Schedule::of(stored, timings);
            schedule.into_iter().find(|k| !k.retired_at(now_secs) && !k.signs_at(now_secs)).map(|k| {
                match k.signs_from {
                    Some(activates_at) => RotationError::Pending { kid: k.kid, activates_at },
                    None => {
                        RotationError::Unpublished { kid: k.kid, activates_at: k.activates_at, publish_floor: floor }
                    }
                }
            })
        };
        let stored = self.store.signing_keys().await.map_err(KdcError::from)?;
        if let Some(e) = pending(&stored) {
            return Err(e);
        }
        // What the store checks is still the latest when it writes.
        let latest_seen =
            stored.first().map(|k| k.kid.clone()).ok_or(KdcError::Store(StoreError::Corrupt("no signing key")))?;
        let schedule = Schedule::of(&stored, timings);
        let previous =
            signing_keys::active_index(&schedule, now_secs).and_then(|i| schedule.get(i)).map(|s| s.kid.clone());
        let key = KdcSigningKey::generate();
        let activates_at = now_secs.saturating_add(delay);
        // The earliest: the schedule raises it if the key signs later.
        let previous_retires_at = activates_at.saturating_add(timings.retain);
        let row = StoredSigningKey {
            kid: key.kid().to_owned(),
            sealed: self
                .master
                .seal_key(&format!("signing#{}", key.kid()), &SecretKey::from_bytes(*key.seed()))
                .map_err(KdcError::from)?,
            created_at: now_secs,
            activates_at,
            // Recorded by the first KDC that serves it.
            published_at: None,
            retires_at: None,
        };
        match self.store.add_signing_key(&row, previous_retires_at, &latest_seen).await {
            Ok(()) => {}
            // Another rotation got in between the check and the write.
            Err(StoreError::AlreadyExists) => {
                let stored = self.store.signing_keys().await.map_err(KdcError::from)?;
                return Err(pending(&stored).unwrap_or(RotationError::Kdc(KdcError::InvalidOperation(
                    "a concurrent signing-key rotation happened; retry",
                ))));
            }
            Err(e) => return Err(KdcError::from(e).into()),
        }
        Ok(SigningKeyRotation { kid: row.kid, activates_at, previous, previous_retires_at })
    }

    /// Every stored signing key with its state at `now_secs`, latest
    /// activation first, read from the store (not from this KDC's copy).
    pub async fn signing_key_states(&self, now_secs: u64) -> Result<Vec<(Schedule, KeyState)>, KdcError> {
        let stored = self.store.signing_keys().await?;
        let schedule = Schedule::of(&stored, KeyTimings::of(&self.policy));
        let states = signing_keys::states(&schedule, now_secs);
        Ok(schedule.into_iter().zip(states).collect())
    }

    /// How many tickets each exchange issued since start.
    pub fn issued(&self) -> &IssuedCounters {
        &self.issued
    }

    /// Counts a refused exchange (for [`Kdc::stats`]) and hands it back.
    pub fn refused(&self, e: KdcError) -> KdcError {
        if matches!(e, KdcError::PreAuthRequired(_)) {
            self.challenges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            let kind = e.problem_kind().slug();
            *self.refusals.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_insert(0) += 1;
        }
        e
    }

    /// A snapshot of the KDC's counters and cache sizes (for `GET /metrics`,
    /// which [`crate::metrics`] renders).
    pub fn stats(&self) -> KdcStats {
        use std::sync::atomic::Ordering::Relaxed;
        KdcStats {
            issued_initial: self.issued.initial.load(Relaxed),
            issued_service: self.issued.service.load(Relaxed),
            renewed: self.issued.renewed.load(Relaxed),
            preauth_challenges: self.challenges.load(Relaxed),
            refusals: self.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            replay_cache_entries: self.replay.len() as u64,
            replay_cache_unavailable: self.replay.unavailable_count() + self.throttle.unavailable_count(),
            verified_ticket_cache_entries: self.verified_tickets.len() as u64,
            throttle_entries: self.throttle.tracked() as u64,
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn PrincipalStore {
        self.store.as_ref()
    }

    /// The key that signs tickets issued at `now_secs`.
    pub(crate) fn signer_at(&self, now_secs: u64) -> Result<Arc<KdcSigningKey>, KdcError> {
        self.signing_keys().signer_at(now_secs).cloned().ok_or(KdcError::Internal("no live signing key"))
    }

    /// Verifies the KDC's signature on presented tickets: the published keys.
    pub(crate) fn verifier(&self) -> Arc<KdcVerifier> {
        self.signing_keys().verifier().clone()
    }

    /// Parses a principal name, filling in this realm for a bare name, and
    /// refuses other realms.
    pub fn principal_name(&self, name: &str) -> Result<Principal, KdcError> {
        let p =
            Principal::parse_with_default_realm(name, &self.realm).map_err(|e| KdcError::Malformed(e.to_string()))?;
        if p.realm() != &self.realm {
            return Err(KdcError::WrongRealm);
        }
        Ok(p)
    }

    async fn prepare(master: &MasterKey, spec: PrincipalSpec, now_secs: u64) -> Result<NewPrincipal, KdcError> {
        check_roles(&spec.roles)?;
        let id = new_principal_id();
        let (kind, key, password) = match spec.credential {
            Credential::Password(pw) => {
                crate::password_policy::check(&pw, &spec.name)?;
                let salt = password_salt(&spec.name);
                let params = Argon2Params::DEFAULT;
                let key = derive_blocking(pw, salt.clone(), params).await?;
                (PrincipalKind::User, key, Some(PasswordDerivation { salt, params }))
            }
            Credential::Random => (PrincipalKind::Service, SecretKey::generate(), None),
        };
        Ok(NewPrincipal {
            key: StoredKey {
                kvno: Kvno(1),
                sealed: master.seal_key(&key_owner(&id, Kvno(1)), &key)?,
                password,
                created_at: now_secs,
                expires_at: None,
            },
            record: PrincipalRecord {
                id,
                name: spec.name.to_string(),
                kind,
                disabled: false,
                roles: spec.roles,
                max_life_secs: spec.max_life_secs,
                max_renew_secs: spec.max_renew_secs,
                created_at: now_secs,
            },
        })
    }

    /// Creates a principal; durable when it returns. A user's password
    /// must pass the [`crate::password_policy`].
    pub async fn create_principal(&self, spec: PrincipalSpec, now_secs: u64) -> Result<PrincipalRecord, KdcError> {
        if spec.name.realm() != &self.realm {
            return Err(KdcError::WrongRealm);
        }
        let new = Self::prepare(&self.master, spec, now_secs).await?;
        self.store.create_principal(&new).await.map_err(|e| match e {
            StoreError::AlreadyExists => KdcError::PrincipalExists,
            e => e.into(),
        })?;
        Ok(new.record)
    }

    /// Looks a principal up by name.
    pub async fn find(&self, name: &Principal) -> Result<Option<PrincipalRecord>, KdcError> {
        Ok(self.store.principal_by_name(&name.to_string()).await?)
    }

    /// Looks a principal up by name, or [`KdcError::PrincipalNotFound`].
    pub async fn get(&self, name: &Principal) -> Result<PrincipalRecord, KdcError> {
        self.find(name).await?.ok_or(KdcError::PrincipalNotFound)
    }

    /// Opens one stored key version.
    pub(crate) fn open_key(&self, principal_id: &str, k: &StoredKey) -> Result<LongTermKey, KdcError> {
        let key = self.master.open_key(&key_owner(principal_id, k.kvno), &k.sealed)?;
        Ok(LongTermKey { kvno: k.kvno, key })
    }

    /// Live key versions of a principal at `now`, newest first.
    pub(crate) async fn live_keys(&self, rec: &PrincipalRecord, now_secs: u64) -> Result<Vec<StoredKey>, KdcError> {
        Ok(self.store.live_keys(&rec.id, now_secs).await?)
    }

    /// The current key of a principal.
    pub(crate) async fn current_key(
        &self,
        rec: &PrincipalRecord,
        now_secs: u64,
    ) -> Result<(LongTermKey, StoredKey), KdcError> {
        let keys = self.live_keys(rec, now_secs).await?;
        let newest =
            keys.into_iter().next().ok_or(KdcError::Store(StoreError::Corrupt("principal without a live key")))?;
        Ok((self.open_key(&rec.id, &newest)?, newest))
    }

    /// Rotates a principal's key: services get a new random key, users a key
    /// from `new_password` (required for them, and held to the
    /// [`crate::password_policy`]). Previous versions keep working for the
    /// policy's grace period.
    pub async fn rotate(
        &self,
        name: &Principal,
        new_password: Option<Zeroizing<String>>,
        now_secs: u64,
    ) -> Result<Kvno, KdcError> {
        let rec = self.get(name).await?;
        let (_, current) = self.current_key(&rec, now_secs).await?;
        let next = Kvno(current.kvno.0.checked_add(1).ok_or(KdcError::Internal("kvno overflow"))?);
        let (key, password) = match (rec.kind, new_password) {
            (PrincipalKind::Service, None) => (SecretKey::generate(), None),
            (PrincipalKind::User, Some(pw)) => {
                crate::password_policy::check(&pw, name)?;
                let salt = password_salt(name);
                let params = current.password.as_ref().map(|p| p.params).unwrap_or_default();
                (derive_blocking(pw, salt.clone(), params).await?, Some(PasswordDerivation { salt, params }))
            }
            (PrincipalKind::Service, Some(_)) => {
                return Err(KdcError::InvalidOperation("service principals have random keys, never passwords"));
            }
            (PrincipalKind::User, None) => {
                return Err(KdcError::InvalidOperation("rotating a user's key needs a new password"));
            }
        };
        let stored = StoredKey {
            kvno: next,
            sealed: self.master.seal_key(&key_owner(&rec.id, next), &key)?,
            password,
            created_at: now_secs,
            expires_at: None,
        };
        let retire_at = now_secs.saturating_add(self.policy.key_grace_secs);
        self.store.rotate_key(&rec.id, &stored, retire_at).await.map_err(|e| match e {
            StoreError::AlreadyExists => KdcError::InvalidOperation("a concurrent rotation happened; retry"),
            e => e.into(),
        })?;
        Ok(next)
    }

    /// A keytab with every live key version of a service principal.
    pub async fn keytab(&self, name: &Principal, now_secs: u64) -> Result<Keytab, KdcError> {
        let rec = self.get(name).await?;
        if rec.kind != PrincipalKind::Service {
            return Err(KdcError::InvalidOperation("keytabs are for service principals only"));
        }
        let mut keys = Vec::new();
        for k in self.live_keys(&rec, now_secs).await? {
            let lt = self.open_key(&rec.id, &k)?;
            keys.push(KeytabEntry { kvno: lt.kvno, key: lt.key, expires_at: k.expires_at });
        }
        Ok(Keytab { version: 1, principal: name.clone(), keys })
    }
}

fn service_spec(name: Principal) -> PrincipalSpec {
    PrincipalSpec { name, credential: Credential::Random, roles: vec![], max_life_secs: None, max_renew_secs: None }
}
