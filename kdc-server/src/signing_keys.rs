//! The KDC's signing keys over time: which one signs at an instant, which
//! are published, and the in-memory set a serving KDC keeps and refreshes.
//!
//! A rotation (`kdc signing-key rotate`) stores a new key that activates only
//! after a publish delay. A serving KDC publishes it in the JWK set beside
//! the active key as soon as it loads it, and records in the store when a
//! KDC first did (`published_at`, set once). The key signs from its
//! activation, but never before the publish floor ([`publish_floor_secs`])
//! has passed since that first publication: every service that refreshes the
//! set as its `Cache-Control` says has it before the first ticket it signs,
//! even when no KDC was serving during the delay the rotation asked for.
//! Until then the previous key signs; it stays published until every ticket
//! it signed has expired (the successor's actual activation, plus the
//! longest ticket lifetime, plus the clock skew), then it retires.
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
pub(crate) const RELOAD_INTERVAL_SECS: u64 = 5;

/// The publish delay `kdc signing-key rotate` uses when none is asked for:
/// an hour, so a service whose refresh failed once (it retries a `max-age`
/// later) still sees the key in time. Never below [`publish_floor_secs`].
pub(crate) const DEFAULT_PUBLISH_DELAY_SECS: u64 = 3600;

/// The longest publish delay a rotation accepts, 30 days: a rotation waiting
/// to activate blocks the next one, so a typo must not block them for years.
pub(crate) const MAX_PUBLISH_DELAY_SECS: u64 = 30 * 24 * 3600;

/// The shortest publish delay a rotation accepts: the JWK set's `max-age`
/// (how long a service may keep the set it has), plus how long a serving KDC
/// takes to notice the new key ([`RELOAD_INTERVAL_SECS`]), plus the KDC's
/// clock-skew allowance as a margin for clocks and a cache in between.
pub(crate) fn publish_floor_secs(policy: &Policy) -> u64 {
    kdc_proto::DISCOVERY_MAX_AGE_SECS.saturating_add(RELOAD_INTERVAL_SECS).saturating_add(policy.max_skew_secs)
}

/// How long after its successor activates a key stays published: the longest
/// ticket it may have signed just before, plus the skew a service allows on
/// its end time. Renewals are signed afresh with the active key, so the
/// renewable lifetime does not count.
pub(crate) fn retain_secs(policy: &Policy) -> u64 {
    policy.max_life_secs.saturating_add(policy.max_skew_secs)
}

/// The spans a KDC computes its signing-key schedule with, from its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTimings {
    /// How long after its first publication a key may sign
    /// ([`publish_floor_secs`]).
    pub publish_floor: u64,
    /// How long after its successor activates a key stays published
    /// ([`retain_secs`]).
    pub retain: u64,
}

