//! The failed-pre-authentication throttle shared by every KDC instance
//! through Redis (`--replay-cache-url`), so a lock-out reached at one
//! instance holds at all of them.
//!
//! Same semantics and bounds as the in-process [`crate::throttle`] (read its
//! module documentation): the same three counters, fixed windows from a
//! counter's first failure, a guess counted when let through and taken back
//! when it proves right, at most `max_tracked` counters, room made by
//! dropping an ended throttle or else the counter under its limit that failed
//! least recently, never a live throttle; full of live throttles, a guess
//! that needs a new counter is refused until the first ends. Each operation
//! is one Lua script, so it is atomic across instances as the in-process
//! one is under its lock.
//!
//! Keys, under `kdc-throttle:v1:<namespace>:` (the namespace is `kdc/<realm>`):
//! `c:<hex>` one hash per counter (`start`, `failures`, `seq`; it expires when
//! its window ends); `counting` and `throttled`, sorted sets indexing the
//! counters under and at their limit (by last failure, and by window end
//! then last failure: their sizes are the bound); `seq`; `u:<hex>` one sorted
//! set per principal (a hash of its name) of its (principal, network)
//! counters' keys, scored by window end, so an unlock can find them by name
//! (each pair counter's hash names its set in `u`, so a counter evicted or
//! deleted leaves it; members whose window ended are pruned when the set
//! grows, and the set expires a window after its last write). A counter's key
//! is a hash of what it counts (name and network), so no name appears in
//! Redis.
//!
//! An unlock ([`SharedThrottle::unlock`]) is one script too: the principal's
//! counter and its live pair counters leave both indexes and are deleted at
//! once, for every instance. It fails, never silently succeeds, when Redis
//! cannot be reached. Counters written by a KDC without these sets (before
//! unlock existed) are not found by it; they end with their window.
//!
//! **Unreachable Redis fails closed**: a pre-authentication that cannot be
//! checked is refused with `503` (`replay-cache-unavailable`, `Retry-After:
//! 1`), as its replay check would be; the failure is counted and logged (see
//! [`SharedThrottle::unavailable_count`]). A refund or reset that cannot be
//! written leaves the failure counted (the stricter outcome).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use crate::throttle::{FIRST_DELAY_MS, ThrottlePolicy, Verdict};

/// Shared by the scripts: reading a counter and the index.
/// KEYS: pair, address, principal counters, `counting`, `throttled`, `seq`,
/// the principal's set of pair counters (`u:`).
/// ARGV[1] now (s), ARGV[2] window (s), ARGV[3..5] the three limits.
const COMMON: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
-- A throttle's score orders by (window end, seq) as the in-process index
-- does: end * W + seq mod W (exact in a double while the end in seconds is
-- below 2^33, the year 2242).
local W = 1048576
local function ended_by(score) return math.floor(tonumber(score) / W) <= now end
local function end_of(score) return math.floor(tonumber(score) / W) end
local function live(k)
  local v = redis.call('HMGET', k, 'start', 'failures')
  if not v[1] then return nil end
  local e = tonumber(v[1]) + window
  if now < e then return tonumber(v[2]), e end
  return nil
end
local function unindex(k)
  redis.call('ZREM', KEYS[4], k)
  redis.call('ZREM', KEYS[5], k)
end
local function index(i, k, start, failures, seq)
  if failures >= limits[i] then
    redis.call('ZADD', KEYS[5], (start + window) * W + (seq % W), k)
  else
    redis.call('ZADD', KEYS[4], seq, k)
  end
end
-- Every counter ends within a window of the last write: the index and the
-- sequence can go after a window of quiet (nothing is left behind).
local function keep_index()
  for i = 4, 6 do redis.call('EXPIRE', KEYS[i], window) end
end
local function uncount(i, started)
  local k = KEYS[i]
  local v = redis.call('HMGET', k, 'start', 'failures', 'seq')
  if not v[1] then return end
  local start, failures = tonumber(v[1]), tonumber(v[2])
  if start > started or started >= start + window or failures == 0 then return end
  unindex(k)
  failures = failures - 1
  if failures == 0 then
    redis.call('DEL', k)
    redis.call('ZREM', KEYS[7], k)
  else
    redis.call('HSET', k, 'failures', failures)
    index(i, k, start, failures, tonumber(v[3]))
  end
