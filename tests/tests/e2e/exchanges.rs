//! The happy paths and policy of the three exchanges.

use kdc_e2e::*;
use kdc_proto::{KdcVerifier, Kvno, SealedTicket, TicketCheck, open_ticket};
use kdc_server::Policy;
use kdc_server::PrincipalUpdate;
use kdc_server::ThrottlePolicy;
use kdc_server::{Credential, PrincipalSpec};

#[tokio::test]
async fn login_with_preauth_gives_a_tgt() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let ch = c.challenge("alice@EXAMPLE.TEST").await.unwrap();
    assert_eq!(ch.status, 401);
    assert_eq!(ch.body["type"], "urn:kdc-http:problem:preauth-required");
    assert_eq!(ch.www_authenticate.as_deref(), Some("KDC-PreAuth realm=\"EXAMPLE.TEST\""));
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    assert_eq!(tgt.enc.service.to_string(), "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST");
    assert!(tgt.enc.flags.initial && tgt.enc.flags.pre_authent && tgt.enc.flags.renewable);
    assert_eq!(tgt.enc.end_time - tgt.enc.start_time, 10 * 3600);
    assert_eq!(tgt.enc.renew_till, Some(tgt.enc.start_time + 7 * 24 * 3600));
}

#[tokio::test]
async fn service_ticket_opens_under_the_service_key_with_store_roles() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert!(!st.enc.flags.initial);
    assert!(st.enc.end_time <= tgt.enc.end_time);
    let jwks = c.get("/.well-known/jwks.json").await.unwrap();
    let verifier = KdcVerifier::from_jwks(&serde_json::from_value(jwks.body).unwrap());
    let sealed = SealedTicket::parse(&st.ticket).unwrap();
    assert_eq!(sealed.kvno, Kvno(1));
    let svc = SVC_A.parse().unwrap();
    let check = TicketCheck { service: &svc, kdc: &verifier, now: now(), max_skew_secs: 300 };
    let v = open_ticket(&sealed, &k.service_key(SVC_A).await.unwrap(), &check).unwrap();
    assert_eq!(v.client().to_string(), "alice@EXAMPLE.TEST");
    assert_eq!(v.claims().roles, vec!["reader".to_owned()]);
    assert_eq!(v.session_key(), &st.enc.session_key);
}

#[tokio::test]
async fn roles_come_from_the_store_at_issue_time_not_from_the_tgt() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let upd = PrincipalUpdate { roles: Some(vec!["writer".into()]), ..Default::default() };
    k.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    let jwks = c.get("/.well-known/jwks.json").await.unwrap();
    let verifier = KdcVerifier::from_jwks(&serde_json::from_value(jwks.body).unwrap());
    let svc = SVC_A.parse().unwrap();
    let check = TicketCheck { service: &svc, kdc: &verifier, now: now(), max_skew_secs: 300 };
    let v =
        open_ticket(&SealedTicket::parse(&st.ticket).unwrap(), &k.service_key(SVC_A).await.unwrap(), &check).unwrap();
    assert_eq!(v.claims().roles, vec!["writer".to_owned()]);
}

#[tokio::test]
async fn renewal_extends_up_to_renew_till_and_no_further() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    // Nine hours on: still valid, renew to a fresh ten hours.
    k.clock.advance_secs(9 * 3600);
    let at = k.clock_now();
    let renewed = c.renew(&tgt, at).await.unwrap().unwrap();
    assert_eq!(renewed.enc.end_time, at.as_secs() + 10 * 3600);
    assert_eq!(renewed.enc.renew_till, tgt.enc.renew_till);
    assert_ne!(renewed.enc.session_key, tgt.enc.session_key);
    // Keep renewing until renew-till caps the end time.
    let mut cur = renewed;
    for _ in 0..20 {
        k.clock.advance_secs(9 * 3600);
        match c.renew(&cur, k.clock_now()).await.unwrap() {
            Ok(next) => {
                assert!(next.enc.end_time <= tgt.enc.renew_till.unwrap());
                cur = next;
            }
            Err(a) => {
                assert_eq!(a.status, 401, "{}", a.body);
                assert_eq!(a.body["type"], "urn:kdc-http:problem:ticket-expired");
                assert!(k.clock_now().as_secs() >= cur.enc.end_time);
                assert_eq!(cur.enc.end_time, tgt.enc.renew_till.unwrap());
                return;
            }
        }
    }
    panic!("renewal never stopped at renew-till");
}