impl KeyTimings {
    /// The spans `policy` implies.
    pub fn of(policy: &Policy) -> Self {
        Self { publish_floor: publish_floor_secs(policy), retain: retain_secs(policy) }
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRotation {
    /// The new key's id, published by a serving KDC from now on.
    pub kid: String,
    /// When it starts signing (Unix seconds), if a serving KDC publishes it
    /// within the publish delay minus the publish floor; later otherwise (a
    /// publish floor after a KDC first publishes it).
    pub activates_at: u64,
    /// The key that signs until then.
    pub previous: Option<String>,
    /// When that key (and any other without a retirement) stops being
    /// published (Unix seconds), at the earliest: later when the new key
    /// starts signing later.
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
    /// A rotation is already waiting for a serving KDC to publish its key.
    #[error(
        "a rotation is already pending: key {kid} has not been published by a serving KDC yet; it starts signing \
         {publish_floor} s after one publishes it (`kdc serve`), and not before {activates_at} (Unix time); rotate \
         again after that"
    )]
    Unpublished {
        /// The pending key.
        kid: String,
        /// The earliest it may activate.
        activates_at: u64,
        /// How long after its publication it may sign ([`publish_floor_secs`]).
        publish_floor: u64,
    },
    /// The store or the keys failed.
    #[error(transparent)]
    Kdc(#[from] KdcError),
}

/// Keeps a serving KDC's signing keys in step with the store: at once, then
/// every `every` and whenever the store announces a change
/// ([`crate::store::PrincipalStore::changes`]), re-reads them ([`crate::Kdc::reload_signing_keys`]), so a
/// rotation made by the `kdc` command is published within that interval, the
/// first publication of a key is recorded (it signs a publish floor later),
/// and a retired key stops being published. The admin layer, which verifies
/// tickets signed by this KDC, gets every new JWK set too.
pub(crate) async fn refresh(
    kdc: Arc<crate::Kdc>,
    clock: Arc<dyn kdc_proto::Clock>,
    admin: auth_middleware::TicketAuthLayer,
    every: std::time::Duration,
) {
    let mut signing_with = None;
    // What the admin layer holds: it was built from the KDC's set.
    let mut admin_has = kdc.jwks();
    // The first tick is at once: this KDC publishes its keys from its start,
    // so it records that for any key no KDC published before.
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A store shared by several KDCs announces a rotation (or a first
    // publication) made at any of them: reloaded at once, not at the tick.
    let mut changes = kdc.store().changes(crate::store::ChangeTopic::SigningKeys);
    loop {
        crate::store::tick_or_change(&mut ticks, &mut changes).await;
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
    /// Not signing yet: waiting for its activation, for a serving KDC to
    /// publish it, or for the publish floor to pass since it did.
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
    /// The earliest it may sign, as the rotation asked (Unix seconds).
    pub activates_at: u64,
    /// When a serving KDC first published it (Unix seconds); `None`: none
    /// has yet.
    pub published_at: Option<u64>,
    /// When it actually starts signing (Unix seconds): `activates_at`, or
    /// the publish floor after `published_at` if that is later. `None` while
    /// no KDC has published it: it cannot sign then. The realm's first key
    /// (no predecessor could sign instead) signs from `activates_at`.
    pub signs_from: Option<u64>,
    /// Published until (Unix seconds): the stored retirement, raised when
    /// needed so that it is never earlier than the moment a successor
    /// actually starts signing plus [`retain_secs`] of this KDC's policy (a
    /// late publication of the successor, or a rotation made with another
    /// configuration, cannot cut tickets short). `None`: no successor yet,
    /// or none signs yet (this key may still sign).
    pub retires_at: Option<u64>,
}

impl Schedule {
    /// The schedules of `stored`, latest rotation (stored activation) first,
    /// each signing from its effective activation, with retirements raised
    /// to at least the first effective activation of a successor plus the
    /// retention, and withheld while no successor signs yet.
    pub fn of(stored: &[StoredSigningKey], timings: KeyTimings) -> Vec<Schedule> {
        let first = stored.iter().map(|s| s.activates_at).min();
        let mut out: Vec<Schedule> = stored
            .iter()
            .map(|s| Schedule {
                kid: s.kid.clone(),
                activates_at: s.activates_at,
                published_at: s.published_at,
                // The realm's first key has no predecessor to sign while it
                // waits: there is nothing to wait for.
                signs_from: if Some(s.activates_at) == first {
                    Some(s.activates_at)
                } else {
                    s.published_at.map(|p| s.activates_at.max(p.saturating_add(timings.publish_floor)))
                },
                retires_at: s.retires_at,
            })
            .collect();
        out.sort_by(|a, b| b.activates_at.cmp(&a.activates_at).then_with(|| a.kid.cmp(&b.kid)));
        // A key stops signing when the first of the keys rotated in after it
        // starts; until one does, it may sign on, so it stays published.
        let later: Vec<(u64, Option<u64>)> = out.iter().map(|s| (s.activates_at, s.signs_from)).collect();
        for s in &mut out {
            let successors = || later.iter().filter(|(a, _)| *a > s.activates_at);
            let taken_over = successors().filter_map(|(_, f)| *f).min();
            s.retires_at = match (s.retires_at, taken_over) {
                (Some(r), Some(next)) => Some(r.max(next.saturating_add(timings.retain))),
                (Some(_), None) if successors().next().is_some() => None,
                (r, _) => r,
            };
        }
        out
    }

    /// Whether it is no longer published at `now`.
    pub fn retired_at(&self, now: u64) -> bool {
        self.retires_at.is_some_and(|r| r <= now)
    }

    /// Whether it may sign at `now` (published long enough, activated).
    pub fn signs_at(&self, now: u64) -> bool {
        self.signs_from.is_some_and(|f| f <= now)
    }
}

/// The index of the key that signs at `now` in `keys` (latest rotation
/// first, as [`Schedule::of`] orders them): the latest one that may sign
/// ([`Schedule::signs_at`]) and is not retired. Should no key be able to
/// (the clock went back), the earliest live one: it has been published the
/// longest. `None` only when every key is retired.
pub(crate) fn active_index(keys: &[Schedule], now: u64) -> Option<usize> {
    let live = || keys.iter().enumerate().filter(|(_, k)| !k.retired_at(now));
    live().find(|(_, k)| k.signs_at(now)).or_else(|| live().next_back()).map(|(i, _)| i)
}

/// The state of each key of `keys` at `now`, in the same order.
pub(crate) fn states(keys: &[Schedule], now: u64) -> Vec<KeyState> {
    let active = active_index(keys, now);
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if k.retired_at(now) {
                KeyState::Retired
            } else if Some(i) == active {
                KeyState::Active
            } else if !k.signs_at(now) {
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
            Schedule::of(stored, KeyTimings::of(policy)).into_iter().filter(|s| !s.retired_at(now)).collect();
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

    /// The ids of the keys held (and so published) that no KDC has recorded
    /// as published yet.
    pub fn unpublished(&self) -> Vec<String> {
        self.schedule.iter().filter(|s| s.published_at.is_none()).map(|s| s.kid.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    /// No publish floor, no retention: the stored schedule as it is.
    const PLAIN: KeyTimings = KeyTimings { publish_floor: 0, retain: 0 };

    fn sched(kid: &str, activates_at: u64, retires_at: Option<u64>) -> Schedule {
        Schedule {
            kid: kid.into(),
            activates_at,
            published_at: Some(activates_at),
            signs_from: Some(activates_at),
            retires_at,
        }
    }

    /// A key stored at T0 + 100 (the first one at T0) and published then.
    fn row(kid: &str, activates_at: u64, retires_at: Option<u64>) -> StoredSigningKey {
        let created_at = if activates_at == T0 { T0 } else { T0 + 100 };
        StoredSigningKey {
            kid: kid.into(),
            sealed: String::new(),
            created_at,
            activates_at,
            published_at: Some(created_at),
            retires_at,
        }
    }

    fn unpublished(kid: &str, activates_at: u64) -> StoredSigningKey {
        StoredSigningKey { published_at: None, ..row(kid, activates_at, None) }
    }

    fn kids_in(keys: &[Schedule], states: &[KeyState], want: KeyState) -> Vec<String> {
        keys.iter().zip(states).filter(|(_, s)| **s == want).map(|(k, _)| k.kid.clone()).collect()
    }

    #[test]
    fn a_rotation_publishes_first_switches_at_activation_and_retires_the_old_key_later() {
        // `old` since T0; `new` rotated in (and published) at T0+100,
        // activating at T0+1000; `old` retires at T0+5000.
        let keys = Schedule::of(&[row("old", T0, Some(T0 + 5000)), row("new", T0 + 1000, None)], PLAIN);
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
        let t = KeyTimings { publish_floor: 0, retain: 3600 };
        let keys = Schedule::of(&[row("old", T0, Some(T0 + 1100)), row("new", T0 + 1000, None)], t);
        assert_eq!(keys[1].retires_at, Some(T0 + 4600));
        // A longer stored retirement is kept.
        let keys = Schedule::of(&[row("old", T0, Some(T0 + 9000)), row("new", T0 + 1000, None)], t);
        assert_eq!(keys[1].retires_at, Some(T0 + 9000));
        // No successor, no retirement.
        assert_eq!(Schedule::of(&[row("only", T0, None)], t)[0].retires_at, None);
    }

    #[test]
    fn a_key_published_late_signs_a_floor_after_and_its_predecessor_signs_and_stays_until_then() {
        let t = KeyTimings { publish_floor: 600, retain: 5000 };
        // Rotated at T0+100 to activate at T0+1000, the old key to retire at
        // T0+6000; no KDC served since.
        let stored = [row("old", T0, Some(T0 + 6000)), unpublished("new", T0 + 1000)];
        let keys = Schedule::of(&stored, t);
        assert_eq!((keys[0].signs_from, keys[1].retires_at), (None, None));
        use KeyState::*;
        // Long after both the activation and the stored retirement, the old
        // key still signs and is published: no service has the new one.
        for now in [T0 + 1000, T0 + 6000, T0 + 100_000] {
            assert_eq!(states(&keys, now), vec![Next, Active], "at {now}");
        }
        // A KDC publishes it at T: it signs from T + floor, and the old key's
        // tickets (signed until then) keep it published a retention longer.
        let p = T0 + 100_000;
        let keys =
            Schedule::of(&[stored[0].clone(), StoredSigningKey { published_at: Some(p), ..stored[1].clone() }], t);
        assert_eq!(keys[0].signs_from, Some(p + 600));
        assert_eq!(keys[1].retires_at, Some(p + 600 + 5000));
        assert_eq!(states(&keys, p + 599), vec![Next, Active]);
        assert_eq!(states(&keys, p + 600), vec![Active, Retiring]);
        assert_eq!(states(&keys, p + 5599), vec![Active, Retiring]);
        assert_eq!(states(&keys, p + 5600), vec![Active, Retired]);
        // Published in time: the stored activation stands.
        let early = StoredSigningKey { published_at: Some(T0 + 100), ..stored[1].clone() };
        let keys = Schedule::of(&[stored[0].clone(), early], t);
        assert_eq!((keys[0].signs_from, keys[1].retires_at), (Some(T0 + 1000), Some(T0 + 6000)));
    }

    #[test]
    fn two_rotations_keep_the_chain_published() {
        let keys = Schedule::of(
            &[row("k1", T0, Some(T0 + 3000)), row("k2", T0 + 1000, Some(T0 + 6000)), row("k3", T0 + 4000, None)],
            PLAIN,
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
        assert_eq!(KeyTimings::of(&p), KeyTimings { publish_floor: publish_floor_secs(&p), retain: retain_secs(&p) });
    }

    fn sealed_row(
        master: &MasterKey,
        key: &KdcSigningKey,
        activates_at: u64,
        retires_at: Option<u64>,
    ) -> StoredSigningKey {
        let sealed =
            master.seal_key(&format!("signing#{}", key.kid()), &kdc_proto::SecretKey::from_bytes(*key.seed())).unwrap();
        StoredSigningKey {
            kid: key.kid().to_owned(),
            sealed,
            created_at: T0,
            activates_at,
            published_at: Some(T0),
            retires_at,
        }
    }

    #[test]
    fn the_loaded_set_signs_publishes_and_knows_when_it_is_stale() {
        let master = MasterKey::new(kdc_proto::SecretKey::generate());
        let policy = Policy { max_life_secs: 1000, max_skew_secs: 0, ..Policy::default() };
        let floor = publish_floor_secs(&policy);
        let (old, new) = (KdcSigningKey::generate(), KdcSigningKey::generate());
        let (on, off) = (T0 + floor, T0 + floor + 1000);
        let rows = vec![sealed_row(&master, &new, on, None), sealed_row(&master, &old, T0, Some(off))];
        let set = SigningKeys::load(&rows, &master, &policy, T0 + 10, None).unwrap();
        let published: Vec<&str> = set.jwks().keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(published, vec![new.kid(), old.kid()], "the next key is published before it signs");
        assert!(set.unpublished().is_empty());
        assert_eq!(set.signer_at(on - 1).unwrap().kid(), old.kid());
        assert_eq!(set.signer_at(on).unwrap().kid(), new.kid());
        assert!(set.is_current(&rows, off - 1));
        assert!(!set.is_current(&rows, off), "the old key retired: rebuild");
        assert!(!set.is_current(&rows[..1], T0 + 10), "the store changed: rebuild");
        // Rebuilt after the retirement: the old key is neither published nor accepted.
        let later = SigningKeys::load(&rows, &master, &policy, off, Some(&set)).unwrap();
        assert_eq!(later.jwks().keys.len(), 1);
        assert!(Arc::ptr_eq(later.signer_at(off).unwrap(), set.signer_at(on).unwrap()));
        // A key sealed for another id is refused.
        let mut swapped = rows.clone();
        swapped[0].kid = old.kid().to_owned();
        assert!(SigningKeys::load(&swapped, &master, &policy, T0, None).is_err());
    }

    /// A realm in memory and the bytes of its master key, so several KDCs
    /// (a `kdc` command, serving KDCs) can open the same store.
    async fn realm() -> (Arc<crate::store::MemoryStore>, [u8; 32]) {
        let store = Arc::new(crate::store::MemoryStore::new());
        let bytes = *kdc_proto::SecretKey::generate().expose();
        let realm: kdc_proto::Realm = "EXAMPLE.TEST".parse().unwrap();
        let pw = zeroize::Zeroizing::new("a long admin passphrase 7".to_owned());
        crate::Kdc::initialize(
            store.as_ref(),
            &MasterKey::new(kdc_proto::SecretKey::from_bytes(bytes)),
            &realm,
            pw,
            T0,
        )
        .await
        .unwrap();
        (store, bytes)
    }

    /// A KDC (serving or a `kdc` command) on `store`, started at `now`.
    async fn kdc_on(store: &Arc<crate::store::MemoryStore>, master: [u8; 32], now: u64) -> crate::Kdc {
        let master = MasterKey::new(kdc_proto::SecretKey::from_bytes(master));
        let store: Arc<dyn crate::store::PrincipalStore> = store.clone();
        crate::Kdc::open(store, master, Policy::default(), Default::default(), kdc_proto::UnixMillis(now * 1000))
            .await
            .unwrap()
    }

    fn signer(kdc: &crate::Kdc, now: u64) -> String {
        kdc.signing_keys().signer_at(now).unwrap().kid().to_owned()
    }

    fn published(kdc: &crate::Kdc) -> Vec<String> {
        kdc.jwks().keys.into_iter().map(|k| k.kid).collect()
    }

    async fn stored_publication(kdc: &crate::Kdc, kid: &str) -> Option<u64> {
        kdc.store().signing_keys().await.unwrap().into_iter().find(|k| k.kid == kid).unwrap().published_at
    }

    #[tokio::test]
    async fn a_key_rotated_while_no_kdc_serves_signs_only_a_floor_after_the_first_kdc_publishes_it() {
        let (store, master) = realm().await;
        let policy = Policy::default();
        let (floor, retain) = (publish_floor_secs(&policy), retain_secs(&policy));
        // `kdc signing-key rotate` during a maintenance window: no KDC serves.
        let cli = kdc_on(&store, master, T0).await;
        let r = cli.rotate_signing_key(Some(floor), T0).await.unwrap();
        let old = r.previous.clone().unwrap();
        assert_eq!((r.activates_at, r.previous_retires_at), (T0 + floor, T0 + floor + retain));
        assert_eq!(stored_publication(&cli, &r.kid).await, None, "the command publishes nothing");

        // The window ends after the activation and even after the stored
        // retirement of the old key. The first KDC starts at T.
        let t = r.previous_retires_at + 1000;
        let kdc = kdc_on(&store, master, t).await;
        assert_eq!(published(&kdc), vec![r.kid.clone(), old.clone()], "both published from T");
        assert_eq!(signer(&kdc, t), old);
        assert!(!kdc.reload_signing_keys(t).await.unwrap(), "the published set is the same");
        assert_eq!(stored_publication(&kdc, &r.kid).await, Some(t), "the first KDC records its publication");
        assert_eq!(stored_publication(&kdc, &old).await, Some(T0), "an earlier publication stays");

        // Though its activation passed long ago, the new key waits a floor
        // after T; the old key signs meanwhile.
        assert_eq!(signer(&kdc, t + floor - 1), old);
        assert_eq!(signer(&kdc, t + floor), r.kid);
        let states: Vec<(String, KeyState)> =
            cli.signing_key_states(t + 1).await.unwrap().into_iter().map(|(s, st)| (s.kid, st)).collect();
        assert_eq!(states, vec![(r.kid.clone(), KeyState::Next), (old.clone(), KeyState::Active)]);

        // The old key's last ticket (signed at T + floor - 1) lives at most
        // max_life + skew: it stays published until then, not just until its
        // stored retirement.
        let last_ticket_ends = t + floor - 1 + retain;
        for now in [t + floor, last_ticket_ends] {
            kdc.reload_signing_keys(now).await.unwrap();
            assert_eq!(published(&kdc), vec![r.kid.clone(), old.clone()], "at {now}");
        }
        assert!(kdc.reload_signing_keys(t + floor + retain).await.unwrap(), "withdrawn at last");
        assert_eq!(published(&kdc), vec![r.kid.clone()]);
    }

    #[tokio::test]
    async fn several_kdcs_on_one_store_record_the_first_publication_once() {
        let (store, master) = realm().await;
        let floor = publish_floor_secs(&Policy::default());
        let cli = kdc_on(&store, master, T0).await;
        let r = cli.rotate_signing_key(None, T0).await.unwrap();
        let old = r.previous.clone().unwrap();
        // Two KDCs serve the store from T; the second loads the key 3 s
        // after the first recorded it, and the first reloads again later.
        let t = r.activates_at + 50;
        let (a, b) = (kdc_on(&store, master, t).await, kdc_on(&store, master, t).await);
        a.reload_signing_keys(t).await.unwrap();
        b.reload_signing_keys(t + 3).await.unwrap();
        a.reload_signing_keys(t + 8).await.unwrap();
        assert_eq!(stored_publication(&a, &r.kid).await, Some(t));
        // Both sign with the new key from the same instant.
        for kdc in [&a, &b] {
            assert_eq!(signer(kdc, t + floor - 1), old);
            assert_eq!(signer(kdc, t + floor), r.kid);
        }
        // At once: one of the two records it, the other changes nothing.
        let (store, master) = realm().await;
        let r = kdc_on(&store, master, T0).await.rotate_signing_key(None, T0).await.unwrap();
        let (a, b) = (kdc_on(&store, master, t).await, kdc_on(&store, master, t).await);
        let (ra, rb) = tokio::join!(a.reload_signing_keys(t + 1), b.reload_signing_keys(t + 2));
        ra.unwrap();
        rb.unwrap();
        let recorded = stored_publication(&a, &r.kid).await.unwrap();
        assert!(recorded == t + 1 || recorded == t + 2, "{recorded}");
        for kdc in [&a, &b] {
            kdc.reload_signing_keys(t + 3).await.unwrap();
            assert_eq!(kdc.signing_keys().schedule()[0].signs_from, Some(recorded + floor));
        }
    }

    #[tokio::test]
    async fn a_second_rotation_waits_until_the_first_key_signs() {
        let (store, master) = realm().await;
        let floor = publish_floor_secs(&Policy::default());
        let cli = kdc_on(&store, master, T0).await;
        let first = cli.rotate_signing_key(Some(floor), T0).await.unwrap();
        // Past its activation, but no KDC published it: refused.
        let e = cli.rotate_signing_key(None, T0 + 2 * floor).await.unwrap_err();
        assert!(matches!(&e, RotationError::Unpublished { kid, .. } if *kid == first.kid), "{e}");
        assert!(e.to_string().contains("already pending"), "{e}");
        // Published at T: refused until T + floor, when it signs.
        let t = T0 + 3 * floor;
        kdc_on(&store, master, t).await.reload_signing_keys(t).await.unwrap();
        let e = cli.rotate_signing_key(None, t + floor - 1).await.unwrap_err();
        assert!(
            matches!(&e, RotationError::Pending { kid, activates_at } if *kid == first.kid && *activates_at == t + floor),
            "{e}"
        );
        let second = cli.rotate_signing_key(None, t + floor).await.unwrap();
        assert_eq!(second.previous.as_deref(), Some(first.kid.as_str()));
    }
}
