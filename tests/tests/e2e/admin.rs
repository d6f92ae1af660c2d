//! Remote administration, behind the KDC's own middleware.

use kdc_e2e::*;
use serde_json::{Value, json};

use crate::contract::{check, spec};
use crate::kdc_bin;

pub(crate) const KADMIN: &str = "kadmin/admin@EXAMPLE.TEST";

/// An administrator's session with the admin API (shared with `admin_hardening`).
pub(crate) struct Admin {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) creds: Credentials,
}

impl Admin {
    pub(crate) async fn login(url: &str, who: &str, password: &str) -> Self {
        let c = ProtoClient::new(url);
        let tgt = c.login(who, password).await.unwrap();
        let creds = c.service_ticket(&tgt, KADMIN).await.unwrap();
        Self { http: reqwest::Client::new(), url: url.to_owned(), creds }
    }

    /// A secret sealed for the KDC under this admin's session key.
    pub(crate) fn seal(&self, secret: &str) -> String {
        kdc_proto::seal(&self.creds.enc.session_key, "session", kdc_proto::Usage::SessionSecret, secret.as_bytes())
            .unwrap()
    }

    /// One call; checks the mutual reply on success; returns (status, JSON body).
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value, ServiceAnswer) {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let (authz, sent) =
            ap_authorization(&self.creds, method, &format!("{}{path}", self.url), bytes.as_deref(), now());
        let mut req =
            self.http.request(method.parse().unwrap(), format!("{}{path}", self.url)).header("authorization", authz);
        if let Some(b) = bytes {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let ans = ServiceAnswer {
            status: r.status().as_u16(),
            www_authenticate: h("www-authenticate"),
            authentication_info: h("authentication-info"),
            retry_after: h("retry-after"),
            body: Vec::new(),
        };
        let ct = h("content-type").unwrap_or_default();
        let body = r.bytes().await.unwrap().to_vec();
        if (200..300).contains(&ans.status) {
            let mutual = ans.mutual().expect("admin answers carry a mutual reply");
            kdc_proto::verify_mutual_reply(&mutual, &self.creds.enc.session_key, &sent, ans.status, &body).unwrap();
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let spec_path = spec_path(path);
        if ans.status != 204 {
            let a = Answer {
                status: ans.status,
                content_type: ct,
                www_authenticate: None,
                retry_after: None,
                body: json.clone(),
            };
            check(&spec(), &method.to_lowercase(), &spec_path, &a);
        }
        (ans.status, json, ServiceAnswer { body, ..ans })
    }
}

fn spec_path(path: &str) -> String {
    let p = path.split('?').next().unwrap();
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        ["", "admin", "principals"] => "/admin/principals".into(),
        ["", "admin", "principals", _] => "/admin/principals/{name}".into(),
        ["", "admin", "principals", _, tail] => format!("/admin/principals/{{name}}/{tail}"),
        _ => p.into(),
    }
}

#[tokio::test]
async fn the_admin_api_refuses_no_ticket_and_no_role_and_accepts_an_admin() {
    let k = TestKdc::start().await.unwrap();
    let http = reqwest::Client::new();
    let ans = send(&http, "GET", &format!("{}/admin/principals", k.url), None, None).await.unwrap();
    assert_eq!(ans.status, 401);
    assert_eq!(ans.www_authenticate.as_deref(), Some("Ticket realm=\"EXAMPLE.TEST\""));
    let alice = Admin::login(&k.url, "alice@EXAMPLE.TEST", ALICE_PW).await;
    let (status, body, _) = alice.call("GET", "/admin/principals", None).await;
    assert_eq!(status, 403, "{body}");
    // A ticket for another service is not an admin ticket.
    let c = k.client();
    let tgt = c.login("admin@EXAMPLE.TEST", ADMIN_PW).await.unwrap();
    let wrong = c.service_ticket(&tgt, SVC_A).await.unwrap();
    let (ans, _) = call_service(&http, &wrong, "GET", &k.url, "/admin/principals", None).await.unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("wrong_service"));
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let (status, body, _) = admin.call("GET", "/admin/principals", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["principals"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"alice@EXAMPLE.TEST") && names.contains(&KADMIN), "{names:?}");
}

