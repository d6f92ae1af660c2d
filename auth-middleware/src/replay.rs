//! The replay cache: every authenticator is accepted once within the skew
//! window. A trait so instances of a service can share one
//! ([`crate::replay_redis`]); the in-memory default is sharded and bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use kdc_proto::UnixMillis;

/// One authenticator to remember.
#[derive(Debug, Clone, Copy)]
pub struct ReplayEntry<'a> {
    /// A fixed-size keyed hash of the authenticator's tag.
    pub key: [u8; 16],
    /// Whose it is (for the per-principal cap).
    pub principal: &'a str,
    /// The last instant it could still be accepted (the close of its
    /// [`kdc_proto::AcceptanceWindow`]): it is remembered through this
    /// instant, inclusive, and forgotten only after it.
    pub remember_until: UnixMillis,
    /// Now.
    pub now: UnixMillis,
}

/// Why an entry was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// Seen before: a replay.
    Replay,
    /// No room (for everyone, or for this principal): fail closed. Retry after
    /// the given number of seconds.
    Full {
        /// Seconds.
        retry_after: u64,
    },
    /// The cache cannot be reached: fail closed.
    Unavailable,
}

/// A replay cache.
#[async_trait]
pub trait ReplayCache: Send + Sync + 'static {
    /// Records the entry unless it was seen before or there is no room.
    async fn check_and_insert(&self, entry: ReplayEntry<'_>) -> Result<(), ReplayRefusal>;

    /// The earliest authenticator time this cache can vouch for. A volatile
    /// cache returns its creation time: authenticators older than that may
    /// have been seen by a previous process and are refused as stale.
    fn remembers_since(&self) -> Option<UnixMillis>;

    /// Entries currently held.
    fn len(&self) -> usize;

    /// Whether the cache holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that failed because the cache could not be reached or did not
    /// answer in time (each answered `503`), since start. Always 0 for an
    /// in-process cache.
    fn unavailable_count(&self) -> u64 {
        0
    }
}

const SHARDS: usize = 32;

/// The principal hash of restored entries: it has no per-principal count, so
/// sweeping them decrements nothing.
const RESTORED: u64 = u64::MAX;

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<[u8; 16], (u64, u64)>, // key -> (remember_until ms, principal hash)
    per_principal: HashMap<u64, u32>,
    earliest_expiry: u64,
}

impl Shard {
    /// Forgets entries whose window has closed (`remember_until < now`).
    fn sweep(&mut self, now: u64) {
        if self.earliest_expiry >= now {
            return;
        }
        let per_principal = &mut self.per_principal;
        let mut earliest = u64::MAX;
        self.entries.retain(|_, (exp, p)| {
            if *exp >= now {
                earliest = earliest.min(*exp);
                true
            } else {
                if let Some(c) = per_principal.get_mut(p) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        per_principal.remove(p);
                    }
                }
                false
            }
        });
        self.earliest_expiry = earliest;
    }
}

/// The in-memory replay cache: 32 shards behind their own locks, bounded in
/// total and per principal. An entry is never evicted while inside its
/// window: when there is no room the cache refuses (`503`), never forgets.
#[derive(Debug)]
pub struct InMemoryReplayCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    per_principal_per_shard: u32,
    len: AtomicUsize,
    remembers_since: Option<UnixMillis>,
    principal_hasher: std::collections::hash_map::RandomState,
}

impl InMemoryReplayCache {
    /// A cache of at most `capacity` entries, at most `per_principal` of them
    /// from one principal, created at `now`: it vouches for nothing before
    /// `now`, so authenticators whose acceptance window opened earlier are
    /// refused as stale (for the first max-skew after a start).
    pub fn new(capacity: usize, per_principal: usize, now: UnixMillis) -> Self {
        Self::with_history(capacity, per_principal, Some(now))
    }

