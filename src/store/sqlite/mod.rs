//! The embedded SQLite store: one file, one replica, the same tables and
//! rules as PostgreSQL (the SQL of each table is in its own module;
//! [`codec`] is how values are stored as text). `run` holds an exclusive
//! lock on `<file>.lock` for its lifetime, so a second process on the same
//! file refuses to start instead of firing everything twice.

pub mod codec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::listen::Changes;
use super::{Access, StoreError};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// An open SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Commits are not synced to disk (`synchronous = NORMAL`, the daemon):
    /// a commit that must survive a power cut asks for FULL
    /// ([`SqliteStore::set_durable`]).
    relaxed: bool,
    /// What changed in the file, as the watchers hear it.
    changes: Arc<Changes>,
}

/// Held by `run` for its lifetime: the file lock that makes this process
/// the one replica.
#[derive(Debug)]
pub struct RunLock {
    _file: Arc<std::fs::File>,
}

/// Rows per batched statement (bounds one statement's JSON parameter).
pub(crate) const ROWS_PER_STATEMENT: usize = 10_000;

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations,
    /// as a one-shot command that writes would ([`Access::Write`]).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_for(path, Access::Write).await
    }

    /// Opens the file for `access`. [`Access::Read`] creates nothing: a
    /// missing file, or one without every migration, is
    /// [`StoreError::NotMigrated`].
    pub async fn open_for(path: &Path, access: Access) -> Result<Self, StoreError> {
        let read_only = access == Access::Read;
        if read_only && !path.exists() {
            return Err(StoreError::NotMigrated(format!(
                "there is no SQLite database at {}",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Locked(format!("cannot create {}: {e}", dir.display())))?;
        }
        // In WAL mode NORMAL syncs at checkpoints, not at every commit: a
        // power cut can undo the last commits. For the daemon's ledger and
        // releases that only re-sends messages with the task ids they
        // already had (the one duplicate the ledger allows), while FULL
        // cost an fsync per tick. Not so for the intake: once its commit
        // returns, the messages are deleted from SQS, and an undone commit
        // would lose those jobs; it switches to FULL for its own
        // transaction (`set_durable`). A one-shot command has printed what
        // it did (a job's id, "cancelled"): that must survive a power cut,
        // so FULL.
        let synchronous = match access {
            Access::Daemon => SqliteSynchronous::Normal,
            Access::Write | Access::Read => SqliteSynchronous::Full,
        };
        let mut options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(!read_only)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(5));
        // WAL is a property of the file, set when it is created or migrated;
        // a read does not change the file it was pointed at.
        if !read_only {
            options = options.journal_mode(SqliteJournalMode::Wal);
        }
        // One connection: a single replica writes, and SQLite serializes
        // writers anyway; this avoids SQLITE_BUSY between our own tasks.
        // Kept for the life of the process, and not pinged before each use
        // (a file has no peer to lose; a ping is a round trip to the
        // connection's thread per statement): the `data_version` that
        // reveals other processes' commits is a property of the connection
        // (`super::listen`).
        let changes = Arc::new(Changes::default());
        let hook = changes.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(move |conn, _| {
                let hook = hook.clone();
                Box::pin(async move { hook.install(conn).await })
            })
            .connect_with(options)
            .await?;
        if read_only {
            let applied: Vec<i64> =
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&pool)
                    .await
                    .map_err(|_| {
                        StoreError::NotMigrated(format!(
                            "{} is not an sqsbeat database",
                            path.display()
                        ))
                    })?;
            super::missing_migration(&MIGRATOR, &applied).map_err(|v| {
                StoreError::NotMigrated(format!("{} lacks migration {v}", path.display()))
            })?;
        } else {
            MIGRATOR.run(&pool).await?;
        }
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            relaxed: synchronous != SqliteSynchronous::Full,
            changes,
        })
    }

    /// Makes the commits of `conn` synced to disk before they return
    /// (`synchronous = FULL`), or relaxed again as the store was opened.
    /// SQLite refuses the change inside a transaction: call it before
    /// beginning one and after its commit. A connection left durable (a
    /// future dropped in between) is only slower.
    pub(crate) async fn set_durable(
        &self,
        conn: &mut sqlx::SqliteConnection,
        durable: bool,
    ) -> Result<(), StoreError> {
        if self.relaxed {
            let level = if durable { "FULL" } else { "NORMAL" };
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA synchronous = {level}")))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// Takes the one-replica lock and a new epoch. Fails, with a message
    /// that says what to do, if another process holds the lock.
    pub async fn lock_for_run(&self, holder: &str) -> Result<(RunLock, i64), StoreError> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Locked(format!("cannot open {}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(format!(
                    "another sqsbeat process is running on {} (it holds {}); the SQLite store serves one replica: stop the other process, or use PostgreSQL ([database] url) for several",
                    self.path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Locked(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let epoch = super::leader::take_sole(self, holder).await?;
        Ok((
            RunLock {
                _file: Arc::new(file),
            },
            epoch,
        ))
    }
}
