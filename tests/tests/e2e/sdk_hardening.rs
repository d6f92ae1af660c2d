//! The SDK against hostile peers: forged refusals, redirects, endless bodies,
//! ruinous key-derivation costs, leftover cache files, and URLs that do not
//! name the service's host (issue 7, findings 6, 7, 11 and 12).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use client_sdk::{ClientOptions, FileCache, KdcClient, SdkError};
use kdc_e2e::*;
use kdc_proto::{Challenge, Problem, ProblemKind};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn alice() -> kdc_proto::Principal {
    "alice@EXAMPLE.TEST".parse().unwrap()
}

fn svc_a() -> kdc_proto::Principal {
    SVC_A.parse().unwrap()
}

/// A client of `kdc` with `options` (its cache defaulting to memory), logged in as alice.
async fn logged_in(kdc: &TestKdc, options: ClientOptions) -> KdcClient {
    let c = KdcClient::discover(&kdc.url, options).await.unwrap();
    c.login(&alice(), ALICE_PW).await.unwrap();
    c
}

/// An HTTP server on `127.0.0.1:0` that counts the requests it gets and
/// answers each with `answer()`.
async fn counting_server(answer: impl Fn() -> Response + Clone + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().fallback(move || {
        let (answer, counter) = (answer.clone(), counter.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            answer()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

/// What a man in the middle can say without any key: `401` with a
/// `WWW-Authenticate` error code, no mutual reply, nothing sealed.
fn forged_401(code: &'static str) -> impl Fn() -> Response + Clone + Send + Sync + 'static {
    move || {
        let kind = ProblemKind::from_error_code(code);
        let mut r = Response::new(axum::body::Body::from(Problem::new(kind.clone()).to_json()));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        let challenge = Challenge::Ticket { realm: REALM.into(), error: Some(kind), server_time: None };
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge.to_string()).unwrap());
        r
    }
}

#[tokio::test]
async fn a_forged_ticket_expired_or_kvno_unknown_does_not_make_a_post_run_twice() {
    let kdc = TestKdc::start().await.unwrap();
    let c = logged_in(&kdc, ClientOptions::default()).await;
    for code in ["ticket_expired", "kvno_unknown"] {
        let (url, calls) = counting_server(forged_401(code)).await;
        let e = c.send(&svc_a(), Method::POST, &format!("{url}/pay"), Some(b"amount=100".to_vec())).await.unwrap_err();
        assert!(
            matches!(&e, SdkError::Refused { kind, status: 401 } if *kind == ProblemKind::from_error_code(code)),
            "{code}: {e}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{code}: a POST was sent more than once");
    }
}

#[tokio::test]
async fn a_forged_ticket_expired_lets_an_idempotent_request_retry_once() {
    let kdc = TestKdc::start().await.unwrap();
    let c = logged_in(&kdc, ClientOptions::default()).await;
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (url, calls) = counting_server(forged_401("ticket_expired")).await;
        let e = c.send(&svc_a(), method.clone(), &format!("{url}/thing"), None).await.unwrap_err();
        assert!(matches!(&e, SdkError::Refused { kind: ProblemKind::TicketExpired, .. }), "{method}: {e}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{method}: one retry with a new ticket, then no more");
    }
}

#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    let kdc = TestKdc::start().await.unwrap();
    let (elsewhere, elsewhere_calls) = counting_server(|| Response::new(axum::body::Body::from("elsewhere"))).await;
    let location = format!("{elsewhere}/landing");
    let (url, calls) = counting_server(move || {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
        r
    })
    .await;
    // The redirect carries no mutual reply: with the default options it is refused as unverified.
    let c = logged_in(&kdc, ClientOptions::default()).await;
    let e = c.send(&svc_a(), Method::POST, &format!("{url}/start"), Some(b"x".to_vec())).await.unwrap_err();
    assert!(matches!(e, SdkError::MutualAuthFailed), "{e}");
    // Without mutual authentication the caller gets the 302 itself.
    let lax = logged_in(&kdc, ClientOptions::default().require_mutual(false)).await;
    let r = lax.send(&svc_a(), Method::GET, &format!("{url}/start"), None).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(elsewhere_calls.load(Ordering::SeqCst), 0, "the redirect was followed");
}

/// A real KDC's discovery document with its ticket endpoints moved to `to`.
async fn discovery_pointing_at(kdc: &TestKdc, to: &str) -> Value {
    let mut doc = kdc.client().get("/.well-known/kdc-configuration").await.unwrap().body;
    for (field, path) in [
        ("initial_ticket_endpoint", "/tickets/initial"),
        ("ticket_endpoint", "/tickets"),
        ("renew_endpoint", "/tickets/renew"),
    ] {
        doc[field] = Value::from(format!("{to}{path}"));
    }
    doc
}

/// A fake KDC: the real discovery document (endpoints moved to itself), and
/// `challenge` as the answer to every initial-ticket request.
async fn fake_kdc(kdc: &TestKdc, challenge: Value) -> String {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let doc = discovery_pointing_at(kdc, &url).await;
    let app =
        axum::Router::new().route("/.well-known/kdc-configuration", get(move || async move { axum::Json(doc) })).route(
            "/tickets/initial",
            post(move || async move { (StatusCode::UNAUTHORIZED, axum::Json(challenge.clone())) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn a_challenge_asking_for_a_gibibyte_and_sixteen_passes_is_refused_quickly() {
    let kdc = TestKdc::start().await.unwrap();
    let mut challenge = kdc.client().challenge("alice@EXAMPLE.TEST").await.unwrap().body;
    challenge["argon2"] = serde_json::json!({ "m_kib": 1024 * 1024, "t": 16, "p": 1 });
    let fake = fake_kdc(&kdc, challenge).await;
    let c = KdcClient::discover(&fake, ClientOptions::default()).await.unwrap();
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), c.login(&alice(), ALICE_PW))
        .await
        .expect("the client spent more than 5 s on a hostile challenge")
        .unwrap_err();
    assert!(matches!(e, SdkError::WeakKeyDerivation(_)), "{e}");
    assert!(e.to_string().contains("above the ceiling"), "unclear error: {e}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused only after {:?}", started.elapsed());
}

/// Stops an endless body after this many bytes and then holds the socket
/// open: a client without a cap hangs (and the test fails on its timeout)
/// instead of taking the test machine's memory.
const ENDLESS_STOP: usize = 64 * 1024 * 1024;

/// A raw HTTP/1.1 server on `127.0.0.1:0` answering every request `200`
/// with a chunked body (no `Content-Length` to check) that never ends.
async fn endless_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let start = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(start).await.is_err() {
                    return;
                }
                let piece = 64 * 1024;
                let chunk = format!("{piece:x}\r\n{}\r\n", " ".repeat(piece));
                for _ in 0..ENDLESS_STOP / piece {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn endless_kdc_answers_are_cut_off() {
    let kdc = TestKdc::start().await.unwrap();
    let endless = endless_server().await;
    // Discovery itself.
    let e = tokio::time::timeout(Duration::from_secs(10), KdcClient::discover(&endless, ClientOptions::default()))
        .await
        .expect("an endless discovery document was read for 10 s")
        .unwrap_err();
    assert!(matches!(e, SdkError::ResponseTooLarge { limit: client_sdk::MAX_KDC_RESPONSE_BYTES }), "{e}");
    // A challenge (the KDC's ticket endpoints moved to the endless server).
    let doc = discovery_pointing_at(&kdc, &endless).await;
    let (fake, _) = counting_server(move || axum::Json(doc.clone()).into_response()).await;
    let c = KdcClient::discover(&fake, ClientOptions::default()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), c.login(&alice(), ALICE_PW))
        .await
        .expect("an endless challenge was read for 10 s")
        .unwrap_err();
    assert!(matches!(e, SdkError::ResponseTooLarge { limit: client_sdk::MAX_KDC_RESPONSE_BYTES }), "{e}");
}

#[tokio::test]
async fn an_endless_service_answer_is_cut_off_at_the_configured_cap() {
    let kdc = TestKdc::start().await.unwrap();
    let endless = endless_server().await;
    for (options, limit) in [
        (ClientOptions::default(), client_sdk::DEFAULT_MAX_RESPONSE_BODY),
        (ClientOptions::default().max_response_body(1024 * 1024), 1024 * 1024),
    ] {
        let c = logged_in(&kdc, options).await;
        let e = tokio::time::timeout(Duration::from_secs(10), c.send(&svc_a(), Method::GET, &endless, None))
            .await
            .expect("an endless service answer was read for 10 s")
            .unwrap_err();
        assert!(matches!(e, SdkError::ResponseTooLarge { limit: l } if l == limit), "{e}");
    }
}

#[tokio::test]
async fn logout_removes_a_temp_file_left_by_a_crash_and_the_next_write_cleans_one() {
    let kdc = TestKdc::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tickets.json");
    let cache = Arc::new(FileCache::new(&path).unwrap());
    let c = logged_in(&kdc, ClientOptions::default().cache(cache.clone())).await;
    // A crash between creating the temporary file and renaming it over the
    // cache leaves the TGT and its session key in `<file>.tmp.<pid>.<random>`.
    let crashed = |tag: &str| dir.path().join(format!("tickets.json.tmp.999999.{tag}"));
    let secrets = std::fs::read(&path).unwrap();
    let leftover = crashed("crash1");
    std::fs::write(&leftover, &secrets).unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The next write happens under the cache's lock, so any temporary file
    // it finds is a crash's leftover: it is removed.
    c.service_ticket(&svc_a()).await.unwrap();
    assert!(!leftover.exists(), "a write left a crash's temporary file in place");
    let leftover = crashed("crash2");
    std::fs::write(&leftover, &secrets).unwrap();
    c.logout().await.unwrap();
    assert!(!path.exists());
    assert!(!leftover.exists(), "logout left a temporary file holding the TGT and session key");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains(".tmp")), "left behind: {left:?}");
}

#[tokio::test]
async fn a_cache_directory_writable_by_others_or_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for mode in [0o777, 0o770, 0o1777, 0o720] {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = FileCache::new(shared.join("tickets.json")).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{mode:o}: {e}");
    }
    // A private directory is fine (0755 lets others list it, not write).
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    FileCache::new(shared.join("tickets.json")).unwrap();
    // Owned by someone else: as root, give it away; otherwise `/` is someone else's.
    let foreign = if running_as_root() {
        std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).unwrap();
        shared.join("tickets.json")
    } else {
        std::path::PathBuf::from("/tickets.json")
    };
    let e = FileCache::new(&foreign).unwrap_err();
    assert!(e.to_string().contains("owned by another user"), "{e}");
    // `tkt` says so too, and exits non-zero.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tkt-under-test"))
        .arg("list")
        .env("TKT_CACHE", &foreign)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("owned by another user"));
}

