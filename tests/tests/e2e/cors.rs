//! Browser access (issue 10): CORS for the configured origins only, over real
//! HTTP, and a real headless Chromium completing discovery and a
//! pre-authentication challenge from a page on another origin.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use kdc_e2e::*;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::kdc_bin;

const APP: &str = "https://app.example.test";

/// Every `access-control-*` header of an answer, as `name: value` lines.
fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-"))
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("<bytes>")))
        .collect()
}

/// The comma-separated values of header `name`, lower-cased.
fn list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A browser's preflight for `method path` from `origin`, with the headers
/// a page calling the KDC sets.
async fn preflight(url: &str, path: &str, method: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{url}{path}"))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization,content-type,x-request-id")
        .send()
        .await
        .unwrap()
}

/// Every route a page may call, public and admin.
const ROUTES: [(&str, &str); 9] = [
    ("GET", "/.well-known/kdc-configuration"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/tickets/initial"),
    ("POST", "/tickets"),
    ("POST", "/tickets/renew"),
    ("GET", "/admin/principals"),
    ("POST", "/admin/principals"),
    ("PATCH", "/admin/principals/alice"),
    ("DELETE", "/admin/principals/alice"),
];

#[tokio::test]
async fn an_allowed_origin_gets_its_preflights_answered_and_can_read_the_answers() {
    let k = TestKdc::start_with_cors(&[APP, "http://127.0.0.1:5173"]).await.unwrap();
    for (method, path) in ROUTES {
        let r = preflight(&k.url, path, method, APP).await;
        assert_eq!(r.status(), 200, "preflight {method} {path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], APP, "{method} {path}");
        assert!(list(h, "access-control-allow-methods").contains(&method.to_ascii_lowercase()), "{method} {path}");
        let allowed = list(h, "access-control-allow-headers");
        for name in ["authorization", "content-type", "x-request-id"] {
            assert!(allowed.contains(&name.to_owned()), "{method} {path}: {name} not in {allowed:?}");
        }
        assert_eq!(h["access-control-max-age"], "600");
        assert!(list(h, "vary").contains(&"origin".to_owned()), "{method} {path}");
        // No cookies, so never credentials: nothing ambient rides along.
        assert!(h.get("access-control-allow-credentials").is_none(), "{method} {path}");
    }

    // The actual requests: discovery, and the pre-authentication challenge
    // whose WWW-Authenticate a page must be able to read.
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/.well-known/kdc-configuration", k.url)).header("origin", APP).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(list(r.headers(), "vary").contains(&"origin".to_owned()));
    assert!(r.headers().get("access-control-allow-credentials").is_none());
    let exposed = list(r.headers(), "access-control-expose-headers");
    for name in ["www-authenticate", "authentication-info", "retry-after", "x-request-id"] {
        assert!(exposed.contains(&name.to_owned()), "{name} not exposed: {exposed:?}");
    }
    let body = serde_json::json!({ "client": "alice@EXAMPLE.TEST", "nonce": nonce() });
    let r = http
        .post(format!("{}/tickets/initial", k.url))
        .header("origin", "http://127.0.0.1:5173")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "http://127.0.0.1:5173");
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("KDC-PreAuth"));
    assert!(list(r.headers(), "access-control-expose-headers").contains(&"www-authenticate".to_owned()));
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:kdc-http:problem:preauth-required");

    // Refusals of every kind carry the headers too, so a page can read why.
    let r = http.get(format!("{}/nope", k.url)).header("origin", APP).send().await.unwrap();
    assert_eq!((r.status().as_u16(), &r.headers()["access-control-allow-origin"]), (404, &APP.parse().unwrap()));
    let r = http.get(format!("{}/admin/principals", k.url)).header("origin", APP).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(r.headers().get("www-authenticate").is_some());
}

