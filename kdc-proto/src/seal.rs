//! The one place that touches AES-GCM and HKDF: sealing and opening protocol
//! objects under a key, separated by usage, in JWE compact framing.
//!
//! A sealed object is `BASE64URL(header) . "" . BASE64URL(iv) .
//! BASE64URL(ciphertext) . BASE64URL(tag)` (RFC 7516 compact serialization with
//! `alg: dir`, so the encrypted-key part is empty). The protected header is the
//! AES-GCM associated data, so every header field is authenticated. The content
//! key is derived per message:
//!
//! ```text
//! content_key = HKDF-SHA256(ikm = key, salt = header.salt (16 random bytes),
//!                           info = "kdc-http/v1 " || usage label)
//! ```
//!
//! so an object sealed for one usage can never be opened as another, and a
//! long-lived key never encrypts two messages under the same GCM key (which
//! removes the 2^32-messages bound of random 96-bit nonces).
//!
//! ```
//! use kdc_proto::{SealedObject, SecretKey, Usage, seal};
//! let key = SecretKey::generate();
//! let token = seal(&key, "svc#1", Usage::Ticket, b"claims").unwrap();
//! let obj = SealedObject::parse(&token, 4096).unwrap();
//! assert_eq!(obj.kid(), "svc#1");
//! assert_eq!(&obj.open(&key, Usage::Ticket).unwrap()[..], b"claims");
//! assert!(obj.open(&key, Usage::Authenticator).is_err()); // usage separation
//! ```

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::ProtoError;
use crate::keys::{KEY_LEN, SecretKey};
use crate::limits::MAX_HEADER_LEN;

/// The protocol version label mixed into every key derivation.
pub const KDF_LABEL: &str = "kdc-http/v1 ";
/// The only supported JWE key-management algorithm.
pub const ALG: &str = "dir";
/// The only supported JWE content encryption.
pub const ENC: &str = "A256GCM";

const SALT_LEN: usize = 16;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// What a sealed object is for. Each usage derives its own content keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Usage {
    /// Client part of an initial-ticket reply, under the client's long-term key.
    AsReply,
    /// Client part of a service-ticket or renewal reply, under the TGT (or renewed ticket's) session key.
    TgsReply,
    /// A ticket, under the target service's long-term key.
    Ticket,
    /// An authenticator sent to the KDC with a TGT, under its session key.
    TgsAuthenticator,
    /// An authenticator sent to a service, under the ticket's session key.
    Authenticator,
    /// A service's mutual-authentication reply, under the session key.
    MutualReply,
    /// A service's authenticated error detail (server time), under the session key.
    ErrorDetail,
    /// An application secret a client sends a service (a password for the
    /// admin API), under the session key.
    SessionSecret,
    /// An application secret a service sends back to its client (an exported
    /// keytab), under the session key. Its own usage, so that a service's
    /// output can never be reflected back to it as a client's input.
    SessionSecretReply,
    /// Pre-authentication data (encrypted timestamp), under the client's long-term key.
    PreAuth,
    /// Key material at rest, under the KDC master key.
    KeyAtRest,
}

impl Usage {
    /// The label mixed into key derivation and named in the header.
    pub fn label(self) -> &'static str {
        match self {
            Usage::AsReply => "as-reply",
            Usage::TgsReply => "tgs-reply",
            Usage::Ticket => "ticket",
            Usage::TgsAuthenticator => "tgs-authenticator",
            Usage::Authenticator => "authenticator",
            Usage::MutualReply => "mutual-reply",
            Usage::ErrorDetail => "error-detail",
            Usage::SessionSecret => "session-secret",
            Usage::SessionSecretReply => "session-secret-reply",
            Usage::PreAuth => "pre-auth",
            Usage::KeyAtRest => "key-at-rest",
        }
    }
}

/// The protected header of a sealed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedHeader {
    /// Always `dir`.
    pub alg: String,
    /// Always `A256GCM`.
    pub enc: String,
    /// Which key sealed it (e.g. `PRINCIPAL#KVNO`).
    pub kid: String,
    /// The usage the content key was derived for.
    pub usg: Usage,
    /// The per-message HKDF salt, base64url.
    pub salt: String,
}

