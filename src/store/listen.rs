//! Change notifications, one implementation for every watcher: the
//! releaser's (jobs), the reload's (entries) and the pauses'.
//!
//! PostgreSQL: `LISTEN`. The triggers send this schema's name as the
//! payload, so deployments in several schemas of one database only hear
//! their own changes.
//!
//! SQLite has no notifications. Its file serves one process, whose pool
//! holds its one connection for the process's life, so there are two kinds
//! of change: this process's own writes, which the connection's update hook
//! reports as they are made ([`Changes::install`]), and another process's
//! commits (`sqsbeat schedule`, `sqsbeat entries add`, `pause`), which
//! `PRAGMA data_version` reveals: it moves only when another connection
//! committed. One look a second ([`look`], which the daemon's
//! schedule-file watcher makes) stands for every watcher's poll; with
//! nothing written, nothing else touches the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{PgStore, SqliteStore, Store, StoreError};

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
    const ALL: [Channel; 3] = [Channel::Jobs, Channel::Entries, Channel::Pauses];

    fn name(self) -> &'static str {
        match self {
            Channel::Jobs => "sqsbeat_jobs",
            Channel::Entries => "sqsbeat_entries",
            Channel::Pauses => "sqsbeat_pauses",
        }
    }

    /// The SQLite table whose rows the channel is about.
    fn table(self) -> &'static str {
        match self {
            Channel::Jobs => "jobs",
            Channel::Entries => "entries",
            Channel::Pauses => "entry_pauses",
        }
    }
}

/// How long after a failure the next connection attempt waits.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A subscription to one channel, reconnecting as needed (PostgreSQL).
pub struct Listener(Inner);

enum Inner {
    Pg {
        store: PgStore,
        channel: Channel,
        conn: Option<PgListener>,
        failed_at: Option<Instant>,
    },
    Lite(watch::Receiver<u64>),
}

impl Listener {
    /// A listener for `channel`. PostgreSQL: nothing connects until the
    /// first [`Listener::changed`]. SQLite: changes count from now.
    pub fn new(store: &Store, channel: Channel) -> Listener {
        Listener(match store {
            Store::Postgres(pg) => Inner::Pg {
                store: pg.clone(),
                channel,
                conn: None,
                failed_at: None,
            },
            Store::Sqlite(lite) => Inner::Lite(lite.changes().subscribe(channel)),
        })
    }

    /// Waits until something may have changed.
    ///
    /// PostgreSQL: a notification for this schema, or a (re)connection,
    /// after which anything may have changed while no one listened. An
    /// error means the connection was lost; the next call reconnects, at
    /// most once a second.
    ///
    /// SQLite: this process wrote the channel's table, or another process
    /// committed anything to the file (seen by [`look`]; with no one
    /// looking, only this process's own writes are heard).
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        match &mut self.0 {
            Inner::Pg {
                store,
                channel,
                conn,
                failed_at,
            } => pg_changed(store, *channel, conn, failed_at).await,
            Inner::Lite(rx) => {
                if rx.changed().await.is_err() {
                    // The store is gone: nothing will change any more.
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
    }
}

async fn pg_changed(
    store: &PgStore,
    channel: Channel,
    slot: &mut Option<PgListener>,
    failed_at: &mut Option<Instant>,
) -> Result<(), StoreError> {
    let conn = match slot {
        Some(c) => c,
        None => {
            if let Some(at) = *failed_at {
                tokio::time::sleep_until(at + RECONNECT_AFTER).await;
            }
            match connect(store, channel).await {
                Ok(c) => {
                    *slot = Some(c);
                    *failed_at = None;
                    return Ok(());
                }
                Err(e) => {
                    *failed_at = Some(Instant::now());
                    return Err(e);
                }
            }
        }
    };
    loop {
        match conn.try_recv().await {
            Ok(Some(n)) if n.payload() == store.schema() => return Ok(()),
            Ok(Some(_)) => {}
            // The connection was lost and has been re-established:
            // notifications in between are gone.
            Ok(None) => return Ok(()),
            Err(e) => {
                *slot = None;
                *failed_at = Some(Instant::now());
                return Err(e.into());
            }
        }
    }
}

async fn connect(store: &PgStore, channel: Channel) -> Result<PgListener, StoreError> {
    let mut l = PgListener::connect_with(store.pool()).await?;
    l.listen(channel.name()).await?;
    Ok(l)
}

/// How often the daemon looks for other processes' commits to a SQLite
/// file: what "within a second" means for a pause, an entries-table change
/// and a job scheduled by another process.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The changes of one SQLite file as this process hears them: one counter
/// per channel, moved by this process's writes to the channel's table and
/// by any commit of another process.
#[derive(Debug)]
pub struct Changes {
    channels: [watch::Sender<u64>; 3],
    /// Connections opened so far: a `data_version` read on one connection
    /// means nothing on the next.
    connections: AtomicU64,
    /// The last look: what it saw (connections, data_version), and when.
    seen: std::sync::Mutex<Seen>,
    /// The WAL index header as it was just before the last look that read
    /// `data_version` (see [`Changes::unchanged_since_last_look`]).
    wal_index: std::sync::Mutex<WalIndex>,
    /// Looks that asked SQLite (`PRAGMA data_version`), for tests.
    queried: AtomicU64,
}

/// The `-shm` file, kept open, and what its header said.
#[derive(Debug, Default)]
struct WalIndex {
    /// Opened while this many connections had been opened: SQLite deletes
    /// the file when its last connection closes, and a new connection
    /// makes a new one, which this handle would not see.
    file: Option<(u64, std::fs::File)>,
    /// Connections opened and the header's bytes, read before a look.
    last: Option<(u64, [u8; WAL_INDEX_HEADER])>,
}

/// Both copies of the WAL index header at the start of the `-shm` file
/// (SQLite's file format, "WAL-Index Format"): 48 bytes each, holding a
/// counter moved by every transaction that commits, the last frame, the
/// salts that change when the WAL restarts, and checksums.
const WAL_INDEX_HEADER: usize = 96;

#[derive(Debug, Default)]
struct Seen {
    version: Option<(u64, i64)>,
    at: Option<Instant>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            channels: std::array::from_fn(|_| watch::Sender::new(0)),
            connections: AtomicU64::new(0),
            seen: std::sync::Mutex::new(Seen::default()),
            wal_index: std::sync::Mutex::new(WalIndex::default()),
            queried: AtomicU64::new(0),
        }
    }
}

