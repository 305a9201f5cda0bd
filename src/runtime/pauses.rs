//! Pauses while `run` runs: the beat honours a pause or a resume within a
//! second. Each change of the entry_pauses table (PostgreSQL: NOTIFY on
//! `sqsbeat_pauses`; SQLite: its change counter, checked whenever the file
//! changed, which the file watcher looks for every second) is read and
//! published to the beat, which applies it without a rebuild.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::beat::driver::{Pauses, load_pauses};
use crate::store::listen::{Channel, Listener};
use crate::store::{Store, pauses};

/// Publishes the pauses on `tx` at every change of the table, until
/// shutdown. Only a change of content is published.
pub async fn watch_pauses(
    store: Store,
    tx: watch::Sender<Arc<Pauses>>,
    shutdown: CancellationToken,
) {
    let publish = |p: Pauses| {
        tx.send_if_modified(|current| {
            let changed = **current != p;
            if changed {
                *current = Arc::new(p);
            }
            changed
        });
    };
    let mut listener = Listener::new(&store, Channel::Pauses);
    if store.pushes_changes() {
        loop {
            tokio::select! {
                r = listener.changed() => match r {
                    // Also after a (re)connection: anything may have changed.
                    Ok(()) => match load_pauses(&store).await {
                        Ok(p) => publish(p),
                        Err(e) => warn!(error = %e, "cannot read the pauses; the last ones read stay in force"),
                    },
                    Err(e) => warn!(error = %e, "pauses listener failed; reconnecting"),
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
    // SQLite: the listener hears of any commit to the file, so the pauses
    // are read again only when their counter moved. A check that failed is
    // tried again a second later.
    let mut seen: Option<i64> = None;
    loop {
        let settled = match pauses::version(&store).await {
            Ok(v) if v != seen => match load_pauses(&store).await {
                Ok(p) => {
                    publish(p);
                    seen = v;
                    true
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the pauses; the last ones read stay in force");
                    false
                }
            },
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "cannot check the pauses for changes");
                false
            }
        };
        tokio::select! {
            _ = listener.changed(), if settled => {}
            _ = tokio::time::sleep(RETRY), if !settled => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How soon a check of the pauses that failed is tried again (SQLite).
const RETRY: Duration = Duration::from_secs(1);
