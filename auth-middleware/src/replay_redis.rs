//! A replay cache in Redis, shared by every instance of a service (and by
//! every KDC instance), so a replay against a sibling instance is refused too.
//!
//! **One round trip per check.** A Lua script run with `EVALSHA` (loaded once
//! per Redis start) does, atomically: the replay check and the insert
//! (`SET key 1 PX ttl`, unless it exists), the per-principal cap, and the
//! data-loss check below. Keys are namespaced:
//!
//! - `ticket-replay:v1:<namespace>:a:<hex of the 16-byte replay key>`: one
//!   string per authenticator, with a TTL that ends one millisecond after
//!   the last instant it could be accepted (`remember_until`, inclusive);
//! - `ticket-replay:v1:<namespace>:p:<hex of SHA-256(principal), 16 bytes>`:
//!   a sorted set per principal of its live entries (score: `remember_until`),
//!   swept of ended ones on each insert, for the per-principal cap; it expires
//!   with its last entry;
//! - `ticket-replay:v1:<namespace>:since`: since when this Redis vouches for
//!   what it accepted, ms (no TTL; see "Data loss").
//!
//! The namespace is the service principal (`TicketAuthBuilder` sets it), so
//! services on one Redis never see each other's entries.
//!
//! **What bounds Redis's memory.** Every key expires at the end of its
//! acceptance window (at most twice the maximum skew after it was written),
//! so the live set is the authenticators accepted in the last window, at most
//! `per_principal` of them per principal. The total is bounded by Redis's own
//! `maxmemory` with `maxmemory-policy noeviction`: when it is reached, the
//! script's writes fail and the check fails closed (`503`). An evicting policy
//! (`allkeys-lru`, `volatile-ttl`, …, the default of some managed Redis
//! offerings) would forget live entries and let replays through, so the
//! cache checks the policy before it vouches for anything (at start, and
//! whenever it learns a new horizon) and, under any other policy, fails
//! every check closed and logs why (`docs/DEPLOYMENT.md` sizes it).
//!
//! **Fail closed.** A Redis that cannot be reached, answers late (the command
//! timeout) or refuses the write makes the check return
//! [`ReplayRefusal::Unavailable`] (the layer answers `503` with
//! `Retry-After`). Each such failure is counted
//! ([`ReplayCache::unavailable_count`]); the first of a run is logged as a
//! warning (the error's kind, never the URL, which may hold a password), and
//! the recovery as info. Reconnection is automatic (a connection manager with
//! backoff): no restart is needed when Redis comes back.
//!
//! **Data loss.** A Redis that restarts empty (no persistence) has forgotten
//! what it accepted: an authenticator accepted just before could be replayed
//! until its window closes. The `since` key detects it. When an instance
//! (at start) or a check finds it missing, it is set to when this Redis
//! process started (`now` less its uptime), or to 0 when that was longer ago
//! than the longest acceptance window (`max_window`: whatever was lost has
//! expired). A first use of a fresh Redis cannot be told from a restart
//! that lost what was accepted while no instance ran, so it is treated as
//! one: the warm-up this costs happens only in the first window after a
//! Redis start. Every instance then refuses as stale what predates it
//! ([`ReplayCache::remembers_since`]), as after a restart of an in-memory
//! cache, until the lost window has passed; the request that finds a `since`
//! other than the one its instance knew is refused with `503` (`Retry-After:
//! 1`), since it was checked against the old one. Not detected: a Redis
//! restored from an older snapshot (it keeps an old `since`; stock
//! `redis.conf` snapshots with `save`), keys deleted while it runs
//! (`FLUSHDB`), a policy changed to an evicting one after the check. Run it
//! with `appendonly yes` or without persistence, `noeviction`, and never
//! flush it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kdc_proto::{Clock as _, UnixMillis};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use crate::replay::{ReplayCache, ReplayEntry, ReplayRefusal};

