//! The beat driver in-process: a real store, a `MemorySink`, a manual
//! clock. Each test drives a term of leadership turn by turn at instants
//! it chooses, and judges by the ledger and the sink's record.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use sqsbeat::wire::celery::fire_task_id;
use sqsbeat::wire::sink::{Gate, Plan, SendError};

use crate::harness::{Harness, at, entries};

fn ids(entry: &str, slots: impl IntoIterator<Item = DateTime<Utc>>) -> Vec<uuid::Uuid> {
    slots.into_iter().map(|s| fire_task_id(entry, s)).collect()
}

fn seconds(from: DateTime<Utc>, n: i64) -> Vec<DateTime<Utc>> {
    (0..n).map(|i| from + Duration::seconds(i)).collect()
}

const EVERY_MINUTE: &str = "[entries.a]\ntask = \"t.a\"\nevery = \"1m\"\n";
const EVERY_SECOND: &str = "[entries.s]\ntask = \"t.s\"\nevery = \"1s\"\n";

/// Turns at every `step` from `from` for `n` steps, setting the clock.
async fn turns<S: sqsbeat::wire::sink::Sink>(
    h: &Harness,
    term: &mut sqsbeat::beat::driver::Term<'_, S>,
    from: DateTime<Utc>,
    step: Duration,
    n: i64,
) {
    for i in 0..n {
        let t = from + step * i as i32;
        h.clock.set(t);
        term.turn(t).await.unwrap();
        term.drain().await;
    }
}

#[tokio::test]
async fn a_failed_send_is_retried_with_the_same_task_id() {
    let h = Harness::sqlite(at("2026-11-21T10:00:30Z")).await;
    h.sink.then(Plan::fail_all(SendError::Rejected {
        code: "InternalError".into(),
        message: "try again".into(),
        sender_fault: false,
    }));
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_MINUTE)), epoch)
        .await
        .unwrap();
    let slot = at("2026-11-21T10:01:00Z");
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    term.drain().await;
    assert!(h.sink.accepted().is_empty());
    assert_eq!(
        h.ledger().await[0].2,
        "claimed",
        "not sent yet, still owned"
    );
    let retry = term.wake_at().unwrap();
    assert!(
        retry > slot && retry <= slot + Duration::seconds(2),
        "backoff: {retry}"
    );
    term.turn(h.at("2026-11-21T10:01:02Z")).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.calls(), 2, "one failed call, one retry");
    assert_eq!(h.accepted_ids(), ids("a", [slot]));
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].1, ledger[0].2.as_str()), (slot, "sent"));
}

async fn fenced_write_stops_firing(h: Harness) {
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_SECOND)), epoch)
        .await
        .unwrap();
    turns(
        &h,
        &mut term,
        at("2026-11-21T10:00:01Z"),
        Duration::seconds(1),
        5,
    )
    .await;
    // Another replica took leadership behind this one's back (its lock
    // session froze, say): the next claim under the old epoch is fenced.
    h.new_epoch().await;
    let t = h.at("2026-11-21T10:00:06Z");
    assert!(term.turn(t).await.is_err(), "fenced");
    term.drain().await;
    assert_eq!(
        h.accepted_ids(),
        ids("s", seconds(at("2026-11-21T10:00:01Z"), 5)),
        "the five fires before the fence, none after"
    );
    assert!(
        h.ledger().await.iter().all(|(_, slot, _, _)| *slot < t),
        "nothing recorded under the old epoch after the fence"
    );
}

#[tokio::test]
async fn a_fenced_write_stops_firing_sqlite() {
    fenced_write_stops_firing(Harness::sqlite(at("2026-11-21T10:00:00.500Z")).await).await;
}

#[tokio::test]
async fn a_fenced_write_stops_firing_postgres() {
    fenced_write_stops_firing(Harness::postgres(at("2026-11-21T10:00:00.500Z")).await).await;
}

