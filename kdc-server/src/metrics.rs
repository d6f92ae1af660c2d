//! `GET /metrics`: the KDC's and the audit trail's counters in the
//! Prometheus text exposition format. The one place that knows the format:
//! [`Kdc`] and [`AuditLog`] hand over plain numbers ([`KdcStats`],
//! [`AuditStats`]).

use std::fmt::Write as _;

use crate::audit::{AuditLog, AuditStats};
use crate::kdc::{Kdc, KdcStats};

/// The `Content-Type` of the exposition format this module writes.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
}

/// The text being written, family by family.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    /// Starts a family: its `HELP` and `TYPE` lines.
    fn family(&mut self, name: &str, kind: Type, help: &str) -> &mut Self {
        let kind = match kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample, with at most one label. Label values here are the KDC's
    /// own constants (exchange names, problem slugs), never client input, so
    /// they need no escaping.
    fn sample(&mut self, name: &str, label: Option<(&str, &str)>, value: u64) -> &mut Self {
        let _ = match label {
            Some((key, val)) => writeln!(self.0, "{name}{{{key}=\"{val}\"}} {value}"),
            None => writeln!(self.0, "{name} {value}"),
        };
        self
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: Type, help: &str, value: u64) -> &mut Self {
        self.family(name, kind, help).sample(name, None, value)
    }

    fn kdc(&mut self, s: &KdcStats) {
        const ISSUED: &str = "kdc_tickets_issued_total";
        self.family(ISSUED, Type::Counter, "Tickets issued, by exchange.");
        for (exchange, n) in [("initial", s.issued_initial), ("service", s.issued_service), ("renew", s.renewed)] {
            self.sample(ISSUED, Some(("exchange", exchange)), n);
        }
        self.single(
            "kdc_preauth_challenges_total",
            Type::Counter,
            "Pre-authentication challenges answered (the first step of a login).",
            s.preauth_challenges,
        );
        const REFUSED: &str = "kdc_requests_refused_total";
        self.family(
            REFUSED,
            Type::Counter,
            "Refused exchanges, by problem kind (the pre-authentication challenge is not one: see \
             kdc_preauth_challenges_total).",
        );
        for (kind, n) in &s.refusals {
            self.sample(REFUSED, Some(("problem", kind)), *n);
        }
        self.single(
            "kdc_replay_cache_entries",
            Type::Gauge,
            "Entries in the KDC's replay cache.",
            s.replay_cache_entries,
        );
        self.single(
            "kdc_replay_cache_unavailable_total",
            Type::Counter,
            "Exchanges refused (503) because the shared replay cache or pre-authentication throttle (Redis) could \
             not be reached or did not answer in time.",
            s.replay_cache_unavailable,
        );
        self.single(
            "kdc_verified_ticket_cache_entries",
            Type::Gauge,
            "Presented tickets already verified.",
            s.verified_ticket_cache_entries,
        );
        self.single(
            "kdc_throttle_entries",
            Type::Gauge,
            "Failed-pre-authentication counters held (bounded by max_tracked).",
            s.throttle_entries,
        );
    }

    fn audit(&mut self, s: &AuditStats) {
        self.single("kdc_audit_events_total", Type::Counter, "Audit events written.", s.written)
            .single(
                "kdc_audit_write_failures_total",
                Type::Counter,
                "Audit events that could not be written.",
                s.write_failures,
            )
            .single(
                "kdc_audit_sync_failures_total",
                Type::Counter,
                "Syncs of written audit events to disk that failed.",
                s.sync_failures,
            )
            .single(
                "kdc_audit_events_dropped_total",
                Type::Counter,
                "Ticket events dropped because the audit queue was full.",
                s.dropped,
            )
            .single("kdc_audit_queue_length", Type::Gauge, "Audit events waiting for the writer.", s.queued)
            .single(
                "kdc_audit_writer_stalled",
                Type::Gauge,
                "1 while the audit writer has been stuck in one write or sync for over 2 s.",
                u64::from(s.stalled),
            );
    }
}

/// Everything `GET /metrics` answers.
pub(crate) fn render(kdc: &Kdc, audit: &AuditLog) -> String {
    let mut out = Exposition::default();
    out.kdc(&kdc.stats());
    out.audit(&audit.stats());
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample belongs to the family announced just before it, and
    /// every family has both its lines: what a Prometheus parser insists on.
    #[test]
    fn every_sample_follows_its_family_header() {
        let mut refusals = std::collections::BTreeMap::new();
        refusals.insert("preauth-failed", 3);
        refusals.insert("replay", 1);
        let stats = KdcStats { issued_initial: 2, refusals, ..KdcStats::default() };
        let mut out = Exposition::default();
        out.kdc(&stats);
        out.audit(&AuditStats { stalled: true, ..AuditStats::default() });
        let text = out.0;
        let mut family = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest.split(' ').next(), family, "{line}");
            } else {
                let name = line.split(['{', ' ']).next();
                assert_eq!(name, family, "{line}");
            }
        }
        assert!(text.contains("kdc_tickets_issued_total{exchange=\"initial\"} 2\n"), "{text}");
        assert!(text.contains("kdc_requests_refused_total{problem=\"preauth-failed\"} 3\n"), "{text}");
        assert!(text.contains("kdc_audit_writer_stalled 1\n"), "{text}");
    }
}
