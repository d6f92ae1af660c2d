//! The known-answer document of a complete exchange
//! (`docs/known-answer-exchange.md` and `docs/known-answer-exchange.json`),
//! regenerated here from fixed keys, times and randomness and compared byte
//! for byte with both files, so neither can drift from the code.
//!
//! Every sealed object is made with `kdc_proto::seal_with`, the code path `seal`
//! itself takes, and then checked against the real code: each one opens with
//! the function a real receiver uses (`open_ticket`, `open_authenticator`,
//! `verify_mutual_reply`, `ErrorDetail::open`, the client's reply openers
//! `TicketReply::open_initial`/`open_service`/`open_renewal`, ...), and each
//! request and plaintext is the one the real sender produces (`mint_ticket`,
//! `Authenticator::seal`, `MutualReply::seal`, the client's request builders
//! in `kdc_proto::exchange`: made with fresh randomness, opened, compared).
//!
//! To regenerate after a deliberate protocol change:
//! `KDC_KAT_WRITE=1 cargo test -p kdc-proto --test known_answer_exchange`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kdc_proto::limits::{MAX_AUTHENTICATOR_LEN, MAX_SEALED_LEN};
use kdc_proto::long_term_kid;
use kdc_proto::{
    Argon2Params, Authenticator, ErrorDetail, IssuedTicket, JwkSet, KdcSigningKey, KdcVerifier, Kvno, LongTermKey,
    MutualReply, Principal, RequestBinding, SealedTicket, SecretKey, TicketCheck, TicketClaims, TicketFlags,
    UnixMillis, b64, derive_password_key, open_authenticator, open_ticket, password_salt, verify_mutual_reply,
};
use kdc_proto::{AuthenticationInfo, Challenge};
use kdc_proto::{
    EncTicketPart, InitialTicketRequest, PreAuthChallenge, PreAuthTimestamp, RenewRequest, ServiceTicketRequest,
    TicketReply,
};
use kdc_proto::{PROBLEM_CONTENT_TYPE, ProblemKind};
use kdc_proto::{SESSION_KID, authorization_value};
use kdc_proto::{SealRandomness, SealedObject, Usage};
use serde::Serialize;
use sha2::{Digest, Sha256};

const MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/known-answer-exchange.md");
const JSON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/known-answer-exchange.json");

/// The rule every fixed "random" input follows: the first `n` bytes of
/// SHA-256 of `kdc-http/v1 known-answer <label>`.
const FIXED_RULE: &str = "first n bytes of SHA-256(\"kdc-http/v1 known-answer \" || label)";

fn fixed(label: &str, n: usize) -> Vec<u8> {
    Sha256::digest(format!("kdc-http/v1 known-answer {label}").as_bytes())[..n].to_vec()
}

fn fixed_key(label: &str) -> SecretKey {
    SecretKey::from_slice(&fixed(label, 32)).unwrap()
}

fn fixed_b64(label: &str, n: usize) -> String {
    b64::encode(fixed(label, n))
}

