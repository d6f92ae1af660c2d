//! One test per attack on the KDC's exchanges.

use kdc_e2e::*;
use kdc_proto::ServiceTicketRequest;
use kdc_proto::Usage;
use kdc_proto::{Authenticator, KdcVerifier, SealedTicket, TicketCheck, b64, open_ticket};
use kdc_server::Policy;
use kdc_server::PrincipalUpdate;
use kdc_server::ThrottlePolicy;
use kdc_server::{Credential, PrincipalSpec};
use serde_json::{Value, json};

fn keys_of(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

fn problem(a: &Answer) -> (u16, &str) {
    (a.status, a.body["type"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn unknown_user_and_wrong_password_are_indistinguishable() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let real = c.challenge("alice@EXAMPLE.TEST").await.unwrap();
    let fake = c.challenge("nobody@EXAMPLE.TEST").await.unwrap();
    assert_eq!(real.status, fake.status);
    assert_eq!(real.www_authenticate, fake.www_authenticate);
    assert_eq!(keys_of(&real.body), keys_of(&fake.body));
    assert_eq!(real.body["argon2"], fake.body["argon2"]);
    assert_eq!(real.body["kdf"], fake.body["kdf"]);
    assert_eq!(
        real.body["salt"].as_str().unwrap().replace("alice", "X"),
        fake.body["salt"].as_str().unwrap().replace("nobody", "X")
    );
    // The unknown name's challenge is deterministic.
    let again = c.challenge("nobody@EXAMPLE.TEST").await.unwrap();
    assert_eq!(again.body["salt"], fake.body["salt"]);

    let wrong = c.derive_key("alice@EXAMPLE.TEST", "wrong password").await.unwrap();
    let a = c
        .initial(&wrong, &ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap())
        .await
        .unwrap()
        .unwrap_err();
    let guess = c.derive_key("nobody@EXAMPLE.TEST", "whatever").await.unwrap();
    let b = c
        .initial(&guess, &ProtoClient::initial_request(&guess, "nobody@EXAMPLE.TEST", now()).unwrap())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(problem(&a), (401, "urn:kdc-http:problem:preauth-failed"));
    assert_eq!(problem(&a), problem(&b));
    assert_eq!(a.www_authenticate, b.www_authenticate);
    assert_eq!(keys_of(&a.body), keys_of(&b.body));
    assert_eq!(a.body["detail"], b.body["detail"]);
}

#[tokio::test]
async fn replayed_tgs_authenticator_is_refused() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    c.tgs(&tgt, &req).await.unwrap().unwrap();
    let a = c.tgs(&tgt, &req).await.unwrap().unwrap_err();
    assert_eq!(problem(&a), (401, "urn:kdc-http:problem:replay"));
    assert!(a.www_authenticate.unwrap().contains("error=\"replay\""));
}

#[tokio::test]
async fn replayed_preauth_is_refused() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    c.initial(&key, &req).await.unwrap().unwrap();
    assert_eq!(problem(&c.initial(&key, &req).await.unwrap().unwrap_err()), (401, "urn:kdc-http:problem:replay"));
    // Pre-auth made for one request's nonce does not serve another.
    let mut other = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    other.nonce = nonce();
    assert_eq!(c.initial(&key, &other).await.unwrap().unwrap_err().status, 401);
}

#[tokio::test]
async fn an_authenticator_cannot_be_moved_to_another_tgs_request() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let mut req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    req.service = SVC_B.parse().unwrap();
    assert_eq!(
        problem(&c.tgs(&tgt, &req).await.unwrap().unwrap_err()),
        (401, "urn:kdc-http:problem:invalid-authenticator")
    );
}

#[tokio::test]
async fn expired_tgt_is_refused() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    k.clock.advance_secs(10 * 3600 + 301);
    let at = kdc_proto::UnixMillis(now().0 + (10 * 3600 + 301) * 1000);
    let req = ProtoClient::tgs_request(&tgt, SVC_A, at).unwrap();
    let a = c.tgs(&tgt, &req).await.unwrap().unwrap_err();
    assert_eq!(problem(&a), (401, "urn:kdc-http:problem:ticket-expired"));
    assert!(a.www_authenticate.unwrap().contains("error=\"ticket_expired\""));
}

#[tokio::test]
async fn skewed_timestamps_are_refused_with_the_server_time() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let before = now().0;
    let req = ProtoClient::tgs_request(&tgt, SVC_A, kdc_proto::UnixMillis(before - 600_000)).unwrap();
    let a = c.tgs(&tgt, &req).await.unwrap().unwrap_err();
    assert_eq!(problem(&a), (401, "urn:kdc-http:problem:clock-skew"));
    let server_time = a.body["server_time"].as_u64().unwrap();
    assert!(server_time >= before && server_time <= now().0, "{server_time}");
    // Pre-auth too.
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req =
        ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", kdc_proto::UnixMillis(before + 600_000)).unwrap();
    let a = c.initial(&key, &req).await.unwrap().unwrap_err();
    assert_eq!(problem(&a), (401, "urn:kdc-http:problem:clock-skew"));
    assert!(a.body["server_time"].as_u64().is_some());
}

