//! The SDK for services: keytab logins (as `kinit -k`), logging in again by
//! itself, fresh service tickets on demand, one-round-trip password logins,
//! and request bodies with a content type (the KDC's admin API).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use client_sdk::{ClientOptions, FileCache, KdcClient, MemoryCache, SdkError, ServiceRequest, TicketCache};
use kdc_e2e::*;
use kdc_proto::Principal;
use kdc_server::PrincipalUpdate;
use reqwest::Method;
use serde_json::{Value, json};

use crate::sdk::tkt;

async fn sdk(url: &str, cache: Arc<dyn TicketCache>, clock: Arc<TestClock>) -> KdcClient {
    KdcClient::discover(url, ClientOptions::default().cache(cache).clock(clock)).await.unwrap()
}

fn name(s: &str) -> Principal {
    s.parse().unwrap()
}

/// Requests by path, as the counting proxy saw them.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<String, usize>>>);

impl Counts {
    fn get(&self, path: &str) -> usize {
        *self.0.lock().unwrap().get(path).unwrap_or(&0)
    }

    fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// A proxy in front of the KDC at `target` that counts requests by path and
/// advertises itself in the discovery document, so every exchange of a
/// client that discovers through it passes through it.
async fn counting_proxy(target: String) -> (String, Counts) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method as M, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Counts::default();
    let http = reqwest::Client::new();
    let (seen, me) = (counts.clone(), url.clone());
    let app = axum::Router::new().fallback(move |method: M, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (http, target, seen, me) = (http.clone(), target.clone(), seen.clone(), me.clone());
        async move {
            *seen.0.lock().unwrap().entry(uri.path().to_owned()).or_default() += 1;
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut req = http.request(method, format!("{target}{pq}")).body(body);
            for name in ["content-type", "authorization"] {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v);
                }
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let content_type = resp.headers().get("content-type").cloned();
            let mut bytes = resp.bytes().await.unwrap().to_vec();
            if uri.path() == "/.well-known/kdc-configuration" {
                bytes = String::from_utf8(bytes).unwrap().replace(&target, &me).into_bytes();
            }
            let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
            *out.status_mut() = status;
            if let Some(ct) = content_type {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, counts)
}

#[tokio::test]
async fn a_service_logs_in_with_its_keytab_in_one_round_trip_and_calls_another_service() {
    let kdc = TestKdc::start().await.unwrap();
    let b = TestService::start(&kdc, SVC_B).await.unwrap();
    let (proxy, counts) = counting_proxy(kdc.url.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let keytab = dir.path().join("a.keytab");
    write_keytab(&kdc, SVC_A, &keytab).await.unwrap();
    let cache_path = dir.path().join("tickets.json");
    let c = sdk(&proxy, Arc::new(FileCache::new(&cache_path).unwrap()), kdc.clock.clone()).await;
    c.login_with_keytab_file(&keytab).await.unwrap();
    assert_eq!(counts.get("/tickets/initial"), 1, "a keytab login needs no challenge");
    assert_eq!(c.principal().unwrap(), name(SVC_A));
    let r = c.send(&name(SVC_B), Method::GET, &format!("{}/hello", b.url), None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.body), format!("hello, {SVC_A}"));
    // The keys stay in memory: the cache holds tickets and session keys only.
    let cached = std::fs::read_to_string(&cache_path).unwrap();
    let key = kdc.service_key(SVC_A).await.unwrap();
    assert!(!cached.contains(&kdc_proto::b64::encode(key.expose())), "the keytab's key was written to the cache");
}

#[tokio::test]
async fn the_kdc_takes_a_service_key_for_pre_authentication_but_not_the_kdcs_own() {
    let kdc = TestKdc::start().await.unwrap();
    let c = kdc.client();
    let key = kdc.service_key(SVC_A).await.unwrap();
    let req = ProtoClient::initial_request(&key, SVC_A, now()).unwrap();
    let tgt = c.initial(&key, &req).await.unwrap().expect("a service's TGT");
    assert!(tgt.enc.flags.initial && tgt.enc.flags.pre_authent);
    c.service_ticket(&tgt, SVC_B).await.unwrap();

    // A service's challenge is an unknown name's: it tells neither apart.
    let svc = c.challenge(SVC_A).await.unwrap();
    let unknown = c.challenge("HTTP/nobody.example.test@EXAMPLE.TEST").await.unwrap();
    assert_eq!((svc.status, unknown.status), (401, 401));
    assert_eq!(svc.body["salt"], json!(format!("kdc-http/v1 salt:{SVC_A}")));
    assert_eq!(svc.body["argon2"], unknown.body["argon2"]);

    // Another key fails as a wrong password does.
    let wrong = kdc_proto::SecretKey::generate();
    let req = ProtoClient::initial_request(&wrong, SVC_A, now()).unwrap();
    let refused = c.initial(&wrong, &req).await.unwrap().unwrap_err();
    assert_eq!((refused.status, refused.body["type"].as_str().unwrap().ends_with("preauth-failed")), (401, true));

    // Nobody logs in as the KDC's own services, even with their keys.
    for own in ["krbtgt/EXAMPLE.TEST@EXAMPLE.TEST", "kadmin/admin@EXAMPLE.TEST"] {
        let own_key = kdc.service_key(own).await.unwrap();
        let req = ProtoClient::initial_request(&own_key, own, now()).unwrap();
        let refused = c.initial(&own_key, &req).await.unwrap().unwrap_err();
        assert_eq!(refused.status, 401, "{own}: {}", refused.body);
        assert!(refused.body["type"].as_str().unwrap().ends_with("preauth-failed"), "{own}");
    }

    // A disabled service is refused as a disabled user is.
    let upd = PrincipalUpdate { disabled: Some(true), ..Default::default() };
    kdc.kdc.store().update_principal(SVC_A, &upd).await.unwrap();
    let req = ProtoClient::initial_request(&key, SVC_A, now()).unwrap();
    assert_eq!(c.initial(&key, &req).await.unwrap().unwrap_err().status, 403);
}

#[tokio::test]
async fn a_keytab_older_than_a_rotation_is_refused_and_the_reexported_file_is_picked_up() {
    let kdc = TestKdc::start().await.unwrap();
    let b = TestService::start(&kdc, SVC_B).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.keytab");
    write_keytab(&kdc, SVC_A, &path).await.unwrap();
    let c = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    c.login_with_keytab_file(&path).await.unwrap();
    kdc.kdc.rotate(&name(SVC_A), None, now().as_secs()).await.unwrap();
    let stale = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    let e = stale.login_with_keytab_file(&path).await.unwrap_err();
    assert!(matches!(&e, SdkError::KeytabLoginFailed { principal } if principal == SVC_A), "{e}");
    assert!(e.to_string().contains("export the keytab again"), "{e}");

    // The first client's TGT runs out; it logs in again with the file as it
    // is now, re-exported after the rotation.
    write_keytab(&kdc, SVC_A, &path).await.unwrap();
    kdc.clock.advance_secs(11 * 3600);
    let r = c.send(&name(SVC_B), Method::GET, &format!("{}/hello", b.url), None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(kdc.kdc.issued().initial.load(Ordering::SeqCst), 2);

    let missing = stale.login_with_keytab_file(dir.path().join("nope.keytab")).await.unwrap_err();
    assert!(matches!(missing, SdkError::Keytab { .. }), "{missing}");
}

#[tokio::test]
async fn a_keytab_client_logs_in_again_by_itself_when_its_tgt_runs_out() {
    let kdc = TestKdc::start().await.unwrap();
    let b = TestService::start(&kdc, SVC_B).await.unwrap();
    let url = format!("{}/hello", b.url);
    let keytab = kdc.kdc.keytab(&name(SVC_A), now().as_secs()).await.unwrap();
    let c = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    c.login_with_keytab(&keytab).await.unwrap();
    let person = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    person.login(&name("alice@EXAMPLE.TEST"), ALICE_PW).await.unwrap();
    c.send(&name(SVC_B), Method::GET, &url, None).await.unwrap();
    person.send(&name(SVC_B), Method::GET, &url, None).await.unwrap();
    let initial = || kdc.kdc.issued().initial.load(Ordering::SeqCst);
    assert_eq!(initial(), 2);

    // Past the TGT's end (ten hours): the service logs in again; a person,
    // whose password the SDK does not keep, has to.
    kdc.clock.advance_secs(11 * 3600);
    assert_eq!(c.send(&name(SVC_B), Method::GET, &url, None).await.unwrap().status, 200);
    assert_eq!(initial(), 3);
    let e = person.send(&name(SVC_B), Method::GET, &url, None).await.unwrap_err();
    assert!(matches!(e, SdkError::NotLoggedIn), "{e}");

    // The KDC refuses a TGT the client believes good (a clock that lags, a
    // TGT no longer valid): the service logs in again and asks once more.
    c.cache()
        .update(&mut |contents| {
            let tgt = contents.tgt.as_mut().unwrap();
            tgt.part.end_time += 20 * 3600;
            tgt.part.start_time += 20 * 3600 - 60;
        })
        .unwrap();
    kdc.clock.advance_secs(11 * 3600);
    assert_eq!(c.send(&name(SVC_B), Method::GET, &url, None).await.unwrap().status, 200);
    assert_eq!(initial(), 4);

    // After logout the keys are forgotten too.
    c.logout().await.unwrap();
    let e = c.send(&name(SVC_B), Method::GET, &url, None).await.unwrap_err();
    assert!(matches!(e, SdkError::NotLoggedIn), "{e}");
    assert_eq!(initial(), 4);
}

#[tokio::test]
async fn a_tgt_past_its_refresh_point_that_cannot_be_renewed_is_replaced_keeping_service_tickets() {
    let kdc = TestKdc::start().await.unwrap();
    let b = TestService::start(&kdc, SVC_B).await.unwrap();
    let url = format!("{}/hello", b.url);
    // No renewable lifetime: the TGT cannot be renewed.
    let upd = PrincipalUpdate { max_renew_secs: Some(Some(0)), ..Default::default() };
    kdc.kdc.store().update_principal(SVC_A, &upd).await.unwrap();
    let keytab = kdc.kdc.keytab(&name(SVC_A), now().as_secs()).await.unwrap();
    let c = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    c.login_with_keytab(&keytab).await.unwrap();
    assert_eq!(c.cache().snapshot().unwrap().tgt.unwrap().part.renew_till, None);
    kdc.clock.advance_secs(6 * 3600);
    c.send(&name(SVC_B), Method::GET, &url, None).await.unwrap();
    // 85 % into the TGT's ten hours; B's ticket (until the TGT's end) is not
    // yet at its own refresh point.
    kdc.clock.advance_secs(2 * 3600 + 1800);
    let issued = || {
        let i = kdc.kdc.issued();
        (i.initial.load(Ordering::SeqCst), i.service.load(Ordering::SeqCst), i.renewed.load(Ordering::SeqCst))
    };
    assert_eq!(issued(), (1, 1, 0));
    c.service_ticket(&c.principal_name("kadmin/admin").unwrap()).await.unwrap();
    assert_eq!(issued(), (2, 2, 0), "a new login, not a renewal");
    c.send(&name(SVC_B), Method::GET, &url, None).await.unwrap();
    assert_eq!(issued(), (2, 2, 0), "B's ticket was dropped by the new login");
}

#[tokio::test]
async fn a_fresh_service_ticket_on_demand_carries_changed_roles() {
    let kdc = TestKdc::start().await.unwrap();
    let a = TestService::start(&kdc, SVC_A).await.unwrap();
    let url = format!("{}/roles", a.url);
    let c = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    c.login(&name("alice@EXAMPLE.TEST"), ALICE_PW).await.unwrap();
    let roles = |r: client_sdk::ServiceResponse| String::from_utf8(r.body).unwrap();
    assert_eq!(roles(c.send(&name(SVC_A), Method::GET, &url, None).await.unwrap()), "reader");
    let upd = PrincipalUpdate { roles: Some(vec!["reader".into(), "writer".into()]), ..Default::default() };
    kdc.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    // The cached ticket still says what it said.
    assert_eq!(roles(c.send(&name(SVC_A), Method::GET, &url, None).await.unwrap()), "reader");
    let before = c.service_ticket(&name(SVC_A)).await.unwrap();
    let fresh = c.refresh_service_ticket(&name(SVC_A)).await.unwrap();
    assert_ne!(before.ticket, fresh.ticket);
    assert_eq!(c.service_ticket(&name(SVC_A)).await.unwrap().ticket, fresh.ticket, "the fresh one is cached");
    assert_eq!(roles(c.send(&name(SVC_A), Method::GET, &url, None).await.unwrap()), "reader,writer");
    assert_eq!(kdc.kdc.issued().service.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_second_password_login_takes_one_round_trip() {
    let kdc = TestKdc::start().await.unwrap();
    let (proxy, counts) = counting_proxy(kdc.url.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tickets.json");
    let cache: Arc<dyn TicketCache> = Arc::new(FileCache::new(&path).unwrap());
    let alice = name("alice@EXAMPLE.TEST");
    let c = sdk(&proxy, cache.clone(), kdc.clock.clone()).await;
    c.login(&alice, ALICE_PW).await.unwrap();
    assert_eq!(counts.get("/tickets/initial"), 2, "challenge, then pre-authentication");
    let kdf = cache.snapshot().unwrap().kdf.get("alice@EXAMPLE.TEST").cloned().expect("parameters cached");
    assert_eq!(kdf.salt, "kdc-http/v1 salt:alice@EXAMPLE.TEST");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(ALICE_PW) && !text.contains("horse"));

    // The next login, here another process on the same cache: one request.
    counts.reset();
    let again = sdk(&proxy, Arc::new(FileCache::new(&path).unwrap()), kdc.clock.clone()).await;
    again.login(&alice, ALICE_PW).await.unwrap();
    assert_eq!(counts.get("/tickets/initial"), 1);

    // A wrong password with known parameters: one request, the usual failure.
    counts.reset();
    let e = again.login(&alice, "wrong").await.unwrap_err();
    assert!(matches!(e, SdkError::LoginFailed), "{e}");
    assert_eq!(counts.get("/tickets/initial"), 1);

    // Parameters that changed: the KDC's refusal carries the new ones, and
    // the login goes on with them (two requests, no extra challenge).
    cache
        .update(&mut |c| {
            c.kdf.get_mut("alice@EXAMPLE.TEST").unwrap().argon2.m_kib += 1024;
        })
        .unwrap();
    counts.reset();
    again.login(&alice, ALICE_PW).await.unwrap();
    assert_eq!(counts.get("/tickets/initial"), 2);
    assert_eq!(cache.snapshot().unwrap().kdf.get("alice@EXAMPLE.TEST"), Some(&kdf), "the working ones are kept");

    // Logout forgets them with everything else.
    again.logout().await.unwrap();
    counts.reset();
    c.login(&alice, ALICE_PW).await.unwrap();
    assert_eq!(counts.get("/tickets/initial"), 2);
}

#[tokio::test]
async fn a_json_body_reaches_the_admin_api_and_secrets_travel_sealed() {
    let kdc = TestKdc::start().await.unwrap();
    let b = TestService::start(&kdc, SVC_B).await.unwrap();
    let admin = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    admin.login(&admin.principal_name("admin").unwrap(), ADMIN_PW).await.unwrap();
    let kadmin = admin.principal_name("kadmin/admin").unwrap();
    let principals = format!("{}/admin/principals", kdc.url);

    // A body without a content type goes as application/octet-stream, which
    // the admin API refuses: it takes JSON.
    let body = serde_json::to_vec(&json!({"name": "HTTP/c.example.test", "kind": "service"})).unwrap();
    let r = admin.send(&kadmin, Method::POST, &principals, Some(body)).await.unwrap();
    assert_eq!(r.status, 415);
    let problem: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("unsupported-media-type"), "{problem}");

    // As JSON it works: a service, then a user whose password is sealed
    // under the admin's session key.
    let create = |v: Value| ServiceRequest::new(Method::POST, &principals).json(&v).unwrap();
    let r = admin.send_request(&kadmin, create(json!({"name": "HTTP/c.example.test", "kind": "service"}))).await;
    assert_eq!(r.unwrap().status, 201);
    let sealed = admin.seal_for(&kadmin, b"dan's long password").await.unwrap();
    let r = admin.send_request(&kadmin, create(json!({"name": "dan", "kind": "user", "password_sealed": sealed})));
    assert_eq!(r.await.unwrap().status, 201);
    let dan = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    dan.login(&name("dan@EXAMPLE.TEST"), "dan's long password").await.unwrap();

    // The new service's keytab comes back sealed for the admin; with it the
    // service logs in and calls another.
    let r =
        admin.send(&kadmin, Method::GET, &format!("{principals}/HTTP%2Fc.example.test/keytab"), None).await.unwrap();
    assert_eq!(r.status, 200);
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    let keytab: kdc_proto::Keytab =
        serde_json::from_slice(&r.open_secret(answer["keytab_sealed"].as_str().unwrap()).unwrap()).unwrap();
    assert!(r.open_secret(&sealed).is_err(), "a client's own sealed secret opened as the service's");
    let svc = sdk(&kdc.url, Arc::new(MemoryCache::default()), kdc.clock.clone()).await;
    svc.login_with_keytab(&keytab).await.unwrap();
    let r = svc.send(&name(SVC_B), Method::GET, &format!("{}/hello", b.url), None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.body), "hello, HTTP/c.example.test@EXAMPLE.TEST");

    // The SDK sets Authorization and Host itself.
    let forged = ServiceRequest::new(Method::GET, &principals)
        .header(reqwest::header::AUTHORIZATION, reqwest::header::HeaderValue::from_static("Ticket x"));
    let e = admin.send_request(&kadmin, forged).await.unwrap_err();
    assert!(matches!(e, SdkError::Invalid { what: "header", .. }), "{e}");
}

#[tokio::test]
async fn tkt_logs_in_with_a_keytab_and_sends_headers() {
    let kdc = TestKdc::start().await.unwrap();
    let b = TestService::start(&kdc, SVC_B).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keytab = dir.path().join("a.keytab");
    write_keytab(&kdc, SVC_A, &keytab).await.unwrap();
    let cache = dir.path().join("cache").join("tickets.json");
    let env = [("TKT_KDC_URL", kdc.url.as_str()), ("TKT_CACHE", cache.to_str().unwrap())];
    let kt = keytab.to_str().unwrap();

    let out = tkt(&["login", "--keytab", kt, SVC_B], &env, None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("holds the keys of {SVC_A}")));
    let out = tkt(&["login", "--keytab", kt, SVC_A], &env, None).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("logged in as {SVC_A}"));
    let out = tkt(&["request", "--service", SVC_B, &format!("{}/hello", b.url)], &env, None).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("hello, {SVC_A}"));
    let list = tkt(&["list"], &env, None).await;
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("principal: {SVC_A}")));

    // A stale keytab: the login-failed exit code.
    kdc.kdc.rotate(&name(SVC_A), None, now().as_secs()).await.unwrap();
    let out = tkt(&["login", "--keytab", kt, SVC_A], &env, None).await;
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));

    // -H gives the content type: the admin API takes the JSON body.
    let out = tkt(&["login", "admin", "--password-stdin"], &env, Some(&format!("{ADMIN_PW}\n"))).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = format!("{}/admin/principals", kdc.url);
    let body = r#"{"name":"HTTP/d.example.test","kind":"service"}"#;
    let create = |headers: &[&'static str]| {
        let mut args = vec!["request", "-X", "POST", "-d", body, "--service", "kadmin/admin"];
        args.extend_from_slice(headers);
        args.push(url.as_str());
        args
    };
    let out = tkt(&create(&[]), &env, None).await;
    assert_eq!(out.status.code(), Some(7), "without a content type: 415, {}", String::from_utf8_lossy(&out.stderr));
    let out = tkt(&create(&["-H", "Content-Type: application/json"]), &env, None).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["name"], json!("HTTP/d.example.test@EXAMPLE.TEST"));
    let out = tkt(&["request", "-H", "no colon", "--service", SVC_B, &format!("{}/hello", b.url)], &env, None).await;
    assert_eq!(out.status.code(), Some(2));
}
