//! The store contract, run against both backends: PostgreSQL and SQLite
//! must give the same answers. The ledger (fencing, takeover, misses,
//! cursors, pruning) and the jobs lease (claim, cancel, settle, lost
//! leases, FIFO windows, rows that cannot be read).

use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqsbeat::jobs::JobSpec;
use sqsbeat::store::jobs::{
    self, Cancelled, ClaimRequest, Claimed, Filter, Inserted, JobStatus, Settlement,
};
use sqsbeat::store::{
    Claim, Cursor, FireKey, Miss, PgStore, SqliteStore, Store, StoreError, entries, ledger,
};
use uuid::Uuid;

use crate::pg::TestDb;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn claim(entry: &str, slot: &str) -> Claim {
    Claim {
        entry: entry.into(),
        slot: at(slot),
        task_id: Uuid::new_v4(),
        queue: "q".into(),
    }
}

fn key(entry: &str, slot: DateTime<Utc>) -> FireKey {
    FireKey {
        entry: entry.into(),
        slot,
    }
}

/// Runs SQL written for each backend (a row written by hand).
async fn raw(store: &Store, pg: &str, lite: &str) {
    match store {
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

async fn outcome(store: &Store, entry: &str) -> String {
    let sql = format!("SELECT outcome FROM ledger WHERE entry = '{entry}'");
    match store {
        Store::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(s.pool())
            .await
            .unwrap(),
        Store::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(s.pool())
            .await
            .unwrap(),
    }
}

/// `new_epoch()` makes a newer leader and returns its epoch.
async fn ledger_contract<F, Fut>(store: &Store, mut new_epoch: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = i64>,
{
    let e1 = new_epoch().await;
    let c = claim("a", "2026-11-21T10:00:00.250Z");
    let ours = ledger::record_decision(store, e1, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(ours, [key("a", c.slot)]);

    let e2 = new_epoch().await;
    assert!(e2 > e1);
    let d = claim("a", "2026-11-21T10:01:00Z");
    assert!(
        matches!(
            ledger::record_decision(store, e1, &[d], &[], &[]).await,
            Err(StoreError::Fenced { .. })
        ),
        "an old epoch claims nothing"
    );
    let d = claim("a", "2026-11-21T10:01:00Z");
    assert!(
        matches!(
            ledger::record_and_confirm(store, e1, &[key("a", c.slot)], &[d], &[], &[]).await,
            Err(StoreError::Fenced { .. })
        ),
        "nor confirms anything with its claims"
    );

    let pending = ledger::unconfirmed(store).await.unwrap().0;
    assert_eq!(
        pending,
        [(key("a", c.slot), 0)],
        "instants round-trip exactly"
    );
    let names = ["a".to_string(), "none".to_string()];
    assert_eq!(
        ledger::oldest_unsent(store, &names).await.unwrap(),
        [("a".to_string(), c.slot)].into(),
        "the oldest claim not sent, per entry"
    );
    assert_eq!(
        ledger::record_decision(store, e2, std::slice::from_ref(&c), &[], &[])
            .await
            .unwrap()
            .len(),
        1,
        "the new leader takes an unconfirmed claim over"
    );
    ledger::record_failure(store, &key("a", c.slot), "boom")
        .await
        .unwrap();
    ledger::confirm_sent(store, &[key("a", c.slot)])
        .await
        .unwrap();
    assert!(
        ledger::record_decision(store, e2, std::slice::from_ref(&c), &[], &[])
            .await
            .unwrap()
            .is_empty(),
        "a sent fire is never claimed again"
    );
    assert!(ledger::unconfirmed(store).await.unwrap().0.is_empty());
    let miss_sent = Miss {
        entry: "a".into(),
        slot: c.slot,
        reason: "expired before it could be sent".into(),
    };
    ledger::record_misses(store, e2, &[miss_sent])
        .await
        .unwrap();
    assert_eq!(outcome(store, "a").await, "sent", "a sent row stays sent");
    assert_eq!(
        ledger::last_sent(store, &names).await.unwrap(),
        [("a".to_string(), c.slot)].into(),
        "the last sent slot per entry"
    );
    assert!(
        ledger::oldest_unsent(store, &names)
            .await
            .unwrap()
            .is_empty()
    );

    let cur = |t: &str, enabled: bool| Cursor {
        entry: "a".into(),
        cursor: at(t),
        enabled,
    };
    ledger::record_cursors(store, e2, &[cur("2026-11-21T10:05:00Z", true)])
        .await
        .unwrap();
    ledger::record_cursors(store, e2, &[cur("2026-11-21T10:01:00Z", false)])
        .await
        .unwrap();
    assert_eq!(
        ledger::load_cursors(store).await.unwrap().0["a"],
        (at("2026-11-21T10:05:00Z"), false),
        "cursors never move back"
    );
    assert_eq!(
        ledger::cursors_of(store, &names).await.unwrap(),
        [("a".to_string(), (at("2026-11-21T10:05:00Z"), false))].into(),
        "the cursors of the entries asked for"
    );

    let miss = Miss {
        entry: "b".into(),
        slot: at("2026-11-20T10:00:00Z"),
        reason: "late".into(),
    };
    ledger::record_decision(store, e2, &[], &[miss], &[])
        .await
        .unwrap();
    assert_eq!(
        ledger::prune(store, at("2026-11-21T00:00:00Z"))
            .await
            .unwrap(),
        1,
        "only settled rows older than the cut-off"
    );
    assert_eq!(
        ledger::prune(store, at("2026-11-22T00:00:00Z"))
            .await
            .unwrap(),
        1
    );
}

/// A backfill's claim is not among the unconfirmed claims a leader takes
/// over while its lease lasts; renewing it restarts the lease; one that
/// lapsed is.
async fn backfill_claims_are_the_backfills_while_their_lease_lasts(store: &Store) {
    let c = claim("bf", "2026-11-21T10:03:00Z");
    let won = sqsbeat::store::backfill::claim(store, std::slice::from_ref(&c))
        .await
        .unwrap();
    let k = key("bf", c.slot);
    assert_eq!(won, std::slice::from_ref(&k));
    let taken_over = || async {
        let (pending, _) = ledger::unconfirmed(store).await.unwrap();
        pending.iter().any(|(p, _)| *p == k)
    };
    assert!(!taken_over().await, "a live backfill claim");
    let lapse = "UPDATE ledger SET claimed_at = '2026-11-21T09:00:00.000000Z' WHERE entry = 'bf'";
    raw(store, lapse, lapse).await;
    assert!(taken_over().await, "a lapsed one");
    sqsbeat::store::backfill::renew(store, std::slice::from_ref(&k))
        .await
        .unwrap();
    assert!(!taken_over().await, "renewed");
    ledger::confirm_sent(store, &[k]).await.unwrap();
    assert_eq!(outcome(store, "bf").await, "sent");
}

/// A leader's heartbeat carries what its beat found overdue; a standby's
/// carries nothing, and clears what it published while leading.
async fn replicas_publish_the_leaders_overdue_entries(store: &Store) {
    use sqsbeat::runtime::leader::Role;
    use sqsbeat::store::replicas::{self, Overdue};
    let t = at("2026-11-21T10:00:00Z");
    let names = ["late-a".to_string(), "late-b".to_string()];
    let leader = Role::Leader { epoch: 3, since: t };
    let found = Overdue {
        count: 7,
        names: &names,
    };
    replicas::heartbeat(store, "r1", leader, t, t, Some(found))
        .await
        .unwrap();
    let r = replicas::replicas(store).await.unwrap();
    assert_eq!(
        (r[0].overdue, r[0].overdue_entries.clone()),
        (Some(7), names.to_vec())
    );
    replicas::heartbeat(store, "r1", Role::Standby, t, t, None)
        .await
        .unwrap();
    let r = replicas::replicas(store).await.unwrap();
    assert_eq!((r[0].overdue, r[0].overdue_entries.len()), (None, 0));
}

/// Regression: a miss for a slot still claimed (its retries ran past
/// `expires`, or its entry was removed) was `ON CONFLICT DO NOTHING`, so
/// the row stayed `claimed` forever and was re-sent at every resume.
async fn a_claimed_fire_that_expires_is_recorded_missed(store: &Store, epoch: i64) {
    let c = claim("x", "2026-11-21T11:00:00Z");
    ledger::record_decision(store, epoch, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    ledger::record_failure(store, &key("x", c.slot), "queue missing")
        .await
        .unwrap();
    let expired = Miss {
        entry: "x".into(),
        slot: c.slot,
        reason: "expired before it could be sent".into(),
    };
    ledger::record_decision(store, epoch, &[], &[expired], &[])
        .await
        .unwrap();
    assert!(ledger::unconfirmed(store).await.unwrap().0.is_empty());
    assert_eq!(outcome(store, "x").await, "missed");
    // What the driver records for claims of an entry no longer scheduled.
    let r = claim("removed", "2026-11-21T11:00:00Z");
    ledger::record_decision(store, epoch, std::slice::from_ref(&r), &[], &[])
        .await
        .unwrap();
    let gone = Miss {
        entry: "removed".into(),
        slot: r.slot,
        reason: "entry removed".into(),
    };
    ledger::record_misses(store, epoch, &[gone]).await.unwrap();
    assert_eq!(outcome(store, "removed").await, "missed");
    assert!(ledger::unconfirmed(store).await.unwrap().0.is_empty());
    let failing = ledger::failing(store, 10).await.unwrap();
    assert!(
        failing.is_empty(),
        "a missed fire is not a current failure: {failing:?}"
    );
}

fn job(queue: &str, due: DateTime<Utc>) -> JobSpec {
    JobSpec {
        id: Uuid::new_v4(),
        task: "app.t".into(),
        args: vec![Value::from(1)],
        kwargs: Default::default(),
        queue: queue.into(),
        due_at: due,
        expires_at: None,
        priority: 0,
        headers: Default::default(),
    }
}

async fn add(store: &Store, spec: &JobSpec) {
    assert!(matches!(
        jobs::insert(store, spec, "t").await.unwrap(),
        Inserted::Created
    ));
}

fn request(now: DateTime<Utc>, token: Uuid) -> ClaimRequest {
    ClaimRequest {
        now,
        window: Duration::minutes(15),
        limit: 500,
        lease_for: Duration::minutes(2),
        only: None,
        token,
    }
}

fn ids(c: &Claimed) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = c.rows.iter().map(|r| r.id).collect();
    v.sort();
    v
}

async fn status(store: &Store, id: Uuid) -> JobStatus {
    jobs::get(store, id).await.unwrap().unwrap().status
}

async fn release(store: &Store, token: Uuid, c: &Claimed, now: DateTime<Utc>) -> u64 {
    let s = Settlement {
        released: c.rows.iter().map(|r| r.id).collect(),
        ..Default::default()
    };
    let out = jobs::settle(store, token, &s, now).await.unwrap();
    assert_eq!(out.lost, 0);
    out.settled
}

/// The jobs lease. `bad_row(id, due)` writes, by hand, a row due at `due`
/// that cannot be read (each backend has its own ways).
async fn jobs_contract<F, Fut>(store: &Store, bad_row: F)
where
    F: Fn(Uuid, DateTime<Utc>) -> Fut,
    Fut: Future<Output = ()>,
{
    let now = at("2030-01-01T12:00:00Z");
    let a = job("q", now + Duration::minutes(1));
    let b = job("q", now + Duration::minutes(2));
    add(store, &a).await;
    add(store, &b).await;

    // Two claims before any settle never return the same row.
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let first = jobs::claim(
        store,
        &ClaimRequest {
            limit: 1,
            ..request(now, t1)
        },
    )
    .await
    .unwrap();
    let second = jobs::claim(store, &request(now, t2)).await.unwrap();
    assert_eq!(first.rows.len(), 1);
    assert_eq!(first.rows[0].id, a.id, "by due instant");
    assert_eq!(ids(&second), [b.id]);
    assert_eq!(first.rows[0].status, JobStatus::Releasing);
    assert!(
        jobs::claim(store, &request(now, Uuid::new_v4()))
            .await
            .unwrap()
            .rows
            .is_empty()
    );

    // Cancel of a job being released answers so, and does not cancel it.
    assert_eq!(
        jobs::cancel(store, a.id).await.unwrap(),
        Cancelled::BeingReleased
    );
    assert_eq!(release(store, t1, &first, now).await, 1);
    assert_eq!(status(store, a.id).await, JobStatus::Released);
    assert_eq!(
        jobs::cancel(store, a.id).await.unwrap(),
        Cancelled::NotPending(JobStatus::Released)
    );

    // A lost lease: b's claim outlives its lease, another pass takes it,
    // and the first settle changes nothing and says so.
    let later = now + Duration::minutes(3);
    let t3 = Uuid::new_v4();
    assert_eq!(
        jobs::next_wake(store, Duration::minutes(15)).await.unwrap(),
        Some(now + Duration::minutes(2)),
        "the end of a lease is a wake-up"
    );
    let retaken = jobs::claim(store, &request(later, t3)).await.unwrap();
    assert_eq!(ids(&retaken), [b.id], "an ended lease is claimed again");
    let lost = jobs::settle(
        store,
        t2,
        &Settlement {
            released: vec![b.id],
            ..Default::default()
        },
        later,
    )
    .await
    .unwrap();
    assert_eq!((lost.settled, lost.lost), (0, 1));
    assert_eq!(status(store, b.id).await, JobStatus::Releasing);
    // A failed send: pending again, not claimed before its retry instant.
    let retry_at = later + Duration::seconds(30);
    let out = jobs::settle(
        store,
        t3,
        &Settlement {
            retry: vec![(b.id, "throttled".into(), retry_at)],
            ..Default::default()
        },
        later,
    )
    .await
    .unwrap();
    assert_eq!((out.settled, out.lost), (1, 0));
    let row = jobs::get(store, b.id).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.attempts, row.last_error.as_deref()),
        (JobStatus::Pending, 1, Some("throttled"))
    );
    assert!(
        jobs::claim(store, &request(later, Uuid::new_v4()))
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    // Cancel, then claim: not claimed.
    assert_eq!(jobs::cancel(store, b.id).await.unwrap(), Cancelled::Done);
    assert!(
        jobs::claim(store, &request(retry_at, Uuid::new_v4()))
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    assert_eq!(status(store, b.id).await, JobStatus::Cancelled);
    assert_eq!(
        jobs::cancel(store, Uuid::new_v4()).await.unwrap(),
        Cancelled::Missing
    );
    // An empty settlement writes nothing.
    let none = jobs::settle(store, Uuid::new_v4(), &Settlement::default(), later)
        .await
        .unwrap();
    assert_eq!((none.settled, none.lost), (0, 0));

    // FIFO queues take no delay: a job is claimed only once due. 600 not
    // yet due do not fill a claim of 500 (a full claim made the releaser
    // loop without sleeping).
    let t = at("2030-02-01T12:00:00Z");
    let fifo: Vec<JobSpec> = (0..600)
        .map(|_| job("jobs.fifo", t + Duration::minutes(10)))
        .collect();
    for f in &fifo {
        add(store, f).await;
    }
    let plain = job("jobs", t + Duration::minutes(10));
    add(store, &plain).await;
    let c = jobs::claim(store, &request(t, Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(ids(&c), [plain.id], "a FIFO job not yet due is not claimed");
    assert_eq!(
        jobs::next_wake(store, Duration::minutes(15)).await.unwrap(),
        Some(t + Duration::minutes(2)),
        "the lease just taken ends first"
    );
    let due = jobs::claim(
        store,
        &ClaimRequest {
            only: Some(fifo[0].id),
            ..request(t + Duration::minutes(10), Uuid::new_v4())
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&due), [fifo[0].id], "a FIFO job once due is claimed");

    // A row that cannot be read beside a good one: the good one is
    // claimed, the bad one marked failed with the reason, in the same pass.
    // (Before the FIFO jobs above are due, so they stay out of it.)
    let t = at("2030-01-20T12:00:00Z");
    let good = job("q", t);
    add(store, &good).await;
    let bad = Uuid::new_v4();
    bad_row(bad, t).await;
    let c = jobs::claim(store, &request(t, Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(ids(&c), [good.id]);
    assert_eq!(c.failed.len(), 1, "{:?}", c.failed);
    assert_eq!(c.failed[0].0, bad.to_string());
    let listed = jobs::list(
        store,
        &Filter {
            status: Some(JobStatus::Failed),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    let reason = match &listed[0] {
        // The row still cannot be read: listed as an error naming it.
        Err(StoreError::Decode { table, row, .. }) => {
            assert_eq!((*table, row.as_str()), ("jobs", bad.to_string().as_str()));
            c.failed[0].1.clone()
        }
        Ok(r) => r.last_error.clone().unwrap(),
        Err(e) => panic!("{e}"),
    };
    assert!(reason.starts_with("cannot read column"), "{reason}");
    let failures = jobs::failing(store, 10).await.unwrap();
    assert!(
        failures.iter().any(|f| f.name == bad.to_string()),
        "{failures:?}"
    );
    let pending: Vec<i64> = jobs::pending_by_bucket(store, t)
        .await
        .unwrap()
        .iter()
        .map(|b| b.1)
        .collect();
    assert_eq!(pending.iter().sum::<i64>(), 599, "{pending:?}");
}

/// Regression (issue 14 #3): a pending job whose `due_at` or `retry_at`
/// no release can ever reach (`infinity`, a year beyond chrono's range,
/// text that is no instant) stayed pending forever; it is now marked
/// failed with the reason by the next claim. And a row set to `releasing`
/// by hand, with no lease, was never claimed nor cancellable: a lease
/// without an end is over, and a row no pass holds can be cancelled.
async fn a_job_no_release_can_reach_is_failed_and_a_lease_without_an_end_is_over(store: &Store) {
    let now = at("2031-03-01T12:00:00Z");
    let id = |n: u8| Uuid::from_bytes([n; 16]);
    let lite_now = "'2031-03-01T12:00:00.000000Z'";
    let rows = |due_never: &str, far_year: &str, when: &str| {
        format!(
            "INSERT INTO jobs (id, task, due_at, created_at) VALUES ('{}', 'a.t', {due_never}, {when});
             INSERT INTO jobs (id, task, due_at, created_at) VALUES ('{}', 'a.t', {far_year}, {when});
             INSERT INTO jobs (id, task, due_at, created_at, retry_at) VALUES ('{}', 'a.t', {when}, {when}, {due_never});
             INSERT INTO jobs (id, task, due_at, created_at, status) VALUES ('{}', 'a.t', {when}, {when}, 'releasing');
             INSERT INTO jobs (id, task, due_at, created_at, status) VALUES ('{}', 'a.t', {when}, {when}, 'releasing');
             INSERT INTO jobs (id, task, due_at, created_at) VALUES ('{}', 'a.t', {when}, {when});",
            id(1), id(2), id(3), id(4), id(5), id(6)
        )
    };
    raw(
        store,
        &rows("'infinity'", "'270000-01-01'", lite_now),
        &rows("'infinity'", "'+270000-01-01T00:00:00Z'", lite_now),
    )
    .await;
    let wake = jobs::next_wake(store, Duration::minutes(15)).await.unwrap();
    assert!(
        wake.is_some_and(|t| t <= now),
        "a lease without an end is a wake-up now: {wake:?}"
    );
    assert_eq!(jobs::cancel(store, id(5)).await.unwrap(), Cancelled::Done);
    let c = jobs::claim(store, &request(now, Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(
        ids(&c),
        [id(4), id(6)],
        "the lease without an end, and the good one"
    );
    let mut failed: Vec<(String, String)> = c.failed.clone();
    failed.sort();
    let column = |f: &(String, String)| f.1.split(':').next().unwrap().to_string();
    assert_eq!(
        failed
            .iter()
            .map(|f| (f.0.clone(), column(f)))
            .collect::<Vec<_>>(),
        [
            (id(1).to_string(), "cannot read column due_at".to_string()),
            (id(2).to_string(), "cannot read column due_at".to_string()),
            (id(3).to_string(), "cannot read column retry_at".to_string()),
        ]
    );
    let listed = jobs::list(
        store,
        &Filter {
            status: Some(JobStatus::Failed),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(status(store, id(5)).await, JobStatus::Cancelled);
    assert!(
        jobs::claim(store, &request(now + Duration::days(1), Uuid::new_v4()))
            .await
            .unwrap()
            .failed
            .is_empty(),
        "failed once, not again"
    );
    raw(store, "DELETE FROM jobs", "DELETE FROM jobs").await;
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let db = TestDb::new().await;
    let pg = PgStore::connect(&db.url, "sqsbeat").await.unwrap();
    let pool = pg.pool().clone();
    let store = Store::Postgres(pg);
    let new_epoch = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar(
                "INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, 1, 't', now(), now())
                 ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1 RETURNING epoch",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    ledger_contract(&store, new_epoch).await;
    a_claimed_fire_that_expires_is_recorded_missed(&store, new_epoch().await).await;
    replicas_publish_the_leaders_overdue_entries(&store).await;
    a_job_no_release_can_reach_is_failed_and_a_lease_without_an_end_is_over(&store).await;
    backfill_claims_are_the_backfills_while_their_lease_lasts(&store).await;
    let s = store.clone();
    jobs_contract(&store, |id, due| {
        let s = s.clone();
        async move {
            // 'infinity' is a timestamptz sqlx's own decoder panics on.
            let sql = format!(
                "INSERT INTO jobs (id, task, due_at, expires_at) VALUES ('{id}', 'app.t', '{}', 'infinity')",
                due.to_rfc3339()
            );
            raw(&s, &sql, "").await;
        }
    })
    .await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let lite = SqliteStore::open(&dir.path().join("nested/state.db"))
        .await
        .unwrap();
    let locks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = lite.clone();
    let store = Store::Sqlite(lite);
    let new_epoch = move || {
        let (lite, locks) = (l2.clone(), locks.clone());
        async move {
            // Each new leader: the previous holder lets go, a new one locks.
            locks.lock().unwrap().clear();
            let (lock, epoch) = lite.lock_for_run("t").await.unwrap();
            locks.lock().unwrap().push(lock);
            epoch
        }
    };
    ledger_contract(&store, new_epoch.clone()).await;
    a_claimed_fire_that_expires_is_recorded_missed(&store, new_epoch().await).await;
    replicas_publish_the_leaders_overdue_entries(&store).await;
    a_job_no_release_can_reach_is_failed_and_a_lease_without_an_end_is_over(&store).await;
    backfill_claims_are_the_backfills_while_their_lease_lasts(&store).await;
    let s = store.clone();
    jobs_contract(&store, |id, due| {
        let s = s.clone();
        async move {
            // Text that is not JSON where args must be.
            let sql = format!(
                "INSERT INTO jobs (id, task, args, due_at, created_at) VALUES ('{id}', 'app.t', 'not json', '{}', '{}')",
                sqsbeat::store::sqlite::codec::text(due),
                sqsbeat::store::sqlite::codec::text(due)
            );
            raw(&s, "", &sql).await;
        }
    })
    .await;
}

/// Review #6, scenario C: hand-written SQLite rows whose text is not an
/// instant, JSON or a UUID are set aside one by one, never the batch.
#[tokio::test]
async fn sqlite_rows_with_unreadable_text_are_errors_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
    raw(
        &store,
        "",
        "INSERT INTO entries (name, task, every) VALUES ('good', 'a.t', '1m');
         INSERT INTO entries (name, task, every, start_at) VALUES ('soon', 'a.t', '1m', 'soon');
         INSERT INTO entries (name, task, every, args) VALUES ('notjson', 'a.t', '1m', '[1,');",
    )
    .await;
    let rows = entries::list(&store).await.unwrap();
    let summary: Vec<String> = rows
        .iter()
        .map(|r| match r {
            Ok(r) => format!("ok {}", r.name),
            Err(StoreError::Decode {
                table, column, row, ..
            }) => format!("bad {table}.{column} {row}"),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ok good",
            "bad entries.args notjson",
            "bad entries.start_at soon"
        ]
    );

    let good = job("q", at("2030-01-01T00:00:00Z"));
    add(&store, &good).await;
    raw(
        &store,
        "",
        "INSERT INTO jobs (id, task, due_at, created_at) VALUES ('not-a-uuid', 'a.t', '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z');
         INSERT INTO jobs (id, task, due_at, created_at) VALUES ('11111111-1111-4111-8111-111111111111', 'a.t', '2030-01-01T00:00:00.000000Z', 'yesterday');",
    )
    .await;
    let c = jobs::claim(&store, &request(at("2030-01-01T00:00:00Z"), Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(ids(&c), [good.id]);
    let mut failed: Vec<&str> = c.failed.iter().map(|f| f.0.as_str()).collect();
    failed.sort();
    assert_eq!(
        failed,
        ["11111111-1111-4111-8111-111111111111", "not-a-uuid"]
    );
}

#[tokio::test]
async fn sqlite_allows_one_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    let (_held, _) = a.lock_for_run("a").await.unwrap();
    let err = b.lock_for_run("b").await.unwrap_err().to_string();
    assert!(
        err.contains("another sqsbeat process is running on") && err.contains("PostgreSQL"),
        "{err}"
    );
}