#[tokio::test]
async fn a_ticket_for_service_a_cannot_be_opened_with_service_b_key() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let st = c.service_ticket(&tgt, SVC_A).await.unwrap();
    let jwks = c.get("/.well-known/jwks.json").await.unwrap();
    let verifier = KdcVerifier::from_jwks(&serde_json::from_value(jwks.body).unwrap());
    let b_key = k.service_key(SVC_B).await.unwrap();
    let sealed = SealedTicket::parse(&st.ticket).unwrap();
    // B checking as itself: wrong service. B's key while pretending to be A: no decryption.
    let svc_b = SVC_B.parse().unwrap();
    let svc_a = SVC_A.parse().unwrap();
    for service in [&svc_b, &svc_a] {
        let check = TicketCheck { service, kdc: &verifier, now: now(), max_skew_secs: 300 };
        assert!(open_ticket(&sealed, &b_key, &check).is_err());
    }
    // Nor can a service ticket stand in for a TGT.
    let forged = kdc_e2e::Credentials { ticket: st.ticket.clone(), ..st.clone() };
    let req = ProtoClient::tgs_request(&forged, SVC_B, now()).unwrap();
    assert_eq!(
        problem(&c.tgs(&forged, &req).await.unwrap().unwrap_err()),
        (401, "urn:kdc-http:problem:invalid-ticket")
    );
}

fn flip(s: &str, i: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[tokio::test]
async fn every_flipped_byte_of_a_tgt_or_authenticator_is_refused() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    for i in 0..tgt.ticket.len() {
        let mut req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
        req.tgt = flip(&tgt.ticket, i);
        let a = c.post("/tickets", &req).await.unwrap();
        assert_eq!(a.status, 401, "TGT byte {i} flipped: {}", a.body);
    }
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    for i in 0..req.authenticator.len() {
        let mut r = req.clone();
        r.authenticator = flip(&req.authenticator, i);
        let a = c.post("/tickets", &r).await.unwrap();
        assert_eq!(a.status, 401, "authenticator byte {i} flipped: {}", a.body);
    }
    // The untouched request still works: nothing above consumed it.
    c.tgs(&tgt, &req).await.unwrap().unwrap();
}

#[tokio::test]
async fn every_flipped_byte_of_preauth_is_refused() {
    let throttle = ThrottlePolicy {
        per_principal_address: 100_000,
        per_principal: 100_000,
        per_address: 100_000,
        ..ThrottlePolicy::default()
    };
    let k = TestKdc::start_with(Policy::default(), throttle).await.unwrap();
    let c = k.client();
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    let pa = req.pre_auth.clone().unwrap();
    for i in 0..pa.len() {
        let mut r = req.clone();
        r.pre_auth = Some(flip(&pa, i));
        let a = c.post("/tickets/initial", &r).await.unwrap();
        assert_eq!(a.status, 401, "pre-auth byte {i} flipped: {}", a.body);
    }
    c.initial(&key, &req).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_ciphertext_of_one_usage_is_refused_as_another() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    // A service authenticator (right key, wrong usage) offered to the KDC.
    let svc: kdc_proto::Principal = SVC_A.parse().unwrap();
    let mut req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    let binding = ServiceTicketRequest::binding_for(&svc, &req.nonce, None, None);
    req.authenticator = Authenticator::new(tgt.client.clone(), now(), &binding)
        .seal(&tgt.enc.session_key, Usage::Authenticator)
        .unwrap();
    assert_eq!(
        problem(&c.tgs(&tgt, &req).await.unwrap().unwrap_err()),
        (401, "urn:kdc-http:problem:invalid-authenticator")
    );
    // Pre-auth sealed under the right key as another usage.
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let mut r = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    let pa = serde_json::to_vec(&json!({"ts": now(), "nonce": r.nonce})).unwrap();
    r.pre_auth = Some(kdc_proto::seal(&key, "alice@EXAMPLE.TEST#1", Usage::AsReply, &pa).unwrap());
    assert_eq!(problem(&c.initial(&key, &r).await.unwrap().unwrap_err()), (401, "urn:kdc-http:problem:preauth-failed"));
    // The AS reply's encrypted part (under alice's key) offered as pre-auth.
    let login_req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    let reply = c.post("/tickets/initial", &login_req).await.unwrap();
    let mut r = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    r.pre_auth = Some(reply.body["enc_part"].as_str().unwrap().to_owned());
    assert_eq!(c.initial(&key, &r).await.unwrap().unwrap_err().status, 401);
}

fn rewrite_header(token: &str, from: &str, to: &str) -> String {
    let (h, rest) = token.split_once('.').unwrap();
    let json = String::from_utf8(b64::decode(h, "h").unwrap()).unwrap();
    assert!(json.contains(from), "{json}");
    format!("{}.{rest}", b64::encode(json.replace(from, to)))
}

