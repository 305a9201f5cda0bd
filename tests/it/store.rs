//! The ledger and leadership against a real PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqsbeat::runtime::leader::{self, Role};
use sqsbeat::store::{
    Claim, Cursor, FireKey, Miss, PgStore as Store, Store as AnyStore, StoreError, ledger,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pg::TestDb;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

async fn set_epoch(store: &Store, epoch: i64) {
    sqlx::query("INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, $1, 't', now(), now()) ON CONFLICT (id) DO UPDATE SET epoch = $1")
        .bind(epoch)
        .execute(store.pool())
        .await
        .unwrap();
}

fn claim(entry: &str, slot: &str) -> Claim {
    Claim {
        entry: entry.into(),
        slot: at(slot),
        task_id: uuid::Uuid::new_v4(),
        queue: "q".into(),
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_stay_in_their_schema() {
    let db = TestDb::new().await;
    let a = Store::connect(&db.url, "beat_here").await.unwrap();
    Store::connect(&db.url, "beat_here")
        .await
        .expect("second run applies nothing and succeeds");
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_name IN ('ledger', 'leader', 'entry_state') ORDER BY 1")
        .fetch_all(a.pool())
        .await
        .unwrap();
    assert_eq!(
        tables,
        [
            "beat_here.entry_state",
            "beat_here.leader",
            "beat_here.ledger"
        ]
    );
    assert!(matches!(
        Store::connect(&db.url, "Bad-Name").await,
        Err(StoreError::Schema(_))
    ));
}

#[tokio::test]
async fn replicas_starting_together_create_the_schema_once() {
    // Regression: concurrent CREATE SCHEMA IF NOT EXISTS failed one replica
    // with a unique violation on pg_namespace.
    let db = TestDb::new().await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::connect(&url, "sqsbeat").await })
        })
        .collect();
    for s in starts {
        s.await.unwrap().expect("every replica starts");
    }
}

