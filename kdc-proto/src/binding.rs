//! The canonical form of a request binding: what an authenticator commits to
//! so it cannot be moved to another request.
//!
//! The canonical string is (each line ends with `\n`, including the last):
//!
//! ```text
//! kdc-http-binding/v2
//! <METHOD, as sent, upper case>
//! <authority: host[:port] as in the Host header, lower case>
//! <path with query, exactly as in the request target, no normalisation>
//! <base64url(SHA-256(body)) when the body is bound, else empty>
//! ```
//!
//! The authority makes a captured request useless at any other host, even one
//! of a service that shares the principal (and so the key) but not the replay
//! cache.
//!
//! and the binding carried in the authenticator is
//! `base64url(SHA-256(canonical string))`. Known-answer vectors are in
//! `docs/request-binding.md` and checked by this module's tests.
//!
//! ```
//! use kdc_proto::RequestBinding;
//! let b = RequestBinding::new("GET", "api.example.test", "/hello?x=1", None);
//! assert_eq!(b.canonical(), "kdc-http-binding/v2\nGET\napi.example.test\n/hello?x=1\n\n");
//! assert_ne!(b.digest(), RequestBinding::new("GET", "api.example.test", "/hello?x=2", None).digest());
//! assert_ne!(b.digest(), RequestBinding::new("GET", "web.example.test", "/hello?x=1", None).digest());
//! ```

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::b64;

/// First line of every canonical binding.
pub const BINDING_VERSION: &str = "kdc-http-binding/v2";

/// A request's method, authority, path with query and optional body digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBinding {
    canonical: String,
    binds_body: bool,
}

impl RequestBinding {
    /// The binding of a request to `authority` (`host[:port]`, as the `Host`
    /// header carries it; compared in lower case). Pass `Some(body)` to bind
    /// the body too.
    pub fn new(method: &str, authority: &str, path_and_query: &str, body: Option<&[u8]>) -> Self {
        let body_digest = body.map(body_digest).unwrap_or_default();
        let canonical = format!(
            "{BINDING_VERSION}\n{}\n{}\n{path_and_query}\n{body_digest}\n",
            method.to_ascii_uppercase(),
            authority.to_ascii_lowercase()
        );
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
            (
                RequestBinding::new("GET", "hello.example.test", "/hello", None),
                "ER8xoyqDzy71qA8GhJolCj9PyrXWY7MkZ0X2K1BqsCA",
            ),
            (
                RequestBinding::new("get", "Hello.Example.Test:8443", "/hello?name=alice&x=1", None),
                "Oq9jC94RjqiEqV1ruofXzu98Zdf8qrPj-MLn8wbyPgE",
            ),
            (
                RequestBinding::new("POST", "api.example.test", "/items", Some(b"{\"a\":1}")),
                "Q3tRTi54f1-bKrQ5J9o9EpoR6purNCGy8kpt6E_K0Yw",
            ),
            (
                RequestBinding::new("PUT", "127.0.0.1:8080", "/empty", Some(b"")),
                "8t3hzeHsFDfW9PQ_Gcj_V6RV6rFgY9tEfxC3Z57s-yE",
            ),
            (
                RequestBinding::new("POST", "", "/tickets/renew", Some(b"n\n")),
                "FbPJhRyGIlYcsuObgimz1yxgTGAES7DUWBrlj-jHP0k",
            ),
        ];
        for (b, want) in cases {
            assert_eq!(b.digest(), want, "canonical: {:?}", b.canonical());
        }
    }

    #[test]
    fn every_part_matters() {
        let base = RequestBinding::new("GET", "a.test", "/a?b=1", Some(b"x"));
        for other in [
            RequestBinding::new("POST", "a.test", "/a?b=1", Some(b"x")),
            RequestBinding::new("GET", "b.test", "/a?b=1", Some(b"x")),
            RequestBinding::new("GET", "a.test:8080", "/a?b=1", Some(b"x")),
            RequestBinding::new("GET", "a.test", "/a?b=2", Some(b"x")),
            RequestBinding::new("GET", "a.test", "/a", Some(b"x")),
            RequestBinding::new("GET", "a.test", "/a?b=1", Some(b"y")),
            RequestBinding::new("GET", "a.test", "/a?b=1", None),
        ] {
            assert!(!base.matches(&other.digest()));
        }
        assert!(base.matches(&base.digest()));
        assert!(base.matches(&RequestBinding::new("get", "A.Test", "/a?b=1", Some(b"x")).digest()));
    }
}
