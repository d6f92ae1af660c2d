//! The protocol crate's one error type.

use thiserror::Error;

/// Everything that can go wrong while parsing, sealing, opening or checking a
/// protocol object.
///
/// Cryptographic failures are deliberately opaque ([`ProtoError::Crypto`]): a
/// wrong key, a flipped bit, a wrong usage and a truncated tag all look the
/// same, so an attacker learns nothing about which part was wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// A principal name does not follow `name[/instance]@REALM`.
    #[error("invalid principal name: {0}")]
    InvalidPrincipal(&'static str),
    /// An encoded object is not well formed (framing, base64, JSON, header).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// An encoded object is larger than the protocol allows.
    #[error("{what} exceeds the maximum size of {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The bound, in bytes.
        max: usize,
    },
    /// Decryption or authentication failed. Deliberately says nothing more.
    #[error("cryptographic check failed")]
    Crypto,
    /// The KDC signature inside a ticket is missing, unknown or invalid.
    #[error("ticket signature is not valid")]
    Signature,
    /// Key-derivation parameters are unusable or below the accepted floor.
    #[error("key derivation parameters are not acceptable: {0}")]
    WeakKeyDerivation(&'static str),
    /// A sealed object names a service other than the one checking it.
    #[error("ticket is for another service")]
    WrongService,
    /// A ticket is sealed under a key version the receiver does not hold.
    #[error("unknown key version")]
    UnknownKeyVersion,
    /// The ticket's end time has passed.
    #[error("ticket expired")]
    TicketExpired,
    /// The ticket's start time is still ahead (beyond the allowed skew).
    #[error("ticket not yet valid")]
    TicketNotYetValid,
    /// A timestamp is further from the receiver's clock than the allowed skew.
    #[error("clock skew too great")]
    ClockSkew {
        /// The receiver's time, so an honest sender can correct its offset.
        server_time: crate::time::UnixMillis,
        /// The refused authenticator's nonce, so the receiver can bind an
        /// authenticated answer to it.
        nonce: String,
    },
    /// The authenticator names a different client than the ticket.
    #[error("authenticator does not match the ticket")]
    ClientMismatch,
    /// The authenticator was made for a different request.
    #[error("authenticator is bound to another request")]
    BindingMismatch,
    /// A KDC reply does not answer the request it came for: another nonce,
    /// another service, or times that end before they start.
    #[error("the reply does not answer the request")]
    ReplyMismatch,
    /// A ticket would be larger than the documented cap and was not minted.
    #[error("ticket would be {size} bytes, over the cap of {max}")]
    TicketTooLarge {
        /// The size the ticket would have had.
        size: usize,
        /// The cap ([`crate::limits::MAX_TICKET_LEN`]).
        max: usize,
    },
}
