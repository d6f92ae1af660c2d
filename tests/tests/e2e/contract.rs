//! `openapi.yaml` is the contract: the router serves exactly its routes, and
//! real responses validate against its schemas.

use std::collections::BTreeSet;

use kdc_e2e::*;
use kdc_server::PrincipalUpdate;
use kdc_server::all_routes;
use serde_json::{Value, json};

pub(crate) fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

#[test]
fn router_and_spec_have_the_same_routes() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete", "head", "options"].contains(&k.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> =
        all_routes().into_iter().map(|(m, p)| (m.to_string(), p.to_owned())).collect();
    assert_eq!(served, documented, "router (left) and openapi.yaml (right) disagree");
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => spec.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling {r}")),
        None => v,
    }
}

/// Checks one real answer against the spec: its status is documented for the
/// operation, and its body validates against that response's schema.
pub(crate) fn check(spec: &Value, method: &str, path: &str, a: &Answer) {
    let op = &spec["paths"][path][method];
    assert!(op.is_object(), "{method} {path} not in the spec");
    let resp = resolve(spec, &op["responses"][a.status.to_string()]);
    assert!(resp.is_object(), "{method} {path} answered {} which the spec does not document", a.status);
    let ct = a.content_type.split(';').next().unwrap_or("").trim();
    let media = &resp["content"][ct];
    assert!(media.is_object(), "{method} {path} {}: content type {ct} not documented", a.status);
    let mut root = spec.clone();
    root["$ref"] = json!("#/$defs/__target");
    root["$defs"] = json!({ "__target": media["schema"].clone() });
    let validator = jsonschema::draft202012::new(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(&a.body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {path} {}: {errors:?}\nbody: {}", a.status, a.body);
}

#[tokio::test]
async fn real_responses_match_the_spec() {
    let spec = spec();
    let k = TestKdc::start().await.unwrap();
    let c = k.client();
    check(&spec, "get", "/.well-known/kdc-configuration", &c.get("/.well-known/kdc-configuration").await.unwrap());
    check(&spec, "get", "/.well-known/jwks.json", &c.get("/.well-known/jwks.json").await.unwrap());
    check(&spec, "get", "/healthz", &c.get("/healthz").await.unwrap());
    check(&spec, "get", "/readyz", &c.get("/readyz").await.unwrap());

    // Initial: challenge, failure, success, skew, malformed, too large, wrong type.
    let init = "/tickets/initial";
    check(&spec, "post", init, &c.challenge("alice@EXAMPLE.TEST").await.unwrap());
    check(&spec, "post", init, &c.challenge("nobody@EXAMPLE.TEST").await.unwrap());
    let key = c.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let wrong = c.derive_key("alice@EXAMPLE.TEST", "nope").await.unwrap();
    let a = c.post(init, &ProtoClient::initial_request(&wrong, "alice@EXAMPLE.TEST", now()).unwrap()).await.unwrap();
    assert_eq!(a.status, 401);
    check(&spec, "post", init, &a);
    let skewed =
        ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", kdc_proto::UnixMillis(now().0 - 3_600_000)).unwrap();
    check(&spec, "post", init, &c.post(init, &skewed).await.unwrap());
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    let a = c.post(init, &req).await.unwrap();
    assert_eq!(a.status, 200);
    check(&spec, "post", init, &a);
    check(&spec, "post", init, &c.post(init, &req).await.unwrap()); // replay
    for path in [init, "/tickets", "/tickets/renew"] {
        check(&spec, "post", path, &c.post_raw(path, "application/json", b"{".to_vec()).await.unwrap());
        check(&spec, "post", path, &c.post_raw(path, "application/json", vec![b' '; 100_000]).await.unwrap());
        check(&spec, "post", path, &c.post_raw(path, "text/plain", b"{}".to_vec()).await.unwrap());
    }

    // Service tickets and renewal, and their refusals.
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap();
    let a = c.post("/tickets", &req).await.unwrap();
    assert_eq!(a.status, 200);
    check(&spec, "post", "/tickets", &a);
    check(&spec, "post", "/tickets", &c.post("/tickets", &req).await.unwrap()); // replay
    let bad = ProtoClient::tgs_request(&tgt, "bob@EXAMPLE.TEST", now()).unwrap();
    check(&spec, "post", "/tickets", &c.post("/tickets", &bad).await.unwrap()); // unknown-service
    let skewed = ProtoClient::tgs_request(&tgt, SVC_A, kdc_proto::UnixMillis(now().0 + 3_600_000)).unwrap();
    check(&spec, "post", "/tickets", &c.post("/tickets", &skewed).await.unwrap());
    let a = c.post("/tickets/renew", &ProtoClient::renew_request(&tgt, now()).unwrap()).await.unwrap();
    assert_eq!(a.status, 200);
    check(&spec, "post", "/tickets/renew", &a);
    let upd = PrincipalUpdate { disabled: Some(true), ..Default::default() };
    k.kdc.store().update_principal("alice@EXAMPLE.TEST", &upd).await.unwrap();
    let a = c.post("/tickets", &ProtoClient::tgs_request(&tgt, SVC_A, now()).unwrap()).await.unwrap();
    assert_eq!(a.status, 403);
    check(&spec, "post", "/tickets", &a);
    let a = c.post("/tickets/renew", &ProtoClient::renew_request(&tgt, now()).unwrap()).await.unwrap();
    check(&spec, "post", "/tickets/renew", &a);
}

#[test]
fn the_schema_check_rejects_what_the_spec_forbids() {
    let spec = spec();
    let bad = Answer {
        status: 200,
        content_type: "application/json".into(),
        www_authenticate: None,
        retry_after: None,
        body: json!({"client": "alice@EXAMPLE.TEST", "ticket": "x", "enc_part": "y", "roles": ["admin"]}),
    };
    let caught = std::panic::catch_unwind(|| check(&spec, "post", "/tickets", &bad));
    assert!(caught.is_err(), "a reply with bad tickets and an extra member passed the schema check");
    let undocumented = Answer { status: 418, ..bad };
    assert!(std::panic::catch_unwind(|| check(&spec, "post", "/tickets", &undocumented)).is_err());
}

/// A `kadmin/admin` ticket for the bootstrap admin.
async fn admin_creds(k: &TestKdc) -> Credentials {
    let c = k.client();
    let tgt = c.login("admin@EXAMPLE.TEST", ADMIN_PW).await.unwrap();
    c.service_ticket(&tgt, "kadmin/admin@EXAMPLE.TEST").await.unwrap()
}

/// One admin call with a real admin ticket, the body (if any) bound: the
/// answer, and whether its mutual reply verified over status and body.
async fn admin_call(
    k: &TestKdc,
    creds: &Credentials,
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
) -> (Answer, bool) {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    let url = format!("{}{path_and_query}", k.url);
    let (authz, sent) = ap_authorization(creds, method, &url, bytes.as_deref(), now());
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url).header("authorization", authz);
    if let Some(b) = bytes {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = h("content-type").unwrap_or_default();
    let info = ServiceAnswer {
        status,
        www_authenticate: None,
        authentication_info: h("authentication-info"),
        retry_after: None,
        body: Vec::new(),
    };
    let body = r.bytes().await.unwrap().to_vec();
    let mutual = info
        .mutual()
        .is_some_and(|m| kdc_proto::verify_mutual_reply(&m, &creds.enc.session_key, &sent, status, &body).is_ok());
    let body = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (Answer { status, content_type, www_authenticate: None, retry_after: None, body }, mutual)
}

/// Found by schemathesis (scripts/contract-fuzz.sh): a query string or a path
/// segment that axum's extractors refuse got a `text/plain` answer, outside
/// the spec. Every refusal is problem+json, and behind the admin layer it
/// still carries a mutual reply that verifies over the rewritten body.
#[tokio::test]
async fn extractor_rejections_are_problems_with_a_mutual_reply() {
    let spec = spec();
    let k = TestKdc::start().await.unwrap();
    let creds = admin_creds(&k).await;
    for (path, spec_path) in [
        ("/admin/principals?bogus=1", "/admin/principals"),
        ("/admin/principals?limit=-1", "/admin/principals"),
        ("/admin/principals/%FF", "/admin/principals/{name}"),
        ("/admin/principals/%FF/keytab", "/admin/principals/{name}/keytab"),
    ] {
        let (a, mutual) = admin_call(&k, &creds, "GET", path, None).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.content_type, "application/problem+json", "{path}: {}", a.body);
        assert_eq!(a.body["type"], "urn:kdc-http:problem:malformed-request", "{path}");
        assert!(mutual, "{path}: no mutual reply over the problem");
        check(&spec, "get", spec_path, &a);
    }
}

/// Whether `value` validates against `schema` (resolved within the spec).
fn valid(spec: &Value, schema: &Value, value: &Value) -> bool {
    let mut root = spec.clone();
    root["$ref"] = json!("#/$defs/__target");
    root["$defs"] = json!({ "__target": schema.clone() });
    jsonschema::draft202012::new(&root).unwrap().is_valid(value)
}

/// Found by schemathesis: the spec's request schemas allowed what the KDC
/// refuses as malformed (a user without a password, empty or duplicate
/// roles, empty realm labels, 129-byte realms, names the KDC cannot parse,
/// 64 characters of multi-byte nonce) and refused what it accepts (`null` for
/// absent members, a page size it clamps). Each request here is judged by the
/// spec and by the KDC, and both must agree: the spec says valid exactly when
/// the KDC does not refuse the request's shape (`400 malformed-request`, or
/// `invalid-operation` for a service given a password).
#[tokio::test]
async fn request_schemas_agree_with_what_the_kdc_refuses() {
    let spec = spec();
    let k = TestKdc::start().await.unwrap();
    let creds = admin_creds(&k).await;
    let refused_shape = |a: &Answer| {
        a.status == 400
            && ["urn:kdc-http:problem:malformed-request", "urn:kdc-http:problem:invalid-operation"]
                .contains(&a.body["type"].as_str().unwrap_or(""))
    };
    let sealed_lookalike = "eyJhbGciOiJkaXIifQ..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA";
    let long_realm = format!("x@{}", "R".repeat(129));

    let create = &spec["paths"]["/admin/principals"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let update =
        &spec["paths"]["/admin/principals/{name}"]["patch"]["requestBody"]["content"]["application/json"]["schema"];
    let bodies: Vec<(&str, &str, &Value, Value)> = vec![
        ("POST", "/admin/principals", create, json!({"name": "u1", "kind": "user"})),
        (
            "POST",
            "/admin/principals",
            create,
            json!({"name": "HTTP/s1", "kind": "service", "password_sealed": sealed_lookalike}),
        ),
        ("POST", "/admin/principals", create, json!({"name": "", "kind": "service"})),
        ("POST", "/admin/principals", create, json!({"name": "a b", "kind": "service"})),
        ("POST", "/admin/principals", create, json!({"name": "s2@EXAMPLE..TEST", "kind": "service"})),
        ("POST", "/admin/principals", create, json!({"name": "HTTP/s3", "kind": "service", "roles": [""]})),
        ("POST", "/admin/principals", create, json!({"name": "HTTP/s4", "kind": "service", "max_life_secs": -1})),
        (
            "POST",
            "/admin/principals",
            create,
            json!({"name": "HTTP/s5", "kind": "service", "password_sealed": null, "max_life_secs": null, "max_renew_secs": null}),
        ),
        (
            "POST",
            "/admin/principals",
            create,
            json!({"name": "HTTP/s6", "kind": "service", "roles": ["reader", "ops:write"], "max_life_secs": 60}),
        ),
        ("PATCH", "/admin/principals/HTTP%2Fs6", update, json!({"roles": ["a", "a"]})),
        ("PATCH", "/admin/principals/HTTP%2Fs6", update, json!({"roles": [""]})),
        ("PATCH", "/admin/principals/HTTP%2Fs6", update, json!({"roles": null, "disabled": null})),
        ("PATCH", "/admin/principals/HTTP%2Fs6", update, json!({"roles": ["b", "c"], "max_life_secs": null})),
    ];
    for (method, path, schema, body) in &bodies {
        let (a, _) = admin_call(&k, &creds, method, path, Some(body)).await;
        let by_spec = valid(&spec, schema, body);
        assert_eq!(
            by_spec,
            !refused_shape(&a),
            "{method} {path} {body}: spec says valid={by_spec}, KDC answered {} {}",
            a.status,
            a.body
        );
    }

    // Path and query parameters.
    let name = &spec["components"]["schemas"]["PrincipalName"];
    for n in [
        "alice",
        "HTTP/a.example.test",
        "alice@EXAMPLE.TEST",
        "a b",
        "a//b",
        "a@",
        "a@EXAMPLE..TEST",
        long_realm.as_str(),
    ] {
        let encoded: String = n
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (a, _) = admin_call(&k, &creds, "GET", &format!("/admin/principals/{encoded}"), None).await;
        let by_kdc = !(a.status == 400 && a.body["type"] == "urn:kdc-http:problem:malformed-request");
        assert_eq!(valid(&spec, name, &json!(n)), by_kdc, "name {n:?}: KDC answered {} {}", a.status, a.body);
    }
    let limit = &spec["paths"]["/admin/principals"]["get"]["parameters"][1]["schema"];
    for l in [0u64, 1, 1000, 5000, u64::from(u32::MAX)] {
        let (a, _) = admin_call(&k, &creds, "GET", &format!("/admin/principals?limit={l}"), None).await;
        assert_eq!(a.status, 200, "limit={l}: {}", a.body);
        assert!(valid(&spec, limit, &json!(l)), "limit={l} is accepted by the KDC but not by the spec");
    }

    // Ticket requests: principals and nonces.
    let c = k.client();
    let initial = &spec["paths"]["/tickets/initial"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let multibyte_nonce = "é".repeat(64);
    for body in [
        json!({"client": "alice@EXAMPLE.TEST", "nonce": "n1"}),
        json!({"client": "alice@EXAMPLE.TEST", "nonce": "n2", "service": null, "lifetime_secs": null, "renewable": null, "pre_auth": null}),
        json!({"client": long_realm, "nonce": "n3"}),
        json!({"client": "alice@EXAMPLE..TEST", "nonce": "n4"}),
        json!({"client": "alice@EXAMPLE.TEST", "nonce": multibyte_nonce}),
        json!({"client": "alice@EXAMPLE.TEST", "nonce": "n5", "lifetime_secs": -1}),
    ] {
        let a = c.post("/tickets/initial", &body).await.unwrap();
        let by_kdc = !(a.status == 400 && a.body["type"] == "urn:kdc-http:problem:malformed-request");
        assert_eq!(valid(&spec, initial, &body), by_kdc, "{body}: KDC answered {} {}", a.status, a.body);
    }
}

/// The refusals of a service's authentication layer are documented in
/// `openapi.yaml` (`components.responses.Service*`, schema `ServiceProblem`):
/// every one the layer can give validates against the response documented
/// for its status, carries the headers documented, and the documented kinds
/// are exactly the ones it gives.
#[tokio::test]
async fn service_refusals_match_the_spec() {
    use auth_middleware::AuthRejection;
    let spec = spec();
    let key = kdc_proto::SecretKey::generate();
    let sealed = kdc_proto::ErrorDetail { server_time: now(), nonce: "n".into() }.seal(&key).unwrap();
    let all = [
        AuthRejection::MissingCredentials,
        AuthRejection::MalformedCredentials,
        AuthRejection::InvalidTicket,
        AuthRejection::TicketExpired,
        AuthRejection::WrongService,
        AuthRejection::KvnoUnknown,
        AuthRejection::InvalidAuthenticator,
        AuthRejection::ClockSkew { detail: sealed.clone() },
        AuthRejection::Replay,
        AuthRejection::StaleAuthenticator { detail: sealed.clone() },
        AuthRejection::BindingMismatch,
        AuthRejection::MissingRole,
        AuthRejection::ReplayCacheUnavailable { retry_after: 3 },
        AuthRejection::BodyTooLarge,
    ];
    let mut kinds = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for r in all {
        let code = r.code().into_owned();
        let resp = r.into_response_for("EXAMPLE.TEST");
        let status = resp.status().as_u16();
        let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        let (www, retry, ct) = (header("www-authenticate"), header("retry-after"), header("content-type"));
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
        let name = match status {
            401 => "ServiceUnauthorized",
            403 => "ServiceForbidden",
            413 => "ServicePayloadTooLarge",
            503 => "ServiceUnavailable",
            other => panic!("{code}: status {other} is not documented for services"),
        };
        let documented = &spec["components"]["responses"][name];
        assert_eq!(ct.as_deref(), Some("application/problem+json"), "{code}");
        let schema = &documented["content"]["application/problem+json"]["schema"];
        assert!(valid(&spec, schema, &body), "{code}: {body} does not match {name}");
        assert_eq!(documented["headers"].get("WWW-Authenticate").is_some(), www.is_some(), "{code}: WWW-Authenticate");
        assert_eq!(documented["headers"].get("Retry-After").is_some(), retry.is_some(), "{code}: Retry-After");
        if let Some(www) = www {
            let sealed_time = body.get("server_time_sealed").and_then(Value::as_str);
            let expected = match (code.as_str(), sealed_time) {
                ("missing_credentials", _) => "Ticket realm=\"EXAMPLE.TEST\"".to_owned(),
                (_, Some(t)) => format!("Ticket realm=\"EXAMPLE.TEST\", error=\"{code}\", server_time=\"{t}\""),
                _ => format!("Ticket realm=\"EXAMPLE.TEST\", error=\"{code}\""),
            };
            assert_eq!(www, expected, "{code}");
        }
        kinds.insert(body["type"].as_str().unwrap().to_owned());
        codes.insert(body["detail"].as_str().unwrap().to_owned());
    }
    let problem = &spec["components"]["schemas"]["ServiceProblem"]["allOf"][1]["properties"];
    let set = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(set(&problem["type"]["enum"]), kinds, "ServiceProblem.type (left) and the layer (right) disagree");
    assert_eq!(set(&problem["detail"]["enum"]), codes, "ServiceProblem.detail (left) and the layer (right) disagree");
}

/// The plaintexts of sealed values that `openapi.yaml` describes
/// (`components.schemas`) are the ones the code seals: every plaintext,
/// header and message of the known-answer exchange
/// (`docs/known-answer-exchange.json`, which kdc-proto's
/// `known_answer_exchange` test keeps equal to the code) validates against
/// its schema, and one with an unknown member does not.
#[test]
fn sealed_plaintexts_match_the_spec() {
    let spec = spec();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/known-answer-exchange.json");
    let kat: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let parsed = |s: &Value| -> Value { serde_json::from_str(s.as_str().unwrap()).unwrap() };
    let plaintexts = [
        ("pre_auth", "PreAuthTimestamp"),
        ("as_enc_part", "EncTicketPart"),
        ("tgs_enc_part", "EncTicketPart"),
        ("renew_enc_part", "EncTicketPart"),
        ("tgs_authenticator", "Authenticator"),
        ("ap_authenticator", "Authenticator"),
        ("renew_authenticator", "Authenticator"),
        ("mutual_reply", "MutualReply"),
        ("clock_skew_detail", "ErrorDetail"),
    ];
    let mut headers = Vec::new();
    for (field, name) in plaintexts {
        let value = parsed(&kat[field]["plaintext"]);
        assert!(valid(&spec, &schema(name), &value), "{field}: {value} is not a {name}");
        let mut extra = value.clone();
        extra["extra"] = json!(1);
        assert!(!valid(&spec, &schema(name), &extra), "{name} accepts an unknown member");
        headers.push(parsed(&kat[field]["header"]));
    }
    for field in ["tgt", "service_ticket", "renewed_tgt"] {
        let claims = parsed(&kat[field]["claims"]);
        assert!(valid(&spec, &schema("TicketClaims"), &claims), "{field}: {claims}");
        headers.push(parsed(&kat[field]["sealed"]["header"]));
    }
    for h in headers {
        assert!(valid(&spec, &schema("SealedHeader"), &h), "{h}");
    }
    for (field, name) in [
        ("as_challenge_request", "InitialTicketRequest"),
        ("as_request", "InitialTicketRequest"),
        ("as_reply", "TicketReply"),
        ("tgs_request", "ServiceTicketRequest"),
        ("tgs_reply", "TicketReply"),
        ("renew_request", "RenewRequest"),
        ("renew_reply", "TicketReply"),
    ] {
        let value = parsed(&kat[field]);
        assert!(valid(&spec, &schema(name), &value), "{field}: {value} is not a {name}");
    }
    let info = &spec["components"]["headers"]["AuthenticationInfo"]["schema"];
    assert!(valid(&spec, info, &kat["authentication_info"]), "{}", kat["authentication_info"]);
}