fn randomness(label: &str) -> SealRandomness {
    SealRandomness {
        salt: fixed(&format!("{label} salt"), 16).try_into().unwrap(),
        iv: fixed(&format!("{label} iv"), 12).try_into().unwrap(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HKDF-SHA256 content key, computed here independently of `seal.rs`.
fn content_key(key: &SecretKey, salt: &[u8], usage: Usage) -> String {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), key.expose());
    let mut out = [0u8; 32];
    hk.expand(format!("kdc-http/v1 {}", usage.label()).as_bytes(), &mut out).unwrap();
    b64::encode(out)
}

/// One sealed object, with everything needed to reproduce it.
#[derive(Serialize)]
struct Sealed {
    /// Which key of the inputs it is sealed under.
    key: String,
    kid: String,
    usage: &'static str,
    /// The fixed randomness, base64url (as sent) and hex.
    salt: String,
    salt_hex: String,
    iv: String,
    iv_hex: String,
    /// HKDF-SHA256(key, salt, "kdc-http/v1 " || usage), base64url.
    content_key: String,
    /// The exact plaintext bytes, as UTF-8 text.
    plaintext: String,
    /// The exact protected header, as UTF-8 text.
    header: String,
    /// The compact serialization.
    sealed: String,
}

fn seal_fixed(key: &SecretKey, key_name: &str, kid: &str, usage: Usage, plaintext: &[u8], label: &str) -> Sealed {
    let r = randomness(label);
    let sealed = kdc_proto::seal_with(key, kid, usage, plaintext, &r).unwrap();
    let header = String::from_utf8(b64::decode(sealed.split('.').next().unwrap(), "header").unwrap()).unwrap();
    Sealed {
        key: key_name.to_owned(),
        kid: kid.to_owned(),
        usage: usage.label(),
        salt: b64::encode(r.salt),
        salt_hex: hex(&r.salt),
        iv: b64::encode(r.iv),
        iv_hex: hex(&r.iv),
        content_key: content_key(key, &r.salt, usage),
        plaintext: String::from_utf8(plaintext.to_vec()).unwrap(),
        header,
        sealed,
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// The plaintext a real sender puts in a sealed object: open it with the key.
fn opened(token: &str, key: &SecretKey, usage: Usage) -> Vec<u8> {
    SealedObject::parse(token, MAX_SEALED_LEN).unwrap().open(key, usage).unwrap().to_vec()
}

#[derive(Serialize)]
struct KeyInput {
    principal: String,
    id: String,
    kvno: u32,
    key: String,
}

#[derive(Serialize)]
struct Inputs {
    fixed_rule: &'static str,
    realm: String,
    client: String,
    client_id: String,
    password: String,
    password_utf8_hex: String,
    argon2: Argon2Params,
    password_salt: String,
    client_key: String,
    client_kvno: u32,
    krbtgt: KeyInput,
    service: KeyInput,
    kdc_signing_seed: String,
    kdc_signing_kid: String,
    jwks: JwkSet,
    max_skew_secs: u64,
    max_life_secs: u64,
    max_renew_secs: u64,
    /// Every key a sealed object names in its `key`, base64url.
    keys: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Ticket {
    claims: String,
    jws: String,
    sealed: Sealed,
}

#[derive(Serialize)]
struct Binding {
    /// The bound body, as UTF-8 text.
    body: String,
    canonical: String,
    bnd: String,
}

#[derive(Serialize)]
struct Vectors {
    description: &'static str,
    inputs: Inputs,
    /// `POST /tickets/initial` without pre-authentication, at `T`.
    as_challenge_request: String,
    /// The challenge members of the `401 preauth-required` answer.
    as_challenge: String,
    pre_auth: Sealed,
    as_request: String,
    tgt: Ticket,
    as_enc_part: Sealed,
    as_reply: String,
    tgs_binding: Binding,
    tgs_authenticator: Sealed,
    tgs_request: String,
    service_ticket: Ticket,
    tgs_enc_part: Sealed,
    tgs_reply: String,
    ap_binding: Binding,
    ap_authenticator: Sealed,
    authorization: String,
    response_status: u16,
    response_body: String,
    mutual_reply: Sealed,
    authentication_info: String,
    clock_skew_detail: Sealed,
    clock_skew_www_authenticate: String,
    renew_binding: Binding,
    renew_authenticator: Sealed,
    renew_request: String,
    renewed_tgt: Ticket,
    renew_enc_part: Sealed,
    renew_reply: String,
}

const T: u64 = 1_800_000_000_000;
const SKEW: u64 = 300;
const MAX_LIFE: u64 = 36_000;
const MAX_RENEW: u64 = 604_800;

fn vectors() -> Vectors {
    let realm: kdc_proto::Realm = "EXAMPLE.TEST".parse().unwrap();
    let alice: Principal = "alice@EXAMPLE.TEST".parse().unwrap();
    let alice_id = fixed_b64("client id", 16);
    let tgs = Principal::ticket_granting(&realm);
    let api: Principal = "HTTP/api.example.test@EXAMPLE.TEST".parse().unwrap();
    let krbtgt = LongTermKey { kvno: Kvno(1), key: fixed_key("krbtgt key") };
    let krbtgt_id = fixed_b64("krbtgt id", 16);
    let service = LongTermKey { kvno: Kvno(2), key: fixed_key("service key") };
    let service_id = fixed_b64("service id", 16);
    let signer = KdcSigningKey::from_seed(fixed("kdc signing seed", 32).try_into().unwrap());
    let jwks = JwkSet { keys: vec![signer.public_jwk()] };
    let verifier = KdcVerifier::from_jwks(&jwks);

    // The password: UTF-8 bytes as typed, no normalisation (this one is NFC).
    let password = "correct horse battery stäple";
    let params = Argon2Params::FLOOR;
    let salt = password_salt(&alice);
    let client_key = derive_password_key(password.as_bytes(), &salt, params).unwrap();
    let client_kid = long_term_kid(&alice, Kvno(1));

    // 1. AS without pre-authentication: the challenge, at T.
    let as_challenge_request = InitialTicketRequest::without_pre_auth(alice.clone(), fixed_b64("challenge nonce", 12));
    let challenge = PreAuthChallenge {
        realm: realm.clone(),
        kdf: "argon2id".to_owned(),
        salt: salt.clone(),
        argon2: params,
        server_time: UnixMillis(T),
    };

    // 2. Pre-authentication, made at T + 1 s.
    let as_nonce = fixed_b64("as nonce", 12);
    let pa = PreAuthTimestamp { ts: UnixMillis(T + 1_000), nonce: as_nonce.clone() };
    let pre_auth = seal_fixed(&client_key, "client_key", &client_kid, Usage::PreAuth, &json(&pa), "pre-auth");
    let as_request = InitialTicketRequest {
        nonce: as_nonce.clone(),
        pre_auth: Some(pre_auth.sealed.clone()),
        ..as_challenge_request.clone()
    };

    // 3. The AS reply, issued at T + 1 s.
    let as_now = (T + 1_000) / 1000;
    let tgt_session = fixed_key("tgt session key");
    let tgt_flags = TicketFlags { initial: true, pre_authent: true, renewable: true };
    let tgt_claims = TicketClaims {
        jti: fixed_b64("tgt jti", 12),
        iss: realm.clone(),
        sub: alice.clone(),
        cid: alice_id.clone(),
        aud: tgs.clone(),
        sid: krbtgt_id.clone(),
        skey: tgt_session.clone(),
        auth_time: as_now,
        nbf: as_now,
        exp: as_now + MAX_LIFE,
        renew_till: Some(as_now + MAX_RENEW),
        flags: tgt_flags,
        roles: vec!["reader".to_owned()],
    };
    let tgt = ticket(&tgt_claims, &signer, &krbtgt, "krbtgt_key", "tgt");
    let as_enc = EncTicketPart {
        session_key: tgt_session.clone(),
        nonce: as_nonce.clone(),
        service: tgs.clone(),
        auth_time: as_now,
        start_time: as_now,
        end_time: as_now + MAX_LIFE,
        renew_till: Some(as_now + MAX_RENEW),
        flags: tgt_flags,
        kvno: krbtgt.kvno,
    };
    let as_enc_part = seal_fixed(&client_key, "client_key", &client_kid, Usage::AsReply, &json(&as_enc), "as-reply");
    let as_reply =
        TicketReply { client: alice.clone(), ticket: tgt.sealed.sealed.clone(), enc_part: as_enc_part.sealed.clone() };

    // 4. TGS request, made at T + 2 s.
    let tgs_nonce = fixed_b64("tgs nonce", 12);
    let tgs_binding = ServiceTicketRequest::binding_for(&api, &tgs_nonce, None, None);
    let tgs_auth = Authenticator {
        client: alice.clone(),
        ts: UnixMillis(T + 2_000),
        nonce: fixed_b64("tgs authenticator nonce", 12),
        bnd: tgs_binding.digest(),
        body: tgs_binding.binds_body(),
    };
    let tgs_authenticator = seal_fixed(
        &tgt_session,
        "tgt_session_key",
        SESSION_KID,
        Usage::TgsAuthenticator,
        &json(&tgs_auth),
        "tgs-authenticator",
    );
    let tgs_request = ServiceTicketRequest {
        tgt: tgt.sealed.sealed.clone(),
        authenticator: tgs_authenticator.sealed.clone(),
        service: api.clone(),
        nonce: tgs_nonce.clone(),
        lifetime_secs: None,
        renewable: None,
    };
    assert_eq!(tgs_request.binding(), tgs_binding);

    // 5. The TGS reply, issued at T + 2 s: bounded by the TGT's end and renew-till.
    let tgs_now = (T + 2_000) / 1000;
    let svc_session = fixed_key("service session key");
    let svc_flags = TicketFlags { initial: false, pre_authent: true, renewable: true };
    let svc_claims = TicketClaims {
        jti: fixed_b64("service ticket jti", 12),
        iss: realm.clone(),
        sub: alice.clone(),
        cid: alice_id.clone(),
        aud: api.clone(),
        sid: service_id.clone(),
        skey: svc_session.clone(),
        auth_time: as_now,
        nbf: tgs_now,
        exp: (tgs_now + MAX_LIFE).min(tgt_claims.exp),
        renew_till: tgt_claims.renew_till,
        flags: svc_flags,
        roles: vec!["reader".to_owned()],
    };
    let svc_ticket = ticket(&svc_claims, &signer, &service, "service_key", "service-ticket");
    let tgs_enc = EncTicketPart {
        session_key: svc_session.clone(),
        nonce: tgs_nonce.clone(),
        service: api.clone(),
        auth_time: as_now,
        start_time: tgs_now,
        end_time: svc_claims.exp,
        renew_till: svc_claims.renew_till,
        flags: svc_flags,
        kvno: service.kvno,
    };
    let tgs_enc_part =
        seal_fixed(&tgt_session, "tgt_session_key", SESSION_KID, Usage::TgsReply, &json(&tgs_enc), "tgs-reply");
    let tgs_reply = TicketReply {
        client: alice.clone(),
        ticket: svc_ticket.sealed.sealed.clone(),
        enc_part: tgs_enc_part.sealed.clone(),
    };

    // 6. The call: POST https://api.example.test:8443/items?x=1 with {"a":1}, at T + 3 s.
    let request_body = br#"{"a":1}"#;
    let ap_binding = RequestBinding::new("POST", "api.example.test:8443", "/items?x=1", Some(request_body));
    let ap_auth = Authenticator {
        client: alice.clone(),
        ts: UnixMillis(T + 3_000),
        nonce: fixed_b64("ap authenticator nonce", 12),
        bnd: ap_binding.digest(),
        body: ap_binding.binds_body(),
    };
    let ap_authenticator = seal_fixed(
        &svc_session,
        "service_session_key",
        SESSION_KID,
        Usage::Authenticator,
        &json(&ap_auth),
        "authenticator",
    );
    let authorization = authorization_value(&svc_ticket.sealed.sealed, &ap_authenticator.sealed);

    // 7. The service answers 201 with {"id":7}, and signs it.
    let (status, response_body) = (201u16, br#"{"id":7}"#);
    let mutual = MutualReply::for_response(&ap_auth, status, response_body);
    let mutual_reply = seal_fixed(
        &svc_session,
        "service_session_key",
        SESSION_KID,
        Usage::MutualReply,
        &json(&mutual),
        "mutual-reply",
    );
    let authentication_info = AuthenticationInfo { mutual: mutual_reply.sealed.clone() }.to_string();

    // 8. Had the service's clock said T + 10 min, the refusal's sealed time.
    let detail = ErrorDetail { server_time: UnixMillis(T + 600_000), nonce: ap_auth.nonce.clone() };
    let clock_skew_detail = seal_fixed(
        &svc_session,
        "service_session_key",
        SESSION_KID,
        Usage::ErrorDetail,
        &json(&detail),
        "error-detail",
    );
    let clock_skew_www_authenticate = Challenge::Ticket {
        realm: realm.to_string(),
        error: Some(ProblemKind::ClockSkew),
        server_time: Some(clock_skew_detail.sealed.clone()),
    }
    .to_string();

    // 9. Renewing the TGT at T + 4 s: a fresh session key, `initial` cleared.
    let renew_nonce = fixed_b64("renew nonce", 12);
    let renew_binding = RenewRequest::binding_for(&renew_nonce);
    let renew_auth = Authenticator {
        client: alice.clone(),
        ts: UnixMillis(T + 4_000),
        nonce: fixed_b64("renew authenticator nonce", 12),
        bnd: renew_binding.digest(),
        body: renew_binding.binds_body(),
    };
    let renew_authenticator = seal_fixed(
        &tgt_session,
        "tgt_session_key",
        SESSION_KID,
        Usage::TgsAuthenticator,
        &json(&renew_auth),
        "renew-authenticator",
    );
    let renew_request = RenewRequest {
        ticket: tgt.sealed.sealed.clone(),
        authenticator: renew_authenticator.sealed.clone(),
        nonce: renew_nonce.clone(),
    };
    let renew_now = (T + 4_000) / 1000;
    let renewed_session = fixed_key("renewed tgt session key");
    let renewed_flags = TicketFlags { initial: false, ..tgt_flags };
    let renewed_claims = TicketClaims {
        jti: fixed_b64("renewed tgt jti", 12),
        skey: renewed_session.clone(),
        nbf: renew_now,
        exp: (renew_now + MAX_LIFE).min(as_now + MAX_RENEW),
        flags: renewed_flags,
        ..tgt_claims.clone()
    };
    let renewed_tgt = ticket(&renewed_claims, &signer, &krbtgt, "krbtgt_key", "renewed-tgt");
    let renew_enc = EncTicketPart {
        session_key: renewed_session.clone(),
        nonce: renew_nonce.clone(),
        service: tgs.clone(),
        auth_time: as_now,
        start_time: renew_now,
        end_time: renewed_claims.exp,
        renew_till: renewed_claims.renew_till,
        flags: renewed_flags,
        kvno: krbtgt.kvno,
    };
    let renew_enc_part =
        seal_fixed(&tgt_session, "tgt_session_key", SESSION_KID, Usage::TgsReply, &json(&renew_enc), "renew-reply");
    let renew_reply = TicketReply {
        client: alice.clone(),
        ticket: renewed_tgt.sealed.sealed.clone(),
        enc_part: renew_enc_part.sealed.clone(),
    };

    // Every object opens with the function a real receiver uses, at the time
    // it arrives, and the plaintext is what the real sender produces.
    let check = |svc, now| TicketCheck { service: svc, kdc: &verifier, now: UnixMillis(now), max_skew_secs: SKEW };
    let pa_open: PreAuthTimestamp =
        serde_json::from_slice(&opened(&pre_auth.sealed, &client_key, Usage::PreAuth)).unwrap();
    assert_eq!(pa_open, pa);
    let v_tgt =
        open_ticket(&SealedTicket::parse(&tgt.sealed.sealed).unwrap(), &krbtgt.key, &check(&tgs, T + 2_000)).unwrap();
    assert_eq!(v_tgt.claims(), &tgt_claims);
    let tgt_issued = as_reply.clone().open_initial(&as_request, &client_key, UnixMillis(T + 1_000)).unwrap();
    assert_eq!(tgt_issued, IssuedTicket { ticket: tgt.sealed.sealed.clone(), part: as_enc.clone() });
    open_authenticator(
        &tgs_authenticator.sealed,
        &v_tgt,
        Usage::TgsAuthenticator,
        &tgs_request.binding(),
        UnixMillis(T + 2_000),
        SKEW,
    )
    .unwrap();
    let v_svc =
        open_ticket(&SealedTicket::parse(&svc_ticket.sealed.sealed).unwrap(), &service.key, &check(&api, T + 3_000))
            .unwrap();
    assert_eq!(v_svc.claims(), &svc_claims);
    let st_issued = tgs_reply.clone().open_service(&tgs_request, &tgt_issued, UnixMillis(T + 2_000)).unwrap();
    assert_eq!(st_issued, IssuedTicket { ticket: svc_ticket.sealed.sealed.clone(), part: tgs_enc.clone() });
    open_authenticator(
        &ap_authenticator.sealed,
        &v_svc,
        Usage::Authenticator,
        &ap_binding,
        UnixMillis(T + 3_000),
        SKEW,
    )
    .unwrap();
    verify_mutual_reply(&mutual_reply.sealed, &svc_session, &ap_auth, status, response_body).unwrap();
    assert_eq!(ErrorDetail::open(&clock_skew_detail.sealed, &svc_session, &ap_auth).unwrap(), detail);
    open_authenticator(
        &renew_authenticator.sealed,
        &v_tgt,
        Usage::TgsAuthenticator,
        &renew_request.binding(),
        UnixMillis(T + 4_000),
        SKEW,
    )
    .unwrap();
    let v_renewed =
        open_ticket(&SealedTicket::parse(&renewed_tgt.sealed.sealed).unwrap(), &krbtgt.key, &check(&tgs, T + 4_000))
            .unwrap();
    assert_eq!(v_renewed.claims(), &renewed_claims);
    let renewed_issued = renew_reply.clone().open_renewal(&renew_request, &tgt_issued, UnixMillis(T + 4_000)).unwrap();
    assert_eq!(renewed_issued, IssuedTicket { ticket: renewed_tgt.sealed.sealed.clone(), part: renew_enc.clone() });

    // The senders' own functions, with fresh randomness, seal the same plaintexts.
    for (a, key, usage, doc) in [
        (&tgs_auth, &tgt_session, Usage::TgsAuthenticator, &tgs_authenticator),
        (&ap_auth, &svc_session, Usage::Authenticator, &ap_authenticator),
        (&renew_auth, &tgt_session, Usage::TgsAuthenticator, &renew_authenticator),
    ] {
        let real = a.seal(key, usage).unwrap();
        assert_eq!(opened(&real, key, usage), doc.plaintext.as_bytes());
        assert!(real.len() <= MAX_AUTHENTICATOR_LEN);
        assert_eq!(SealedObject::parse(&real, MAX_AUTHENTICATOR_LEN).unwrap().kid(), doc.kid);
    }
    let real = mutual.seal(&svc_session).unwrap();
    assert_eq!(opened(&real, &svc_session, Usage::MutualReply), mutual_reply.plaintext.as_bytes());
    let real = detail.seal(&svc_session).unwrap();
    assert_eq!(opened(&real, &svc_session, Usage::ErrorDetail), clock_skew_detail.plaintext.as_bytes());
    // The client's request builders (fresh randomness) make the same
    // requests, their sealed parts opening to the same plaintexts (but for
    // the authenticators' random nonces).
    let real =
        InitialTicketRequest::pre_authenticated(alice.clone(), &client_key, Kvno(1), as_nonce.clone(), pa.ts).unwrap();
    let real_pa = real.pre_auth.clone().unwrap();
    assert_eq!(opened(&real_pa, &client_key, Usage::PreAuth), pre_auth.plaintext.as_bytes());
    assert_eq!(SealedObject::parse(&real_pa, MAX_SEALED_LEN).unwrap().kid(), pre_auth.kid);
    assert_eq!(InitialTicketRequest { pre_auth: as_request.pre_auth.clone(), ..real }, as_request);
    let real = ServiceTicketRequest::new(&alice, &tgt_issued, api.clone(), tgs_nonce.clone(), tgs_auth.ts).unwrap();
    let real_auth = built_authenticator(&real.authenticator, &tgt_session);
    assert_eq!(Authenticator { nonce: tgs_auth.nonce.clone(), ..real_auth }, tgs_auth);
    assert_eq!(ServiceTicketRequest { authenticator: tgs_request.authenticator.clone(), ..real }, tgs_request);
    let real = RenewRequest::new(&alice, &tgt_issued, renew_nonce.clone(), renew_auth.ts).unwrap();
    let real_auth = built_authenticator(&real.authenticator, &tgt_session);
    assert_eq!(Authenticator { nonce: renew_auth.nonce.clone(), ..real_auth }, renew_auth);
    assert_eq!(RenewRequest { authenticator: renew_request.authenticator.clone(), ..real }, renew_request);

    // The bound bodies shown are the ones the bindings digest.
    let tgs_body = format!("{api}\n{tgs_nonce}\n\n\n");
    assert_eq!(RequestBinding::new("POST", "", "/tickets", Some(tgs_body.as_bytes())), tgs_binding);
    let renew_body = format!("{renew_nonce}\n");
    assert_eq!(RequestBinding::new("POST", "", "/tickets/renew", Some(renew_body.as_bytes())), renew_binding);

    Vectors {
        description: "Known-answer vectors of a complete kdc-http/v1 exchange; see docs/known-answer-exchange.md.",
        inputs: Inputs {
            fixed_rule: FIXED_RULE,
            realm: realm.to_string(),
            client: alice.to_string(),
            client_id: alice_id,
            password: password.to_owned(),
            password_utf8_hex: hex(password.as_bytes()),
            argon2: params,
            password_salt: salt,
            client_key: client_key.to_b64(),
            client_kvno: 1,
            krbtgt: KeyInput {
                principal: tgs.to_string(),
                id: krbtgt_id,
                kvno: krbtgt.kvno.0,
                key: krbtgt.key.to_b64(),
            },
            service: KeyInput {
                principal: api.to_string(),
                id: service_id,
                kvno: service.kvno.0,
                key: service.key.to_b64(),
            },
            kdc_signing_seed: b64::encode(signer.seed()),
            kdc_signing_kid: signer.kid().to_owned(),
            jwks,
            max_skew_secs: SKEW,
            max_life_secs: MAX_LIFE,
            max_renew_secs: MAX_RENEW,
            keys: BTreeMap::from([
                ("client_key", client_key.to_b64()),
                ("krbtgt_key", krbtgt.key.to_b64()),
                ("service_key", service.key.to_b64()),
                ("tgt_session_key", tgt_session.to_b64()),
                ("service_session_key", svc_session.to_b64()),
                ("renewed_tgt_session_key", renewed_session.to_b64()),
            ]),
        },
        as_challenge_request: text(&as_challenge_request),
        as_challenge: text(&challenge),
        pre_auth,
        as_request: text(&as_request),
        tgt,
        as_enc_part,
        as_reply: text(&as_reply),
        tgs_binding: Binding {
            body: tgs_body,
            canonical: tgs_binding.canonical().to_owned(),
            bnd: tgs_binding.digest(),
        },
        tgs_authenticator,
        tgs_request: text(&tgs_request),
        service_ticket: svc_ticket,
        tgs_enc_part,
        tgs_reply: text(&tgs_reply),
        ap_binding: Binding {
            body: String::from_utf8(request_body.to_vec()).unwrap(),
            canonical: ap_binding.canonical().to_owned(),
            bnd: ap_binding.digest(),
        },
        ap_authenticator,
        authorization,
        response_status: status,
        response_body: String::from_utf8(response_body.to_vec()).unwrap(),
        mutual_reply,
        authentication_info,
        clock_skew_detail,
        clock_skew_www_authenticate,
        renew_binding: Binding {
            body: renew_body,
            canonical: renew_binding.canonical().to_owned(),
            bnd: renew_binding.digest(),
        },
        renew_authenticator,
        renew_request: text(&renew_request),
        renewed_tgt,
        renew_enc_part,
        renew_reply: text(&renew_reply),
    }
}

/// The authenticator a request builder sealed under `key`.
fn built_authenticator(sealed: &str, key: &SecretKey) -> Authenticator {
    let plain = opened(sealed, key, Usage::TgsAuthenticator);
    assert_eq!(SealedObject::parse(sealed, MAX_SEALED_LEN).unwrap().kid(), SESSION_KID);
    serde_json::from_slice(&plain).unwrap()
}

/// A ticket as `mint_ticket` makes it (signed, then sealed under the
/// service's key), with fixed randomness; checked against `mint_ticket`.
fn ticket(claims: &TicketClaims, signer: &KdcSigningKey, key: &LongTermKey, key_name: &str, label: &str) -> Ticket {
    let jws = signer.sign(claims).unwrap();
    let kid = long_term_kid(&claims.aud, key.kvno);
    let sealed = seal_fixed(&key.key, key_name, &kid, Usage::Ticket, jws.as_bytes(), label);
    let real = kdc_proto::mint_ticket(claims, signer, key).unwrap();
    assert_eq!(opened(&real, &key.key, Usage::Ticket), jws.as_bytes(), "mint_ticket signs something else");
    assert_eq!(SealedObject::parse(&real, MAX_SEALED_LEN).unwrap().kid(), kid);
    Ticket { claims: text(claims), jws, sealed }
}

fn sealed_block(s: &Sealed) -> String {
    format!(
        "key:         {}\nkid:         {}\nusage:       {}\nsalt:        {} (hex {})\niv:          {} (hex {})\n\
         content key: {}\nplaintext:   {}\nheader:      {}\nsealed:      {}\n",
        s.key, s.kid, s.usage, s.salt, s.salt_hex, s.iv, s.iv_hex, s.content_key, s.plaintext, s.header, s.sealed
    )
}

fn ticket_block(t: &Ticket) -> String {
    let (h, _) = t.jws.split_once('.').unwrap();
    let jws_header = String::from_utf8(b64::decode(h, "jws header").unwrap()).unwrap();
    format!("claims:      {}\njws header:  {jws_header}\njws:         {}\n{}", t.claims, t.jws, sealed_block(&t.sealed))
}

fn binding_block(b: &Binding) -> String {
    let mut out = String::from("bound body (\\n shown as ⏎):\n");
    for line in b.body.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(l) => writeln!(out, "  {l}⏎").unwrap(),
            None => writeln!(out, "  {line}").unwrap(),
        }
    }
    writeln!(out, "body digest: {}", b64::encode(Sha256::digest(b.body.as_bytes()))).unwrap();
    out.push_str("canonical:\n");
    for line in b.canonical.split_inclusive('\n') {
        writeln!(out, "  {}⏎", line.trim_end_matches('\n')).unwrap();
    }
    writeln!(out, "bnd:         {}", b.bnd).unwrap();
    out
}

fn post(path: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\nContent-Type: application/json\n\n{body}\n")
}

/// The generated content of each `<!-- kat:NAME -->` block of the document.
fn md_blocks(v: &Vectors) -> BTreeMap<&'static str, String> {
    let i = &v.inputs;
    let mut inputs = String::new();
    for (k, val) in [
        ("realm", i.realm.clone()),
        ("client", format!("{} (id {}, key version {})", i.client, i.client_id, i.client_kvno)),
        ("password", format!("{:?} (UTF-8 hex {})", i.password, i.password_utf8_hex)),
        ("argon2", format!("Argon2id v0x13, m_kib {}, t {}, p {}", i.argon2.m_kib, i.argon2.t, i.argon2.p)),
        ("password salt", format!("{:?}", i.password_salt)),
        ("client_key", format!("{} (derived: Argon2id of password and salt)", i.client_key)),
        ("krbtgt", format!("{} (id {}, kvno {})", i.krbtgt.principal, i.krbtgt.id, i.krbtgt.kvno)),
        ("krbtgt_key", i.krbtgt.key.clone()),
        ("service", format!("{} (id {}, kvno {})", i.service.principal, i.service.id, i.service.kvno)),
        ("service_key", i.service.key.clone()),
        ("kdc signing seed", i.kdc_signing_seed.clone()),
        ("kdc signing kid", i.kdc_signing_kid.clone()),
        ("jwks", text(&i.jwks)),
        ("tgt_session_key", i.keys["tgt_session_key"].clone()),
        ("service_session_key", i.keys["service_session_key"].clone()),
        ("renewed session key", i.keys["renewed_tgt_session_key"].clone()),
        ("T", format!("{T} (Unix ms)")),
    ] {
        writeln!(inputs, "{:<20} {val}", format!("{k}:")).unwrap();
    }
    let challenge = format!(
        "{}\nHTTP/1.1 401 Unauthorized\nContent-Type: {PROBLEM_CONTENT_TYPE}\nWWW-Authenticate: {}\n\n\
         challenge members: {}\n",
        post("/tickets/initial", &v.as_challenge_request),
        Challenge::PreAuth { realm: i.realm.clone() },
        v.as_challenge
    );
    BTreeMap::from([
        ("inputs", inputs),
        ("challenge", challenge),
        ("pre-auth", sealed_block(&v.pre_auth)),
        ("as-request", post("/tickets/initial", &v.as_request)),
        ("tgt", ticket_block(&v.tgt)),
        ("as-enc-part", sealed_block(&v.as_enc_part)),
        ("as-reply", format!("HTTP/1.1 200 OK\nContent-Type: application/json\n\n{}\n", v.as_reply)),
        ("tgs-binding", binding_block(&v.tgs_binding)),
        ("tgs-authenticator", sealed_block(&v.tgs_authenticator)),
        ("tgs-request", post("/tickets", &v.tgs_request)),
        ("service-ticket", ticket_block(&v.service_ticket)),
        ("tgs-enc-part", sealed_block(&v.tgs_enc_part)),
        ("tgs-reply", format!("HTTP/1.1 200 OK\nContent-Type: application/json\n\n{}\n", v.tgs_reply)),
        ("ap-binding", binding_block(&v.ap_binding)),
        ("ap-authenticator", sealed_block(&v.ap_authenticator)),
        (
            "ap-request",
            format!(
                "POST /items?x=1 HTTP/1.1\nHost: api.example.test:8443\nContent-Type: application/json\n\
                 Authorization: {}\n\n{{\"a\":1}}\n",
                v.authorization
            ),
        ),
        ("mutual-reply", sealed_block(&v.mutual_reply)),
        (
            "ap-response",
            format!(
                "HTTP/1.1 {} Created\nContent-Type: application/json\nAuthentication-Info: {}\n\n{}\n",
                v.response_status, v.authentication_info, v.response_body
            ),
        ),
        ("clock-skew-detail", sealed_block(&v.clock_skew_detail)),
        ("clock-skew-header", format!("WWW-Authenticate: {}\n", v.clock_skew_www_authenticate)),
        ("renew-binding", binding_block(&v.renew_binding)),
        ("renew-authenticator", sealed_block(&v.renew_authenticator)),
        ("renew-request", post("/tickets/renew", &v.renew_request)),
        ("renewed-tgt", ticket_block(&v.renewed_tgt)),
        ("renew-enc-part", sealed_block(&v.renew_enc_part)),
        ("renew-reply", format!("HTTP/1.1 200 OK\nContent-Type: application/json\n\n{}\n", v.renew_reply)),
    ])
}

/// The document with every generated block replaced by `blocks`; refuses an
/// unknown block name, a block left open, and a block the document lacks.
fn render_md(doc: &str, blocks: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut seen = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("<!-- kat:") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let name_end = from.find(" -->").expect("unterminated kat marker");
        let name = &from["<!-- kat:".len()..name_end];
        let body = blocks.get(name).unwrap_or_else(|| panic!("unknown block kat:{name}"));
        let close = "<!-- /kat -->";
        let end = from.find(close).unwrap_or_else(|| panic!("kat:{name} is not closed"));
        write!(out, "<!-- kat:{name} -->\n```text\n{body}```\n{close}").unwrap();
        seen.push(name.to_owned());
        rest = &from[end + close.len()..];
    }
    out.push_str(rest);
    for name in blocks.keys() {
        assert!(seen.iter().any(|s| s == name), "the document lacks <!-- kat:{name} -->");
    }
    out
}

#[test]
fn the_documents_match_the_code() {
    let v = vectors();
    let json = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let doc = std::fs::read_to_string(MD).unwrap();
    let md = render_md(&doc, &md_blocks(&v));
    if std::env::var("KDC_KAT_WRITE").is_ok_and(|v| v == "1") {
        std::fs::write(JSON, &json).unwrap();
        std::fs::write(MD, &md).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(JSON).unwrap_or_default();
    assert!(on_disk == json, "docs/known-answer-exchange.json differs from the code; KDC_KAT_WRITE=1 regenerates it");
    assert!(md == doc, "docs/known-answer-exchange.md differs from the code; KDC_KAT_WRITE=1 regenerates it");
}

#[test]
fn the_vectors_do_not_depend_on_the_run() {
    // Nothing random slipped in: two generations are identical.
    let a = serde_json::to_string(&vectors()).unwrap();
    let b = serde_json::to_string(&vectors()).unwrap();
    assert_eq!(a, b);
}