#[tokio::test]
async fn an_entry_set_change_rebuilds_from_the_ledger_without_refire_or_gap() {
    let h = Harness::sqlite(at("2026-11-21T10:00:00.500Z")).await;
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let a = "[entries.a]\ntask = \"t.a\"\nevery = \"1s\"\n";
    let mut term = driver.begin(Arc::new(entries(a)), epoch).await.unwrap();
    turns(
        &h,
        &mut term,
        at("2026-11-21T10:00:01Z"),
        Duration::seconds(1),
        4,
    )
    .await;
    // A reload: the term ends, a new one starts from the ledger with the
    // new set, half a second later.
    drop(term);
    h.at("2026-11-21T10:00:04.500Z");
    let b = format!("{a}[entries.b]\ntask = \"t.b\"\nevery = \"1s\"\n");
    let mut term = driver.begin(Arc::new(entries(&b)), epoch).await.unwrap();
    turns(
        &h,
        &mut term,
        at("2026-11-21T10:00:05Z"),
        Duration::seconds(1),
        5,
    )
    .await;
    let want = ids("a", seconds(at("2026-11-21T10:00:01Z"), 9));
    let got: Vec<_> = h
        .accepted_ids()
        .into_iter()
        .filter(|id| want.contains(id))
        .collect();
    assert_eq!(got, want, "each slot of `a` once, in order");
    let ledger = h.ledger().await;
    assert!(ledger.iter().all(|(_, _, o, _)| o == "sent"), "{ledger:?}");
    let b_slots: Vec<_> = ledger.iter().filter(|r| r.0 == "b").map(|r| r.1).collect();
    assert_eq!(
        b_slots,
        seconds(at("2026-11-21T10:00:05Z"), 5),
        "the new entry starts now"
    );
}

#[tokio::test]
async fn shutdown_drains_and_confirms_sends_in_flight() {
    let h = Harness::sqlite(at("2026-11-21T10:00:59Z")).await;
    let gate = Gate::new();
    h.sink.then(Plan::gated(&gate));
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_MINUTE)), epoch)
        .await
        .unwrap();
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    let draining = async {
        term.drain().await;
    };
    let opener = async {
        // The drain must still be waiting: the send has not answered.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(h.sink.accepted().is_empty());
        assert_eq!(h.ledger().await[0].2, "claimed");
        gate.open();
    };
    tokio::join!(draining, opener);
    assert_eq!(h.accepted_ids(), ids("a", [at("2026-11-21T10:01:00Z")]));
    assert_eq!(
        h.ledger().await[0].2,
        "sent",
        "confirmed before the drain returned"
    );
}

/// The state a leader leaves when it dies between claim and confirm: its
/// claim in the ledger, never confirmed.
async fn dead_leader_claim(h: &Harness, entry: &str, slot: DateTime<Utc>) {
    let epoch = h.new_epoch().await;
    let claim = sqsbeat::store::Claim {
        entry: entry.into(),
        slot,
        task_id: fire_task_id(entry, slot),
        queue: "celery".into(),
    };
    let cursor = sqsbeat::store::Cursor {
        entry: entry.into(),
        cursor: slot,
        enabled: true,
    };
    sqsbeat::store::ledger::record_decision(&h.store, epoch, &[claim], &[], &[cursor])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_fire_claimed_but_never_confirmed_is_resent_with_its_task_id() {
    let h = Harness::sqlite(at("2026-11-21T10:00:20Z")).await;
    let slot = at("2026-11-21T10:00:00Z");
    dead_leader_claim(&h, "once", slot).await;
    let once = "[entries.once]\ntask = \"r.once\"\nevery = \"1h\"\ncatch_up = \"none\"\n";
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries(once)), epoch).await.unwrap();
    term.turn(h.at("2026-11-21T10:00:20Z")).await.unwrap();
    term.drain().await;
    assert_eq!(
        h.accepted_ids(),
        ids("once", [slot]),
        "the same task id as the claim"
    );
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].1, ledger[0].2.as_str()), (slot, "sent"));
}