#[tokio::test]
async fn principals_can_be_managed_remotely() {
    let k = TestKdc::start().await.unwrap();
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let c = k.client();

    let (s, body, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "carol", "kind": "user", "password_sealed": admin.seal("carol's long password"), "roles": ["reader"]})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["name"], "carol@EXAMPLE.TEST");
    assert_eq!(body["kvnos"], json!([1]));
    c.login("carol@EXAMPLE.TEST", "carol's long password").await.unwrap();
    let (s, body, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "carol", "kind": "user", "password_sealed": admin.seal("another long password")})),
        )
        .await;
    assert_eq!((s, body["type"].as_str()), (409, Some("urn:kdc-http:problem:principal-exists")));
    let (s, _, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "HTTP/c.example.test", "kind": "service", "password_sealed": admin.seal("x")})),
        )
        .await;
    assert_eq!(s, 400, "services never get passwords");
    let (s, _, _) =
        admin.call("POST", "/admin/principals", Some(json!({"name": "HTTP/c.example.test", "kind": "service"}))).await;
    assert_eq!(s, 201);

    let (s, body, _) = admin.call("GET", "/admin/principals/carol", None).await;
    assert_eq!((s, body["roles"].clone()), (200, json!(["reader"])));
    let (s, body, _) = admin
        .call(
            "PATCH",
            "/admin/principals/carol",
            Some(json!({"disabled": true, "roles": ["writer"], "max_life_secs": 600})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (body["disabled"].clone(), body["roles"].clone(), body["max_life_secs"].clone()),
        (json!(true), json!(["writer"]), json!(600))
    );
    assert!(c.login("carol@EXAMPLE.TEST", "carol's long password").await.is_err());
    let (s, body, _) =
        admin.call("PATCH", "/admin/principals/carol", Some(json!({"disabled": false, "max_life_secs": null}))).await;
    assert_eq!((s, body["max_life_secs"].clone()), (200, Value::Null));

    let (s, body, _) = admin.call("POST", "/admin/principals/HTTP%2Fc.example.test/rotate", None).await;
    assert_eq!((s, body["kvno"].clone()), (200, json!(2)));
    let (s, body, _) = admin.call("GET", "/admin/principals/HTTP%2Fc.example.test/keytab", None).await;
    assert_eq!(s, 200);
    // The keytab travels sealed under the admin's session key only.
    let sealed = body["keytab_sealed"].as_str().unwrap();
    let obj = kdc_proto::SealedObject::parse(sealed, 16 * 1024).unwrap();
    let plain = obj.open(&admin.creds.enc.session_key, kdc_proto::Usage::SessionSecretReply).unwrap();
    assert!(obj.open(&admin.creds.enc.session_key, kdc_proto::Usage::SessionSecret).is_err());
    let kt: kdc_proto::Keytab = serde_json::from_slice(&plain).unwrap();
    assert_eq!(kt.keys.iter().map(|k| k.kvno.0).collect::<Vec<_>>(), vec![2, 1]);
    assert!(obj.open(&kdc_proto::SecretKey::generate(), kdc_proto::Usage::SessionSecretReply).is_err());
    // Passwords in the clear are not accepted, nor ones sealed under another key.
    let (s, _, _) = admin
        .call("POST", "/admin/principals", Some(json!({"name": "dan", "kind": "user", "password": "clear"})))
        .await;
    assert_eq!(s, 400);
    let foreign =
        kdc_proto::seal(&kdc_proto::SecretKey::generate(), "session", kdc_proto::Usage::SessionSecret, b"pw").unwrap();
    let (s, _, _) = admin
        .call("POST", "/admin/principals", Some(json!({"name": "dan", "kind": "user", "password_sealed": foreign})))
        .await;
    assert_eq!(s, 400);
    let (s, body, _) = admin
        .call(
            "POST",
            "/admin/principals/carol/rotate",
            Some(json!({"password_sealed": admin.seal("carol's new long password")})),
        )
        .await;
    assert_eq!((s, body["kvno"].clone()), (200, json!(2)));
    c.login("carol@EXAMPLE.TEST", "carol's new long password").await.unwrap();

    let (s, _, _) = admin.call("DELETE", "/admin/principals/carol", None).await;
    assert_eq!(s, 204);
    let (s, body, _) = admin.call("GET", "/admin/principals/carol", None).await;
    assert_eq!((s, body["type"].as_str()), (404, Some("urn:kdc-http:problem:principal-not-found")));
    let (s, _, _) = admin.call("DELETE", "/admin/principals/krbtgt%2FEXAMPLE.TEST", None).await;
    assert_eq!(s, 400, "built-ins cannot be deleted");
    let (s, _, _) = admin.call("PATCH", "/admin/principals/alice", Some(json!({"roles": ["bad role!"]}))).await;
    assert_eq!(s, 400);
    // Found by contract fuzzing: a JSON array of the fields in order was read
    // as an update that changes nothing, and answered 200.
    let (s, body, _) = admin.call("PATCH", "/admin/principals/alice", Some(json!([null, null]))).await;
    assert_eq!((s, body["type"].as_str()), (400, Some("urn:kdc-http:problem:malformed-request")));

    // Admin writes must bind their body: an unbound one is refused.
    let (authz, _) = ap_authorization(&admin.creds, "POST", &format!("{}/admin/principals", admin.url), None, now());
    let ans = send(
        &admin.http,
        "POST",
        &format!("{}/admin/principals", admin.url),
        Some(&authz),
        Some(br#"{"name":"mallory","kind":"user","password":"x","roles":["admin"]}"#.to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(ans.error_code().as_deref(), Some("binding_mismatch"));

    // Paging.
    let (s, body, _) = admin.call("GET", "/admin/principals?limit=2", None).await;
    assert_eq!(s, 200);
    assert_eq!(body["principals"].as_array().unwrap().len(), 2);
    let next = body["next"].as_str().unwrap().to_owned();
    let (_, body2, _) = admin.call("GET", &format!("/admin/principals?limit=2&after={next}"), None).await;
    assert!(body2["principals"][0]["name"].as_str().unwrap() > next.as_str());
}

/// A value the KDC sealed for the admin (an exported keytab) must not be
/// accepted back as a value the admin sealed for the KDC (a password): the
/// two directions use different key usages, so a reflected object does not
/// open. Found by the contract fuzzer's stateful phase, which linked
/// `keytab_sealed` into `password_sealed`.
#[tokio::test]
async fn a_sealed_keytab_reflected_as_a_password_is_refused() {
    let k = TestKdc::start().await.unwrap();
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let (s, body, _) =
        admin.call("GET", &format!("/admin/principals/{}/keytab", SVC_A.replace('/', "%2F")), None).await;
    assert_eq!(s, 200, "{body}");
    let reflected = body["keytab_sealed"].as_str().unwrap().to_owned();
    let (s, body, _) = admin
        .call("POST", "/admin/principals/alice%40EXAMPLE.TEST/rotate", Some(json!({"password_sealed": reflected})))
        .await;
    assert_eq!((s, body["type"].as_str()), (400, Some("urn:kdc-http:problem:malformed-request")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("does not open"), "{body}");
    // Alice's password is unchanged.
    k.client().login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let (s, body, _) = admin
        .call("POST", "/admin/principals", Some(json!({"name": "eve", "kind": "user", "password_sealed": reflected})))
        .await;
    assert_eq!(s, 400, "{body}");
}

#[tokio::test]
async fn an_admin_write_acknowledged_with_201_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::durability::realm_in(dir.path()).await;
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    let admin = Admin::login(&kdc.url, "admin@EXAMPLE.TEST", "bootstrap-pw-123").await;
    let (s, _, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "erin", "kind": "user", "password_sealed": admin.seal("erin's long password")})),
        )
        .await;
    assert_eq!(s, 201);
    kdc.kill9().await.unwrap();
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    ProtoClient::new(&kdc.url).login("erin@EXAMPLE.TEST", "erin's long password").await.unwrap();
}

#[tokio::test]
async fn rotating_the_admin_service_key_from_the_command_line_reaches_a_serving_kdc() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::durability::realm_in(dir.path()).await;
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    kdc_command(&kdc_bin(), &["principal", "rotate", KADMIN, "--data", data.to_str().unwrap()], None).await.unwrap();
    // A new admin ticket is sealed under kvno 2; the serving KDC's admin layer
    // picks the new key up from the store within its refresh interval (10 s).
    let admin = Admin::login(&kdc.url, "admin@EXAMPLE.TEST", "bootstrap-pw-123").await;
    assert_eq!(kdc_proto::SealedTicket::parse(&admin.creds.ticket).unwrap().kvno, kdc_proto::Kvno(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (authz, _) = ap_authorization(&admin.creds, "GET", &format!("{}/admin/principals", admin.url), None, now());
        let ans =
            send(&admin.http, "GET", &format!("{}/admin/principals", admin.url), Some(&authz), None).await.unwrap();
        if ans.status == 200 {
            break;
        }
        assert_eq!(ans.error_code().as_deref(), Some("kvno_unknown"), "{}", ans.text());
        assert!(std::time::Instant::now() < deadline, "the admin layer never learnt the new key");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
