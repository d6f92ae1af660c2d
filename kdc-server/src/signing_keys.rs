//! The KDC's signing keys over time: which one signs at an instant, which
//! are published, and the in-memory set a serving KDC keeps and refreshes.
//!
//! A rotation (`kdc signing-key rotate`) stores a new key that activates only
//! after a publish delay. Until then it is published in the JWK set beside
//! the active key but signs nothing, so every service that refreshes the set
//! as its `Cache-Control` says has it before the first ticket it signs. The
//! previous key keeps being published until every ticket it signed has
//! expired (the successor's activation, plus the longest ticket lifetime,
//! plus the clock skew), then it retires.
//!
//! Everything here is a function of the stored schedule and a time passed
//! in; nothing reads the clock.

use std::collections::HashMap;
use std::sync::Arc;

use kdc_proto::{JwkSet, KdcSigningKey, KdcVerifier};

use crate::error::KdcError;
use crate::master_key::MasterKey;
use crate::policy::Policy;
use crate::store::{StoreError, StoredSigningKey};

/// How often a serving KDC re-reads its signing keys from the store, so a
/// rotation made by another process (the `kdc` command) is published
/// within this many seconds.
pub const RELOAD_INTERVAL_SECS: u64 = 5;

/// The publish delay `kdc signing-key rotate` uses when none is asked for:
/// an hour, so a service whose refresh failed once (it retries a `max-age`
/// later) still sees the key in time. Never below [`publish_floor_secs`].
pub const DEFAULT_PUBLISH_DELAY_SECS: u64 = 3600;

/// The longest publish delay a rotation accepts, 30 days: a rotation waiting
/// to activate blocks the next one, so a typo must not block them for years.
pub const MAX_PUBLISH_DELAY_SECS: u64 = 30 * 24 * 3600;

/// The shortest publish delay a rotation accepts: the JWK set's `max-age`
/// (how long a service may keep the set it has), plus how long a serving KDC
/// takes to notice the new key ([`RELOAD_INTERVAL_SECS`]), plus the KDC's
/// clock-skew allowance as a margin for clocks and a cache in between.
pub fn publish_floor_secs(policy: &Policy) -> u64 {
    kdc_proto::caching::DISCOVERY_MAX_AGE_SECS.saturating_add(RELOAD_INTERVAL_SECS).saturating_add(policy.max_skew_secs)
}

/// How long after its successor activates a key stays published: the longest
/// ticket it may have signed just before, plus the skew a service allows on
/// its end time. Renewals are signed afresh with the active key, so the
/// renewable lifetime does not count.
pub fn retain_secs(policy: &Policy) -> u64 {
    policy.max_life_secs.saturating_add(policy.max_skew_secs)
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRotation {
    /// The new key's id, published from now on.
    pub kid: String,
    /// When it starts signing (Unix seconds).
    pub activates_at: u64,
    /// The key that signs until then.
    pub previous: Option<String>,
    /// When that key (and any other without a retirement) stops being
    /// published (Unix seconds).
    pub previous_retires_at: u64,
}

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The publish delay asked for is shorter than services may keep the
    /// JWK set they have.
    #[error(
        "a publish delay of {requested} s is too short: services keep the JWK set they fetched for up to its \
         max-age, so a key that signed sooner could reach a service that has not seen it; the shortest is \
         {floor} s (max-age + the KDC's key reload interval + the max clock skew)"
    )]
    TooSoon {
        /// Seconds asked for.
        requested: u64,
        /// The shortest allowed ([`publish_floor_secs`]).
        floor: u64,
    },
    /// The publish delay asked for is longer than [`MAX_PUBLISH_DELAY_SECS`].
    #[error("a publish delay of {requested} s is too long: at most {max} s")]
    TooLate {
        /// Seconds asked for.
        requested: u64,
        /// The longest allowed.
        max: u64,
    },
    /// A rotation is already waiting for its key to activate.
    #[error(
        "a rotation is already pending: key {kid} starts signing at {activates_at} (Unix time); rotate again \
         after that"
    )]
    Pending {
        /// The pending key.
        kid: String,
        /// When it activates.
        activates_at: u64,
    },
    /// The store or the keys failed.
    #[error(transparent)]
    Kdc(#[from] KdcError),
}

