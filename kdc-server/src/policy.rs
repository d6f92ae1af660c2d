//! Ticket lifetime policy: defaults, per-principal overrides, and clamping of
//! what clients ask for.

use serde::Deserialize;

/// Realm-wide ticket policy.
// Serialize: docs/CONFIGURATION.md's defaults are checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Maximum (and default) ticket lifetime in seconds. Defaults to 10 h.
    pub max_life_secs: u64,
    /// Maximum renewable lifetime in seconds. Defaults to 7 days.
    pub max_renew_secs: u64,
    /// Shortest lifetime a request is raised to. Defaults to 60 s.
    pub min_life_secs: u64,
    /// Maximum clock skew accepted on authenticators and pre-auth, seconds.
    /// Defaults to 300.
    pub max_skew_secs: u64,
    /// How long a rotated-out key version keeps working, seconds. Defaults to
    /// the maximum ticket lifetime plus the skew, so every ticket issued under
    /// it can live out its life.
    pub key_grace_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_life_secs: 10 * 3600,
            max_renew_secs: 7 * 24 * 3600,
            min_life_secs: 60,
            max_skew_secs: 300,
            key_grace_secs: 10 * 3600 + 300,
        }
    }
}

/// The times of a ticket about to be issued (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketTimes {
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
    /// Renew-till, for a renewable ticket.
    pub renew_till: Option<u64>,
}

/// What one issuance is constrained by.
#[derive(Debug, Clone, Copy, Default)]
pub struct LifetimeRequest {
    /// Requested lifetime.
    pub lifetime_secs: Option<u64>,
    /// Whether a renewable ticket was asked for (default yes).
    pub renewable: Option<bool>,
    /// Overrides of the client and the service (the smaller wins).
    pub client_max_life: Option<u64>,
    /// See above.
    pub service_max_life: Option<u64>,
    /// Renewable-lifetime overrides of the client and the service.
    pub client_max_renew: Option<u64>,
    /// See above.
    pub service_max_renew: Option<u64>,
    /// The presented TGT's end and renew-till, which a derived ticket may not outlive.
    pub parent_end: Option<u64>,
    /// See above; `None` with a parent means the parent is not renewable.
    pub parent_renew_till: Option<u64>,
}

impl Policy {
    /// The times of a new ticket issued at `now`.
    pub fn ticket_times(&self, now: u64, req: &LifetimeRequest) -> TicketTimes {
        let max_life = [Some(self.max_life_secs), req.client_max_life, req.service_max_life]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.max_life_secs);
        let life = req.lifetime_secs.unwrap_or(max_life).clamp(self.min_life_secs.min(max_life), max_life);
        let mut end = now.saturating_add(life);
        if let Some(pe) = req.parent_end {
            end = end.min(pe);
        }
        let max_renew = [Some(self.max_renew_secs), req.client_max_renew, req.service_max_renew]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.max_renew_secs);
        let mut renew_till = now.saturating_add(max_renew);
        let parent_allows = match (req.parent_end, req.parent_renew_till) {
            (Some(_), None) => false,
            (_, Some(prt)) => {
                renew_till = renew_till.min(prt);
                true
            }
            (None, None) => true,
        };
        let renewable = req.renewable.unwrap_or(true) && parent_allows && renew_till > end;
        TicketTimes { start: now, end, renew_till: renewable.then_some(renew_till) }
    }

    /// The new end time of a ticket renewed at `now`.
    pub fn renewed_end(
        &self,
        now: u64,
        renew_till: u64,
        client_max_life: Option<u64>,
        service_max_life: Option<u64>,
    ) -> u64 {
        let max_life = [Some(self.max_life_secs), client_max_life, service_max_life]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.max_life_secs);
        now.saturating_add(max_life).min(renew_till)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    #[test]
    fn defaults_are_ten_hours_renewable_seven_days() {
        let t = Policy::default().ticket_times(NOW, &LifetimeRequest::default());
        assert_eq!(t, TicketTimes { start: NOW, end: NOW + 36_000, renew_till: Some(NOW + 604_800) });
    }

    #[test]
    fn requests_are_clamped_and_overrides_win() {
        let p = Policy::default();
        let t = p.ticket_times(NOW, &LifetimeRequest { lifetime_secs: Some(10 * 36_000), ..Default::default() });
        assert_eq!(t.end, NOW + 36_000);
        let t = p.ticket_times(NOW, &LifetimeRequest { lifetime_secs: Some(1), ..Default::default() });
        assert_eq!(t.end, NOW + 60);
        let t = p.ticket_times(
            NOW,
            &LifetimeRequest { client_max_life: Some(600), service_max_life: Some(900), ..Default::default() },
        );
        assert_eq!(t.end, NOW + 600);
        let t = p.ticket_times(NOW, &LifetimeRequest { renewable: Some(false), ..Default::default() });
        assert_eq!(t.renew_till, None);
    }

    #[test]
    fn derived_tickets_do_not_outlive_their_parent() {
        let p = Policy::default();
        let t = p.ticket_times(
            NOW,
            &LifetimeRequest { parent_end: Some(NOW + 100), parent_renew_till: None, ..Default::default() },
        );
        assert_eq!(t, TicketTimes { start: NOW, end: NOW + 100, renew_till: None });
        let t = p.ticket_times(
            NOW,
            &LifetimeRequest { parent_end: Some(NOW + 100), parent_renew_till: Some(NOW + 200), ..Default::default() },
        );
        assert_eq!(t.renew_till, Some(NOW + 200));
        assert_eq!(p.renewed_end(NOW, NOW + 50, None, None), NOW + 50);
    }
}