impl Changes {
    fn subscribe(&self, channel: Channel) -> watch::Receiver<u64> {
        self.sender(channel).subscribe()
    }

    fn sender(&self, channel: Channel) -> &watch::Sender<u64> {
        let i = Channel::ALL
            .iter()
            .position(|c| *c == channel)
            .unwrap_or_default();
        &self.channels[i]
    }

    fn bump(&self, channel: Channel) {
        self.sender(channel).send_modify(|n| *n = n.wrapping_add(1));
    }

    fn bump_all(&self) {
        for c in Channel::ALL {
            self.bump(c);
        }
    }

    /// Hooks a new connection: its writes to a watched table move that
    /// channel as they are made (before their commit, which is harmless:
    /// the store has one connection, so whoever reads next reads after
    /// the writer is done). A new connection may follow any change at all:
    /// every channel moves.
    pub(crate) async fn install(
        self: &Arc<Self>,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<(), sqlx::Error> {
        let me = self.clone();
        conn.lock_handle().await?.set_update_hook(move |u| {
            if let Some(c) = Channel::ALL.into_iter().find(|c| c.table() == u.table) {
                me.bump(c);
            }
        });
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.bump_all();
        Ok(())
    }
}

impl Changes {
    /// Notes a look: `version` is `PRAGMA data_version` as read on the
    /// connection, with `before` the connections opened before the read
    /// (see [`Changes::connections_opened`]). Every channel moves if it
    /// differs from the last look, if this is the first look, or if a new
    /// connection was opened meanwhile: what was seen before means nothing.
    pub(crate) fn looked(&self, before: u64, version: i64) {
        let after = self.connections_opened();
        let now = (before == after).then_some((after, version));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || seen.version != now {
            self.bump_all();
        }
        seen.version = now;
        seen.at = Some(Instant::now());
    }