#[tokio::test]
async fn an_unconfirmed_claim_days_old_follows_catch_up_instead_of_being_resent() {
    // Regression: a claim whose confirm failed while the leader stayed
    // healthy was re-sent at the next resume however old it was.
    let h = Harness::sqlite(at("2026-11-23T10:00:00.500Z")).await;
    let slot = at("2026-11-21T10:00:00Z");
    dead_leader_claim(&h, "once", slot).await;
    let once = "[entries.once]\ntask = \"r.once\"\nevery = \"1h\"\ncatch_up = \"none\"\n";
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries(once)), epoch).await.unwrap();
    term.turn(h.at("2026-11-23T10:00:00.500Z")).await.unwrap();
    term.drain().await;
    assert!(
        !h.accepted_ids().contains(&fire_task_id("once", slot)),
        "a two-day-old fire is not sent under catch_up = none"
    );
    let row = h.ledger().await.into_iter().find(|r| r.1 == slot).unwrap();
    assert_eq!(row.2, "missed", "{row:?}");
}

#[tokio::test]
async fn an_unconfirmed_claim_of_a_removed_entry_is_recorded_missed() {
    let h = Harness::sqlite(at("2026-11-21T10:00:20Z")).await;
    let slot = at("2026-11-21T10:00:00Z");
    dead_leader_claim(&h, "gone", slot).await;
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_MINUTE)), epoch)
        .await
        .unwrap();
    term.turn(h.at("2026-11-21T10:00:20Z")).await.unwrap();
    term.drain().await;
    assert!(h.sink.accepted().is_empty());
    let row = h
        .ledger()
        .await
        .into_iter()
        .find(|r| r.0 == "gone")
        .unwrap();
    assert_eq!(row.2, "missed", "not left claimed forever: {row:?}");
    assert!(row.3.contains("removed"), "{row:?}");
}

fn checked(skew: Duration) -> sqsbeat::clock::Trust {
    sqsbeat::clock::Trust::Checked {
        skew,
        at: tokio::time::Instant::now(),
    }
}

#[tokio::test]
async fn a_host_clock_a_year_ahead_decides_nothing_and_moves_no_cursor() {
    // Regression: one host's forward clock step became permanent for the
    // fleet, as cursors only move forward.
    let h = Harness::sqlite(at("2026-11-21T10:00:00.500Z")).await;
    h.trust.send_replace(checked(Duration::zero()));
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_SECOND)), epoch)
        .await
        .unwrap();
    turns(
        &h,
        &mut term,
        at("2026-11-21T10:00:01Z"),
        Duration::seconds(1),
        3,
    )
    .await;
    assert_eq!(h.sink.accepted().len(), 3);
    // The clock jumps a year: the step alone holds decisions until the next
    // check, which finds the clock off.
    let ahead = h.at("2027-11-21T10:00:04Z");
    term.turn(ahead).await.unwrap();
    h.trust.send_replace(checked(Duration::days(365)));
    term.turn(h.at("2027-11-21T10:00:05Z")).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), 3, "nothing decided on a bad clock");
    let latest = h.ledger().await.iter().map(|r| r.1).max().unwrap();
    assert!(
        latest < at("2026-11-21T10:00:04Z"),
        "no slot a year ahead: {latest}"
    );
    // Back, and checked: firing resumes at the true time, one slot after
    // the last decided (catch_up decides the gap, as after any pause).
    let back = h.at("2026-11-21T10:00:06Z");
    term.turn(back).await.unwrap();
    assert_eq!(
        h.sink.accepted().len(),
        3,
        "the step back holds too, until a check"
    );
    h.trust.send_replace(checked(Duration::milliseconds(3)));
    term.turn(back).await.unwrap();
    term.drain().await;
    let slots: Vec<_> = h.ledger().await.iter().map(|r| r.1).collect();
    assert_eq!(slots.last(), Some(&at("2026-11-21T10:00:06Z")));
    assert!(slots.iter().all(|s| *s <= at("2026-11-21T10:00:06Z")));
}

