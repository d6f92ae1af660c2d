//! One conformance suite for every [`PrincipalStore`]: the same checks run
//! against the memory store, SQLite and PostgreSQL, so the backends cannot
//! drift apart.
//!
//! PostgreSQL runs when `KDC_TEST_POSTGRES_URL` names a server (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`): each test gets a fresh
//! database of its own, dropped afterwards. Without the variable those
//! tests say what they skipped and pass; with it set and the server
//! unreachable they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use kdc_proto::{Argon2Params, Kvno};

use super::*;

const REALM: &str = "EXAMPLE.TEST";

fn signing(kid: &str, created_at: u64, activates_at: u64, published_at: Option<u64>) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.into(),
        sealed: format!("sealed-{kid}"),
        created_at,
        activates_at,
        published_at,
        retires_at: None,
    }
}

fn principal(id: &str, name: &str, kind: PrincipalKind) -> NewPrincipal {
    NewPrincipal {
        record: PrincipalRecord {
            id: id.into(),
            name: format!("{name}@{REALM}"),
            kind,
            disabled: false,
            roles: vec![],
            max_life_secs: None,
            max_renew_secs: None,
            created_at: 1000,
        },
        key: StoredKey {
            kvno: Kvno(1),
            sealed: format!("sealed-{id}-1"),
            password: match kind {
                PrincipalKind::User => Some(PasswordDerivation {
                    salt: format!("salt-{name}"),
                    params: Argon2Params { m_kib: 19456, t: 2, p: 1 },
                }),
                PrincipalKind::Service => None,
            },
            created_at: 1000,
            expires_at: None,
        },
    }
}

fn key(kvno: u32, created_at: u64) -> StoredKey {
    StoredKey { kvno: Kvno(kvno), sealed: format!("sealed-{kvno}"), password: None, created_at, expires_at: None }
}

async fn initialized(store: &dyn PrincipalStore) {
    let init = RealmInit {
        realm: REALM.into(),
        signing_key: signing("k1", 1000, 1000, Some(1000)),
        principals: vec![principal("tgs-id", "krbtgt/EXAMPLE.TEST", PrincipalKind::Service)],
    };
    store.initialize(&init).await.unwrap();
}

async fn kvnos(store: &dyn PrincipalStore, id: &str, now: u64) -> Vec<(u32, Option<u64>)> {
    store.live_keys(id, now).await.unwrap().iter().map(|k| (k.kvno.0, k.expires_at)).collect()
}

pub(super) async fn initialization_is_once_and_all_or_nothing(store: Arc<dyn PrincipalStore>) {
    store.ping().await.unwrap();
    assert_eq!(store.realm().await.unwrap(), None);
    // A realm whose principals collide is written not at all.
    let bad = RealmInit {
        realm: REALM.into(),
        signing_key: signing("k1", 1000, 1000, Some(1000)),
        principals: vec![
            principal("a", "same", PrincipalKind::Service),
            principal("b", "same", PrincipalKind::Service),
        ],
    };
    assert!(store.initialize(&bad).await.is_err());
    assert_eq!(store.realm().await.unwrap(), None, "nothing of a failed initialisation is kept");
    assert!(store.signing_keys().await.unwrap().is_empty());
    assert!(store.principal_by_id("a").await.unwrap().is_none());
    initialized(store.as_ref()).await;
    assert_eq!(store.realm().await.unwrap().as_deref(), Some(REALM));
    let again = RealmInit {
        realm: "OTHER.TEST".into(),
        signing_key: signing("k9", 2000, 2000, Some(2000)),
        principals: vec![],
    };
    assert!(matches!(store.initialize(&again).await, Err(StoreError::AlreadyInitialized)));
    assert_eq!(store.realm().await.unwrap().as_deref(), Some(REALM));
    assert_eq!(store.signing_keys().await.unwrap().len(), 1);
}

pub(super) async fn principals_round_trip_and_names_are_unique(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    let mut alice = principal("alice-id", "alice", PrincipalKind::User);
    alice.record.roles = vec!["reader".into(), "admin".into()];
    alice.record.max_life_secs = Some(600);
    alice.record.max_renew_secs = Some(7200);
    store.create_principal(&alice).await.unwrap();
    let by_name = store.principal_by_name("alice@EXAMPLE.TEST").await.unwrap().unwrap();
    assert_eq!(by_name, alice.record);
    assert_eq!(store.principal_by_id("alice-id").await.unwrap().unwrap(), alice.record);
    assert_eq!(store.live_keys("alice-id", 1000).await.unwrap(), vec![alice.key.clone()]);
    assert!(store.principal_by_name("nobody@EXAMPLE.TEST").await.unwrap().is_none());
    assert!(store.principal_by_id("nobody").await.unwrap().is_none());
    assert!(store.live_keys("nobody", 1000).await.unwrap().is_empty());
    // The same name under another id, or the same id under another name.
    let twin = principal("other-id", "alice", PrincipalKind::Service);
    assert!(matches!(store.create_principal(&twin).await, Err(StoreError::AlreadyExists)));
    let same_id = principal("alice-id", "bob", PrincipalKind::Service);
    assert!(matches!(store.create_principal(&same_id).await, Err(StoreError::AlreadyExists)));
    assert!(store.principal_by_name("bob@EXAMPLE.TEST").await.unwrap().is_none(), "nothing half-written");
    assert_eq!(store.principal_by_id("alice-id").await.unwrap().unwrap(), alice.record);
}