    /// Connections opened so far, read before a look's `data_version`.
    pub(crate) fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Reads the WAL index header of the file at `db`: `None` if it
    /// cannot be read (no `-shm` file: a store not in WAL mode).
    ///
    /// A plain read of 96 bytes, no round trip to SQLite's connection
    /// thread: at idle the look a second is most of what the process does,
    /// and the round trip (two threads woken) most of what a look costs.
    /// The read sees what other processes wrote through their shared
    /// mappings of the file: one page cache holds both. That takes a local
    /// filesystem on one host, which SQLite's WAL mode needs anyway
    /// (<https://www.sqlite.org/wal.html>: no network filesystem).
    fn wal_index_header(
        &self,
        db: &std::path::Path,
        before: u64,
    ) -> Option<[u8; WAL_INDEX_HEADER]> {
        use std::os::unix::fs::FileExt as _;
        let mut w = self.wal_index.lock().unwrap_or_else(|p| p.into_inner());
        if w.file.as_ref().is_none_or(|(opened, _)| *opened != before) {
            // SQLite names the file after the database's path with every
            // symbolic link resolved: beside the file a link points at.
            w.file = std::fs::canonicalize(db)
                .and_then(|db| {
                    let mut shm = db.into_os_string();
                    shm.push("-shm");
                    std::fs::File::open(shm)
                })
                .ok()
                .map(|f| (before, f));
        }
        let mut header = [0u8; WAL_INDEX_HEADER];
        match w.file.as_ref()?.1.read_exact_at(&mut header, 0) {
            Ok(()) => Some(header),
            Err(_) => {
                // Opened again at the next look.
                w.file = None;
                None
            }
        }
    }

    /// Whether nothing committed to the file since the last look that read
    /// `data_version`, on the same connection: its WAL index header, read
    /// just before that look, is byte for byte what it is now. Every
    /// commit in WAL mode, this process's or another's, moves the header
    /// (its change counter and last frame); a WAL restart changes its
    /// salts. A header caught mid-write differs, and costs one real look.
    fn unchanged_since_last_look(&self, before: u64, header: &[u8; WAL_INDEX_HEADER]) -> bool {
        let w = self.wal_index.lock().unwrap_or_else(|p| p.into_inner());
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.version
            .is_some_and(|(connections, _)| connections == before)
            && w.last.as_ref() == Some(&(before, *header))
    }

    /// Notes the header read before a look that read `data_version`.
    fn note_wal_index(&self, before: u64, header: Option<[u8; WAL_INDEX_HEADER]>) {
        let mut w = self.wal_index.lock().unwrap_or_else(|p| p.into_inner());
        w.last = header.map(|h| (before, h));
    }

    /// A look that found nothing new without asking SQLite.
    fn looked_unchanged(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).at = Some(Instant::now());
    }

    /// When the file was last looked at, by [`look`] or along with a
    /// write that read `data_version` too (the beat's decisions).
    fn last_look(&self) -> Option<Instant> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).at
    }
}

/// Looks once whether another process committed to `store`'s file since
/// the last look, and if so moves every channel. The first look, and the
/// first on a new connection, move them too: nothing was known before.
/// PostgreSQL pushes its changes: nothing to do.
pub async fn look(store: &Store) -> Result<(), StoreError> {
    let Store::Sqlite(lite) = store else {
        return Ok(());
    };
    look_lite(lite).await
}

async fn look_lite(lite: &SqliteStore) -> Result<(), StoreError> {
    let changes = lite.changes();
    let before = changes.connections_opened();
    // Read before `data_version`: a commit after this read moves both the
    // version read next (heard now) and the header (asked again next time).
    // Only while the store has its connection: with none (closed after a
    // failed batch, say) SQLite may have deleted the `-shm` file this
    // handle reads, and another process's commits go to a new one; the
    // real look opens a connection, and the handle is opened again.
    let header = if lite.pool().size() > 0 {
        changes.wal_index_header(lite.path(), before)
    } else {
        None
    };
    if let Some(h) = &header
        && changes.unchanged_since_last_look(before, h)
    {
        changes.looked_unchanged();
        return Ok(());
    }
    changes.queried.fetch_add(1, Ordering::Relaxed);
    let version: i64 = sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(lite.pool())
        .await?;
    changes.looked(before, version);
    changes.note_wal_index(before, header);
    Ok(())
}

/// When `store`'s file must be looked at next so that no other process's
/// commit goes unseen longer than [`LOOK_EVERY`]: a look made along with a
/// write counts. `None`: at once (never looked), or never (PostgreSQL
/// pushes its changes; see [`needs_looking`]).
pub fn next_look(store: &Store) -> Option<Instant> {
    match store {
        Store::Sqlite(lite) => lite.changes().last_look().map(|t| t + LOOK_EVERY),
        Store::Postgres(_) => None,
    }
}

