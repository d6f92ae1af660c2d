//! The principal store: principals, their key versions and the KDC's signing
//! keys. A trait so several backends can serve it (SQLite is the embedded
//! default, PostgreSQL serves several KDCs at once); key material arrives
//! here already sealed under the master key.

#[cfg(test)]
mod conformance;
pub(crate) mod memory;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use kdc_proto::{Argon2Params, Kvno};
use thiserror::Error;

pub use memory::MemoryStore;
pub use postgres::{DatabaseUrl, PostgresStore};
pub use sqlite::SqliteStore;

/// What can go wrong in a store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A principal with that name already exists.
    #[error("a principal with that name already exists")]
    AlreadyExists,
    /// No principal with that name.
    #[error("no such principal")]
    NotFound,
    /// The realm has already been initialised.
    #[error("this data directory already holds a realm")]
    AlreadyInitialized,
    /// The stored data is not what this version expects.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The database failed. The text is the backend's message, which names
    /// no secret (never a connection URL or a bound value).
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached now (connection refused, a connect or
    /// acquire timeout, a dropped connection): worth retrying later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database file could not be created.
    #[error("database file: {0}")]
    Io(std::io::Error),
    /// The database was written by a newer version of the KDC (its schema
    /// has changes this one does not know).
    #[error("the database has schema version {found}; this kdc knows up to {supported}: use a newer kdc")]
    NewerSchema {
        /// The database's schema version (SQLite: its `user_version`).
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
}

/// Whether a principal is a person (password-derived key) or a service
/// (random key only; the only kind tickets are issued for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// Password-derived key.
    User,
    /// Random key.
    Service,
}

impl PrincipalKind {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "user" => Ok(PrincipalKind::User),
            "service" => Ok(PrincipalKind::Service),
            _ => Err(StoreError::Corrupt("principal kind")),
        }
    }
}

/// A stored principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// Immutable random id, never reused: tickets carry it.
    pub id: String,
    /// Full name, `name[/instance]@REALM`.
    pub name: String,
    /// User or service.
    pub kind: PrincipalKind,
    /// Disabled principals get no tickets.
    pub disabled: bool,
    /// Authorization data copied into its tickets.
    pub roles: Vec<String>,
    /// Per-principal override of the maximum ticket lifetime (seconds).
    pub max_life_secs: Option<u64>,
    /// Per-principal override of the maximum renewable lifetime (seconds).
    pub max_renew_secs: Option<u64>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
}

/// One stored key version, sealed under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key version.
    pub kvno: Kvno,
    /// The key, sealed (`key-at-rest`, kid `PRINCIPAL_ID#KVNO`).
    pub sealed: String,
    /// For password keys: the salt and cost it was derived with.
    pub password: Option<PasswordDerivation>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// After this (Unix seconds) the version is dead; `None` for the current one.
    pub expires_at: Option<u64>,
}

/// How a password key was derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordDerivation {
    /// Argon2id salt.
    pub salt: String,
    /// Argon2id cost.
    pub params: Argon2Params,
}

/// A new principal with its first key.
#[derive(Debug, Clone)]
pub struct NewPrincipal {
    /// The record.
    pub record: PrincipalRecord,
    /// Its first key (kvno 1).
    pub key: StoredKey,
}

/// A change to a principal's attributes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalUpdate {
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// Replace the roles.
    pub roles: Option<Vec<String>>,
    /// Set (`Some(Some)`) or clear (`Some(None)`) the lifetime override.
    pub max_life_secs: Option<Option<u64>>,
    /// Set or clear the renewable-lifetime override.
    pub max_renew_secs: Option<Option<u64>>,
}

impl PrincipalUpdate {
    /// Applies the change to `record` (what every backend does before it
    /// writes the record back).
    pub fn apply_to(&self, record: &mut PrincipalRecord) {
        if let Some(d) = self.disabled {
            record.disabled = d;
        }
        if let Some(roles) = &self.roles {
            record.roles.clone_from(roles);
        }
        if let Some(l) = self.max_life_secs {
            record.max_life_secs = l;
        }
        if let Some(r) = self.max_renew_secs {
            record.max_renew_secs = r;
        }
    }
}

/// One of the KDC's signing keys, sealed under the master key, with its
/// lifecycle: published by a serving KDC from `published_at`, signing from
/// `activates_at` but never before the publish floor has passed since
/// `published_at`, published until `retires_at` (see
/// [`crate::signing_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// Its key id.
    pub kid: String,
    /// The Ed25519 seed, sealed (`key-at-rest`, kid `signing#KID`).
    pub sealed: String,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// When the KDC starts signing with it at the earliest (Unix seconds).
    /// Keys stored before rotation existed activate at their creation.
    pub activates_at: u64,
    /// When a serving KDC first published it in its JWK set (Unix seconds),
    /// set once by the first KDC that loads it
    /// ([`PrincipalStore::record_signing_keys_published`]). `None` until then:
    /// no service can have it, so it signs nothing. A realm's first key
    /// (nothing else could sign) and keys stored before this was recorded
    /// count as published at their creation.
    pub published_at: Option<u64>,
    /// After this (Unix seconds) it is no longer published: every ticket it
    /// signed has expired. `None` until a successor is stored.
    pub retires_at: Option<u64>,
}