pub(super) async fn listing_pages_in_bytewise_name_order(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    for (i, n) in ["zed", "Bob", "alice", "HTTP/web", "_x", "a-b"].iter().enumerate() {
        store.create_principal(&principal(&format!("id{i}"), n, PrincipalKind::Service)).await.unwrap();
    }
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_principals(after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        all.extend(page.iter().map(|p| p.name.clone()));
        match page.last() {
            Some(last) if page.len() == 3 => after = Some(last.name.clone()),
            _ => break,
        }
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "bytewise order: upper case before lower case");
    assert_eq!(all.len(), 7);
    assert_eq!(all[0], "Bob@EXAMPLE.TEST");
}

pub(super) async fn updates_apply_what_they_name(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    let mut alice = principal("alice-id", "alice", PrincipalKind::User);
    alice.record.max_life_secs = Some(600);
    store.create_principal(&alice).await.unwrap();
    let name = "alice@EXAMPLE.TEST";
    let u = PrincipalUpdate { disabled: Some(true), roles: Some(vec!["ops".into()]), ..Default::default() };
    store.update_principal(name, &u).await.unwrap();
    let r = store.principal_by_name(name).await.unwrap().unwrap();
    assert_eq!((r.disabled, r.roles.clone(), r.max_life_secs), (true, vec!["ops".to_owned()], Some(600)));
    let u = PrincipalUpdate { max_life_secs: Some(None), max_renew_secs: Some(Some(99)), ..Default::default() };
    store.update_principal(name, &u).await.unwrap();
    let r = store.principal_by_name(name).await.unwrap().unwrap();
    assert_eq!((r.disabled, r.max_life_secs, r.max_renew_secs), (true, None, Some(99)));
    assert!(matches!(store.update_principal("nobody@EXAMPLE.TEST", &u).await, Err(StoreError::NotFound)));
}

pub(super) async fn deletion_takes_the_keys_and_is_final(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    store.create_principal(&principal("svc-id", "HTTP/svc", PrincipalKind::Service)).await.unwrap();
    store.rotate_key("svc-id", &key(2, 1100), 5000).await.unwrap();
    store.delete_principal("HTTP/svc@EXAMPLE.TEST").await.unwrap();
    assert!(store.principal_by_id("svc-id").await.unwrap().is_none());
    assert!(store.live_keys("svc-id", 1100).await.unwrap().is_empty());
    assert!(matches!(store.delete_principal("HTTP/svc@EXAMPLE.TEST").await, Err(StoreError::NotFound)));
    // The name can be taken again, under a new id, with a first key again.
    store.create_principal(&principal("svc-id-2", "HTTP/svc", PrincipalKind::Service)).await.unwrap();
    assert_eq!(kvnos(store.as_ref(), "svc-id-2", 1100).await, vec![(1, None)]);
}

pub(super) async fn rotation_is_compare_and_set(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    store.create_principal(&principal("svc-id", "HTTP/svc", PrincipalKind::Service)).await.unwrap();
    store.rotate_key("svc-id", &key(2, 1100), 5000).await.unwrap();
    assert_eq!(kvnos(store.as_ref(), "svc-id", 1100).await, vec![(2, None), (1, Some(5000))]);
    // A rotation that read the store before (kvno 2 again) or skips one.
    for stale in [2, 4] {
        assert!(matches!(store.rotate_key("svc-id", &key(stale, 1200), 6000).await, Err(StoreError::AlreadyExists)));
    }
    assert_eq!(kvnos(store.as_ref(), "svc-id", 1100).await, vec![(2, None), (1, Some(5000))], "nothing written");
    store.rotate_key("svc-id", &key(3, 1300), 7000).await.unwrap();
    // Only the current version got the new expiry; expired versions are not live.
    assert_eq!(kvnos(store.as_ref(), "svc-id", 1300).await, vec![(3, None), (2, Some(7000)), (1, Some(5000))]);
    assert_eq!(kvnos(store.as_ref(), "svc-id", 5000).await, vec![(3, None), (2, Some(7000))]);
    assert_eq!(kvnos(store.as_ref(), "svc-id", 7000).await, vec![(3, None)]);
    assert!(matches!(store.rotate_key("nobody", &key(2, 1100), 5000).await, Err(StoreError::NotFound)));
}

