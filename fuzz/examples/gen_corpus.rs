//! Writes the seed corpus (`fuzz/corpus/<target>/`) with the crates' own
//! APIs and the fixed keys of `kdc_fuzz`: real headers, tickets,
//! authenticators, replies, keytabs, caches and request bodies, so each
//! target starts from inputs that pass its parsers and open under its keys.
//!
//! The seeds are committed; run this again only when a format changes:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```
//!
//! Sealing draws a fresh salt and nonce, so every run writes different (but
//! equally valid) bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use client_sdk::{CacheContents, CachedKdf, CachedTicket};
use kdc_fuzz::*;
use kdc_proto::Usage;
use kdc_proto::long_term_kid;
use kdc_proto::{
    Argon2Params, ErrorDetail, Kvno, LongTermKey, MutualReply, Principal, RequestBinding, TicketClaims, mint_ticket,
};
use kdc_proto::{Authenticator, authorization_value};
use kdc_proto::{
    EncTicketPart, InitialTicketRequest, Keytab, KeytabEntry, PreAuthTimestamp, RenewRequest, ServiceTicketRequest,
};

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("creating the corpus directory");
    std::fs::write(Path::new(&dir).join(name), bytes).expect("writing a seed");
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("seeds serialise")
}

/// The client's part of the reply that issued a ticket with `claims`' times.
fn reply_part(claims: &TicketClaims, service: Principal, nonce: &str) -> EncTicketPart {
    EncTicketPart {
        session_key: session_key(),
        nonce: nonce.into(),
        service,
        auth_time: claims.auth_time,
        start_time: claims.nbf,
        end_time: claims.exp,
        renew_till: claims.renew_till,
        flags: claims.flags,
        kvno: Kvno(2),
    }
}

fn ticket(claims: &TicketClaims, key: &LongTermKey) -> String {
    mint_ticket(claims, &kdc_signing_key(), key).expect("the seed ticket is minted")
}

fn authenticator(at_secs: u64, binding: &RequestBinding, usage: Usage) -> String {
    Authenticator::new(client(), kdc_proto::UnixMillis::from_secs(at_secs), binding)
        .seal(&session_key(), usage)
        .expect("sealing a seed")
}

