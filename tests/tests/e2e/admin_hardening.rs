//! The admin API re-reads its caller on every request: an administrator who is
//! disabled, deleted or demoted loses the API at once, with the ticket it
//! already holds, and a new principal under the same name inherits nothing.

use kdc_e2e::*;
use kdc_server::PrincipalUpdate;
use kdc_server::{Credential, PrincipalSpec};
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::kdc_bin;

const ROOT2: &str = "root2@EXAMPLE.TEST";
const ROOT2_PW: &str = "second admin password";

/// Adds a second administrator, `root2`, straight into the store.
async fn add_second_admin(k: &TestKdc) {
    let spec = PrincipalSpec {
        name: ROOT2.parse().unwrap(),
        credential: Credential::Password(ROOT2_PW.to_owned().into()),
        roles: vec!["admin".to_owned()],
        max_life_secs: None,
        max_renew_secs: None,
    };
    k.kdc.create_principal(spec, now().as_secs()).await.unwrap();
}

/// A problem without its `instance`, which names the request and so
/// differs between any two answers.
fn without_instance(mut body: Value) -> Value {
    let instance = body.as_object_mut().and_then(|o| o.remove("instance"));
    assert!(instance.is_some_and(|i| i.as_str().unwrap().starts_with("urn:kdc-http:request:")), "{body}");
    body
}

/// The refusal a caller whose ticket lacks the role gets: the reference
/// answer every refused stale admin must match, so nothing says why.
async fn missing_role_answer(url: &str) -> (u16, Value) {
    let alice = Admin::login(url, "alice@EXAMPLE.TEST", ALICE_PW).await;
    let (s, body, _) = alice.call("GET", "/admin/principals", None).await;
    assert_eq!(s, 403, "{body}");
    (s, without_instance(body))
}

/// `who` still holds a ticket: it is refused exactly like a caller without the role.
async fn assert_refused_like_missing_role(who: &Admin, reference: &(u16, Value)) {
    for (method, path, body) in [
        ("GET", "/admin/principals", None),
        ("GET", "/admin/principals/alice", None),
        ("PATCH", "/admin/principals/root2", Some(json!({"disabled": false, "roles": ["admin"]}))),
    ] {
        let (s, b, ans) = who.call(method, path, body).await;
        assert_eq!((s, &without_instance(b)), (reference.0, &reference.1), "{method} {path}");
        assert!(ans.www_authenticate.is_none());
    }
}

#[tokio::test]
async fn an_admin_disabled_in_the_store_is_refused_at_once() {
    let k = TestKdc::start().await.unwrap();
    add_second_admin(&k).await;
    let root2 = Admin::login(&k.url, ROOT2, ROOT2_PW).await;
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
    let upd = PrincipalUpdate { disabled: Some(true), ..Default::default() };
    k.kdc.store().update_principal(ROOT2, &upd).await.unwrap();
    assert_refused_like_missing_role(&root2, &missing_role_answer(&k.url).await).await;
    // It stays disabled: the refused PATCH above did not re-enable it.
    assert!(k.kdc.get(&ROOT2.parse().unwrap()).await.unwrap().disabled);
    // Re-enabled by someone else, the same ticket works again: the check is
    // the store's state now, not a mark on the ticket.
    let upd = PrincipalUpdate { disabled: Some(false), ..Default::default() };
    k.kdc.store().update_principal(ROOT2, &upd).await.unwrap();
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
}

#[tokio::test]
async fn an_admin_disabled_through_the_api_is_refused_at_once() {
    let k = TestKdc::start().await.unwrap();
    add_second_admin(&k).await;
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let root2 = Admin::login(&k.url, ROOT2, ROOT2_PW).await;
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
    let (s, _, _) = admin.call("PATCH", "/admin/principals/root2", Some(json!({"disabled": true}))).await;
    assert_eq!(s, 200);
    assert_refused_like_missing_role(&root2, &missing_role_answer(&k.url).await).await;
    assert!(k.kdc.get(&ROOT2.parse().unwrap()).await.unwrap().disabled);
}

#[tokio::test]
async fn an_admin_disabled_from_the_command_line_is_refused_at_once_by_a_serving_kdc() {
    let dir = tempfile::tempdir().unwrap();
    let data = crate::durability::realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    kdc_command(
        &kdc_bin(),
        &["principal", "add", "root2", "--data", d, "--password-stdin", "--role", "admin"],
        Some(&format!("{ROOT2_PW}\n")),
    )
    .await
    .unwrap();
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    let root2 = Admin::login(&kdc.url, ROOT2, ROOT2_PW).await;
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
    kdc_command(&kdc_bin(), &["principal", "disable", "root2", "--data", d], None).await.unwrap();
    assert_refused_like_missing_role(&root2, &missing_role_answer(&kdc.url).await).await;
}

#[tokio::test]
async fn a_deleted_admin_is_refused_and_a_new_principal_of_the_same_name_inherits_nothing() {
    let k = TestKdc::start().await.unwrap();
    add_second_admin(&k).await;
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let root2 = Admin::login(&k.url, ROOT2, ROOT2_PW).await;
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
    assert_eq!(admin.call("DELETE", "/admin/principals/root2", None).await.0, 204);
    let reference = missing_role_answer(&k.url).await;
    assert_refused_like_missing_role(&root2, &reference).await;
    // Someone else gets the name, and even the admin role: the old ticket names
    // the deleted principal's id, so it stays refused.
    let (s, body, _) = admin
        .call(
            "POST",
            "/admin/principals",
            Some(json!({"name": "root2", "kind": "user", "password_sealed": admin.seal("new root2 pw"), "roles": ["admin"]})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_refused_like_missing_role(&root2, &reference).await;
    // The new principal itself is an administrator with its own tickets.
    let new_root2 = Admin::login(&k.url, ROOT2, "new root2 pw").await;
    assert_eq!(new_root2.call("GET", "/admin/principals", None).await.0, 200);
}

#[tokio::test]
async fn a_demoted_admin_is_refused_at_once() {
    let k = TestKdc::start().await.unwrap();
    add_second_admin(&k).await;
    let admin = Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let root2 = Admin::login(&k.url, ROOT2, ROOT2_PW).await;
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
    let (s, _, _) = admin.call("PATCH", "/admin/principals/root2", Some(json!({"roles": ["reader"]}))).await;
    assert_eq!(s, 200);
    assert_refused_like_missing_role(&root2, &missing_role_answer(&k.url).await).await;
    let rec = k.kdc.get(&ROOT2.parse().unwrap()).await.unwrap();
    assert_eq!(rec.roles, vec!["reader".to_owned()], "the refused PATCH changed nothing");
    // Demoting through the store directly (as the command line would) works the same.
    let (s, _, _) = admin.call("PATCH", "/admin/principals/root2", Some(json!({"roles": ["admin"]}))).await;
    assert_eq!(s, 200);
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 200);
    let upd = PrincipalUpdate { roles: Some(vec![]), ..Default::default() };
    k.kdc.store().update_principal(ROOT2, &upd).await.unwrap();
    assert_eq!(root2.call("GET", "/admin/principals", None).await.0, 403);
}