pub(super) async fn concurrent_writes_have_one_winner(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    store.create_principal(&principal("svc-id", "HTTP/svc", PrincipalKind::Service)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.rotate_key("svc-id", &key(2, 1100 + i), 5000 + i).await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::AlreadyExists) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(won, 1, "one rotation to kvno 2");
    assert_eq!(store.live_keys("svc-id", 1100).await.unwrap().len(), 2);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        let p = principal(&format!("bob-{i}"), "bob", PrincipalKind::Service);
        tasks.push(tokio::spawn(async move { s.create_principal(&p).await }));
    }
    let results: Vec<_> = futures_join(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "one bob");
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::AlreadyExists))));
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.add_signing_key(&signing(&format!("n{i}"), 2000 + i, 3000, None), 9000, "k1").await
        }));
    }
    let results = futures_join(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "one rotation from k1");
    assert_eq!(store.signing_keys().await.unwrap().len(), 2);
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub(super) async fn signing_key_rotation_is_compare_and_set(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    store.add_signing_key(&signing("k2", 2000, 3000, Some(2000)), 9000, "k1").await.unwrap();
    let order = |keys: Vec<StoredSigningKey>| keys.into_iter().map(|k| (k.kid, k.retires_at)).collect::<Vec<_>>();
    assert_eq!(
        order(store.signing_keys().await.unwrap()),
        vec![("k2".to_owned(), None), ("k1".to_owned(), Some(9000))]
    );
    let before = store.signing_keys().await.unwrap();
    let e = store.add_signing_key(&signing("k3", 2500, 4000, None), 9500, "k1").await.unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists), "{e}");
    assert_eq!(store.signing_keys().await.unwrap(), before, "nothing written");
    store.add_signing_key(&signing("k3", 3000, 4000, None), 9500, "k2").await.unwrap();
    assert_eq!(
        order(store.signing_keys().await.unwrap()),
        vec![("k3".to_owned(), None), ("k2".to_owned(), Some(9500)), ("k1".to_owned(), Some(9000))]
    );
    // A kid already stored is refused, and changes nothing.
    let before = store.signing_keys().await.unwrap();
    assert!(store.add_signing_key(&signing("k1", 4000, 5000, None), 9900, "k3").await.is_err());
    assert_eq!(store.signing_keys().await.unwrap(), before);
}

pub(super) async fn the_first_publication_is_recorded_once(store: Arc<dyn PrincipalStore>) {
    initialized(store.as_ref()).await;
    store.add_signing_key(&signing("k2", 2000, 3000, None), 9000, "k1").await.unwrap();
    let published = || async {
        store.signing_keys().await.unwrap().into_iter().map(|k| (k.kid, k.published_at)).collect::<Vec<_>>()
    };
    assert_eq!(published().await, vec![("k2".to_owned(), None), ("k1".to_owned(), Some(1000))]);
    let all = ["k2".to_owned(), "k1".to_owned(), "unknown".to_owned()];
    store.record_signing_keys_published(&all, 6000).await.unwrap();
    store.record_signing_keys_published(&all[..1], 6005).await.unwrap();
    store.record_signing_keys_published(&[], 6006).await.unwrap();
    assert_eq!(published().await, vec![("k2".to_owned(), Some(6000)), ("k1".to_owned(), Some(1000))]);
}

/// Generates one test per backend for each conformance check.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(std::sync::Arc::new(crate::store::MemoryStore::new())).await;
                }
            )*
        }
        mod sqlite_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = crate::store::SqliteStore::open(&dir.path().join("kdc.sqlite3")).await.unwrap();
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = super::pg::TestDatabase::create(stringify!($check)).await else { return };
                    let store = crate::store::PostgresStore::open(&db.url).await.unwrap();
                    super::$check(std::sync::Arc::new(store)).await;
                    db.drop_now().await;
                }
            )*
        }
    };
}

conformance!(
    initialization_is_once_and_all_or_nothing,
    principals_round_trip_and_names_are_unique,
    listing_pages_in_bytewise_name_order,
    updates_apply_what_they_name,
    deletion_takes_the_keys_and_is_final,
    rotation_is_compare_and_set,
    concurrent_writes_have_one_winner,
    signing_key_rotation_is_compare_and_set,
    the_first_publication_is_recorded_once,
);

/// Fresh PostgreSQL databases for tests.
pub(crate) mod pg {
    use sqlx::Connection as _;

    use crate::store::DatabaseUrl;

