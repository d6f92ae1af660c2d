//! The SDK's one error type.

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
    /// The KDC refused a request.
    #[error("the KDC refused: {0}")]
    Kdc(String),
    /// A service refused the credentials.
    #[error("the service refused the request: {code}")]
    Refused {
        /// Its `WWW-Authenticate` error code, or the status.
        code: String,
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
    /// A CA certificate file could not be used.
    #[error("CA certificate {path}: {reason}")]
    CaCertificate {
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
}
