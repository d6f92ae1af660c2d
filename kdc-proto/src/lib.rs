//! Wire types and cryptography of the HTTP ticket authority, shared by the
//! KDC, the service middleware and the client SDK. No HTTP, no async runtime:
//! every check here is a plain function of its inputs and the current time.
//!
//! A ticket round trip, as the KDC mints it and a service checks it:
//!
//! ```
//! use kdc_proto::*;
//! use kdc_proto::seal::Usage;
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

pub mod authenticator;
pub mod b64;
pub mod binding;
pub mod caching;
pub mod error;
pub mod exchange;
pub mod headers;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod mutual;
pub mod password;
pub mod principal;
pub mod problem;
pub mod seal;
pub mod signing;
pub mod ticket;
pub mod time;

pub use authenticator::{
    Authenticator, CheckedAuthenticator, TimelyAuthenticator, open_authenticator, open_authenticator_timely,
};
pub use binding::RequestBinding;
pub use error::ProtoError;
pub use exchange::IssuedTicket;
pub use headers::{AuthenticationInfo, Challenge};
pub use keys::{Kvno, LongTermKey, SecretKey};
pub use mutual::{ErrorDetail, MutualReply, verify_mutual_reply};
pub use password::{Argon2Params, derive_password_key, password_salt};
pub use principal::{Principal, Realm};
pub use problem::{Problem, ProblemKind};
pub use signing::{JwkSet, KdcSigningKey, KdcVerifier, PublicJwk};
pub use ticket::{SealedTicket, TicketCheck, TicketClaims, TicketFlags, VerifiedTicket, mint_ticket, open_ticket};
pub use time::{AcceptanceWindow, Clock, SystemClock, UnixMillis};