end
";

/// `check` (ARGV[6] = 0) and `begin_guess` (ARGV[6] = 1). ARGV[7]
/// `max_tracked`, ARGV[8] `per_principal`, ARGV[9] `max_delay_ms`,
/// ARGV[10] first delay (ms). Answers `{0, delay ms, tracked}` (proceed),
/// `{1, retry after s, tracked}` (refused: throttled), `{2, retry after s,
/// tracked}` (refused: full of live throttles).
const VERDICT: &str = r"
local counted = ARGV[6] == '1'
local cap = tonumber(ARGV[7])
local function tracked() return redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5]) end
local refused = nil
for i = 1, 2 do
  local f, e = live(KEYS[i])
  if f and f >= limits[i] and (not refused or e > refused) then refused = e end
end
if refused then return {1, math.max(refused - now, 1), tracked()} end
local function indexed(k)
  return redis.call('ZSCORE', KEYS[4], k) or redis.call('ZSCORE', KEYS[5], k)
end
local function until_room()
  local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if first[2] then return math.max(end_of(first[2]) - now, 1) end
  return 1
end
if counted then
  local missing = 0
  for i = 1, 3 do if not indexed(KEYS[i]) then missing = missing + 1 end end
  local short = missing - math.max(cap - tracked(), 0)
  if short > 0 then
    local ended = math.min(redis.call('ZCOUNT', KEYS[5], '-inf', now * W + W - 1), short)
    if redis.call('ZCARD', KEYS[4]) + ended < short then
      return {2, until_room(), tracked()}
    end
  end
end
local delay = 0
local f = live(KEYS[3])
local per_principal = tonumber(ARGV[8])
if f and f >= per_principal then
  delay = math.min(tonumber(ARGV[10]) * 2 ^ math.min(f - per_principal, 16), tonumber(ARGV[9]))
end
if counted then
  local function make_room()
    local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
    local victim
    if first[2] and ended_by(first[2]) then
      victim = redis.call('ZPOPMIN', KEYS[5])[1]
    else
      victim = redis.call('ZPOPMIN', KEYS[4])[1]
    end
    if not victim then return false end
    -- A pair counter leaves its principal's set (an expired one is pruned
    -- from it by window end instead).
    local set = redis.call('HGET', victim, 'u')
    if set then redis.call('ZREM', set, victim) end
    redis.call('DEL', victim)
    return true
  end
  for i = 1, 3 do
    local k = KEYS[i]
    local v = redis.call('HMGET', k, 'start', 'failures')
    local start, failures = now, 0
    local ok = true
    if v[1] and now < tonumber(v[1]) + window then
      start, failures = tonumber(v[1]), tonumber(v[2])
    elseif not indexed(k) then
      ok = tracked() < cap or make_room()
    end
    if ok then
      unindex(k)
      failures = failures + 1
      local seq = redis.call('INCR', KEYS[6])
      redis.call('HSET', k, 'start', start, 'failures', failures, 'seq', seq)
      -- Relative, so the KDC's clock decides, not Redis's.
      redis.call('EXPIRE', k, math.max(start + window - now, 1))
      index(i, k, start, failures, seq)
      if i == 1 then
        -- Found by name for an unlock: the principal's set, which outlives
        -- every member it holds.
        redis.call('HSET', k, 'u', KEYS[7])
        redis.call('ZADD', KEYS[7], start + window, k)
        redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
        redis.call('EXPIRE', KEYS[7], window)
      end
    end
  end
  keep_index()
end
return {0, delay, tracked()}
";

/// `refund_guess` (ARGV[6] = 0) and `guess_succeeded` (ARGV[6] = 1); ARGV[7]
/// the second the guess began. Answers `{tracked}`.
const TAKE_BACK: &str = r"
local started = tonumber(ARGV[7])
for i = 1, 3 do uncount(i, started) end
if ARGV[6] == '1' then
  local v = redis.call('HMGET', KEYS[1], 'start', 'failures')
  if v[1] then
    local throttled = tonumber(v[2]) >= limits[1]
    if not (throttled and started < tonumber(v[1]) + window) then
      unindex(KEYS[1])
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', KEYS[7], KEYS[1])
    end
  end