/// Keeps a serving KDC's signing keys in step with the store: every `every`,
/// re-reads them ([`crate::Kdc::reload_signing_keys`]), so a rotation made by
/// the `kdc` command is published within that interval and a retired key
/// stops being published. The admin layer, which verifies tickets signed by
/// this KDC, gets every new JWK set too.
pub async fn refresh(
    kdc: Arc<crate::Kdc>,
    clock: Arc<dyn kdc_proto::Clock>,
    admin: auth_middleware::TicketAuthLayer,
    every: std::time::Duration,
) {
    let mut signing_with = None;
    // What the admin layer holds: it was built from the KDC's set.
    let mut admin_has = kdc.jwks();
    loop {
        tokio::time::sleep(every).await;
        let now = clock.now().as_secs();
        if let Err(e) = kdc.reload_signing_keys(now).await {
            tracing::warn!(error = %e, "signing-key reload failed; keeping the current keys");
        }
        let jwks = kdc.jwks();
        if jwks != admin_has {
            admin.verifier().set_kdc_keys(KdcVerifier::from_jwks(&jwks));
            let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
            tracing::info!(?kids, "the published signing keys changed");
            admin_has = jwks;
        }
        let active = kdc.signing_keys().signer_at(now).map(|k| k.kid().to_owned());
        if active != signing_with {
            if signing_with.is_some() {
                tracing::info!(kid = ?active, "signing with another key from now on");
            }
            signing_with = active;
        }
    }
}

/// Where a signing key is in its life at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Published and signing.
    Active,
    /// Superseded: published (tickets it signed are still valid), not signing.
    Retiring,
    /// No longer published.
    Retired,
}

impl KeyState {
    /// The label `kdc signing-key list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
}

/// A key's schedule: what selection needs, no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Key id.
    pub kid: String,
    /// Signing from (Unix seconds).
    pub activates_at: u64,
    /// Published until (Unix seconds): the stored retirement, raised when
    /// needed so that it is never earlier than the successor's activation
    /// plus [`retain_secs`] of this KDC's policy (a rotation made with
    /// another configuration cannot cut tickets short). `None`: no successor.
    pub retires_at: Option<u64>,
}

impl Schedule {
    /// The schedules of `stored`, ordered by activation, latest first, with
    /// retirements raised to at least the successor's activation plus
    /// `retain`.
    pub fn of(stored: &[StoredSigningKey], retain: u64) -> Vec<Schedule> {
        let mut out: Vec<Schedule> = stored
            .iter()
            .map(|s| Schedule { kid: s.kid.clone(), activates_at: s.activates_at, retires_at: s.retires_at })
            .collect();
        out.sort_by(|a, b| b.activates_at.cmp(&a.activates_at).then_with(|| a.kid.cmp(&b.kid)));
        // A key's successor is the one activating next after it.
        let activations: Vec<u64> = out.iter().map(|s| s.activates_at).collect();
        for s in &mut out {
            let successor = activations.iter().copied().filter(|&a| a > s.activates_at).min();
            if let (Some(r), Some(next)) = (s.retires_at, successor) {
                s.retires_at = Some(r.max(next.saturating_add(retain)));
            }
        }
        out
    }

    /// Whether it is no longer published at `now`.
    pub fn retired_at(&self, now: u64) -> bool {
        self.retires_at.is_some_and(|r| r <= now)
    }
}

/// The index of the key that signs at `now` in `keys` (latest activation
/// first, as [`Schedule::of`] orders them): the latest activated one that is
/// not retired. Should every key be pending (the clock went back), the one
/// that activates first: it has been published the longest. `None` only
/// when every key is retired.
pub fn active_index(keys: &[Schedule], now: u64) -> Option<usize> {
    let live = || keys.iter().enumerate().filter(|(_, k)| !k.retired_at(now));
    live().find(|(_, k)| k.activates_at <= now).or_else(|| live().next_back()).map(|(i, _)| i)
}

/// The state of each key of `keys` at `now`, in the same order.
pub fn states(keys: &[Schedule], now: u64) -> Vec<KeyState> {
    let active = active_index(keys, now);
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if k.retired_at(now) {
                KeyState::Retired
            } else if Some(i) == active {
                KeyState::Active
            } else if k.activates_at > now {
                KeyState::Next
            } else {
                KeyState::Retiring
            }
        })
        .collect()
}

