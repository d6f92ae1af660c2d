//! The protocol's HTTP authentication headers besides `Authorization`
//! ([`crate::authenticator::authorization_value`]), each a typed value with
//! one encoder (`Display`) and one parser (`FromStr`):
//!
//! - [`Challenge`], `WWW-Authenticate` on every `401`: `Ticket realm="R"`,
//!   with `error="<code>"` (and for a clock refusal `server_time="<sealed>"`)
//!   when a ticket or authenticator was refused, or `KDC-PreAuth realm="R"`
//!   for the KDC's pre-authentication challenge;
//! - [`AuthenticationInfo`], `Authentication-Info: mutual="<sealed>"`, the
//!   service's mutual reply.
//!
//! Parameters follow RFC 9110's `auth-param` grammar: names are
//! case-insensitive, values a token or a quoted string; the parsers ignore
//! parameters they do not know, and refuse one given twice.
//!
//! ```
//! use kdc_proto::{AuthenticationInfo, Challenge};
//! use kdc_proto::ProblemKind;
//!
//! let c = Challenge::Ticket { realm: "EXAMPLE.TEST".into(), error: Some(ProblemKind::TicketExpired), server_time: None };
//! assert_eq!(c.to_string(), r#"Ticket realm="EXAMPLE.TEST", error="ticket_expired""#);
//! assert_eq!(c.to_string().parse::<Challenge>()?, c);
//! let info: AuthenticationInfo = r#"mutual="eyJ.x.y.z.w""#.parse()?;
//! assert_eq!(info.mutual, "eyJ.x.y.z.w");
//! # Ok::<(), kdc_proto::ProtoError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::authenticator::AUTH_SCHEME;
use crate::error::ProtoError;
use crate::problem::ProblemKind;

/// The auth-scheme of the KDC's pre-authentication challenge.
pub const PREAUTH_SCHEME: &str = "KDC-PreAuth";

/// The name of the `Authentication-Info` header (lower case, as HTTP/2
/// writes it).
pub const AUTHENTICATION_INFO: &str = "authentication-info";

/// A `WWW-Authenticate` value of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Challenge {
    /// `Ticket realm="R"[, error="<code>"][, server_time="<sealed>"]`: a
    /// service's refusal (without `error` when no credentials came), or the
    /// KDC's of a presented ticket or authenticator.
    Ticket {
        /// The realm.
        realm: String,
        /// What was refused, written as its `error` code.
        error: Option<ProblemKind>,
        /// With `clock_skew` and `stale_authenticator` from a service: its
        /// time, an [`crate::ErrorDetail`] sealed under the session key.
        server_time: Option<String>,
    },
    /// `KDC-PreAuth realm="R"`: the KDC's other `401`s (pre-authentication
    /// required or failed).
    PreAuth {
        /// The realm.
        realm: String,
    },
}

/// `Authentication-Info: mutual="<sealed>"`: the service's mutual reply, a
/// sealed [`crate::MutualReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationInfo {
    /// The sealed mutual reply.
    pub mutual: String,
}

/// A quoted-string of `value`, with `"` and `\` left out rather than
/// escaped: no value of the protocol holds them (realms, codes and sealed
/// objects do not), and a peer's parser need not know escapes.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for part in self.0.split(['"', '\\']) {
            f.write_str(part)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Challenge {
    /// The header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ticket { realm, error, server_time } => {
                write!(f, "{AUTH_SCHEME} realm={}", Quoted(realm))?;
                if let Some(e) = error {
                    write!(f, ", error={}", Quoted(&e.error_code()))?;
                }
                if let Some(t) = server_time {
                    write!(f, ", server_time={}", Quoted(t))?;
                }
                Ok(())
            }
            Self::PreAuth { realm } => write!(f, "{PREAUTH_SCHEME} realm={}", Quoted(realm)),
        }
    }
}

impl FromStr for Challenge {
    type Err = ProtoError;

    /// Parses one challenge of the protocol's two schemes (case-insensitive);
    /// `realm` is required, unknown parameters are ignored.
    fn from_str(value: &str) -> Result<Self, ProtoError> {
        const WHAT: &str = "WWW-Authenticate";
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let params = AuthParams::parse(rest, WHAT)?;
        let realm = params.get("realm").ok_or(ProtoError::Malformed(WHAT))?.to_owned();
        if scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
            Ok(Self::Ticket {
                realm,
                error: params.get("error").map(ProblemKind::from_error_code),
                server_time: params.get("server_time").map(str::to_owned),
            })
        } else if scheme.eq_ignore_ascii_case(PREAUTH_SCHEME) {
            Ok(Self::PreAuth { realm })
        } else {
            Err(ProtoError::Malformed(WHAT))
        }
    }
}

impl fmt::Display for AuthenticationInfo {
    /// The header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mutual={}", Quoted(&self.mutual))
    }
}

impl FromStr for AuthenticationInfo {
    type Err = ProtoError;

    /// Parses the parameter list; `mutual` is required, other parameters
    /// are ignored.
    fn from_str(value: &str) -> Result<Self, ProtoError> {
        const WHAT: &str = "Authentication-Info";
        let params = AuthParams::parse(value, WHAT)?;
        Ok(Self { mutual: params.get("mutual").ok_or(ProtoError::Malformed(WHAT))?.to_owned() })
    }
}

/// A parsed `#auth-param` list: lower-cased names and unquoted values.
struct AuthParams(Vec<(String, String)>);