    /// Like [`Self::new`], remembering since `remembers_since`: `None` when
    /// no earlier process can have accepted an authenticator this one would
    /// not see (the first start of a service; see
    /// [`crate::TicketAuthBuilder::replay_state_file`]).
    pub fn with_history(capacity: usize, per_principal: usize, remembers_since: Option<UnixMillis>) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let per_principal_per_shard = u32::try_from(per_principal.div_ceil(SHARDS).max(1)).unwrap_or(u32::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            per_principal_per_shard,
            len: AtomicUsize::new(0),
            remembers_since,
            principal_hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The default: two million entries (about 80 MiB at most), at most half
    /// of them from one principal. With the 300 s skew window that sustains
    /// about 6 600 requests per second per service instance, 3 300 from any
    /// one principal; size it with [`Self::new`] for more.
    pub fn with_defaults(now: UnixMillis) -> Self {
        Self::new(Self::DEFAULT_CAPACITY, Self::DEFAULT_PER_PRINCIPAL, now)
    }

    /// The default capacity, entries.
    pub const DEFAULT_CAPACITY: usize = 2_000_000;
    /// The default share of one principal, entries.
    pub const DEFAULT_PER_PRINCIPAL: usize = 1_000_000;

    /// Every entry still inside its window at `now`, for a snapshot.
    pub fn live_entries(&self, now: UnixMillis) -> Vec<([u8; 16], UnixMillis)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(
                shard.entries.iter().filter(|(_, (until, _))| *until >= now.0).map(|(k, (u, _))| (*k, UnixMillis(*u))),
            );
        }
        out
    }

    /// Adds entries from a snapshot (they count toward the capacity, not
    /// toward any principal's share: whose they were is not kept). Returns
    /// how many live entries found no room (the snapshot cannot then be
    /// trusted as complete).
    pub fn restore(&self, entries: impl IntoIterator<Item = ([u8; 16], UnixMillis)>, now: UnixMillis) -> usize {
        let mut dropped = 0;
        for (key, until) in entries {
            if until < now {
                continue;
            }
            let Some(lock) = self.shards.get(usize::from(key[0]) % SHARDS) else {
                dropped += 1;
                continue;
            };
            let mut shard = lock.lock().unwrap_or_else(|p| p.into_inner());
            if shard.entries.len() >= self.per_shard {
                dropped += 1;
                continue;
            }
            if shard.entries.insert(key, (until.0, RESTORED)).is_none() {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            shard.earliest_expiry = shard.earliest_expiry.min(until.0);
        }
        dropped
    }

    fn principal_hash(&self, principal: &str) -> u64 {
        // SipHash with a per-process random key: flooding clients cannot
        // aim collisions at another principal's counter.
        use std::hash::BuildHasher;
        self.principal_hasher.hash_one(principal).min(RESTORED - 1)
    }
}

#[async_trait]
impl ReplayCache for InMemoryReplayCache {
    async fn check_and_insert(&self, e: ReplayEntry<'_>) -> Result<(), ReplayRefusal> {
        let idx = usize::from(e.key[0]) % SHARDS;
        let lock = self.shards.get(idx).ok_or(ReplayRefusal::Unavailable)?;
        let p = self.principal_hash(e.principal);
        let mut shard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = shard.entries.len();
        shard.sweep(e.now.0);
        if shard.entries.get(&e.key).is_some_and(|(exp, _)| *exp >= e.now.0) {
            self.len.fetch_sub(before - shard.entries.len(), Ordering::Relaxed);
            return Err(ReplayRefusal::Replay);
        }
        let retry_after = shard.earliest_expiry.saturating_sub(e.now.0).saturating_add(1).div_ceil(1000).max(1);
        let full = shard.entries.len() >= self.per_shard
            || shard.per_principal.get(&p).is_some_and(|c| *c >= self.per_principal_per_shard);
        if full {
            self.len.fetch_sub(before - shard.entries.len(), Ordering::Relaxed);
            return Err(ReplayRefusal::Full { retry_after });
        }
        shard.entries.insert(e.key, (e.remember_until.0, p));
        *shard.per_principal.entry(p).or_insert(0) += 1;
        shard.earliest_expiry = shard.earliest_expiry.min(e.remember_until.0);
        let after = shard.entries.len();
        drop(shard);
        if after >= before {
            self.len.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.len.fetch_sub(before - after, Ordering::Relaxed);
        }
        Ok(())
    }

