//! In-process test harness: a real store (a SQLite temp file or a fresh
//! PostgreSQL database), a `MemorySink`, and a manual clock the test sets
//! to the instants it wants, so an hour of schedule runs in a few steps
//! and no test sleeps on the real clock.

use chrono::{DateTime, Utc};
use sqsbeat::clock::Clock;
use sqsbeat::entry::{Context, Entry};
use sqsbeat::store::{PgStore, SqliteStore, Store};
use sqsbeat::wire::MessageOptions;
use sqsbeat::wire::celery::BodyEncoding;
use sqsbeat::wire::sink::MemorySink;

use crate::pg::TestDb;

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Where the database lives, kept alive as long as the harness.
pub enum Db {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] TestDb),
}

pub struct Harness {
    /// The clock check the drivers consult; tests may publish verdicts.
    pub trust: tokio::sync::watch::Sender<sqsbeat::clock::Trust>,
    pub store: Store,
    pub sink: MemorySink,
    pub clock: Clock,
    pub opts: MessageOptions,
    _db: Db,
}

impl Harness {
    /// A SQLite store in a temp dir; the clock starts at `start`.
    pub async fn sqlite(start: DateTime<Utc>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Sqlite(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
        Self::with(store, Db::Sqlite(dir), start)
    }

    /// A fresh PostgreSQL database (see `pg.rs`); the clock starts at `start`.
    pub async fn postgres(start: DateTime<Utc>) -> Self {
        Self::postgres_on(TestDb::new().await, start).await
    }

    /// sqsbeat's schema in an existing test database (one that also holds
    /// an application's tables, say); the clock starts at `start`.
    pub async fn postgres_on(db: TestDb, start: DateTime<Utc>) -> Self {
        let store = Store::Postgres(PgStore::connect(&db.url, "sqsbeat").await.unwrap());
        Self::with(store, Db::Postgres(db), start)
    }

    fn with(store: Store, db: Db, start: DateTime<Utc>) -> Self {
        Harness {
            trust: tokio::sync::watch::channel(sqsbeat::clock::Trust::Unchecked).0,
            store,
            sink: MemorySink::new(),
            clock: Clock::manual(start),
            opts: MessageOptions {
                origin: "sqsbeat@test".into(),
                queue_name_prefix: String::new(),
                body_encoding: BodyEncoding::Base64,
            },
            _db: db,
        }
    }

    /// A new leader epoch (SQLite: the run lock; the lock itself is
    /// dropped, the epoch stays current until the next call).
    pub async fn new_epoch(&self) -> i64 {
        match &self.store {
            Store::Sqlite(s) => s.lock_for_run("test").await.unwrap().1,
            Store::Postgres(_) => {
                let q = "INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, 1, 'test', now(), now())
                         ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1 RETURNING epoch";
                self.scalar_i64(q).await
            }
        }
    }

    async fn scalar_i64(&self, q: &str) -> i64 {
        match &self.store {
            Store::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(q.to_string()))
                .fetch_one(s.pool())
                .await
                .unwrap(),
            Store::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(q.to_string()))
                .fetch_one(s.pool())
                .await
                .unwrap(),
        }
    }

    /// Every ledger row: (entry, slot, outcome, reason), by entry and slot.
    pub async fn ledger(&self) -> Vec<(String, DateTime<Utc>, String, String)> {
        let q =
            "SELECT entry, slot, outcome, coalesce(reason, '') FROM ledger ORDER BY entry, slot";
        match &self.store {
            Store::Postgres(s) => sqlx::query_as(q).fetch_all(s.pool()).await.unwrap(),
            Store::Sqlite(s) => {
                let rows: Vec<(String, String, String, String)> =
                    sqlx::query_as(q).fetch_all(s.pool()).await.unwrap();
                rows.into_iter()
                    .map(|(e, t, o, r)| (e, at(&t), o, r))
                    .collect()
            }
        }
    }

    /// Runs SQL written by hand (rows, triggers), for the backend at hand.
    pub async fn exec(&self, pg: &str, lite: &str) {
        match &self.store {
            Store::Postgres(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(pg.to_string()))
                .execute(s.pool())
                .await
                .map(|_| ()),
            Store::Sqlite(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(lite.to_string()))
                .execute(s.pool())
                .await
                .map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{pg} / {lite}: {e}"));
    }

    /// Text columns of the rows `sql` selects (the same SQL on both).
    pub async fn texts(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::Row;
        fn cols<R: Row>(r: &R) -> Vec<String>
        where
            usize: sqlx::ColumnIndex<R>,
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        {
            (0..r.len()).map(|i| r.get::<String, _>(i)).collect()
        }
        let q = sqlx::AssertSqlSafe(sql.to_string());
        match &self.store {
            Store::Postgres(s) => sqlx::query(q)
                .fetch_all(s.pool())
                .await
                .unwrap()
                .iter()
                .map(cols)
                .collect(),
            Store::Sqlite(s) => sqlx::query(q)
                .fetch_all(s.pool())
                .await
                .unwrap()
                .iter()
                .map(cols)
                .collect(),
        }
    }

    /// A driver over this harness's store, sink and clock.
    pub fn driver(&self) -> sqsbeat::beat::driver::Driver<MemorySink> {
        sqsbeat::beat::driver::Driver {
            trust: self.trust.subscribe(),
            store: self.store.clone(),
            sink: self.sink.clone(),
            opts: self.opts.clone(),
            clock: self.clock.clone(),
            check_ins: sqsbeat::runtime::sentry::CheckIns::off(),
            accepted: Default::default(),
            metrics: sqsbeat::runtime::metrics::get(),
        }
    }

    /// Sets the clock to `t` and returns it.
    pub fn at(&self, t: &str) -> DateTime<Utc> {
        let t = at(t);
        self.clock.set(t);
        t
    }

    /// The task ids the sink accepted, in order.
    pub fn accepted_ids(&self) -> Vec<uuid::Uuid> {
        self.sink
            .accepted()
            .iter()
            .map(|a| a.message.task_id)
            .collect()
    }
}

/// Entries from schedule TOML (validated like a file).
pub fn entries(toml: &str) -> Vec<Entry> {
    let loaded = sqsbeat::entry::file::parse_str("test.toml", toml, &Context::default());
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded.entries
}
