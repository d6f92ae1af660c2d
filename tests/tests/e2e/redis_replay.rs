//! Several instances of a service on one Redis replay cache (issue 9): a
//! replay at a sibling instance is refused, and a Redis that goes away makes
//! requests fail closed, then recover by themselves when it is back.
//!
//! These need Redis: they read `KDC_TEST_REDIS_URL` (e.g.
//! `redis://127.0.0.1:6379`). Without it they say what they skipped and pass;
//! with it set and Redis unreachable they fail. The stop-and-restart test
//! never touches that shared Redis: it starts a private `redis-server` (no
//! persistence) on a free port, kills it and starts it again on that port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kdc_e2e::{ALICE_PW, Credentials, SVC_A, ServiceAnswer, TestKdc, now, write_keytab};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The example service, built from its source in the test package.
fn hello_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hello-under-test"))
}

/// The shared Redis's URL, or `None` (and a note of what was skipped).
fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("KDC_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("SKIPPED redis_replay::{test}: KDC_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)");
    }
    url
}

/// `host:port` of a `redis://host:port[/db]` URL (no credentials in tests).
fn redis_addr(url: &str) -> String {
    let rest = url.strip_prefix("redis://").expect("a redis:// URL");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:6379") }
}

/// Whether a Redis answers `PING` at `addr`.
async fn redis_answers(addr: &str) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await, Ok(Ok(_)))
        && &buf == b"+PONG\r\n"
}

/// A `hello_service` process on Redis.
struct Hello {
    url: String,
    child: tokio::process::Child,
}