end
keep_index()
return {redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5])}
";

/// `unlock`. KEYS: the principal's counter, its set of pair counters
/// (`u:`), `counting`, `throttled`. ARGV[1] now (s). Forgets the principal's
/// counter and its pair counters whose window is live (as the in-process
/// throttle does), out of both indexes. Answers `{tracked}`.
const UNLOCK: &str = r"
local now = tonumber(ARGV[1])
local doomed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
doomed[#doomed + 1] = KEYS[1]
for _, k in ipairs(doomed) do
  redis.call('ZREM', KEYS[3], k)
  redis.call('ZREM', KEYS[4], k)
  redis.call('DEL', k)
end
-- What is left ended already: no later unlock would forget it either.
redis.call('DEL', KEYS[2])
return {redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])}
";

/// Why a shared throttle could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("not a usable Redis URL")]
pub(crate) struct BadRedisUrl;

/// The throttle in Redis (see the module documentation).
pub(crate) struct SharedThrottle {
    policy: ThrottlePolicy,
    conn: ConnectionManager,
    verdict: redis::Script,
    take_back: redis::Script,
    unlock: redis::Script,
    prefix: String,
    command_timeout: Duration,
    tracked: AtomicUsize,
    unavailable: AtomicU64,
    failing: AtomicBool,
    saturated: AtomicBool,
}

impl std::fmt::Debug for SharedThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedThrottle").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// The pre-authentication could not be checked: fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

