//! The service middleware, attacked over real HTTP.

use std::sync::Arc;

use auth_middleware::{InMemoryReplayCache, ReplayCache};
use kdc_e2e::*;
use kdc_proto::{
    Clock, ErrorDetail, KdcSigningKey, Kvno, LongTermKey, SealedTicket, TicketClaims, UnixMillis, mint_ticket,
    verify_mutual_reply,
};

struct World {
    kdc: TestKdc,
    a: TestService,
    alice_a: Credentials,
    http: reqwest::Client,
}

async fn world() -> World {
    let kdc = TestKdc::start().await.unwrap();
    let a = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = kdc.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let alice_a = c.service_ticket(&tgt, SVC_A).await.unwrap();
    World { kdc, a, alice_a, http: reqwest::Client::new() }
}

fn flip_middle(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = b.len() / 2;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[tokio::test]
async fn a_valid_request_passes_with_principal_roles_and_a_verifiable_mutual_reply() {
    let w = world().await;
    let (ans, sent) = call_service(&w.http, &w.alice_a, "GET", &w.a.url, "/hello", None).await.unwrap();
    assert_eq!(ans.status, 200, "{}", ans.text());
    assert_eq!(ans.text(), "hello, alice@EXAMPLE.TEST");
    let mutual = ans.mutual().expect("Authentication-Info: mutual");
    verify_mutual_reply(&mutual, &w.alice_a.enc.session_key, &sent, 200, &ans.body).unwrap();
    let (ans, _) = call_service(&w.http, &w.alice_a, "GET", &w.a.url, "/roles", None).await.unwrap();
    assert_eq!(ans.text(), "reader");
}

#[tokio::test]
async fn no_credentials_get_a_ticket_challenge() {
    let w = world().await;
    let ans = send(&w.http, "GET", &format!("{}/hello", w.a.url), None, None).await.unwrap();
    assert_eq!(ans.status, 401);
    assert_eq!(ans.www_authenticate.as_deref(), Some("Ticket realm=\"EXAMPLE.TEST\""));
    let ans = send(&w.http, "GET", &format!("{}/hello", w.a.url), Some("Bearer abc"), None).await.unwrap();
    assert_eq!(ans.status, 401);
    let ans = send(&w.http, "GET", &format!("{}/hello", w.a.url), Some("Ticket ticket=\"x\""), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let w = world().await;
    let (authz, _) = ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, now());
    let url = format!("{}/hello", w.a.url);
    assert_eq!(send(&w.http, "GET", &url, Some(&authz), None).await.unwrap().status, 200);
    let again = send(&w.http, "GET", &url, Some(&authz), None).await.unwrap();
    assert_eq!((again.status, again.error_code().as_deref()), (401, Some("replay")));
    let body: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(body["type"], "urn:kdc-http:problem:replay");
}

#[tokio::test]
async fn an_authenticator_moved_to_another_path_query_or_method_is_refused() {
    let w = world().await;
    for (method, target) in [("GET", "/hello?moved=1"), ("GET", "/roles"), ("POST", "/hello")] {
        let (authz, _) = ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, now());
        let ans = send(&w.http, method, &format!("{}{target}", w.a.url), Some(&authz), None).await.unwrap();
        assert_eq!(ans.error_code().as_deref(), Some("binding_mismatch"), "{method} {target}");
    }
}

#[tokio::test]
async fn a_bound_body_cannot_be_swapped() {
    let w = world().await;
    let (ans, sent) =
        call_service(&w.http, &w.alice_a, "POST", &w.a.url, "/echo", Some(b"pay 10".to_vec())).await.unwrap();
    assert_eq!((ans.status, ans.text().as_str()), (200, "pay 10"));
    verify_mutual_reply(&ans.mutual().unwrap(), &w.alice_a.enc.session_key, &sent, 200, b"pay 10").unwrap();
    let (authz, _) = ap_authorization(&w.alice_a, "POST", &format!("{}/echo", w.a.url), Some(b"pay 10"), now());
    let ans =
        send(&w.http, "POST", &format!("{}/echo", w.a.url), Some(&authz), Some(b"pay 1000".to_vec())).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("binding_mismatch"));
}

