//! The embedded default store: one SQLite file in the data directory, in WAL
//! mode with `synchronous = FULL` so an acknowledged write survives a crash,
//! and a busy timeout so the `kdc` command and a serving KDC can share it.
//!
//! Lookups are primary-key or unique-index reads that take microseconds, so
//! they run inline on prepared, cached statements; writes (which wait for
//! `fsync`) run on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kdc_proto::{Argon2Params, Kvno};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    NewPrincipal, PasswordDerivation, PrincipalKind, PrincipalRecord, PrincipalStore, PrincipalUpdate, RealmInit,
    StoreError, StoredKey, StoredSigningKey,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS realm (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    disabled INTEGER NOT NULL DEFAULT 0,
    roles TEXT NOT NULL DEFAULT '[]',
    max_life_secs INTEGER,
    max_renew_secs INTEGER,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS principal_keys (
    principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    kvno INTEGER NOT NULL,
    sealed TEXT NOT NULL,
    salt TEXT,
    argon2_m INTEGER,
    argon2_t INTEGER,
    argon2_p INTEGER,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (principal_id, kvno)
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#;

/// Schema changes since [`SCHEMA`] was first released, in order. The
/// database's `user_version` counts those applied: a data directory from
/// before versioning has 0 and is brought forward when opened.
const MIGRATIONS: &[&str] = &[
    // 1: signing-key rotation. A key stored before it has been signing since
    // its creation and retires only once a successor is stored.
    r#"
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE signing_keys ADD COLUMN retires_at INTEGER;
UPDATE signing_keys SET activates_at = created_at;
"#,
    // 2: when a serving KDC first published each signing key, which it
    // signs with only a publish floor later. Keys stored before count as
    // published at their creation, as the KDC that stored them assumed: a
    // data directory that never rotated signs on as it did.
    r#"
ALTER TABLE signing_keys ADD COLUMN published_at INTEGER;
UPDATE signing_keys SET published_at = created_at;
"#,
];

/// Creates the tables and applies the migrations not yet applied, in one
/// transaction that holds the write lock, so a `kdc` command and a serving
/// KDC opening the same file at once migrate it once.
fn migrate(c: &mut Connection) -> Result<(), StoreError> {
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > latest {
        return Err(StoreError::NewerSchema { found: version, supported: latest });
    }
    if version == latest {
        return Ok(());
    }
    tx.execute_batch(SCHEMA)?;
    for m in MIGRATIONS.iter().skip(usize::try_from(version).unwrap_or(0)) {
        tx.execute_batch(m)?;
    }
    tx.pragma_update(None, "user_version", latest)?;
    tx.commit()?;
    Ok(())
}

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 8;

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// The SQLite principal store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl Inner {
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        let result = f(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`. A new file is
    /// created with mode 0600 (SQLite gives its `-wal` and `-shm` files the
    /// same mode): it holds sealed key material.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(StoreError::Io)?;
        }
        let inner = Arc::new(Inner { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        let setup = inner.clone();
        tokio::task::spawn_blocking(move || setup.with_conn(migrate))
            .await
            .map_err(|_| StoreError::Corrupt("store task failed"))??;
        Ok(Self { inner })
    }

    /// A read: microseconds on an indexed lookup, so it runs inline.
    fn read<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.inner.with_conn(f)
    }

    /// A write: waits for the disk, so it runs on the blocking pool.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_conn(f))
            .await
            .map_err(|_| StoreError::Corrupt("store task failed"))?
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // SQLite's messages name tables and constraints, never bound values.
        StoreError::Database(e.to_string())
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const PRINCIPAL_COLUMNS: &str = "id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at";
const KEY_COLUMNS: &str = "kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at";

fn record(row: &Row<'_>) -> rusqlite::Result<Result<PrincipalRecord, StoreError>> {
    let roles: String = row.get("roles")?;
    let kind: String = row.get("kind")?;
    let (kind, roles) = match (PrincipalKind::parse(&kind), serde_json::from_str::<Vec<String>>(&roles)) {
        (Ok(k), Ok(r)) => (k, r),
        (Err(e), _) => return Ok(Err(e)),
        (_, Err(_)) => return Ok(Err(StoreError::Corrupt("roles"))),
    };
    Ok(Ok(PrincipalRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        kind,
        disabled: row.get::<_, i64>("disabled")? != 0,
        roles,
        max_life_secs: row.get::<_, Option<i64>>("max_life_secs")?.map(to_u64),
        max_renew_secs: row.get::<_, Option<i64>>("max_renew_secs")?.map(to_u64),
        created_at: to_u64(row.get("created_at")?),
    }))
}

fn key(row: &Row<'_>) -> rusqlite::Result<Result<StoredKey, StoreError>> {
    let salt: Option<String> = row.get("salt")?;
    let param = |c: &str| -> rusqlite::Result<Option<u32>> {
        Ok(row.get::<_, Option<i64>>(c)?.and_then(|v| u32::try_from(v).ok()))
    };
    let password = match (salt, param("argon2_m")?, param("argon2_t")?, param("argon2_p")?) {
        (Some(salt), Some(m_kib), Some(t), Some(p)) => {
            Some(PasswordDerivation { salt, params: Argon2Params { m_kib, t, p } })
        }
        (None, _, _, _) => None,
        _ => return Ok(Err(StoreError::Corrupt("argon2 parameters"))),
    };
    let Ok(kvno) = u32::try_from(row.get::<_, i64>("kvno")?) else {
        return Ok(Err(StoreError::Corrupt("kvno")));
    };
    Ok(Ok(StoredKey {
        kvno: Kvno(kvno),
        sealed: row.get("sealed")?,
        password,
        created_at: to_u64(row.get("created_at")?),
        expires_at: row.get::<_, Option<i64>>("expires_at")?.map(to_u64),
    }))
}

fn roles_json(roles: &[String]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".to_owned())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn insert_principal(conn: &Connection, new: &NewPrincipal) -> Result<(), StoreError> {
    let r = &new.record;
    conn.execute(
        "INSERT INTO principals (id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.id,
            r.name,
            r.kind.as_str(),
            i64::from(r.disabled),
            roles_json(&r.roles),
            r.max_life_secs.map(to_i64),
            r.max_renew_secs.map(to_i64),
            to_i64(r.created_at)
        ],
    )
    .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists } else { e.into() })?;
    insert_key(conn, &r.id, &new.key)
}

fn insert_key(conn: &Connection, principal_id: &str, k: &StoredKey) -> Result<(), StoreError> {
    let pw = k.password.as_ref();
    conn.execute(
        "INSERT INTO principal_keys (principal_id, kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            principal_id,
            i64::from(k.kvno.0),
            k.sealed,
            pw.map(|p| p.salt.clone()),
            pw.map(|p| i64::from(p.params.m_kib)),
            pw.map(|p| i64::from(p.params.t)),
            pw.map(|p| i64::from(p.params.p)),
            to_i64(k.created_at),
            k.expires_at.map(to_i64)
        ],
    )
    .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists } else { e.into() })?;
    Ok(())
}

fn insert_signing_key(conn: &Connection, k: &StoredSigningKey) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO signing_keys (kid, sealed, created_at, activates_at, published_at, retires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            k.kid,
            k.sealed,
            to_i64(k.created_at),
            to_i64(k.activates_at),
            k.published_at.map(to_i64),
            k.retires_at.map(to_i64)
        ],
    )
    .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists } else { e.into() })?;
    Ok(())
}

fn principal_where(conn: &Connection, column: &str, value: &str) -> Result<Option<PrincipalRecord>, StoreError> {
    let sql = match column {
        "id" => {
            "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals WHERE id = ?1"
        }
        _ => {
            "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals WHERE name = ?1"
        }
    };
    debug_assert!(sql.contains(PRINCIPAL_COLUMNS));
    conn.prepare_cached(sql)?.query_row([value], record).optional()?.transpose()
}

#[async_trait]
impl PrincipalStore for SqliteStore {
    async fn realm(&self) -> Result<Option<String>, StoreError> {
        self.read(|c| Ok(c.query_row("SELECT name FROM realm WHERE id = 1", [], |r| r.get(0)).optional()?))
    }

    async fn initialize(&self, init: &RealmInit) -> Result<(), StoreError> {
        let init = init.clone();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: Option<i64> = tx.query_row("SELECT 1 FROM realm WHERE id = 1", [], |r| r.get(0)).optional()?;
            if exists.is_some() {
                return Err(StoreError::AlreadyInitialized);
            }
            tx.execute(
                "INSERT INTO realm (id, name, created_at) VALUES (1, ?1, ?2)",
                params![init.realm, to_i64(init.signing_key.created_at)],
            )?;
            insert_signing_key(&tx, &init.signing_key)?;
            for p in &init.principals {
                insert_principal(&tx, p)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn create_principal(&self, new: &NewPrincipal) -> Result<(), StoreError> {
        let new = new.clone();
        self.write(move |c| {
            let tx = c.transaction()?;
            insert_principal(&tx, &new)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn principal_by_name(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.read(|c| principal_where(c, "name", name))
    }

    async fn principal_by_id(&self, id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.read(|c| principal_where(c, "id", id))
    }

    async fn live_keys(&self, principal_id: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        self.read(|c| {
            let sql = "SELECT kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at \
                       FROM principal_keys WHERE principal_id = ?1 AND (expires_at IS NULL OR expires_at > ?2) \
                       ORDER BY kvno DESC";
            debug_assert!(sql.contains(KEY_COLUMNS));
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(params![principal_id, to_i64(now)], key)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
    }

    async fn list_principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<PrincipalRecord>, StoreError> {
        let after = after.unwrap_or("").to_owned();
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals \
                 WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, i64::from(limit)], record)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
    }

    async fn update_principal(&self, name: &str, u: &PrincipalUpdate) -> Result<(), StoreError> {
        let (name, u) = (name.to_owned(), u.clone());
        self.write(move |c| {
            // Immediate, as for rotation: read, then write.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut r = principal_where(&tx, "name", &name)?.ok_or(StoreError::NotFound)?;
            u.apply_to(&mut r);
            tx.execute(
                "UPDATE principals SET disabled = ?1, roles = ?2, max_life_secs = ?3, max_renew_secs = ?4 WHERE id = ?5",
                params![
                    i64::from(r.disabled),
                    roles_json(&r.roles),
                    r.max_life_secs.map(to_i64),
                    r.max_renew_secs.map(to_i64),
                    r.id
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_principal(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |c| {
            let n = c.execute("DELETE FROM principals WHERE name = ?1", [name])?;
            if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn rotate_key(&self, principal_id: &str, k: &StoredKey, retire_at: u64) -> Result<(), StoreError> {
        let (principal_id, k) = (principal_id.to_owned(), k.clone());
        self.write(move |c| {
            // Immediate: it reads, then writes; a deferred transaction
            // would fail ("database is locked") instead of waiting when
            // another rotation took the write lock in between.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let max: Option<i64> =
                tx.query_row("SELECT MAX(kvno) FROM principal_keys WHERE principal_id = ?1", [&principal_id], |r| {
                    r.get(0)
                })?;
            let max = max.ok_or(StoreError::NotFound)?;
            if i64::from(k.kvno.0) != max + 1 {
                // Another rotation got there first; the caller sealed the key for
                // a version number that is no longer the next one.
                return Err(StoreError::AlreadyExists);
            }
            tx.execute(
                "UPDATE principal_keys SET expires_at = ?1 WHERE principal_id = ?2 AND expires_at IS NULL",
                params![to_i64(retire_at), principal_id],
            )?;
            insert_key(&tx, &principal_id, &k)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kid, sealed, created_at, activates_at, published_at, retires_at FROM signing_keys \
                 ORDER BY activates_at DESC, created_at DESC, kid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredSigningKey {
                    kid: r.get(0)?,
                    sealed: r.get(1)?,
                    created_at: to_u64(r.get(2)?),
                    activates_at: to_u64(r.get(3)?),
                    published_at: r.get::<_, Option<i64>>(4)?.map(to_u64),
                    retires_at: r.get::<_, Option<i64>>(5)?.map(to_u64),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        retire_previous_at: u64,
        latest_seen: &str,
    ) -> Result<(), StoreError> {
        let (key, latest_seen) = (key.clone(), latest_seen.to_owned());
        self.write(move |c| {
            // Immediate: the check of the latest key and the insert see the
            // same store, whatever another process does meanwhile.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let latest: Option<String> = tx
                .query_row(
                    "SELECT kid FROM signing_keys ORDER BY activates_at DESC, created_at DESC, kid LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if latest.as_deref() != Some(latest_seen.as_str()) {
                return Err(StoreError::AlreadyExists);
            }
            tx.execute(
                "UPDATE signing_keys SET retires_at = ?1 WHERE retires_at IS NULL",
                [to_i64(retire_previous_at)],
            )?;
            insert_signing_key(&tx, &key)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn record_signing_keys_published(&self, kids: &[String], now: u64) -> Result<(), StoreError> {
        let kids = kids.to_vec();
        self.write(move |c| {
            let tx = c.transaction()?;
            for kid in &kids {
                // Set once, so every KDC on this store computes the same
                // activation from it.
                tx.execute(
                    "UPDATE signing_keys SET published_at = ?1 WHERE kid = ?2 AND published_at IS NULL",
                    params![to_i64(now), kid],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing_key(kid: &str, created_at: u64, activates_at: u64) -> StoredSigningKey {
        StoredSigningKey {
            kid: kid.into(),
            sealed: format!("sealed-{kid}"),
            created_at,
            activates_at,
            published_at: Some(created_at),
            retires_at: None,
        }
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    }

    /// The tables as the first release created them, before versioning.
    const UNVERSIONED: &str = "
        CREATE TABLE realm (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, created_at INTEGER NOT NULL);
        CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, sealed TEXT NOT NULL, created_at INTEGER NOT NULL);
        INSERT INTO realm VALUES (1, 'EXAMPLE.TEST', 1000);
        INSERT INTO signing_keys VALUES ('first', 'sealed-first', 1000);
    ";

    #[tokio::test]
    async fn a_data_directory_from_before_versioning_is_migrated_and_its_key_signs_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdc.sqlite3");
        Connection::open(&path).unwrap().execute_batch(UNVERSIONED).unwrap();
        assert_eq!(user_version(&path), 0);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(user_version(&path), i64::try_from(MIGRATIONS.len()).unwrap());
        assert_eq!(store.realm().await.unwrap().as_deref(), Some("EXAMPLE.TEST"));
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys, vec![signing_key("first", 1000, 1000)], "published at its creation, signing on");
        // Opening again (another process) changes nothing.
        drop(store);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.signing_keys().await.unwrap(), keys);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_kdc_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdc.sqlite3");
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
        let e = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(e, StoreError::NewerSchema { found: 99, .. }), "{e}");
    }

    #[tokio::test]
    async fn adding_a_signing_key_retires_the_current_one_and_one_rotation_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("kdc.sqlite3")).await.unwrap();
        let init =
            RealmInit { realm: "EXAMPLE.TEST".into(), signing_key: signing_key("k1", 1000, 1000), principals: vec![] };
        store.initialize(&init).await.unwrap();
        store.add_signing_key(&signing_key("k2", 2000, 3000), 9000, "k1").await.unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| (k.kid.as_str(), k.retires_at)).collect::<Vec<_>>(),
            vec![("k2", None), ("k1", Some(9000))]
        );
        // A rotation that checked the store before k2 was added (another
        // process, at the same time) writes nothing.
        let e = store.add_signing_key(&signing_key("k3", 2500, 4000), 9500, "k1").await.unwrap_err();
        assert!(matches!(e, StoreError::AlreadyExists), "{e}");
        assert_eq!(store.signing_keys().await.unwrap(), keys, "nothing written");
        // One that saw k2 retires it and leaves k1's retirement alone.
        store.add_signing_key(&signing_key("k3", 3000, 4000), 9500, "k2").await.unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| (k.kid.as_str(), k.retires_at)).collect::<Vec<_>>(),
            vec![("k3", None), ("k2", Some(9500)), ("k1", Some(9000))]
        );
    }

    #[tokio::test]
    async fn the_first_kdc_to_publish_a_signing_key_records_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("kdc.sqlite3")).await.unwrap();
        let init =
            RealmInit { realm: "EXAMPLE.TEST".into(), signing_key: signing_key("k1", 1000, 1000), principals: vec![] };
        store.initialize(&init).await.unwrap();
        let k2 = StoredSigningKey { published_at: None, ..signing_key("k2", 2000, 3000) };
        store.add_signing_key(&k2, 9000, "k1").await.unwrap();
        let published = || async {
            store.signing_keys().await.unwrap().into_iter().map(|k| (k.kid, k.published_at)).collect::<Vec<_>>()
        };
        assert_eq!(published().await, vec![("k2".to_owned(), None), ("k1".to_owned(), Some(1000))]);
        // The first KDC records it (an earlier publication and an unknown id
        // are left alone); another, later, changes nothing.
        let all = ["k2".to_owned(), "k1".to_owned(), "unknown".to_owned()];
        store.record_signing_keys_published(&all, 6000).await.unwrap();
        store.record_signing_keys_published(&all[..1], 6005).await.unwrap();
        assert_eq!(published().await, vec![("k2".to_owned(), Some(6000)), ("k1".to_owned(), Some(1000))]);
        assert_eq!(store.signing_keys().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_rotated_data_directory_from_schema_1_counts_its_keys_published_at_their_creation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdc.sqlite3");
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch(UNVERSIONED).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.execute_batch(
            "UPDATE signing_keys SET retires_at = 9000;
             INSERT INTO signing_keys (kid, sealed, created_at, activates_at) VALUES ('second', 'sealed-second', 2000, 5600);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        tx.commit().unwrap();
        drop(c);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(user_version(&path), 2);
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| (k.kid.as_str(), k.activates_at, k.published_at, k.retires_at)).collect::<Vec<_>>(),
            vec![("second", 5600, Some(2000), None), ("first", 1000, Some(1000), Some(9000))]
        );
    }
}
