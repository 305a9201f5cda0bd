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