/// Whether changes to `store` are seen only by looking (SQLite).
pub fn needs_looking(store: &Store) -> bool {
    matches!(store, Store::Sqlite(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(path: &std::path::Path) -> SqliteStore {
        SqliteStore::open(path).await.unwrap()
    }

    fn queried(s: &SqliteStore) -> u64 {
        s.changes().queried.load(Ordering::Relaxed)
    }

    /// At idle the look a second asked SQLite each time (a round trip to
    /// its connection thread, waking two threads). Now it reads the WAL
    /// index header and asks only when a commit moved it, and still hears
    /// every commit of another process, also across a WAL restart.
    #[tokio::test]
    async fn an_idle_look_asks_sqlite_only_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mine = store(&path).await;
        let other = store(&path).await;
        let mut jobs = mine.changes().subscribe(Channel::Jobs);
        jobs.mark_unchanged();
        look_lite(&mine).await.unwrap();
        let asked = queried(&mine);
        assert_eq!(asked, 1, "the first look asks");
        for _ in 0..5 {
            look_lite(&mine).await.unwrap();
        }
        assert_eq!(queried(&mine), asked, "nothing committed: no query");
        jobs.mark_unchanged();
        let write = "INSERT INTO replicas (holder, role, seen_at, started_at, version) \
                     VALUES ('other', 'standby', '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z', 'x')";
        sqlx::query(write).execute(other.pool()).await.unwrap();
        look_lite(&mine).await.unwrap();
        assert!(jobs.has_changed().unwrap(), "another's commit is heard");
        assert_eq!(queried(&mine), asked + 1);
        // A WAL restart (a checkpoint that truncates it), then a commit
        // that starts the WAL over: the header differs all the same.
        jobs.mark_unchanged();
        look_lite(&mine).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(other.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM replicas")
            .execute(other.pool())
            .await
            .unwrap();
        sqlx::query(write).execute(other.pool()).await.unwrap();
        look_lite(&mine).await.unwrap();
        assert!(jobs.has_changed().unwrap(), "heard after a WAL restart");
    }

    /// When the store's one connection closes while no other process has
    /// the file open, SQLite deletes the `-shm` file; the next connection
    /// makes a new one. A handle kept on the deleted file would read the
    /// same header forever and hear no other process again.
    #[tokio::test]
    async fn a_look_hears_other_processes_after_its_connection_was_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mine = store(&path).await;
        look_lite(&mine).await.unwrap();
        look_lite(&mine).await.unwrap();
        let mut conn = mine.pool().acquire().await.unwrap();
        conn.close_on_drop();
        drop(conn);
        // The pool opens its next connection on demand.
        sqlx::query("SELECT 1").execute(mine.pool()).await.unwrap();
        look_lite(&mine).await.unwrap();
        look_lite(&mine).await.unwrap();
        let mut jobs = mine.changes().subscribe(Channel::Jobs);
        jobs.mark_unchanged();
        let other = store(&path).await;
        sqlx::query(
            "INSERT INTO replicas (holder, role, seen_at, started_at, version) \
             VALUES ('other', 'standby', '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z', 'x')",
        )
        .execute(other.pool())
        .await
        .unwrap();
        look_lite(&mine).await.unwrap();
        assert!(jobs.has_changed().unwrap(), "another's commit is heard");
    }
}

#[cfg(test)]
mod shm_tests {
    use super::*;

    const WRITE: &str = "INSERT INTO replicas (holder, role, seen_at, started_at, version) \
                         VALUES ('other', 'standby', '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z', 'x')";

    fn queried(s: &SqliteStore) -> u64 {
        s.changes().queried.load(Ordering::Relaxed)
    }

    /// The store's one connection was closed (a failed batch closes it)
    /// and nothing opened another: SQLite, its last connection gone,
    /// deleted the `-shm` file, and the look kept reading the deleted
    /// file's header, unchanged for ever, so it never asked SQLite again
    /// (which would have opened a connection) and no other process's
    /// commit was heard until this process wrote something itself.
    #[tokio::test]
    async fn a_look_hears_other_processes_after_its_connection_closed_with_no_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mine = SqliteStore::open(&path).await.unwrap();
        look_lite(&mine).await.unwrap();
        look_lite(&mine).await.unwrap();
        let conn = mine.pool().acquire().await.unwrap();
        conn.close().await.unwrap();
        assert_eq!(mine.pool().size(), 0);
        assert!(
            !dir.path().join("state.db-shm").exists(),
            "SQLite deletes the -shm file with its last connection"
        );
        let mut jobs = mine.changes().subscribe(Channel::Jobs);
        jobs.mark_unchanged();
        let other = SqliteStore::open(&path).await.unwrap();
        sqlx::query(WRITE).execute(other.pool()).await.unwrap();
        look_lite(&mine).await.unwrap();
        assert!(jobs.has_changed().unwrap(), "another's commit is heard");
        let heard: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas WHERE holder = 'other'")
            .fetch_one(mine.pool())
            .await
            .unwrap();
        assert_eq!(heard, 1);
    }

    /// SQLite resolves symbolic links in the database's path and keeps the
    /// `-shm` file beside the file the link points at; the look opened
    /// `<link>-shm`, found nothing, and asked SQLite at every look (or, had
    /// a stale file of that name been left there, read a header no commit
    /// moves and heard no other process).
    #[tokio::test]
    async fn an_idle_look_through_a_symlinked_path_does_not_ask_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let real = dir.path().join("data/state.db");
        let link = dir.path().join("state.db");
        SqliteStore::open(&real).await.unwrap().pool().close().await;
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mine = SqliteStore::open(&link).await.unwrap();
        let other = SqliteStore::open(&real).await.unwrap();
        let mut jobs = mine.changes().subscribe(Channel::Jobs);
        look_lite(&mine).await.unwrap();
        let asked = queried(&mine);
        for _ in 0..3 {
            look_lite(&mine).await.unwrap();
        }
        assert_eq!(queried(&mine), asked, "nothing committed: no query");
        jobs.mark_unchanged();
        sqlx::query(WRITE).execute(other.pool()).await.unwrap();
        look_lite(&mine).await.unwrap();
        assert!(jobs.has_changed().unwrap(), "another's commit is heard");
    }

    /// A `-shm` file that cannot be read (here: shorter than the header;
    /// unreadable or missing alike) leaves no header to compare: every
    /// look asks SQLite, as before the header was read at all.
    #[tokio::test]
    async fn a_look_that_cannot_read_the_wal_index_asks_sqlite_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mine = SqliteStore::open(&path).await.unwrap();
        look_lite(&mine).await.unwrap();
        look_lite(&mine).await.unwrap();
        let asked = queried(&mine);
        for n in 1..=3 {
            let before = mine.changes().connections_opened();
            mine.changes().wal_index.lock().unwrap().file =
                Some((before, std::fs::File::open("/dev/null").unwrap()));
            look_lite(&mine).await.unwrap();
            assert_eq!(queried(&mine), asked + n);
        }
    }

    /// What another process can do to the file, through Python's sqlite3
    /// module (as the sqlite3 shell would): a hand-written row, a WAL
    /// reset (checkpoint TRUNCATE) and a row after it are heard at the next
    /// look; switching the file out of WAL, or taking it in exclusive
    /// locking mode (whose WAL index would be in its own memory, not in the
    /// `-shm` file), is refused while the store holds its connection, so no
    /// commit can bypass the header the look reads.
    #[tokio::test]
    async fn another_processs_commits_are_heard_and_none_can_bypass_the_wal_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mine = SqliteStore::open(&path).await.unwrap();
        let mut jobs = mine.changes().subscribe(Channel::Jobs);
        look_lite(&mine).await.unwrap();
        let other = |sql: &[&str]| -> Vec<String> {
            let python = std::env::var_os("SQSBEAT_TEST_PYTHON")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
                });
            let script = "import sqlite3, sys\n\
                          c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0.2)\n\
                          for s in sys.argv[2:]:\n    \
                              try:\n        c.execute(s).fetchall(); print('ok')\n    \
                              except sqlite3.Error as e:\n        print('error', e)\n";
            let out = std::process::Command::new(&python)
                .arg("-c")
                .arg(script)
                .arg(&path)
                .args(sql)
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        };
        for step in [
            vec![WRITE],
            vec!["PRAGMA wal_checkpoint(TRUNCATE)", "DELETE FROM replicas"],
        ] {
            look_lite(&mine).await.unwrap();
            jobs.mark_unchanged();
            assert!(other(&step).iter().all(|r| r == "ok"));
            look_lite(&mine).await.unwrap();
            assert!(jobs.has_changed().unwrap(), "{step:?} is heard");
        }
        jobs.mark_unchanged();
        let refused = other(&["PRAGMA journal_mode=DELETE", WRITE]);
        assert!(refused[0].starts_with("error"), "{refused:?}");
        assert_eq!(refused[1], "ok", "written in WAL mode all the same");
        look_lite(&mine).await.unwrap();
        assert!(jobs.has_changed().unwrap(), "the write is heard");
        let refused = other(&["PRAGMA locking_mode=EXCLUSIVE", WRITE]);
        assert!(refused[1].starts_with("error"), "{refused:?}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas WHERE holder = 'other'")
            .fetch_one(mine.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1, "the exclusive-mode write did not commit");
    }
}
