//! Does a failed pre-authentication take the same time for an unknown name
//! as for a wrong password? Interleaved over HTTP on loopback; prints the
//! medians and their difference (a figure, not an assertion: these machines
//! are noisy).
//!
//! `cargo bench -p kdc-e2e --bench preauth_timing [-- ROUNDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::time::{Duration, Instant};

use kdc_e2e::{ProtoClient, TestKdc, now};
use kdc_server::Policy;
use kdc_server::ThrottlePolicy;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        // No throttling: this measures the failure path itself.
        let throttle = ThrottlePolicy {
            per_principal_address: u32::MAX,
            per_address: u32::MAX,
            per_principal: u32::MAX,
            window_secs: 1,
            ..ThrottlePolicy::default()
        };
        let kdc = TestKdc::start_with(Policy::default(), throttle).await.unwrap();
        let c = kdc.client();
        let wrong = c.derive_key("alice@EXAMPLE.TEST", "not the password").await.unwrap();
        let guess = c.derive_key("nobody@EXAMPLE.TEST", "not the password").await.unwrap();
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..rounds + 200 {
            let a = ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap();
            let b = ProtoClient::initial_request(&guess, "nobody@EXAMPLE.TEST", now()).unwrap();
            let t = Instant::now();
            let ra = c.post("/tickets/initial", &a).await.unwrap();
            let da = t.elapsed();
            let t = Instant::now();
            let rb = c.post("/tickets/initial", &b).await.unwrap();
            let db = t.elapsed();
            assert_eq!((ra.status, rb.status), (401, 401));
            if i >= 200 {
                known.push(da);
                unknown.push(db);
            }
        }
        let (k, u) = (median(known), median(unknown));
        println!("failed pre-auth over HTTP on loopback, {rounds} interleaved pairs, medians:");
        println!("  wrong password (alice)   {:>8.1} µs", k.as_secs_f64() * 1e6);
        println!("  unknown name (nobody)    {:>8.1} µs", u.as_secs_f64() * 1e6);
        println!("  difference               {:>8.1} µs", (u.as_secs_f64() - k.as_secs_f64()) * 1e6);
    });
}
