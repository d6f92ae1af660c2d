//! Time as a value passed in, never read inside protocol logic.

use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time as whole milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// From whole seconds since the epoch (saturating).
    pub fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// This instant plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// The absolute distance between two instants, in milliseconds.
    pub fn abs_diff(self, other: Self) -> u64 {
        self.0.abs_diff(other.0)
    }
}

/// The instants at which a receiver accepts a timestamp `ts` given an
/// allowed skew: from `ts − skew` to `ts + skew`, both ends included.
///
/// This is the one definition of the window: the timeliness check uses
/// [`AcceptanceWindow::contains`], a replay cache remembers an entry through
/// [`AcceptanceWindow::closes`] (so it outlives every instant the entry could
/// be accepted), and a cache that started at `since` refuses what
/// [`AcceptanceWindow::opens`] before it (it could have been accepted, unseen,
/// by an earlier process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptanceWindow {
    /// The first instant `ts` is accepted.
    pub opens: UnixMillis,
    /// The last instant `ts` is accepted.
    pub closes: UnixMillis,
}

impl AcceptanceWindow {
    /// The window of `ts` under `max_skew_secs`.
    pub fn of(ts: UnixMillis, max_skew_secs: u64) -> Self {
        let skew = max_skew_secs.saturating_mul(1000);
        Self { opens: UnixMillis(ts.0.saturating_sub(skew)), closes: UnixMillis(ts.0.saturating_add(skew)) }
    }

    /// Whether `now` lies in the window.
    pub fn contains(&self, now: UnixMillis) -> bool {
        self.opens <= now && now <= self.closes
    }
}

/// A source of the current time. Everything that needs "now" takes it as an
/// argument; only the edge of a program asks a `Clock`.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> UnixMillis;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&self) -> UnixMillis {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that always says the same time, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub UnixMillis);

impl Clock for FixedClock {
    fn now(&self) -> UnixMillis {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_inclusive_at_both_ends() {
        let w = AcceptanceWindow::of(UnixMillis(10_000), 3);
        assert_eq!(w, AcceptanceWindow { opens: UnixMillis(7_000), closes: UnixMillis(13_000) });
        assert!(w.contains(UnixMillis(7_000)) && w.contains(UnixMillis(13_000)));
        assert!(!w.contains(UnixMillis(6_999)) && !w.contains(UnixMillis(13_001)));
        // Saturates instead of wrapping near the ends of time.
        assert_eq!(AcceptanceWindow::of(UnixMillis(1), 3).opens, UnixMillis(0));
        assert_eq!(AcceptanceWindow::of(UnixMillis(u64::MAX), 3).closes, UnixMillis(u64::MAX));
    }
}
