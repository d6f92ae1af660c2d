//! Process lifecycle: SIGTERM stops accepting, lets open requests finish
//! within the grace period, and exits 0.

use std::time::{Duration, Instant};

use kdc_e2e::{KdcProcess, kdc_command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kdc_bin;

async fn serving(extra: &[&str]) -> (tempfile::TempDir, KdcProcess) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    kdc_command(
        &kdc_bin(),
        &["init", "--data", data.to_str().unwrap(), "--admin-password-stdin"],
        Some("bootstrap admin pw\n"),
    )
    .await
    .unwrap();
    let kdc = KdcProcess::start_with(&kdc_bin(), &data, extra).await.unwrap();
    (dir, kdc)
}

fn signal(kdc: &KdcProcess, sig: &str) {
    let pid = kdc.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
}

/// A request whose body is half sent: in flight until the rest arrives.
async fn half_sent_request(url: &str, body: &[u8]) -> tokio::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /tickets/initial HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body[..body.len() / 2]).await.unwrap();
    sock
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    let (_dir, kdc) = serving(&[]).await;
    let body = br#"{"client":"alice@EXAMPLE.TEST","nonce":"lifecycle-nonce-1"}"#;
    let mut in_flight = half_sent_request(&kdc.url, body).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    signal(&kdc, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once shutting down.
    let addr = kdc.url.trim_start_matches("http://").to_owned();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "still accepting after SIGTERM");
    // The open request completes and is answered.
    in_flight.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "the request in flight was not answered: {answer}");
    let status = kdc.exited(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "{status}");
    eprintln!("SIGTERM to exit with a request in flight: {:?} (300 ms of it waiting on the client)", sent.elapsed());
}

#[tokio::test]
async fn a_request_that_never_finishes_does_not_hold_shutdown_past_the_grace_period() {
    let (_dir, kdc) = serving(&["--shutdown-grace", "1"]).await;
    let body = br#"{"client":"alice@EXAMPLE.TEST","nonce":"lifecycle-nonce-2"}"#;
    let _stuck = half_sent_request(&kdc.url, body).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    signal(&kdc, "-TERM");
    let status = kdc.exited(Duration::from_secs(5)).await.unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "{status}");
    assert!(took >= Duration::from_millis(900), "exited before the grace period: {took:?}");
    eprintln!("SIGTERM to exit with a stuck request and a 1 s grace: {took:?}");
}
