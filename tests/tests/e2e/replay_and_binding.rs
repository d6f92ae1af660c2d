//! Issue 7's findings on the service side, attacked over real HTTP: replay
//! across a restart (3), replay at the edge of the skew window (4), a request
//! replayed to another host (7), role rules bypassed by path spelling (8).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use auth_middleware::AuthorityPolicy;
use kdc_e2e::*;
use kdc_proto::{Clock, UnixMillis};

/// A clock the test sets to the millisecond.
#[derive(Debug)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn at(t: UnixMillis) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(t.0)))
    }
    fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

async fn alice_for(kdc: &TestKdc, service: &str) -> Credentials {
    let c = kdc.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    c.service_ticket(&tgt, service).await.unwrap()
}

/// A service on a replay-state file accepts an authenticator from a client
/// whose clock runs 60 s fast, then stops (saving its cache when `clean`) and
/// comes back on the same address and file (the captured request names that
/// address).
struct Restarted {
    kdc: TestKdc,
    again: TestService,
    alice: Credentials,
    captured: String,
    _dir: tempfile::TempDir,
}

async fn accept_then_restart(clean: bool) -> Restarted {
    let kdc = TestKdc::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("replay.state");
    let first = TestService::start_with(&kdc, SVC_A, |b| b.replay_state_file(&state)).await.unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let url = format!("{}/hello", first.url);
    let (captured, _) = ap_authorization(&alice, "GET", &url, None, now().plus_secs(60));
    assert_eq!(send(&reqwest::Client::new(), "GET", &url, Some(&captured), None).await.unwrap().status, 200);
    let addr = first.url.trim_start_matches("http://").to_owned();
    if clean {
        first.layer.save_replay_state().unwrap();
    }
    drop(first);
    let again = TestService::start_on(&kdc, SVC_A, &addr, |b| b.replay_state_file(&state)).await.unwrap();
    Restarted { kdc, again, alice, captured, _dir: dir }
}

/// Finding 3: a client whose clock runs 60 s fast makes an authenticator
/// that the old process accepts; the process crashes (saves nothing) and
/// restarts with an empty cache. Its window opened before the new cache existed, so it is
/// refused as stale (it was accepted before as `ts >= start`).
#[tokio::test]
async fn a_fast_clients_authenticator_is_not_replayable_after_a_crash() {
    let Restarted { kdc, again, alice, captured: authz, _dir } = accept_then_restart(false).await;
    let ans = send(&reqwest::Client::new(), "GET", &format!("{}/hello", again.url), Some(&authz), None).await.unwrap();
    assert_eq!((ans.status, ans.error_code().as_deref()), (401, Some("stale_authenticator")));
    // So is a fresh one, until the skew window since the restart has passed:
    // the cache cannot tell it from one the dead process saw.
    let (ans, _) = call_service(&reqwest::Client::new(), &alice, "GET", &again.url, "/hello", None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("stale_authenticator"));
    kdc.clock.advance_secs(301);
    let url = format!("{}/hello", again.url);
    let (fresh, _) = ap_authorization(&alice, "GET", &url, None, kdc.clock.now());
    let ans = send(&reqwest::Client::new(), "GET", &url, Some(&fresh), None).await.unwrap();
    assert_eq!(ans.status, 200, "after the warm-up, fresh authenticators pass");
}

/// A clean shutdown saves the cache: the next start needs no warm-up, and
/// what the previous process accepted is still a replay.
#[tokio::test]
async fn a_clean_restart_keeps_the_replay_cache_and_needs_no_warm_up() {
    let Restarted { again, alice, captured: authz, .. } = accept_then_restart(true).await;
    let ans = send(&reqwest::Client::new(), "GET", &format!("{}/hello", again.url), Some(&authz), None).await.unwrap();
    assert_eq!((ans.status, ans.error_code().as_deref()), (401, Some("replay")));
    let (ans, _) = call_service(&reqwest::Client::new(), &alice, "GET", &again.url, "/hello", None).await.unwrap();
    assert_eq!(ans.status, 200);
}