/// The per-message content key. HKDF-SHA256 only refuses outputs longer than
/// 255 × 32 bytes; a refusal here would still never yield a usable key, so it
/// is an error, never a default.
fn content_key(key: &SecretKey, salt: &[u8], usage: Usage) -> Result<Zeroizing<[u8; KEY_LEN]>, ProtoError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), key.expose());
    let mut ck = Zeroizing::new([0u8; KEY_LEN]);
    let mut info = Vec::with_capacity(KDF_LABEL.len() + 24);
    info.extend_from_slice(KDF_LABEL.as_bytes());
    info.extend_from_slice(usage.label().as_bytes());
    hk.expand(&info, &mut ck[..]).map_err(|_| ProtoError::Crypto)?;
    Ok(ck)
}

fn cipher(ck: &[u8; KEY_LEN]) -> Aes256Gcm {
    // A 32-byte slice is always a valid AES-256 key.
    Aes256Gcm::new(&(*ck).into())
}

/// The per-message randomness of one sealed object: the HKDF salt (named in
/// the header) and the AES-GCM IV.
///
/// [`seal`] draws both fresh from the CSPRNG for every message, which is what
/// every protocol object needs. Choosing them by hand ([`seal_with`]) is for
/// known-answer tests only (`docs/known-answer-exchange.md`): sealing two
/// different plaintexts under one key and usage with the same salt and IV
/// reuses a GCM nonce, which reveals their XOR and lets anyone forge tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRandomness {
    /// The 16-byte HKDF salt, sent base64url in the header's `salt`.
    pub salt: [u8; SALT_LEN],
    /// The 12-byte AES-GCM IV, sent base64url as the third part.
    pub iv: [u8; IV_LEN],
}

impl SealRandomness {
    /// Fresh values from the thread-local CSPRNG (seeded by the OS).
    pub fn generate() -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt[..]);
        let mut iv = [0u8; IV_LEN];
        rand::fill(&mut iv[..]);
        Self { salt, iv }
    }
}

/// Seals `plaintext` under `key` for `usage`, naming `kid` in the header,
/// with fresh randomness ([`SealRandomness::generate`]).
///
/// Fails ([`ProtoError::Crypto`]) only if a primitive refuses (AES-GCM above
/// its 64 GiB message limit, HKDF above its output limit): no output is ever
/// produced from a failed step.
pub fn seal(key: &SecretKey, kid: &str, usage: Usage, plaintext: &[u8]) -> Result<String, ProtoError> {
    seal_with(key, kid, usage, plaintext, &SealRandomness::generate())
}

/// [`seal`] with the per-message salt and IV given rather than drawn: the one
/// code path both take, exposed so that the known-answer document
/// (`docs/known-answer-exchange.md`) can be regenerated byte for byte.
///
/// Not for protocol use: every real message must be sealed with [`seal`].
/// Reusing a [`SealRandomness`] under the same key breaks AES-GCM (see there).
pub fn seal_with(
    key: &SecretKey,
    kid: &str,
    usage: Usage,
    plaintext: &[u8],
    randomness: &SealRandomness,
) -> Result<String, ProtoError> {
    let SealRandomness { salt, iv } = randomness;
    let header = SealedHeader {
        alg: ALG.to_owned(),
        enc: ENC.to_owned(),
        kid: kid.to_owned(),
        usg: usage,
        salt: b64::encode(salt),
    };
    let header_json = serde_json::to_vec(&header).map_err(|_| ProtoError::Malformed("sealed object header"))?;
    let header_b64 = b64::encode(header_json);
    let ck = content_key(key, salt, usage)?;
    // The buffer holds plaintext until encryption succeeds: wipe it on every path.
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = cipher(&ck)
        .encrypt_inout_detached(&(*iv).into(), header_b64.as_bytes(), buf.as_mut_slice().into())
        .map_err(|_| ProtoError::Crypto)?;
    Ok(format!("{header_b64}..{}.{}.{}", b64::encode(iv), b64::encode(&buf[..]), b64::encode(tag)))
}

/// Serialises `value` as JSON (in a buffer wiped afterwards) and seals it.
///
/// A value that does not serialise is an error, never an empty object.
pub fn seal_json<T: Serialize + ?Sized>(
    key: &SecretKey,
    kid: &str,
    usage: Usage,
    value: &T,
) -> Result<String, ProtoError> {
    let json = Zeroizing::new(serde_json::to_vec(value).map_err(|_| ProtoError::Malformed("sealed object content"))?);
    seal(key, kid, usage, &json)
}