impl Hello {
    async fn start(keytab: &Path, kdc: &str, redis: &str, max_skew: u64) -> Self {
        let mut child = tokio::process::Command::new(hello_bin())
            .arg("--keytab")
            .arg(keytab)
            .args(["--kdc", kdc, "--listen", "127.0.0.1:0", "--redis-url", redis])
            .args(["--max-skew", &max_skew.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("hello_service did not start in time")
                .unwrap()
                .expect("hello_service exited before serving");
            if let Some(i) = line.find("http://") {
                break line[i..].trim().to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { url, child }
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The Host the service's instances are reached under (behind one load
/// balancer): the service principal's instance. Authenticators bind it.
const SERVICE_HOST: &str = "a.example.test";

/// An `Authorization` value for `GET /hello` at the service's address.
fn authorization(creds: &Credentials) -> String {
    kdc_e2e::ap_authorization(creds, "GET", &format!("http://{SERVICE_HOST}/hello"), None, now()).0
}

/// `GET /hello` at one instance, as the load balancer would forward it.
async fn get(instance: &Hello, authz: &str) -> ServiceAnswer {
    get_at(&instance.url, authz).await
}

async fn get_at(base: &str, authz: &str) -> ServiceAnswer {
    kdc_e2e::get_with_host(&format!("{base}/hello"), SERVICE_HOST, authz).await
}

async fn alice(kdc: &TestKdc) -> Credentials {
    let c = kdc.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    c.service_ticket(&tgt, SVC_A).await.unwrap()
}

#[tokio::test]
async fn an_authenticator_accepted_by_one_instance_is_refused_as_a_replay_by_another() {
    let Some(redis) = redis_url("an_authenticator_accepted_by_one_instance_is_refused_as_a_replay_by_another") else {
        return;
    };
    assert!(redis_answers(&redis_addr(&redis)).await, "KDC_TEST_REDIS_URL is set but no Redis answers at {redis}");
    let kdc = TestKdc::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keytab = dir.path().join("a.keytab");
    write_keytab(&kdc, SVC_A, &keytab).await.unwrap();
    let (one, two) =
        tokio::join!(Hello::start(&keytab, &kdc.url, &redis, 300), Hello::start(&keytab, &kdc.url, &redis, 300));
    let creds = alice(&kdc).await;

    let authz = authorization(&creds);
    let first = get(&one, &authz).await;
    assert_eq!((first.status, first.text().as_str()), (200, "hello, alice@EXAMPLE.TEST\n"));
    let replayed = get(&two, &authz).await;
    assert_eq!((replayed.status, replayed.error_code().as_deref()), (401, Some("replay")), "{}", replayed.text());
    let body: serde_json::Value = serde_json::from_slice(&replayed.body).unwrap();
    assert_eq!(body["type"], "urn:kdc-http:problem:replay");
    // And the other way round, and at the same instance.
    let authz = authorization(&creds);
    assert_eq!(get(&two, &authz).await.status, 200);
    assert_eq!(get(&one, &authz).await.error_code().as_deref(), Some("replay"));
    assert_eq!(get(&two, &authz).await.error_code().as_deref(), Some("replay"));
    // Fresh authenticators pass at either, concurrently: no false replays.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let authz = authorization(&creds);
        let url = if i % 2 == 0 { one.url.clone() } else { two.url.clone() };
        calls.spawn(async move { get_at(&url, &authz).await.status });
    }
    let statuses = calls.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// A private `redis-server` with no persistence, on `port`.
struct PrivateRedis {
    child: tokio::process::Child,
}

impl PrivateRedis {
    async fn start(port: u16, dir: &Path) -> Self {
        Self::start_with(port, dir, &[]).await
    }

    async fn start_with(port: u16, dir: &Path, extra: &[&str]) -> Self {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (KDC_TEST_REDIS_URL is set, so Redis is expected to be installed)");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while !redis_answers(&addr).await {
            assert!(started.elapsed() < Duration::from_secs(10), "the private redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child }
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// Sends fresh authenticators until one is accepted: refused meanwhile only
/// as `503` or as stale, and for at most about two skews.
async fn until_accepted(instance: &Hello, creds: &Credentials, skew: u64) {
    let started = Instant::now();
    loop {
        let ans = get(instance, &authorization(creds)).await;
        if ans.status == 200 {
            return;
        }
        assert!(
            ans.status == 503 || ans.error_code().as_deref() == Some("stale_authenticator"),
            "while warming up: {} {:?}",
            ans.status,
            ans.error_code()
        );
        assert!(started.elapsed() < Duration::from_secs(skew * 2 + 10), "never accepted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Redis that may evict keys (here `allkeys-lru`, the default of some
/// managed offerings) could forget a live entry and let its replay through:
/// the cache vouches for nothing on it, and every request fails closed.
#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused() {
    let Some(shared) = redis_url("a_redis_that_may_evict_keys_is_refused") else {
        return;
    };
    assert!(redis_answers(&redis_addr(&shared)).await, "KDC_TEST_REDIS_URL is set but no Redis answers at {shared}");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _redis = PrivateRedis::start_with(port, dir.path(), &["--maxmemory-policy", "allkeys-lru"]).await;
    let kdc = TestKdc::start().await.unwrap();
    let keytab = dir.path().join("a.keytab");
    write_keytab(&kdc, SVC_A, &keytab).await.unwrap();
    let one = Hello::start(&keytab, &kdc.url, &format!("redis://127.0.0.1:{port}"), 5).await;
    let creds = alice(&kdc).await;
    for _ in 0..3 {
        let ans = get(&one, &authorization(&creds)).await;
        assert_eq!(ans.status, 503, "an evicting Redis must not vouch: {}", ans.text());
        let body: serde_json::Value = serde_json::from_slice(&ans.body).unwrap();
        assert_eq!(body["type"], "urn:kdc-http:problem:replay-cache-unavailable");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn with_redis_stopped_requests_fail_closed_and_recover_when_it_is_back() {
    let Some(shared) = redis_url("with_redis_stopped_requests_fail_closed_and_recover_when_it_is_back") else {
        return;
    };
    assert!(redis_answers(&redis_addr(&shared)).await, "KDC_TEST_REDIS_URL is set but no Redis answers at {shared}");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = PrivateRedis::start(port, dir.path()).await;
    let url = format!("redis://127.0.0.1:{port}");
    let kdc = TestKdc::start().await.unwrap();
    let keytab = dir.path().join("a.keytab");
    write_keytab(&kdc, SVC_A, &keytab).await.unwrap();
    // A short skew, so the warm-up after Redis comes back empty is short.
    const SKEW: u64 = 5;
    let (one, two) =
        tokio::join!(Hello::start(&keytab, &kdc.url, &url, SKEW), Hello::start(&keytab, &kdc.url, &url, SKEW));
    let creds = alice(&kdc).await;
    // This Redis has just started: it cannot tell a first use from a restart
    // that lost what was accepted, so authenticators whose window opened
    // before its start are refused as stale until one skew has passed.
    for instance in [&one, &two] {
        until_accepted(instance, &creds, SKEW).await;
    }
    let accepted = authorization(&creds);
    assert_eq!(get(&one, &accepted).await.status, 200);
    assert_eq!(get(&two, &authorization(&creds)).await.status, 200);

    redis.kill().await;
    for instance in [&one, &two, &one, &two] {
        let started = Instant::now();
        let ans = get(instance, &authorization(&creds)).await;
        assert_eq!(ans.status, 503, "Redis is down: fail closed, {}", ans.text());
        assert_eq!(ans.retry_after.as_deref(), Some("1"));
        let body: serde_json::Value = serde_json::from_slice(&ans.body).unwrap();
        assert_eq!(body["type"], "urn:kdc-http:problem:replay-cache-unavailable");
        assert!(started.elapsed() < Duration::from_secs(3), "a down Redis answers quickly: {:?}", started.elapsed());
    }
    // The replay of what was accepted is not let through either.
    assert_eq!(get(&two, &accepted).await.status, 503);

    let _redis = PrivateRedis::start(port, dir.path()).await;
    // Back, but empty: what it held is lost, so the authenticator accepted
    // before is refused (first 503 while each instance learns of the loss,
    // then as stale), never accepted again.
    for instance in [&two, &one, &two, &one] {
        let ans = get(instance, &accepted).await;
        assert!(
            ans.status == 503 || ans.error_code().as_deref() == Some("stale_authenticator"),
            "a replay after Redis lost its data: {} {:?}",
            ans.status,
            ans.error_code()
        );
    }
    // Fresh requests succeed again by themselves once the lost window has
    // passed (no restart of the service).
    for instance in [&one, &two] {
        until_accepted(instance, &creds, SKEW).await;
    }
    // And the cache works again across instances.
    let authz = authorization(&creds);
    assert_eq!(get(&one, &authz).await.status, 200);
    assert_eq!(get(&two, &authz).await.error_code().as_deref(), Some("replay"));
}