/// When this Redis began to remember, computed where `since` is missing: the
/// start of the Redis process (`now - uptime`), or 0 when it has been up
/// longer than the longest acceptance window (whatever a restart lost has
/// expired since). ARGV: now (ms), longest window (ms).
macro_rules! horizon_lua {
    () => {
        r"
local function horizon(now, window)
  local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)')) or 0
  if up * 1000 >= tonumber(window) then
    return '0'
  end
  return string.format('%.0f', tonumber(now) - up * 1000)
end
-- Whether this Redis keeps every key until it expires: only with
-- `maxmemory-policy noeviction` (an evicting policy forgets live entries,
-- `since` survives, and replays would get through unnoticed).
local function eviction_policy()
  return string.match(redis.call('INFO', 'memory'), 'maxmemory_policy:([%w%-]+)') or 'unknown'
end
"
    };
}

/// The check-and-insert script. KEYS: entry, principal set, `since`. ARGV:
/// now (ms), TTL (ms), per-principal cap (0: none), `remember_until` (ms),
/// the `since` this instance knows (empty: none yet), the entry's member
/// name, the longest acceptance window (ms). Answers `{code, since[, first
/// end]}`: 0 recorded, 1 replay, 2 principal full (with the end of its
/// earliest entry), 3 `since` differs from the one known (nothing recorded),
/// 4 (with the policy) this Redis may evict keys, so it vouches for nothing.
/// An instance adopts a `since` only after the policy check.
const CHECK_AND_INSERT: &str = concat!(
    horizon_lua!(),
    r"
local since = redis.call('GET', KEYS[3])
if not since then
  since = horizon(ARGV[1], ARGV[7])
  redis.call('SET', KEYS[3], since)
end
if since ~= ARGV[5] then
  local policy = eviction_policy()
  if policy ~= 'noeviction' then
    return {4, '0', policy}
  end
  return {3, since}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {1, since}
end
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
  if redis.call('ZCARD', KEYS[2]) >= cap then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, since, first[2]}
  end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
if cap > 0 then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return {0, since}
"
);

/// Reads `since` at an instance's start (see "Data loss"). A missing one is
/// set as a check would set it ([`horizon_lua`]): from when this Redis
/// started, or 0 when that is longer ago than the longest acceptance window.
/// An empty Redis cannot tell a first use from a restart that lost what a
/// service accepted while no instance of it ran, so it is taken for the
/// latter, which costs a warm-up only in the first window after a Redis
/// start. Refuses (code 4, with the policy) a Redis that may evict keys.
/// KEYS: `since`. ARGV: now (ms), longest window (ms). Answers `{0, since}`.
const READ_SINCE: &str = concat!(
    horizon_lua!(),
    r"
local policy = eviction_policy()
if policy ~= 'noeviction' then
  return {4, '0', policy}
end
local since = redis.call('GET', KEYS[1])
if not since then
  since = horizon(ARGV[1], ARGV[2])
  redis.call('SET', KEYS[1], since)
end
return {0, since}
"
);

/// Settings of a [`RedisReplayCache`].
#[derive(Debug, Clone)]
pub struct RedisReplayConfig {
    /// Prefix of every key after `ticket-replay:v1:`: the service principal,
    /// so services sharing a Redis keep apart. Instances of one service use
    /// the same.
    pub namespace: String,
    /// Most live entries one principal may hold (0: no cap). Defaults to
    /// [`crate::InMemoryReplayCache::DEFAULT_PER_PRINCIPAL`].
    pub per_principal: usize,
    /// Longest wait to connect. Defaults to 1 s.
    pub connect_timeout: Duration,
    /// Longest wait for one check, reconnection included: past it the check
    /// fails closed. Defaults to 500 ms.
    pub command_timeout: Duration,
    /// Multiplexed connections, used in turn. Defaults to 2.
    pub connections: usize,
    /// The longest an authenticator can stay acceptable: twice the maximum
    /// clock skew (its timestamp may be a skew ahead, and it is accepted
    /// until a skew after it). Decides whether a Redis restart may have lost
    /// entries still live. Defaults to 600 s (the default 300 s skew).
    pub max_window: Duration,
}

