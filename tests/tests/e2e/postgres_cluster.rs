//! Several KDC processes on one PostgreSQL database: what one writes, the
//! others use at once; an acknowledged write survives `kill -9` (on
//! PostgreSQL and on SQLite); a `pg_dump` restored into a fresh database
//! serves the realm.
//!
//! The PostgreSQL tests need `KDC_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`); each makes a database of
//! its own and drops it. Without the variable they say what they skipped and
//! pass; with it set and the server unreachable they fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kdc_e2e::*;
use serde_json::json;

use crate::admin::Admin;
use crate::kdc_bin;

/// Clock skew of these KDCs: with a database URL the admin layer's replay
/// cache is in memory, so admin requests are refused as stale for one
/// max-skew after a start; 2 s keeps the tests short.
const SKEW_SECS: u64 = 2;

/// A database of its own on the test server, dropped when this is.
struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]).output().unwrap()
}

impl TestDatabase {
    /// `None` (and a line saying so) without `KDC_TEST_POSTGRES_URL`;
    /// panics when it is set and the server cannot be reached.
    fn create(what: &str) -> Option<Self> {
        let Some(server) = std::env::var("KDC_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped {what}: KDC_TEST_POSTGRES_URL is not set");
            return None;
        };
        // Unique on this server: this process, and a count within it.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kdc_e2e_{what}_{}_{n}", std::process::id());
        let out = psql(&server, &format!("CREATE DATABASE \"{name}\""));
        assert!(
            out.status.success(),
            "KDC_TEST_POSTGRES_URL is set but the server cannot be reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = kdc_e2e::postgres_url_with_database(&server, &name);
        Some(Self { server, name, url })
    }

    /// Another empty database, dropped with this one.
    fn sibling(&self, suffix: &str) -> TestDatabase {
        let name = format!("{}_{suffix}", self.name);
        let out = psql(&self.server, &format!("CREATE DATABASE \"{name}\""));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        TestDatabase {
            server: self.server.clone(),
            url: kdc_e2e::postgres_url_with_database(&self.server, &name),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = psql(&self.server, &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
    }
}

/// A `kdc.toml` with a short skew, in `dir`.
fn config_in(dir: &Path) -> PathBuf {
    let path = dir.join("kdc.toml");
    std::fs::write(&path, format!("[policy]\nmax_skew_secs = {SKEW_SECS}\n")).unwrap();
    path
}

/// `kdc ARGS --data DATA [--database-url URL] --config CONFIG`.
async fn kdc(args: &[&str], data: &Path, db: Option<&str>, config: &Path, stdin: Option<&str>) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data", data.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    if let Some(url) = db {
        all.extend(["--database-url", url]);
    }
    kdc_command(&kdc_bin(), &all, stdin).await.unwrap()
}

/// A realm (admin, alice, service A) in `dir/data`, its principals in `db`
/// when given, else in SQLite.
async fn realm(dir: &Path, db: Option<&str>) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let config = config_in(dir);
    let init = ["init", "--realm", "EXAMPLE.TEST", "--admin-password-stdin"];
    kdc(&init, &data, db, &config, Some("bootstrap-pw-123\n")).await;
    let add = ["principal", "add", "alice", "--password-stdin"];
    kdc(&add, &data, db, &config, Some(&format!("{ALICE_PW}\n"))).await;
    kdc(&["principal", "add", SVC_A, "--service"], &data, db, &config, None).await;
    (data, config)
}

async fn serve(data: &Path, db: Option<&str>, config: &Path) -> KdcProcess {
    let mut extra = vec!["--config", config.to_str().unwrap()];
    if let Some(url) = db {
        extra.extend(["--database-url", url]);
    }
    KdcProcess::start_with(&kdc_bin(), data, &extra).await.unwrap()
}

/// An admin session at `url`, once the admin layer's warm-up is over.
async fn admin_at(url: &str) -> Admin {
    tokio::time::sleep(Duration::from_secs(SKEW_SECS + 1)).await;
    Admin::login(url, "admin@EXAMPLE.TEST", "bootstrap-pw-123").await
}

fn kvno_of(ticket: &str) -> u32 {
    kdc_proto::SealedTicket::parse(ticket).unwrap().kvno.0
}

