//! The store contract, run against both backends: PostgreSQL and SQLite
//! must give the same answers.

use chrono::{DateTime, Utc};
use sqsbeat::store::{Claim, Cursor, Miss, PgStore, SqliteStore, Store, StoreError};

use crate::pg::TestDb;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn claim(entry: &str, slot: &str) -> Claim {
    Claim {
        entry: entry.into(),
        slot: at(slot),
        task_id: uuid::Uuid::new_v4(),
        queue: "q".into(),
    }
}

/// `new_epoch()` makes a newer leader and returns its epoch.
async fn contract<F, Fut>(store: Store, mut new_epoch: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let e1 = new_epoch().await;
    let c = claim("a", "2026-11-21T10:00:00.250Z");
    let ours = store
        .record_decision(e1, std::slice::from_ref(&c), &[], &[])
        .await
        .unwrap();
    assert_eq!(ours, [("a".to_string(), c.slot)]);

    let e2 = new_epoch().await;
    assert!(e2 > e1);
    let d = claim("a", "2026-11-21T10:01:00Z");
    assert!(
        matches!(
            store.record_decision(e1, &[d], &[], &[]).await,
            Err(StoreError::Fenced { .. })
        ),
        "an old epoch claims nothing"
    );

    let pending = store.unconfirmed().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].0.as_str(), pending[0].1),
        ("a", c.slot),
        "instants round-trip exactly"
    );
    assert_eq!(
        store
            .record_decision(e2, std::slice::from_ref(&c), &[], &[])
            .await
            .unwrap()
            .len(),
        1,
        "the new leader takes an unconfirmed claim over"
    );
    store.record_failure("a", c.slot, "boom").await.unwrap();
    store.confirm_sent(&[("a".into(), c.slot)]).await.unwrap();
    assert!(
        store
            .record_decision(e2, std::slice::from_ref(&c), &[], &[])
            .await
            .unwrap()
            .is_empty(),
        "a sent fire is never claimed again"
    );
    assert!(store.unconfirmed().await.unwrap().is_empty());

    let cur = |t: &str, enabled: bool| Cursor {
        entry: "a".into(),
        cursor: at(t),
        enabled,
    };
    store
        .record_cursors(e2, &[cur("2026-11-21T10:05:00Z", true)])
        .await
        .unwrap();
    store
        .record_cursors(e2, &[cur("2026-11-21T10:01:00Z", false)])
        .await
        .unwrap();
    assert_eq!(
        store.load_cursors().await.unwrap()["a"],
        (at("2026-11-21T10:05:00Z"), false),
        "cursors never move back"
    );

    let miss = Miss {
        entry: "b".into(),
        slot: at("2026-11-20T10:00:00Z"),
        reason: "late".into(),
    };
    store.record_decision(e2, &[], &[miss], &[]).await.unwrap();
    assert_eq!(
        store.prune(at("2026-11-21T00:00:00Z")).await.unwrap(),
        1,
        "only settled rows older than the cut-off"
    );
    assert_eq!(store.prune(at("2026-11-22T00:00:00Z")).await.unwrap(), 1);
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let db = TestDb::new().await;
    let pg = PgStore::connect(&db.url, "sqsbeat").await.unwrap();
    let pool = pg.pool().clone();
    contract(Store::Postgres(pg), || {
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
    contract(Store::Sqlite(lite), move || {
        let (lite, locks) = (l2.clone(), locks.clone());
        async move {
            // Each new leader: the previous holder lets go, a new one locks.
            locks.lock().unwrap().clear();
            let (lock, epoch) = lite.lock_for_run("t").await.unwrap();
            locks.lock().unwrap().push(lock);
            epoch
        }
    })
    .await;
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