/// Finding 4: at exactly `ts + skew` the authenticator is still timely, so
/// the cache must still remember it (it used to count as gone at that very
/// millisecond); one millisecond later it is out of the window.
#[tokio::test]
async fn a_replay_at_the_last_millisecond_of_the_window_is_refused() {
    let kdc = TestKdc::start().await.unwrap();
    let t = now();
    let clock = ManualClock::at(t);
    let svc = TestService::start_with(&kdc, SVC_A, |b| b.clock(clock.clone())).await.unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let url = format!("{}/hello", svc.url);
    let http = reqwest::Client::new();
    let (authz, _) = ap_authorization(&alice, "GET", &url, None, t);
    assert_eq!(send(&http, "GET", &url, Some(&authz), None).await.unwrap().status, 200);
    clock.set(t.plus_secs(300));
    let ans = send(&http, "GET", &url, Some(&authz), None).await.unwrap();
    assert_eq!((ans.status, ans.error_code().as_deref()), (401, Some("replay")));
    clock.set(UnixMillis(t.plus_secs(300).0 + 1));
    let ans = send(&http, "GET", &url, Some(&authz), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("clock_skew"));
    // And the other edge: `ts - skew` is inside, one millisecond before is not.
    let (early, _) = ap_authorization(&alice, "GET", &url, None, t.plus_secs(600));
    clock.set(UnixMillis(t.plus_secs(300).0 - 1));
    assert_eq!(send(&http, "GET", &url, Some(&early), None).await.unwrap().error_code().as_deref(), Some("clock_skew"));
    clock.set(t.plus_secs(300));
    assert_eq!(send(&http, "GET", &url, Some(&early), None).await.unwrap().status, 200);
}

/// Finding 7: two deployments share `HTTP/a.example.test` (and its key) but
/// not a replay cache. A request captured on its way to one cannot be
/// replayed at the other: the authority is bound, and each answers only
/// for its own.
#[tokio::test]
async fn a_request_captured_for_one_host_is_refused_by_another_sharing_the_principal() {
    let kdc = TestKdc::start().await.unwrap();
    let one = TestService::start_with(&kdc, SVC_A, |b| {
        b.authorities(AuthorityPolicy::Only(vec!["a.example.test:8001".into()]))
    })
    .await
    .unwrap();
    let two = TestService::start_with(&kdc, SVC_A, |b| {
        b.authorities(AuthorityPolicy::Only(vec!["a.example.test:8002".into()]))
    })
    .await
    .unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let (authz, _) = ap_authorization(&alice, "GET", "http://a.example.test:8001/hello", None, now());
    assert_eq!(get_with_host(&format!("{}/hello", one.url), "a.example.test:8001", &authz).await.status, 200);
    // Replayed at the other, naming the original host: not its host.
    let ans = get_with_host(&format!("{}/hello", two.url), "a.example.test:8001", &authz).await;
    assert_eq!((ans.status, ans.error_code().as_deref()), (401, Some("binding_mismatch")));
    // Naming the other's own host: the binding no longer matches.
    let ans = get_with_host(&format!("{}/hello", two.url), "a.example.test:8002", &authz).await;
    assert_eq!((ans.status, ans.error_code().as_deref()), (401, Some("binding_mismatch")));
}

/// An authenticator is good for one request, wherever it is presented: the
/// replay check comes before the binding check. A header already used, moved
/// to another request (here another query; at a sibling instance, another
/// `Host`), is answered `replay`; a fresh one presented with the wrong request
/// is refused as `binding_mismatch` and used up by it.
#[tokio::test]
async fn an_authenticator_is_used_up_by_any_request_it_is_presented_with() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let (used, _) = ap_authorization(&alice, "GET", "http://a.example.test/hello", None, now());
    assert_eq!(get_with_host(&format!("{}/hello", svc.url), "a.example.test", &used).await.status, 200);
    let moved = get_with_host(&format!("{}/hello?moved=1", svc.url), "a.example.test", &used).await;
    assert_eq!((moved.status, moved.error_code().as_deref()), (401, Some("replay")));

    let (fresh, _) = ap_authorization(&alice, "GET", "http://a.example.test/hello", None, now());
    let wrong = get_with_host(&format!("{}/hello?moved=1", svc.url), "a.example.test", &fresh).await;
    assert_eq!((wrong.status, wrong.error_code().as_deref()), (401, Some("binding_mismatch")));
    let late = get_with_host(&format!("{}/hello", svc.url), "a.example.test", &fresh).await;
    assert_eq!((late.status, late.error_code().as_deref()), (401, Some("replay")));
}

