//! How long discovery documents and JWK sets may be kept: the KDC says so in
//! `Cache-Control`, and clients and services read it back with
//! [`max_age`].
//!
//! ```
//! use kdc_proto::max_age;
//! assert_eq!(max_age("public, max-age=300"), Some(300));
//! assert_eq!(max_age("no-store, max-age=300"), None);
//! ```

/// What the KDC sends for discovery and its JWK set, seconds. A new signing
/// key is published for longer than this before it signs (`kdc signing-key
/// rotate`).
pub const DISCOVERY_MAX_AGE_SECS: u64 = 300;

/// The longest any client keeps a discovery document or key set, whatever a
/// server says: a day.
pub const MAX_CACHE_AGE_SECS: u64 = 86_400;

/// The `max-age` of a `Cache-Control` value, capped at
/// [`MAX_CACHE_AGE_SECS`]; `None` when there is none, when it does not parse,
/// or when `no-store` or `no-cache` forbid keeping the answer.
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').map_or((directive, None), |(n, v)| (n.trim(), Some(v.trim())));
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return None;
        }
        if name.eq_ignore_ascii_case("max-age") {
            let v = value?.trim_matches('"');
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            age = Some(v.parse::<u64>().unwrap_or(u64::MAX).min(MAX_CACHE_AGE_SECS));
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        assert_eq!(max_age("max-age=0"), Some(0));
        assert_eq!(max_age("Public,MAX-AGE=\"60\""), Some(60));
        assert_eq!(max_age("max-age=99999999999999999999999"), Some(MAX_CACHE_AGE_SECS));
        for none in ["", "public", "max-age=", "max-age=-1", "max-age=1e3", "max-age=5, no-cache", "max-age"] {
            assert_eq!(max_age(none), None, "{none}");
        }
    }
}
