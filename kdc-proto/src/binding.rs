//! The canonical form of a request binding: what an authenticator commits to
//! so it cannot be moved to another request.
//!
//! The canonical string is (each line ends with `\n`, including the last):
//!
//! ```text
//! kdc-http-binding/v1
//! <METHOD, as sent, upper case>
//! <path with query, exactly as in the request target, no normalisation>
//! <base64url(SHA-256(body)) when the body is bound, else empty>
//! ```
//!
//! and the binding carried in the authenticator is
//! `base64url(SHA-256(canonical string))`. Known-answer vectors are in
//! `docs/request-binding.md` and checked by this module's tests.
//!
//! ```
//! use kdc_proto::RequestBinding;
//! let b = RequestBinding::new("GET", "/hello?x=1", None);
//! assert_eq!(b.canonical(), "kdc-http-binding/v1\nGET\n/hello?x=1\n\n");
//! assert_ne!(b.digest(), RequestBinding::new("GET", "/hello?x=2", None).digest());
//! ```

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::b64;

/// First line of every canonical binding.
pub const BINDING_VERSION: &str = "kdc-http-binding/v1";

/// A request's method, path with query and optional body digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBinding {
    canonical: String,
    binds_body: bool,
}

impl RequestBinding {
    /// The binding of a request. Pass `Some(body)` to bind the body too.
    pub fn new(method: &str, path_and_query: &str, body: Option<&[u8]>) -> Self {
        let body_digest = body.map(body_digest).unwrap_or_default();
        let canonical =
            format!("{BINDING_VERSION}\n{}\n{path_and_query}\n{body_digest}\n", method.to_ascii_uppercase());
        Self { canonical, binds_body: body.is_some() }
    }

    /// Whether the body is part of this binding.
    pub fn binds_body(&self) -> bool {
        self.binds_body
    }

    /// The canonical string.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// `base64url(SHA-256(canonical))`, what the authenticator carries.
    pub fn digest(&self) -> String {
        b64::encode(Sha256::digest(self.canonical.as_bytes()))
    }

    /// Whether `claimed` (from an authenticator) is this binding's digest,
    /// compared in constant time.
    pub fn matches(&self, claimed: &str) -> bool {
        self.digest().as_bytes().ct_eq(claimed.as_bytes()).into()
    }
}

/// `base64url(SHA-256(body))`.
pub fn body_digest(body: &[u8]) -> String {
    b64::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors published in docs/request-binding.md.
    #[test]
    fn known_answers() {
        let cases = [
            (RequestBinding::new("GET", "/hello", None), "yNcXXikJND5f-IostuvBV6YuJEZltrtkbnuyb4QzxGY"),
            (RequestBinding::new("get", "/hello?name=alice&x=1", None), "gGsqwGG-RQwScZ4U9I-g7Pck1EE4E9t81HkU7pksKT8"),
            (RequestBinding::new("POST", "/items", Some(b"{\"a\":1}")), "XNuLEzwEMi8qZFu9VbVd0PkNTW-lntb0VZkudMzpV2Y"),
            (RequestBinding::new("PUT", "/empty", Some(b"")), "IVsYqRuX6_91pOds21vXZ43HUej11VUgdVMk0_zPfYA"),
        ];
        for (b, want) in cases {
            assert_eq!(b.digest(), want, "canonical: {:?}", b.canonical());
        }
    }

    #[test]
    fn every_part_matters() {
        let base = RequestBinding::new("GET", "/a?b=1", Some(b"x"));
        for other in [
            RequestBinding::new("POST", "/a?b=1", Some(b"x")),
            RequestBinding::new("GET", "/a?b=2", Some(b"x")),
            RequestBinding::new("GET", "/a", Some(b"x")),
            RequestBinding::new("GET", "/a?b=1", Some(b"y")),
            RequestBinding::new("GET", "/a?b=1", None),
        ] {
            assert!(!base.matches(&other.digest()));
        }
        assert!(base.matches(&base.digest()));
    }
}
