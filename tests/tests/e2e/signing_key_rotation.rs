//! Issue 10, item 4: `kdc signing-key rotate` publishes the next signing key
//! before the KDC signs with it, so a service that refreshes its JWK set as
//! `Cache-Control` says never meets a ticket signed by a key it has not seen.

use std::time::Duration;

use kdc_e2e::*;
use kdc_proto::{Clock, SystemClock, UnixMillis};

use crate::durability::realm_in;
use crate::kdc_bin;

/// Polls the KDC at `url` until it publishes exactly `want` (a serving KDC
/// re-reads its keys every few seconds).
async fn wait_for_published(url: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let kids = published_kids(url).await.unwrap();
        if kids == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "published {kids:?}, waited for {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rotation_by_the_kdc_command_is_published_by_the_serving_kdc_before_it_signs() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    let old = published_kids(&kdc.url).await.unwrap();
    assert_eq!(old.len(), 1);
    let old = old[0].clone();
    let keytab = dir.path().join("a.keytab");
    kdc_command(&kdc_bin(), &["keytab", "export", SVC_A, "--data", d, "--out", keytab.to_str().unwrap()], None)
        .await
        .unwrap();
    let keytab: kdc_proto::Keytab = serde_json::from_slice(&std::fs::read(&keytab).unwrap()).unwrap();
    let svc_key = keytab.keys[0].key.clone();

    // Too short a delay is refused, with the reason.
    let e = kdc_command(&kdc_bin(), &["signing-key", "rotate", "--data", d, "--activate-after", "60"], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("too short") && e.contains("the shortest is 605 s"), "{e}");

    let out = kdc_command(&kdc_bin(), &["signing-key", "rotate", "--data", d], None).await.unwrap();
    let new = out.split_whitespace().nth(3).unwrap().trim_end_matches(':').to_owned();
    assert_ne!(new, old);
    assert!(out.contains("(in 3600 s)") && out.contains(&format!("previous key {old}")), "{out}");
    // One rotation at a time.
    let e = kdc_command(&kdc_bin(), &["signing-key", "rotate", "--data", d, "--activate-after", "900"], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already pending") && e.contains(&new), "{e}");

    // The serving KDC publishes the new key without a restart, next first...
    wait_for_published(&kdc.url, &[&new, &old]).await;
    // ...and keeps signing with the old one until it activates.
    let c = ProtoClient::new(&kdc.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let ticket = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(ticket_signing_kid(&ticket.ticket, &svc_key).unwrap(), old);

    let list = kdc_command(&kdc_bin(), &["signing-key", "list", "--data", d], None).await.unwrap();
    let states: Vec<(&str, &str)> =
        list.lines().map(|l| l.split('\t').collect::<Vec<_>>()).map(|f| (f[0], f[1])).collect();
    assert_eq!(states, vec![(new.as_str(), "next"), (old.as_str(), "active")], "{list}");

    // The schedule survives kill -9: same keys published, same key signing.
    kdc.kill9().await.unwrap();
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    assert_eq!(published_kids(&kdc.url).await.unwrap(), vec![new.clone(), old.clone()]);
    let c = ProtoClient::new(&kdc.url);
    let ticket = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(ticket_signing_kid(&ticket.ticket, &svc_key).unwrap(), old);
}

async fn login_at(c: &ProtoClient, who: &str, password: &str, at: UnixMillis) -> Credentials {
    let key = c.derive_key(who, password).await.unwrap();
    let req = ProtoClient::initial_request(&key, who, at).unwrap();
    c.initial(&key, &req).await.unwrap().unwrap()
}

async fn ticket_at(c: &ProtoClient, tgt: &Credentials, service: &str, at: UnixMillis) -> Credentials {
    let req = ProtoClient::tgs_request(tgt, service, at).unwrap();
    c.tgs(tgt, &req).await.unwrap().unwrap()
}

async fn get_at(http: &reqwest::Client, creds: &Credentials, url: &str, at: UnixMillis) -> ServiceAnswer {
    let (authz, _) = ap_authorization(creds, "GET", url, None, at);
    send(http, "GET", url, Some(&authz), None).await.unwrap()
}

#[tokio::test]
async fn a_service_that_refreshed_its_keys_accepts_the_new_key_from_the_switch_on() {
    let kdc = TestKdc::start().await.unwrap();
    // Service A refreshes its JWK set often; service B, built now, never
    // refreshes in this test: it shows what a service meets when it has not
    // seen the key.
    let a =
        TestService::start_with(&kdc, SVC_A, |b| b.jwks_refresh_interval(Duration::from_millis(200))).await.unwrap();
    let b = TestService::start_with(&kdc, SVC_B, |b| b.jwks_refresh_interval(Duration::from_secs(3600))).await.unwrap();
    let (key_a, key_b) = (kdc.service_key(SVC_A).await.unwrap(), kdc.service_key(SVC_B).await.unwrap());
    let http = reqwest::Client::new();
    let c = kdc.client();
    let old = published_kids(&kdc.url).await.unwrap()[0].clone();
    let tgt = login_at(&c, "alice@EXAMPLE.TEST", ALICE_PW, kdc.clock.now()).await;
    let before = ticket_at(&c, &tgt, SVC_A, kdc.clock.now()).await;

    let r = kdc.kdc.rotate_signing_key(None, kdc.clock.now().as_secs()).await.unwrap();
    assert_eq!(r.previous.as_deref(), Some(old.as_str()));
    wait_for_published(&kdc.url, &[&r.kid, &old]).await;
    // A few of service A's refresh periods.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Published, not signing yet.
    let pending = ticket_at(&c, &tgt, SVC_A, kdc.clock.now()).await;
    assert_eq!(ticket_signing_kid(&pending.ticket, &key_a).unwrap(), old);

    // Past the activation: new tickets carry the new key.
    let until_switch = r.activates_at - kdc.clock.now().as_secs();
    kdc.clock.advance_secs(i64::try_from(until_switch).unwrap() + 1);
    let after = ticket_at(&c, &tgt, SVC_A, kdc.clock.now()).await;
    assert_eq!(ticket_signing_kid(&before.ticket, &key_a).unwrap(), old);
    assert_eq!(ticket_signing_kid(&after.ticket, &key_a).unwrap(), r.kid);
    // Service A takes it at the first request, and the old key's tickets too.
    for creds in [&after, &before] {
        let ans = get_at(&http, creds, &format!("{}/hello", a.url), kdc.clock.now()).await;
        assert_eq!(ans.status, 200, "{:?} {}", ans.www_authenticate, ans.text());
    }
    // Service B, which never fetched the set after the rotation, refuses it.
    let for_b = ticket_at(&c, &tgt, SVC_B, kdc.clock.now()).await;
    assert_eq!(ticket_signing_kid(&for_b.ticket, &key_b).unwrap(), r.kid);
    let ans = get_at(&http, &for_b, &format!("{}/hello", b.url), kdc.clock.now()).await;
    assert_eq!(ans.status, 401);
    assert_eq!(ans.error_code().as_deref(), Some("invalid_ticket"));
    // The KDC's own admin layer follows its keys: an admin ticket under the
    // new key is accepted.
    let admin_tgt = login_at(&c, "admin@EXAMPLE.TEST", ADMIN_PW, kdc.clock.now()).await;
    let admin = ticket_at(&c, &admin_tgt, "kadmin/admin@EXAMPLE.TEST", kdc.clock.now()).await;
    let ans = get_at(&http, &admin, &format!("{}/admin/principals", kdc.url), kdc.clock.now()).await;
    assert_eq!(ans.status, 200, "{:?} {}", ans.www_authenticate, ans.text());
    // The TGT signed by the old key still buys tickets, and renews under the new key.
    let renewed = c.renew(&tgt, kdc.clock.now()).await.unwrap().unwrap();
    let again = ticket_at(&c, &renewed, SVC_A, kdc.clock.now()).await;
    assert_eq!(ticket_signing_kid(&again.ticket, &key_a).unwrap(), r.kid);

    // Once every ticket the old key signed has expired, it is withdrawn.
    let policy = kdc.kdc.policy();
    kdc.clock.advance_secs(i64::try_from(policy.max_life_secs + policy.max_skew_secs).unwrap());
    wait_for_published(&kdc.url, &[&r.kid]).await;
}

/// The fields of `kdc signing-key list`, one row per key: `[kid, state,
/// "published …", "signs from …", "retires …"]`.
async fn list_keys(d: &str) -> Vec<Vec<String>> {
    let list = kdc_command(&kdc_bin(), &["signing-key", "list", "--data", d], None).await.unwrap();
    list.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

/// The Unix time at the start of a `list` field after its label.
fn time_in(field: &str, label: &str) -> u64 {
    field.strip_prefix(label).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_key_rotated_while_no_kdc_serves_signs_only_a_floor_after_a_kdc_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = realm_in(dir.path()).await;
    let d = data.to_str().unwrap();
    let old = list_keys(d).await[0][0].clone();
    // Rotated with the shortest delay while no KDC serves (a maintenance
    // window): nothing has published it.
    let out = kdc_command(&kdc_bin(), &["signing-key", "rotate", "--data", d, "--activate-after", "605"], None)
        .await
        .unwrap();
    let new = out.split_whitespace().nth(3).unwrap().trim_end_matches(':').to_owned();
    let rows = list_keys(d).await;
    assert_eq!(
        (rows[0][0].as_str(), rows[0][1].as_str(), rows[0][2].as_str()),
        (new.as_str(), "next", "published not yet")
    );
    assert!(rows[0][3].starts_with("signs from 605 s after a serving KDC publishes it"), "{rows:?}");
    assert_eq!((rows[1][0].as_str(), rows[1][1].as_str(), rows[1][4].as_str()), (old.as_str(), "active", "retires -"));

    // A KDC starts: it records its publication at once, and the key signs
    // a publish floor after that, whatever the rotation said.
    let started = SystemClock.now().as_secs();
    let kdc = KdcProcess::start(&kdc_bin(), &data).await.unwrap();
    assert_eq!(published_kids(&kdc.url).await.unwrap(), vec![new.clone(), old.clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = list_keys(d).await;
        if rows[0][2] != "published not yet" {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "never recorded: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let published = time_in(&rows[0][2], "published ");
    assert!(published >= started && published <= SystemClock.now().as_secs(), "{rows:?}");
    assert_eq!(time_in(&rows[0][3], "signs from "), published + 605, "{rows:?}");
    // The old key is published until its last ticket has expired.
    assert_eq!(time_in(&rows[1][4], "retires "), published + 605 + 10 * 3600 + 300, "{rows:?}");

    // Meanwhile the old key signs.
    let keytab = dir.path().join("a.keytab");
    kdc_command(&kdc_bin(), &["keytab", "export", SVC_A, "--data", d, "--out", keytab.to_str().unwrap()], None)
        .await
        .unwrap();
    let keytab: kdc_proto::Keytab = serde_json::from_slice(&std::fs::read(&keytab).unwrap()).unwrap();
    let c = ProtoClient::new(&kdc.url);
    let tgt = c.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let ticket = c.service_ticket(&tgt, SVC_A).await.unwrap();
    assert_eq!(ticket_signing_kid(&ticket.ticket, &keytab.keys[0].key).unwrap(), old);
}