#[tokio::test]
async fn alg_none_and_other_enc_are_refused() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    for (from, to) in [
        ("\"dir\"", "\"none\""),
        ("\"A256GCM\"", "\"A128GCM\""),
        ("\"A256GCM\"", "\"A256CBC-HS512\""),
        ("\"dir\"", "\"RSA-OAEP\""),
    ] {
        let mut req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
        req.tgt = rewrite_header(&tgt.ticket, from, to);
        assert_eq!(
            problem(&c.post("/tickets", &req).await.unwrap()),
            (401, "urn:kdc-http:problem:invalid-ticket"),
            "{to}"
        );
        let mut req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
        req.authenticator = rewrite_header(&req.authenticator, from, to);
        assert_eq!(
            problem(&c.post("/tickets", &req).await.unwrap()),
            (401, "urn:kdc-http:problem:invalid-authenticator"),
            "{to}"
        );
    }
    // A bare unsigned JWT in place of a ticket.
    let mut req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    req.tgt = format!("{}.{}.", b64::encode(br#"{"alg":"none"}"#), b64::encode(br#"{"sub":"alice@EXAMPLE.TEST"}"#));
    assert_eq!(c.post("/tickets", &req).await.unwrap().status, 401);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_problem_json() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    for path in ["/tickets/initial", "/tickets", "/tickets/renew"] {
        let a = c.post_raw(path, "application/json", b"{not json".to_vec()).await.unwrap();
        assert_eq!(a.status, 400, "{path}");
        assert!(a.content_type.starts_with("application/problem+json"), "{}", a.content_type);
        assert_eq!(a.body["type"], "urn:kdc-http:problem:malformed-request");
        let a = c.post_raw(path, "application/json", vec![b'a'; 3_000_000]).await.unwrap();
        assert_eq!(a.status, 413, "{path}");
        assert_eq!(a.body["type"], "urn:kdc-http:problem:payload-too-large");
        let a = c.post_raw(path, "text/plain", b"{}".to_vec()).await.unwrap();
        assert_eq!(a.status, 415, "{path}");
        let a = c.post(path, &json!({})).await.unwrap();
        assert_eq!(a.status, 400, "{path}: missing fields");
    }
    // Client-supplied authorization data is not accepted at all.
    let a = c
        .post("/tickets/initial", &json!({"client": "alice@EXAMPLE.TEST", "nonce": "n", "roles": ["admin"]}))
        .await
        .unwrap();
    assert_eq!(problem(&a), (400, "urn:kdc-http:problem:malformed-request"));
    // Invalid principal names, other realms, absurd nonces.
    let a = c.post("/tickets/initial", &json!({"client": "al ice@EXAMPLE.TEST", "nonce": "n"})).await.unwrap();
    assert_eq!(a.status, 400);
    let a = c.post("/tickets/initial", &json!({"client": "alice@OTHER.TEST", "nonce": "n"})).await.unwrap();
    assert_eq!(problem(&a), (400, "urn:kdc-http:problem:wrong-realm"));
    let a =
        c.post("/tickets/initial", &json!({"client": "alice@EXAMPLE.TEST", "nonce": "n".repeat(65)})).await.unwrap();
    assert_eq!(a.status, 400);
    // Unknown routes and methods.
    assert_eq!(problem(&c.get("/nope").await.unwrap()), (404, "urn:kdc-http:problem:not-found"));
    assert_eq!(problem(&c.get("/tickets").await.unwrap()), (405, "urn:kdc-http:problem:method-not-allowed"));
}

#[tokio::test]
async fn a_tgt_of_a_principal_disabled_after_issuance_is_refused() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let upd = PrincipalUpdate { disabled: Some(true), ..Default::default() };
    k.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    assert_eq!(
        problem(&c.tgs(&tgt, &req).await.unwrap().unwrap_err()),
        (403, "urn:kdc-http:problem:client-not-permitted")
    );
    assert_eq!(c.renew(&tgt, now()).await.unwrap().unwrap_err().status, 403);
    let upd = PrincipalUpdate { disabled: Some(false), ..Default::default() };
    k.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    c.service_ticket(&tgt, SVC_A).await.unwrap();
}

#[tokio::test]
async fn a_deleted_and_recreated_name_does_not_inherit_old_tickets() {
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    k.kdc.store().delete_principal("alice@EXAMPLE.TEST").await.unwrap();
    let spec = PrincipalSpec {
        name: "alice@EXAMPLE.TEST".parse().unwrap(),
        credential: Credential::Password(ALICE_PW.to_owned().into()),
        roles: vec!["admin".into()],
        max_life_secs: None,
        max_renew_secs: None,
    };
    k.kdc.create_principal(spec, now().as_secs()).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    assert_eq!(c.tgs(&tgt, &req).await.unwrap().unwrap_err().status, 403);
    // The new alice logs in afresh and is served.
    let fresh = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    c.service_ticket(&fresh, SVC_A).await.unwrap();
}
