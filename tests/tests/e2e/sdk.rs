//! The client SDK and `tkt`, end to end with a real KDC and a real service.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use client_sdk::{ClientOptions, FileCache, KdcClient, MemoryCache, SdkError, TicketCache};
use kdc_e2e::*;
use kdc_server::PrincipalUpdate;
use reqwest::Method;

fn tkt_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_tkt-under-test"))
}

async fn sdk(kdc: &TestKdc, cache: Arc<dyn TicketCache>, clock: Arc<TestClock>) -> KdcClient {
    let options = ClientOptions::default().cache(cache).clock(clock);
    KdcClient::discover(&kdc.url, options).await.unwrap()
}

async fn logged_in(kdc: &TestKdc) -> KdcClient {
    let c = sdk(kdc, Arc::new(MemoryCache::default()), Arc::new(TestClock::default())).await;
    c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), ALICE_PW).await.unwrap();
    c
}

fn svc_a() -> kdc_proto::Principal {
    SVC_A.parse().unwrap()
}

#[tokio::test]
async fn login_call_and_verified_mutual_reply() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = logged_in(&kdc).await;
    let r = c.send(&svc_a(), Method::GET, &format!("{}/hello?x=1", svc.url), None).await.unwrap();
    assert_eq!((r.status.as_u16(), String::from_utf8_lossy(&r.body).as_ref()), (200, "hello, alice@EXAMPLE.TEST"));
    let r = c.send(&svc_a(), Method::POST, &format!("{}/echo", svc.url), Some(b"bound body".to_vec())).await.unwrap();
    assert_eq!(r.body, b"bound body");
    let wrong = c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), "wrong").await.unwrap_err();
    let unknown = c.login(&"nobody@EXAMPLE.TEST".parse().unwrap(), "wrong").await.unwrap_err();
    assert!(matches!(wrong, SdkError::LoginFailed) && matches!(unknown, SdkError::LoginFailed));
    assert_eq!(wrong.to_string(), unknown.to_string());
}

#[tokio::test]
async fn a_thousand_calls_cost_one_service_ticket_exchange() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = Arc::new(logged_in(&kdc).await);
    let url = format!("{}/hello", svc.url);
    // Concurrent first callers share one in-flight request.
    let first: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { c.send(&svc_a(), Method::GET, &url, None).await.unwrap().status })
        })
        .collect();
    for t in first {
        assert_eq!(t.await.unwrap(), 200);
    }
    for _ in 0..980 {
        assert_eq!(c.send(&svc_a(), Method::GET, &url, None).await.unwrap().status, 200);
    }
    assert_eq!(kdc.kdc.issued().service.load(Ordering::SeqCst), 1);
    assert_eq!(kdc.kdc.issued().initial.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_expired_service_ticket_is_replaced_transparently() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let upd = PrincipalUpdate { max_life_secs: Some(Some(60)), ..Default::default() };
    kdc.kdc.store().update_principal(SVC_A, &upd).await.unwrap();
    let clock = kdc.clock.clone();
    let c = sdk(&kdc, Arc::new(MemoryCache::default()), clock.clone()).await;
    c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), ALICE_PW).await.unwrap();
    let url = format!("{}/hello", svc.url);
    c.send(&svc_a(), Method::GET, &url, None).await.unwrap();
    // The client believes its ticket is good for hours; the service knows better.
    c.cache()
        .update(&mut |contents| {
            for t in contents.tickets.values_mut() {
                t.part.end_time += 10 * 3600;
                t.part.start_time += 10 * 3600 - 60;
            }
        })
        .unwrap();
    clock.advance_secs(400);
    let r = c.send(&svc_a(), Method::GET, &url, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(kdc.kdc.issued().service.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn tickets_are_refreshed_ahead_of_expiry() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = sdk(&kdc, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), ALICE_PW).await.unwrap();
    let url = format!("{}/hello", svc.url);
    c.send(&svc_a(), Method::GET, &url, None).await.unwrap();
    // 85 % into the ten hours: past the refresh point, still valid.
    kdc.clock.advance_secs(8 * 3600 + 1800);
    c.send(&svc_a(), Method::GET, &url, None).await.unwrap();
    assert!(kdc.kdc.issued().renewed.load(Ordering::SeqCst) >= 1, "nothing was renewed ahead of expiry");
}

#[tokio::test]
async fn a_skewed_client_clock_recovers_after_one_retry() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start_with(&kdc, SVC_A, |b| b.max_clock_skew(Duration::from_secs(60))).await.unwrap();
    let skewed = Arc::new(TestClock::default());
    skewed.advance_secs(-200);
    let c = sdk(&kdc, Arc::new(MemoryCache::default()), skewed).await;
    c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), ALICE_PW).await.unwrap();
    let url = format!("{}/hello", svc.url);
    assert_eq!(c.send(&svc_a(), Method::GET, &url, None).await.unwrap().status, 200);
    // The offset is kept: the next call needs no retry (a replayed or skewed one would fail).
    assert_eq!(c.send(&svc_a(), Method::GET, &url, None).await.unwrap().status, 200);
}