fn main() {
    let claims = claims();
    let tkt = ticket(&claims, &service_key());
    let get_hello = RequestBinding::new("GET", "api.example.test", "/hello", None);
    let auth = authenticator(NOW_SECS, &get_hello, Usage::Authenticator);

    // authorization_header: what a service receives.
    let t = "authorization_header";
    write(t, "valid", authorization_value(&tkt, &auth));
    write(t, "valid-old-kvno", authorization_value(&ticket(&claims, &old_service_key()), &auth));
    let post = RequestBinding::new("POST", "api.example.test", "/items?x=1", Some(b"{\"name\":\"x\"}"));
    write(t, "valid-body-bound", authorization_value(&tkt, &authenticator(NOW_SECS, &post, Usage::Authenticator)));
    write(
        t,
        "skewed-authenticator",
        authorization_value(&tkt, &authenticator(NOW_SECS + 900, &get_hello, Usage::Authenticator)),
    );
    write(
        t,
        "tgs-authenticator",
        authorization_value(&tkt, &authenticator(NOW_SECS, &get_hello, Usage::TgsAuthenticator)),
    );
    let expired = TicketClaims { nbf: NOW_SECS - 7200, exp: NOW_SECS - 3600, ..claims.clone() };
    write(t, "expired-ticket", authorization_value(&ticket(&expired, &service_key()), &auth));
    let other: Principal = "HTTP/other.example.test@EXAMPLE.TEST".parse().expect("a valid name");
    let elsewhere = TicketClaims { aud: other.clone(), ..claims.clone() };
    write(t, "ticket-for-another-service", authorization_value(&ticket(&elsewhere, &service_key()), &auth));
    write(t, "reordered-lowercase", format!("ticket   authenticator=\"{auth}\",ticket=\"{tkt}\""));
    write(t, "other-scheme", "Bearer eyJhbGciOiJub25lIn0.e30.");

    // sealed_object: one object of each usage, under the fixed keys.
    let t = "sealed_object";
    write(t, "ticket", &tkt);
    write(t, "authenticator", &auth);
    let sent = Authenticator::new(client(), NOW, &get_hello);
    write(
        t,
        "mutual-reply",
        MutualReply::for_response(&sent, 200, b"hello").seal(&session_key()).expect("sealing a seed"),
    );
    write(
        t,
        "error-detail",
        ErrorDetail { server_time: NOW, nonce: sent.nonce.clone() }.seal(&session_key()).expect("sealing a seed"),
    );
    let enc_part = reply_part(&claims, service(), "n-1");
    let client_kid = long_term_kid(&client(), Kvno(1));
    write(
        t,
        "as-reply",
        kdc_proto::seal(&client_key(), &client_kid, Usage::AsReply, &json(&enc_part)).expect("sealing a seed"),
    );
    write(
        t,
        "tgs-reply",
        kdc_proto::seal(&session_key(), "session", Usage::TgsReply, &json(&enc_part)).expect("sealing a seed"),
    );
    let pre_auth = kdc_proto::seal(
        &client_key(),
        &client_kid,
        Usage::PreAuth,
        &json(&PreAuthTimestamp { ts: NOW, nonce: "n-1".into() }),
    )
    .expect("sealing a seed");
    write(t, "pre-auth", &pre_auth);
    write(
        t,
        "session-secret",
        kdc_proto::seal(&session_key(), "session", Usage::SessionSecret, b"correct horse").expect("sealing a seed"),
    );
    write(
        t,
        "key-at-rest",
        kdc_proto::seal(&service_key().key, "master#1", Usage::KeyAtRest, service_key().key.expose())
            .expect("sealing a seed"),
    );

    // ticket_claims: the signed JSON, a JWS, and tickets.
    let t = "ticket_claims";
    write(t, "claims", json(&claims));
    let minimal = TicketClaims { renew_till: None, flags: Default::default(), roles: vec![], ..claims.clone() };
    write(t, "claims-minimal", json(&minimal));
    write(t, "claims-other-service", json(&elsewhere));
    write(t, "jws", kdc_signing_key().sign(&claims).expect("signing the seed claims"));
    write(t, "ticket", &tkt);
    write(t, "ticket-old-kvno", ticket(&claims, &old_service_key()));

    // principal_name: names, realms, bare names and key ids.
    let t = "principal_name";
    for (name, s) in [
        ("user", CLIENT),
        ("service", SERVICE),
        ("krbtgt", "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST"),
        ("kadmin", "kadmin/admin@EXAMPLE.TEST"),
        ("bare", "bob_smith-2"),
        ("bare-with-instance", "HTTP/api.example.test"),
        ("realm", REALM),
        ("kid", "HTTP/api.example.test@EXAMPLE.TEST#2"),
    ] {
        write(t, name, s);
    }

    // keytab: as `kdc keytab export` writes it (pretty) and compact.
    let t = "keytab";
    let kt = keytab();
    write(t, "export", serde_json::to_vec_pretty(&kt).expect("keytab serialises"));
    write(t, "compact", json(&kt));
    let retired = Keytab {
        keys: vec![KeytabEntry { kvno: Kvno(1), key: old_service_key().key, expires_at: Some(NOW_SECS - 1) }],
        ..kt.clone()
    };
    write(t, "all-retired", json(&retired));

    // cache_file: as `FileCache` writes it.
    let t = "cache_file";
    let cached =
        |service: Principal, ticket: String| CachedTicket { ticket, part: reply_part(&claims, service, "n-0") };
    let tgt_claims = TicketClaims { aud: Principal::ticket_granting(&realm()), ..claims.clone() };
    let krbtgt_key = LongTermKey { kvno: Kvno(1), key: client_key() };
    let mut tickets = BTreeMap::new();
    tickets.insert(SERVICE.to_owned(), cached(service(), tkt.clone()));
    let full = CacheContents {
        version: client_sdk::CACHE_VERSION,
        principal: Some(client()),
        kdc: Some("http://127.0.0.1:8088".into()),
        tgt: Some(cached(Principal::ticket_granting(&realm()), ticket(&tgt_claims, &krbtgt_key))),
        tickets,
        discovery: None,
        kdf: BTreeMap::from([(
            client().to_string(),
            CachedKdf { salt: kdc_proto::password_salt(&client()), argon2: Argon2Params::DEFAULT },
        )]),
    };
    write(t, "logged-in", json(&full));
    write(t, "empty", json(&CacheContents { version: client_sdk::CACHE_VERSION, ..Default::default() }));

    // kdc_request: the exchanges' bodies and the admin API's.
    let t = "kdc_request";
    let initial = InitialTicketRequest {
        client: client(),
        service: None,
        nonce: "n-1".into(),
        lifetime_secs: Some(3600),
        renewable: Some(true),
        pre_auth: None,
    };
    write(t, "initial", json(&initial));
    write(t, "initial-pre-auth", json(&InitialTicketRequest { pre_auth: Some(pre_auth), ..initial.clone() }));
    let binding = ServiceTicketRequest::binding_for(&service(), "n-2", None, None);
    let tgs_auth = authenticator(NOW_SECS, &binding, Usage::TgsAuthenticator);
    let tgs = ServiceTicketRequest {
        tgt: tkt.clone(),
        authenticator: tgs_auth,
        service: service(),
        nonce: "n-2".into(),
        lifetime_secs: None,
        renewable: None,
    };
    write(t, "service-ticket", json(&tgs));
    let renew_auth = authenticator(NOW_SECS, &RenewRequest::binding_for("n-3"), Usage::TgsAuthenticator);
    write(t, "renew", json(&RenewRequest { ticket: tkt.clone(), authenticator: renew_auth, nonce: "n-3".into() }));
    let password = kdc_proto::seal(&session_key(), "session", Usage::SessionSecret, b"correct horse battery staple")
        .expect("sealing a seed");
    write(
        t,
        "admin-create-user",
        format!(
            r#"{{"name":"bob","kind":"user","password_sealed":"{password}","roles":["reader"],"max_life_secs":3600}}"#
        ),
    );
    write(t, "admin-create-service", r#"{"name":"HTTP/new.example.test","kind":"service"}"#);
    write(
        t,
        "admin-update",
        r#"{"disabled":true,"roles":["reader","admin"],"max_life_secs":null,"max_renew_secs":86400}"#,
    );
    write(t, "admin-rotate", format!(r#"{{"password_sealed":"{password}"}}"#));
    write(t, "admin-rotate-empty", "{}");
}
