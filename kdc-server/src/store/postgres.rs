//! The shared store: one PostgreSQL database that several KDCs (and the
//! `kdc` command) use at once. The same contract as the SQLite store: every
//! write is one transaction, committed (and so, with PostgreSQL's default
//! `synchronous_commit = on`, flushed to its write-ahead log) before it
//! returns; the compare-and-set writes ([`PrincipalStore::rotate_key`],
//! [`PrincipalStore::add_signing_key`],
//! [`PrincipalStore::record_signing_keys_published`]) hold a lock for their
//! check and write, so two KDCs racing get one winner.
//!
//! The schema is versioned: the migrations not yet applied run at open, in
//! one transaction under an advisory lock, so KDCs starting together migrate
//! once; a database a newer KDC migrated is refused
//! ([`StoreError::NewerSchema`]).
//!
//! Writes that change what a serving KDC keeps in memory (signing keys,
//! key versions) announce themselves with `NOTIFY` on [`CHANNEL`], sent by
//! PostgreSQL at commit; [`PrincipalStore::changes`] turns that into a
//! counter every KDC on the database watches.

use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use kdc_proto::{Argon2Params, Kvno};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::{
    ChangeTopic, NewPrincipal, PasswordDerivation, PrincipalKind, PrincipalRecord, PrincipalStore, PrincipalUpdate,
    RealmInit, StoreError, StoredKey, StoredSigningKey,
};

/// The `NOTIFY` channel on which writes announce what they changed.
pub(crate) const CHANNEL: &str = "kdc_store_changes";

/// Most connections one KDC opens (the change listener holds one of them).
pub(crate) const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a connection, opening one included, before
/// the store answers [`StoreError::Unavailable`].
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The server-side limit on one statement (and on waiting for a lock).
const STATEMENT_TIMEOUT: &str = "30s";
/// Idle connections are closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Advisory-lock keys (any constants no other application on the database
/// uses; these spell "kdcmigr" and "kdcsign").
const MIGRATION_LOCK: i64 = 0x006b_6463_6d69_6772;
const SIGNING_KEY_LOCK: i64 = 0x006b_6463_7369_676e;

/// Schema versions, in order: the database's `kdc_schema.version` counts
/// those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's version 2 (signing-key rotation and first
    // publication included).
    r#"
CREATE TABLE realm (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    roles TEXT[] NOT NULL DEFAULT '{}',
    max_life_secs BIGINT,
    max_renew_secs BIGINT,
    created_at BIGINT NOT NULL
);
CREATE TABLE principal_keys (
    principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    kvno BIGINT NOT NULL,
    sealed TEXT NOT NULL,
    salt TEXT,
    argon2_m BIGINT,
    argon2_t BIGINT,
    argon2_p BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (principal_id, kvno)
);
CREATE TABLE signing_keys (
    kid TEXT COLLATE "C" PRIMARY KEY,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activates_at BIGINT NOT NULL,
    published_at BIGINT,
    retires_at BIGINT
);
"#,
];

/// The newest schema version this build knows.
pub(crate) fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// A PostgreSQL connection URL (`postgres://user:password@host:port/db`). It
/// may hold a password, so it prints (`Display`, `Debug`) with the password
/// replaced by `***`, and is wiped from memory when dropped.
#[derive(Clone)]
pub struct DatabaseUrl(Zeroizing<String>);

