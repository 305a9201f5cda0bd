//! The ledger and leadership against a real PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqsbeat::runtime::leader::{self, Role};
use sqsbeat::store::postgres as store;
use sqsbeat::store::{Claim, Cursor, Miss, PgStore as Store, StoreError};
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
    let c = claim("a", "2026-11-21T10:00:00Z");
    assert!(matches!(
        store::record_decision(pool, 1, std::slice::from_ref(&c), &[], &[]).await,
        Err(StoreError::Fenced {
            mine: 1,
            current: None
        })
    ));
    set_epoch(&s, 7).await;
    let ours = store::record_decision(pool, 7, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(ours, [("a".to_string(), c.slot)]);
    // A newer leader exists: the old epoch can claim nothing.
    set_epoch(&s, 8).await;
    let d = claim("a", "2026-11-21T10:01:00Z");
    assert!(matches!(
        store::record_decision(pool, 7, &[d], &[], &[]).await,
        Err(StoreError::Fenced {
            mine: 7,
            current: Some(8)
        })
    ));
    // Unconfirmed: the new leader takes it over (same row, same task id).
    assert_eq!(store::unconfirmed(pool).await.unwrap().len(), 1);
    let again = store::record_decision(pool, 8, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let task_id: uuid::Uuid = sqlx::query_scalar("SELECT task_id FROM ledger")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(task_id, c.task_id, "a takeover keeps the original task id");
    // Once sent, never claimed again.
    store::confirm_sent(pool, &[("a".into(), c.slot)])
        .await
        .unwrap();
    assert!(
        store::record_decision(pool, 8, std::slice::from_ref(&c), &[], &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store::unconfirmed(pool).await.unwrap().is_empty());
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
    let cur = |t: &str| Cursor {
        entry: "a".into(),
        cursor: at(t),
        enabled: true,
    };
    store::record_cursors(s.pool(), 1, &[cur("2026-11-21T10:05:00Z")])
        .await
        .unwrap();
    store::record_cursors(s.pool(), 1, &[cur("2026-11-21T10:01:00Z")])
        .await
        .unwrap();
    assert_eq!(
        store::load_cursors(s.pool()).await.unwrap()["a"],
        (at("2026-11-21T10:05:00Z"), true)
    );
    let miss = Miss {
        entry: "a".into(),
        slot: at("2026-11-21T10:06:00Z"),
        reason: "late".into(),
    };
    store::record_decision(s.pool(), 1, &[], &[miss], &[])
        .await
        .unwrap();
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM ledger")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(outcome, "missed");
    assert_eq!(
        store::prune(s.pool(), at("2026-11-22T00:00:00Z"))
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
        stop_a.clone(),
    ));
    let first = wait_role(&mut rx_a, true, Duration::from_secs(5)).await;
    let b = tokio::spawn(leader::campaign(
        s.clone(),
        "b".into(),
        tx_b,
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
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()")
        .execute(s.pool())
        .await
        .unwrap();
    wait_role(&mut rx_b, false, Duration::from_secs(3)).await;
    let third = wait_role(&mut rx_b, true, Duration::from_secs(5)).await;
    assert!(third.epoch() > second.epoch());
    stop_b.cancel();
    b.await.unwrap();
}