#[tokio::test]
async fn a_non_renewable_ticket_is_not_renewed() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let mut req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    req.renewable = Some(false);
    let tgt = c.initial(&key, &req).await.unwrap().unwrap();
    assert!(!tgt.enc.flags.renewable && tgt.enc.renew_till.is_none());
    let a = c.renew(&tgt, now()).await.unwrap().unwrap_err();
    assert_eq!((a.status, a.body["type"].as_str()), (400, Some("urn:kdc-http:problem:not-renewable")));
    // And a service ticket from a non-renewable TGT is not renewable either.
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert!(!st.enc.flags.renewable);
}

#[tokio::test]
async fn requested_lifetimes_are_clamped_by_policy_and_overrides() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let mut req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    req.lifetime_secs = Some(30 * 24 * 3600);
    let t = c.initial(&key, &req).await.unwrap().unwrap();
    assert_eq!(t.enc.end_time - t.enc.start_time, 10 * 3600);
    let upd = PrincipalUpdate { max_life_secs: Some(Some(600)), ..Default::default() };
    k.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    let t = c
        .initial(&key, &ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.enc.end_time - t.enc.start_time, 600);
}

#[tokio::test]
async fn tickets_are_never_issued_for_password_principals() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, "bob@EXAMPLE.TEST", now()).unwrap();
    let a = c.tgs(&tgt, &req).await.unwrap().unwrap_err();
    assert_eq!((a.status, a.body["type"].as_str()), (400, Some("urn:kdc-http:problem:unknown-service")));
    let req = ProtoClient::tgs_request(&tgt, "HTTP/nope.example.test@EXAMPLE.TEST", now()).unwrap();
    assert_eq!(c.tgs(&tgt, &req).await.unwrap().unwrap_err().status, 400);
}

#[tokio::test]
async fn key_rotation_keeps_old_tickets_working_and_new_ones_use_the_new_key() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let krbtgt = "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST".parse().unwrap();
    assert_eq!(k.kdc.rotate(&krbtgt, None, now().as_secs()).await.unwrap(), Kvno(2));
    // The TGT under kvno 1 still buys tickets during the grace period.
    c.service_ticket(&tgt, SVC_A).await.unwrap();
    let svc_a = SVC_A.parse().unwrap();
    k.kdc.rotate(&svc_a, None, now().as_secs()).await.unwrap();
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(st.enc.kvno, Kvno(2));
    assert_eq!(SealedTicket::parse(&st.ticket).unwrap().kvno, Kvno(2));
    let kt = k.kdc.keytab(&svc_a, now().as_secs()).await.unwrap();
    assert_eq!(kt.keys.iter().map(|e| e.kvno).collect::<Vec<_>>(), vec![Kvno(2), Kvno(1)]);
    // New logins get TGTs under the new krbtgt key.
    let tgt2 = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    assert_eq!(tgt2.enc.kvno, Kvno(2));
}

#[tokio::test]
async fn failed_preauth_is_throttled_with_retry_after() {
    let throttle =
        ThrottlePolicy { per_principal_address: 3, per_address: 100, window_secs: 60, ..ThrottlePolicy::default() };
    let k = TestKdc::start_with(Policy::default(), throttle).await.unwrap();
    let c = k.client();
    let wrong = c.derive_key("alice@EXAMPLE.TEST", "not the password").await.unwrap();
    for _ in 0..3 {
        let req = ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap();
        assert_eq!(c.initial(&wrong, &req).await.unwrap().unwrap_err().status, 401);
    }
    let req = ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap();
    let a = c.initial(&wrong, &req).await.unwrap().unwrap_err();
    assert_eq!(a.status, 429);
    assert_eq!(a.body["type"], "urn:kdc-http:problem:too-many-attempts");
    assert!(a.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > 0 && s <= 60));
    // From the address that failed, even the right password waits: the point
    // is to slow guessing down (other addresses: `lockout::*`).
    assert_eq!(c.challenge("alice@EXAMPLE.TEST").await.unwrap().status, 429);
    // Others are not affected.
    c.login("bob@EXAMPLE.TEST", BOB_PW).await.unwrap();
    k.clock.advance_secs(61);
    c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
}

