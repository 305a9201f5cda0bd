//! Change notifications from PostgreSQL (`LISTEN`), one implementation for
//! every watcher: the releaser's (jobs), the reload's (entries) and the
//! pauses'. The
//! triggers send this schema's name as the payload, so deployments in
//! several schemas of one database only hear their own changes.
//!
//! SQLite has no notifications: [`Listener::new`] answers `None` there, and
//! the caller looks instead (`entries::version`, or a short poll).

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::time::Instant;

use super::{PgStore, Store, StoreError};

/// What can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A job inserted as pending, set back to pending, or moved.
    Jobs,
    /// Any change to the entries table.
    Entries,
    /// Any change to the entry_pauses table.
    Pauses,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Jobs => "sqsbeat_jobs",
            Channel::Entries => "sqsbeat_entries",
            Channel::Pauses => "sqsbeat_pauses",
        }
    }
}

/// How long after a failure the next connection attempt waits.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A subscription to one channel, reconnecting as needed.
pub struct Listener {
    store: PgStore,
    channel: Channel,
    conn: Option<PgListener>,
    failed_at: Option<Instant>,
}

impl Listener {
    /// A listener for `channel`; `None` on SQLite. Nothing connects until
    /// the first [`Listener::changed`].
    pub fn new(store: &Store, channel: Channel) -> Option<Listener> {
        match store {
            Store::Postgres(pg) => Some(Listener {
                store: pg.clone(),
                channel,
                conn: None,
                failed_at: None,
            }),
            Store::Sqlite(_) => None,
        }
    }

    /// Waits until something may have changed: a notification for this
    /// schema, or a (re)connection, after which anything may have changed
    /// while no one listened. An error means the connection was lost; the
    /// next call reconnects, at most once a second.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                if let Some(at) = self.failed_at {
                    tokio::time::sleep_until(at + RECONNECT_AFTER).await;
                }
                match self.connect().await {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.failed_at = None;
                        return Ok(());
                    }
                    Err(e) => {
                        self.failed_at = Some(Instant::now());
                        return Err(e);
                    }
                }
            }
        };
        loop {
            match conn.try_recv().await {
                Ok(Some(n)) if n.payload() == self.store.schema() => return Ok(()),
                Ok(Some(_)) => {}
                // The connection was lost and has been re-established:
                // notifications in between are gone.
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.conn = None;
                    self.failed_at = Some(Instant::now());
                    return Err(e.into());
                }
            }
        }
    }

    async fn connect(&self) -> Result<PgListener, StoreError> {
        let mut l = PgListener::connect_with(self.store.pool()).await?;
        l.listen(self.channel.name()).await?;
        Ok(l)
    }
}