/// A burst is claimed and sent a part at a time, the first part small, so
/// its first messages leave after a small claim; a part's send held up
/// does not hold up the claims and sends of the parts after it.
#[tokio::test]
async fn a_burst_is_claimed_and_sent_in_parts_the_first_small() {
    let h = Harness::sqlite(at("2026-11-21T10:00:30Z")).await;
    let gate = Gate::new();
    h.sink.then(Plan::gated(&gate));
    let names: Vec<String> = (0..300).map(|i| format!("b{i:03}")).collect();
    let toml: String = names
        .iter()
        .map(|n| format!("[entries.{n}]\ntask = \"t.b\"\ncron = \"* * * * *\"\n"))
        .collect();
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries(&toml)), epoch).await.unwrap();
    let slot = at("2026-11-21T10:01:00Z");
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    // The first part's send is still held: every part was claimed anyway.
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), 300);
    assert!(ledger.iter().all(|r| r.1 == slot && r.2 != "missed"));
    gate.open();
    term.drain().await;
    let accepted = h.sink.accepted();
    let sizes: Vec<usize> = (0..h.sink.calls())
        .map(|c| accepted.iter().filter(|a| a.call == c).count())
        .collect();
    assert_eq!(sizes, [64, 128, 108]);
    let first: Vec<uuid::Uuid> = accepted
        .iter()
        .filter(|a| a.call == 0)
        .map(|a| a.message.task_id)
        .collect();
    let expected: Vec<uuid::Uuid> = names[..64].iter().map(|n| fire_task_id(n, slot)).collect();
    assert_eq!(first, expected, "earliest first, by schedule order");
    assert!(h.ledger().await.iter().all(|r| r.2 == "sent"));
}

/// Regression: one row of sqsbeat's own tables that cannot be read (a
/// cursor or a claim written by hand) made every term fail to begin: the
/// leader kept its role, retried each second and fired nothing. Each such
/// row is now set aside on its own: the cursor's entry starts as if it had
/// none, the claim is recorded missed with the reason, and every entry
/// fires.
async fn an_unreadable_cursor_or_claim_row_is_set_aside_and_every_entry_fires(
    h: Harness,
    bad: &str,
) {
    let old = h.new_epoch().await;
    let good = sqsbeat::store::Cursor {
        entry: "a".into(),
        cursor: at("2026-11-21T10:00:00Z"),
        enabled: true,
    };
    sqsbeat::store::ledger::record_cursors(&h.store, old, &[good])
        .await
        .unwrap();
    h.exec(
        &format!(
            "INSERT INTO entry_state (entry, cursor, enabled) VALUES ('b', '{bad}', true);
             INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome)
               VALUES ('c', '{bad}', '00000000-0000-4000-8000-000000000001', 'celery', 1, 'claimed');"
        ),
        &format!(
            "INSERT INTO entry_state (entry, cursor, enabled, updated_at) VALUES ('b', '{bad}', 1, '');
             INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, claimed_at)
               VALUES ('c', '{bad}', '00000000-0000-4000-8000-000000000001', 'celery', 1, 'claimed', '');"
        ),
    )
    .await;
    let set = format!(
        "{EVERY_MINUTE}[entries.b]\ntask = \"t.b\"\nevery = \"1m\"\n[entries.c]\ntask = \"t.c\"\nevery = \"1m\"\n"
    );
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(&set)), epoch)
        .await
        .expect("a term begins beside rows it cannot read");
    let slot = at("2026-11-21T10:01:00Z");
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    term.drain().await;
    let mut sent = h.accepted_ids();
    sent.sort();
    let mut want = [
        fire_task_id("a", slot),
        fire_task_id("b", slot),
        fire_task_id("c", slot),
    ];
    want.sort();
    assert_eq!(sent, want, "every entry fires its 10:01 slot once");
    let claim = h
        .texts("SELECT outcome, coalesce(reason, '') FROM ledger WHERE entry = 'c' AND outcome <> 'sent'")
        .await;
    assert_eq!(claim.len(), 1, "{claim:?}");
    assert_eq!(claim[0][0], "missed", "{claim:?}");
    assert!(
        claim[0][1].starts_with("set aside: cannot read table ledger, column slot, row c "),
        "{claim:?}"
    );
}

