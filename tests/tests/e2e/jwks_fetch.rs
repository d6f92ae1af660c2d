//! Issue 7, finding 5: the KDC's signing keys decide which tickets are
//! genuine, so the layer fetches them only over https (plain http to
//! loopback only when allowed explicitly), reads a bounded body, follows no
//! redirect, and flags a refresh that swaps every key at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_middleware::{ConfigError, TicketAuthLayer};
use kdc_e2e::*;

async fn keytab_of(kdc: &TestKdc) -> kdc_proto::Keytab {
    kdc.kdc.keytab(&SVC_A.parse().unwrap(), now().as_secs()).await.unwrap()
}

async fn build(kdc: &TestKdc, uri: &str, allow_loopback_http: bool) -> Result<TicketAuthLayer, ConfigError> {
    TicketAuthLayer::builder()
        .keytab(keytab_of(kdc).await)
        .kdc_jwks_uri(uri)
        .jwks_allow_loopback_http(allow_loopback_http)
        .build()
        .await
}

#[tokio::test]
async fn keys_are_fetched_over_https_only_unless_loopback_is_allowed_explicitly() {
    let kdc = TestKdc::start().await.unwrap();
    let jwks = format!("{}/.well-known/jwks.json", kdc.url);
    for (uri, allow) in [("http://kdc.example.test/.well-known/jwks.json", true), (jwks.as_str(), false)] {
        let e = build(&kdc, uri, allow).await.unwrap_err();
        assert!(matches!(e, ConfigError::Jwks { .. }), "{uri}: {e}");
    }
    assert!(build(&kdc, &jwks, true).await.is_ok());
}

/// Serves `body` at every path, or an endless stream when `endless`.
async fn fake_kdc(body: Arc<Mutex<String>>, endless: bool) -> String {
    use axum::body::Body;
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            if endless {
                let chunk = bytes::Bytes::from(vec![b' '; 16 * 1024]);
                let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                return axum::response::Response::new(Body::from_stream(stream));
            }
            axum::response::Response::new(Body::from(body.lock().unwrap().clone()))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn an_endless_key_set_is_cut_off_at_the_cap() {
    let kdc = TestKdc::start().await.unwrap();
    let uri = fake_kdc(Arc::new(Mutex::new(String::new())), true).await;
    let started = std::time::Instant::now();
    let e = build(&kdc, &uri, true).await.unwrap_err();
    assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "read for {:?}", started.elapsed());
}

#[tokio::test]
async fn a_refresh_that_replaces_every_key_is_counted() {
    let kdc = TestKdc::start().await.unwrap();
    let real = serde_json::to_string(&kdc.kdc.jwks()).unwrap();
    let served = Arc::new(Mutex::new(real.clone()));
    let uri = fake_kdc(served.clone(), false).await;
    let layer = TicketAuthLayer::builder()
        .keytab(keytab_of(&kdc).await)
        .kdc_jwks_uri(&uri)
        .jwks_allow_loopback_http(true)
        .jwks_refresh_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    // Adding a key beside the old one (a rotation) is not flagged.
    let mut rotated = kdc.kdc.jwks();
    rotated.keys.push(kdc_proto::KdcSigningKey::generate().public_jwk());
    *served.lock().unwrap() = serde_json::to_string(&rotated).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(layer.jwks_unrelated_replacements(), 0);
    // Someone else's keys only: flagged.
    let foreign = kdc_proto::JwkSet { keys: vec![kdc_proto::KdcSigningKey::generate().public_jwk()] };
    *served.lock().unwrap() = serde_json::to_string(&foreign).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(layer.jwks_unrelated_replacements(), 1);
    // The same key id with another key behind it: flagged too.
    let mut swapped = foreign.clone();
    swapped.keys[0].x = kdc_proto::KdcSigningKey::generate().public_jwk().x;
    *served.lock().unwrap() = serde_json::to_string(&swapped).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(layer.jwks_unrelated_replacements(), 2);
}
