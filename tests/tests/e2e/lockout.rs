//! Smart lock-out over real HTTP: an attacker's failures lock out the
//! attacker's address, never the victim's right password from another one;
//! real and unknown names are throttled alike; behind a trusted proxy the
//! forwarded address counts, and `X-Forwarded-For` from anyone else is ignored.
//!
//! Clients present different addresses by binding to other loopback
//! addresses (all of 127.0.0.0/8 is loopback on Linux), or through the
//! trusted-proxy path with an `X-Forwarded-For` header.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use kdc_e2e::*;
use kdc_proto::SecretKey;
use kdc_server::Policy;
use kdc_server::ThrottlePolicy;

/// The defaults every test here relies on (`ThrottlePolicy::default()`).
const PER_PAIR: usize = 5;
const PER_PRINCIPAL: usize = 10;
const MAX_DELAY: Duration = Duration::from_millis(2_000);

/// A protocol client whose connections come from `ip`.
fn client_at(k: &TestKdc, ip: &str) -> ProtoClient {
    let ip: IpAddr = ip.parse().unwrap();
    ProtoClient::with_http(&k.url, reqwest::Client::builder().local_address(ip).build().unwrap())
}

/// A protocol client that sends `X-Forwarded-For: xff` (from 127.0.0.1).
fn client_forwarded_for(k: &TestKdc, xff: &str) -> ProtoClient {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", xff.parse().unwrap());
    let http = reqwest::Client::builder().local_address("127.0.0.1".parse::<IpAddr>().unwrap());
    ProtoClient::with_http(&k.url, http.default_headers(h).build().unwrap())
}

/// One pre-authentication with a wrong key for `name`.
async fn guess(c: &ProtoClient, name: &str) -> Answer {
    let req = ProtoClient::initial_request(&SecretKey::generate(), name, now()).unwrap();
    c.post("/tickets/initial", &req).await.unwrap()
}

/// [`guess_until_refused`] from each of `addresses` at once (over the
/// principal-wide limit every guess waits, so one after another would be slow).
async fn attack_from(k: &TestKdc, addresses: Vec<String>, name: &'static str) -> Vec<usize> {
    let tasks: Vec<_> = addresses
        .iter()
        .map(|ip| {
            let c = client_at(k, ip);
            tokio::spawn(async move { guess_until_refused(&c, name, 20).await.0 })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        failed.push(t.await.unwrap());
    }
    failed
}

/// Guesses at `name` until refused (at most `limit + 3` tries); returns how
/// many failed with 401 before the first 429, and that 429.
async fn guess_until_refused(c: &ProtoClient, name: &str, limit: usize) -> (usize, Answer) {
    let mut failed = 0;
    for _ in 0..limit + 3 {
        let a = guess(c, name).await;
        match a.status {
            401 => failed += 1,
            429 => return (failed, a),
            s => panic!("unexpected {s}: {}", a.body),
        }
    }
    panic!("{name} was never refused after {failed} failures");
}

fn assert_too_many_attempts(a: &Answer, window_secs: u64) {
    assert_eq!((a.status, a.body["type"].as_str()), (429, Some("urn:kdc-http:problem:too-many-attempts")));
    let retry: u64 = a.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After in seconds");
    assert!(retry > 0 && retry <= window_secs, "Retry-After {retry}");
}

#[tokio::test]
async fn the_right_password_from_another_address_gets_in_after_an_attackers_failures() {
    let k = TestKdc::start().await.unwrap();
    let attacker = client_at(&k, "127.0.0.2");
    let (failed, refused) = guess_until_refused(&attacker, "alice@EXAMPLE.TEST", 20).await;
    assert_eq!(failed, PER_PAIR);
    assert_too_many_attempts(&refused, 300);
    // Further tries from the attacker's address stay refused, uncounted.
    for _ in 0..20 {
        assert_eq!(guess(&attacker, "alice@EXAMPLE.TEST").await.status, 429);
    }
    // The victim, from its own address, logs in at once.
    let victim = client_at(&k, "127.0.0.3");
    let key = victim.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    victim.initial(&key, &req).await.unwrap().expect("the victim is not locked out");
    // The attacker's address is refused for alice even with her password, but
    // not for other names.
    assert_eq!(attacker.challenge("alice@EXAMPLE.TEST").await.unwrap().status, 429);
    attacker.login("bob@EXAMPLE.TEST", BOB_PW).await.unwrap();
}

#[tokio::test]
async fn a_principal_attacked_from_many_addresses_is_slowed_never_refused() {
    let k = TestKdc::start().await.unwrap();
    let attackers = (0..PER_PRINCIPAL / PER_PAIR + 2).map(|i| format!("127.0.1.{i}")).collect();
    for failed in attack_from(&k, attackers, "alice@EXAMPLE.TEST").await {
        assert_eq!(failed, PER_PAIR, "each attacking address is refused after its own failures");
    }
    // 20 failures, 10 over the limit: the delay is at its ceiling.
    let victim = client_at(&k, "127.0.0.3");
    let key = victim.derive_key("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    let req = ProtoClient::initial_request(&key, "alice@EXAMPLE.TEST", now()).unwrap();
    let started = Instant::now();
    victim.initial(&key, &req).await.unwrap().expect("slowed, never refused");
    let took = started.elapsed();
    assert!(took >= MAX_DELAY, "the right password waits too: {took:?}");
    assert!(took < MAX_DELAY + Duration::from_secs(3), "the delay is bounded: {took:?}");
    // A wrong guess from yet another address waits the same, and is not refused.
    let started = Instant::now();
    assert_eq!(guess(&client_at(&k, "127.0.2.1"), "alice@EXAMPLE.TEST").await.status, 401);
    assert!(started.elapsed() >= MAX_DELAY);
}

#[tokio::test]
async fn guesses_sent_at_once_cannot_exceed_the_limit() {
    let k = TestKdc::start().await.unwrap();
    let attacker = client_at(&k, "127.0.0.6");
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let c = attacker.clone();
            tokio::spawn(async move { guess(&c, "alice@EXAMPLE.TEST").await.status })
        })
        .collect();
    let mut answered = Vec::new();
    for t in tasks {
        answered.push(t.await.unwrap());
    }
    // Every guess is counted when it is let through: of 40 in flight at once,
    // exactly the limit are tried, the rest refused.
    assert_eq!(answered.iter().filter(|s| **s == 401).count(), PER_PAIR, "{answered:?}");
    assert_eq!(answered.iter().filter(|s| **s == 429).count(), 40 - PER_PAIR, "{answered:?}");
}