impl DatabaseUrl {
    /// Checks the scheme (`postgres://` or `postgresql://`) and that the
    /// rest parses as connection options; the error never repeats the URL.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let url = Self(Zeroizing::new(url.trim().to_owned()));
        url.options()?;
        Ok(url)
    }

    /// The connection options it names.
    fn options(&self) -> Result<PgConnectOptions, StoreError> {
        let url: &str = &self.0;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Database(
                "a database URL starts with postgres:// (the only database besides the built-in SQLite)".to_owned(),
            ));
        }
        PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Database("the database URL does not parse as PostgreSQL options".to_owned()))
    }

    /// The URL with its password (in the user part or a `password=`
    /// parameter) replaced by `***`: what logs and messages show.
    pub fn redacted(&self) -> String {
        let url: &str = &self.0;
        let Some((scheme, rest)) = url.split_once("://") else { return "***".to_owned() };
        // The user part ends at the last `@` anywhere, not at the first
        // `/` or `?`: a password may hold either unencoded (which libpq
        // accepts), and must not then be taken for a path or a query. An `@`
        // further on (in a database name) only hides more than needed.
        let (authority, tail) = match rest.rsplit_once('@') {
            Some((userinfo, after)) => {
                let host_end = after.find(['/', '?']).unwrap_or(after.len());
                let (host, tail) = after.split_at(host_end);
                let authority = match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                };
                (authority, tail)
            }
            None => {
                let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(authority_end);
                (authority.to_owned(), tail)
            }
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        format!("{scheme}://{authority}{tail}")
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    /// Any string: checked when the store opens, so that a parse error of
    /// the configuration file (which quotes the offending line) never
    /// shows it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Zeroizing::new(String::deserialize(d)?.trim().to_owned())))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// A sqlx error as a [`StoreError`], with nothing of the URL or of bound
/// values in it: the server's message (which names constraints, not
/// values; its `detail`, which may, is dropped), or what kind of failure.
fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::AlreadyExists,
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // Class 08 (connection), 53 (resources), 57P (shutdown): transient.
            if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
                StoreError::Unavailable(format!("{} ({code})", d.message()))
            } else {
                StoreError::Database(format!("{} ({code})", d.message()))
            }
        }
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable(format!("no connection within {} s", ACQUIRE_TIMEOUT.as_secs()))
        }
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("connection: {}", e.kind())),
        sqlx::Error::Tls(_) => StoreError::Unavailable("TLS handshake with the database failed".to_owned()),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable("the connection pool is closed".to_owned())
        }
        sqlx::Error::Configuration(_) => StoreError::Database("invalid database connection options".to_owned()),
        sqlx::Error::Protocol(_) => StoreError::Unavailable("protocol error talking to the database".to_owned()),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt("a stored value does not decode")
        }
        _ => StoreError::Database("database operation failed".to_owned()),
    }
}

/// Cancels the change listener when the store goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The counters [`PrincipalStore::changes`] hands out, fed by one `LISTEN`
/// task started at the first call.
#[derive(Debug)]
struct ChangeFeed {
    signing_keys: Arc<watch::Sender<u64>>,
    principal_keys: Arc<watch::Sender<u64>>,
    listener: OnceLock<AbortOnDrop>,
}

/// The PostgreSQL principal store.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    feed: ChangeFeed,
}

impl PostgresStore {
    /// Connects (a pool of at most [`MAX_CONNECTIONS`], each query waiting
    /// at most [`ACQUIRE_TIMEOUT`] for one) and brings the schema up to
    /// date, refusing one newer than this build knows.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let options = url
            .options()?
            .application_name("kdc")
            .options([("statement_timeout", STATEMENT_TIMEOUT), ("lock_timeout", STATEMENT_TIMEOUT)])
            // Durable at commit whatever the server's default.
            .options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        migrate(&pool).await?;
        Ok(Self {
            pool,
            feed: ChangeFeed {
                signing_keys: Arc::new(watch::Sender::new(0)),
                principal_keys: Arc::new(watch::Sender::new(0)),
                listener: OnceLock::new(),
            },
        })
    }

    /// The schema version the database holds (0 before any migration).
    pub async fn stored_schema_version(&self) -> Result<i64, StoreError> {
        stored_version(&mut *self.pool.acquire().await.map_err(db_error)?).await
    }

    /// The pool, for tests that reach around the store.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(db_error)
    }
}

async fn stored_version(c: &mut sqlx::PgConnection) -> Result<i64, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('kdc_schema') IS NOT NULL")
        .fetch_one(&mut *c)
        .await
        .map_err(db_error)?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = sqlx::query_scalar("SELECT version FROM kdc_schema WHERE id = 1")
        .fetch_optional(&mut *c)
        .await
        .map_err(db_error)?;
    Ok(v.unwrap_or(0))
}

