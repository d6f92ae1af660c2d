//! Parsing `Authorization: Ticket ticket="…", authenticator="…"`.

use kdc_proto::limits::{MAX_AUTHENTICATOR_LEN, MAX_TICKET_LEN};

use crate::rejection::AuthRejection;

pub(crate) use kdc_proto::AUTH_SCHEME as SCHEME;

/// Longest `Authorization` value read (bytes).
pub const MAX_AUTHORIZATION_LEN: usize = MAX_TICKET_LEN + MAX_AUTHENTICATOR_LEN + 64;

/// The two credentials of one request, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The ticket.
    pub ticket: &'a str,
    /// The authenticator.
    pub authenticator: &'a str,
}

/// Parses the header value: the scheme (case-insensitive), then `ticket` and
/// `authenticator` parameters, each exactly once, quoted and non-empty,
/// within their size bounds. Their contents are checked by the strict
/// base64url decoder when they are opened. A header with another scheme is
/// "no credentials"; anything else malformed is refused.
pub fn parse_authorization(value: &str) -> Result<Credentials<'_>, AuthRejection> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthRejection::MalformedCredentials);
    }
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(AuthRejection::MissingCredentials);
    }
    let (mut ticket, mut authenticator) = (None, None);
    for param in params.split(',') {
        let (name, quoted) = param.split_once('=').ok_or(AuthRejection::MalformedCredentials)?;
        let v = quoted
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.is_empty())
            .ok_or(AuthRejection::MalformedCredentials)?;
        let name = name.trim();
        let slot = if name.eq_ignore_ascii_case("ticket") && v.len() <= MAX_TICKET_LEN {
            &mut ticket
        } else if name.eq_ignore_ascii_case("authenticator") && v.len() <= MAX_AUTHENTICATOR_LEN {
            &mut authenticator
        } else {
            return Err(AuthRejection::MalformedCredentials);
        };
        if slot.replace(v).is_some() {
            return Err(AuthRejection::MalformedCredentials);
        }
    }
    match (ticket, authenticator) {
        (Some(ticket), Some(authenticator)) => Ok(Credentials { ticket, authenticator }),
        _ => Err(AuthRejection::MalformedCredentials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdc_proto::authorization_value;

    #[test]
    fn round_trip_and_variants() {
        let v = authorization_value("a.b..c.d.e", "x..y.z.w");
        assert_eq!(parse_authorization(&v).unwrap(), Credentials { ticket: "a.b..c.d.e", authenticator: "x..y.z.w" });
        let v = "ticket   authenticator=\"B\",ticket=\"A\"".replacen("ticket   ", "TICKET ", 1);
        assert_eq!(parse_authorization(&v).unwrap(), Credentials { ticket: "A", authenticator: "B" });
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_authorization("Bearer abc"), Err(AuthRejection::MissingCredentials));
        for bad in [
            "Ticket",
            "Ticket ticket=\"A\"",
            "Ticket ticket=A, authenticator=\"B\"",
            "Ticket ticket=\"A\", ticket=\"C\", authenticator=\"B\"",
            "Ticket ticket=\"A\", authenticator=\"B\", extra=\"C\"",
            "Ticket ticket=\"\", authenticator=\"B\"",
        ] {
            assert_eq!(parse_authorization(bad), Err(AuthRejection::MalformedCredentials), "{bad}");
        }
        // Characters inside the quotes are left to the strict base64url
        // decoder when the ticket is opened (see the verifier's tests).
        let huge = authorization_value(&"A".repeat(MAX_TICKET_LEN + 1), "B");
        assert_eq!(parse_authorization(&huge), Err(AuthRejection::MalformedCredentials));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Header parsing is total: any value is credentials or a refusal.
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = parse_authorization(&s);
            let _ = parse_authorization(&format!("Ticket {s}"));
        }
    }
}
