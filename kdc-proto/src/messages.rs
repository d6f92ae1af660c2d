//! JSON bodies of the KDC's HTTP exchanges, and the plaintexts sealed inside
//! them. `openapi.yaml` describes the same shapes.

use serde::{Deserialize, Serialize};

use crate::binding::RequestBinding;
use crate::keys::{Kvno, SecretKey};
use crate::password::Argon2Params;
use crate::principal::{Principal, Realm};
use crate::ticket::TicketFlags;
use crate::time::UnixMillis;

/// `POST /tickets/initial`: ask for an initial ticket (by default a TGT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialTicketRequest {
    /// The client principal (full name, with realm).
    pub client: Principal,
    /// The service to get a ticket for. Defaults to `krbtgt/REALM@REALM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Principal>,
    /// A random value the client will find again inside the encrypted reply.
    pub nonce: String,
    /// Requested lifetime; clamped by policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
    /// Whether to ask for a renewable ticket. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewable: Option<bool>,
    /// Pre-authentication: a sealed [`PreAuthTimestamp`] under the client's
    /// long-term key. Without it the KDC answers with a challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_auth: Option<String>,
}

/// The plaintext of pre-authentication data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreAuthTimestamp {
    /// The client's current time.
    pub ts: UnixMillis,
    /// The request's nonce, binding this proof to one request.
    pub nonce: String,
}

/// The body of the `401` pre-authentication challenge (a problem+json
/// document with these extension members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreAuthChallenge {
    /// The realm.
    pub realm: Realm,
    /// Always `argon2id`.
    pub kdf: String,
    /// The salt to derive the password key with.
    pub salt: String,
    /// The Argon2id cost.
    pub argon2: Argon2Params,
    /// The KDC's time, so a client with a skewed clock can correct it.
    pub server_time: UnixMillis,
}

/// `POST /tickets`: exchange a TGT for a service ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTicketRequest {
    /// The ticket-granting ticket.
    pub tgt: String,
    /// An authenticator under the TGT session key
    /// ([`crate::seal::Usage::TgsAuthenticator`]), bound to
    /// [`ServiceTicketRequest::binding`].
    pub authenticator: String,
    /// The service to get a ticket for.
    pub service: Principal,
    /// A random value the client will find again inside the encrypted reply.
    pub nonce: String,
    /// Requested lifetime; clamped by policy and by the TGT's end time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
    /// Whether to ask for a renewable ticket. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewable: Option<bool>,
}

impl ServiceTicketRequest {
    /// What the authenticator must be bound to: `POST /tickets` with the
    /// request's choices as the body (see `docs/request-binding.md`).
    pub fn binding(&self) -> RequestBinding {
        Self::binding_for(&self.service, &self.nonce, self.lifetime_secs, self.renewable)
    }

    /// [`Self::binding`] from the parts, for a client building the request.
    pub fn binding_for(
        service: &Principal,
        nonce: &str,
        lifetime_secs: Option<u64>,
        renewable: Option<bool>,
    ) -> RequestBinding {
        let life = lifetime_secs.map(|l| l.to_string()).unwrap_or_default();
        let renew = renewable.map(|r| r.to_string()).unwrap_or_default();
        let body = format!("{service}\n{nonce}\n{life}\n{renew}\n");
        // Empty authority: any KDC instance of the realm may answer, and the
        // reply is sealed for the holder of the TGT session key anyway.
        RequestBinding::new("POST", "", "/tickets", Some(body.as_bytes()))
    }
}

/// `POST /tickets/renew`: extend a renewable ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The renewable ticket (a TGT or a service ticket).
    pub ticket: String,
    /// An authenticator under that ticket's session key
    /// ([`crate::seal::Usage::TgsAuthenticator`]), bound to
    /// [`RenewRequest::binding`].
    pub authenticator: String,
    /// A random value the client will find again inside the encrypted reply.
    pub nonce: String,
}