#[tokio::test]
async fn claims_are_fenced_by_epoch_and_never_repeated_once_sent() {
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let pool = s.pool();
    let any = AnyStore::Postgres(s.clone());
    let store = &any;
    let c = claim("a", "2026-11-21T10:00:00Z");
    assert!(matches!(
        ledger::record_decision(store, 1, std::slice::from_ref(&c), &[], &[]).await,
        Err(StoreError::Fenced {
            mine: 1,
            current: None
        })
    ));
    set_epoch(&s, 7).await;
    let ours = ledger::record_decision(store, 7, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(
        ours,
        [FireKey {
            entry: "a".into(),
            slot: c.slot
        }]
    );
    // A newer leader exists: the old epoch can claim nothing.
    set_epoch(&s, 8).await;
    let d = claim("a", "2026-11-21T10:01:00Z");
    assert!(matches!(
        ledger::record_decision(store, 7, &[d], &[], &[]).await,
        Err(StoreError::Fenced {
            mine: 7,
            current: Some(8)
        })
    ));
    // Unconfirmed: the new leader takes it over (same row, same task id).
    assert_eq!(ledger::unconfirmed(store).await.unwrap().0.len(), 1);
    let again = ledger::record_decision(store, 8, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let task_id: uuid::Uuid = sqlx::query_scalar("SELECT task_id FROM ledger")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(task_id, c.task_id, "a takeover keeps the original task id");
    // Once sent, never claimed again.
    ledger::confirm_sent(
        store,
        &[FireKey {
            entry: "a".into(),
            slot: c.slot,
        }],
    )
    .await
    .unwrap();
    assert!(
        ledger::record_decision(store, 8, std::slice::from_ref(&c), &[], &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(ledger::unconfirmed(store).await.unwrap().0.is_empty());
    let row = sqlx::query("SELECT outcome, epoch, sent_at IS NOT NULL AS sent FROM ledger")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("outcome"), "sent");
    assert_eq!(row.get::<i64, _>("epoch"), 8);
    assert!(row.get::<bool, _>("sent"));
}

#[tokio::test]
async fn cursors_never_move_back_and_misses_are_recorded() {
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    set_epoch(&s, 1).await;
    let any = AnyStore::Postgres(s.clone());
    let store = &any;
    let cur = |t: &str| Cursor {
        entry: "a".into(),
        cursor: at(t),
        enabled: true,
    };
    ledger::record_cursors(store, 1, &[cur("2026-11-21T10:05:00Z")])
        .await
        .unwrap();
    ledger::record_cursors(store, 1, &[cur("2026-11-21T10:01:00Z")])
        .await
        .unwrap();
    assert_eq!(
        ledger::load_cursors(store).await.unwrap().0["a"],
        (at("2026-11-21T10:05:00Z"), true)
    );
    let miss = Miss {
        entry: "a".into(),
        slot: at("2026-11-21T10:06:00Z"),
        reason: "late".into(),
    };
    ledger::record_decision(store, 1, &[], &[miss], &[])
        .await
        .unwrap();
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM ledger")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(outcome, "missed");
    assert_eq!(
        ledger::prune(store, at("2026-11-22T00:00:00Z"))
            .await
            .unwrap(),
        1
    );
}

async fn wait_role(rx: &mut watch::Receiver<Role>, want_leader: bool, within: Duration) -> Role {
    tokio::time::timeout(within, async {
        loop {
            let r = *rx.borrow_and_update();
            if r.epoch().is_some() == want_leader {
                return r;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("role (leader: {want_leader}) not reached within {within:?}"))
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_standby_takes_over() {
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let (tx_a, mut rx_a) = watch::channel(Role::Standby);
    let (tx_b, mut rx_b) = watch::channel(Role::Standby);
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = tokio::spawn(leader::campaign(
        s.clone(),
        "a".into(),
        tx_a,
        sqsbeat::clock::Clock::System,
        std::sync::Arc::new(watch::channel(sqsbeat::clock::Trust::Unchecked).0),
        stop_a.clone(),
    ));
    let first = wait_role(&mut rx_a, true, Duration::from_secs(5)).await;
    let b = tokio::spawn(leader::campaign(
        s.clone(),
        "b".into(),
        tx_b,
        sqsbeat::clock::Clock::System,
        std::sync::Arc::new(watch::channel(sqsbeat::clock::Trust::Unchecked).0),
        stop_b.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(*rx_b.borrow(), Role::Standby, "only one leader");

    stop_a.cancel();
    a.await.unwrap();
    let started = std::time::Instant::now();
    let second = wait_role(&mut rx_b, true, Duration::from_secs(3)).await;
    assert!(second.epoch() > first.epoch(), "{second:?} after {first:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "takeover took {:?}",
        started.elapsed()
    );

    // The leader's session is killed under it: it must notice and stop.
    // Only this test's database: the other tests (and their migrations,
    // which take advisory locks too) share the server.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .execute(s.pool())
    .await
    .unwrap();
    wait_role(&mut rx_b, false, Duration::from_secs(3)).await;
    let third = wait_role(&mut rx_b, true, Duration::from_secs(5)).await;
    assert!(third.epoch() > second.epoch());
    stop_b.cancel();
    b.await.unwrap();
}

/// Regression: a decision locked the leader row `FOR UPDATE` until it
/// committed, and the leader's own heartbeat updates that row under a
/// 1.5 s deadline: a large decision (every cursor at the start of a term,
/// a catch-up) made the heartbeat wait past it, the leader stepped down,
/// and the next one did the same. A decision in flight no longer holds up
/// the heartbeat, and still holds up a new leader's epoch, which is what
/// keeps a stale leader's decision from committing after a new epoch.
#[tokio::test]
async fn an_open_decision_does_not_block_the_heartbeat_but_blocks_a_new_epoch() {
    use sqlx::Connection;
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let store = AnyStore::Postgres(s.clone());
    let (mut session, _) = sqsbeat::store::leader::Session::open(&s).await.unwrap();
    assert!(session.try_lock(s.lock_key()).await.unwrap());
    let (epoch, _) = session.take("me").await.unwrap();
    let cursor = |t: &str| Cursor {
        entry: "x".into(),
        cursor: at(t),
        enabled: true,
    };
    ledger::record_cursors(&store, epoch, &[cursor("2026-11-21T10:00:00Z")])
        .await
        .unwrap();
    // The next decision stalls on a cursor row this test holds: its fence
    // taken, its transaction open, for as long as the test likes.
    let mut holder = s.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM entry_state WHERE entry = 'x' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let decision = tokio::spawn({
        let store = store.clone();
        async move { ledger::record_cursors(&store, epoch, &[cursor("2026-11-21T10:01:00Z")]).await }
    });
    let mut waits = 0;
    while waits < 10_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(s.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        waits += 1;
        tokio::task::yield_now().await;
    }
    assert!(waits < 10_000, "the decision never waited on the row");

    // The heartbeat does not wait for it (the bound only stops a failing
    // test from hanging: without the fix it waits as long as the decision).
    let beat = tokio::time::timeout(Duration::from_secs(30), session.heartbeat(epoch))
        .await
        .expect("the heartbeat waited for the open decision");
    assert!(beat.unwrap().is_some(), "still the leader");

    // A new leader's epoch does wait for it.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET lock_timeout = '200ms'")
        .execute(&mut other)
        .await
        .unwrap();
    let bump = sqlx::query("UPDATE sqsbeat.leader SET epoch = epoch + 1 WHERE id = 1")
        .execute(&mut other)
        .await
        .unwrap_err();
    let code = bump.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("55P03"), "{bump}");

    holder.rollback().await.unwrap();
    decision.await.unwrap().unwrap();
    assert_eq!(
        ledger::load_cursors(&store).await.unwrap().0["x"].0,
        at("2026-11-21T10:01:00Z"),
        "the decision committed"
    );
    session.close().await;
}

/// Regression (idle NOTIFY loop): every release pass ended with an UPDATE
/// even when nothing was claimed, the statement trigger on `jobs` NOTIFYed
/// on zero-row updates too, every releaser woke for another pass, forever
/// (about 2 000 xids per second per idle replica). Notifications arrive in
/// commit order, so a sentinel sent after the passes must come first.
#[tokio::test]
async fn idle_releaser_sends_no_notify_on_an_empty_pass() {
    use sqsbeat::store::jobs::{self, ClaimRequest, Settlement};
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let store = AnyStore::Postgres(s.clone());
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("sqsbeat_jobs").await.unwrap();
    let sentinel = |tag: &'static str| {
        let pool = s.pool().clone();
        async move {
            sqlx::query("SELECT pg_notify('sqsbeat_jobs', $1)")
                .bind(tag)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    async fn next(l: &mut sqlx::postgres::PgListener) -> String {
        tokio::time::timeout(Duration::from_secs(10), l.recv())
            .await
            .expect("a notification")
            .unwrap()
            .payload()
            .to_string()
    }
    let now = Utc::now();
    let pass = |token: uuid::Uuid| ClaimRequest {
        now,
        window: chrono::Duration::minutes(15),
        limit: 500,
        lease_for: chrono::Duration::minutes(2),
        only: None,
        token,
    };

    // An empty pass: a claim of nothing, a settlement of nothing.
    let token = uuid::Uuid::new_v4();
    let claimed = jobs::claim(&store, &pass(token)).await.unwrap();
    assert!(claimed.rows.is_empty());
    jobs::settle(&store, token, &Settlement::default(), now)
        .await
        .unwrap();
    sentinel("after the empty pass").await;
    assert_eq!(next(&mut listener).await, "after the empty pass");

    // A new job wakes the releasers.
    let id = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO jobs (id, task, due_at) VALUES ($1, 'a.b', now())")
        .bind(id)
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(next(&mut listener).await, "sqsbeat", "an insert notifies");

    // A pass that releases it: no notification either.
    let token = uuid::Uuid::new_v4();
    let claimed = jobs::claim(&store, &pass(token)).await.unwrap();
    assert_eq!(claimed.rows.len(), 1);
    jobs::settle(
        &store,
        token,
        &Settlement {
            released: vec![id],
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    sentinel("after the release").await;
    assert_eq!(next(&mut listener).await, "after the release");

    // Moving a pending job is news: it may now be due sooner.
    let moved = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO jobs (id, task, due_at) VALUES ($1, 'a.b', now() + interval '1 day')")
        .bind(moved)
        .execute(s.pool())
        .await
        .unwrap();
    sentinel("after a job due tomorrow").await;
    assert_eq!(next(&mut listener).await, "after a job due tomorrow");
    sqlx::query("UPDATE jobs SET due_at = now() WHERE id = $1")
        .bind(moved)
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(
        next(&mut listener).await,
        "sqsbeat",
        "moving a job notifies"
    );
}

/// Regression: every committed pending job NOTIFYed every replica, which
/// then ran a full pass, even for a job due in 14 days: an application
/// scheduling steadily kept every releaser busy. Only a job that may open
/// its window before a releaser looks again by itself (due within 16
/// minutes) notifies now; notifications arrive in commit order, so a
/// sentinel sent after the far ones must come first.
#[tokio::test]
async fn a_job_far_from_its_release_window_wakes_no_releaser() {
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("sqsbeat_jobs").await.unwrap();
    let run = |sql: &'static str| {
        let pool = s.pool().clone();
        async move {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
    };
    async fn next(l: &mut sqlx::postgres::PgListener) -> String {
        tokio::time::timeout(Duration::from_secs(10), l.recv())
            .await
            .expect("a notification")
            .unwrap()
            .payload()
            .to_string()
    }
    run("INSERT INTO jobs (id, task, due_at) VALUES ('00000000-0000-4000-8000-000000000001', 'a.b', now() + interval '14 days')").await;
    run("SELECT schedule_job('a.b', now() + interval '20 minutes')").await;
    run("UPDATE jobs SET due_at = now() + interval '15 days' WHERE id = '00000000-0000-4000-8000-000000000001'").await;
    run("SELECT pg_notify('sqsbeat_jobs', 'after the far ones')").await;
    assert_eq!(next(&mut listener).await, "after the far ones");
    // Inside the window, inserted or moved there: a wake-up.
    run("SELECT schedule_job('a.b', now() + interval '5 minutes')").await;
    assert_eq!(next(&mut listener).await, "sqsbeat", "a job due soon");
    run("UPDATE jobs SET due_at = now() + interval '1 minute' WHERE id = '00000000-0000-4000-8000-000000000001'").await;
    assert_eq!(
        next(&mut listener).await,
        "sqsbeat",
        "a job moved into the window"
    );
}

/// The README's `schedule_job()` example, run as an application runs it:
/// a plain connection with the default search_path, beside an application
/// table named `jobs`, for the default schema and another one.
/// Regression: the function resolved `jobs` through the caller's
/// search_path (`relation "jobs" does not exist`, or the app's table).
#[tokio::test]
async fn schedule_job_works_from_a_plain_connection_beside_an_application_jobs_table() {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let readme = include_str!("../../README.md");
    let django = readme
        .lines()
        .find(|l| l.contains("SELECT sqsbeat.schedule_job("))
        .expect("the README's Django example")
        .trim()
        .trim_end_matches(',')
        .trim_matches('"')
        .replacen("%s", "$1", 1)
        .replacen("%s", "$2", 1);
    let insert: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("INSERT INTO sqsbeat.jobs"))
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        insert.contains("VALUES"),
        "the README's plain INSERT: {insert}"
    );
    let db = TestDb::new().await;
    for schema in ["sqsbeat", "beat_app"] {
        let s = Store::connect(&db.url, schema).await.unwrap();
        // Like Django: no options, search_path "$user", public.
        let mut app = sqlx::postgres::PgConnectOptions::from_str(&db.url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let path: String = sqlx::query_scalar("SHOW search_path")
            .fetch_one(&mut app)
            .await
            .unwrap();
        assert_eq!(path, "\"$user\", public");
        let sql = django.replace("sqsbeat.", &format!("{schema}."));
        let id: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind("app.tasks.send_report")
            .bind(r#"{"account": 42}"#)
            .fetch_one(&mut app)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            insert.replace("sqsbeat.", &format!("{schema}.")),
        ))
        .execute(&mut app)
        .await
        .unwrap();
        let ours: Vec<(uuid::Uuid, serde_json::Value)> =
            sqlx::query_as("SELECT id, kwargs FROM jobs ORDER BY created_at")
                .fetch_all(s.pool())
                .await
                .unwrap();
        assert_eq!(ours.len(), 2, "{schema}: {ours:?}");
        assert_eq!(ours[0], (id, serde_json::json!({"account": 42})));
        let app_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.jobs")
            .fetch_one(&mut app)
            .await
            .unwrap();
        assert_eq!(app_rows, 0, "the application's own jobs table is untouched");
        sqlx::query("DELETE FROM jobs")
            .execute(s.pool())
            .await
            .unwrap();
    }
}

/// Regression: `'infinity'`, `'-infinity'` and years beyond chrono's range
/// are valid `timestamptz` values that sqlx's decoder panicked on (the
/// releaser died on every replica, `run` crash-looped, `pending` panicked).
/// In every table sqsbeat reads they are now errors naming table, column
/// and row; a bad job is failed by the claim, a bad entry set aside.
#[tokio::test]
async fn out_of_range_instants_in_every_table_are_errors_not_panics() {
    use sqsbeat::store::jobs::{self, ClaimRequest, Filter, JobStatus};
    use sqsbeat::store::{entries, leader, replicas};
    let db = TestDb::new().await;
    let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let store = AnyStore::Postgres(s.clone());
    sqlx::raw_sql(
        "INSERT INTO entries (name, task, every) VALUES ('good', 'a.t', '1m');
         INSERT INTO entries (name, task, every, end_at) VALUES ('no_end', 'a.t', '1m', 'infinity');
         INSERT INTO entries (name, task, every, start_at) VALUES ('far', 'a.t', '1m', '270000-01-01');
         INSERT INTO jobs (id, task, due_at) VALUES ('00000000-0000-4000-8000-000000000001', 'a.t', '-infinity');
         INSERT INTO jobs (id, task, due_at) VALUES ('00000000-0000-4000-8000-000000000002', 'a.t', 'infinity');
         INSERT INTO jobs (id, task, due_at, created_at) VALUES ('00000000-0000-4000-8000-000000000003', 'a.t', now(), '270000-01-01');
         INSERT INTO jobs (id, task, due_at, retry_at) VALUES ('00000000-0000-4000-8000-000000000004', 'a.t', now(), 'infinity');
         INSERT INTO jobs (id, task, due_at) VALUES ('00000000-0000-4000-8000-000000000005', 'a.t', now());
         INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome) VALUES ('e', 'infinity', gen_random_uuid(), 'q', 1, 'claimed');
         INSERT INTO entry_state (entry, cursor, enabled) VALUES ('e', '-infinity', true);
         INSERT INTO replicas (holder, role, version, started_at, seen_at) VALUES ('h', 'standby', '0', now(), 'infinity');
         INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, 1, 'h', 'infinity', '-infinity');",
    )
    .execute(s.pool())
    .await
    .unwrap();
    let id =
        |n: u8| uuid::Uuid::parse_str(&format!("00000000-0000-4000-8000-00000000000{n}")).unwrap();
    fn decode<T>(r: Result<T, StoreError>) -> String {
        match r {
            Err(StoreError::Decode {
                table, column, row, ..
            }) => format!("{table}.{column} {row}"),
            Err(e) => panic!("not a decode error: {e}"),
            Ok(_) => "ok".to_string(),
        }
    }

    // Entries: each bad row an error naming it; the good one loads.
    let rows = entries::list(&store).await.unwrap();
    let seen: Vec<String> = rows
        .iter()
        .map(|r| match r {
            Ok(r) => format!("ok {}", r.name),
            Err(StoreError::Decode {
                table, column, row, ..
            }) => format!("{table}.{column} {row}"),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        seen,
        ["entries.start_at far", "ok good", "entries.end_at no_end"]
    );
    let ctx = sqsbeat::entry::Context::default();
    let (loaded, set_aside) =
        sqsbeat::entry::merge::set_aside_invalid(sqsbeat::entry::merge::validate(&rows, &ctx), &[]);
    let names: Vec<&str> = loaded.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    let named: Vec<&str> = set_aside
        .iter()
        .filter_map(|d| d.entry.as_deref())
        .collect();
    assert_eq!(named, ["far", "no_end"]);

    // Jobs: the claim fails the unreadable rows it would release and
    // releases the good one; the others stay, and read as errors.
    let now = Utc::now();
    let claimed = jobs::claim(
        &store,
        &ClaimRequest {
            now,
            window: chrono::Duration::minutes(15),
            limit: 500,
            lease_for: chrono::Duration::minutes(2),
            only: None,
            token: uuid::Uuid::new_v4(),
        },
    )
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = claimed.rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [id(5)]);
    let mut failed: Vec<&str> = claimed.failed.iter().map(|f| f.0.as_str()).collect();
    failed.sort();
    // Due at infinity, or retried at infinity: no release can reach them,
    // so they are failed too rather than left pending forever.
    assert_eq!(
        failed,
        [
            id(1).to_string(),
            id(2).to_string(),
            id(3).to_string(),
            id(4).to_string()
        ]
    );
    for (_, why) in &claimed.failed {
        assert!(why.starts_with("cannot read column"), "{why}");
    }
    assert_eq!(
        decode(jobs::get(&store, id(2)).await),
        format!("jobs.due_at {}", id(2))
    );
    assert_eq!(
        decode(jobs::get(&store, id(4)).await),
        format!("jobs.retry_at {}", id(4))
    );
    let all = jobs::list(
        &store,
        &Filter {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(
        all.iter().filter(|r| r.is_err()).count(),
        4,
        "the jobs with an unreadable instant"
    );
    assert!(
        jobs::next_wake(&store, chrono::Duration::minutes(15))
            .await
            .is_ok()
    );
    for n in 1..=4 {
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id(n))
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(status, JobStatus::Failed.as_str(), "job {n}");
    }
    assert!(jobs::failing(&store, 10).await.is_ok());

    // The ledger and cursors: each row that cannot be read comes apart,
    // named, with its key (the beat sets it aside and goes on); replicas:
    // an error naming the row.
    let (pending, bad) = ledger::unconfirmed(&store).await.unwrap();
    assert!(pending.is_empty());
    let bad: Vec<(String, String, String)> = bad
        .into_iter()
        .map(|b| (b.entry, b.slot, decode::<()>(Err(b.error))))
        .collect();
    assert_eq!(
        bad,
        [(
            "e".to_string(),
            "infinity".to_string(),
            "ledger.slot e infinity".to_string()
        )]
    );
    let (cursors, bad) = ledger::load_cursors(&store).await.unwrap();
    assert!(cursors.is_empty());
    let bad: Vec<(String, String)> = bad
        .into_iter()
        .map(|b| (b.entry, decode::<()>(Err(b.error))))
        .collect();
    assert_eq!(bad, [("e".to_string(), "entry_state.cursor e".to_string())]);
    assert_eq!(
        decode(replicas::replicas(&store).await),
        "replicas.seen_at h"
    );
    // The leader row is only written (and read back as the database's now()).
    let (mut session, _) = leader::Session::open(&s).await.unwrap();
    assert!(session.try_lock(s.lock_key()).await.unwrap());
    let (epoch, _) = session.take("me").await.unwrap();
    assert!(session.heartbeat(epoch).await.unwrap().is_some());
    session.close().await;
}

/// The CLI on rows it cannot read: a line naming table, column and row,
/// never a panic; the readable rows still list.
#[test]
fn cli_names_unreadable_rows_instead_of_panicking() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rt.block_on(async {
        let s = Store::connect(&db.url, "sqsbeat").await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO jobs (id, task, due_at) VALUES ('00000000-0000-4000-8000-000000000001', 'a.t', 'infinity');
             INSERT INTO jobs (id, task, due_at) VALUES ('00000000-0000-4000-8000-000000000002', 'a.good', now() + interval '1 day');
             INSERT INTO entries (name, task, every, end_at) VALUES ('no_end', 'a.t', '1m', 'infinity');
             INSERT INTO entries (name, task, every) VALUES ('fine', 'a.t', '1m');",
        )
        .execute(s.pool())
        .await
        .unwrap();
    });
    std::fs::create_dir(d.join("schedules")).unwrap();
    std::fs::write(
        d.join("schedules/s.toml"),
        "[entries.a]\ntask = \"a.t\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let bad = "00000000-0000-4000-8000-000000000001";
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["pending", "--status", "all"],
            1,
            "cannot read table jobs, column due_at, row 00000000-0000-4000-8000-000000000001",
        ),
        (
            &["show", bad],
            1,
            "cannot read table jobs, column due_at, row 00000000-0000-4000-8000-000000000001",
        ),
        (
            &["entries", "list"],
            1,
            "cannot read table entries, column end_at, row no_end",
        ),
        (&["status"], 0, "entry 'no_end': cannot read column end_at"),
    ];
    for (args, want, says) in cases {
        let (code, out, err) = crate::stack::cli(d, Some(&db.url), None, args);
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert_eq!(code, want, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?} does not say {says:?}: {err}");
    }
    let (_, out, _) = crate::stack::cli(d, Some(&db.url), None, &["pending", "--status", "all"]);
    assert!(
        out.contains("a.good"),
        "the readable job still lists: {out}"
    );
    let (_, out, _) = crate::stack::cli(d, Some(&db.url), None, &["entries", "list"]);
    assert!(
        out.contains("fine"),
        "the readable entry still lists: {out}"
    );
}

/// Only `run` and `migrate` (and commands that write) create the schema:
/// read-only commands run no DDL (no CREATE privilege needed, and a
/// database they were pointed at by mistake stays untouched) and say to
/// run `sqsbeat migrate`.
#[test]
fn read_only_commands_run_no_ddl_and_say_to_migrate() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("schedules")).unwrap();
    std::fs::write(
        d.join("schedules/s.toml"),
        "[entries.a]\ntask = \"a.t\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let id = "00000000-0000-4000-8000-000000000001";
    for args in [
        &["status"][..],
        &["pending"],
        &["show", id],
        &["entries", "list"],
    ] {
        let (code, _, err) = crate::stack::cli(d, Some(&db.url), None, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("run `sqsbeat migrate`"), "{args:?}: {err}");
    }
    for args in [&["check"][..], &["next"]] {
        let (code, _, err) = crate::stack::cli(d, Some(&db.url), None, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let schemas = || {
        rt.block_on(async {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
            sqlx::query_scalar::<_, String>("SELECT schema_name::text FROM information_schema.schemata WHERE schema_name = 'sqsbeat'")
                .fetch_all(&mut c)
                .await
                .unwrap()
        })
    };
    assert!(
        schemas().is_empty(),
        "a read-only command created the schema"
    );
    // A command that writes works on a fresh database.
    let (code, _, err) =
        crate::stack::cli(d, Some(&db.url), None, &["schedule", "a.t", "--in", "14d"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(schemas(), ["sqsbeat"]);
    let (code, out, err) = crate::stack::cli(d, Some(&db.url), None, &["pending"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a.t"), "{out}");

    // SQLite: no file is created by a read.
    let lite = tempfile::tempdir().unwrap();
    std::fs::create_dir(lite.path().join("schedules")).unwrap();
    std::fs::write(
        lite.path().join("schedules/s.toml"),
        "[entries.a]\ntask = \"a.t\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let (code, _, err) = crate::stack::cli(lite.path(), None, None, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("run `sqsbeat migrate`"), "{err}");
    assert!(!lite.path().join("sqsbeat.db").exists());
}

/// Regression: `synchronous = NORMAL` covered the CLI too, so a power cut
/// could lose a job `schedule` had printed, or undo a `cancel`.
#[tokio::test]
async fn sqlite_commits_of_one_shot_commands_are_synchronous_full() {
    use sqsbeat::store::Access;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let config = sqsbeat::config::parse(
        "sqsbeat.toml",
        Some(&format!(
            "[database]\npath = {:?}\n",
            path.display().to_string()
        )),
        &|_| None,
    )
    .unwrap();
    for (access, want) in [(Access::Write, 2), (Access::Read, 2), (Access::Daemon, 1)] {
        let store = sqsbeat::cmd::open_store(&config, access).await.unwrap();
        let AnyStore::Sqlite(lite) = store else {
            panic!("expected SQLite")
        };
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(lite.pool())
            .await
            .unwrap();
        assert_eq!(level, want, "{access:?}");
    }
}

/// Whether `listener` has heard of a change, without waiting for one.
async fn heard(listener: &mut sqsbeat::store::listen::Listener) -> bool {
    tokio::time::timeout(Duration::ZERO, listener.changed())
        .await
        .is_ok()
}

/// SQLite's change watching, which the daemon's watchers (releaser,
/// pauses, entries table) wait on instead of each polling the file every
/// second: this process's writes to a channel's table are heard at once,
/// another process's commits at the next look, and nothing else.
#[tokio::test]
async fn sqlite_listeners_hear_own_writes_at_once_and_other_processes_at_the_next_look() {
    use sqsbeat::store::listen::{Channel, Listener, look};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mine = AnyStore::Sqlite(sqsbeat::store::SqliteStore::open(&path).await.unwrap());
    let other = AnyStore::Sqlite(sqsbeat::store::SqliteStore::open(&path).await.unwrap());
    let mut jobs = Listener::new(&mine, Channel::Jobs);
    let mut pauses = Listener::new(&mine, Channel::Pauses);
    // The first look knows nothing yet: everyone looks once.
    look(&mine).await.unwrap();
    assert!(heard(&mut jobs).await && heard(&mut pauses).await);
    look(&mine).await.unwrap();
    assert!(!heard(&mut jobs).await, "nothing committed since");
    // This process's own write: heard by its channel only, with no look.
    let spec = sqsbeat::jobs::JobSpec {
        id: uuid::Uuid::from_u128(1),
        task: "app.tasks.report".into(),
        args: vec![],
        kwargs: Default::default(),
        queue: "celery".into(),
        due_at: at("2026-12-05T09:00:00Z"),
        expires_at: None,
        priority: 0,
        headers: Default::default(),
    };
    sqsbeat::store::jobs::insert(&mine, &spec, "t")
        .await
        .unwrap();
    assert!(heard(&mut jobs).await, "own write to jobs");
    assert!(!heard(&mut pauses).await, "not a pause");
    look(&mine).await.unwrap();
    assert!(!heard(&mut jobs).await, "an own commit is not another's");
    // Ledger writes, the beat's every fire, wake no one.
    let AnyStore::Sqlite(lite) = &mine else {
        unreachable!()
    };
    let (_lock, epoch) = lite.lock_for_run("t").await.unwrap();
    let c = claim("a", "2026-12-05T09:00:00Z");
    let ours = ledger::record_decision(&mine, epoch, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(ours.len(), 1);
    assert!(!heard(&mut jobs).await && !heard(&mut pauses).await);
    // Another process's commit: unheard until the next look, then heard
    // by every channel (which table changed is not known).
    let spec2 = sqsbeat::jobs::JobSpec {
        id: uuid::Uuid::from_u128(2),
        ..spec
    };
    sqsbeat::store::jobs::insert(&other, &spec2, "t")
        .await
        .unwrap();
    assert!(!heard(&mut jobs).await);
    look(&mine).await.unwrap();
    assert!(heard(&mut jobs).await && heard(&mut pauses).await);
    look(&mine).await.unwrap();
    assert!(!heard(&mut jobs).await && !heard(&mut pauses).await);
    // A decision of the beat looks too, along with its write: while it
    // fires, no look of its own is needed.
    let before = sqsbeat::store::listen::next_look(&mine).unwrap();
    let spec3 = sqsbeat::jobs::JobSpec {
        id: uuid::Uuid::from_u128(3),
        ..spec2
    };
    sqsbeat::store::jobs::insert(&other, &spec3, "t")
        .await
        .unwrap();
    let c = claim("a", "2026-12-05T09:01:00Z");
    ledger::record_decision(&mine, epoch, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert!(heard(&mut jobs).await && heard(&mut pauses).await);
    assert!(sqsbeat::store::listen::next_look(&mine).unwrap() >= before);
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
fn plan_nodes(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| plan_nodes(x, out)),
        serde_json::Value::Object(o) => {
            if let Some(p) = o.get("Plan") {
                plan_nodes(p, out);
            }
            if o.contains_key("Node Type") {
                out.push(v.clone());
            }
            if let Some(ps) = o.get("Plans") {
                plan_nodes(ps, out);
            }
        }
        _ => {}
    }
}

/// Statistics lag a bulk insert: on a jobs table never analyzed, the
/// planner bitmap-scanned and sorted every due row for each claim (0.9 s
/// per claim of 500 with a million due, under 900 jobs/s released).
#[tokio::test]
async fn a_claim_walks_the_pending_index_in_order_before_a_bulk_insert_is_analyzed() {
    use sqsbeat::store::jobs::{self, ClaimRequest};
    let db = TestDb::new().await;
    let store = Store::connect(&db.url, "sqsbeat").await.unwrap();
    let now = at("2026-12-05T09:00:00Z");
    sqlx::query(
        "INSERT INTO jobs (id, task, queue, due_at)
         SELECT gen_random_uuid(), 'app.bulk', 'celery', $1::timestamptz - g * interval '1 ms'
           FROM generate_series(1, 5000) g",
    )
    .bind(now)
    .execute(store.pool())
    .await
    .unwrap();
    let plan = jobs::explain_claim(
        &store,
        &ClaimRequest {
            now,
            window: chrono::Duration::minutes(15),
            limit: 500,
            lease_for: chrono::Duration::seconds(30),
            only: None,
            token: uuid::Uuid::from_bytes([7; 16]),
        },
    )
    .await
    .unwrap();
    let mut nodes = Vec::new();
    plan_nodes(&plan, &mut nodes);
    let kind = |n: &serde_json::Value| n["Node Type"].as_str().unwrap_or("").to_string();
    let scans_of_jobs: Vec<String> = nodes
        .iter()
        .filter(|n| n["Relation Name"] == "jobs")
        .map(|n| format!("{} {}", kind(n), n["Index Name"].as_str().unwrap_or("")))
        .collect();
    assert!(
        scans_of_jobs.contains(&"Index Scan jobs_pending_delayed".to_string()),
        "the claim reads the pending index in due order: {scans_of_jobs:?}"
    );
    assert!(
        !scans_of_jobs
            .iter()
            .any(|s| s.starts_with("Bitmap") || s.starts_with("Seq Scan")),
        "no claim reads every due row: {scans_of_jobs:?}"
    );
}
