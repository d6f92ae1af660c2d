//! Throttling of failed pre-authentication, per principal and per client
//! address, so online password guessing is slow from any angle.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Deserialize;

/// Limits on failed pre-authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlePolicy {
    /// Failures allowed per principal within the window. Defaults to 10.
    pub per_principal: u32,
    /// Failures allowed per client address within the window. Defaults to 50.
    pub per_address: u32,
    /// Window length in seconds. Defaults to 300.
    pub window_secs: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self { per_principal: 10, per_address: 50, window_secs: 300 }
    }
}

const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    failures: u32,
}

#[derive(Debug)]
struct Counter<K> {
    map: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new() -> Self {
        Self { map: Mutex::new(HashMap::new()) }
    }

    fn blocked_for(&self, key: &K, limit: u32, window: u64, now: u64) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.get(key)?;
        let ends = w.start.saturating_add(window);
        (w.failures >= limit && now < ends).then(|| ends - now)
    }

    fn record(&self, key: &K, window: u64, now: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            // Bounded memory: forget finished windows first, then partial counts.
            map.retain(|_, w| w.start.saturating_add(window) > now);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let w = map.entry(key.clone()).or_insert(Window { start: now, failures: 0 });
        if now >= w.start.saturating_add(window) {
            *w = Window { start: now, failures: 0 };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

/// Counts failed pre-authentication and says when to refuse further tries.
#[derive(Debug)]
pub struct PreAuthThrottle {
    policy: ThrottlePolicy,
    principals: Counter<String>,
    addresses: Counter<IpAddr>,
}

impl PreAuthThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, principals: Counter::new(), addresses: Counter::new() }
    }

    /// Seconds until `principal` from `addr` may try again, if blocked now.
    pub fn retry_after(&self, principal: &str, addr: Option<IpAddr>, now_secs: u64) -> Option<u64> {
        let p = &self.policy;
        let by_name = self.principals.blocked_for(&principal.to_owned(), p.per_principal, p.window_secs, now_secs);
        let by_addr = addr.and_then(|a| self.addresses.blocked_for(&a, p.per_address, p.window_secs, now_secs));
        by_name.max(by_addr)
    }

    /// Records one failure.
    pub fn record_failure(&self, principal: &str, addr: Option<IpAddr>, now_secs: u64) {
        self.principals.record(&principal.to_owned(), self.policy.window_secs, now_secs);
        if let Some(a) = addr {
            self.addresses.record(&a, self.policy.window_secs, now_secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = PreAuthThrottle::new(ThrottlePolicy { per_principal: 3, per_address: 100, window_secs: 60 });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.retry_after("alice", Some(a), 10), None);
            t.record_failure("alice", Some(a), 10);
        }
        assert_eq!(t.retry_after("alice", Some(a), 10), Some(60));
        assert_eq!(t.retry_after("bob", Some(a), 10), None);
        assert_eq!(t.retry_after("alice", Some(a), 70), None);
    }

    #[test]
    fn blocks_an_address_spraying_many_names() {
        let t = PreAuthThrottle::new(ThrottlePolicy { per_principal: 100, per_address: 5, window_secs: 60 });
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..5 {
            t.record_failure(&format!("user{i}"), Some(a), 0);
        }
        assert!(t.retry_after("someone-new", Some(a), 1).is_some());
        assert!(t.retry_after("someone-new", Some("10.0.0.10".parse().unwrap()), 1).is_none());
    }
}