impl RedisReplayConfig {
    /// The defaults, under `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            per_principal: crate::InMemoryReplayCache::DEFAULT_PER_PRINCIPAL,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(500),
            connections: 2,
            max_window: Duration::from_secs(600),
        }
    }
}

/// Why a Redis replay cache could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisReplayError {
    /// The URL is not a Redis URL (`redis://[user:password@]host[:port][/db]`).
    /// The URL itself is left out: it may hold a password.
    #[error("not a usable Redis URL (expected redis://[user:password@]host:port[/db])")]
    BadUrl,
    /// The connection could not be prepared.
    #[error("Redis connection: {0}")]
    Connection(String),
}

/// The replay cache in Redis (see the module documentation).
pub struct RedisReplayCache {
    first: ConnectionManager,
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    script: redis::Script,
    since_script: redis::Script,
    prefix: String,
    per_principal: usize,
    command_timeout: Duration,
    max_window_ms: u64,
    /// The `since` last read from Redis, ms; `u64::MAX` before the first read.
    since: AtomicU64,
    unavailable: AtomicU64,
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisReplayCache").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

const NO_SINCE: u64 = u64::MAX;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What a failed Redis call was, for the log: its kind and code, never its
/// text (which could echo a URL).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".to_owned()
    } else {
        format!("{:?}{}", e.kind(), e.code().map(|c| format!(" ({c})")).unwrap_or_default())
    }
}

enum Failure {
    Redis(redis::RedisError),
    Timeout,
    Answer,
    /// Redis's `maxmemory-policy` may evict keys (named).
    Evicting(String),
}

impl RedisReplayCache {
    /// A cache on the Redis at `url`, connecting lazily: it can be built while
    /// Redis is down (checks fail closed until it is up). Must be called
    /// inside a Tokio runtime.
    pub fn new(url: &str, config: RedisReplayConfig) -> Result<Self, RedisReplayError> {
        let client = redis::Client::open(url).map_err(|_| RedisReplayError::BadUrl)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Reconnect quickly and keep trying on later requests: each
            // failed request triggers a new attempt.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connect = || {
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                .map_err(|e| RedisReplayError::Connection(describe(&e)))
        };
        let first = connect()?;
        let connections = (1..config.connections.max(1)).map(|_| connect()).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            first,
            connections,
            next: AtomicUsize::new(0),
            script: redis::Script::new(CHECK_AND_INSERT),
            since_script: redis::Script::new(READ_SINCE),
            prefix: format!("ticket-replay:v1:{}:", config.namespace),
            per_principal: config.per_principal,
            command_timeout: config.command_timeout,
            max_window_ms: u64::try_from(config.max_window.as_millis()).unwrap_or(u64::MAX),
            since: AtomicU64::new(NO_SINCE),
            unavailable: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// Reads since when this Redis vouches for what it accepted (see "Data
    /// loss"), so the first check is not refused for learning it, and checks
    /// that the Redis keeps every key until it expires (`maxmemory-policy
    /// noeviction`; otherwise every check fails closed, and the log says
    /// why). Call it once at start; a Redis down then is not an error (the
    /// first check learns it, conservatively).
    pub async fn warm_up(&self) -> bool {
        let mut conn = self.connection();
        let mut call = self.since_script.key(self.since_key());
        call.arg(kdc_proto::SystemClock.now().0).arg(self.max_window_ms);
        let read = tokio::time::timeout(self.command_timeout, call.invoke_async::<Vec<redis::Value>>(&mut conn)).await;
        let answer = match read {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.failed(&Failure::Redis(e));
                return false;
            }
            Err(_) => {
                self.failed(&Failure::Timeout);
                return false;
            }
        };
        match (as_u64(answer.first()), as_u64(answer.get(1))) {
            (Some(0), Some(since)) => {
                self.since.store(since, Ordering::Relaxed);
                self.succeeded();
                true
            }
            (Some(4), _) => {
                self.failed(&Failure::Evicting(as_text(answer.get(2))));
                false
            }
            _ => {
                self.failed(&Failure::Answer);
                false
            }
        }
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % (self.connections.len() + 1);
        match i.checked_sub(1) {
            Some(j) => self.connections.get(j).unwrap_or(&self.first).clone(),
            None => self.first.clone(),
        }
    }

    fn since_key(&self) -> String {
        format!("{}since", self.prefix)
    }

    fn failed(&self, f: &Failure) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            let why = match f {
                Failure::Redis(e) => describe(e),
                Failure::Timeout => "no answer within the command timeout".to_owned(),
                Failure::Answer => "unexpected answer".to_owned(),
                Failure::Evicting(policy) => format!(
                    "maxmemory-policy is {policy}: a replay cache needs noeviction (an evicting policy forgets live \
                     entries and lets replays through)"
                ),
            };
            tracing::warn!(
                cache = %self.prefix,
                error = %why,
                "Redis replay cache unavailable: refusing authenticated requests (503) until it answers"
            );
        }
    }

    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(cache = %self.prefix, "Redis replay cache answers again");
        }
    }

    async fn run(&self, e: &ReplayEntry<'_>) -> Result<Vec<redis::Value>, Failure> {
        let key_hex = hex(&e.key);
        let principal = hex(Sha256::digest(e.principal.as_bytes()).get(..16).unwrap_or_default());
        let ttl = e.remember_until.0.saturating_sub(e.now.0).saturating_add(1);
        let known = match self.since.load(Ordering::Relaxed) {
            NO_SINCE => String::new(),
            s => s.to_string(),
        };
        let mut call = self.script.key(format!("{}a:{key_hex}", self.prefix));
        call.key(format!("{}p:{principal}", self.prefix))
            .key(self.since_key())
            .arg(e.now.0)
            .arg(ttl)
            .arg(self.per_principal)
            .arg(e.remember_until.0)
            .arg(known)
            .arg(key_hex)
            .arg(self.max_window_ms);
        let mut conn = self.connection();
        match tokio::time::timeout(self.command_timeout, call.invoke_async::<Vec<redis::Value>>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Redis(e)),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

fn as_text(v: Option<&redis::Value>) -> String {
    match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => "unknown".to_owned(),
    }
}

