//! One full validation (header parse, ticket, authenticator, binding, replay
//! cache, principal) with a ticket already verified and cached, and with a
//! first-seen ticket (pays the KDC signature check).
//!
//! `cargo bench -p auth-middleware --bench validate`

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use auth_middleware::ServiceKeyring;
use auth_middleware::VerifierSettings;
use auth_middleware::{BoundRequest, InMemoryReplayCache, ReplayCache, TicketVerifier};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kdc_proto::Usage;
use kdc_proto::authorization_value;
use kdc_proto::*;
use kdc_proto::{Keytab, KeytabEntry};

struct Fixture {
    signer: KdcSigningKey,
    key: LongTermKey,
    service: Principal,
    verifier: TicketVerifier,
    now: UnixMillis,
}

fn fixture() -> Fixture {
    let signer = KdcSigningKey::generate();
    let key = LongTermKey { kvno: Kvno(1), key: SecretKey::generate() };
    let service: Principal = "HTTP/hello.example.test@EXAMPLE.TEST".parse().unwrap();
    let keytab = Keytab {
        version: 1,
        principal: service.clone(),
        keys: vec![KeytabEntry { kvno: key.kvno, key: key.key.clone(), expires_at: None }],
    };
    let now = SystemClock.now();
    let verifier = TicketVerifier::new(
        ServiceKeyring::from_keytab(&keytab, now).unwrap(),
        KdcVerifier::from_jwks(&JwkSet { keys: vec![signer.public_jwk()] }),
        Arc::new(InMemoryReplayCache::new(50_000_000, 50_000_000, UnixMillis(0))),
        VerifierSettings::default(),
    );
    Fixture { signer, key, service, verifier, now }
}

fn ticket(f: &Fixture) -> (String, SecretKey) {
    let skey = SecretKey::generate();
    let t = f.now.as_secs();
    let claims = TicketClaims {
        jti: b64::encode(&SecretKey::generate().expose()[..12]),
        iss: f.service.realm().clone(),
        sub: "alice@EXAMPLE.TEST".parse().unwrap(),
        cid: "cid-alice".into(),
        aud: f.service.clone(),
        sid: "sid-hello".into(),
        skey: skey.clone(),
        auth_time: t,
        nbf: t,
        exp: t + 36_000,
        renew_till: Some(t + 604_800),
        flags: TicketFlags { initial: false, pre_authent: true, renewable: true },
        roles: vec!["reader".into(), "writer".into()],
    };
    (mint_ticket(&claims, &f.signer, &f.key).unwrap(), skey)
}

fn header(ticket: &str, skey: &SecretKey, now: UnixMillis) -> String {
    let a = Authenticator::new(
        "alice@EXAMPLE.TEST".parse().unwrap(),
        now,
        &RequestBinding::new("GET", "hello.example.test", "/hello", None),
    );
    authorization_value(ticket, &a.seal(skey, Usage::Authenticator).unwrap())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let f = fixture();
    let (t, skey) = ticket(&f);
    let fr = &f;
    let validate = move |h: String| async move {
        let p = fr.verifier.open(Some(&h), fr.now).unwrap();
        let request = BoundRequest {
            method: "GET",
            authority: Some("hello.example.test"),
            path_and_query: "/hello",
            body: None,
            has_body: false,
        };
        fr.verifier.complete(p, request, fr.now).await.unwrap()
    };
    {
        let h = header(&t, &skey, f.now);
        c.bench_function("step/parse", |b| b.iter(|| auth_middleware::parse_authorization(&h).unwrap().ticket.len()));
        c.bench_function("step/digest", |b| b.iter(|| auth_middleware::ticket_digest(&t)));
        let creds = auth_middleware::parse_authorization(&h).unwrap();
        let st = SealedTicket::parse(creds.ticket).unwrap();
        let kdcv = KdcVerifier::from_jwks(&JwkSet { keys: vec![f.signer.public_jwk()] });
        let check = TicketCheck { service: &f.service, kdc: &kdcv, now: f.now, max_skew_secs: 300 };
        let vt = open_ticket(&st, &f.key.key, &check).unwrap();
        c.bench_function("step/open authenticator", |b| {
            b.iter(|| open_authenticator_timely(creds.authenticator, &vt, Usage::Authenticator, f.now, 300).unwrap())
        });
        c.bench_function("step/binding", |b| {
            b.iter(|| RequestBinding::new("GET", "hello.example.test", "/hello", None).digest())
        });
        c.bench_function("step/open ticket (uncached)", |b| {
            b.iter(|| open_ticket(&SealedTicket::parse(creds.ticket).unwrap(), &f.key.key, &check).unwrap())
        });
        c.bench_function("step/seal authenticator", |b| {
            b.iter(|| {
                Authenticator::new(
                    "alice@EXAMPLE.TEST".parse().unwrap(),
                    f.now,
                    &RequestBinding::new("GET", "hello.example.test", "/hello", None),
                )
                .seal(&skey, Usage::Authenticator)
                .unwrap()
            })
        });
    }
    {
        let cache = InMemoryReplayCache::new(50_000_000, 50_000_000, UnixMillis(0));
        let rt2 = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut i: u64 = 0;
        c.bench_function("step/replay insert", |b| {
            b.iter(|| {
                i += 1;
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&i.to_le_bytes());
                key[8..].copy_from_slice(&i.wrapping_mul(0x9E3779B97F4A7C15).to_le_bytes());
                key[0] = key[8];
                rt2.block_on(cache.check_and_insert(auth_middleware::ReplayEntry {
                    key,
                    principal: "alice@EXAMPLE.TEST",
                    remember_until: UnixMillis(u64::MAX),
                    now: f.now,
                }))
                .unwrap()
            })
        });
    }
    c.bench_function("validate/cached ticket", |b| {
        b.to_async(&rt).iter_batched(|| header(&t, &skey, f.now), validate, BatchSize::SmallInput)
    });
    c.bench_function("validate/first-seen ticket", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let (t, k) = ticket(&f);
                header(&t, &k, f.now)
            },
            validate,
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
