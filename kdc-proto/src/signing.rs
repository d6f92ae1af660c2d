//! The KDC's signature inside tickets: Ed25519 JWS via `jsonwebtoken`, and the
//! published JWK set that services verify it against.

use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::b64;
use crate::error::ProtoError;

/// RFC 8410 PKCS#8 prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The KDC's Ed25519 ticket-signing key. Its seed is zeroized on drop and
/// never printed.
pub struct KdcSigningKey {
    kid: String,
    seed: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    encoding: EncodingKey,
}

impl fmt::Debug for KdcSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KdcSigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl KdcSigningKey {
    /// A fresh random signing key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::fill(&mut seed[..]);
        Self::from_seed(*seed)
    }

    /// Rebuilds a signing key from its 32-byte seed. The key id is derived
    /// from the public key, so it is stable across restarts.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&seed[..]);
        let digest = Sha256::digest(public);
        let kid = b64::encode(digest.get(..12).unwrap_or_default());
        Self { kid, seed, public, encoding: EncodingKey::from_ed_der(&der) }
    }

    /// The seed, for sealing at rest.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The key id published in the JWK set and named in every signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            alg: "EdDSA".to_owned(),
            use_: "sig".to_owned(),
            kid: self.kid.clone(),
            x: b64::encode(self.public),
        }
    }

    /// Signs `claims` as a compact JWS.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, ProtoError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| ProtoError::Signature)
    }
}

/// One public key in the KDC's JWK set (`/.well-known/jwks.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// The key id that signatures name.
    pub kid: String,
    /// The public key, base64url.
    pub x: String,
}

/// The KDC's JWK set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JwkSet {
    /// The public signing keys, newest first.
    pub keys: Vec<PublicJwk>,
}

/// Verifies KDC signatures against a set of published keys.
#[derive(Clone)]
pub struct KdcVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl fmt::Debug for KdcVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KdcVerifier").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl KdcVerifier {
    /// A verifier for the Ed25519 keys of a JWK set; other key types are ignored.
    pub fn from_jwks(set: &JwkSet) -> Self {
        let keys = set
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
            .filter_map(|k| {
                let x = b64::decode(&k.x, "jwk").ok()?;
                (x.len() == 32).then(|| (k.kid.clone(), DecodingKey::from_ed_der(&x)))
            })
            .collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Times are checked by the protocol code against a clock passed in,
        // not by the JWT library against the wall clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self { keys, validation }
    }

    /// Verifies a compact JWS and returns its claims. Any failure, including
    /// an unknown key id or another algorithm, is [`ProtoError::Signature`].
    pub fn verify<T: DeserializeOwned>(&self, jws: &str) -> Result<T, ProtoError> {
        let header = jsonwebtoken::decode_header(jws).map_err(|_| ProtoError::Signature)?;
        if header.alg != Algorithm::EdDSA {
            return Err(ProtoError::Signature);
        }
        let key = header.kid.as_deref().and_then(|kid| self.keys.get(kid)).ok_or(ProtoError::Signature)?;
        jsonwebtoken::decode::<T>(jws, key, &self.validation).map(|d| d.claims).map_err(|_| ProtoError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct C {
        sub: String,
    }

    #[test]
    fn sign_and_verify() {
        let k = KdcSigningKey::generate();
        let v = KdcVerifier::from_jwks(&JwkSet { keys: vec![k.public_jwk()] });
        let jws = k.sign(&C { sub: "a".into() }).unwrap();
        assert_eq!(v.verify::<C>(&jws).unwrap(), C { sub: "a".into() });
        let again = KdcSigningKey::from_seed(*k.seed());
        assert_eq!(again.kid(), k.kid());
        assert_eq!(v.verify::<C>(&again.sign(&C { sub: "b".into() }).unwrap()).unwrap().sub, "b");
    }

    #[test]
    fn other_keys_and_tampering_are_refused() {
        let k = KdcSigningKey::generate();
        let other = KdcSigningKey::generate();
        let v = KdcVerifier::from_jwks(&JwkSet { keys: vec![k.public_jwk()] });
        assert!(v.verify::<C>(&other.sign(&C { sub: "a".into() }).unwrap()).is_err());
        let jws = k.sign(&C { sub: "a".into() }).unwrap();
        let (h, rest) = jws.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!("{h}.{}.{sig}", b64::encode(br#"{"sub":"root"}"#));
        assert!(v.verify::<C>(&forged).is_err());
        let none = format!("{}.{}.", b64::encode(br#"{"alg":"none"}"#), b64::encode(br#"{"sub":"a"}"#));
        assert!(v.verify::<C>(&none).is_err());
    }

    #[test]
    fn debug_hides_the_seed() {
        let k = KdcSigningKey::from_seed([9u8; 32]);
        let s = format!("{k:?}");
        assert!(!s.contains("seed") && !s.contains("encoding"), "{s}");
    }
}
