//! Wire types and cryptography of the HTTP ticket authority, shared by the
//! KDC, the service middleware and the client SDK. No HTTP, no async runtime:
//! every check here is a plain function of its inputs and the current time.
//!
//! A ticket round trip, as the KDC mints it and a service checks it:
//!
//! ```
//! use kdc_proto::*;
//!
//! let now = UnixMillis::from_secs(1_800_000_000);
//! let kdc = KdcSigningKey::generate();
//! let verifier = KdcVerifier::from_jwks(&JwkSet { keys: vec![kdc.public_jwk()] });
//! let service: Principal = "HTTP/api.example.test@EXAMPLE.TEST".parse()?;
//! let service_key = LongTermKey { kvno: Kvno(1), key: SecretKey::generate() };
//! let session_key = SecretKey::generate();
//!
//! // KDC: sign the claims, seal them for the service.
//! let claims = TicketClaims {
//!     jti: "t-1".into(), iss: service.realm().clone(),
//!     sub: "alice@EXAMPLE.TEST".parse()?, cid: "id-alice".into(),
//!     aud: service.clone(), sid: "id-api".into(), skey: session_key.clone(),
//!     auth_time: now.as_secs(), nbf: now.as_secs(), exp: now.as_secs() + 36_000,
//!     renew_till: None, flags: TicketFlags::default(), roles: vec!["reader".into()],
//! };
//! let ticket = mint_ticket(&claims, &kdc, &service_key)?;
//!
//! // Client: an authenticator bound to the request it is about to send.
//! let binding = RequestBinding::new("GET", "api.example.test", "/hello", None);
//! let auth = Authenticator::new(claims.sub.clone(), now, &binding)
//!     .seal(&session_key, Usage::Authenticator)?;
//!
//! // Service: open the ticket, then the authenticator.
//! let sealed = SealedTicket::parse(&ticket)?;
//! let check = TicketCheck { service: &service, kdc: &verifier, now, max_skew_secs: 300 };
//! let verified = open_ticket(&sealed, &service_key.key, &check)?;
//! let checked = open_authenticator(&auth, &verified, Usage::Authenticator, &binding, now, 300)?;
//! assert_eq!(checked.authenticator().client.to_string(), "alice@EXAMPLE.TEST");
//! # Ok::<(), kdc_proto::ProtoError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod authenticator;
pub mod b64;
mod binding;
mod caching;
mod error;
mod exchange;
mod headers;
mod keys;
pub mod limits;
mod messages;
mod mutual;
mod password;
mod principal;
mod problem;
mod seal;
mod signing;
mod ticket;
mod time;

// Principals, keys and time.
pub use error::ProtoError;
pub use keys::{KEY_LEN, Kvno, LongTermKey, SecretKey, long_term_kid, parse_long_term_kid};
pub use password::{Argon2Params, derive_password_key, password_salt};
pub use principal::{Principal, Realm};
pub use time::{AcceptanceWindow, Clock, FixedClock, SystemClock, UnixMillis};

// Sealed objects (compact JWE, `dir` + `A256GCM`).
pub use seal::{ALG, ENC, KDF_LABEL, SealRandomness, SealedHeader, SealedObject, Usage, seal, seal_json, seal_with};

// Tickets, authenticators and the service's mutual reply.
pub use authenticator::{
    AUTH_SCHEME, Authenticator, CheckedAuthenticator, SESSION_KID, TimelyAuthenticator, authorization_value,
    open_authenticator, open_authenticator_timely,
};
pub use binding::{BINDING_VERSION, RequestBinding, body_digest};
pub use mutual::{ErrorDetail, MutualReply, verify_mutual_reply};
pub use signing::{JwkSet, KdcSigningKey, KdcVerifier, PublicJwk};
pub use ticket::{SealedTicket, TicketCheck, TicketClaims, TicketFlags, VerifiedTicket, mint_ticket, open_ticket};

// The KDC's exchanges and documents.
pub use exchange::{IssuedTicket, REFRESH_FRACTION_PERCENT, new_nonce};
pub use messages::{
    EncTicketPart, InitialTicketRequest, KdcConfiguration, Keytab, KeytabEntry, PreAuthChallenge, PreAuthTimestamp,
    RenewRequest, SealingAlgorithms, ServiceTicketRequest, TicketReply,
};

// HTTP vocabulary: problem documents, headers, caching.
pub use caching::{DISCOVERY_MAX_AGE_SECS, MAX_CACHE_AGE_SECS, max_age};
pub use headers::{AUTHENTICATION_INFO, AuthenticationInfo, Challenge, PREAUTH_SCHEME};
pub use problem::{ABOUT_BLANK, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX, Problem, ProblemKind, reason_phrase};