/// A sealed object split into its parts, not yet opened.
///
/// Everything in it is untrusted until [`SealedObject::open`] succeeds; the
/// key id only helps choose which key to try.
#[derive(Debug)]
pub struct SealedObject<'a> {
    header_b64: &'a str,
    header: SealedHeader,
    salt: [u8; SALT_LEN],
    iv: [u8; IV_LEN],
    ciphertext: Vec<u8>,
    tag: [u8; TAG_LEN],
}

impl<'a> SealedObject<'a> {
    /// Splits and decodes a compact sealed object of at most `max_len` bytes.
    ///
    /// Refuses anything but `alg: dir` / `enc: A256GCM`, unknown header fields,
    /// a non-empty encrypted-key part and non-canonical base64.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, ProtoError> {
        if token.len() > max_len {
            return Err(ProtoError::TooLarge { what: "sealed object", max: max_len });
        }
        let mut parts = token.split('.');
        let (Some(h), Some(ek), Some(iv), Some(ct), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProtoError::Malformed("sealed object framing"));
        };
        if !ek.is_empty() {
            return Err(ProtoError::Malformed("sealed object framing"));
        }
        let header_json = b64::decode(h, "sealed object header")?;
        if header_json.len() > MAX_HEADER_LEN {
            return Err(ProtoError::TooLarge { what: "sealed object header", max: MAX_HEADER_LEN });
        }
        let header: SealedHeader =
            serde_json::from_slice(&header_json).map_err(|_| ProtoError::Malformed("sealed object header"))?;
        if header.alg != ALG || header.enc != ENC {
            return Err(ProtoError::Malformed("unsupported algorithm"));
        }
        let salt: [u8; SALT_LEN] =
            b64::decode(&header.salt, "salt")?.try_into().map_err(|_| ProtoError::Malformed("salt"))?;
        let iv: [u8; IV_LEN] = b64::decode(iv, "iv")?.try_into().map_err(|_| ProtoError::Malformed("iv"))?;
        let tag: [u8; TAG_LEN] = b64::decode(tag, "tag")?.try_into().map_err(|_| ProtoError::Malformed("tag"))?;
        let ciphertext = b64::decode(ct, "ciphertext")?;
        Ok(Self { header_b64: h, header, salt, iv, ciphertext, tag })
    }

    /// The key id named in the header (unauthenticated until opened).
    pub fn kid(&self) -> &str {
        &self.header.kid
    }

    /// The usage named in the header (unauthenticated until opened).
    pub fn usage(&self) -> Usage {
        self.header.usg
    }

    /// The 16-byte GCM tag: unique per sealed message, so a replay cache can
    /// key on it without holding the whole object.
    pub fn tag(&self) -> &[u8; TAG_LEN] {
        &self.tag
    }

    /// Decrypts and authenticates under `key`, as `usage`. Every failure is the
    /// same opaque [`ProtoError::Crypto`].
    pub fn open(&self, key: &SecretKey, usage: Usage) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
        if self.header.usg != usage {
            return Err(ProtoError::Crypto);
        }
        let ck = content_key(key, &self.salt, usage)?;
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        cipher(&ck)
            .decrypt_inout_detached(
                &self.iv.into(),
                self.header_b64.as_bytes(),
                buf.as_mut_slice().into(),
                &self.tag.into(),
            )
            .map_err(|_| ProtoError::Crypto)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SecretKey, String) {
        let key = SecretKey::generate();
        let token = seal(&key, "alice@EXAMPLE.TEST#1", Usage::AsReply, b"{\"hello\":1}").unwrap();
        (key, token)
    }

    #[test]
    fn round_trip() {
        let (key, token) = sample();
        let obj = SealedObject::parse(&token, 4096).unwrap();
        assert_eq!(&obj.open(&key, Usage::AsReply).unwrap()[..], b"{\"hello\":1}");
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (key, token) = sample();
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            if bytes[i] == b'.' {
                continue;
            }
            let mut t = bytes.to_vec();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            let ok = SealedObject::parse(&t, 4096).and_then(|o| o.open(&key, Usage::AsReply));
            assert!(ok.is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn wrong_key_and_wrong_usage_are_refused() {
        let (key, token) = sample();
        let obj = SealedObject::parse(&token, 4096).unwrap();
        assert_eq!(obj.open(&SecretKey::generate(), Usage::AsReply), Err(ProtoError::Crypto));
        assert_eq!(obj.open(&key, Usage::TgsReply), Err(ProtoError::Crypto));
    }

    #[test]
    fn relabelled_usage_is_refused() {
        // Rewrite the header to claim another usage: the AAD changes and the
        // derived key changes, so it cannot open.
        let (key, token) = sample();
        let (h, rest) = token.split_once('.').unwrap();
        let json = String::from_utf8(b64::decode(h, "h").unwrap()).unwrap();
        let forged = json.replace("as-reply", "tgs-reply");
        let t = format!("{}.{rest}", b64::encode(forged));
        let obj = SealedObject::parse(&t, 4096).unwrap();
        assert!(obj.open(&key, Usage::TgsReply).is_err());
    }

    #[test]
    fn other_algorithms_are_refused() {
        let (_, token) = sample();
        let (h, rest) = token.split_once('.').unwrap();
        let json = String::from_utf8(b64::decode(h, "h").unwrap()).unwrap();
        for (from, to) in [("\"dir\"", "\"none\""), ("\"A256GCM\"", "\"A128GCM\""), ("\"dir\"", "\"A256KW\"")] {
            let t = format!("{}.{rest}", b64::encode(json.replace(from, to)));
            assert!(SealedObject::parse(&t, 4096).is_err(), "{to} accepted");
        }
        let with_extra = json.replacen('{', "{\"zip\":\"DEF\",", 1);
        let t = format!("{}.{rest}", b64::encode(with_extra));
        assert!(SealedObject::parse(&t, 4096).is_err(), "unknown header field accepted");
    }

    #[test]
    fn framing_and_size_are_checked() {
        let (_, token) = sample();
        assert!(SealedObject::parse(&token, 10).is_err());
        assert!(SealedObject::parse("a.b.c", 4096).is_err());
        assert!(SealedObject::parse(&format!("{token}.x"), 4096).is_err());
        let (h, rest) = token.split_once("..").unwrap();
        assert!(SealedObject::parse(&format!("{h}.AAAA.{rest}"), 4096).is_err());
    }

    #[test]
    fn given_randomness_is_deterministic_and_opens() {
        let key = SecretKey::from_bytes([3u8; KEY_LEN]);
        let r = SealRandomness { salt: [1u8; SALT_LEN], iv: [2u8; IV_LEN] };
        let a = seal_with(&key, "k", Usage::Ticket, b"x", &r).unwrap();
        assert_eq!(a, seal_with(&key, "k", Usage::Ticket, b"x", &r).unwrap());
        let obj = SealedObject::parse(&a, 4096).unwrap();
        assert_eq!(&obj.open(&key, Usage::Ticket).unwrap()[..], b"x");
        assert_ne!(SealRandomness::generate(), SealRandomness::generate());
    }

    #[test]
    fn two_seals_differ() {
        let key = SecretKey::generate();
        assert_ne!(seal(&key, "k", Usage::Ticket, b"x").unwrap(), seal(&key, "k", Usage::Ticket, b"x").unwrap());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Parsing is total: any input is a value or an error, never a panic.
        #[test]
        fn parse_never_panics(s in "\\PC{0,600}") {
            let _ = SealedObject::parse(&s, 4096);
        }

        /// Any five dot-separated base64url-ish parts: parse and open never panic,
        /// and nothing opens without the key.
        #[test]
        fn random_framing_never_opens(parts in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 5)) {
            let t = parts.join(".");
            if let Ok(obj) = SealedObject::parse(&t, 4096) {
                prop_assert!(obj.open(&SecretKey::generate(), Usage::Ticket).is_err());
            }
        }

        /// Sealing and opening round-trips any plaintext.
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let key = SecretKey::generate();
            let t = seal(&key, "k", Usage::MutualReply, &data).unwrap();
            let obj = SealedObject::parse(&t, 8192).unwrap();
            prop_assert_eq!(&obj.open(&key, Usage::MutualReply).unwrap()[..], &data[..]);
        }
    }
}