#[tokio::test]
async fn a_tampered_ticket_or_authenticator_is_refused() {
    let w = world().await;
    let url = format!("{}/hello", w.a.url);
    let mut forged = w.alice_a.clone();
    forged.ticket = flip_middle(&w.alice_a.ticket);
    let (authz, _) = ap_authorization(&forged, "GET", &format!("{}/hello", w.a.url), None, now());
    assert_eq!(
        send(&w.http, "GET", &url, Some(&authz), None).await.unwrap().error_code().as_deref(),
        Some("invalid_ticket")
    );
    // Characters outside base64url inside the quotes.
    let mut spaced = w.alice_a.clone();
    spaced.ticket = w.alice_a.ticket.replacen('.', " .", 1);
    let (authz, _) = ap_authorization(&spaced, "GET", &format!("{}/hello", w.a.url), None, now());
    let ans = send(&w.http, "GET", &url, Some(&authz), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("invalid_ticket"));
    let (authz, _) = ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, now());
    let i = authz.find("authenticator=\"").unwrap() + 15;
    let j = i + authz[i..].find('"').unwrap();
    let tampered = format!("{}{}{}", &authz[..i], flip_middle(&authz[i..j]), &authz[j..]);
    let ans = send(&w.http, "GET", &url, Some(&tampered), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("invalid_authenticator"));
}

#[tokio::test]
async fn client_a_ticket_with_client_b_authenticator_is_refused() {
    let w = world().await;
    let c = w.kdc.client();
    let bob_tgt = c.login("bob@EXAMPLE.TEST", BOB_PW).await.unwrap();
    let bob_a = c.service_ticket(&bob_tgt, SVC_A).await.unwrap();
    let mixed = Credentials { ticket: w.alice_a.ticket.clone(), ..bob_a };
    let (authz, _) = ap_authorization(&mixed, "GET", &format!("{}/hello", w.a.url), None, now());
    let ans = send(&w.http, "GET", &format!("{}/hello", w.a.url), Some(&authz), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("invalid_authenticator"));
}

#[tokio::test]
async fn a_ticket_for_service_a_is_refused_by_service_b() {
    let w = world().await;
    let b = TestService::start(&w.kdc, SVC_B).await.unwrap();
    let (ans, _) = call_service(&w.http, &w.alice_a, "GET", &b.url, "/hello", None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("wrong_service"));
}

#[tokio::test]
async fn an_expired_ticket_is_refused() {
    let w = world().await;
    w.kdc.clock.advance_secs(10 * 3600 + 301);
    let at = UnixMillis(now().0 + (10 * 3600 + 301) * 1000);
    let (authz, _) = ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, at);
    let ans = send(&w.http, "GET", &format!("{}/hello", w.a.url), Some(&authz), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("ticket_expired"));
}

