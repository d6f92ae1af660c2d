//! Smart lock-out of failed pre-authentication: online password guessing is
//! slow from any angle, and failing on purpose locks no one else out.
//!
//! Failures are counted in fixed windows (`window_secs`, from a counter's
//! first failure) under three keys:
//!
//! - **(principal, client address)**: at `per_principal_address` failures
//!   that address is refused for that principal (`429` + `Retry-After`)
//!   until the window ends. A success from the address resets this counter.
//! - **client address**, across all names: at `per_address` failures the
//!   address is refused for every name until the window ends (password
//!   spraying). A success does not reset it, or an attacker with one valid
//!   account could reset their own address between sprays.
//! - **principal**, from all addresses: at `per_principal` failures every
//!   pre-authentication for that name is *slowed* (a delay from 250 ms,
//!   doubling per further failure, capped at `max_delay_ms`), never refused:
//!   the right password from an address that has not failed always gets in.
//!
//! Unknown and real names take exactly the same path (the key is the name as
//! written), so lock-out behaviour does not tell them apart. IPv6 addresses
//! count by /64 network, as one host usually holds a whole /64.
//!
//! An administrator can unlock a principal ([`PreAuthThrottle::unlock`],
//! `POST /admin/principals/{name}/unlock`): its principal-wide counter and
//! every live (principal, address) counter of its name are forgotten at
//! once. Per-address counters stay: an address that sprays names stays
//! refused.
//!
//! A guess is counted as a failure when it is let through, under the same
//! lock as the check, so guesses in flight at once cannot all slip under a
//! limit; a guess that proves the password right takes its count back.
//!
//! The table is bounded (`max_tracked` counters). To make room it drops a
//! throttle whose window has ended, else the counter under its limit that
//! failed least recently (oldest first); a live throttle is never dropped
//! before its window ends. When the table is full of live throttles, a guess
//! that would need a new counter is refused (fail closed) until the first of
//! those throttles ends, at most `window_secs` later; asking for the
//! challenge still works. `docs/SECURITY.md` says what it costs an attacker
//! to get there.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Ceiling of `max_delay_ms`: a slowed principal's owner waits at most this.
pub(crate) const MAX_DELAY_CEILING_MS: u64 = 5_000;
/// The first delay of a principal over `per_principal`; each further failure
/// doubles it, up to `max_delay_ms`.
pub(crate) const FIRST_DELAY_MS: u64 = 250;
/// Most entries `trusted_proxies` may hold.
pub(crate) const MAX_TRUSTED_PROXIES: usize = 64;
/// Smallest `max_tracked` a configuration file may set.
pub(crate) const MIN_TRACKED: usize = 1_000;
/// Largest `max_tracked` (a counter costs up to about 300 bytes).
pub(crate) const MAX_TRACKED_CEILING: usize = 10_000_000;
/// Longest `window_secs` (a day).
pub(crate) const MAX_WINDOW_SECS: u64 = 86_400;

/// Limits on failed pre-authentication (`[throttle]` in `kdc.toml`).
// Serialize: docs/CONFIGURATION.md's defaults are checked against it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlePolicy {
    /// Failures for one principal from one client address within the window
    /// after which that address is refused for that principal. Defaults to 5.
    pub per_principal_address: u32,
    /// Failures from one client address, across all names, within the window
    /// after which that address is refused for every name. Defaults to 50.
    pub per_address: u32,
    /// Failures for one principal, from all addresses, within the window
    /// after which its pre-authentications are slowed (never refused).
    /// Defaults to 10.
    pub per_principal: u32,
    /// Longest delay of a slowed principal's pre-authentication, in
    /// milliseconds; at most [`MAX_DELAY_CEILING_MS`]. Defaults to 2000.
    pub max_delay_ms: u64,
    /// Window length in seconds, at most [`MAX_WINDOW_SECS`]. Defaults to 300.
    pub window_secs: u64,
    /// Most counters kept (memory bound). Defaults to 200 000.
    pub max_tracked: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed: when the peer is
    /// one of these, the client address is the rightmost entry of
    /// `X-Forwarded-For` that is not one of these. Without any (the default),
    /// `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            per_principal_address: 5,
            per_address: 50,
            per_principal: 10,
            max_delay_ms: 2_000,
            window_secs: 300,
            max_tracked: 200_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A `[throttle]` setting out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("[throttle] {0}")]