#[tokio::test]
async fn two_kdcs_on_one_database_see_each_others_writes_at_once() {
    let Some(db) = TestDatabase::create("two_kdcs") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = realm(dir.path(), Some(&db.url)).await;
    // Both on the same data directory (master key) and database.
    let a = serve(&data, Some(&db.url), &config).await;
    let b = serve(&data, Some(&db.url), &config).await;
    let (ca, cb) = (ProtoClient::new(&a.url), ProtoClient::new(&b.url));

    // A TGT from A buys a service ticket at B.
    let tgt = ca.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let st = cb.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(kvno_of(&st.ticket), 1);

    // A principal created through A's admin API logs in at B at once.
    let admin = admin_at(&a.url).await;
    let (s, body, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "carol", "kind": "user", "password_sealed": admin.seal("carol's long password")})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let carol = cb.login("carol@EXAMPLE.TEST", "carol's long password").await.unwrap();
    cb.service_ticket(&carol, SVC_A).await.unwrap();

    // A service-key rotation at A: B issues tickets under the new key at once.
    let (s, body, _) = admin
        .call("POST", &format!("/admin/principals/{}/rotate", SVC_A.replace('/', "%2F").replace('@', "%40")), None)
        .await;
    assert_eq!(s, 200, "{body}");
    let st = cb.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(kvno_of(&st.ticket), 2, "B uses the key A rotated to");

    // Disabled at A: refused at B at once, even with its older TGT.
    let (s, _, _) = admin.call("PATCH", "/admin/principals/carol", Some(json!({"disabled": true}))).await;
    assert_eq!(s, 200);
    let req = ProtoClient::tgs_request(&carol, SVC_A, now()).unwrap();
    assert_eq!(cb.tgs(&carol, &req).await.unwrap().unwrap_err().status, 403);

    // The admin session from A's ticket works at B's admin API too.
    let admin_b = Admin { http: reqwest::Client::new(), url: b.url.clone(), creds: admin.creds.clone() };
    let (s, body, _) = admin_b.call("GET", "/admin/principals/carol", None).await;
    assert_eq!((s, body["disabled"].as_bool()), (200, Some(true)), "{body}");

    // A signing-key rotation (the `kdc` command, on the database): both
    // KDCs publish the new key without waiting for their periodic reload.
    let before = published_kids(&b.url).await.unwrap();
    let out = kdc(&["signing-key", "rotate", "--activate-after", "3600"], &data, Some(&db.url), &config, None).await;
    let kid = out.split_whitespace().nth(3).unwrap().trim_end_matches(':').to_owned();
    assert!(!before.contains(&kid), "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for url in [&a.url, &b.url] {
        loop {
            if published_kids(url).await.unwrap().contains(&kid) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{url} did not publish {kid} within 2 s (reload: 5 s)");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Both agree on every key's state, read from the one store.
    let listed = kdc(&["signing-key", "list"], &data, Some(&db.url), &config, None).await;
    assert!(listed.lines().any(|l| l.starts_with(&kid) && l.contains("\tnext\t")), "{listed}");
}

/// A burst of service creations through the admin API, `kill -9` in the
/// middle: every creation answered `201` is in the store after a restart.
async fn creations_survive_kill_9(db: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = realm(dir.path(), db).await;
    let kdc_a = serve(&data, db, &config).await;
    let admin = std::sync::Arc::new(admin_at(&kdc_a.url).await);
    let mut workers = Vec::new();
    for w in 0..4 {
        let admin = admin.clone();
        workers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let name = format!("HTTP/w{w}-{i}.example.test");
                let body = Some(json!({"name": name, "kind": "service"}));
                // The call panics (inside this task) once the KDC is gone.
                let attempt = tokio::spawn({
                    let admin = admin.clone();
                    async move { admin.call("POST", "/admin/principals", body).await.0 }
                });
                match attempt.await {
                    Ok(201) => acknowledged.push(format!("{name}@EXAMPLE.TEST")),
                    Ok(s) => panic!("creation answered {s}"),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kdc_a.kill9().await.unwrap();
    let mut acknowledged = Vec::new();
    for w in workers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(acknowledged.len() >= 4, "the burst made too few creations to mean anything: {}", acknowledged.len());
    // Restarted on the same store: every acknowledged creation is there.
    let kdc_b = serve(&data, db, &config).await;
    let listed = kdc(&["principal", "list"], &data, db, &config, None).await;
    for name in &acknowledged {
        assert!(listed.lines().any(|l| l.starts_with(&format!("{name}\t"))), "{name} was acknowledged, then lost");
    }
    let c = ProtoClient::new(&kdc_b.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    c.service_ticket(&tgt, acknowledged.last().unwrap()).await.unwrap();
}

#[tokio::test]
async fn kill_9_during_a_burst_of_creations_loses_no_acknowledged_one_on_postgresql() {
    let Some(db) = TestDatabase::create("kill9") else { return };
    creations_survive_kill_9(Some(&db.url)).await;
}

#[tokio::test]
async fn kill_9_during_a_burst_of_creations_loses_no_acknowledged_one_on_sqlite() {
    creations_survive_kill_9(None).await;
}

#[tokio::test]
async fn a_dump_restored_into_a_fresh_database_serves_the_realm() {
    let Some(db) = TestDatabase::create("backup") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = realm(dir.path(), Some(&db.url)).await;
    kdc(&["principal", "rotate", SVC_A], &data, Some(&db.url), &config, None).await;
    // The commands of docs/DEPLOYMENT.md, "Backup and restore".
    let dump = dir.path().join("kdc.dump");
    let out = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&dump)
        .arg(&db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    let fresh = db.sibling("restored");
    let out = std::process::Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &fresh.url])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    // The original is gone; the restored copy serves with the same master key.
    drop(db);
    let k = serve(&data, Some(&fresh.url), &config).await;
    let c = ProtoClient::new(&k.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(kvno_of(&st.ticket), 2, "the rotation was in the dump");
}

#[tokio::test]
async fn a_database_url_is_never_shown_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing listens there: the command fails, naming the URL without its password.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://kdc:s3cret-pw@127.0.0.1:{port}/kdc");
    let out = tokio::process::Command::new(kdc_bin())
        .args(["init", "--data", data.to_str().unwrap(), "--database-url", &url])
        .env_remove("KDC_MASTER_KEY")
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(text.contains("postgres://kdc:***@127.0.0.1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    // Nor does --help show the environment's value.
    let out =
        tokio::process::Command::new(kdc_bin()).arg("--help").env("KDC_DATABASE_URL", &url).output().await.unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
}