impl RenewRequest {
    /// What the authenticator must be bound to: `POST /tickets/renew` with the
    /// nonce as the body.
    pub fn binding(&self) -> RequestBinding {
        Self::binding_for(&self.nonce)
    }

    /// [`Self::binding`] from the nonce alone.
    pub fn binding_for(nonce: &str) -> RequestBinding {
        RequestBinding::new("POST", "", "/tickets/renew", Some(format!("{nonce}\n").as_bytes()))
    }
}

/// The reply to every ticket exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketReply {
    /// The client (cleartext, informational: trust [`EncTicketPart`]).
    pub client: Principal,
    /// The ticket, opaque to the client.
    pub ticket: String,
    /// A sealed [`EncTicketPart`]: under the client's long-term key
    /// (`as-reply`) or the presented ticket's session key (`tgs-reply`).
    pub enc_part: String,
}

/// The client's copy of what the KDC issued, sealed so only it can read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncTicketPart {
    /// The new session key.
    pub session_key: SecretKey,
    /// The request's nonce, echoed.
    pub nonce: String,
    /// The service the ticket is for.
    pub service: Principal,
    /// When the client first authenticated (Unix seconds).
    pub auth_time: u64,
    /// Start of validity (Unix seconds).
    pub start_time: u64,
    /// End of validity (Unix seconds).
    pub end_time: u64,
    /// Latest renewal end (Unix seconds), for renewable tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_till: Option<u64>,
    /// Ticket flags.
    pub flags: TicketFlags,
    /// The service key version the ticket is sealed under.
    pub kvno: Kvno,
}

/// `GET /.well-known/kdc-configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdcConfiguration {
    /// The realm.
    pub realm: Realm,
    /// Protocol version label.
    pub protocol_version: String,
    /// Base URL the other URLs are built on.
    pub issuer: String,
    /// `POST` here for initial tickets.
    pub initial_ticket_endpoint: String,
    /// `POST` here for service tickets.
    pub ticket_endpoint: String,
    /// `POST` here for renewals.
    pub renew_endpoint: String,
    /// The KDC's public signing keys.
    pub jwks_uri: String,
    /// Sealed-object algorithms (`alg`, `enc`), the only ones accepted.
    pub sealing: SealingAlgorithms,
    /// Ticket signature algorithms.
    pub signing_alg_values_supported: Vec<String>,
    /// Default password-key derivation cost (each challenge names the
    /// principal's own).
    pub argon2_defaults: Argon2Params,
    /// The lowest derivation cost clients accept.
    pub argon2_floor: Argon2Params,
    /// Maximum clock skew, seconds.
    pub max_clock_skew_secs: u64,
    /// Default ticket lifetime, seconds.
    pub default_ticket_lifetime_secs: u64,
    /// Maximum renewable lifetime, seconds.
    pub max_renewable_lifetime_secs: u64,
    /// Longest ticket the KDC mints, bytes.
    pub max_ticket_bytes: usize,
}

/// The sealing algorithms named in discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealingAlgorithms {
    /// `dir`.
    pub alg: String,
    /// `A256GCM`.
    pub enc: String,
    /// `HKDF-SHA256` per-message content keys.
    pub kdf: String,
}

/// A service keytab: every live key version of one principal. Written with
/// mode 0600; anyone who reads it can impersonate the service.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keytab {
    /// Format version, 1.
    pub version: u32,
    /// The service principal.
    pub principal: Principal,
    /// The keys, newest first.
    pub keys: Vec<KeytabEntry>,
}

impl std::fmt::Debug for Keytab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keytab")
            .field("principal", &self.principal)
            .field("kvnos", &self.keys.iter().map(|k| k.kvno).collect::<Vec<_>>())
            .finish()
    }
}

/// One key version in a keytab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeytabEntry {
    /// The key version.
    pub kvno: Kvno,
    /// The key, base64url (redacted in `Debug`).
    pub key: SecretKey,
    /// Until when the KDC may still issue or honour tickets under it (Unix
    /// seconds); absent for the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}
