//! The embedded default store: one SQLite file in the data directory, in WAL
//! mode with `synchronous = FULL` so an acknowledged write survives a crash,
//! and a busy timeout so the `kdc` command and a serving KDC can share it.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use kdc_proto::{Argon2Params, Kvno};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

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

/// The SQLite principal store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    /// A new file is created with mode 0600 (SQLite gives its `-wal` and
    /// `-shm` files the same mode): it holds sealed key material.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self { pool })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn record(row: &SqliteRow) -> Result<PrincipalRecord, StoreError> {
    let roles: String = row.try_get("roles")?;
    Ok(PrincipalRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: PrincipalKind::parse(row.try_get("kind")?)?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        roles: serde_json::from_str(&roles).map_err(|_| StoreError::Corrupt("roles"))?,
        max_life_secs: row.try_get::<Option<i64>, _>("max_life_secs")?.map(to_u64),
        max_renew_secs: row.try_get::<Option<i64>, _>("max_renew_secs")?.map(to_u64),
        created_at: to_u64(row.try_get("created_at")?),
    })
}

fn key(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    let salt: Option<String> = row.try_get("salt")?;
    let password = match salt {
        Some(salt) => {
            let p = |c: &str| -> Result<u32, StoreError> {
                let v: Option<i64> = row.try_get(c)?;
                v.and_then(|v| u32::try_from(v).ok()).ok_or(StoreError::Corrupt("argon2 parameters"))
            };
            Some(PasswordDerivation {
                salt,
                params: Argon2Params { m_kib: p("argon2_m")?, t: p("argon2_t")?, p: p("argon2_p")? },
            })
        }
        None => None,
    };
    let kvno: i64 = row.try_get("kvno")?;
    Ok(StoredKey {
        kvno: Kvno(u32::try_from(kvno).map_err(|_| StoreError::Corrupt("kvno"))?),
        sealed: row.try_get("sealed")?,
        password,
        created_at: to_u64(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(to_u64),
    })
}

fn roles_json(roles: &[String]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".to_owned())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn insert_principal(conn: &mut sqlx::SqliteConnection, new: &NewPrincipal) -> Result<(), StoreError> {
    let r = &new.record;
    sqlx::query(
        "INSERT INTO principals (id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(r.kind.as_str())
    .bind(i64::from(r.disabled))
    .bind(roles_json(&r.roles))
    .bind(r.max_life_secs.map(to_i64))
    .bind(r.max_renew_secs.map(to_i64))
    .bind(to_i64(r.created_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| if is_unique_violation(&e) { StoreError::AlreadyExists } else { e.into() })?;
    insert_key(conn, &r.id, new.key.kvno, &new.key).await
}

async fn insert_key(
    conn: &mut sqlx::SqliteConnection,
    principal_id: &str,
    kvno: Kvno,
    k: &StoredKey,
) -> Result<(), StoreError> {
    let pw = k.password.as_ref();
    sqlx::query(
        "INSERT INTO principal_keys (principal_id, kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(principal_id)
    .bind(i64::from(kvno.0))
    .bind(&k.sealed)
    .bind(pw.map(|p| p.salt.clone()))
    .bind(pw.map(|p| i64::from(p.params.m_kib)))
    .bind(pw.map(|p| i64::from(p.params.t)))
    .bind(pw.map(|p| i64::from(p.params.p)))
    .bind(to_i64(k.created_at))
    .bind(k.expires_at.map(to_i64))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl PrincipalStore for SqliteStore {
    async fn realm(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT name FROM realm WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    async fn initialize(&self, init: &RealmInit) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM realm WHERE id = 1").fetch_optional(&mut *tx).await?;
        if exists.is_some() {
            return Err(StoreError::AlreadyInitialized);
        }
        sqlx::query("INSERT INTO realm (id, name, created_at) VALUES (1, ?, ?)")
            .bind(&init.realm)
            .bind(to_i64(init.signing_key.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, sealed, created_at) VALUES (?, ?, ?)")
            .bind(&init.signing_key.kid)
            .bind(&init.signing_key.sealed)
            .bind(to_i64(init.signing_key.created_at))
            .execute(&mut *tx)
            .await?;
        for p in &init.principals {
            insert_principal(&mut tx, p).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_principal(&self, new: &NewPrincipal) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_principal(&mut tx, new).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn principal_by_name(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        const Q: &str = "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals WHERE name = ?";
        let row = sqlx::query(Q).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(record).transpose()
    }

    async fn principal_by_id(&self, id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        const Q: &str = "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals WHERE id = ?";
        let row = sqlx::query(Q).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(record).transpose()
    }

    async fn live_keys(&self, principal_id: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kvno, sealed, salt, argon2_m, argon2_t, argon2_p, created_at, expires_at FROM principal_keys \
             WHERE principal_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY kvno DESC",
        )
        .bind(principal_id)
        .bind(to_i64(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key).collect()
    }

    async fn list_principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<PrincipalRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals \
             WHERE name > ? ORDER BY name LIMIT ?",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn update_principal(&self, name: &str, u: &PrincipalUpdate) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT id, name, kind, disabled, roles, max_life_secs, max_renew_secs, created_at FROM principals WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let mut r = row.as_ref().map(record).transpose()?.ok_or(StoreError::NotFound)?;
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
        sqlx::query(
            "UPDATE principals SET disabled = ?, roles = ?, max_life_secs = ?, max_renew_secs = ? WHERE id = ?",
        )
        .bind(i64::from(r.disabled))
        .bind(roles_json(&r.roles))
        .bind(r.max_life_secs.map(to_i64))
        .bind(r.max_renew_secs.map(to_i64))
        .bind(&r.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_principal(&self, name: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM principals WHERE name = ?").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn rotate_key(&self, principal_id: &str, k: &StoredKey, retire_at: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let max: Option<i64> = sqlx::query("SELECT MAX(kvno) AS m FROM principal_keys WHERE principal_id = ?")
            .bind(principal_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("m")?;
        let max = max.ok_or(StoreError::NotFound)?;
        if i64::from(k.kvno.0) != max + 1 {
            // Another rotation got there first; the caller sealed the key for
            // a version number that is no longer the next one.
            return Err(StoreError::AlreadyExists);
        }
        sqlx::query("UPDATE principal_keys SET expires_at = ? WHERE principal_id = ? AND expires_at IS NULL")
            .bind(to_i64(retire_at))
            .bind(principal_id)
            .execute(&mut *tx)
            .await?;
        insert_key(&mut tx, principal_id, k.kvno, k).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query("SELECT kid, sealed, created_at FROM signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredSigningKey {
                    kid: r.try_get("kid")?,
                    sealed: r.try_get("sealed")?,
                    created_at: to_u64(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }
}
