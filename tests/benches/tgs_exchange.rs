//! Latency of one service-ticket (TGS) exchange over HTTP on loopback,
//! against a bare axum handler measured the same way in the same run.
//!
//! `cargo bench -p kdc-e2e --bench tgs_exchange [-- ITERATIONS]`
//!
//! Each iteration is one full client-side exchange: seal an authenticator,
//! POST /tickets over a kept-alive connection, parse the reply and open the
//! sealed part. Prints the median, p90 and p99 of per-iteration wall time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use kdc_e2e::{ALICE_PW, ProtoClient, SVC_A, TestKdc, now};
use serde_json::{Value, json};

fn summary(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let (median, p90, p99) = (q(0.5), q(0.9), q(0.99));
    println!(
        "{name:<34} n={:<6} median {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs",
        samples.len(),
        median.as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    median
}

async fn bare_axum() -> String {
    let app = axum::Router::new().route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn main() {
    let iterations: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let kdc = TestKdc::start().await.unwrap();
        let client = kdc.client();
        let tgt = client.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
        let baseline_url = bare_axum().await;
        let http = reqwest::Client::new();
        // A body of the same size as a TGS request, echoed back.
        let sample_req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
        let payload = json!(sample_req);

        for _ in 0..200 {
            client.service_ticket(&tgt, SVC_A).await.unwrap();
            http.post(format!("{baseline_url}/echo")).json(&payload).send().await.unwrap().bytes().await.unwrap();
        }
        let (mut kdc_samples, mut base_samples) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
        // Interleave the two so machine noise hits both alike.
        for _ in 0..iterations {
            let t = Instant::now();
            client.service_ticket(&tgt, SVC_A).await.unwrap();
            kdc_samples.push(t.elapsed());
            let t = Instant::now();
            http.post(format!("{baseline_url}/echo")).json(&payload).send().await.unwrap().bytes().await.unwrap();
            base_samples.push(t.elapsed());
        }
        println!("service-ticket exchange over HTTP on loopback ({iterations} runs each, interleaved)");
        let k = summary("POST /tickets (full TGS exchange)", kdc_samples);
        let b = summary("bare axum JSON echo (baseline)", base_samples);
        println!(
            "ratio of medians: {:.2}x the bare handler; KDC-side cost ≈ {:.1} µs",
            k.as_secs_f64() / b.as_secs_f64(),
            (k.as_secs_f64() - b.as_secs_f64()) * 1e6
        );
    });
}
