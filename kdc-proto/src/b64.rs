//! base64url without padding, strict: non-canonical encodings are refused so
//! one value has exactly one encoding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ProtoError;

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, refusing padding, other alphabets and
/// non-zero trailing bits.
pub fn decode(s: impl AsRef<[u8]>, what: &'static str) -> Result<Vec<u8>, ProtoError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| ProtoError::Malformed(what))
}
