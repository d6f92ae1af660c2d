//! Fixed keys, names and time shared by the fuzz targets and the seed
//! generator (`examples/gen_corpus.rs`), so the committed seeds are objects
//! that really open under the keys the targets hold: the fuzzer starts on the
//! far side of every parser, not at its first refusal.
//!
//! Every key here is a constant and public: these are test keys, never used
//! outside fuzzing.

#![forbid(unsafe_code)]

use std::sync::Arc;

use auth_middleware::InMemoryReplayCache;
use auth_middleware::ServiceKeyring;
use auth_middleware::TicketVerifier;
use auth_middleware::VerifierSettings;
use kdc_proto::Usage;
use kdc_proto::{
    JwkSet, KdcSigningKey, KdcVerifier, Kvno, LongTermKey, Principal, Realm, SecretKey, TicketClaims, TicketFlags,
    UnixMillis,
};
use kdc_proto::{Keytab, KeytabEntry};

/// "Now" for every target: 2027-01-15, seconds since the epoch.
pub const NOW_SECS: u64 = 1_800_000_000;
/// [`NOW_SECS`] as the protocol's time type.
pub const NOW: UnixMillis = UnixMillis(NOW_SECS * 1000);
/// Allowed clock skew, seconds (the middleware's default).
pub const SKEW_SECS: u64 = 300;
/// The realm.
pub const REALM: &str = "EXAMPLE.TEST";
/// The service the targets verify as.
pub const SERVICE: &str = "HTTP/api.example.test@EXAMPLE.TEST";
/// The client named in the seed tickets.
pub const CLIENT: &str = "alice@EXAMPLE.TEST";

/// Every sealing usage, so a target can try them all (the enum is
/// `#[non_exhaustive]`: a new usage must be added here).
pub const USAGES: [Usage; 11] = [
    Usage::AsReply,
    Usage::TgsReply,
    Usage::Ticket,
    Usage::TgsAuthenticator,
    Usage::Authenticator,
    Usage::MutualReply,
    Usage::ErrorDetail,
    Usage::SessionSecret,
    Usage::SessionSecretReply,
    Usage::PreAuth,
    Usage::KeyAtRest,
];

/// The realm, parsed.
pub fn realm() -> Realm {
    REALM.parse().expect("REALM is a valid realm")
}

/// The service principal, parsed.
pub fn service() -> Principal {
    SERVICE.parse().expect("SERVICE is a valid principal")
}

/// The client principal, parsed.
pub fn client() -> Principal {
    CLIENT.parse().expect("CLIENT is a valid principal")
}

/// The service's current long-term key (version 2).
pub fn service_key() -> LongTermKey {
    LongTermKey { kvno: Kvno(2), key: SecretKey::from_bytes([0x11; 32]) }
}

/// The service's previous long-term key (version 1), still in the keytab.
pub fn old_service_key() -> LongTermKey {
    LongTermKey { kvno: Kvno(1), key: SecretKey::from_bytes([0x12; 32]) }
}

/// The session key inside the seed tickets.
pub fn session_key() -> SecretKey {
    SecretKey::from_bytes([0x33; 32])
}

/// The client's long-term key (what its password derives).
pub fn client_key() -> SecretKey {
    SecretKey::from_bytes([0x44; 32])
}

/// Every fixed symmetric key, for targets that try them all.
pub fn all_keys() -> [SecretKey; 4] {
    [service_key().key, old_service_key().key, session_key(), client_key()]
}

/// The KDC's ticket-signing key.
pub fn kdc_signing_key() -> KdcSigningKey {
    KdcSigningKey::from_seed([0x22; 32])
}

/// The KDC's published key set.
pub fn kdc_jwks() -> JwkSet {
    JwkSet { keys: vec![kdc_signing_key().public_jwk()] }
}

/// A verifier of the KDC's signatures.
pub fn kdc_verifier() -> KdcVerifier {
    KdcVerifier::from_jwks(&kdc_jwks())
}

/// The service's keytab: both key versions, the old one retiring in a day.
pub fn keytab() -> Keytab {
    let (cur, old) = (service_key(), old_service_key());
    Keytab {
        version: 1,
        principal: service(),
        keys: vec![
            KeytabEntry { kvno: cur.kvno, key: cur.key, expires_at: None },
            KeytabEntry { kvno: old.kvno, key: old.key, expires_at: Some(NOW_SECS + 86_400) },
        ],
    }
}

/// The claims of the seed ticket: alice, for [`SERVICE`], valid around [`NOW`].
pub fn claims() -> TicketClaims {
    TicketClaims {
        jti: "fuzz-ticket-1".into(),
        iss: realm(),
        sub: client(),
        cid: "id-alice".into(),
        aud: service(),
        sid: "id-api".into(),
        skey: session_key(),
        auth_time: NOW_SECS - 60,
        nbf: NOW_SECS - 60,
        exp: NOW_SECS + 36_000,
        renew_till: Some(NOW_SECS + 7 * 86_400),
        flags: TicketFlags { initial: false, pre_authent: true, renewable: true },
        roles: vec!["reader".into(), "admin".into()],
    }
}

/// A fresh request verifier for [`SERVICE`] with the fixed keys, as the
/// middleware builds it (fresh each run, so no state leaks between inputs).
pub fn ticket_verifier() -> TicketVerifier {
    let keyring = ServiceKeyring::from_keytab(&keytab(), NOW).expect("the fixed keytab has live keys");
    let replay = Arc::new(InMemoryReplayCache::new(1024, 1024, UnixMillis(0)));
    TicketVerifier::new(keyring, kdc_verifier(), replay, VerifierSettings::default())
}

/// A private scratch directory for targets that read files, under `TMPDIR`.
/// The targets keep it for the life of the process (libFuzzer exits without
/// dropping statics), so `scripts/fuzz.sh` points `TMPDIR` at an in-memory
/// directory (`/dev/shm`, where syncs cost nothing) that it removes afterwards.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a scratch directory")
}