#[tokio::test]
async fn an_unreadable_cursor_or_claim_row_is_set_aside_and_every_entry_fires_sqlite() {
    let h = Harness::sqlite(at("2026-11-21T10:00:30Z")).await;
    an_unreadable_cursor_or_claim_row_is_set_aside_and_every_entry_fires(h, "yesterday").await;
}

#[tokio::test]
async fn an_unreadable_cursor_or_claim_row_is_set_aside_and_every_entry_fires_postgres() {
    let h = Harness::postgres(at("2026-11-21T10:00:30Z")).await;
    an_unreadable_cursor_or_claim_row_is_set_aside_and_every_entry_fires(h, "infinity").await;
}

/// SQLite: a trigger that refuses every confirm (`outcome` becoming
/// `sent`), as a database that takes claims but fails the confirm after
/// the send.
const REFUSE_CONFIRMS: &str = "CREATE TRIGGER refuse_confirms BEFORE UPDATE OF outcome ON ledger
    WHEN NEW.outcome = 'sent' BEGIN SELECT RAISE(ABORT, 'confirm refused'); END;";

/// One send of `a`'s 10:01 slot, accepted by SQS, whose confirm fails.
async fn a_send_whose_confirm_fails(
    h: &Harness,
    term: &mut sqsbeat::beat::driver::Term<'_, sqsbeat::wire::sink::MemorySink>,
) {
    let gate = Gate::new();
    h.sink.then(Plan::gated(&gate));
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    // Claimed; the send is held until the confirm is sure to fail.
    h.exec("", REFUSE_CONFIRMS).await;
    gate.open();
    term.drain().await;
    assert_eq!(h.accepted_ids(), ids("a", [at("2026-11-21T10:01:00Z")]));
    assert_eq!(h.ledger().await[0].2, "claimed", "the confirm failed");
}

#[tokio::test]
async fn a_failed_confirm_is_retried_each_turn_while_the_leader_stays_healthy() {
    let h = Harness::sqlite(at("2026-11-21T10:00:59Z")).await;
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_MINUTE)), epoch)
        .await
        .unwrap();
    a_send_whose_confirm_fails(&h, &mut term).await;
    term.turn(h.at("2026-11-21T10:01:05Z")).await.unwrap();
    assert_eq!(h.ledger().await[0].2, "claimed", "still refused");
    h.exec("", "DROP TRIGGER refuse_confirms").await;
    term.turn(h.at("2026-11-21T10:01:10Z")).await.unwrap();
    term.drain().await;
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].2, "sent", "confirmed at the next turn");
    assert_eq!(h.sink.accepted().len(), 1, "and not sent again");
}

/// Regression: the fires whose confirm failed lived in the term; when it
/// ended (leadership lost, the entries reloaded), the next term found
/// them claimed and sent them again. The driver keeps them across terms:
/// not sent again, even while the confirm still fails, and confirmed once
/// it works.
#[tokio::test]
async fn a_fire_whose_confirm_failed_is_not_sent_again_by_the_next_term() {
    let h = Harness::sqlite(at("2026-11-21T10:00:59Z")).await;
    let set = Arc::new(entries(EVERY_MINUTE));
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(set.clone(), epoch).await.unwrap();
    a_send_whose_confirm_fails(&h, &mut term).await;
    drop(term);
    // A new term (leadership regained, or a reload), the confirm still
    // refused while it begins.
    h.at("2026-11-21T10:01:05Z");
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(set, epoch).await.unwrap();
    term.turn(h.at("2026-11-21T10:01:05Z")).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), 1, "not sent a second time");
    h.exec("", "DROP TRIGGER refuse_confirms").await;
    term.turn(h.at("2026-11-21T10:01:10Z")).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), 1);
    let ledger = h.ledger().await;
    assert_eq!((ledger.len(), ledger[0].2.as_str()), (1, "sent"));
}

