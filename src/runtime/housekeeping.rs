//! Housekeeping loops of `run`: ledger pruning, the replica heartbeat
//! that `sqsbeat status` lists, and the role and pending-jobs gauges.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use chrono::{DateTime, Utc};

use crate::clock::{Clock, Trust};
use crate::runtime::leader::Role;
use crate::store::Store;
/// Deletes settled ledger rows past the retention, hourly, while leading.
pub async fn prune_ledger(
    store: Store,
    role: watch::Receiver<Role>,
    retention: chrono::Duration,
    clock: Clock,
    shutdown: CancellationToken,
) {
    loop {
        if role.borrow().epoch().is_some() {
            match crate::store::ledger::prune(&store, clock.now() - retention).await {
                Ok(0) => {}
                Ok(n) => info!(rows = n, "pruned old ledger rows"),
                Err(e) => warn!(error = %e, "could not prune the ledger"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How often a replica reports in: every 2 s on PostgreSQL, where each
/// report also checks the host clock against the database's; every 10 s
/// on SQLite, which has no other clock and one replica (`sqsbeat status`
/// calls a replica gone after 30 s without one).
pub const ALIVE_EVERY_PG: Duration = Duration::from_secs(2);
pub const ALIVE_EVERY_SQLITE: Duration = Duration::from_secs(10);
const _: () =
    assert!(ALIVE_EVERY_SQLITE.as_secs() * 3 <= crate::runtime::status::GONE_AFTER_S as u64);

/// Tells the store this replica is alive, and in which role, every
/// [`ALIVE_EVERY_PG`] or [`ALIVE_EVERY_SQLITE`] (what `sqsbeat status`
/// lists); on PostgreSQL, checks the host clock against the database's
/// each time.
pub async fn report_alive(
    store: Store,
    holder: String,
    role: watch::Receiver<Role>,
    clock: Clock,
    trust: std::sync::Arc<watch::Sender<Trust>>,
    shutdown: CancellationToken,
) {
    let started = clock.now();
    let every = if store.pushes_changes() {
        ALIVE_EVERY_PG
    } else {
        ALIVE_EVERY_SQLITE
    };
    loop {
        let r = *role.borrow();
        let sent = clock.now();
        // What this replica's beat last found, while it leads.
        let found = r
            .epoch()
            .and_then(|_| crate::runtime::metrics::get().overdue());
        let overdue = found.as_ref().map(|o| crate::store::replicas::Overdue {
            count: i64::try_from(o.count).unwrap_or(i64::MAX),
            names: &o.names,
        });
        match crate::store::replicas::heartbeat(&store, &holder, r, started, sent, overdue).await {
            Ok(Some(database_now)) => publish_trust(&trust, sent, clock.now(), database_now),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot record this replica's heartbeat"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Publishes a clock check: the database read `database_now` while the host
/// read `sent` before and `received` after. Logs when the verdict changes.
pub fn publish_trust(
    trust: &watch::Sender<Trust>,
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
    database_now: DateTime<Utc>,
) {
    let skew = crate::clock::skew(sent, received, database_now);
    let now = Trust::Checked {
        skew,
        at: tokio::time::Instant::now(),
    };
    let before = trust.send_replace(now);
    let skew_s = skew.num_milliseconds() as f64 / 1000.0;
    crate::runtime::metrics::get().clock_skew.set(skew_s);
    match (before.ok(), now.ok()) {
        (true, false) => error!(
            skew_s,
            max_skew_s = crate::clock::MAX_SKEW.num_seconds(),
            "the host clock disagrees with the database's: this replica neither leads nor releases jobs until they agree (check NTP on this host)"
        ),
        (false, true) => info!(skew_s, "the host clock agrees with the database's again"),
        _ => {}
    }
}

/// Mirrors the role into the leader and epoch gauges.
pub async fn export_role(mut role: watch::Receiver<Role>, shutdown: CancellationToken) {
    loop {
        let r = *role.borrow_and_update();
        let m = crate::runtime::metrics::get();
        m.leader.set(i64::from(r.epoch().is_some()));
        m.epoch.set(r.epoch().unwrap_or(0));
        tokio::select! {
            c = role.changed() => if c.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Refreshes the pending-jobs-by-due-bucket gauge every 15 seconds.
pub async fn export_pending_jobs(store: Store, clock: Clock, shutdown: CancellationToken) {
    loop {
        match crate::store::jobs::pending_by_bucket(&store, clock.now()).await {
            Ok(buckets) => {
                for (due, n) in buckets {
                    crate::runtime::metrics::get()
                        .pending_jobs
                        .get_or_create(&crate::runtime::metrics::DueBucket {
                            due: due.to_string(),
                        })
                        .set(n);
                }
            }
            Err(e) => warn!(error = %e, "cannot count pending jobs"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