#[tokio::test]
async fn an_admin_preflight_is_not_refused_for_lacking_a_ticket() {
    let k = TestKdc::start_with_cors(&[APP]).await.unwrap();
    for (method, path) in [("POST", "/admin/principals"), ("GET", "/admin/principals/alice/keytab")] {
        let r = preflight(&k.url, path, method, APP).await;
        assert_eq!(r.status(), 200, "{method} {path}");
        assert_eq!(r.headers()["access-control-allow-origin"], APP);
        assert!(r.headers().get("www-authenticate").is_none(), "a preflight is no ticket request");
        assert!(r.text().await.unwrap().is_empty());
    }
    // The admin layer still guards the route itself.
    let r = reqwest::Client::new()
        .post(format!("{}/admin/principals", k.url))
        .header("origin", APP)
        .json(&serde_json::json!({ "name": "mallory", "kind": "service" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(k.kdc.get(&"mallory@EXAMPLE.TEST".parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn an_origin_not_in_the_list_is_never_allowed() {
    let k = TestKdc::start_with_cors(&[APP]).await.unwrap();
    // Near misses of the allowed origin included: the match is exact.
    for origin in ["https://evil.example", "http://app.example.test", "https://app.example.test:8443", "null"] {
        for (method, path) in ROUTES {
            let r = preflight(&k.url, path, method, origin).await;
            let h = r.headers();
            assert!(h.get("access-control-allow-origin").is_none(), "{origin} {method} {path}: {:?}", cors_headers(h));
            assert!(h.get("access-control-allow-credentials").is_none());
        }
        let r = reqwest::Client::new()
            .get(format!("{}/.well-known/kdc-configuration", k.url))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none(), "{origin}");
    }
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let k = TestKdc::start().await.unwrap();
    for (method, path) in ROUTES {
        let r = preflight(&k.url, path, method, APP).await;
        // The router answers as for any other method it does not serve.
        assert_eq!(r.status(), 405, "{method} {path}");
        assert!(cors_headers(r.headers()).is_empty(), "{method} {path}: {:?}", cors_headers(r.headers()));
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = reqwest::Client::new()
        .get(format!("{}/.well-known/kdc-configuration", k.url))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert!(cors_headers(r.headers()).is_empty(), "{:?}", cors_headers(r.headers()));
}

#[tokio::test]
async fn an_options_request_that_is_no_preflight_is_answered_as_before() {
    let k = TestKdc::start_with_cors(&[APP]).await.unwrap();
    let http = reqwest::Client::new();
    // No Origin, or no Access-Control-Request-Method: not a CORS preflight.
    for req in [
        http.request(reqwest::Method::OPTIONS, format!("{}/tickets", k.url)),
        http.request(reqwest::Method::OPTIONS, format!("{}/tickets", k.url)).header("origin", APP),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["type"], "urn:kdc-http:problem:method-not-allowed");
    }
}

#[tokio::test]
async fn the_kdc_command_takes_origins_from_flags_and_kdc_toml_and_refuses_a_wildcard() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kdc.toml");
    std::fs::write(&config, format!("[cors]\nallowed_origins = [\"{APP}\"]\n")).unwrap();
    let config = config.to_str().unwrap();
    let allows = |url: String, origin: &'static str| async move {
        let r = preflight(&url, "/tickets/initial", "POST", origin).await;
        r.headers().get("access-control-allow-origin").is_some_and(|v| v == origin)
    };

    let kdc = KdcProcess::start_with(&kdc_bin(), &dir.path().join("d1"), &["--config", config]).await.unwrap();
    assert!(allows(kdc.url.clone(), APP).await, "the file's origin");
    assert!(!allows(kdc.url.clone(), "https://other.example.test").await);
    drop(kdc);

    // A flag replaces the file's list.
    let extra = ["--config", config, "--cors-origin", "https://other.example.test"];
    let kdc = KdcProcess::start_with(&kdc_bin(), &dir.path().join("d2"), &extra).await.unwrap();
    assert!(allows(kdc.url.clone(), "https://other.example.test").await);
    assert!(!allows(kdc.url.clone(), APP).await);
    drop(kdc);

    // `*` is refused at start, with the reason, from the environment too.
    for (args, env) in [
        (vec!["--cors-origin", "*"], None),
        (vec![], Some("https://ok.example.test, *")),
        (vec!["--cors-origin", "https://app.example.test/path"], None),
    ] {
        let mut cmd = tokio::process::Command::new(kdc_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(dir.path().join("d3")).args(&args);
        cmd.env_remove("KDC_MASTER_KEY").env_remove("KDC_CORS_ORIGINS");
        if let Some(v) = env {
            cmd.env("KDC_CORS_ORIGINS", v);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(stderr.contains("CORS origin"), "{args:?} {env:?}: {stderr}");
        if args.last() != Some(&"https://app.example.test/path") {
            assert!(stderr.contains("`*` is refused"), "{stderr}");
        }
        assert!(!dir.path().join("d3").exists(), "refused before touching the data directory");
    }
}

// ---- a real browser -------------------------------------------------------

/// Set (to anything but `0`) in CI: a missing Chromium fails the browser
/// tests instead of skipping them.
const REQUIRE_CHROMIUM: &str = "KDC_TEST_REQUIRE_CHROMIUM";

/// The Chromium to run: `$KDC_TEST_CHROMIUM`, else `chromium` on `PATH`.
/// `None` means skip (and says so on the terminal, past the test harness's
/// capture); with [`REQUIRE_CHROMIUM`] set, a missing browser fails the test.
fn chromium(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("KDC_TEST_CHROMIUM").map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var(REQUIRE_CHROMIUM).is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "{REQUIRE_CHROMIUM} is set but chromium is not installed (apt-get install chromium)");
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED cors::{test}: chromium is not installed (apt-get install chromium; .ci/run installs it and sets \
             {REQUIRE_CHROMIUM}=1)"
        );
    }
    found
}

/// A page that fetches the KDC's discovery document and posts a challenge
/// request to the initial-ticket endpoint it names, then writes what it
/// could read into `<pre id="out">`.
fn page(kdc_url: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>KDC from a page</title></head>
<body><pre id="out">pending</pre>
<script>
(async () => {{
  const out = {{}};
  try {{
    const d = await fetch("{kdc_url}/.well-known/kdc-configuration");
    out.discovery_status = d.status;
    const doc = await d.json();
    out.realm = doc.realm;
    const c = await fetch(doc.initial_ticket_endpoint, {{
      method: "POST",
      headers: {{ "content-type": "application/json", "x-request-id": "browser-test" }},
      body: JSON.stringify({{ client: "alice@EXAMPLE.TEST", nonce: "browser-nonce-0123" }}),
    }});
    out.challenge_status = c.status;
    out.www_authenticate = c.headers.get("www-authenticate");
    const problem = await c.json();
    out.problem_type = problem.type;
    out.has_salt = typeof problem.salt === "string" && problem.salt.length > 0;
  }} catch (e) {{
    out.error = e.name + ": " + e.message;
  }}
  document.getElementById("out").textContent = JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// Serves `html` at `/` on `listener` (another loopback port: another origin).
fn serve_page(listener: tokio::net::TcpListener, html: String) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(html) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Loads `url` in headless Chromium and returns what the page wrote into
/// `<pre id="out">`, parsed.
async fn run_page(browser: &std::path::Path, url: &str) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check"])
        .args(["--disable-extensions", "--disable-dev-shm-usage", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // About a second normally; the bound is for a machine busy with builds.
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("chromium did not finish within 20 s")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let start = dom.find(r#"<pre id="out">"#).unwrap_or_else(|| panic!("no output element in\n{dom}")) + 14;
    let end = start + dom[start..].find("</pre>").unwrap();
    let text = dom[start..end].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the page wrote {text:?} ({e})"))
}

#[tokio::test]
async fn chromium_completes_discovery_and_a_challenge_from_an_allowed_origin() {
    let Some(browser) = chromium("chromium_completes_discovery_and_a_challenge_from_an_allowed_origin") else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_origin = format!("http://{}", listener.local_addr().unwrap());
    let k = TestKdc::start_with_cors(&[APP, &page_origin]).await.unwrap();
    let _server = serve_page(listener, page(&k.url));

    let out = run_page(&browser, &format!("{page_origin}/")).await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["discovery_status"], 200, "{out}");
    assert_eq!(out["realm"], REALM);
    assert_eq!(out["challenge_status"], 401, "{out}");
    // Readable only because the KDC exposes it.
    assert!(out["www_authenticate"].as_str().unwrap().starts_with("KDC-PreAuth"), "{out}");
    assert_eq!(out["problem_type"], "urn:kdc-http:problem:preauth-required");
    assert_eq!(out["has_salt"], true);
}

#[tokio::test]
async fn chromium_refuses_the_kdc_to_a_page_from_an_origin_not_in_the_list() {
    let Some(browser) = chromium("chromium_refuses_the_kdc_to_a_page_from_an_origin_not_in_the_list") else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_origin = format!("http://{}", listener.local_addr().unwrap());
    let k = TestKdc::start_with_cors(&[APP]).await.unwrap();
    let _server = serve_page(listener, page(&k.url));

    let out = run_page(&browser, &format!("{page_origin}/")).await;
    // The browser hides the answer from the page: a network error, nothing read.
    assert_eq!(out["error"], "TypeError: Failed to fetch", "{out}");
    assert!(out.get("discovery_status").is_none(), "{out}");
}