/// The outcome of each ledger row, by slot.
async fn outcomes(h: &Harness) -> Vec<(DateTime<Utc>, String)> {
    h.ledger().await.into_iter().map(|r| (r.1, r.2)).collect()
}

/// A fire's confirm rides with the next tick's claim, in its transaction,
/// instead of a transaction of its own right after the send; with no claim
/// to carry it, it is confirmed on its own once it waited
/// `CONFIRM_WITHIN`.
async fn a_confirm_rides_with_the_next_claim(h: Harness) {
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_SECOND)), epoch)
        .await
        .unwrap();
    let s = |t: &str| at(&format!("2026-11-21T10:00:{t}Z"));
    term.turn(h.at("2026-11-21T10:00:01Z")).await.unwrap();
    term.wait_sends().await;
    term.turn(h.at("2026-11-21T10:00:01.500Z")).await.unwrap();
    assert_eq!(
        outcomes(&h).await,
        [(s("01"), "claimed".into())],
        "accepted; its confirm waits for the next claim"
    );
    term.turn(h.at("2026-11-21T10:00:02Z")).await.unwrap();
    assert_eq!(
        outcomes(&h).await,
        [(s("01"), "sent".into()), (s("02"), "claimed".into())],
        "confirmed with the claim of 10:00:02"
    );
    term.wait_sends().await;
    drop(term);
    // An entry every minute: no claim comes along within CONFIRM_WITHIN,
    // so the confirm goes on its own once that has passed.
    assert_eq!(sqsbeat::beat::driver::CONFIRM_WITHIN, Duration::seconds(1));
    let mut term = driver
        .begin(Arc::new(entries(EVERY_MINUTE)), epoch)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&h).await[1],
        (s("02"), "sent".into()),
        "a term's begin confirms what the last one left"
    );
    let slot = at("2026-11-21T10:01:00Z");
    let outcome = |rows: Vec<(String, DateTime<Utc>, String, String)>| {
        rows.into_iter()
            .find(|r| r.0 == "a" && r.1 == slot)
            .map(|r| r.2)
    };
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    term.wait_sends().await;
    term.turn(h.at("2026-11-21T10:01:00.900Z")).await.unwrap();
    assert_eq!(outcome(h.ledger().await).as_deref(), Some("claimed"));
    term.turn(h.at("2026-11-21T10:01:01Z")).await.unwrap();
    assert_eq!(
        outcome(h.ledger().await).as_deref(),
        Some("sent"),
        "confirmed on its own after CONFIRM_WITHIN"
    );
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), 3, "each fire sent once");
}

#[tokio::test]
async fn a_confirm_rides_with_the_next_claim_sqlite() {
    a_confirm_rides_with_the_next_claim(Harness::sqlite(at("2026-11-21T10:00:00.500Z")).await)
        .await;
}

#[tokio::test]
async fn a_confirm_rides_with_the_next_claim_postgres() {
    a_confirm_rides_with_the_next_claim(Harness::postgres(at("2026-11-21T10:00:00.500Z")).await)
        .await;
}

