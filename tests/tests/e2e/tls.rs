//! TLS end to end: the KDC (`kdc serve --tls-cert/--tls-key`), a service
//! behind the layer, the SDK and `tkt`, all with a private CA, and what each
//! does with a certificate it must not trust.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use auth_middleware::{AuthenticatedPrincipal, TicketAuthLayer};
use client_sdk::{ClientOptions, KdcClient, MemoryCache, SdkError};
use kdc_e2e::{KdcProcess, kdc_command};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::kdc_bin;

const ALICE_PW: &str = "correct horse battery staple";
const SERVICE: &str = "HTTP/localhost";

/// A private CA and what it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(rcgen::DnType::CommonName, "e2e test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `localhost` and `127.0.0.1`, written to
    /// `NAME.pem` and `NAME.key`; returns the paths and the DER certificate.
    fn server(&self, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().to_vec())
    }
}

/// A realm with alice and `HTTP/localhost` in `data`; returns the keytab path.
async fn realm(data: &Path) -> PathBuf {
    let bin = kdc_bin();
    let d = data.to_str().unwrap();
    kdc_command(&bin, &["init", "--data", d, "--admin-password-stdin"], Some("bootstrap admin pw\n")).await.unwrap();
    kdc_command(&bin, &["principal", "add", "alice", "--data", d, "--password-stdin"], Some(&format!("{ALICE_PW}\n")))
        .await
        .unwrap();
    kdc_command(&bin, &["principal", "add", SERVICE, "--data", d, "--service"], None).await.unwrap();
    let keytab = data.with_extension("keytab");
    kdc_command(&bin, &["keytab", "export", SERVICE, "--data", d, "--out", keytab.to_str().unwrap()], None)
        .await
        .unwrap();
    keytab
}

/// `kdc serve` over TLS with the certificate `name` from `pki`.
async fn tls_kdc(pki: &Pki, data: &Path, name: &str) -> KdcProcess {
    let (cert, key, _) = pki.server(name);
    KdcProcess::start_with(
        &kdc_bin(),
        data,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    )
    .await
    .unwrap()
}

fn trusting(pki: &Pki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca_file()).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).tls_info(true).build().unwrap()
}

/// A service behind the layer, serving https with `pki`'s certificate and
/// fetching the KDC's keys over https (trusting `pki`'s CA).
async fn tls_service(pki: &Pki, kdc: &str, keytab: &Path) -> (String, tokio::task::JoinHandle<()>) {
    let (cert, key, _) = pki.server("service");
    let layer = TicketAuthLayer::builder()
        .keytab_file(keytab)
        // A state file not there yet: a first start, no warm-up.
        .replay_state_file(keytab.with_extension("replay-state"))
        .kdc_jwks_uri(format!("{kdc}/.well-known/jwks.json"))
        .kdc_ca_cert_file(pki.ca_file())
        .build()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|who: AuthenticatedPrincipal| async move { format!("hello, {}", who.name()) }),
        )
        .layer(layer);
    let tls = auth_middleware::ServerTls::from_pem_files(cert, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = auth_middleware::serve_tls(listener, app, Default::default(), &tls, std::future::pending()).await;
    });
    (url, task)
}

