//! The KDC's own replay cache for TGS/renewal authenticators and pre-auth
//! timestamps: each is accepted once within the skew window.
//!
//! Keyed by the sealed object's 16-byte GCM tag (unique per message). Memory
//! is bounded; an entry is never evicted while still inside its window, so
//! when the cache is full it refuses new entries (fails closed) instead.

use std::collections::HashMap;
use std::sync::Mutex;

use kdc_proto::UnixMillis;

const SHARDS: usize = 16;

/// Why an entry was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Seen before inside its window.
    Replay,
    /// No room, even after dropping expired entries.
    Full,
}

/// A bounded, sharded set of recently seen message tags.
#[derive(Debug)]
pub struct ReplayCache {
    shards: Vec<Mutex<HashMap<[u8; 16], u64>>>,
    per_shard_capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most about `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        let per_shard_capacity = capacity.div_ceil(SHARDS).max(1);
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), per_shard_capacity }
    }

    /// Records `tag` as seen until `expires_at`, or says why not.
    pub fn check_and_insert(
        &self,
        tag: &[u8; 16],
        expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<(), ReplayVerdict> {
        let shard = usize::from(tag[0]) % SHARDS;
        let Some(lock) = self.shards.get(shard) else {
            return Err(ReplayVerdict::Full);
        };
        let mut map = lock.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(tag).is_some_and(|&exp| exp > now.0) {
            return Err(ReplayVerdict::Replay);
        }
        if map.len() >= self.per_shard_capacity {
            map.retain(|_, exp| *exp > now.0);
            if map.len() >= self.per_shard_capacity {
                return Err(ReplayVerdict::Full);
            }
        }
        map.insert(*tag, expires_at.0);
        Ok(())
    }

    /// Entries currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_sighting_is_a_replay_until_expiry() {
        let c = ReplayCache::new(100);
        let t = [1u8; 16];
        assert_eq!(c.check_and_insert(&t, UnixMillis(1000), UnixMillis(0)), Ok(()));
        assert_eq!(c.check_and_insert(&t, UnixMillis(1000), UnixMillis(500)), Err(ReplayVerdict::Replay));
        assert_eq!(c.check_and_insert(&t, UnixMillis(3000), UnixMillis(1001)), Ok(()));
    }

    #[test]
    fn full_cache_fails_closed_and_recovers_after_expiry() {
        let c = ReplayCache::new(16);
        for i in 0..=255u8 {
            let mut t = [0u8; 16];
            t[0] = i;
            let _ = c.check_and_insert(&t, UnixMillis(1000), UnixMillis(0));
        }
        let fresh = [7u8; 16];
        assert_eq!(c.check_and_insert(&fresh, UnixMillis(1000), UnixMillis(0)), Err(ReplayVerdict::Full));
        assert_eq!(c.check_and_insert(&fresh, UnixMillis(3000), UnixMillis(2000)), Ok(()));
    }
}