/// Everything `kdc init` writes, in one transaction.
#[derive(Debug, Clone)]
pub struct RealmInit {
    /// The realm name.
    pub realm: String,
    /// The first signing key.
    pub signing_key: StoredSigningKey,
    /// The built-in principals (TGS, admin service, bootstrap admin).
    pub principals: Vec<NewPrincipal>,
}

/// What a change announced by [`PrincipalStore::changes`] touched: the
/// in-memory copies a KDC keeps of each re-read it when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeTopic {
    /// The signing keys (a rotation, a first publication).
    SigningKeys,
    /// Some principal's key versions (a rotation, a deletion).
    PrincipalKeys,
}

/// The principal store. Every write is durable before it returns.
#[async_trait]
pub trait PrincipalStore: Send + Sync + 'static {
    /// The realm, if the store has been initialised.
    async fn realm(&self) -> Result<Option<String>, StoreError>;
    /// Initialises an empty store; refuses one that already holds a realm.
    async fn initialize(&self, init: &RealmInit) -> Result<(), StoreError>;
    /// Adds a principal and its first key.
    async fn create_principal(&self, new: &NewPrincipal) -> Result<(), StoreError>;
    /// Looks a principal up by full name.
    async fn principal_by_name(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError>;
    /// Looks a principal up by immutable id.
    async fn principal_by_id(&self, id: &str) -> Result<Option<PrincipalRecord>, StoreError>;
    /// Its key versions still alive at `now` (Unix seconds), newest first.
    async fn live_keys(&self, principal_id: &str, now: u64) -> Result<Vec<StoredKey>, StoreError>;
    /// Principals ordered by name, those after `after`, at most `limit`.
    async fn list_principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<PrincipalRecord>, StoreError>;
    /// Applies `update` to the named principal.
    async fn update_principal(&self, name: &str, update: &PrincipalUpdate) -> Result<(), StoreError>;
    /// Deletes the named principal and its keys.
    async fn delete_principal(&self, name: &str) -> Result<(), StoreError>;
    /// Rotation: gives every live version without an expiry the expiry
    /// `retire_at`, and adds `key` as the next version, atomically.
    /// `key.kvno` must be one more than the highest stored version; if a
    /// concurrent rotation took it, [`StoreError::AlreadyExists`].
    async fn rotate_key(&self, principal_id: &str, key: &StoredKey, retire_at: u64) -> Result<(), StoreError>;
    /// All signing keys, latest activation first (retired ones included).
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
    /// Signing-key rotation: gives every key without a retirement time the
    /// retirement `retire_previous_at`, and adds `key`, atomically, provided
    /// the latest stored key (as [`PrincipalStore::signing_keys`] orders
    /// them) is still `latest_seen`: the caller checked that it signs
    /// already, so no rotation is pending. If another rotation got in since,
    /// nothing is written and the answer is [`StoreError::AlreadyExists`].
    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        retire_previous_at: u64,
        latest_seen: &str,
    ) -> Result<(), StoreError>;
    /// Records that a serving KDC publishes the signing keys `kids` from
    /// `now` on: sets `published_at` to `now` on those that have none yet,
    /// atomically. Only the first KDC to publish a key sets it; a later one,
    /// or another KDC on the same store, changes nothing. Unknown ids are
    /// ignored.
    async fn record_signing_keys_published(&self, kids: &[String], now: u64) -> Result<(), StoreError>;
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A counter that increases whenever `topic` changes in the store, by
    /// any KDC or `kdc` command on it, so a serving KDC re-reads what it
    /// keeps in memory at once instead of at its next periodic reload.
    /// `None` when the backend cannot announce changes (then the periodic
    /// reload is all there is). Call it inside a Tokio runtime.
    fn changes(&self, topic: ChangeTopic) -> Option<tokio::sync::watch::Receiver<u64>> {
        let _ = topic;
        None
    }
}

/// Waits for the next tick of `ticks`, or for `changes` (from
/// [`PrincipalStore::changes`]) to announce a change, whichever is first:
/// how a serving KDC's reload loops hear of a write by another KDC at once
/// and still reload periodically (for a store that announces nothing, or a
/// `kdc` command on SQLite).
pub(crate) async fn tick_or_change(
    ticks: &mut tokio::time::Interval,
    changes: &mut Option<tokio::sync::watch::Receiver<u64>>,
) {
    let changed = async {
        match changes.as_mut() {
            Some(rx) => rx.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ticks.tick() => {}
        open = changed => {
            if !open {
                // The feed ended (the store is going): ticks only.
                *changes = None;
            }
        }
    }
}