#[tokio::test]
async fn the_kdc_serves_https_and_advertises_https_urls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    realm(&data).await;
    let kdc = tls_kdc(&pki, &data, "kdc").await;
    assert!(kdc.url.starts_with("https://127.0.0.1:"), "{}", kdc.url);
    let doc: serde_json::Value = trusting(&pki)
        .get(format!("{}/.well-known/kdc-configuration", kdc.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for member in ["issuer", "initial_ticket_endpoint", "ticket_endpoint", "renew_endpoint", "jwks_uri"] {
        assert!(doc[member].as_str().unwrap().starts_with(&kdc.url), "{member}: {doc}");
    }
    // The port speaks TLS only: a plain request gets no HTTP answer.
    let plain = kdc.url.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
}

#[tokio::test]
async fn the_sdk_logs_in_over_https_with_a_private_ca_and_refuses_an_unknown_one() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keytab = realm(&data).await;
    let kdc = tls_kdc(&pki, &data, "kdc").await;

    // Without the CA: a clear TLS error, never a fallback.
    let err = KdcClient::discover(&kdc.url, ClientOptions::default()).await.unwrap_err();
    assert!(matches!(err, SdkError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("certificate") && text.contains("TKT_CA_CERT"), "{text}");

    let ca = client_sdk::load_ca_file(&pki.ca_file()).unwrap();
    let cache = std::sync::Arc::new(MemoryCache::default());
    let options = ClientOptions::default().cache(cache.clone()).ca_certificates(ca);
    let client = KdcClient::discover(&kdc.url, options).await.unwrap();
    client.login(&client.principal_name("alice").unwrap(), ALICE_PW).await.unwrap();
    let (svc_url, _svc) = tls_service(&pki, &kdc.url, &keytab).await;
    let service = client.principal_name(SERVICE).unwrap();
    let answer = client.send(&service, reqwest::Method::GET, &format!("{svc_url}/hello"), None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&answer.body), "hello, alice@EXAMPLE.TEST");

    // A client without the CA that finds a fresh discovery document in its
    // cache still fails on TLS at the first exchange.
    let options = ClientOptions::default().cache(cache);
    let blind = KdcClient::discover(&kdc.url, options).await.unwrap();
    let err = blind.login(&blind.principal_name("alice").unwrap(), ALICE_PW).await.unwrap_err();
    assert!(matches!(err, SdkError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn a_service_fetches_the_jwk_set_over_https_only_from_a_trusted_kdc() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keytab = realm(&data).await;
    let kdc = tls_kdc(&pki, &data, "kdc").await;
    let untrusting = TicketAuthLayer::builder()
        .keytab_file(&keytab)
        .kdc_jwks_uri(format!("{}/.well-known/jwks.json", kdc.url))
        .build()
        .await;
    let Err(err) = untrusting else { panic!("an unknown CA is trusted") };
    let err = err.to_string();
    assert!(err.contains("certificate"), "the reason is given: {err}");
    let bad_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "no certificate here\n").unwrap();
    let Err(err) = TicketAuthLayer::builder()
        .keytab_file(&keytab)
        .kdc_jwks_uri(format!("{}/.well-known/jwks.json", kdc.url))
        .kdc_ca_cert_file(&bad_ca)
        .build()
        .await
    else {
        panic!("an unusable CA file is accepted")
    };
    assert!(matches!(err, auth_middleware::ConfigError::CaCertificate { .. }), "{err}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    realm(&data).await;
    let (cert, key, first) = pki.server("kdc");
    let kdc = KdcProcess::start_with(
        &kdc_bin(),
        &data,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    )
    .await
    .unwrap();
    let peer_cert = |r: &reqwest::Response| {
        r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
    };
    let held = trusting(&pki);
    let r = held.get(format!("{}/healthz", kdc.url)).send().await.unwrap();
    assert_eq!(peer_cert(&r).as_deref(), Some(first.as_slice()));
    let _ = r.bytes().await;

    // A renewal: new files over the old paths, then SIGHUP.
    let (next_cert, next_key, second) = pki.server("renewed");
    std::fs::rename(next_cert, &cert).unwrap();
    std::fs::rename(next_key, &key).unwrap();
    let pid = kdc.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());

    // New connections get the new certificate (the reload is asynchronous:
    // allow it a moment).
    let mut served = None;
    for _ in 0..50 {
        let r = trusting(&pki).get(format!("{}/healthz", kdc.url)).send().await.unwrap();
        served = peer_cert(&r);
        if served.as_deref() == Some(second.as_slice()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served.as_deref(), Some(second.as_slice()), "SIGHUP did not reload the certificate");
    // The connection opened before the reload is still open and serving,
    // on the certificate it negotiated.
    let r = held.get(format!("{}/healthz", kdc.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r).as_deref(), Some(first.as_slice()), "the open connection was dropped");
}

#[tokio::test]
async fn tkt_works_over_https_with_tkt_ca_cert() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keytab = realm(&data).await;
    let kdc = tls_kdc(&pki, &data, "kdc").await;
    let (svc_url, _svc) = tls_service(&pki, &kdc.url, &keytab).await;
    let cache = dir.path().join("tickets.json");
    let tkt = |args: Vec<String>, ca: bool, stdin: Option<&'static str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tkt-under-test"));
        cmd.args(&args)
            .env("TKT_KDC_URL", &kdc.url)
            .env("TKT_CACHE", &cache)
            .env_remove("TKT_CA_CERT")
            .env_remove("SSL_CERT_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if ca {
            cmd.env("TKT_CA_CERT", pki.ca_file());
        }
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = cmd.spawn().unwrap();
            if let (Some(mut i), Some(s)) = (child.stdin.take(), stdin) {
                i.write_all(s.as_bytes()).await.unwrap();
            }
            child.wait_with_output().await.unwrap()
        }
    };
    let login = || vec!["login".to_owned(), "alice".to_owned(), "--password-stdin".to_owned()];
    let refused = tkt(login(), false, Some("correct horse battery staple\n")).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("TLS") && err.contains("TKT_CA_CERT"), "{err}");
    let ok = tkt(login(), true, Some("correct horse battery staple\n")).await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let request = vec!["request".to_owned(), "--service".to_owned(), SERVICE.to_owned(), format!("{svc_url}/hello")];
    let out = tkt(request, true, None).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello, alice@EXAMPLE.TEST");
}

#[tokio::test]
async fn plain_http_on_a_non_loopback_address_is_served_with_a_loud_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    realm(&data).await;
    let mut child = tokio::process::Command::new(kdc_bin())
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .args(["--public-url", "https://kdc.example.test"])
        .env("KDC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let warned = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("WARNING: serving plain HTTP") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(warned, "no warning about plain HTTP on 0.0.0.0");
}