/// Regression for the confirm riding with the claim: a confirm the
/// database refuses must not cost the claim it rode with. The decision is
/// recorded alone, every fire is sent, and the refused confirms are kept
/// and go through once the database takes them.
#[tokio::test]
async fn a_refused_confirm_does_not_stop_the_claims_it_rides_with() {
    let h = Harness::sqlite(at("2026-11-21T10:00:00.500Z")).await;
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_SECOND)), epoch)
        .await
        .unwrap();
    h.exec("", REFUSE_CONFIRMS).await;
    for t in ["01", "02", "03"] {
        term.turn(h.at(&format!("2026-11-21T10:00:{t}Z")))
            .await
            .expect("the claim is recorded although the confirm is refused");
        term.wait_sends().await;
    }
    let first = at("2026-11-21T10:00:01Z");
    assert_eq!(h.accepted_ids(), ids("s", seconds(first, 3)));
    assert!(
        h.ledger().await.iter().all(|r| r.2 == "claimed"),
        "every confirm refused"
    );
    h.exec("", "DROP TRIGGER refuse_confirms").await;
    term.turn(h.at("2026-11-21T10:00:04Z")).await.unwrap();
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 4);
    assert!(rows[..3].iter().all(|r| r.2 == "sent"), "{rows:?}");
    term.drain().await;
    assert_eq!(h.accepted_ids(), ids("s", seconds(first, 4)), "each once");
}

/// Queries the store `n` times. It has one connection, so a driver with
/// work to do gets it between these queries: one that would begin a term
/// at once has begun it by their end, and one that ends a term has ended
/// it, however slow the machine.
async fn make_room(h: &Harness, n: usize) {
    for _ in 0..n {
        h.texts("SELECT 1 || ''").await;
    }
}

/// How many terms have begun once the driver has settled, waiting until
/// at least `n` have (a bound for a failing test only). Each begin writes
/// a disabled entry's cursor, which a trigger counts.
async fn terms_begun(h: &Harness, n: usize) -> usize {
    let count = || async {
        h.texts("SELECT CAST(count(*) AS TEXT) FROM begun").await[0][0]
            .parse::<usize>()
            .unwrap()
    };
    for _ in 0..100_000 {
        if count().await >= n {
            break;
        }
    }
    make_room(h, 50).await;
    count().await
}

/// Regression: a term that ended on a failed decision (a claim the
/// database refuses) was followed at once by the next, which failed the
/// same way: a loop with no pause. Terms now begin again after 1 s, then
/// 2 s, 4 s... Tokio's clock is paused and kept from moving on its own (a
/// task that always has work), so it moves only as far as the test
/// advances it, whatever the database's calls take.
#[tokio::test]
async fn a_term_that_ended_on_a_failed_decision_backs_off_before_the_next() {
    use sqsbeat::runtime::leader::Role;
    let h = Harness::sqlite(at("2026-11-21T10:00:00.200Z")).await;
    let old = h.new_epoch().await;
    // `s` has a slot due at once, whose claim is refused.
    let due = sqsbeat::store::Cursor {
        entry: "s".into(),
        cursor: at("2026-11-21T09:59:59Z"),
        enabled: true,
    };
    sqsbeat::store::ledger::record_cursors(&h.store, old, &[due])
        .await
        .unwrap();
    h.exec(
        "",
        "CREATE TRIGGER refuse_claims BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'refused'); END;
         CREATE TABLE begun (cursor TEXT);
         CREATE TRIGGER begun_ins AFTER INSERT ON entry_state WHEN NEW.entry = 'probe'
           BEGIN INSERT INTO begun VALUES (NEW.cursor); END;
         CREATE TRIGGER begun_upd AFTER UPDATE ON entry_state WHEN NEW.entry = 'probe'
           BEGIN INSERT INTO begun VALUES (NEW.cursor); END;",
    )
    .await;
    let set =
        format!("{EVERY_SECOND}[entries.probe]\ntask = \"t.p\"\nevery = \"1h\"\nenabled = false\n");
    let epoch = h.new_epoch().await;
    let since = h.clock.now();
    tokio::time::pause();
    let busy = tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
    let (_entries, entries_rx) = tokio::sync::watch::channel(Arc::new(entries(&set)));
    let (_pauses, pauses_rx) = tokio::sync::watch::channel(Arc::new(Default::default()));
    let (_role, role_rx) = tokio::sync::watch::channel(Role::Leader { epoch, since });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(
        h.driver()
            .run(entries_rx, pauses_rx, role_rx, shutdown.clone()),
    );
    // A term writes the disabled probe's cursor (the beat clock's now)
    // only when it differs from the stored one: the beat clock moves a
    // millisecond before each count, so that any term begun since writes.
    let mut ms = 0;
    let mut bump = || {
        ms += 1;
        h.clock.set(since + chrono::Duration::milliseconds(ms));
    };
    assert_eq!(terms_begun(&h, 1).await, 1);
    bump();
    assert_eq!(terms_begun(&h, 0).await, 1, "no second term at once");
    for (n, backoff) in [(2, 1_000), (3, 2_000), (4, 4_000)] {
        tokio::time::advance(StdDuration::from_millis(backoff - 20)).await;
        bump();
        assert_eq!(terms_begun(&h, 0).await, n - 1, "{backoff} ms are not over");
        bump();
        tokio::time::advance(StdDuration::from_millis(40)).await;
        assert_eq!(terms_begun(&h, n).await, n, "{backoff} ms are over");
    }
    shutdown.cancel();
    run.await.unwrap();
    busy.abort();
    assert!(h.sink.accepted().is_empty());
    assert!(h.ledger().await.is_empty(), "every claim refused");
}

