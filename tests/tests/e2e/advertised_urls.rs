//! Issue 14: the KDC's advertised URLs come from its configuration, never
//! from the request; discovery and the JWK set say how long they may be
//! cached.

use kdc_e2e::*;

use crate::kdc_bin;

/// Every header and the body of an answer, as one text to search.
async fn whole_answer(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let mut text = String::new();
    for (name, value) in r.headers() {
        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("<bytes>")));
    }
    text.push_str(&r.text().await.unwrap());
    (status, text)
}

#[tokio::test]
async fn a_forged_host_is_never_reflected() {
    let kdc = TestKdc::start().await.unwrap();
    let http = reqwest::Client::new();
    let forged = "evil.example";
    let requests = [
        http.get(format!("{}/.well-known/kdc-configuration", kdc.url)),
        http.get(format!("{}/.well-known/jwks.json", kdc.url)),
        http.get(format!("{}/nope", kdc.url)),
        http.get(format!("{}/tickets", kdc.url)),
        http.post(format!("{}/tickets", kdc.url)).header("content-type", "application/json").body("{}"),
        http.get(format!("{}/admin/principals", kdc.url)),
        http.get(format!("{}/admin/principals", kdc.url))
            .header("authorization", "Ticket ticket=\"x\", authenticator=\"y\""),
    ];
    for req in requests {
        let (status, text) = whole_answer(req.header("host", forged).send().await.unwrap()).await;
        assert!(!text.contains(forged), "{status}: the forged Host is reflected in\n{text}");
    }
    // What discovery advertises is the KDC's own address.
    let doc: serde_json::Value = http
        .get(format!("{}/.well-known/kdc-configuration", kdc.url))
        .header("host", forged)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], kdc.url.as_str());
    assert_eq!(doc["jwks_uri"], format!("{}/.well-known/jwks.json", kdc.url));
}

#[tokio::test]
async fn discovery_and_the_key_set_say_how_long_to_keep_them() {
    let kdc = TestKdc::start().await.unwrap();
    for path in ["/.well-known/kdc-configuration", "/.well-known/jwks.json"] {
        let r = reqwest::get(format!("{}{path}", kdc.url)).await.unwrap();
        assert_eq!(r.headers()["cache-control"], "public, max-age=300", "{path}");
    }
}

#[tokio::test]
async fn the_configured_public_url_is_advertised_with_or_without_tls() {
    for public in ["https://kdc.example.test:8443", "http://kdc.internal.test/auth"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let kdc = KdcProcess::start_with(&kdc_bin(), &data, &["--public-url", &format!("{public}/")]).await.unwrap();
        let r = reqwest::Client::new()
            .get(format!("{}/.well-known/kdc-configuration", kdc.url))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc["issuer"], public);
        assert_eq!(doc["ticket_endpoint"], format!("{public}/tickets"));
        assert_eq!(doc["jwks_uri"], format!("{public}/.well-known/jwks.json"));
    }
}

#[tokio::test]
async fn a_kdc_on_a_non_loopback_address_without_a_public_url_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = tokio::process::Command::new(kdc_bin())
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--listen", listen])
            .env_remove("KDC_PUBLIC_URL")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{listen}: started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--public-url"), "{listen}: {err}");
        assert!(!data.exists(), "{listen}: refused, yet created the data directory");
    }
    // A bad public URL is refused too.
    let out = tokio::process::Command::new(kdc_bin())
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--public-url", "kdc.example.test"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public URL"));
}

/// The SDK keeps discovery as long as `max-age` allows, in its ticket cache:
/// a second process (`tkt`) does not ask again, and calls a service with a
/// cached ticket while the KDC is down.
#[tokio::test]
async fn the_sdk_keeps_discovery_in_its_cache_and_works_while_the_kdc_is_down() {
    use client_sdk::{ClientOptions, FileCache, KdcClient};
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tkt").join("tickets.json");
    let options = || ClientOptions::default().cache(std::sync::Arc::new(FileCache::new(&path).unwrap()));
    let c = KdcClient::discover(&kdc.url, options()).await.unwrap();
    c.login(&"alice@EXAMPLE.TEST".parse().unwrap(), ALICE_PW).await.unwrap();
    let url = format!("{}/hello", svc.url);
    let svc_a: kdc_proto::Principal = SVC_A.parse().unwrap();
    c.send(&svc_a, reqwest::Method::GET, &url, None).await.unwrap();
    let cached = std::fs::read_to_string(&path).unwrap();
    assert!(cached.contains("\"discovery\""), "discovery not cached: {cached}");
    // The KDC goes away; a new client (a new `tkt` process) still starts and
    // calls the service with its cached ticket.
    let kdc_url = kdc.url.clone();
    drop(svc);
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    drop(kdc);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(reqwest::get(format!("{kdc_url}/healthz")).await.is_err(), "the KDC still answers");
    let c = KdcClient::discover(&kdc_url, options()).await.unwrap();
    let ans = c.send(&svc_a, reqwest::Method::GET, &format!("{}/hello", svc.url), None).await.unwrap();
    assert_eq!(ans.status, 200);
}
