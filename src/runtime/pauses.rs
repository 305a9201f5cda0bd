//! Pauses while `run` runs: the beat honours a pause or a resume within a
//! second. Each change of the entry_pauses table (PostgreSQL: NOTIFY on
//! `sqsbeat_pauses`; SQLite: its change counter, checked every second) is
//! read and published to the beat, which applies it without a rebuild.

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
    if let Some(mut listener) = Listener::new(&store, Channel::Pauses) {
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
    let mut seen: Option<i64> = None;
    loop {
        match pauses::version(&store).await {
            Ok(v) if v != seen => match load_pauses(&store).await {
                Ok(p) => {
                    publish(p);
                    seen = v;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the pauses; the last ones read stay in force")
                }
            },
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot check the pauses for changes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
