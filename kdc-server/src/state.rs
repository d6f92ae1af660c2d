//! What every handler shares: the KDC, the clock, the advertised URL, the
//! admin layer, the allowed browser origins and the audit trail.

use std::sync::Arc;

use auth_middleware::TicketAuthLayer;
use kdc_proto::Clock;

use crate::audit::AuditLog;
use crate::cors::AllowedOrigins;
use crate::error::KdcError;
use crate::kdc::Kdc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The KDC.
    pub kdc: Arc<Kdc>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// The base URL discovery advertises
    /// ([`crate::config::advertised_base_url`]); never taken from a request.
    pub public_url: String,
    /// The layer guarding `/admin` (the KDC's own middleware, `kadmin/admin`).
    pub admin: TicketAuthLayer,
    /// The origins whose pages may call the KDC ([`crate::cors`]); empty by
    /// default: no CORS headers at all.
    pub cors: AllowedOrigins,
    /// Where ticket and admin events are recorded ([`AppState::with_audit`]);
    /// off unless configured.
    pub audit: AuditLog,
}

impl AppState {
    /// State for `kdc`, with the admin layer built from the KDC's own keys;
    /// its replay cache is kept across clean restarts in `admin_replay_state`
    /// when given (see [`crate::admin::admin_layer`]).
    pub async fn new(
        kdc: Arc<Kdc>,
        clock: Arc<dyn Clock>,
        public_url: String,
        admin_replay_state: Option<&std::path::Path>,
    ) -> Result<Self, KdcError> {
        let admin = crate::admin::admin_layer(&kdc, clock.clone(), admin_replay_state).await?;
        Ok(Self { kdc, clock, public_url, admin, cors: AllowedOrigins::default(), audit: AuditLog::disabled() })
    }

    /// The same state, with browser access for `origins`.
    pub fn with_cors(self, origins: AllowedOrigins) -> Self {
        Self { cors: origins, ..self }
    }

    /// Records ticket exchanges and admin changes to `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = audit;
        self
    }
}