fn as_u64(v: Option<&redis::Value>) -> Option<u64> {
    match v? {
        redis::Value::Int(i) => u64::try_from(*i).ok(),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

#[async_trait]
impl ReplayCache for RedisReplayCache {
    async fn check_and_insert(&self, e: ReplayEntry<'_>) -> Result<(), ReplayRefusal> {
        let answer = match self.run(&e).await {
            Ok(a) => a,
            Err(f) => {
                self.failed(&f);
                return Err(ReplayRefusal::Unavailable);
            }
        };
        let (Some(code), Some(since)) = (as_u64(answer.first()), as_u64(answer.get(1))) else {
            self.failed(&Failure::Answer);
            return Err(ReplayRefusal::Unavailable);
        };
        if code == 4 {
            // A Redis that may evict live entries vouches for nothing.
            self.failed(&Failure::Evicting(as_text(answer.get(2))));
            return Err(ReplayRefusal::Unavailable);
        }
        self.succeeded();
        match code {
            0 => Ok(()),
            1 => Err(ReplayRefusal::Replay),
            2 => {
                let first_end = as_u64(answer.get(2)).unwrap_or(e.now.0);
                Err(ReplayRefusal::Full {
                    retry_after: first_end.saturating_sub(e.now.0).saturating_add(1).div_ceil(1000).max(1),
                })
            }
            _ => {
                // Redis's memory began later than this instance knew (it
                // restarted empty, or this is the first check): learn it,
                // and refuse this request, which was checked against the old
                // horizon. Its retry is checked against the new one.
                let old = self.since.swap(since, Ordering::Relaxed);
                if old != NO_SINCE {
                    tracing::warn!(
                        cache = %self.prefix,
                        since = since,
                        "the shared replay cache's horizon changed (Redis restarted empty): authenticators whose \
                         window opened before it are refused as stale"
                    );
                }
                Err(ReplayRefusal::Unavailable)
            }
        }
    }

    fn remembers_since(&self) -> Option<UnixMillis> {
        match self.since.load(Ordering::Relaxed) {
            // Not known yet: vouch for nothing older than the far future
            // would refuse everything; `warm_up` or the first check sets it,
            // and that first check is refused (`Unavailable`) anyway.
            NO_SINCE => None,
            s => Some(UnixMillis(s)),
        }
    }

    /// Not known locally (the entries live in Redis): 0. Redis's `INFO
    /// keyspace` and `DBSIZE` count them.
    fn len(&self) -> usize {
        0
    }

    fn unavailable_count(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }
}

/// Builds a shared cache and reads its horizon (see
/// [`RedisReplayCache::warm_up`]).
pub async fn connect(url: &str, config: RedisReplayConfig) -> Result<Arc<RedisReplayCache>, RedisReplayError> {
    let cache = Arc::new(RedisReplayCache::new(url, config)?);
    cache.warm_up().await;
    Ok(cache)
}

#[cfg(test)]
mod tests {
    //! These run against the Redis named by `KDC_TEST_REDIS_URL`; without it
    //! they say what they skipped and pass.
    use super::*;

    fn redis_url(test: &str) -> Option<String> {
        let url = std::env::var("KDC_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("SKIPPED {test}: KDC_TEST_REDIS_URL is not set");
        }
        url
    }

    fn namespace() -> String {
        let mut n = [0u8; 8];
        rand::fill(&mut n[..]);
        format!("unit-test-{}", hex(&n))
    }

    /// Removes what a test left (its entries expire; `since` does not).
    async fn cleanup(url: &str, ns: &str) {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("ticket-replay:v1:{ns}:*")).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
        }
    }

    fn entry(key: u8, principal: &str, until: u64, now: u64) -> ReplayEntry<'_> {
        ReplayEntry { key: [key; 16], principal, remember_until: UnixMillis(until), now: UnixMillis(now) }
    }

    fn now_ms() -> u64 {
        use kdc_proto::Clock as _;
        kdc_proto::SystemClock.now().0
    }

    #[tokio::test]
    async fn a_replay_is_refused_by_a_second_instance_and_forgotten_after_its_window() {
        let Some(url) = redis_url("a_replay_is_refused_by_a_second_instance") else { return };
        let ns = namespace();
        let now = now_ms();
        let a = connect(&url, RedisReplayConfig::new(&ns)).await.unwrap();
        let b = connect(&url, RedisReplayConfig::new(&ns)).await.unwrap();
        assert!(a.remembers_since().is_some(), "warm-up read the horizon");
        assert_eq!(a.remembers_since(), b.remembers_since());
        assert_eq!(a.check_and_insert(entry(1, "alice", now + 300, now)).await, Ok(()));
        assert_eq!(b.check_and_insert(entry(1, "alice", now + 300, now)).await, Err(ReplayRefusal::Replay));
        assert_eq!(a.check_and_insert(entry(1, "alice", now + 300, now)).await, Err(ReplayRefusal::Replay));
        // Another namespace (another service) does not see it.
        let other = connect(&url, RedisReplayConfig::new(namespace())).await.unwrap();
        assert_eq!(other.check_and_insert(entry(1, "alice", now + 300, now)).await, Ok(()));
        // The TTL ends just after the window: forgotten then, not before.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let later = now_ms();
        assert_eq!(a.check_and_insert(entry(1, "alice", later + 300, later)).await, Ok(()));
        assert_eq!(a.unavailable_count(), 0);
        cleanup(&url, &ns).await;
    }

    #[tokio::test]
    async fn one_principal_is_capped_and_others_are_not() {
        let Some(url) = redis_url("one_principal_is_capped_and_others_are_not") else { return };
        let ns = namespace();
        let now = now_ms();
        let config = RedisReplayConfig { per_principal: 3, ..RedisReplayConfig::new(&ns) };
        let c = connect(&url, config).await.unwrap();
        for k in 1..=3 {
            assert_eq!(c.check_and_insert(entry(k, "flood", now + 2_500, now)).await, Ok(()));
        }
        assert_eq!(
            c.check_and_insert(entry(4, "flood", now + 2_500, now)).await,
            Err(ReplayRefusal::Full { retry_after: 3 })
        );
        assert_eq!(c.check_and_insert(entry(5, "honest", now + 2_500, now)).await, Ok(()));
        // A replay is still a replay, not "full".
        assert_eq!(c.check_and_insert(entry(1, "flood", now + 2_500, now)).await, Err(ReplayRefusal::Replay));
        // Once the first entries' windows end, room again.
        let end = now + 2_501;
        assert_eq!(c.check_and_insert(entry(4, "flood", end + 1000, end)).await, Ok(()));
        cleanup(&url, &ns).await;
    }

    async fn uptime_ms(url: &str) -> u64 {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
        let line = info.lines().find_map(|l| l.strip_prefix("uptime_in_seconds:")).unwrap();
        line.trim().parse::<u64>().unwrap() * 1000
    }

    #[tokio::test]
    async fn a_redis_that_lost_its_data_while_serving_vouches_only_from_its_start() {
        let Some(url) = redis_url("a_redis_that_lost_its_data_while_serving") else { return };
        let ns = namespace();
        let now = now_ms();
        // A window longer than Redis has been up: what it lost may be live.
        let long = RedisReplayConfig { max_window: Duration::from_secs(10_000_000), ..RedisReplayConfig::new(&ns) };
        let c = connect(&url, long.clone()).await.unwrap();
        // A first use cannot be told from a restart that lost what was
        // accepted while no instance ran: it vouches from Redis's start too.
        let first = c.remembers_since().unwrap().0;
        let up = uptime_ms(&url).await;
        assert!(first <= now && first + up + 2_000 >= now, "first use: since {first}, now {now}, up {up}");
        assert_eq!(c.check_and_insert(entry(1, "a", now + 10_000, now)).await, Ok(()));
        // What a restart without persistence does to the namespace.
        cleanup(&url, &ns).await;
        let later = now + 5;
        // The request that finds the loss is refused (it was checked against
        // the old horizon); the horizon moves to Redis's start.
        assert_eq!(c.check_and_insert(entry(1, "a", later + 10_000, later)).await, Err(ReplayRefusal::Unavailable));
        let up = uptime_ms(&url).await;
        let since = c.remembers_since().unwrap().0;
        assert!(since <= later && since + up + 2_000 >= later, "since {since}, now {later}, up {up}");
        assert_eq!(c.check_and_insert(entry(1, "a", later + 10_000, later)).await, Ok(()));
        // A second instance learns it at start.
        let d = connect(&url, long).await.unwrap();
        assert_eq!(d.remembers_since(), Some(UnixMillis(since)));
        assert_eq!(d.check_and_insert(entry(1, "a", later + 10_000, later)).await, Err(ReplayRefusal::Replay));
        // With a window shorter than Redis's uptime, nothing lost is live:
        // the horizon is 0.
        cleanup(&url, &ns).await;
        let short = RedisReplayConfig { max_window: Duration::from_millis(1), ..RedisReplayConfig::new(&ns) };
        let e = RedisReplayCache::new(&url, short).unwrap();
        e.since.store(since, Ordering::Relaxed);
        assert_eq!(e.check_and_insert(entry(2, "a", later + 10_000, later)).await, Err(ReplayRefusal::Unavailable));
        assert_eq!(e.remembers_since(), Some(UnixMillis(0)));
        assert_eq!(c.unavailable_count() + e.unavailable_count(), 0, "a horizon change is not an outage");
        cleanup(&url, &ns).await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_closed_and_is_counted() {
        // A port nothing listens on: no Redis needed for this one.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = RedisReplayConfig {
            connect_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(300),
            ..RedisReplayConfig::new("unreachable")
        };
        let c = connect(&format!("redis://127.0.0.1:{port}"), config).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(c.check_and_insert(entry(1, "a", 1000, 1)).await, Err(ReplayRefusal::Unavailable));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(c.unavailable_count() >= 2, "warm-up and check both counted");
        assert!(matches!(
            RedisReplayCache::new("http://x", RedisReplayConfig::new("x")),
            Err(RedisReplayError::BadUrl)
        ));
    }
}