fn hex16(parts: &[&[u8]]) -> String {
    use std::fmt::Write as _;
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut s = String::with_capacity(32);
    for b in digest.iter().take(16) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl SharedThrottle {
    /// A throttle with `policy` (clamped as [`crate::throttle::PreAuthThrottle::new`]
    /// clamps it) on the Redis at `url`, under `namespace`; connects lazily.
    /// Must be called inside a Tokio runtime.
    pub(crate) fn new(url: &str, namespace: &str, policy: ThrottlePolicy) -> Result<Self, BadRedisUrl> {
        let policy = crate::throttle::PreAuthThrottle::new(policy).policy().clone();
        let client = redis::Client::open(url).map_err(|_| BadRedisUrl)?;
        let command_timeout = Duration::from_millis(500);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|_| BadRedisUrl)?;
        Ok(Self {
            policy,
            conn,
            verdict: redis::Script::new(&format!("{COMMON}{VERDICT}")),
            take_back: redis::Script::new(&format!("{COMMON}{TAKE_BACK}")),
            unlock: redis::Script::new(UNLOCK),
            prefix: format!("kdc-throttle:v1:{namespace}:"),
            command_timeout,
            tracked: AtomicUsize::new(0),
            unavailable: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            saturated: AtomicBool::new(false),
        })
    }

    /// The policy in force (after clamping).
    pub(crate) fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Counters held across the instances, as of this instance's last call.
    pub(crate) fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Calls that failed because Redis could not be reached or did not
    /// answer in time, since start.
    pub(crate) fn unavailable_count(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    fn principal_key(&self, principal: &str) -> String {
        format!("{}c:{}", self.prefix, hex16(&[b"principal", principal.as_bytes()]))
    }

    /// The key of `principal`'s set of (principal, network) counters.
    fn set_key(&self, principal: &str) -> String {
        format!("{}u:{}", self.prefix, hex16(&[b"unlock", principal.as_bytes()]))
    }

    fn invocation<'a>(
        &'a self,
        script: &'a redis::Script,
        principal: &str,
        addr: Option<IpAddr>,
        now_secs: u64,
    ) -> redis::ScriptInvocation<'a> {
        let net = crate::throttle::network_of(addr).to_string();
        let p = &self.policy;
        let mut call =
            script.key(format!("{}c:{}", self.prefix, hex16(&[b"pair", principal.as_bytes(), net.as_bytes()])));
        call.key(format!("{}c:{}", self.prefix, hex16(&[b"address", net.as_bytes()])))
            .key(self.principal_key(principal))
            .key(format!("{}counting", self.prefix))
            .key(format!("{}throttled", self.prefix))
            .key(format!("{}seq", self.prefix))
            .key(self.set_key(principal))
            .arg(now_secs)
            .arg(p.window_secs)
            .arg(p.per_principal_address)
            .arg(p.per_address)
            .arg(p.per_principal);
        call
    }

    async fn run(&self, call: redis::ScriptInvocation<'_>) -> Result<Vec<i64>, Unavailable> {
        let mut conn = self.conn.clone();
        let answer = tokio::time::timeout(self.command_timeout, call.invoke_async::<Vec<i64>>(&mut conn)).await;
        match answer {
            Ok(Ok(v)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("shared pre-auth throttle (Redis) answers again");
                }
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(if e.is_timeout() { "timeout" } else { "redis error" })),
            Err(_) => Err(self.failed("no answer within the command timeout")),
        }
    }

    fn failed(&self, why: &'static str) -> Unavailable {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                "shared pre-auth throttle (Redis) unavailable: refusing pre-authentication (503) until it answers"
            );
        }
        Unavailable
    }

    async fn verdict(
        &self,
        principal: &str,
        addr: Option<IpAddr>,
        now_secs: u64,
        counted: bool,
    ) -> Result<Verdict, Unavailable> {
        let mut call = self.invocation(&self.verdict, principal, addr, now_secs);
        call.arg(u8::from(counted))
            .arg(self.policy.max_tracked)
            .arg(self.policy.per_principal)
            .arg(self.policy.max_delay_ms)
            .arg(FIRST_DELAY_MS);
        let v = self.run(call).await?;
        let (Some(&code), Some(&value), Some(&tracked)) = (v.first(), v.get(1), v.get(2)) else {
            return Err(self.failed("unexpected answer"));
        };
        self.tracked.store(usize::try_from(tracked).unwrap_or(0), Ordering::Relaxed);
        let value = u64::try_from(value).unwrap_or(0);
        let full = code == 2;
        if counted && full != self.saturated.swap(full, Ordering::Relaxed) {
            if full {
                tracing::warn!(tracked, "pre-auth throttle full of live throttles: refusing guesses it cannot count");
            } else {
                tracing::info!("pre-auth throttle has room again");
            }
        }
        Ok(match code {
            0 => Verdict::Proceed { delay: Duration::from_millis(value) },
            _ => Verdict::Refuse { retry_after: value.max(1) },
        })
    }

    /// As [`crate::throttle::PreAuthThrottle::check`].
    pub(crate) async fn check(
        &self,
        principal: &str,
        addr: Option<IpAddr>,
        now_secs: u64,
    ) -> Result<Verdict, Unavailable> {
        self.verdict(principal, addr, now_secs, false).await
    }

    /// As [`crate::throttle::PreAuthThrottle::begin_guess`].
    pub(crate) async fn begin_guess(
        &self,
        principal: &str,
        addr: Option<IpAddr>,
        now_secs: u64,
    ) -> Result<Verdict, Unavailable> {
        self.verdict(principal, addr, now_secs, true).await
    }

    async fn take_back(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64, succeeded: bool) {
        // `now` is not used by these scripts beyond `live`; the start of the
        // guess stands in for it.
        let mut call = self.invocation(&self.take_back, principal, addr, started_secs);
        call.arg(u8::from(succeeded)).arg(started_secs);
        if let Ok(v) = self.run(call).await
            && let Some(&t) = v.first()
        {
            self.tracked.store(usize::try_from(t).unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// As [`crate::throttle::PreAuthThrottle::refund_guess`].
    pub(crate) async fn refund_guess(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64) {
        self.take_back(principal, addr, started_secs, false).await;
    }

    /// As [`crate::throttle::PreAuthThrottle::guess_succeeded`].
    pub(crate) async fn guess_succeeded(&self, principal: &str, addr: Option<IpAddr>, started_secs: u64) {
        self.take_back(principal, addr, started_secs, true).await;
    }

    /// As [`crate::throttle::PreAuthThrottle::unlock`], for every instance
    /// at once (one script). Fails when Redis cannot be reached or did not
    /// answer: the unlock is then not known to have happened.
    pub(crate) async fn unlock(&self, principal: &str, now_secs: u64) -> Result<(), Unavailable> {
        let mut call = self.unlock.key(self.principal_key(principal));
        call.key(self.set_key(principal))
            .key(format!("{}counting", self.prefix))
            .key(format!("{}throttled", self.prefix))
            .arg(now_secs);
        let v = self.run(call).await?;
        let Some(&tracked) = v.first() else { return Err(self.failed("unexpected answer")) };
        self.tracked.store(usize::try_from(tracked).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against the Redis named by `KDC_TEST_REDIS_URL`; without it they say
    //! what they skipped and pass.
    use super::*;
    use crate::throttle::PreAuthThrottle;

    fn redis_url(test: &str) -> Option<String> {
        let url = std::env::var("KDC_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("SKIPPED throttle_redis::{test}: KDC_TEST_REDIS_URL is not set");
        }
        url
    }

    fn namespace() -> String {
        let mut n = [0u8; 8];
        rand::fill(&mut n[..]);
        format!("unit-test-{}", hex16(&[&n[..]]))
    }

    async fn cleanup(url: &str, ns: &str) {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("kdc-throttle:v1:{ns}:*")).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
        }
    }

    fn now_secs() -> u64 {
        use kdc_proto::Clock as _;
        kdc_proto::SystemClock.now().as_secs()
    }

    /// The same random sequence of attempts against the in-process throttle
    /// and the shared one gives the same verdicts and the same count of
    /// counters at every step: small limits and a small table, so lock-outs,
    /// window ends, eviction, the full table and unlocks all happen.
    #[tokio::test]
    async fn the_shared_throttle_decides_as_the_in_process_one_does() {
        let Some(url) = redis_url("the_shared_throttle_decides_as_the_in_process_one_does") else { return };
        let ns = namespace();
        let policy = ThrottlePolicy {
            per_principal_address: 3,
            per_address: 5,
            per_principal: 4,
            window_secs: 60,
            max_tracked: 8,
            max_delay_ms: 2_000,
            trusted_proxies: Vec::new(),
        };
        let local = PreAuthThrottle::new(policy.clone());
        let shared = SharedThrottle::new(&url, &ns, policy).unwrap();
        let names = ["alice", "bob", "carol"];
        let addrs: Vec<Option<IpAddr>> = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2:1"]
            .iter()
            .map(|a| Some(a.parse().unwrap()))
            .collect();
        let mut now = now_secs();
        let mut rng_state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state % n
        };
        let (mut refused, mut proceeded, mut slowed, mut unlocks) = (0, 0, 0, 0);
        for step in 0..1500 {
            // Often in the same second: ties in window ends are ordered alike.
            now += next(3);
            let name = names[usize::try_from(next(3)).unwrap()];
            let addr = addrs[usize::try_from(next(4)).unwrap()];
            let op = next(10);
            if next(20) == 0 {
                local.unlock(name, now);
                shared.unlock(name, now).await.unwrap();
                unlocks += 1;
                assert_eq!(local.tracked(), shared.tracked(), "step {step}: counters held after unlocking {name}");
            }
            let (l, s) = match op {
                0 => (local.check(name, addr, now), shared.check(name, addr, now).await.unwrap()),
                _ => (local.begin_guess(name, addr, now), shared.begin_guess(name, addr, now).await.unwrap()),
            };
            assert_eq!(l, s, "step {step}: {name} from {addr:?} at +{op}");
            if op > 0 && matches!(l, Verdict::Proceed { .. }) {
                match next(6) {
                    0 => {
                        local.guess_succeeded(name, addr, now);
                        shared.guess_succeeded(name, addr, now).await;
                    }
                    1 => {
                        local.refund_guess(name, addr, now);
                        shared.refund_guess(name, addr, now).await;
                    }
                    _ => {}
                }
            }
            match l {
                Verdict::Refuse { .. } => refused += 1,
                Verdict::Proceed { delay } if delay.is_zero() => proceeded += 1,
                Verdict::Proceed { .. } => slowed += 1,
            }
            assert_eq!(local.tracked(), shared.tracked(), "step {step}: counters held");
        }
        assert!(
            refused > 50 && proceeded > 50 && slowed > 20 && unlocks > 30,
            "{refused} refused, {proceeded} let through, {slowed} slowed, {unlocks} unlocks"
        );
        assert_eq!(shared.unavailable_count(), 0);
        cleanup(&url, &ns).await;
    }

    /// An unlock at one instance is seen at another at once: the name's
    /// counters are gone from Redis (and from both indexes), the address's
    /// stay, other names' stay.
    #[tokio::test]
    async fn an_unlock_forgets_the_principals_counters_for_every_instance() {
        let Some(url) = redis_url("an_unlock_forgets_the_principals_counters_for_every_instance") else { return };
        let ns = namespace();
        let policy =
            ThrottlePolicy { per_principal_address: 3, per_address: 8, per_principal: 4, ..Default::default() };
        let (one, two) =
            (SharedThrottle::new(&url, &ns, policy.clone()).unwrap(), SharedThrottle::new(&url, &ns, policy).unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let (a1, a2, other) = (ip("192.0.2.1"), ip("2001:db8::1"), ip("203.0.113.9"));
        let now = now_secs();
        for (name, addr, n) in [("alice", a1, 3), ("alice", a2, 3), ("bob", a1, 3), ("bob", a2, 1)] {
            for _ in 0..n {
                assert!(matches!(one.begin_guess(name, addr, now).await.unwrap(), Verdict::Proceed { .. }));
            }
        }
        assert!(matches!(two.check("alice", a1, now).await.unwrap(), Verdict::Refuse { .. }));
        assert!(
            matches!(two.check("alice", other, now).await.unwrap(), Verdict::Proceed { delay } if !delay.is_zero())
        );
        assert_eq!(one.tracked(), 8);
        one.unlock("alice", now).await.unwrap();
        assert_eq!(one.tracked(), 5);
        let go = Verdict::Proceed { delay: Duration::ZERO };
        for addr in [a1, a2, other] {
            assert_eq!(two.check("alice", addr, now).await.unwrap(), go, "alice from {addr:?}");
        }
        assert!(matches!(two.check("bob", a1, now).await.unwrap(), Verdict::Refuse { .. }), "bob's lock-out stays");
        // a1's own count stays: two more failures and it is refused for all.
        assert_eq!(two.begin_guess("alice", a1, now).await.unwrap(), go);
        assert_eq!(two.begin_guess("carol", a1, now).await.unwrap(), go);
        assert!(matches!(two.check("alice", a1, now).await.unwrap(), Verdict::Refuse { .. }));
        // Nothing of alice's is left in Redis but the address counters, and
        // nothing dangles in the indexes.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = |k: &str| format!("kdc-throttle:v1:{ns}:{k}");
        let alice_pair = key(&format!("c:{}", hex16(&[b"pair", b"alice", b"2001:db8::"])));
        let exists: i64 = redis::cmd("EXISTS").arg(&alice_pair).query_async(&mut conn).await.unwrap();
        assert_eq!(exists, 0);
        let mut indexed: Vec<String> = Vec::new();
        for index in ["counting", "throttled"] {
            let members: Vec<String> =
                redis::cmd("ZRANGE").arg(key(index)).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
            indexed.extend(members);
        }
        for k in &indexed {
            let exists: i64 = redis::cmd("EXISTS").arg(k).query_async(&mut conn).await.unwrap();
            assert_eq!(exists, 1, "{k} indexed but gone");
        }
        cleanup(&url, &ns).await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_closed() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t = SharedThrottle::new(&format!("redis://127.0.0.1:{port}"), "x", ThrottlePolicy::default()).unwrap();
        let a = Some("192.0.2.1".parse().unwrap());
        assert_eq!(t.check("alice", a, 10).await, Err(Unavailable));
        assert_eq!(t.begin_guess("alice", a, 10).await, Err(Unavailable));
        assert_eq!(t.unlock("alice", 10).await, Err(Unavailable), "an unlock never silently succeeds");
        assert_eq!(t.unavailable_count(), 3);
        assert!(SharedThrottle::new("not a url", "x", ThrottlePolicy::default()).is_err());
    }
}
