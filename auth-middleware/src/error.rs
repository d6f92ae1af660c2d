//! Configuration errors (request refusals are [`crate::AuthRejection`]).

use std::path::PathBuf;

use thiserror::Error;

/// Why the layer could not be built or reloaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No keytab was given.
    #[error("no keytab configured")]
    MissingKeytab,
    /// No KDC verification keys were given (neither a JWK set nor a `jwks_uri`).
    #[error("no KDC verification keys configured")]
    MissingKdcKeys,
    /// The keytab file could not be read.
    #[error("keytab {path}: {source}")]
    KeytabIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The keytab is not a valid keytab.
    #[error("keytab {0}: not a valid keytab")]
    KeytabFormat(PathBuf),
    /// The keytab holds no live key.
    #[error("keytab holds no live key")]
    EmptyKeytab,
    /// The keytab is for another principal than the configured one.
    #[error("keytab is for {found}, not {expected}")]
    KeytabPrincipal {
        /// Configured.
        expected: String,
        /// In the keytab.
        found: String,
    },
    /// The replay-cache state file could not be read or written.
    #[error("replay state {path}: {source}")]
    ReplayState {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The shared replay cache could not be set up (a bad URL). The URL is
    /// not repeated: it may hold a password.
    #[error("replay cache: {0}")]
    ReplayCache(String),
    /// A CA certificate file for the JWK-set fetch could not be used.
    #[error("CA certificate {path}: {reason}")]
    CaCertificate {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The KDC's JWK set could not be fetched.
    #[error("fetching the KDC keys from {uri}: {reason}")]
    Jwks {
        /// Where from.
        uri: String,
        /// Why not.
        reason: String,
    },
}