#[tokio::test]
async fn a_success_resets_the_failures_of_its_own_address() {
    let k = TestKdc::start().await.unwrap();
    let home = client_at(&k, "127.0.0.4");
    for _ in 0..PER_PAIR - 1 {
        assert_eq!(guess(&home, "alice@EXAMPLE.TEST").await.status, 401);
    }
    home.login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    for _ in 0..PER_PAIR - 1 {
        assert_eq!(guess(&home, "alice@EXAMPLE.TEST").await.status, 401, "the earlier typos no longer count");
    }
    let (failed, refused) = guess_until_refused(&home, "alice@EXAMPLE.TEST", PER_PAIR).await;
    assert_eq!(failed, 1);
    assert_too_many_attempts(&refused, 300);
}

#[tokio::test]
async fn a_real_and_an_unknown_name_are_throttled_alike() {
    let k = TestKdc::start().await.unwrap();
    let names = ["alice@EXAMPLE.TEST", "nobody@EXAMPLE.TEST"];
    let (real, unknown) = (client_at(&k, "127.0.3.1"), client_at(&k, "127.0.3.2"));
    // The same answers, step by step, from one address each.
    for step in 0..PER_PAIR + 3 {
        let (a, b) = (guess(&real, names[0]).await, guess(&unknown, names[1]).await);
        assert_eq!((a.status, &a.body["type"]), (b.status, &b.body["type"]), "step {step}");
        assert_eq!(a.retry_after.is_some(), b.retry_after.is_some(), "step {step}");
        let secs = |x: &Answer| x.retry_after.as_deref().map(|s| s.parse::<i64>().unwrap()).unwrap_or(0);
        assert!((secs(&a) - secs(&b)).abs() <= 1, "step {step}: {:?} vs {:?}", a.retry_after, b.retry_after);
    }
    // Over the principal-wide limit both are slowed alike, and neither refused
    // from a fresh address.
    for (j, name) in names.iter().enumerate() {
        let attackers = (0..PER_PRINCIPAL / PER_PAIR).map(|i| format!("127.0.4.{}", 2 * i + j)).collect();
        assert_eq!(attack_from(&k, attackers, name).await, vec![PER_PAIR; PER_PRINCIPAL / PER_PAIR], "{name}");
    }
    for (j, name) in names.iter().enumerate() {
        let fresh = client_at(&k, &format!("127.0.5.{j}"));
        assert_eq!(fresh.challenge(name).await.unwrap().status, 401, "{name}");
        let started = Instant::now();
        assert_eq!(guess(&fresh, name).await.status, 401, "{name}");
        let took = started.elapsed();
        assert!(took >= MAX_DELAY && took < MAX_DELAY + Duration::from_secs(3), "{name}: {took:?}");
    }
}