#[tokio::test]
async fn a_skewed_clock_is_refused_with_an_authenticated_server_time() {
    let w = world().await;
    let before = now();
    let (authz, sent) =
        ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, UnixMillis(before.0 - 900_000));
    let ans = send(&w.http, "GET", &format!("{}/hello", w.a.url), Some(&authz), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("clock_skew"));
    let sealed = ans.sealed_server_time().expect("sealed server time");
    let detail = ErrorDetail::open(&sealed, &w.alice_a.enc.session_key, &sent).unwrap();
    assert!(detail.server_time >= before && detail.server_time <= now());
    // A man in the middle cannot substitute another time.
    let forged = flip_middle(&sealed);
    assert!(ErrorDetail::open(&forged, &w.alice_a.enc.session_key, &sent).is_err());
    // Corrected by the offset, the client gets through.
    let (authz, _) = ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, now());
    assert_eq!(send(&w.http, "GET", &format!("{}/hello", w.a.url), Some(&authz), None).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_ticket_forged_with_the_service_key_alone_is_refused() {
    let w = world().await;
    let service_key = w.kdc.service_key(SVC_A).await.unwrap();
    let rogue = KdcSigningKey::generate();
    let t = now().as_secs();
    let claims = TicketClaims {
        jti: "forged".into(),
        iss: "EXAMPLE.TEST".parse().unwrap(),
        sub: "admin@EXAMPLE.TEST".parse().unwrap(),
        cid: "x".into(),
        aud: SVC_A.parse().unwrap(),
        sid: "y".into(),
        skey: kdc_proto::SecretKey::generate(),
        auth_time: t,
        nbf: t,
        exp: t + 3600,
        renew_till: None,
        flags: Default::default(),
        roles: vec!["admin".into()],
    };
    let ticket = mint_ticket(&claims, &rogue, &LongTermKey { kvno: Kvno(1), key: service_key }).unwrap();
    let creds = Credentials {
        ticket,
        enc: kdc_proto::EncTicketPart { session_key: claims.skey.clone(), ..w.alice_a.enc.clone() },
        client: claims.sub.clone(),
    };
    let (ans, _) = call_service(&w.http, &creds, "GET", &w.a.url, "/admin/x", None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("invalid_ticket"));
}

#[tokio::test]
async fn key_rotation_keeps_old_tickets_working_during_the_grace_period() {
    let w = world().await;
    let svc = SVC_A.parse().unwrap();
    w.kdc.kdc.rotate(&svc, None, now().as_secs()).await.unwrap();
    let c = w.kdc.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let new = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(SealedTicket::parse(&new.ticket).unwrap().kvno, Kvno(2));
    // Before the service reloads its keytab, kvno 2 is unknown to it.
    let (ans, _) = call_service(&w.http, &new, "GET", &w.a.url, "/hello", None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("kvno_unknown"));
    write_keytab(&w.kdc, SVC_A, &w.a.keytab_path).await.unwrap();
    w.a.layer.reload_keytab().unwrap();
    for creds in [&w.alice_a, &new] {
        let (ans, _) = call_service(&w.http, creds, "GET", &w.a.url, "/hello", None).await.unwrap();
        assert_eq!(ans.status, 200, "{}", ans.text());
    }
}

#[tokio::test]
async fn ten_thousand_concurrent_valid_requests_see_no_false_replay() {
    let w = world().await;
    let creds = Arc::new(w.alice_a.clone());
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for _ in 0..10_000 {
        let (creds, http, url, sem) = (creds.clone(), w.http.clone(), w.a.url.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            call_service(&http, &creds, "GET", &url, "/hello", None).await.unwrap().0.status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
        ok += 1;
    }
    assert_eq!(ok, 10_000);
    assert!(w.a.layer.verifier().replay_cache().len() >= 10_000);
}

#[tokio::test]
async fn a_tampered_mutual_reply_or_response_body_is_detected() {
    let w = world().await;
    let (ans, sent) = call_service(&w.http, &w.alice_a, "GET", &w.a.url, "/hello", None).await.unwrap();
    let mutual = ans.mutual().unwrap();
    let key = &w.alice_a.enc.session_key;
    verify_mutual_reply(&mutual, key, &sent, 200, &ans.body).unwrap();
    assert!(verify_mutual_reply(&flip_middle(&mutual), key, &sent, 200, &ans.body).is_err());
    assert!(verify_mutual_reply(&mutual, key, &sent, 200, b"hello, mallory@EXAMPLE.TEST").is_err());
    assert!(verify_mutual_reply(&mutual, key, &sent, 500, &ans.body).is_err());
    // A reply captured from one exchange does not vouch for another.
    let (_, other) = ap_authorization(&w.alice_a, "GET", &format!("{}/hello", w.a.url), None, now());
    assert!(verify_mutual_reply(&mutual, key, &other, 200, &ans.body).is_err());
}

#[tokio::test]
async fn a_route_role_is_enforced_with_403() {
    let w = world().await;
    let (ans, _) = call_service(&w.http, &w.alice_a, "GET", &w.a.url, "/admin/x", None).await.unwrap();
    assert_eq!(ans.status, 403);
    let c = w.kdc.client();
    let tgt = c.login("admin@EXAMPLE.TEST", ADMIN_PW).await.unwrap();
    let admin_a = c.service_ticket(&tgt, SVC_A).await.unwrap();
    let (ans, _) = call_service(&w.http, &admin_a, "GET", &w.a.url, "/admin/x", None).await.unwrap();
    assert_eq!((ans.status, ans.text().as_str()), (200, "admin area"));
}

#[tokio::test]
async fn after_a_restart_older_authenticators_are_refused_as_stale() {
    let w = world().await;
    // A new service process with a volatile cache: it starts empty now.
    let restarted = TestService::start_with(&w.kdc, SVC_A, |b| {
        b.replay_cache(Arc::new(InMemoryReplayCache::with_defaults(w.kdc.clock.now())))
    })
    .await
    .unwrap();
    let (authz, sent) =
        ap_authorization(&w.alice_a, "GET", &format!("{}/hello", restarted.url), None, UnixMillis(now().0 - 2000));
    let ans = send(&w.http, "GET", &format!("{}/hello", restarted.url), Some(&authz), None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("stale_authenticator"));
    let detail = ErrorDetail::open(&ans.sealed_server_time().unwrap(), &w.alice_a.enc.session_key, &sent).unwrap();
    assert!(detail.server_time.0 > sent.ts.0);
}

#[tokio::test]
async fn a_full_replay_cache_fails_closed_with_503() {
    let kdc = TestKdc::start().await.unwrap();
    let cache = Arc::new(InMemoryReplayCache::with_history(32, 1_000_000, None));
    let svc = TestService::start_with(&kdc, SVC_A, |b| b.replay_cache(cache.clone())).await.unwrap();
    let c = kdc.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let creds = c.service_ticket(&tgt, SVC_A).await.unwrap();
    let http = reqwest::Client::new();
    let mut refused = None;
    for _ in 0..200 {
        let (ans, _) = call_service(&http, &creds, "GET", &svc.url, "/hello", None).await.unwrap();
        if ans.status != 200 {
            refused = Some(ans);
            break;
        }
    }
    let ans = refused.expect("the cache never filled");
    assert_eq!(ans.status, 503);
    assert!(ans.retry_after.is_some());
    assert!(cache.len() <= 32);
}

#[tokio::test]
async fn required_body_binding_refuses_an_unbound_body_but_not_a_bodyless_request() {
    let w = world().await;
    let strict = TestService::start_with(&w.kdc, SVC_A, |b| b.require_body_binding(true)).await.unwrap();
    let (ans, _) = call_service(&w.http, &w.alice_a, "GET", &strict.url, "/hello", None).await.unwrap();
    assert_eq!(ans.status, 200);
    let (authz, _) = ap_authorization(&w.alice_a, "POST", &format!("{}/echo", w.a.url), None, now());
    let ans =
        send(&w.http, "POST", &format!("{}/echo", strict.url), Some(&authz), Some(b"unbound".to_vec())).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("binding_mismatch"));
    let (ans, _) =
        call_service(&w.http, &w.alice_a, "POST", &strict.url, "/echo", Some(b"bound".to_vec())).await.unwrap();
    assert_eq!(ans.status, 200);
}

#[tokio::test]
async fn a_response_too_large_to_sign_is_not_passed_unsigned() {
    let w = world().await;
    let small = TestService::start_with(&w.kdc, SVC_A, |b| b.max_response_bytes(4)).await.unwrap();
    let (ans, _) = call_service(&w.http, &w.alice_a, "GET", &small.url, "/hello", None).await.unwrap();
    assert_eq!(ans.status, 500);
    assert!(ans.mutual().is_none() && ans.body.is_empty());
}