/// A man in the middle that forwards to `target` and rewrites the answer.
async fn tampering_proxy(target: String, tamper_body: bool) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method as M, Uri};
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |method: M, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, target) = (http.clone(), target.clone());
        async move {
            let url = format!("{target}{}", uri.path_and_query().map_or("/", |p| p.as_str()));
            let mut req = http.request(method, url).body(body);
            if let Some(a) = headers.get("authorization") {
                req = req.header("authorization", a);
            }
            // A transparent man in the middle keeps the Host the client sent.
            if let Some(h) = headers.get("host") {
                req = req.header("host", h);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let mut info = resp.headers().get("authentication-info").cloned();
            let mut bytes = resp.bytes().await.unwrap().to_vec();
            if tamper_body {
                bytes = b"hello, mallory@EXAMPLE.TEST".to_vec();
            } else if let Some(v) = &info {
                let s = v.to_str().unwrap().replacen("mutual=\"eyJ", "mutual=\"eyK", 1);
                info = Some(s.parse().unwrap());
            }
            let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
            *out.status_mut() = status;
            if let Some(i) = info {
                out.headers_mut().insert("authentication-info", i);
            }
            out
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn a_tampered_mutual_reply_or_response_body_is_detected() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = logged_in(&kdc).await;
    for tamper_body in [true, false] {
        let proxy = tampering_proxy(svc.url.clone(), tamper_body).await;
        let e = c.send(&svc_a(), Method::GET, &format!("{proxy}/hello"), None).await.unwrap_err();
        assert!(matches!(e, SdkError::MutualAuthFailed), "tamper_body={tamper_body}: {e}");
    }
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused() {
    let e = KdcClient::discover("http://kdc.example.test:8088", ClientOptions::default()).await.unwrap_err();
    assert!(matches!(e, SdkError::InsecureTransport(_)), "{e}");
}

#[tokio::test]
async fn the_file_cache_survives_a_restart_is_private_and_holds_no_password() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tickets.json");
    {
        let c = sdk(&kdc, Arc::new(FileCache::new(&path).unwrap()), Arc::new(TestClock::default())).await;
        c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), ALICE_PW).await.unwrap();
        c.send(&svc_a(), Method::GET, &format!("{}/hello", svc.url), None).await.unwrap();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(ALICE_PW) && !text.contains("horse"));
    // A new process (a new client on the same file) needs no login and no new ticket.
    let c = sdk(&kdc, Arc::new(FileCache::new(&path).unwrap()), Arc::new(TestClock::default())).await;
    c.send(&svc_a(), Method::GET, &format!("{}/hello", svc.url), None).await.unwrap();
    assert_eq!(kdc.kdc.issued().service.load(Ordering::SeqCst), 1);
    // After logout every call fails and the file is gone.
    c.logout().await.unwrap();
    assert!(!path.exists());
    let e = c.send(&svc_a(), Method::GET, &format!("{}/hello", svc.url), None).await.unwrap_err();
    assert!(matches!(e, SdkError::NotLoggedIn), "{e}");
}

pub(crate) async fn tkt(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(tkt_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut i = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).await.unwrap();
    }
    drop(i);
    child.wait_with_output().await.unwrap()
}

#[tokio::test]
async fn tkt_processes_share_a_cache_and_tkt_header_works_once() {
    let kdc = TestKdc::start().await.unwrap();
    let a = TestService::start(&kdc, SVC_A).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache").join("tickets.json");
    let env = [("TKT_KDC_URL", kdc.url.as_str()), ("TKT_CACHE", cache.to_str().unwrap())];
    let out = tkt(&["login", "alice", "--password-stdin"], &env, Some(&format!("{ALICE_PW}\n"))).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = tkt(
        &["login", "alice", "--password-stdin"],
        &[("TKT_KDC_URL", kdc.url.as_str()), ("TKT_CACHE", dir.path().join("other").to_str().unwrap())],
        Some("nope\n"),
    )
    .await;
    assert_eq!(bad.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).trim(), "tkt: login failed: wrong principal name or password");

    // Two processes at once, each getting tickets for other services, many times.
    let runs: Vec<_> = [SVC_A, SVC_B]
        .into_iter()
        .map(|s| {
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            tokio::spawn(async move {
                for _ in 0..5 {
                    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let out = tkt(&["get", s], &e, None).await;
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                }
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    let list = tkt(&["list"], &env, None).await;
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    for s in ["krbtgt/EXAMPLE.TEST@EXAMPLE.TEST", SVC_A, SVC_B] {
        assert!(listed.contains(s), "{s} missing from:\n{listed}");
    }

    // `tkt header` works once, then is a replay.
    let url = format!("{}/hello", a.url);
    let out = tkt(&["header", "--service", SVC_A, &url], &env, None).await;
    let header = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let first = send(&http, "GET", &url, Some(&header), None).await.unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "hello, alice@EXAMPLE.TEST"));
    let again = send(&http, "GET", &url, Some(&header), None).await.unwrap();
    assert_eq!(again.error_code().as_deref(), Some("replay"));

    let out = tkt(&["request", "--service", SVC_A, &url], &env, None).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello, alice@EXAMPLE.TEST");
    let out = tkt(&["logout"], &env, None).await;
    assert!(out.status.success());
    assert!(!cache.exists());
    let out = tkt(&["request", "--service", SVC_A, &url], &env, None).await;
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_disabled_principal_is_told_so_not_asked_to_log_in_again() {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = logged_in(&kdc).await;
    let upd = PrincipalUpdate { disabled: Some(true), ..Default::default() };
    kdc.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    let e = c.send(&svc_a(), Method::GET, &format!("{}/hello", svc.url), None).await.unwrap_err();
    assert!(e.to_string().contains("client-not-permitted"), "{e}");
}