/// The signing keys a KDC holds in memory: every key not retired when they
/// were loaded, unsealed, with the JWK set and verifier made from them. A
/// serving KDC replaces the whole set when the store changes or a key
/// retires ([`SigningKeys::is_current`]); signing only picks from it.
pub struct SigningKeys {
    /// The rows loaded, to tell whether the store changed.
    rows: Vec<StoredSigningKey>,
    /// Schedules of the keys held, latest activation first.
    schedule: Vec<Schedule>,
    /// The keys, in the order of `schedule`.
    keys: Vec<Arc<KdcSigningKey>>,
    jwks: JwkSet,
    verifier: Arc<KdcVerifier>,
    /// The earliest retirement among the keys held: the set must be rebuilt
    /// then, to stop publishing and accepting that key.
    next_retirement: Option<u64>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").field("schedule", &self.schedule).finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// Unseals the keys of `stored` not retired at `now` (reusing those
    /// `previous` already holds). Refuses a store with no live key.
    pub fn load(
        stored: &[StoredSigningKey],
        master: &MasterKey,
        policy: &Policy,
        now: u64,
        previous: Option<&SigningKeys>,
    ) -> Result<Self, KdcError> {
        let schedule: Vec<Schedule> =
            Schedule::of(stored, retain_secs(policy)).into_iter().filter(|s| !s.retired_at(now)).collect();
        if schedule.is_empty() {
            return Err(KdcError::Store(StoreError::Corrupt("no signing key")));
        }
        let known: HashMap<&str, &Arc<KdcSigningKey>> =
            previous.map(|p| p.keys.iter().map(|k| (k.kid(), k)).collect()).unwrap_or_default();
        let mut keys = Vec::with_capacity(schedule.len());
        for s in &schedule {
            if let Some(k) = known.get(s.kid.as_str()) {
                keys.push(Arc::clone(k));
                continue;
            }
            let row = stored.iter().find(|r| r.kid == s.kid).ok_or(KdcError::Internal("signing key schedule"))?;
            let seed = master.open_key(&format!("signing#{}", row.kid), &row.sealed)?;
            let key = KdcSigningKey::from_seed(*seed.expose());
            if key.kid() != row.kid {
                return Err(KdcError::Store(StoreError::Corrupt("signing key id")));
            }
            keys.push(Arc::new(key));
        }
        let jwks = JwkSet { keys: keys.iter().map(|k| k.public_jwk()).collect() };
        let verifier = Arc::new(KdcVerifier::from_jwks(&jwks));
        let next_retirement = schedule.iter().filter_map(|s| s.retires_at).min();
        Ok(Self { rows: stored.to_vec(), schedule, keys, jwks, verifier, next_retirement })
    }

    /// Whether this set still describes `stored` at `now`: same rows, and no
    /// key held has retired since it was loaded.
    pub fn is_current(&self, stored: &[StoredSigningKey], now: u64) -> bool {
        self.rows == stored && self.next_retirement.is_none_or(|r| now < r)
    }

    /// The key that signs at `now` ([`active_index`]).
    pub fn signer_at(&self, now: u64) -> Option<&Arc<KdcSigningKey>> {
        active_index(&self.schedule, now).and_then(|i| self.keys.get(i))
    }

    /// The published keys, latest activation first: every key not retired
    /// when the set was loaded, the next one included.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A verifier for the published keys (tickets presented to the KDC).
    pub fn verifier(&self) -> &Arc<KdcVerifier> {
        &self.verifier
    }

