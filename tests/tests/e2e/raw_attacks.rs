//! Issue 7's widened suite: attacks written as raw HTTP (bytes on a socket,
//! or requests no well-behaved client would send), not through the SDK.

use std::time::Duration;

use kdc_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes to `base` (an `http://host:port` URL) and returns the
/// status code and the whole answer as text.
async fn raw(base: &str, request: &[u8]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn www_error(answer: &str) -> Option<String> {
    let line = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))?;
    let i = line.find("error=\"")? + 7;
    Some(line[i..].split('"').next()?.to_owned())
}

struct Setup {
    kdc: TestKdc,
    svc: TestService,
    alice: Credentials,
    tgt: Credentials,
}

async fn setup() -> Setup {
    let kdc = TestKdc::start().await.unwrap();
    let svc = TestService::start(&kdc, SVC_A).await.unwrap();
    let c = kdc.client();
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let alice = c.service_ticket(&tgt, SVC_A).await.unwrap();
    Setup { kdc, svc, alice, tgt }
}

fn get_with(host: &str, headers: &[String]) -> Vec<u8> {
    let mut r = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Splits `Ticket ticket="T", authenticator="A"` into (T, A).
fn parts(authz: &str) -> (String, String) {
    let grab = |name: &str| {
        let i = authz.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        authz[i..].split('"').next().unwrap().to_owned()
    };
    (grab("ticket"), grab("authenticator"))
}

#[tokio::test]
async fn header_parameters_reordered_duplicated_and_repeated_headers() {
    let s = setup().await;
    let host = s.svc.url.trim_start_matches("http://").to_owned();
    let url = format!("{}/hello", s.svc.url);
    // Reordered parameters, odd spacing and scheme case: still one valid request.
    let (authz, _) = ap_authorization(&s.alice, "GET", &url, None, now());
    let (t, a) = parts(&authz);
    let reordered = format!("Authorization: tIcKeT authenticator=\"{a}\" ,  ticket=\"{t}\"");
    let (status, text) = raw(&s.svc.url, &get_with(&host, &[reordered])).await;
    assert_eq!(status, 200, "{text}");
    // A parameter twice, even with the same value: refused.
    let (authz, _) = ap_authorization(&s.alice, "GET", &url, None, now());
    let (t, a) = parts(&authz);
    for dup in [
        format!("Authorization: Ticket ticket=\"{t}\", ticket=\"{t}\", authenticator=\"{a}\""),
        format!("Authorization: Ticket ticket=\"{t}\", authenticator=\"{a}\", authenticator=\"{a}\""),
        format!("Authorization: Ticket ticket=\"{t}\", authenticator=\"{a}\", extra=\"x\""),
    ] {
        let (status, text) = raw(&s.svc.url, &get_with(&host, &[dup])).await;
        assert_eq!((status, www_error(&text).as_deref()), (401, Some("invalid_request")), "{text}");
    }
    // Two Authorization headers (one valid): refused, whichever comes first.
    for order in [0, 1] {
        let (authz, _) = ap_authorization(&s.alice, "GET", &url, None, now());
        let mut hs =
            vec![format!("Authorization: {authz}"), "Authorization: Ticket ticket=\"x\", authenticator=\"y\"".into()];
        if order == 1 {
            hs.reverse();
        }
        let (status, text) = raw(&s.svc.url, &get_with(&host, &hs)).await;
        assert_eq!((status, www_error(&text).as_deref()), (401, Some("invalid_request")), "{text}");
    }
}

#[tokio::test]
async fn truncated_extended_and_repadded_base64_is_refused() {
    let s = setup().await;
    let host = s.svc.url.trim_start_matches("http://").to_owned();
    let url = format!("{}/hello", s.svc.url);
    type Mangle = fn(&str) -> String;
    let mangles: [(&str, Mangle); 5] = [
        ("truncated", |v| v[..v.len() - 1].to_owned()),
        ("extended", |v| format!("{v}A")),
        ("re-padded", |v| format!("{v}=")),
        ("standard alphabet", |v| v.replacen('-', "+", 1).replacen('_', "/", 1)),
        ("whitespace", |v| v.replacen('.', ". ", 1)),
    ];
    for (what, mangle) in mangles {
        let (authz, _) = ap_authorization(&s.alice, "GET", &url, None, now());
        let (t, a) = parts(&authz);
        let bad_ticket = format!("Authorization: Ticket ticket=\"{}\", authenticator=\"{a}\"", mangle(&t));
        let (status, text) = raw(&s.svc.url, &get_with(&host, &[bad_ticket])).await;
        assert_eq!(status, 401, "{what} ticket: {text}");
        assert!(matches!(www_error(&text).as_deref(), Some("invalid_ticket" | "invalid_request")), "{what}: {text}");
        let (authz, _) = ap_authorization(&s.alice, "GET", &url, None, now());
        let (t, a) = parts(&authz);
        let bad_auth = format!("Authorization: Ticket ticket=\"{t}\", authenticator=\"{}\"", mangle(&a));
        let (status, text) = raw(&s.svc.url, &get_with(&host, &[bad_auth])).await;
        assert_eq!(status, 401, "{what} authenticator: {text}");
        assert!(
            matches!(www_error(&text).as_deref(), Some("invalid_authenticator" | "invalid_request")),
            "{what}: {text}"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_in_the_authorization_header_is_a_clean_401() {
    let s = setup().await;
    let host = s.svc.url.trim_start_matches("http://");
    let mut req =
        format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Ticket ticket=\"")
            .into_bytes();
    req.extend_from_slice(&[0xff, 0xfe, 0x80]);
    req.extend_from_slice(b"\", authenticator=\"x\"\r\n\r\n");
    let (status, text) = raw(&s.svc.url, &req).await;
    assert_eq!((status, www_error(&text).as_deref()), (401, Some("invalid_request")), "{text}");
}

#[tokio::test]
async fn a_service_ticket_is_not_a_tgt_and_a_tgt_is_not_a_service_ticket() {
    let s = setup().await;
    let c = s.kdc.client();
    // A service ticket presented to the KDC as a TGT.
    let mut as_tgt = ProtoClient::tgs_request(&s.alice, SVC_B, now()).unwrap();
    as_tgt.tgt = s.alice.ticket.clone();
    let a = c.post("/tickets", &as_tgt).await.unwrap();
    assert_eq!((a.status, a.body["type"].as_str()), (401, Some("urn:kdc-http:problem:invalid-ticket")));
    // A TGT presented to a service.
    let url = format!("{}/hello", s.svc.url);
    let (authz, _) = ap_authorization(&s.tgt, "GET", &url, None, now());
    let ans = send(&reqwest::Client::new(), "GET", &url, Some(&authz), None).await.unwrap();
    assert_eq!((ans.status, ans.error_code().as_deref()), (401, Some("wrong_service")));
}

#[tokio::test]
async fn deeply_nested_and_invalid_utf8_json_get_problem_json_not_a_crash() {
    let s = setup().await;
    let c = s.kdc.client();
    let deep = format!("{{\"client\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let mut bad_utf8 = br#"{"client":"al"#.to_vec();
    bad_utf8.extend_from_slice(&[0xc3, 0x28]);
    bad_utf8.extend_from_slice(br#"ice@EXAMPLE.TEST","nonce":"n"}"#);
    for path in ["/tickets/initial", "/tickets", "/tickets/renew"] {
        for body in [deep.clone().into_bytes(), bad_utf8.clone()] {
            let a = c.post_raw(path, "application/json", body).await.unwrap();
            assert_eq!(a.status, 400, "{path}");
            assert!(a.content_type.starts_with("application/problem+json"), "{}", a.content_type);
        }
    }
    // The KDC is still answering.
    assert_eq!(c.get("/healthz").await.unwrap().status, 200);
    // And the admin API (behind the layer) the same, with a real admin ticket.
    let tgt = c.login("admin@EXAMPLE.TEST", ADMIN_PW).await.unwrap();
    let admin = c.service_ticket(&tgt, "kadmin/admin@EXAMPLE.TEST").await.unwrap();
    let url = format!("{}/admin/principals", s.kdc.url);
    let body = deep.into_bytes();
    let (authz, _) = ap_authorization(&admin, "POST", &url, Some(&body), now());
    let r = reqwest::Client::new()
        .post(&url)
        .header("authorization", authz)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