/// Applies the migrations not yet applied, in one transaction under an
/// advisory lock: a KDC starting at the same time waits, then finds the
/// schema current.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let latest = schema_version();
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(db_error)?;
    let version = stored_version(&mut tx).await?;
    if version > latest {
        return Err(StoreError::NewerSchema { found: version, supported: latest });
    }
    if version == latest {
        return Ok(());
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS kdc_schema (id SMALLINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    for m in MIGRATIONS.iter().skip(usize::try_from(version).unwrap_or(0)) {
        sqlx::raw_sql(*m).execute(&mut *tx).await.map_err(db_error)?;
    }
    sqlx::query(
        "INSERT INTO kdc_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
    )
    .bind(latest)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(())
}

/// Keeps a `LISTEN` on [`CHANNEL`] and counts what it hears. When the
/// connection is lost, notifications sent meanwhile are lost too: once it
/// listens again, both counters move, so every watcher re-reads.
async fn listen(pool: PgPool, signing_keys: Arc<watch::Sender<u64>>, principal_keys: Arc<watch::Sender<u64>>) {
    let bump = |s: &watch::Sender<u64>| s.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %db_error(e), "cannot listen for store changes; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %db_error(e), "cannot listen for store changes; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Listening from now: anything written before is re-read.
        bump(&signing_keys);
        bump(&principal_keys);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match n.payload() {
                    "signing_keys" => bump(&signing_keys),
                    "principal_keys" => bump(&principal_keys),
                    _ => {
                        bump(&signing_keys);
                        bump(&principal_keys);
                    }
                },
                // Lost and listening again (the listener reconnects
                // before it says so): what was missed is re-read.
                Ok(None) => {
                    tracing::warn!("the store-change listener reconnected");
                    bump(&signing_keys);
                    bump(&principal_keys);
                }
                Err(e) => {
                    tracing::warn!(error = %db_error(e), "the store-change listener failed; reconnecting in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Announces a change to every KDC on the database, at the commit of `tx`.
async fn notify(tx: &mut Transaction<'static, Postgres>, topic: ChangeTopic) -> Result<(), StoreError> {
    let payload = match topic {
        ChangeTopic::SigningKeys => "signing_keys",
        ChangeTopic::PrincipalKeys => "principal_keys",
    };
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&mut **tx).await.map_err(db_error)?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const PRINCIPAL_SELECT: &str =
    "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals";

fn record(row: &PgRow) -> Result<PrincipalRecord, StoreError> {
    let get = |e: sqlx::Error| db_error(e);
    let kind: String = row.try_get("kind").map_err(get)?;
    Ok(PrincipalRecord {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        kind: PrincipalKind::parse(&kind)?,
        disabled: row.try_get("disabled").map_err(get)?,
        roles: row.try_get("roles").map_err(get)?,
        max_life_secs: row.try_get::<Option<i64>, _>("max_life_secs").map_err(get)?.map(to_u64),
        max_renew_secs: row.try_get::<Option<i64>, _>("max_renew_secs").map_err(get)?.map(to_u64),
        created_at: to_u64(row.try_get("created_at").map_err(get)?),
    })
}

fn key(row: &PgRow) -> Result<StoredKey, StoreError> {
    let get = |e: sqlx::Error| db_error(e);
    let salt: Option<String> = row.try_get("salt").map_err(get)?;
    let param = |c: &str| -> Result<Option<u32>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(c).map_err(get)?.and_then(|v| u32::try_from(v).ok()))
    };
    let password = match (salt, param("argon2_m")?, param("argon2_t")?, param("argon2_p")?) {
        (Some(salt), Some(m_kib), Some(t), Some(p)) => {
            Some(PasswordDerivation { salt, params: Argon2Params { m_kib, t, p } })
        }
        (None, _, _, _) => None,
        _ => return Err(StoreError::Corrupt("argon2 parameters")),
    };
    let kvno = u32::try_from(row.try_get::<i64, _>("kvno").map_err(get)?).map_err(|_| StoreError::Corrupt("kvno"))?;
    Ok(StoredKey {
        kvno: Kvno(kvno),
        sealed: row.try_get("sealed").map_err(get)?,
        password,
        created_at: to_u64(row.try_get("created_at").map_err(get)?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at").map_err(get)?.map(to_u64),
    })
}

fn signing_key(row: &PgRow) -> Result<StoredSigningKey, StoreError> {
    let get = |e: sqlx::Error| db_error(e);
    Ok(StoredSigningKey {
        kid: row.try_get("kid").map_err(get)?,
        sealed: row.try_get("sealed").map_err(get)?,
        created_at: to_u64(row.try_get("created_at").map_err(get)?),
        activates_at: to_u64(row.try_get("activates_at").map_err(get)?),
        published_at: row.try_get::<Option<i64>, _>("published_at").map_err(get)?.map(to_u64),
        retires_at: row.try_get::<Option<i64>, _>("retires_at").map_err(get)?.map(to_u64),
    })
}

async fn insert_principal(tx: &mut Transaction<'static, Postgres>, new: &NewPrincipal) -> Result<(), StoreError> {
    let r = &new.record;
    sqlx::query(
        "INSERT INTO principals (id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(r.kind.as_str())
    .bind(r.disabled)
    .bind(&r.roles)
    .bind(r.max_life_secs.map(to_i64))
    .bind(r.max_renew_secs.map(to_i64))
    .bind(to_i64(r.created_at))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    insert_key(tx, &r.id, &new.key).await
}

async fn insert_key(
    tx: &mut Transaction<'static, Postgres>,
    principal_id: &str,
    k: &StoredKey,
) -> Result<(), StoreError> {
    let pw = k.password.as_ref();
    sqlx::query(
        "INSERT INTO principal_keys (principal_id, kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(principal_id)
    .bind(i64::from(k.kvno.0))
    .bind(&k.sealed)
    .bind(pw.map(|p| p.salt.clone()))
    .bind(pw.map(|p| i64::from(p.params.m_kib)))
    .bind(pw.map(|p| i64::from(p.params.t)))
    .bind(pw.map(|p| i64::from(p.params.p)))
    .bind(to_i64(k.created_at))
    .bind(k.expires_at.map(to_i64))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_signing_key(tx: &mut Transaction<'static, Postgres>, k: &StoredSigningKey) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, sealed, created_at, activates_at, published_at, retires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&k.kid)
    .bind(&k.sealed)
    .bind(to_i64(k.created_at))
    .bind(to_i64(k.activates_at))
    .bind(k.published_at.map(to_i64))
    .bind(k.retires_at.map(to_i64))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl PrincipalStore for PostgresStore {
    async fn realm(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT name FROM realm WHERE id = 1").fetch_optional(&self.pool).await.map_err(db_error)
    }

    async fn initialize(&self, init: &RealmInit) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // The realm row first: a second `kdc init` racing this one waits
        // on it, then inserts nothing.
        let inserted =
            sqlx::query("INSERT INTO realm (id, name, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(&init.realm)
                .bind(to_i64(init.signing_key.created_at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyInitialized);
        }
        insert_signing_key(&mut tx, &init.signing_key).await?;
        for p in &init.principals {
            insert_principal(&mut tx, p).await?;
        }
        notify(&mut tx, ChangeTopic::SigningKeys).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn create_principal(&self, new: &NewPrincipal) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_principal(&mut tx, new).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn principal_by_name(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        const SQL: &str = "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at \
                           FROM principals WHERE name = $1";
        debug_assert!(SQL.starts_with(PRINCIPAL_SELECT));
        let row = sqlx::query(SQL).bind(name).fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref().map(record).transpose()
    }

    async fn principal_by_id(&self, id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        const SQL: &str = "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at \
                           FROM principals WHERE id = $1";
        debug_assert!(SQL.starts_with(PRINCIPAL_SELECT));
        let row = sqlx::query(SQL).bind(id).fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref().map(record).transpose()
    }

    async fn live_keys(&self, principal_id: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at FROM principal_keys \
             WHERE principal_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY kvno DESC",
        )
        .bind(principal_id)
        .bind(to_i64(now))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(key).collect()
    }

    async fn list_principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<PrincipalRecord>, StoreError> {
        // Names compare bytewise (the column's collation is "C"), as SQLite
        // and the memory store order them.
        let rows = sqlx::query(
            "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals \
             WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(record).collect()
    }

    async fn update_principal(&self, name: &str, u: &PrincipalUpdate) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Locked, so concurrent updates of different fields both land.
        let row = sqlx::query(
            "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals \
             WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut r = record(&row.ok_or(StoreError::NotFound)?)?;
        u.apply_to(&mut r);
        sqlx::query(
            "UPDATE principals SET disabled = $1, roles = $2, max_life_secs = $3, max_renew_secs = $4 WHERE id = $5",
        )
        .bind(r.disabled)
        .bind(&r.roles)
        .bind(r.max_life_secs.map(to_i64))
        .bind(r.max_renew_secs.map(to_i64))
        .bind(&r.id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn delete_principal(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM principals WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        notify(&mut tx, ChangeTopic::PrincipalKeys).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn rotate_key(&self, principal_id: &str, k: &StoredKey, retire_at: u64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // The principal's row locked: one rotation of it at a time, and the
        // highest version read below stays the highest until commit.
        let exists = sqlx::query("SELECT 1 FROM principals WHERE id = $1 FOR UPDATE")
            .bind(principal_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(kvno) FROM principal_keys WHERE principal_id = $1")
            .bind(principal_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let max = max.ok_or(StoreError::NotFound)?;
        if i64::from(k.kvno.0) != max + 1 {
            // Another rotation got there first.
            return Err(StoreError::AlreadyExists);
        }
        sqlx::query("UPDATE principal_keys SET expires_at = $1 WHERE principal_id = $2 AND expires_at IS NULL")
            .bind(to_i64(retire_at))
            .bind(principal_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        insert_key(&mut tx, principal_id, k).await?;
        notify(&mut tx, ChangeTopic::PrincipalKeys).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, sealed, created_at, activates_at, published_at, retires_at FROM signing_keys \
             ORDER BY activates_at DESC, created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(signing_key).collect()
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        retire_previous_at: u64,
        latest_seen: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // One rotation at a time across every KDC: the check of the latest
        // key and the insert see the same table.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let latest: Option<String> =
            sqlx::query_scalar("SELECT kid FROM signing_keys ORDER BY activates_at DESC, created_at DESC, kid LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        if latest.as_deref() != Some(latest_seen) {
            return Err(StoreError::AlreadyExists);
        }
        sqlx::query("UPDATE signing_keys SET retires_at = $1 WHERE retires_at IS NULL")
            .bind(to_i64(retire_previous_at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        insert_signing_key(&mut tx, key).await?;
        notify(&mut tx, ChangeTopic::SigningKeys).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn record_signing_keys_published(&self, kids: &[String], now: u64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // One statement: a KDC racing this one waits on the rows, then
        // finds them set and leaves them.
        let n = sqlx::query("UPDATE signing_keys SET published_at = $1 WHERE kid = ANY($2) AND published_at IS NULL")
            .bind(to_i64(now))
            .bind(kids)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        if n > 0 {
            notify(&mut tx, ChangeTopic::SigningKeys).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_error)?;
        Ok(())
    }

    fn changes(&self, topic: ChangeTopic) -> Option<watch::Receiver<u64>> {
        self.feed.listener.get_or_init(|| {
            AbortOnDrop(tokio::spawn(listen(
                self.pool.clone(),
                self.feed.signing_keys.clone(),
                self.feed.principal_keys.clone(),
            )))
        });
        Some(match topic {
            ChangeTopic::SigningKeys => self.feed.signing_keys.subscribe(),
            ChangeTopic::PrincipalKeys => self.feed.principal_keys.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_never_prints_its_password() {
        let u = DatabaseUrl::parse("postgres://kdc:s3cret-pw@db.example:5432/kdc?sslmode=require").unwrap();
        assert_eq!(u.to_string(), "postgres://kdc:***@db.example:5432/kdc?sslmode=require");
        assert!(!format!("{u:?}").contains("s3cret"));
        let u = DatabaseUrl::parse("postgresql://db.example/kdc?user=kdc&password=s3cret-pw").unwrap();
        assert_eq!(u.to_string(), "postgresql://db.example/kdc?user=kdc&password=***");
        let u = DatabaseUrl::parse("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(u.to_string(), "postgres://postgres@127.0.0.1:5432/postgres");
        let e = DatabaseUrl::parse("mysql://root:s3cret-pw@h/db").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        // Unencoded `/`, `?` or `@` in the password: still never shown.
        for url in ["postgres://u:123/s3cret@h/db", "postgres://u:s3/cret@h:5432/db", "postgres://u:s3?cret@h/db"] {
            let shown = match DatabaseUrl::parse(url) {
                Ok(u) => format!("{u} {u:?}"),
                Err(e) => e.to_string(),
            };
            assert!(!shown.contains("s3") && !shown.contains("cret"), "{url} shown as {shown}");
        }
        assert_eq!(
            DatabaseUrl::parse("postgres://u:123/s3cret@h/db").map(|u| u.to_string()).ok().as_deref(),
            Some("postgres://u:***@h/db")
        );
    }
}