pub struct InvalidThrottlePolicy(&'static str);

impl ThrottlePolicy {
    /// Checks every setting against its bounds (a configuration file's values).
    pub fn validate(&self) -> Result<(), InvalidThrottlePolicy> {
        let fail = |why| Err(InvalidThrottlePolicy(why));
        if self.per_principal_address == 0 || self.per_address == 0 || self.per_principal == 0 {
            return fail("per_principal_address, per_address and per_principal must be at least 1");
        }
        if self.max_delay_ms > MAX_DELAY_CEILING_MS {
            return fail("max_delay_ms must be at most 5000");
        }
        if self.window_secs == 0 || self.window_secs > MAX_WINDOW_SECS {
            return fail("window_secs must be 1 to 86400");
        }
        if !(MIN_TRACKED..=MAX_TRACKED_CEILING).contains(&self.max_tracked) {
            return fail("max_tracked must be 1000 to 10000000");
        }
        if self.trusted_proxies.len() > MAX_TRUSTED_PROXIES {
            return fail("trusted_proxies may list at most 64 addresses");
        }
        Ok(())
    }
}

/// What to do with a pre-authentication attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead; an attempt that carries a guess waits `delay` first (zero
    /// unless the principal is over `per_principal`).
    Proceed {
        /// How long to wait before answering a guess.
        delay: Duration,
    },
    /// Refuse (`429`): the address is throttled for this principal or for
    /// all, or the table is full of live throttles.
    Refuse {
        /// Seconds until a retry may be let through (at least 1).
        retry_after: u64,
    },
}

/// What a counter counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// One principal from one client network.
    Pair(Arc<str>, IpAddr),
    /// One client network, all names.
    Address(IpAddr),
    /// One principal, all networks.
    Principal(Arc<str>),
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Start of its window (Unix seconds).
    start: u64,
    failures: u32,
    /// When it last failed, as a sequence number: the eviction order.
    seq: u64,
    /// At its limit: indexed by window end, not evictable until then.
    throttled: bool,
}

#[derive(Debug, Default)]
struct Table {
    counters: HashMap<Key, Counter>,
    /// Counters under their limit, by last failure: evicted oldest first.
    counting: BTreeMap<u64, Key>,
    /// Counters at their limit, by (window end, seq): dropped only once ended.
    throttled: BTreeMap<(u64, u64), Key>,
    next_seq: u64,
    /// Whether the last check found the table full of live throttles (logged
    /// on the transition only).
    saturated: bool,
}

impl Table {
    fn index(&mut self, key: Key, c: &Counter, window: u64) {
        if c.throttled {
            self.throttled.insert((c.start.saturating_add(window), c.seq), key);
        } else {
            self.counting.insert(c.seq, key);
        }
    }

    fn unindex(&mut self, c: &Counter, window: u64) {
        if c.throttled {
            self.throttled.remove(&(c.start.saturating_add(window), c.seq));
        } else {
            self.counting.remove(&c.seq);
        }
    }

