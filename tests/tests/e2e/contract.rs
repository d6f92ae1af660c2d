//! `openapi.yaml` is the contract: the router serves exactly its routes, and
//! real responses validate against its schemas.

use std::collections::BTreeSet;

use kdc_e2e::*;
use kdc_server::http::all_routes;
use kdc_server::store::PrincipalUpdate;
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
