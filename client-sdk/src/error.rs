//! The SDK's one error type.

use kdc_proto::{ABOUT_BLANK, ProblemKind};
use thiserror::Error;

/// Everything that can go wrong on the client side. Messages are one line a
/// person can act on, and never contain secrets.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SdkError {
    /// Wrong password or unknown principal: deliberately the same.
    #[error("login failed: wrong principal name or password")]
    LoginFailed,
    /// The KDC refused a keytab login: the principal is unknown, disabled
    /// as a client, or the key is not its current one (the keytab predates
    /// a rotation). Says nothing about the key.
    #[error(
        "login with the keytab of {principal} failed: unknown service, or not its current key (export the keytab \
         again after a rotation)"
    )]
    KeytabLoginFailed {
        /// The principal the keytab names.
        principal: String,
    },
    /// A keytab file could not be used.
    #[error("keytab {path}: {reason}")]
    Keytab {
        /// The file.
        path: String,
        /// Why not (never key material).
        reason: String,
    },
    /// No valid ticket-granting ticket in the cache.
    #[error("not logged in (or the login expired): run `tkt login`")]
    NotLoggedIn,
    /// The KDC throttles this principal or address.
    #[error("too many failed attempts; retry in {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The KDC refused a request (other than a failed login, throttling or
    /// an expired login, which have variants of their own).
    #[error("the KDC refused: {}", kdc_refusal(kind, *status))]
    Kdc {
        /// The problem `type` of its answer ([`ProblemKind::Other`] for a
        /// kind this SDK does not know, `about:blank` for an answer that is
        /// not problem+json).
        kind: ProblemKind,
        /// The HTTP status.
        status: u16,
    },
    /// The KDC's discovery document could not be had.
    #[error("KDC discovery failed: {0}")]
    Discovery(String),
    /// A service refused the request's credentials (the answer carried no
    /// mutual reply, so it is unauthenticated: anyone on the path could
    /// have sent it).
    #[error("the service refused the request: {}", refusal(kind, *status))]
    Refused {
        /// What was refused: the `WWW-Authenticate` `error` code, else the
        /// problem `type` of the body ([`ProblemKind::Other`] for one this
        /// SDK does not know, `about:blank` for neither).
        kind: ProblemKind,
        /// The HTTP status.
        status: u16,
    },
    /// The service's mutual-authentication reply is missing or wrong: the
    /// response cannot be trusted.
    #[error("mutual authentication failed: the response is not from the service or was altered")]
    MutualAuthFailed,
    /// The KDC's answer failed a check (nonce, service, times, decryption).
    #[error("the KDC's reply failed verification")]
    BadKdcReply,
    /// Key-derivation parameters below the floor (or absurd).
    #[error("the KDC asked for an unacceptable password-key derivation: {0}")]
    WeakKeyDerivation(String),
    /// A plain `http://` URL to a host that is not loopback.
    #[error("refusing plain http:// to {0}: use https, or allow insecure transport explicitly")]
    InsecureTransport(String),
    /// A URL's host is not the host the service principal names (its
    /// instance, `HTTP/<host>@REALM`), and the host is not loopback: refused
    /// before anything is sent, so a mistyped or substituted URL cannot
    /// receive credentials meant for another host. See
    /// [`crate::ClientOptions::allow_service_host_mismatch`].
    #[error(
        "refusing to call {host} as {service}: the principal names host {expected}; fix the URL or the service name"
    )]
    ServiceHostMismatch {
        /// The service principal.
        service: String,
        /// The host the principal names (its instance), or `(none)`.
        expected: String,
        /// The URL's host.
        host: String,
    },
    /// An answer's body passed the size the client reads: the KDC's
    /// ([`crate::client::MAX_KDC_RESPONSE_BYTES`]) or a service's
    /// ([`crate::ClientOptions::max_response_body`]).
    #[error("the answer's body is larger than the {limit}-byte limit; refused")]
    ResponseTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A URL or name could not be parsed.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The ticket cache failed.
    #[error("ticket cache: {0}")]
    Cache(String),
    /// A protocol step on this side failed (sealing an authenticator or
    /// pre-authentication data). Says nothing about keys or contents.
    #[error("protocol: {0}")]
    Protocol(#[from] kdc_proto::ProtoError),
    /// The network failed (the host cannot be reached, a timeout, a broken
    /// connection). TLS failures are [`SdkError::Tls`].
    #[error("network: {0}")]
    Http(reqwest::Error),
    /// A TLS handshake failed: most often a certificate the client does not
    /// trust or that names another host. Never retried over plain http.
    #[error(
        "TLS with {host} failed: {reason}; if it uses a private certificate authority, trust it with TKT_CA_CERT \
         (ClientOptions::ca_certificates)"
    )]
    Tls {
        /// The host.
        host: String,
        /// What rustls reported (e.g. `invalid peer certificate: UnknownIssuer`).
        reason: String,
    },
    /// A step of the SDK's own failed (a worker task did not finish).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A CA certificate file could not be used.
    #[error("CA certificate {path}: {reason}")]
    CaCertificate {
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
}

/// A refusal's kind for a message: its name, or the status when the answer
/// named none.
fn refusal(kind: &ProblemKind, status: u16) -> String {
    match kind {
        ProblemKind::Other(uri) if uri == ABOUT_BLANK => format!("status {status}"),
        ProblemKind::Other(_) => format!("{kind} (status {status})"),
        known => known.to_string(),
    }
}

/// A KDC refusal for a message, with what to do about the common ones.
fn kdc_refusal(kind: &ProblemKind, status: u16) -> String {
    let hint = match kind {
        ProblemKind::ClientNotPermitted => ": this principal may not obtain tickets (disabled?)",
        ProblemKind::ClockSkew => ": this machine's clock is off; fix it",
        ProblemKind::UnknownService => ": no such service, or it cannot receive tickets",
        ProblemKind::NotRenewable => ": the ticket is not renewable",
        ProblemKind::WrongRealm => ": the principal is not of the KDC's realm",
        _ => "",
    };
    format!("{}{hint}", refusal(kind, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_well() {
        let kdc = |kind, status| SdkError::Kdc { kind, status }.to_string();
        assert_eq!(
            kdc(ProblemKind::ClientNotPermitted, 403),
            "the KDC refused: client-not-permitted: this principal may not obtain tickets (disabled?)"
        );
        assert_eq!(kdc(ProblemKind::Other(ABOUT_BLANK.into()), 502), "the KDC refused: status 502");
        assert_eq!(
            kdc(ProblemKind::from_type_uri("urn:kdc-http:problem:newer"), 400),
            "the KDC refused: newer (status 400)"
        );
        let refused = SdkError::Refused { kind: ProblemKind::InsufficientRole, status: 403 };
        assert_eq!(refused.to_string(), "the service refused the request: insufficient-role");
    }
}