    /// The server tests run against, if any.
    pub(crate) fn server_url() -> Option<String> {
        std::env::var("KDC_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())
    }

    /// A database of its own for one test, dropped by [`TestDatabase::drop_now`]
    /// (or, if the test fails first, when it is dropped).
    pub(crate) struct TestDatabase {
        pub(crate) url: DatabaseUrl,
        server: String,
        name: String,
        dropped: bool,
    }

    impl TestDatabase {
        /// Creates `kdc_test_<what>_<random>`; `None` (said on standard
        /// error) without `KDC_TEST_POSTGRES_URL`. Panics when the variable
        /// is set and the server cannot be reached.
        pub(crate) async fn create(what: &str) -> Option<Self> {
            let Some(server) = server_url() else {
                eprintln!("skipped {what} on PostgreSQL: KDC_TEST_POSTGRES_URL is not set");
                return None;
            };
            let mut suffix = [0u8; 6];
            rand::fill(&mut suffix[..]);
            let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
            let short: String = what.chars().take(30).collect();
            let name = format!("kdc_test_{short}_{hex}");
            let mut c = sqlx::PgConnection::connect(&server)
                .await
                .unwrap_or_else(|e| panic!("KDC_TEST_POSTGRES_URL is set but the server cannot be reached: {e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await.unwrap();
            let _ = c.close().await;
            let url = DatabaseUrl::parse(&with_database(&server, &name)).unwrap();
            Some(Self { url, server, name, dropped: false })
        }

        /// Drops the database.
        pub(crate) async fn drop_now(mut self) {
            drop_database(&self.server, &self.name).await;
            self.dropped = true;
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            if self.dropped {
                return;
            }
            let (server, name) = (self.server.clone(), self.name.clone());
            // A failed test: drop it from a runtime of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(drop_database(&server, &name));
                }
            })
            .join();
        }
    }

    async fn drop_database(server: &str, name: &str) {
        if let Ok(mut c) = sqlx::PgConnection::connect(server).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
            let _ = c.close().await;
        }
    }

    /// `url` with its database replaced by `name`.
    pub(crate) fn with_database(url: &str, name: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let base = match base[scheme_end..].find('/') {
            Some(i) => &base[..scheme_end + i],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        }
    }
}

mod postgres_only {
    use super::pg::TestDatabase;
    use super::*;
    use crate::store::PostgresStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kdcs_starting_together_migrate_once_and_a_newer_schema_is_refused() {
        let Some(db) = TestDatabase::create("migrate_once").await else { return };
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move { PostgresStore::open(&url).await })
            })
            .collect();
        for o in opens {
            let store = o.await.unwrap().unwrap();
            assert_eq!(store.stored_schema_version().await.unwrap(), super::super::postgres::schema_version());
        }
        {
            let store = PostgresStore::open(&db.url).await.unwrap();
            sqlx::query("UPDATE kdc_schema SET version = 99").execute(store.pool()).await.unwrap();
        }
        let e = PostgresStore::open(&db.url).await.unwrap_err();
        assert!(matches!(e, StoreError::NewerSchema { found: 99, .. }), "{e}");
        db.drop_now().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_at_one_kdc_is_announced_to_the_others() {
        let Some(db) = TestDatabase::create("announced").await else { return };
        let a = PostgresStore::open(&db.url).await.unwrap();
        let b = PostgresStore::open(&db.url).await.unwrap();
        let mut signing_keys = b.changes(ChangeTopic::SigningKeys).unwrap();
        let mut keys = b.changes(ChangeTopic::PrincipalKeys).unwrap();
        // The listener's start counts as a change (whatever came before is re-read).
        let within = std::time::Duration::from_secs(5);
        tokio::time::timeout(within, signing_keys.changed()).await.unwrap().unwrap();
        tokio::time::timeout(within, keys.changed()).await.unwrap().unwrap();
        signing_keys.mark_unchanged();
        keys.mark_unchanged();
        initialized(&a).await;
        tokio::time::timeout(within, signing_keys.changed()).await.expect("initialisation announced").unwrap();
        a.create_principal(&principal("svc-id", "HTTP/svc", PrincipalKind::Service)).await.unwrap();
        a.rotate_key("svc-id", &key(2, 1100), 5000).await.unwrap();
        tokio::time::timeout(within, keys.changed()).await.expect("rotation announced").unwrap();
        signing_keys.mark_unchanged();
        a.add_signing_key(&signing("k2", 2000, 3000, None), 9000, "k1").await.unwrap();
        tokio::time::timeout(within, signing_keys.changed()).await.expect("signing-key rotation announced").unwrap();
        db.drop_now().await;
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_and_names_no_password() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = DatabaseUrl::parse(&format!("postgres://kdc:s3cret-pw@127.0.0.1:{port}/kdc")).unwrap();
        let e = PostgresStore::open(&url).await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
