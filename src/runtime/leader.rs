//! Leadership: one replica fires periodic entries.
//!
//! The leader holds a session advisory lock on a dedicated connection (never
//! a pooled one: the lock belongs to the session), bumps the fencing epoch
//! in the `leader` row, and heartbeats that row. The current role is
//! published on a `watch` channel; the beat fires only while it says
//! `Leader`.
//!
//! How leadership ends, and how fast (see the README for measured figures):
//! - leader killed: Postgres frees the lock when the session ends (ms); a
//!   standby polls every `POLL` and takes over;
//! - leader loses the database or a heartbeat is late: it stops firing at
//!   once and drops the session;
//! - leader frozen (SIGSTOP, VM pause): the server ends its idle session
//!   after `idle_session_timeout` (3 s) and frees the lock;
//! - leader cut off by a partition: TCP keepalives / user timeout (about
//!   3 s) end the session server-side.
//!
//! A frozen ex-leader that wakes cannot claim a fire: claims check the
//! epoch in their transaction (`store::ledger::record_decision`). The SQL
//! (lock, epoch, heartbeat) is `store::leader`'s.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::{Clock, Trust};
use crate::runtime::housekeeping::publish_trust;
use crate::store::leader::Session;
use crate::store::{PgStore, StoreError};

/// How often a standby tries the lock.
const POLL: Duration = Duration::from_millis(250);
/// How often the leader heartbeats.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A heartbeat slower than this ends leadership.
const HEARTBEAT_DEADLINE: Duration = Duration::from_millis(1500);

/// This replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    Leader { epoch: i64, since: DateTime<Utc> },
}

impl Role {
    pub fn epoch(&self) -> Option<i64> {
        match self {
            Role::Leader { epoch, .. } => Some(*epoch),
            Role::Standby => None,
        }
    }
}

/// Campaigns for leadership until `shutdown`, publishing the role.
/// `holder` names this replica in the leader row.
pub async fn campaign(
    store: PgStore,
    holder: String,
    role: watch::Sender<Role>,
    clock: Clock,
    trust: Arc<watch::Sender<Trust>>,
    shutdown: CancellationToken,
) {
    let key = store.lock_key();
    while !shutdown.is_cancelled() {
        let session = tokio::select! {
            c = Session::open(&store) => c,
            _ = shutdown.cancelled() => break,
        };
        let mut conn = match session {
            Ok((c, idle_timeout)) => {
                if !idle_timeout {
                    warn!(
                        "server has no idle_session_timeout (PostgreSQL < 14): a frozen leader keeps the lock until TCP gives up"
                    );
                }
                c
            }
            Err(e) => {
                warn!(error = %e, "cannot open the leadership session; retrying");
                if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let outcome = tokio::select! {
            r = lead_while_possible(&mut conn, key, &holder, &role, &clock, &trust, &shutdown) => r,
            // Cut off mid-query: the session is dropped below either way.
            _ = shutdown.cancelled() => Ok(()),
        };
        if let Err(e) = outcome {
            warn!(error = %e, "leadership session failed");
        }
        role.send_replace(Role::Standby);
        // Ending the session frees the lock if we still had it.
        conn.close().await;
        if sleep_or_shutdown(POLL, &shutdown).await {
            break;
        }
    }
    role.send_replace(Role::Standby);
}

/// Waits for the lock on `conn`, then leads until the session fails, a
/// heartbeat is late, or shutdown.
async fn lead_while_possible(
    conn: &mut Session,
    key: i64,
    holder: &str,
    role: &watch::Sender<Role>,
    clock: &Clock,
    trust: &watch::Sender<Trust>,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    loop {
        // A replica whose clock disagrees with the database's would decide
        // the wrong slots: it does not even try (its replica heartbeat
        // keeps checking, and it campaigns again once they agree).
        if trust.borrow().ok() && conn.try_lock(key).await? {
            break;
        }
        if sleep_or_shutdown(POLL, shutdown).await {
            return Ok(());
        }
    }
    let sent = clock.now();
    let (epoch, since) = conn.take(holder).await?;
    publish_trust(trust, sent, clock.now(), since);
    if !trust.borrow().ok() {
        warn!(
            epoch,
            "took the lock with a clock that disagrees with the database's; giving it up"
        );
        return Ok(());
    }
    info!(epoch, "became leader");
    role.send_replace(Role::Leader { epoch, since });
    loop {
        if sleep_or_shutdown(HEARTBEAT, shutdown).await {
            info!(epoch, "releasing leadership");
            return Ok(());
        }
        let sent = clock.now();
        let beat = conn.heartbeat(epoch);
        match tokio::time::timeout(HEARTBEAT_DEADLINE, beat).await {
            Ok(Ok(Some(database_now))) => {
                publish_trust(trust, sent, clock.now(), database_now);
                if !trust.borrow().ok() {
                    role.send_replace(Role::Standby);
                    error!(
                        epoch,
                        "stopped leading: the host clock disagrees with the database's; a replica with a good clock takes over"
                    );
                    return Ok(());
                }
            }
            Ok(Ok(None)) => {
                error!(
                    epoch,
                    "lost leadership: another replica holds a newer epoch; stopped firing"
                );
                return Ok(());
            }
            Ok(Err(e)) => {
                role.send_replace(Role::Standby);
                error!(epoch, error = %e, "lost leadership: database unreachable; stopped firing");
                return Err(e);
            }
            Err(_) => {
                role.send_replace(Role::Standby);
                error!(
                    epoch,
                    deadline_ms = HEARTBEAT_DEADLINE.as_millis() as u64,
                    "lost leadership: heartbeat late; stopped firing"
                );
                // A query cut off mid-flight leaves the session in an
                // unknown state: the caller drops it.
                return Ok(());
            }
        }
    }
}

/// Sleeps; returns true if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}
