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
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

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
        tokio::task::spawn_blocking(move || setup.with_conn(|c| Ok(c.execute_batch(SCHEMA)?)))
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
            let tx = c.transaction()?;
            let exists: Option<i64> = tx.query_row("SELECT 1 FROM realm WHERE id = 1", [], |r| r.get(0)).optional()?;
            if exists.is_some() {
                return Err(StoreError::AlreadyInitialized);
            }
            tx.execute(
                "INSERT INTO realm (id, name, created_at) VALUES (1, ?1, ?2)",
                params![init.realm, to_i64(init.signing_key.created_at)],
            )?;
            tx.execute(
                "INSERT INTO signing_keys (kid, sealed, created_at) VALUES (?1, ?2, ?3)",
                params![init.signing_key.kid, init.signing_key.sealed, to_i64(init.signing_key.created_at)],
            )?;
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
            let tx = c.transaction()?;
            let mut r = principal_where(&tx, "name", &name)?.ok_or(StoreError::NotFound)?;
            if let Some(d) = u.disabled {
                r.disabled = d;
            }
            if let Some(roles) = &u.roles {
                r.roles.clone_from(roles);
            }
            if let Some(l) = u.max_life_secs {
                r.max_life_secs = l;
            }
            if let Some(l) = u.max_renew_secs {
                r.max_renew_secs = l;
            }
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
            let tx = c.transaction()?;
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
            let mut stmt =
                c.prepare_cached("SELECT kid, sealed, created_at FROM signing_keys ORDER BY created_at DESC, kid")?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredSigningKey { kid: r.get(0)?, sealed: r.get(1)?, created_at: to_u64(r.get(2)?) })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }
}
