//! The client's per-request cost with a cached ticket: a fresh authenticator
//! bound to the request, sealed, formatted into `Authorization`, plus the
//! check of the service's mutual reply over status and body.
//!
//! `cargo bench -p client-sdk --bench per_request`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kdc_proto::Usage;
use kdc_proto::authorization_value;
use kdc_proto::*;

fn bench(c: &mut Criterion) {
    let skey = SecretKey::generate();
    let ticket = "x".repeat(1100); // the size of a real ticket; the client never opens it
    let client: Principal = "alice@EXAMPLE.TEST".parse().unwrap();
    let body = b"hello, alice@EXAMPLE.TEST".to_vec();
    let now = SystemClock.now();
    c.bench_function("client/authorize + verify mutual reply", |b| {
        b.iter_batched(
            || {
                // What the service sends back for the authenticator the
                // client is about to make is computed after it; prepare a
                // matching pair outside the timed part.
                let a = Authenticator::new(
                    client.clone(),
                    now,
                    &RequestBinding::new("GET", "api.example.test", "/hello", None),
                );
                let reply = MutualReply::for_response(&a, 200, &body).seal(&skey).unwrap();
                (a, reply)
            },
            |(a, reply)| {
                let fresh = Authenticator::new(
                    client.clone(),
                    now,
                    &RequestBinding::new("GET", "api.example.test", "/hello", None),
                );
                let header = authorization_value(&ticket, &fresh.seal(&skey, Usage::Authenticator).unwrap());
                verify_mutual_reply(&reply, &skey, &a, 200, &body).unwrap();
                header
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