impl AuthParams {
    /// `name=value` pairs separated by commas (empty list elements allowed,
    /// as RFC 9110's `#` rule does), values a token or a quoted string with
    /// `\` escapes. A name given twice is refused: which one a reader took
    /// would be a guess.
    fn parse(s: &str, what: &'static str) -> Result<Self, ProtoError> {
        let bad = || ProtoError::Malformed(what);
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let mut out: Vec<(String, String)> = Vec::new();
        let mut rest = s;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return Ok(Self(out));
            }
            let name_len = rest.find(|c| !is_tchar(c)).unwrap_or(rest.len());
            let (name, after) = rest.split_at(name_len);
            let after = after.trim_start_matches([' ', '\t']).strip_prefix('=').ok_or_else(bad)?;
            let after = after.trim_start_matches([' ', '\t']);
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => unquote(quoted).ok_or_else(bad)?,
                None => {
                    let len = after.find(|c| !is_tchar(c)).unwrap_or(after.len());
                    let (token, after) = after.split_at(len);
                    if token.is_empty() {
                        return Err(bad());
                    }
                    (token.to_owned(), after)
                }
            };
            if name.is_empty() {
                return Err(bad());
            }
            let name = name.to_ascii_lowercase();
            if out.iter().any(|(n, _)| *n == name) {
                return Err(bad());
            }
            out.push((name, value));
            rest = after.trim_start_matches([' ', '\t']);
            if !rest.is_empty() && !rest.starts_with(',') {
                return Err(bad());
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The contents of a quoted string whose opening quote is already consumed,
/// and what follows its closing quote; `None` when it is not closed.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, s.get(i + 1..)?)),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(error: Option<ProblemKind>, server_time: Option<&str>) -> Challenge {
        Challenge::Ticket { realm: "EXAMPLE.TEST".into(), error, server_time: server_time.map(str::to_owned) }
    }

    /// The exact bytes the KDC and services have always sent.
    #[test]
    fn encodings_are_the_documented_ones() {
        assert_eq!(ticket(None, None).to_string(), r#"Ticket realm="EXAMPLE.TEST""#);
        assert_eq!(
            ticket(Some(ProblemKind::InvalidRequest), None).to_string(),
            r#"Ticket realm="EXAMPLE.TEST", error="invalid_request""#
        );
        assert_eq!(
            ticket(Some(ProblemKind::ClockSkew), Some("a.b.c.d.e")).to_string(),
            r#"Ticket realm="EXAMPLE.TEST", error="clock_skew", server_time="a.b.c.d.e""#
        );
        assert_eq!(
            Challenge::PreAuth { realm: "EXAMPLE.TEST".into() }.to_string(),
            r#"KDC-PreAuth realm="EXAMPLE.TEST""#
        );
        assert_eq!(Challenge::PreAuth { realm: String::new() }.to_string(), r#"KDC-PreAuth realm="""#);
        // Quotes and backslashes cannot break out of a value.
        assert_eq!(Challenge::PreAuth { realm: r#"A"B\C"#.into() }.to_string(), r#"KDC-PreAuth realm="ABC""#);
        assert_eq!(AuthenticationInfo { mutual: "x.y".into() }.to_string(), r#"mutual="x.y""#);
    }

    #[test]
    fn what_is_encoded_parses_back() {
        for c in [
            ticket(None, None),
            ticket(Some(ProblemKind::TicketExpired), None),
            ticket(Some(ProblemKind::StaleAuthenticator), Some("a.b.c.d.e")),
            ticket(Some(ProblemKind::Other("urn:kdc-http:problem:newer".into())), None),
            Challenge::PreAuth { realm: "R".into() },
        ] {
            assert_eq!(c.to_string().parse::<Challenge>(), Ok(c.clone()), "{c}");
        }
        let info = AuthenticationInfo { mutual: "eyJ.a.b.c.d".into() };
        assert_eq!(info.to_string().parse(), Ok(info));
    }

    #[test]
    fn parsing_follows_the_auth_param_grammar() {
        let c: Challenge = "ticket REALM = R ,, Error=replay, extra=\"a, b\\\"c\"".parse().unwrap();
        assert_eq!(c, Challenge::Ticket { realm: "R".into(), error: Some(ProblemKind::Replay), server_time: None });
        let info: AuthenticationInfo = "nextnonce=\"x\", mutual=\"m\"".parse().unwrap();
        assert_eq!(info.mutual, "m");
        for bad in [
            "Ticket",
            "Ticket error=\"replay\"",
            "Basic realm=\"R\"",
            "Ticket realm=\"R\", realm=\"S\"",
            "Ticket realm=\"R",
            "Ticket realm=\"R\" error=\"replay\"",
            "Ticket realm",
            "Ticket =\"R\"",
        ] {
            assert!(bad.parse::<Challenge>().is_err(), "{bad}");
        }
        for bad in ["", "mutual", "mutual=\"a", "mutual=\"a\", mutual=\"b\"", "other=\"x\""] {
            assert!(bad.parse::<AuthenticationInfo>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The parsers are total, and what parses re-encodes to a value that
        /// parses the same.
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,200}") {
            if let Ok(c) = s.parse::<Challenge>() {
                let again: Challenge = c.to_string().parse().unwrap();
                prop_assert_eq!(again.to_string(), c.to_string());
            }
            let _ = format!("Ticket {s}").parse::<Challenge>();
            if let Ok(i) = s.parse::<AuthenticationInfo>() {
                prop_assert_eq!(i.to_string().parse::<AuthenticationInfo>().unwrap().to_string(), i.to_string());
            }
        }
    }
}