fn running_as_root() -> bool {
    // The owner of a file this process just created is its effective user.
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().unwrap()) == 0
}

#[tokio::test]
async fn a_url_host_that_is_not_the_service_host_is_refused_before_anything_is_sent() {
    let kdc = TestKdc::start().await.unwrap();
    let options = ClientOptions::default().allow_insecure_http(true);
    let c = logged_in(&kdc, options.clone()).await;
    for url in ["http://b.example.test/hello", "http://a.example.test.evil.test/hello", "http://10.0.0.1/hello"] {
        let e = c.send(&svc_a(), Method::GET, url, None).await.unwrap_err();
        assert!(matches!(&e, SdkError::ServiceHostMismatch { expected, .. } if expected == "a.example.test"), "{e}");
        let e = c.prepare(&svc_a(), &Method::GET, url, None).await.unwrap_err();
        assert!(matches!(e, SdkError::ServiceHostMismatch { .. }), "{e}");
    }
    assert_eq!(kdc.kdc.issued().service.load(Ordering::SeqCst), 0, "a ticket was fetched for a refused URL");
    // The host the principal names (any case, a trailing dot) and loopback pass.
    for url in ["http://a.example.test/hello", "http://A.Example.TEST:8443/hello", "http://a.example.test./x"] {
        c.prepare(&svc_a(), &Method::GET, url, None).await.unwrap();
    }
    for url in ["http://127.0.0.2:1/hello", "http://[::1]:1/hello", "http://localhost:1/hello"] {
        c.prepare(&svc_a(), &Method::GET, url, None).await.unwrap();
    }
    // Told otherwise, the client sends anywhere.
    let lax = KdcClient::discover(&kdc.url, options.allow_service_host_mismatch(true)).await.unwrap();
    lax.prepare(&svc_a(), &Method::GET, "http://b.example.test/hello", None).await.unwrap();
}