    /// The schedules of the keys held, latest activation first.
    pub fn schedule(&self) -> &[Schedule] {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn sched(kid: &str, activates_at: u64, retires_at: Option<u64>) -> Schedule {
        Schedule { kid: kid.into(), activates_at, retires_at }
    }

    fn row(kid: &str, activates_at: u64, retires_at: Option<u64>) -> StoredSigningKey {
        StoredSigningKey { kid: kid.into(), sealed: String::new(), created_at: T0, activates_at, retires_at }
    }

    fn kids_in(keys: &[Schedule], states: &[KeyState], want: KeyState) -> Vec<String> {
        keys.iter().zip(states).filter(|(_, s)| **s == want).map(|(k, _)| k.kid.clone()).collect()
    }

    #[test]
    fn a_rotation_publishes_first_switches_at_activation_and_retires_the_old_key_later() {
        // `old` since T0; `new` rotated in at T0+100, activating at T0+1000;
        // `old` retires at T0+5000.
        let keys = Schedule::of(&[row("old", T0, Some(T0 + 5000)), row("new", T0 + 1000, None)], 0);
        assert_eq!(keys[0].kid, "new", "latest activation first");
        let at = |t: u64| states(&keys, t);
        use KeyState::*;
        assert_eq!(at(T0 + 100), vec![Next, Active]);
        assert_eq!(keys[active_index(&keys, T0 + 999).unwrap()].kid, "old");
        assert_eq!(at(T0 + 1000), vec![Active, Retiring]);
        assert_eq!(keys[active_index(&keys, T0 + 1000).unwrap()].kid, "new");
        assert_eq!(at(T0 + 4999), vec![Active, Retiring]);
        assert_eq!(at(T0 + 5000), vec![Active, Retired]);
        assert_eq!(kids_in(&keys, &at(T0 + 5000), Active), vec!["new"]);
    }

    #[test]
    fn retirement_is_never_before_the_successor_activation_plus_this_kdcs_retention() {
        // Stored by a rotation that thought tickets live 100 s; this KDC's
        // policy says 3600 s: the old key stays published that long.
        let keys = Schedule::of(&[row("old", T0, Some(T0 + 1100)), row("new", T0 + 1000, None)], 3600);
        assert_eq!(keys[1].retires_at, Some(T0 + 4600));
        // A longer stored retirement is kept.
        let keys = Schedule::of(&[row("old", T0, Some(T0 + 9000)), row("new", T0 + 1000, None)], 3600);
        assert_eq!(keys[1].retires_at, Some(T0 + 9000));
        // No successor, no retirement.
        assert_eq!(Schedule::of(&[row("only", T0, None)], 3600)[0].retires_at, None);
    }

    #[test]
    fn two_rotations_keep_the_chain_published() {
        let keys = Schedule::of(
            &[row("k1", T0, Some(T0 + 3000)), row("k2", T0 + 1000, Some(T0 + 6000)), row("k3", T0 + 4000, None)],
            0,
        );
        use KeyState::*;
        assert_eq!(states(&keys, T0 + 2000), vec![Next, Active, Retiring]);
        assert_eq!(states(&keys, T0 + 3500), vec![Next, Active, Retired]);
        assert_eq!(states(&keys, T0 + 4000), vec![Active, Retiring, Retired]);
        assert_eq!(states(&keys, T0 + 6000), vec![Active, Retired, Retired]);
    }

    #[test]
    fn with_every_key_pending_the_first_to_activate_signs() {
        // The clock went back before the active key's activation.
        let keys = vec![sched("b", T0 + 200, None), sched("a", T0 + 100, Some(T0 + 900))];
        assert_eq!(active_index(&keys, T0), Some(1));
        assert_eq!(states(&keys, T0), vec![KeyState::Next, KeyState::Active]);
        assert_eq!(active_index(&[sched("gone", T0, Some(T0 + 1))], T0 + 1), None);
    }

    #[test]
    fn the_publish_floor_covers_max_age_reload_and_skew() {
        let p = Policy::default();
        assert_eq!(publish_floor_secs(&p), 300 + RELOAD_INTERVAL_SECS + 300);
        assert!(DEFAULT_PUBLISH_DELAY_SECS >= publish_floor_secs(&p));
        assert_eq!(retain_secs(&p), 10 * 3600 + 300);
    }

    fn sealed_row(
        master: &MasterKey,
        key: &KdcSigningKey,
        activates_at: u64,
        retires_at: Option<u64>,
    ) -> StoredSigningKey {
        let sealed =
            master.seal_key(&format!("signing#{}", key.kid()), &kdc_proto::SecretKey::from_bytes(*key.seed())).unwrap();
        StoredSigningKey { kid: key.kid().to_owned(), sealed, created_at: T0, activates_at, retires_at }
    }

    #[test]
    fn the_loaded_set_signs_publishes_and_knows_when_it_is_stale() {
        let master = MasterKey::new(kdc_proto::SecretKey::generate());
        let policy = Policy { max_life_secs: 1000, max_skew_secs: 0, ..Policy::default() };
        let (old, new) = (KdcSigningKey::generate(), KdcSigningKey::generate());
        let rows = vec![sealed_row(&master, &new, T0 + 100, None), sealed_row(&master, &old, T0, Some(T0 + 1100))];
        let set = SigningKeys::load(&rows, &master, &policy, T0 + 10, None).unwrap();
        let published: Vec<&str> = set.jwks().keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(published, vec![new.kid(), old.kid()], "the next key is published before it signs");
        assert_eq!(set.signer_at(T0 + 99).unwrap().kid(), old.kid());
        assert_eq!(set.signer_at(T0 + 100).unwrap().kid(), new.kid());
        assert!(set.is_current(&rows, T0 + 1099));
        assert!(!set.is_current(&rows, T0 + 1100), "the old key retired: rebuild");
        assert!(!set.is_current(&rows[..1], T0 + 10), "the store changed: rebuild");
        // Rebuilt after the retirement: the old key is neither published nor accepted.
        let later = SigningKeys::load(&rows, &master, &policy, T0 + 1100, Some(&set)).unwrap();
        assert_eq!(later.jwks().keys.len(), 1);
        assert!(Arc::ptr_eq(later.signer_at(T0 + 1100).unwrap(), set.signer_at(T0 + 100).unwrap()));
        // A key sealed for another id is refused.
        let mut swapped = rows.clone();
        swapped[0].kid = old.kid().to_owned();
        assert!(SigningKeys::load(&swapped, &master, &policy, T0, None).is_err());
    }
}
