//! The leader row (who leads, under which fencing epoch) and, on
//! PostgreSQL, the session that holds the advisory lock. The campaign's
//! loop is `runtime::leader`'s; the SQL is here.
//!
//! A new leader bumps the epoch only after taking the lock, i.e. after the
//! previous leader's session is gone; every claim checks the epoch in its
//! own transaction (`ledger::record_decision`), so an ex-leader that wakes
//! up cannot claim a fire.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::sqlite::codec::NOW;
use super::{PgStore, RunLock, SqliteStore, Store, StoreError, Ts};

/// How this replica may lead.
pub enum Leadership {
    /// PostgreSQL: campaign for the advisory lock against the other replicas.
    Campaign(PgStore),
    /// SQLite: this process holds the file lock, so it is the one replica
    /// and leads under `epoch` for as long as it keeps `lock`.
    Sole { lock: RunLock, epoch: i64 },
}

/// What `run` needs before it serves. On SQLite this takes the run lock and
/// a new epoch, so a second process fails here, at start-up, and says why.
pub async fn prepare(store: &Store, holder: &str) -> Result<Leadership, StoreError> {
    match store {
        Store::Postgres(pg) => Ok(Leadership::Campaign(pg.clone())),
        Store::Sqlite(lite) => {
            let (lock, epoch) = lite.lock_for_run(holder).await?;
            Ok(Leadership::Sole { lock, epoch })
        }
    }
}

/// SQLite: the next epoch, for the process that just took the file lock.
pub(crate) async fn take_sole(lite: &SqliteStore, holder: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, 1, ?1, {NOW}, {NOW})
         ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1, holder = ?1, since = excluded.since, heartbeat = excluded.heartbeat
         RETURNING epoch"
    )))
    .bind(holder)
    .fetch_one(lite.pool())
    .await?)
}

/// Session settings that bound how long a frozen or cut-off holder keeps
/// the lock (server side; the client may be unable to act).
const SESSION_LIMITS: &[(&str, &str)] = &[
    ("idle_session_timeout", "3s"),
    ("tcp_keepalives_idle", "2"),
    ("tcp_keepalives_interval", "1"),
    ("tcp_keepalives_count", "2"),
    ("tcp_user_timeout", "3000"),
];

/// A dedicated (never pooled) PostgreSQL session: the advisory lock
/// belongs to the session, and ends with it.
pub struct Session {
    conn: PgConnection,
}

impl Session {
    /// Opens the session with the limits above. The flag says whether the
    /// server ends an idle session by itself: servers before 14 lack
    /// `idle_session_timeout`, and there only the TCP limits apply.
    pub async fn open(store: &PgStore) -> Result<(Session, bool), StoreError> {
        let limited = store
            .connect_options()
            .options(SESSION_LIMITS.iter().copied());
        match PgConnection::connect_with(&limited).await {
            Ok(conn) => Ok((Session { conn }, true)),
            Err(e) if e.to_string().contains("idle_session_timeout") => {
                let rest = SESSION_LIMITS
                    .iter()
                    .copied()
                    .filter(|(k, _)| *k != "idle_session_timeout");
                let conn =
                    PgConnection::connect_with(&store.connect_options().options(rest)).await?;
                Ok((Session { conn }, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Tries the leadership lock once.
    pub async fn try_lock(&mut self, key: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// With the lock held: bumps the epoch and names this replica in the
    /// leader row. Returns the new epoch and since when (database clock).
    pub async fn take(&mut self, holder: &str) -> Result<(i64, DateTime<Utc>), StoreError> {
        let (epoch, since): (i64, Ts) = sqlx::query_as(
            "INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, 1, $1, now(), now())
             ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1, holder = $1, since = now(), heartbeat = now()
             RETURNING epoch, since",
        )
        .bind(holder)
        .fetch_one(&mut self.conn)
        .await?;
        Ok((epoch, since.0))
    }

    /// Heartbeats the leader row under `epoch`. Returns the database's
    /// `now()` (to compare with the host clock), or `None` when another
    /// replica holds a newer epoch.
    pub async fn heartbeat(&mut self, epoch: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<Ts> = sqlx::query_scalar(
            "UPDATE leader SET heartbeat = now() WHERE id = 1 AND epoch = $1 RETURNING heartbeat",
        )
        .bind(epoch)
        .fetch_optional(&mut self.conn)
        .await?;
        Ok(at.map(|t| t.0))
    }

    /// Ends the session, which frees the lock if it was held.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
