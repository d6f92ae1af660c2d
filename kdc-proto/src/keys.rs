//! Key material: 256-bit secret keys, key version numbers and key ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::b64;
use crate::error::ProtoError;
use crate::principal::Principal;

/// Length of every symmetric key, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key: a principal's long-term key, a session key or the
/// master key. Zeroized on drop; `Debug` prints nothing of it; equality is
/// constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh random key from the thread-local CSPRNG (seeded by the OS).
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::fill(&mut k[..]);
        Self(k)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a key from a byte slice that must be exactly [`KEY_LEN`] long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| ProtoError::Malformed("key length"))?;
        Ok(Self(arr))
    }

    /// Decodes a key from unpadded base64url.
    pub fn from_b64(s: &str) -> Result<Self, ProtoError> {
        let mut v = b64::decode(s, "key encoding")?;
        let k = Self::from_slice(&v);
        v.zeroize();
        k
    }

    /// The key as unpadded base64url (for keytabs and sealed key material only).
    pub fn to_b64(&self) -> String {
        b64::encode(self.0)
    }

    /// The raw key bytes.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretKey {}

impl Serialize for SecretKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&zeroize::Zeroizing::new(self.to_b64()))
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = zeroize::Zeroizing::new(String::deserialize(d)?);
        Self::from_b64(&s).map_err(|_| serde::de::Error::custom("invalid key"))
    }
}

/// A key version number. Every rotation of a principal's key adds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kvno(pub u32);

impl fmt::Display for Kvno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One version of a principal's long-term key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongTermKey {
    /// Its version.
    pub kvno: Kvno,
    /// The key.
    pub key: SecretKey,
}

/// The `kid` of an object sealed under a long-term key: `PRINCIPAL#KVNO`.
///
/// It tells the receiver which of its keys to try. It travels in the JWE
/// header, which is authenticated only after decryption, so it only selects a
/// key and is never trusted before that.
pub fn long_term_kid(principal: &Principal, kvno: Kvno) -> String {
    format!("{principal}#{kvno}")
}

/// Splits a `PRINCIPAL#KVNO` key id.
pub fn parse_long_term_kid(kid: &str) -> Result<(Principal, Kvno), ProtoError> {
    let (p, v) = kid.rsplit_once('#').ok_or(ProtoError::Malformed("key id"))?;
    // One spelling per key version, as `long_term_kid` prints it: decimal
    // digits only (no sign) and no leading zero.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0')) {
        return Err(ProtoError::Malformed("key id"));
    }
    let kvno = v.parse::<u32>().map_err(|_| ProtoError::Malformed("key id"))?;
    Ok((p.parse()?, Kvno(kvno)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey::from_bytes([7u8; KEY_LEN]);
        let s = format!("{k:?}");
        assert!(!s.contains('7'), "{s}");
    }

    #[test]
    fn b64_round_trip_and_length_check() {
        let k = SecretKey::generate();
        assert_eq!(SecretKey::from_b64(&k.to_b64()).unwrap(), k);
        assert!(SecretKey::from_b64(&b64::encode([1u8; 31])).is_err());
        assert_ne!(SecretKey::generate(), k);
    }

    #[test]
    fn kid_round_trip() {
        let p: Principal = "HTTP/a.b@R.T".parse().unwrap();
        let kid = long_term_kid(&p, Kvno(3));
        assert_eq!(parse_long_term_kid(&kid).unwrap(), (p, Kvno(3)));
        assert!(parse_long_term_kid("HTTP/a.b@R.T#x").is_err());
    }

    #[test]
    fn kid_has_one_spelling() {
        // Found by the `principal_name` fuzz target: `S@2#02` named key
        // version 2 and printed back as `S@2#2`.
        for kid in ["S@2#02", "S@2#+2", "S@2#00", "S@2#", "S@2# 2", "S@2#2 "] {
            assert!(parse_long_term_kid(kid).is_err(), "{kid:?} accepted");
        }
        for kid in ["S@2#0", "S@2#2", "S@2#10", "S@2#4294967295"] {
            let (p, kvno) = parse_long_term_kid(kid).unwrap();
            assert_eq!(long_term_kid(&p, kvno), kid);
        }
    }
}