    fn remembers_since(&self) -> Option<UnixMillis> {
        self.remembers_since
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: [u8; 16], principal: &str, exp: u64, now: u64) -> ReplayEntry<'_> {
        ReplayEntry { key, principal, remember_until: UnixMillis(exp), now: UnixMillis(now) }
    }

    fn key(i: u32) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[tokio::test]
    async fn replay_inside_the_window_and_expiry_after_it() {
        let c = InMemoryReplayCache::new(1000, 1000, UnixMillis(0));
        assert_eq!(c.check_and_insert(entry(key(1), "a", 100, 0)).await, Ok(()));
        assert_eq!(c.check_and_insert(entry(key(1), "a", 100, 99)).await, Err(ReplayRefusal::Replay));
        // The last instant of the window is still inside it.
        assert_eq!(c.check_and_insert(entry(key(1), "a", 100, 100)).await, Err(ReplayRefusal::Replay));
        assert_eq!(c.len(), 1);
        // key(33) lands in the same shard as key(1): touching it sweeps key(1).
        assert_eq!(c.check_and_insert(entry(key(33), "a", 300, 150)).await, Ok(()));
        assert_eq!(c.len(), 1, "the expired entry was swept");
        assert_eq!(c.check_and_insert(entry(key(1), "a", 400, 151)).await, Ok(()), "forgotten after its window");
    }

    #[tokio::test]
    async fn never_evicts_inside_the_window_fails_closed_instead() {
        let c = InMemoryReplayCache::new(SHARDS, 1_000_000, UnixMillis(0));
        // Fill shard 0 (keys whose first byte is 0 mod SHARDS).
        assert_eq!(c.check_and_insert(entry([0u8; 16], "a", 1000, 0)).await, Ok(()));
        let mut other = [0u8; 16];
        other[1] = 1;
        assert_eq!(c.check_and_insert(entry(other, "b", 1000, 0)).await, Err(ReplayRefusal::Full { retry_after: 1 }));
        // The first is still remembered.
        assert_eq!(c.check_and_insert(entry([0u8; 16], "a", 1000, 10)).await, Err(ReplayRefusal::Replay));
        // At the last instant of its window it still holds its place.
        assert_eq!(
            c.check_and_insert(entry(other, "b", 3000, 1000)).await,
            Err(ReplayRefusal::Full { retry_after: 1 })
        );
        // After its window, room again.
        assert_eq!(c.check_and_insert(entry(other, "b", 3000, 1001)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_snapshot_restores_what_is_still_inside_its_window() {
        let c = InMemoryReplayCache::new(1000, 1000, UnixMillis(0));
        c.check_and_insert(entry(key(1), "a", 100, 0)).await.unwrap();
        c.check_and_insert(entry(key(2), "a", 500, 0)).await.unwrap();
        let snap = c.live_entries(UnixMillis(200));
        assert_eq!(snap, vec![(key(2), UnixMillis(500))]);
        let d = InMemoryReplayCache::with_history(1000, 1000, None);
        assert_eq!(d.restore(snap, UnixMillis(200)), 0);
        assert_eq!(d.check_and_insert(entry(key(2), "a", 500, 300)).await, Err(ReplayRefusal::Replay));
        assert_eq!(d.len(), 1);
        // Swept after its window without touching any principal's count.
        assert_eq!(d.check_and_insert(entry(key(34), "a", 900, 501)).await, Ok(()));
        assert_eq!(d.len(), 1);
    }

    #[tokio::test]
    async fn one_flooding_principal_does_not_lock_out_others() {
        let c = InMemoryReplayCache::new(100_000, SHARDS * 2, UnixMillis(0));
        let mut refused = 0;
        for i in 0..1000 {
            if c.check_and_insert(entry(key(i), "flood", 10_000, 0)).await.is_err() {
                refused += 1;
            }
        }
        assert!(refused > 900, "{refused}");
        for i in 5000..5040 {
            assert_eq!(c.check_and_insert(entry(key(i), "honest", 10_000, 0)).await, Ok(()));
        }
    }
}
