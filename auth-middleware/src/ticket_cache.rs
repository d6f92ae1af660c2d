//! A bounded cache of tickets whose seal and KDC signature were already
//! verified, keyed by a digest of the whole ticket, so the signature cost is
//! paid once per ticket rather than once per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kdc_proto::VerifiedTicket;
use sha2::{Digest, Sha256};

const SHARDS: usize = 16;

/// The cache.
#[derive(Debug)]
pub struct VerifiedTicketCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Arc<VerifiedTicket>>>>,
    per_shard: usize,
}

/// SHA-256 of the ticket as presented.
pub fn ticket_digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl VerifiedTicketCache {
    /// A cache of at most about `capacity` tickets.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> Option<&Mutex<HashMap<[u8; 32], Arc<VerifiedTicket>>>> {
        self.shards.get(usize::from(digest[0]) % SHARDS)
    }

    /// A previously verified ticket (its times still need checking).
    pub fn get(&self, digest: &[u8; 32]) -> Option<Arc<VerifiedTicket>> {
        let shard = self.shard(digest)?.lock().unwrap_or_else(|p| p.into_inner());
        shard.get(digest).cloned()
    }

    /// Remembers a verified ticket. When full, expired tickets go first, then
    /// the whole shard: a miss only costs one more signature check.
    pub fn insert(&self, digest: [u8; 32], ticket: Arc<VerifiedTicket>, now_secs: u64) {
        let Some(lock) = self.shard(&digest) else { return };
        let mut shard = lock.lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, t| t.claims().exp > now_secs);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(digest, ticket);
    }

    /// Forgets everything (after a keytab or KDC key change).
    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Tickets held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