#[tokio::test]
async fn an_admin_unlock_lifts_a_lock_out_and_a_slow_down_but_not_a_spraying_address() {
    let k = TestKdc::start().await.unwrap();
    let name = "alice@EXAMPLE.TEST";
    // Four addresses locked out for alice, 20 failures: she is slowed to the
    // ceiling everywhere else.
    let attackers: Vec<String> = (0..PER_PRINCIPAL / PER_PAIR + 2).map(|i| format!("127.0.7.{i}")).collect();
    assert_eq!(attack_from(&k, attackers.clone(), name).await, vec![PER_PAIR; attackers.len()]);
    // A spraying address: refused for every name (per_address, 50 by default).
    let sprayer = client_at(&k, "127.0.8.1");
    for i in 0..50 {
        assert_eq!(guess(&sprayer, &format!("user{i}@EXAMPLE.TEST")).await.status, 401);
    }
    assert_eq!(guess(&sprayer, name).await.status, 429);
    let admin = crate::admin::Admin::login(&k.url, "admin@EXAMPLE.TEST", ADMIN_PW).await;
    let (status, body, _) = admin.call("POST", "/admin/principals/alice%40EXAMPLE.TEST/unlock", None).await;
    assert_eq!(status, 204, "{body}");
    // Every locked-out address gets in at once with the right password, and
    // without the principal-wide delay.
    for ip in &attackers {
        let c = client_at(&k, ip);
        let key = c.derive_key(name, ALICE_PW).await.unwrap();
        let req = ProtoClient::initial_request(&key, name, now()).unwrap();
        let started = Instant::now();
        c.initial(&key, &req).await.unwrap().expect("unlocked");
        assert!(started.elapsed() < MAX_DELAY, "{ip}: no longer slowed ({:?})", started.elapsed());
    }
    // The sprayer stays refused, for alice too: the unlock is alice's, not
    // the address's.
    assert_too_many_attempts(&guess(&sprayer, name).await, 300);
    // An unknown name is not found; a non-admin cannot unlock.
    let (status, _, _) = admin.call("POST", "/admin/principals/nobody/unlock", None).await;
    assert_eq!(status, 404);
    let bob = crate::admin::Admin::login(&k.url, "bob@EXAMPLE.TEST", BOB_PW).await;
    assert_eq!(bob.call("POST", "/admin/principals/alice/unlock", None).await.0, 403);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_what_counts() {
    let throttle = ThrottlePolicy { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..ThrottlePolicy::default() };
    let k = TestKdc::start_with(Policy::default(), throttle).await.unwrap();
    // The proxy appended the attacker's address to whatever it sent: the
    // entries on the left are the attacker's to choose and change nothing.
    let (failed, refused) =
        guess_until_refused(&client_forwarded_for(&k, "198.51.100.1, 203.0.113.7"), "alice@EXAMPLE.TEST", 20).await;
    assert_eq!(failed, PER_PAIR);
    assert_too_many_attempts(&refused, 300);
    for i in 0..5 {
        let spoofed = client_forwarded_for(&k, &format!("198.51.100.{}, 203.0.113.7", i + 2));
        assert_eq!(guess(&spoofed, "alice@EXAMPLE.TEST").await.status, 429);
    }
    // The victim comes through the same proxy from another address.
    client_forwarded_for(&k, "203.0.113.8").login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
    // A peer that is not a trusted proxy is counted under its own address,
    // whatever it forwards.
    let direct = |i: usize| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-forwarded-for", format!("203.0.113.{}", 100 + i).parse().unwrap());
        let http = reqwest::Client::builder().local_address("127.0.0.9".parse::<IpAddr>().unwrap());
        ProtoClient::with_http(&k.url, http.default_headers(h).build().unwrap())
    };
    for i in 0..PER_PAIR {
        assert_eq!(guess(&direct(i), "bob@EXAMPLE.TEST").await.status, 401);
    }
    assert_too_many_attempts(&guess(&direct(PER_PAIR), "bob@EXAMPLE.TEST").await, 300);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let k = TestKdc::start().await.unwrap();
    for i in 0..PER_PAIR {
        let c = client_forwarded_for(&k, &format!("203.0.113.{i}"));
        assert_eq!(guess(&c, "alice@EXAMPLE.TEST").await.status, 401);
    }
    // A new X-Forwarded-For buys nothing: the peer (127.0.0.1) is what counts.
    let a = guess(&client_forwarded_for(&k, "203.0.113.200"), "alice@EXAMPLE.TEST").await;
    assert_too_many_attempts(&a, 300);
    // ... and a real other address still gets in.
    client_at(&k, "127.0.0.5").login("alice@EXAMPLE.TEST", ALICE_PW).await.unwrap();
}