#[tokio::test]
async fn disabled_principals_get_nothing() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let upd = PrincipalUpdate { disabled: Some(true), ..Default::default() };
    k.kdc.store().update_principal("bob@EXAMPLE.TEST", &upd).await.unwrap();
    let key = c.derive_key("bob@EXAMPLE.TEST", BOB_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "bob@EXAMPLE.TEST", now()).unwrap();
    let a = c.initial(&key, &req).await.unwrap().unwrap_err();
    assert_eq!((a.status, a.body["type"].as_str()), (403, Some("urn:kdc-http:problem:client-not-permitted")));
    // A disabled service receives no tickets.
    k.kdc.store().update_principal(SVC_B, &upd).await.unwrap();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_B, now()).unwrap();
    assert_eq!(c.tgs(&tgt, &req).await.unwrap().unwrap_err().status, 400);
}

#[tokio::test]
async fn discovery_names_the_realm_endpoints_and_policy() {
    let k = TestKdc::start().await.unwrap();
    let a = k.client().get("/.well-known/kdc-configuration").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["realm"], "EXAMPLE.TEST");
    assert_eq!(a.body["jwks_uri"], format!("{}/.well-known/jwks.json", k.url));
    assert_eq!(a.body["max_clock_skew_secs"], 300);
    assert_eq!(a.body["sealing"]["alg"], "dir");
    let j = k.client().get("/.well-known/jwks.json").await.unwrap();
    let keys = j.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none());
    assert_eq!(k.client().get("/readyz").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_new_user_with_the_same_password_as_another_gets_a_different_key() {
    let k = TestKdc::start().await.unwrap();
    let spec = PrincipalSpec {
        name: "carol@EXAMPLE.TEST".parse().unwrap(),
        credential: Credential::Password(ALICE_PW.to_owned().into()),
        roles: vec![],
        max_life_secs: None,
        max_renew_secs: None,
    };
    k.kdc.create_principal(spec, now().as_secs()).await.unwrap();
    let c = k.client();
    let a = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let b = c.derive_key("carol@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    assert_ne!(a, b);
    c.login("carol@EXAMPLE.TEST", ALICE_PW).await.unwrap();
}

trait ClockNow {
    fn clock_now(&self) -> kdc_proto::UnixMillis;
}

impl ClockNow for TestKdc {
    fn clock_now(&self) -> kdc_proto::UnixMillis {
        use kdc_proto::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn metrics_count_issued_and_refused_exchanges() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    c.service_ticket(&tgt, SVC_A).await.unwrap();
    let r = reqwest::get(format!("{}/metrics", k.url)).await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for line in [
        "kdc_tickets_issued_total{exchange=\"initial\"} 1",
        "kdc_tickets_issued_total{exchange=\"service\"} 1",
        "kdc_preauth_challenges_total 1",
        "kdc_replay_cache_entries 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("kdc_throttle_entries ")), "throttle gauge missing from\n{text}");
    // The challenge is the first step of every login, not a refusal.
    assert!(!text.contains("problem=\"preauth-required\""), "a challenge counted as a refusal:\n{text}");
    assert!(!text.contains("alice"), "metrics must not name principals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exchanges_and_writes_all_succeed() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (c, tgt) = (c.clone(), tgt.clone());
        tasks.push(tokio::spawn(async move {
            let svc = if i % 2 == 0 { SVC_A } else { SVC_B };
            c.service_ticket(&tgt, svc).await.map(|_| ())
        }));
    }
    // Writes interleaved with the reads.
    for i in 0..20 {
        let spec = PrincipalSpec {
            name: format!("HTTP/svc{i}.example.test@EXAMPLE.TEST").parse().unwrap(),
            credential: Credential::Random,
            roles: vec![],
            max_life_secs: None,
            max_renew_secs: None,
        };
        k.kdc.create_principal(spec, now().as_secs()).await.unwrap();
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(k.kdc.issued().service.load(std::sync::atomic::Ordering::SeqCst), 200);
}
