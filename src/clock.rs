//! The wall clock and random ids: the only places either is read.
//!
//! Everything that decides (tick, next fire, message building, release
//! plans) takes `now` as an argument. The drivers read it from a
//! [`Clock`]: the system clock in production, or a manual one in tests,
//! which set it to the instants they want (an hour of schedule in a few
//! steps, no sleep). `clippy.toml` disallows `Utc::now`,
//! `SystemTime::now` and `Uuid::new_v4` everywhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where the drivers read the time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The host's wall clock.
    System,
    /// A clock that moves only when told (tests): microseconds since the
    /// epoch, shared by every copy.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock reading `at`.
    pub fn manual(at: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(at.timestamp_micros())))
    }

    /// The wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => system_now(),
            Clock::Manual(us) => DateTime::from_timestamp_micros(us.load(Ordering::SeqCst))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }

    /// Sets a manual clock (the system clock is not ours to set).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Clock::Manual(us) = self {
            us.store(at.timestamp_micros(), Ordering::SeqCst);
        }
    }
}

/// How far the host clock may be from the database's before this replica
/// stops leading and releasing. NTP keeps hosts within milliseconds of each
/// other; two seconds leaves room for the measurement's own error (half a
/// round trip) and rules out a host whose clock stepped.
pub const MAX_SKEW: chrono::Duration = chrono::Duration::seconds(2);

/// What this replica knows of its clock, measured against the database's
/// (`now()` read while the host read its own clock before and after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Nothing to check against (SQLite: one host) or not measured yet.
    Unchecked,
    /// The last measurement: host minus database, and when (monotonic).
    Checked {
        skew: chrono::Duration,
        at: tokio::time::Instant,
    },
}

impl Trust {
    /// Whether decisions may be taken on this clock.
    pub fn ok(&self) -> bool {
        match self {
            Trust::Unchecked => true,
            Trust::Checked { skew, .. } => skew.abs() <= MAX_SKEW,
        }
    }

    /// Whether a measurement was taken after `instant`.
    pub fn checked_after(&self, instant: tokio::time::Instant) -> bool {
        match self {
            Trust::Unchecked => true,
            Trust::Checked { at, .. } => *at > instant,
        }
    }
}

/// Watches the wall clock against the monotonic one, and says whether a
/// decision may be taken now: the clock is trusted and, if it stepped,
/// it was checked against the database since. A host whose clock jumped a
/// year ahead must not decide a year of slots (cursors never move back) in
/// the half second before its next check catches it.
#[derive(Debug, Default)]
pub struct StepGuard {
    seen: Option<(DateTime<Utc>, tokio::time::Instant)>,
    stepped_at: Option<tokio::time::Instant>,
}

impl StepGuard {
    /// Notes a reading of the wall clock; returns the step since the last
    /// one, if the wall and monotonic clocks disagree by a second or more.
    pub fn observe(&mut self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let mono = tokio::time::Instant::now();
        let step = self
            .seen
            .and_then(|(wall, then)| crate::beat::tick::clock_step(wall, now, mono - then));
        if step.is_some() {
            self.stepped_at = Some(mono);
        }
        self.seen = Some((now, mono));
        step
    }

    /// Whether decisions may be taken on this clock now.
    pub fn trusted(&self, trust: &Trust) -> bool {
        trust.ok() && self.stepped_at.is_none_or(|s| trust.checked_after(s))
    }
}

/// Host minus reference: `reference` was read by the database between the
/// host's readings `sent` and `received`, so the error is at most half
/// their difference.
pub fn skew(
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
    reference: DateTime<Utc>,
) -> chrono::Duration {
    let midpoint = sent + (received - sent) / 2;
    midpoint - reference
}

/// The host's wall clock: for the CLI's one read per command and for
/// [`Clock::System`].
#[expect(
    clippy::disallowed_methods,
    reason = "the one place the wall clock is read"
)]
pub fn system_now() -> DateTime<Utc> {
    Utc::now()
}

/// A random task id, for a one-off job scheduled without `--id` or a
/// manual run of an entry (periodic fires have deterministic ids).
#[expect(
    clippy::disallowed_methods,
    reason = "the one place random ids are made"
)]
pub fn random_id() -> Uuid {
    Uuid::new_v4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn skew_is_the_host_midpoint_minus_the_reference() {
        let sent = at("2026-11-21T10:00:00Z");
        let received = at("2026-11-21T10:00:00.200Z");
        assert_eq!(
            skew(sent, received, at("2026-11-21T10:00:00.100Z")),
            chrono::Duration::zero()
        );
        // A host a year ahead of its database.
        let ahead = skew(
            sent + chrono::Duration::days(365),
            received + chrono::Duration::days(365),
            at("2026-11-21T10:00:00.100Z"),
        );
        assert_eq!(ahead, chrono::Duration::days(365));
        let now = tokio::time::Instant::now();
        assert!(
            !Trust::Checked {
                skew: ahead,
                at: now
            }
            .ok()
        );
        assert!(
            Trust::Checked {
                skew: chrono::Duration::milliseconds(-300),
                at: now
            }
            .ok()
        );
        assert!(Trust::Unchecked.ok());
    }
}
