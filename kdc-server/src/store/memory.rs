//! An in-memory [`PrincipalStore`]: the same contract as the SQLite store,
//! nothing durable. For unit tests of the exchanges, the admin rules and the
//! policy without files or sockets, and for embedding a throwaway KDC.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    NewPrincipal, PrincipalRecord, PrincipalStore, PrincipalUpdate, RealmInit, StoreError, StoredKey, StoredSigningKey,
};

#[derive(Debug, Default)]
struct State {
    realm: Option<String>,
    /// Principals by name.
    principals: BTreeMap<String, PrincipalRecord>,
    /// Key versions by principal id.
    keys: BTreeMap<String, Vec<StoredKey>>,
    signing_keys: Vec<StoredSigningKey>,
}

/// A principal store held in memory. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<State>);

impl MemoryStore {
    /// An empty store (no realm yet).
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn insert(state: &mut State, new: &NewPrincipal) -> Result<(), StoreError> {
    // Names and ids are both unique, as the databases' keys make them.
    if state.principals.contains_key(&new.record.name) || state.keys.contains_key(&new.record.id) {
        return Err(StoreError::AlreadyExists);
    }
    state.principals.insert(new.record.name.clone(), new.record.clone());
    state.keys.insert(new.record.id.clone(), vec![new.key.clone()]);
    Ok(())
}

/// The order of [`PrincipalStore::signing_keys`]: latest activation first.
fn latest_first(a: &StoredSigningKey, b: &StoredSigningKey) -> std::cmp::Ordering {
    b.activates_at.cmp(&a.activates_at).then(b.created_at.cmp(&a.created_at)).then(a.kid.cmp(&b.kid))
}

#[async_trait]
impl PrincipalStore for MemoryStore {
    async fn realm(&self) -> Result<Option<String>, StoreError> {
        Ok(self.state().realm.clone())
    }

    async fn initialize(&self, init: &RealmInit) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.realm.is_some() {
            return Err(StoreError::AlreadyInitialized);
        }
        // All or nothing, like the SQLite transaction.
        let mut next = State { realm: Some(init.realm.clone()), ..State::default() };
        next.signing_keys.push(init.signing_key.clone());
        for p in &init.principals {
            insert(&mut next, p)?;
        }
        *state = next;
        Ok(())
    }

    async fn create_principal(&self, new: &NewPrincipal) -> Result<(), StoreError> {
        insert(&mut self.state(), new)
    }

    async fn principal_by_name(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        Ok(self.state().principals.get(name).cloned())
    }

    async fn principal_by_id(&self, id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        Ok(self.state().principals.values().find(|p| p.id == id).cloned())
    }

    async fn live_keys(&self, principal_id: &str, now: u64) -> Result<Vec<StoredKey>, StoreError> {
        let state = self.state();
        let mut live: Vec<StoredKey> = state
            .keys
            .get(principal_id)
            .map(|keys| keys.iter().filter(|k| k.expires_at.is_none_or(|e| e > now)).cloned().collect())
            .unwrap_or_default();
        live.sort_by_key(|k| std::cmp::Reverse(k.kvno));
        Ok(live)
    }

    async fn list_principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<PrincipalRecord>, StoreError> {
        let state = self.state();
        let after = after.unwrap_or("");
        Ok(state
            .principals
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(limit as usize)
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn update_principal(&self, name: &str, update: &PrincipalUpdate) -> Result<(), StoreError> {
        let mut state = self.state();
        let p = state.principals.get_mut(name).ok_or(StoreError::NotFound)?;
        update.apply_to(p);
        Ok(())
    }

    async fn delete_principal(&self, name: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        let p = state.principals.remove(name).ok_or(StoreError::NotFound)?;
        state.keys.remove(&p.id);
        Ok(())
    }

    async fn rotate_key(&self, principal_id: &str, key: &StoredKey, retire_at: u64) -> Result<(), StoreError> {
        let mut state = self.state();
        let keys = state.keys.get_mut(principal_id).ok_or(StoreError::NotFound)?;
        // Only the next version: one taken or skipped means the caller read
        // the store before another rotation.
        let max = keys.iter().map(|k| k.kvno.0).max();
        if max.and_then(|m| m.checked_add(1)) != Some(key.kvno.0) {
            return Err(StoreError::AlreadyExists);
        }
        for k in keys.iter_mut().filter(|k| k.expires_at.is_none()) {
            k.expires_at = Some(retire_at);
        }
        keys.push(key.clone());
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let mut keys = self.state().signing_keys.clone();
        keys.sort_by(latest_first);
        Ok(keys)
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        retire_previous_at: u64,
        latest_seen: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let latest = state.signing_keys.iter().min_by(|a, b| latest_first(a, b));
        if latest.is_none_or(|k| k.kid != latest_seen) || state.signing_keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::AlreadyExists);
        }
        for k in state.signing_keys.iter_mut().filter(|k| k.retires_at.is_none()) {
            k.retires_at = Some(retire_previous_at);
        }
        state.signing_keys.push(key.clone());
        Ok(())
    }

    async fn record_signing_keys_published(&self, kids: &[String], now: u64) -> Result<(), StoreError> {
        let mut state = self.state();
        for k in state.signing_keys.iter_mut().filter(|k| k.published_at.is_none() && kids.contains(&k.kid)) {
            k.published_at = Some(now);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
