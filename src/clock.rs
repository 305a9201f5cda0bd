//! The wall clock and random ids: the only places either is read.
//!
//! Everything that decides (tick, next fire, message building, release
//! plans) takes `now` as an argument. The drivers read it from a
//! [`Clock`]: the system clock in production, or one that follows tokio's
//! (pausable) clock in tests, so an in-process test can run an hour of
//! schedule in milliseconds with no sleep. `clippy.toml` disallows
//! `Utc::now`, `SystemTime::now` and `Uuid::new_v4` everywhere else.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where the drivers read the time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The host's wall clock.
    System,
    /// Wall time that starts at `start` and advances with tokio's clock
    /// from `base`: under `tokio::time::pause` it moves only when the
    /// runtime advances time (tests).
    Tokio {
        start: DateTime<Utc>,
        base: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's, starting at `start` now.
    pub fn tokio(start: DateTime<Utc>) -> Self {
        Clock::Tokio {
            start,
            base: tokio::time::Instant::now(),
        }
    }

    /// The wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => system_now(),
            Clock::Tokio { start, base } => {
                let elapsed = tokio::time::Instant::now() - *base;
                *start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
            }
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