/// A restart does not rewrite the cursors the store already holds (at
/// 100 000 entries that delayed the first fire), and they stay right: the
/// entry resumes after its last slot, neither firing it again nor skipping
/// the next; a new entry's cursor is written.
async fn a_restart_keeps_the_stored_cursors_without_rewriting_them(h: Harness) {
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver
        .begin(Arc::new(entries(EVERY_MINUTE)), epoch)
        .await
        .unwrap();
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    term.drain().await;
    drop(term);
    // Marks the rows: a rewrite, even of the same cursor, sets updated_at.
    h.exec(
        "UPDATE entry_state SET updated_at = '2000-01-01T00:00:00Z'",
        "UPDATE entry_state SET updated_at = '2000-01-01T00:00:00.000000Z'",
    )
    .await;
    h.at("2026-11-21T10:01:30Z");
    let epoch = h.new_epoch().await;
    let both = format!("{EVERY_MINUTE}[entries.b]\ntask = \"t.b\"\nevery = \"1m\"\n");
    let mut term = driver.begin(Arc::new(entries(&both)), epoch).await.unwrap();
    let untouched =
        "SELECT entry FROM entry_state WHERE updated_at < '2001-01-01T00:00:00Z' ORDER BY entry";
    assert_eq!(
        h.texts(untouched).await,
        [["a"]],
        "a's cursor not rewritten"
    );
    let all = "SELECT entry FROM entry_state ORDER BY entry";
    assert_eq!(
        h.texts(all).await,
        [["a"], ["b"]],
        "the new entry's cursor written"
    );
    term.turn(h.at("2026-11-21T10:02:00Z")).await.unwrap();
    term.drain().await;
    let a = |t: &str| fire_task_id("a", at(t));
    let sent: Vec<_> = h
        .accepted_ids()
        .into_iter()
        .filter(|id| *id == a("2026-11-21T10:01:00Z") || *id == a("2026-11-21T10:02:00Z"))
        .collect();
    assert_eq!(
        sent,
        [a("2026-11-21T10:01:00Z"), a("2026-11-21T10:02:00Z")],
        "each slot of a once, in order, across the restart"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_stored_cursors_without_rewriting_them_sqlite() {
    a_restart_keeps_the_stored_cursors_without_rewriting_them(
        Harness::sqlite(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_restart_keeps_the_stored_cursors_without_rewriting_them_postgres() {
    a_restart_keeps_the_stored_cursors_without_rewriting_them(
        Harness::postgres(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}