    /// Frees one slot, or says there is none to free without forgetting a
    /// live throttle.
    fn make_room(&mut self, now: u64) -> bool {
        let ended = self.throttled.first_key_value().is_some_and(|((end, _), _)| *end <= now);
        let victim = if ended {
            self.throttled.pop_first().map(|(_, key)| key)
        } else {
            self.counting.pop_first().map(|(_, key)| key)
        };
        match victim {
            Some(key) => {
                self.counters.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Whether `needed` new counters fit, counting the slots that are free or
    /// may be freed without forgetting a live throttle.
    fn room_for(&self, needed: usize, cap: usize, now: u64) -> bool {
        let free = cap.saturating_sub(self.counters.len());
        let Some(short) = needed.checked_sub(free).filter(|s| *s > 0) else { return true };
        let ended = self.throttled.keys().take_while(|(end, _)| *end <= now).take(short).count();
        self.counting.len().saturating_add(ended) >= short
    }

    /// Seconds until the first live throttle ends and frees a slot.
    fn until_room(&self, now: u64) -> u64 {
        self.throttled.first_key_value().map_or(1, |((end, _), _)| end.saturating_sub(now).max(1))
    }
}

/// Counts failed pre-authentication and says what to do with the next
/// attempt (see the module documentation).
#[derive(Debug)]
pub(crate) struct PreAuthThrottle {
    policy: ThrottlePolicy,
    table: Mutex<Table>,
}

/// The network a client address is counted under: an IPv4 address (IPv4
/// mapped into IPv6 included), or the /64 of an IPv6 address. Requests with
/// no known peer (in-process router tests) share one bucket.
fn network(addr: Option<IpAddr>) -> IpAddr {
    match addr.map(|a| a.to_canonical()) {
        Some(IpAddr::V6(v6)) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        Some(v4) => v4,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// [`network`], for the shared throttle's keys.
pub(crate) fn network_of(addr: Option<IpAddr>) -> IpAddr {
    network(addr)
}

/// The throttle in force: this process's own, or the one shared by every
/// KDC instance through Redis ([`crate::throttle_redis`]). The methods are
/// those of [`PreAuthThrottle`]; the shared one can be unavailable, and is
/// then refused (fail closed).
#[derive(Debug)]
pub(crate) enum Throttle {
    /// In this process.
    Local(PreAuthThrottle),
    /// In Redis, shared.
    Shared(crate::throttle_redis::SharedThrottle),
}

/// The shared throttle could not be reached: refuse the attempt (`503`).
pub(crate) use crate::throttle_redis::Unavailable;

impl Throttle {
    /// The policy in force (after clamping).
    pub(crate) fn policy(&self) -> &ThrottlePolicy {
        match self {
            Throttle::Local(t) => t.policy(),
            Throttle::Shared(t) => t.policy(),
        }
    }

    /// See [`PreAuthThrottle::check`].
    pub(crate) async fn check(
        &self,
        principal: &str,
        addr: Option<IpAddr>,
        now_secs: u64,
    ) -> Result<Verdict, Unavailable> {
        match self {
            Throttle::Local(t) => Ok(t.check(principal, addr, now_secs)),
            Throttle::Shared(t) => t.check(principal, addr, now_secs).await,
        }
    }

    /// See [`PreAuthThrottle::begin_guess`].
    pub(crate) async fn begin_guess(
        &self,
        principal: &str,
        addr: Option<IpAddr>,
        now_secs: u64,
    ) -> Result<Verdict, Unavailable> {
        match self {
            Throttle::Local(t) => Ok(t.begin_guess(principal, addr, now_secs)),
            Throttle::Shared(t) => t.begin_guess(principal, addr, now_secs).await,
        }
    }

    /// See [`PreAuthThrottle::refund_guess`].
    pub(crate) async fn refund_guess(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64) {
        match self {
            Throttle::Local(t) => t.refund_guess(principal, addr, started_secs),
            Throttle::Shared(t) => t.refund_guess(principal, addr, started_secs).await,
        }
    }

    /// See [`PreAuthThrottle::guess_succeeded`].
    pub(crate) async fn guess_succeeded(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64) {
        match self {
            Throttle::Local(t) => t.guess_succeeded(principal, addr, started_secs),
            Throttle::Shared(t) => t.guess_succeeded(principal, addr, started_secs).await,
        }
    }

    /// Counters held (for the shared one: across instances, as of this
    /// instance's last call).
    pub(crate) fn tracked(&self) -> usize {
        match self {
            Throttle::Local(t) => t.tracked(),
            Throttle::Shared(t) => t.tracked(),
        }
    }

    /// See [`PreAuthThrottle::unlock`]; the shared one fails when Redis
    /// cannot be reached (nothing is then known to be forgotten).
    pub(crate) async fn unlock(&self, principal: &str, now_secs: u64) -> Result<(), Unavailable> {
        match self {
            Throttle::Local(t) => {
                t.unlock(principal, now_secs);
                Ok(())
            }
            Throttle::Shared(t) => t.unlock(principal, now_secs).await,
        }
    }

    /// Checks refused because the shared throttle could not be reached
    /// (always 0 for the local one).
    pub(crate) fn unavailable_count(&self) -> u64 {
        match self {
            Throttle::Local(_) => 0,
            Throttle::Shared(t) => t.unavailable_count(),
        }
    }
}

impl PreAuthThrottle {
    /// A throttle with `policy`. Out-of-range values are clamped into their
    /// bounds (a limit of 0 counts as 1), so no policy disables the bounds.
    pub(crate) fn new(policy: ThrottlePolicy) -> Self {
        let policy = ThrottlePolicy {
            per_principal_address: policy.per_principal_address.max(1),
            per_address: policy.per_address.max(1),
            per_principal: policy.per_principal.max(1),
            max_delay_ms: policy.max_delay_ms.min(MAX_DELAY_CEILING_MS),
            window_secs: policy.window_secs.clamp(1, MAX_WINDOW_SECS),
            // Room for the three counters of one failure, however small.
            max_tracked: policy.max_tracked.clamp(3, MAX_TRACKED_CEILING),
            trusted_proxies: policy.trusted_proxies,
        };
        Self { policy, table: Mutex::new(Table::default()) }
    }

    /// The policy in force (after clamping).
    pub(crate) fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::Pair(..) => self.policy.per_principal_address,
            Key::Address(_) => self.policy.per_address,
            Key::Principal(_) => self.policy.per_principal,
        }
    }

    fn keys(principal: &str, addr: Option<IpAddr>) -> [Key; 3] {
        let name: Arc<str> = Arc::from(principal);
        let net = network(addr);
        [Key::Pair(name.clone(), net), Key::Address(net), Key::Principal(name)]
    }

    /// Failures of `key` in its live window, if it has any.
    fn live_failures(&self, table: &Table, key: &Key, now: u64) -> Option<(u32, u64)> {
        let c = table.counters.get(key)?;
        let end = c.start.saturating_add(self.policy.window_secs);
        (now < end).then_some((c.failures, end))
    }

    /// The verdict on an attempt with `keys` at `now`. A guess that would be
    /// counted also needs room for its counters that are not in the table.
    fn verdict(&self, table: &mut Table, keys: &[Key; 3], now: u64, counted: bool) -> Verdict {
        let [pair, address, name] = keys;
        let refused_until = [pair, address]
            .into_iter()
            .filter_map(|k| self.live_failures(table, k, now).filter(|(f, _)| *f >= self.limit(k)))
            .map(|(_, end)| end)
            .max();
        if let Some(end) = refused_until {
            return Verdict::Refuse { retry_after: end.saturating_sub(now).max(1) };
        }
        if counted {
            let missing = keys.iter().filter(|k| !table.counters.contains_key(k)).count();
            let full = !table.room_for(missing, self.policy.max_tracked, now);
            if full != table.saturated {
                table.saturated = full;
                if full {
                    tracing::warn!(
                        tracked = table.counters.len(),
                        "pre-auth throttle full of live throttles: refusing guesses it cannot count"
                    );
                } else {
                    tracing::info!("pre-auth throttle has room again");
                }
            }
            if full {
                return Verdict::Refuse { retry_after: table.until_room(now) };
            }
        }
        let delay = match self.live_failures(table, name, now) {
            Some((f, _)) if f >= self.policy.per_principal => {
                let doublings = (f - self.policy.per_principal).min(16);
                FIRST_DELAY_MS.saturating_mul(1 << doublings).min(self.policy.max_delay_ms)
            }
            _ => 0,
        };
        Verdict::Proceed { delay: Duration::from_millis(delay) }
    }

    /// What to do with an attempt for `principal` from `addr` that carries no
    /// guess (a request for the challenge): nothing is counted.
    pub(crate) fn check(&self, principal: &str, addr: Option<IpAddr>, now_secs: u64) -> Verdict {
        let keys = Self::keys(principal, addr);
        self.verdict(&mut self.lock(), &keys, now_secs, false)
    }

    /// What to do with a guess (pre-authentication data) for `principal`
    /// from `addr`; one that may proceed is counted as a failure at once,
    /// under the same lock as the check, so concurrent guesses cannot all
    /// slip under a limit. [`Self::guess_succeeded`] or
    /// [`Self::refund_guess`] take the count back when the password proves
    /// right. A refused guess is not counted.
    pub(crate) fn begin_guess(&self, principal: &str, addr: Option<IpAddr>, now_secs: u64) -> Verdict {
        let keys = Self::keys(principal, addr);
        let mut table = self.lock();
        let verdict = self.verdict(&mut table, &keys, now_secs, true);
        if matches!(verdict, Verdict::Proceed { .. }) {
            for key in keys {
                self.count(&mut table, key, now_secs);
            }
        }
        verdict
    }

    /// Adds one failure to `key`'s counter (a new window if its last one
    /// ended), making room if it is new.
    fn count(&self, table: &mut Table, key: Key, now: u64) {
        let window = self.policy.window_secs;
        let fresh = Counter { start: now, failures: 0, seq: 0, throttled: false };
        let mut c = match table.counters.remove(&key) {
            Some(c) => {
                table.unindex(&c, window);
                if now >= c.start.saturating_add(window) { fresh } else { c }
            }
            // `verdict` made sure of the room under the same lock.
            None if table.counters.len() < self.policy.max_tracked || table.make_room(now) => fresh,
            None => return,
        };
        c.seq = table.next_seq;
        table.next_seq = table.next_seq.wrapping_add(1);
        c.failures = c.failures.saturating_add(1);
        c.throttled = c.failures >= self.limit(&key);
        table.index(key.clone(), &c, window);
        table.counters.insert(key, c);
    }

    /// Takes back one failure counted for a guess begun at `started` from
    /// `key`'s counter, if that window still holds it.
    fn uncount(&self, table: &mut Table, key: &Key, started: u64) {
        let window = self.policy.window_secs;
        let Some(mut c) = table.counters.get(key).copied() else { return };
        if c.start > started || started >= c.start.saturating_add(window) || c.failures == 0 {
            return;
        }
        table.unindex(&c, window);
        c.failures -= 1;
        c.throttled = c.failures >= self.limit(key);
        if c.failures == 0 {
            table.counters.remove(key);
        } else {
            table.index(key.clone(), &c, window);
            table.counters.insert(key.clone(), c);
        }
    }

    /// The guess begun at `started_secs` proved the password right but was
    /// not a login (a skewed timestamp): its count is taken back, and nothing
    /// else changes.
    pub(crate) fn refund_guess(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64) {
        let mut table = self.lock();
        for key in Self::keys(principal, addr) {
            self.uncount(&mut table, &key, started_secs);
        }
    }

    /// The guess begun at `started_secs` was a fresh, right password: its
    /// count is taken back, and the (principal, address) counter starts
    /// afresh, so a user's own typos do not add up. The address and principal
    /// counters keep their other failures.
    pub(crate) fn guess_succeeded(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64) {
        let keys = Self::keys(principal, addr);
        let mut table = self.lock();
        for key in &keys {
            self.uncount(&mut table, key, started_secs);
        }
        let [pair, ..] = &keys;
        let Some(c) = table.counters.get(pair).copied() else { return };
        // A live throttle is never forgotten early (one reached by other
        // guesses counted while this one ran).
        if c.throttled && started_secs < c.start.saturating_add(self.policy.window_secs) {
            return;
        }
        table.unindex(&c, self.policy.window_secs);
        table.counters.remove(pair);
    }

    /// An administrator's unlock of `principal`: forgets its principal-wide
    /// counter and every (principal, address) counter of that name whose
    /// window is live at `now_secs`, so no address is refused for it and it
    /// is no longer slowed. Per-address counters stay (an address that
    /// sprays names stays refused). Ended pair counters are left for
    /// eviction, as the shared throttle leaves them (they refuse nothing).
    ///
    /// The table has no index by name: this scans it, under the lock, once
    /// per unlock (an administrator's action, rare; at most `max_tracked`
    /// entries).
    pub(crate) fn unlock(&self, principal: &str, now_secs: u64) {
        let window = self.policy.window_secs;
        let mut table = self.lock();
        let doomed: Vec<(Key, Counter)> = table
            .counters
            .iter()
            .filter(|(key, c)| match key {
                Key::Principal(name) => &**name == principal,
                Key::Pair(name, _) => &**name == principal && now_secs < c.start.saturating_add(window),
                Key::Address(_) => false,
            })
            .map(|(key, c)| (key.clone(), *c))
            .collect();
        for (key, c) in doomed {
            table.unindex(&c, window);
            table.counters.remove(&key);
        }
    }

    /// How many counters the table holds.
    pub(crate) fn tracked(&self) -> usize {
        self.lock().counters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn policy(pair: u32, address: u32, principal: u32) -> ThrottlePolicy {
        ThrottlePolicy {
            per_principal_address: pair,
            per_address: address,
            per_principal: principal,
            window_secs: 60,
            ..ThrottlePolicy::default()
        }
    }

    const GO: Verdict = Verdict::Proceed { delay: Duration::ZERO };

    fn refused(v: Verdict) -> bool {
        matches!(v, Verdict::Refuse { .. })
    }

    /// `n` wrong guesses, each of which must be let through.
    fn fail(t: &PreAuthThrottle, name: &str, addr: Option<IpAddr>, n: u32, now: u64) {
        for _ in 0..n {
            assert!(!refused(t.begin_guess(name, addr, now)), "{name} from {addr:?} refused");
        }
    }

    fn failures(t: &PreAuthThrottle, key: &Key) -> Option<u32> {
        t.lock().counters.get(key).map(|c| c.failures)
    }

    #[test]
    fn an_address_that_failed_is_refused_for_that_principal_until_the_window_ends() {
        let t = PreAuthThrottle::new(policy(3, 100, 100));
        let attacker = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.check("alice", attacker, 10), GO);
            fail(&t, "alice", attacker, 1, 10);
        }
        assert_eq!(t.check("alice", attacker, 10), Verdict::Refuse { retry_after: 60 });
        assert_eq!(t.begin_guess("alice", attacker, 69), Verdict::Refuse { retry_after: 1 });
        let pair = Key::Pair("alice".into(), network(attacker));
        assert_eq!(failures(&t, &pair), Some(3), "a refused guess is not counted");
        // Another address, and another name from the same address, go ahead.
        assert_eq!(t.check("alice", ip("192.0.2.2"), 10), GO);
        assert_eq!(t.begin_guess("bob", attacker, 10), GO);
        // The window ends; the next one starts afresh.
        assert_eq!(t.check("alice", attacker, 70), GO);
        fail(&t, "alice", attacker, 2, 70);
        assert_eq!(t.check("alice", attacker, 71), GO);
    }

    #[test]
    fn guesses_count_when_let_through_so_concurrent_ones_cannot_exceed_the_limit() {
        let t = PreAuthThrottle::new(policy(3, 100, 100));
        let a = ip("192.0.2.1");
        // Three guesses in flight, none answered yet: the fourth is refused.
        for _ in 0..3 {
            assert_eq!(t.begin_guess("alice", a, 0), GO);
        }
        assert!(refused(t.begin_guess("alice", a, 0)));
    }

    #[test]
    fn a_right_password_takes_its_count_back() {
        let t = PreAuthThrottle::new(policy(3, 100, 100));
        let (home, other) = (ip("203.0.113.9"), ip("192.0.2.1"));
        fail(&t, "alice", home, 2, 0);
        fail(&t, "alice", other, 1, 0);
        // The third guess is the right password: while it runs, the address is
        // at its limit; once it succeeds, home's failures are forgotten.
        assert_eq!(t.begin_guess("alice", home, 1), GO);
        assert!(refused(t.check("alice", home, 1)));
        t.guess_succeeded("alice", home, 1);
        assert_eq!(failures(&t, &Key::Pair("alice".into(), network(home))), None);
        assert_eq!(failures(&t, &Key::Address(network(home))), Some(2), "its own count only");
        assert_eq!(failures(&t, &Key::Principal("alice".into())), Some(3), "its own count only");
        // A right password with a skewed clock: the count is taken back, the
        // typos before it stay.
        assert_eq!(t.begin_guess("alice", other, 2), GO);
        t.refund_guess("alice", other, 2);
        assert_eq!(failures(&t, &Key::Pair("alice".into(), network(other))), Some(1));
        assert_eq!(failures(&t, &Key::Principal("alice".into())), Some(3));
    }

    #[test]
    fn a_principal_failing_from_many_addresses_is_slowed_never_refused() {
        let t = PreAuthThrottle::new(ThrottlePolicy { max_delay_ms: 1_000, ..policy(5, 100, 10) });
        for i in 0..2 {
            fail(&t, "alice", ip(&format!("198.51.100.{i}")), 5, 0);
        }
        let victim = ip("203.0.113.9");
        assert_eq!(t.check("alice", victim, 1), Verdict::Proceed { delay: Duration::from_millis(250) });
        fail(&t, "alice", ip("198.51.100.7"), 1, 1);
        assert_eq!(t.check("alice", victim, 1), Verdict::Proceed { delay: Duration::from_millis(500) });
        for i in 10..100 {
            fail(&t, "alice", ip(&format!("198.51.100.{i}")), 5, 2);
        }
        // Hundreds of failures later the delay is still the ceiling, and the
        // victim's fresh address is still let through.
        assert_eq!(t.begin_guess("alice", victim, 3), Verdict::Proceed { delay: Duration::from_secs(1) });
        assert_eq!(t.check("bob", victim, 3), GO);
    }

    #[test]
    fn no_policy_delays_beyond_the_ceiling() {
        let t = PreAuthThrottle::new(ThrottlePolicy { max_delay_ms: u64::MAX, ..policy(100, 100, 1) });
        fail(&t, "alice", ip("192.0.2.1"), 90, 0);
        assert_eq!(t.check("alice", ip("192.0.2.2"), 0), Verdict::Proceed { delay: Duration::from_secs(5) });
    }

    #[test]
    fn an_address_spraying_many_names_is_refused_for_all_names() {
        let t = PreAuthThrottle::new(policy(100, 5, 100));
        let a = ip("10.0.0.9");
        for i in 0..5 {
            fail(&t, &format!("user{i}"), a, 1, 0);
        }
        assert!(refused(t.check("someone-new", a, 1)));
        assert_eq!(t.check("someone-new", ip("10.0.0.10"), 1), GO);
    }

    #[test]
    fn a_success_resets_its_own_address_counter_only() {
        let t = PreAuthThrottle::new(policy(3, 6, 100));
        let (home, attacker) = (ip("203.0.113.9"), ip("192.0.2.1"));
        fail(&t, "alice", home, 2, 0);
        fail(&t, "alice", attacker, 2, 0);
        assert_eq!(t.begin_guess("alice", home, 1), GO);
        t.guess_succeeded("alice", home, 1);
        fail(&t, "alice", home, 2, 2);
        assert_eq!(t.check("alice", home, 2), GO, "the typos before the success no longer count");
        fail(&t, "alice", attacker, 1, 2);
        assert!(refused(t.check("alice", attacker, 2)), "another address's success resets nothing of the attacker's");
        // The address counter is not reset: home has failed 4 times in all.
        fail(&t, "bob", home, 2, 3);
        assert!(refused(t.check("carol", home, 3)));
    }

    #[test]
    fn spraying_random_names_cannot_reset_a_victims_counter() {
        let t = PreAuthThrottle::new(ThrottlePolicy { max_tracked: 64, ..policy(3, 20, 5) });
        let (a1, a2) = (ip("192.0.2.1"), ip("192.0.2.2"));
        fail(&t, "victim", a1, 3, 0);
        fail(&t, "victim", a2, 3, 0);
        let victim_delay = t.check("victim", ip("203.0.113.9"), 0);
        assert!(matches!(victim_delay, Verdict::Proceed { delay } if delay > Duration::ZERO));
        // Thousands of random names from thousands of addresses, each as many
        // failures as it is let through.
        for i in 0..5_000u32 {
            let a = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            for j in 0..3 {
                let _ = t.begin_guess(&format!("random-{i}-{j}"), a, 1);
            }
            assert!(t.tracked() <= 64);
        }
        assert!(refused(t.check("victim", a1, 2)));
        assert!(refused(t.check("victim", a2, 2)));
        assert_eq!(t.check("victim", ip("203.0.113.9"), 2), victim_delay);
    }

    #[test]
    fn eviction_drops_the_counter_under_its_limit_that_failed_least_recently() {
        let t = PreAuthThrottle::new(ThrottlePolicy { max_tracked: 9, ..policy(10, 10, 10) });
        let a = ip("192.0.2.1");
        // Nine counters: one pair and one principal per name, and the address.
        for (i, name) in ["first", "second", "third", "fourth"].into_iter().enumerate() {
            fail(&t, name, a, 1, i as u64);
        }
        assert_eq!(t.tracked(), 9);
        // Room for fifth's two new counters comes from the two that failed
        // least recently: first's pair and principal. The address, failing
        // all along, stays with its count.
        fail(&t, "fifth", a, 1, 4);
        assert_eq!(t.tracked(), 9);
        let net = network(a);
        assert_eq!(failures(&t, &Key::Pair("first".into(), net)), None);
        assert_eq!(failures(&t, &Key::Principal("first".into())), None);
        for name in ["second", "third", "fourth", "fifth"] {
            assert_eq!(failures(&t, &Key::Pair(name.into(), net)), Some(1), "{name}");
            assert_eq!(failures(&t, &Key::Principal(name.into())), Some(1), "{name}");
        }
        assert_eq!(failures(&t, &Key::Address(net)), Some(5));
    }

    #[test]
    fn ended_throttles_are_dropped_before_live_counters() {
        let t = PreAuthThrottle::new(ThrottlePolicy { max_tracked: 6, ..policy(2, 100, 100) });
        let a = ip("192.0.2.1");
        fail(&t, "old", a, 2, 0); // pair throttled until 60
        fail(&t, "young", ip("192.0.2.2"), 1, 50);
        assert_eq!(t.tracked(), 6);
        fail(&t, "new", ip("192.0.2.3"), 1, 61);
        assert_eq!(failures(&t, &Key::Pair("old".into(), network(a))), None, "the ended throttle went first");
        assert_eq!(failures(&t, &Key::Pair("young".into(), network(ip("192.0.2.2")))), Some(1));
    }

    #[test]
    fn a_table_full_of_live_throttles_refuses_guesses_it_cannot_count_until_one_ends() {
        let t = PreAuthThrottle::new(ThrottlePolicy { max_tracked: 6, ..policy(1, 1, 1) });
        fail(&t, "a", ip("192.0.2.1"), 1, 0); // three throttles, until 60
        fail(&t, "b", ip("192.0.2.2"), 1, 10); // three more, until 70
        assert_eq!(t.tracked(), 6);
        // A newcomer's guess could not be counted: refused until the first
        // throttle ends, and no live throttle is dropped to make room.
        assert_eq!(t.begin_guess("c", ip("192.0.2.3"), 20), Verdict::Refuse { retry_after: 40 });
        assert_eq!(t.tracked(), 6);
        assert_eq!(t.check("c", ip("192.0.2.3"), 20), GO, "asking for the challenge counts nothing");
        assert!(refused(t.begin_guess("a", ip("192.0.2.1"), 59)));
        // At 60 the first ones end: room again.
        assert_eq!(t.begin_guess("c", ip("192.0.2.3"), 60), GO);
        assert!(refused(t.check("c", ip("192.0.2.3"), 61)));
        assert!(refused(t.check("b", ip("192.0.2.2"), 61)), "b's throttles still live");
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let t = PreAuthThrottle::new(policy(2, 100, 100));
        fail(&t, "alice", ip("2001:db8:1:2::1"), 1, 0);
        fail(&t, "alice", ip("2001:db8:1:2:ffff::9"), 1, 0);
        assert!(refused(t.check("alice", ip("2001:db8:1:2::77"), 0)));
        assert_eq!(t.check("alice", ip("2001:db8:1:3::1"), 0), GO);
        fail(&t, "bob", ip("192.0.2.1"), 1, 0);
        fail(&t, "bob", ip("::ffff:192.0.2.1"), 1, 0);
        assert!(refused(t.check("bob", ip("192.0.2.1"), 0)));
    }

    #[test]
    fn an_unlock_forgets_the_principals_counters_but_not_the_addresses() {
        let t = PreAuthThrottle::new(policy(3, 8, 4));
        let (a1, a2, other) = (ip("192.0.2.1"), ip("2001:db8::1"), ip("203.0.113.9"));
        fail(&t, "alice", a1, 3, 0);
        fail(&t, "alice", a2, 3, 0);
        fail(&t, "bob", a1, 3, 0);
        fail(&t, "bob", a2, 1, 0);
        assert!(refused(t.check("alice", a1, 1)) && refused(t.check("alice", a2, 1)));
        assert!(matches!(t.check("alice", other, 1), Verdict::Proceed { delay } if !delay.is_zero()));
        let before = t.tracked();
        t.unlock("alice", 1);
        // alice's two pairs and her principal counter are gone, and nothing else.
        assert_eq!(t.tracked(), before - 3);
        assert_eq!(t.check("alice", a2, 1), GO);
        assert_eq!(t.check("alice", other, 1), GO, "no longer slowed");
        assert_eq!(failures(&t, &Key::Pair("bob".into(), network(a1))), Some(3), "bob's lock-out stays");
        assert!(refused(t.check("bob", a1, 1)));
        assert_eq!(failures(&t, &Key::Address(network(a1))), Some(6), "the address counter stays");
        // a1 has 6 failures of its 8: two more names and it is refused for all,
        // alice included, unlock or not.
        fail(&t, "alice", a1, 1, 2);
        fail(&t, "carol", a1, 1, 2);
        assert!(refused(t.check("dave", a1, 2)));
        assert!(refused(t.check("alice", a1, 2)), "an unlock does not lift a spraying address's throttle");
        // The indexes agree with the table: eviction still works to the bound.
        let indexed = {
            let table = t.lock();
            table.counting.len() + table.throttled.len()
        };
        assert_eq!(indexed, t.tracked());
        // Unlocking a name with no counters changes nothing.
        let held = t.tracked();
        t.unlock("nobody", 3);
        assert_eq!(t.tracked(), held);
    }

    #[test]
    fn configuration_bounds_are_checked() {
        assert_eq!(ThrottlePolicy::default().validate(), Ok(()));
        for bad in [
            ThrottlePolicy { per_principal_address: 0, ..ThrottlePolicy::default() },
            ThrottlePolicy { per_principal: 0, ..ThrottlePolicy::default() },
            ThrottlePolicy { max_delay_ms: 5_001, ..ThrottlePolicy::default() },
            ThrottlePolicy { window_secs: 0, ..ThrottlePolicy::default() },
            ThrottlePolicy { max_tracked: 10, ..ThrottlePolicy::default() },
            ThrottlePolicy { trusted_proxies: vec![IpAddr::V4(Ipv4Addr::LOCALHOST); 65], ..ThrottlePolicy::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