/// Finding 7, default policy: a service answers for its principal's host
/// (and loopback), not for another name.
#[tokio::test]
async fn by_default_a_service_answers_only_for_its_principals_host() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let url = format!("{}/hello", svc.url);
    let (authz, _) = ap_authorization(&alice, "GET", "http://b.example.test/hello", None, now());
    assert_eq!(get_with_host(&url, "b.example.test", &authz).await.error_code().as_deref(), Some("binding_mismatch"));
    let (authz, _) = ap_authorization(&alice, "GET", "http://A.Example.Test/hello", None, now());
    assert_eq!(get_with_host(&url, "a.example.test", &authz).await.status, 200);
}

/// Finding 8: role rules apply to the path as anything behind the layer
/// may read it. Without the role, every spelling of `/admin/x` is refused
/// with 403 (they used to pass the layer, which matched the raw prefix).
#[tokio::test]
async fn role_rules_cannot_be_bypassed_by_spelling_the_path_differently() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let http = reqwest::Client::new();
    for path in ["/admin/x", "//admin/x", "/%61dmin/x", "/%61%64%6D%69%6E/x", "/hello/../admin/x", "/./admin/x"] {
        let (ans, _) = call_service(&http, &alice, "GET", &svc.url, path, None).await.unwrap();
        assert_eq!(ans.status, 403, "{path} was not held to the admin rule");
    }
    // Paths an HTTP client library would resolve before sending, written on
    // the socket as they are: a router matching the raw path sees them
    // under /admin (`/admin/{id}` with id = ".."), so the rule must too.
    let host = svc.url.trim_start_matches("http://").to_owned();
    for path in ["/admin/..", "/admin/%2e%2e", "/admin/%2E%2E/"] {
        let binding = kdc_proto::RequestBinding::new("GET", &host, path, None);
        let a = kdc_proto::Authenticator::new(alice.client.clone(), now(), &binding)
            .seal(&alice.enc.session_key, kdc_proto::Usage::Authenticator)
            .unwrap();
        let authz = kdc_proto::authorization_value(&alice.ticket, &a);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(&host).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authz}\r\nConnection: close\r\n\r\n");
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        sock.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 403"), "{path} was not held to the admin rule: {text}");
    }
    // A path that only shares the prefix's letters is not under the rule.
    let (ans, _) = call_service(&http, &alice, "GET", &svc.url, "/administrator", None).await.unwrap();
    assert_eq!(ans.status, 404);
}

/// Finding 7 and the header parser: two `Host` headers are refused.
#[tokio::test]
async fn two_host_headers_are_refused() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let alice = alice_for(&kdc, SVC_A).await;
    let url = format!("{}/hello", svc.url);
    let (authz, _) = ap_authorization(&alice, "GET", &url, None, now());
    // Raw HTTP: reqwest will not send two Host headers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = svc.url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /hello HTTP/1.1\r\nHost: {addr}\r\nHost: other.example.test\r\nAuthorization: {authz}\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Finding 9: 200 sockets that send half a request head. The KDC closes
/// what one address opens beyond its cap at once, and the rest when the
/// request-head deadline passes (they used to stay open for minutes); a
/// well-behaved client is served throughout.
#[tokio::test]
async fn slow_clients_cannot_hold_the_kdc() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = auth_middleware::ServeLimits::default()
        .header_read_timeout(Duration::from_millis(1500))
        .max_connections_per_address(64);
    let kdc = TestKdc::start_full(Default::default(), Default::default(), limits).await.unwrap();
    let addr = kdc.url.trim_start_matches("http://").to_owned();
    let mut socks = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(b"POST /tickets HTTP/1.1\r\nHost: kdc\r\nContent-Len").await;
        socks.push(s);
    }
    // Served meanwhile, from another loopback address.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(addr.parse().unwrap()).await.unwrap();
    other.write_all(b"GET /healthz HTTP/1.1\r\nHost: kdc\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
    // Within the deadline (and a margin), every slow socket is closed.
    let mut closed = 0;
    for s in &mut socks {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                // A 408/400 answer before closing also frees the socket.
                closed += 1;
            }
            Err(_) => {}
        }
    }
    assert_eq!(closed, 200, "only {closed} of 200 slow connections were closed");
}
