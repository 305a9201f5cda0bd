//! Freshness, the dead-man's switch: an entry is *overdue* when one of its
//! slots was due to be sent more than its `grace` ago and the ledger has
//! neither a sent nor a missed record of it: the beat is stuck behind it
//! (no leader deciding, a clock held, a database that refuses the claim)
//! or its sends keep failing.
//!
//! The slot that matters is the oldest one still outstanding, not the
//! latest one due: for an entry firing every 10 s with a minute's grace,
//! the latest slot is always within its grace, however long the beat has
//! been stuck. Pure: the facts and `now` are arguments. The leader reads
//! them from its own state ([`super::tick::Beat::overdue`]); `sqsbeat
//! status` and the status page from the store ([`outstanding`]).
//!
//! A pause ([`Pause`], `sqsbeat entries pause`) is a decision, not a stall:
//! an entry paused at `now` is never overdue, and a slot the pause takes is
//! missed with reason `paused` whenever it is decided, so it counts as
//! decided; the oldest outstanding slot is then the first one after the
//! pause ([`past_pause`]).

use chrono::{DateTime, Utc};

use crate::beat::tick::Pause;
use crate::entry::Entry;

/// Whether `slot`, still outstanding at `now`, makes entry `e` overdue.
pub fn is_overdue(e: &Entry, slot: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    if !e.enabled || now - slot <= e.grace() {
        // The send instant is never before the slot: no need to compute
        // the jitter to know it is within grace.
        return false;
    }
    now - e.send_at(slot) > e.grace()
}

/// The first slot of `e` from `slot` on that `pause` does not take when
/// decided at `now` (see [`Pause::holds`]); `None` while the entry is
/// paused at `now`, when nothing of it is outstanding.
pub fn past_pause(
    e: &Entry,
    slot: DateTime<Utc>,
    pause: Option<&Pause>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(p) = pause else { return Some(slot) };
    if p.covers(now) {
        return None;
    }
    if !p.covers(slot) {
        return Some(slot);
    }
    // The pause took the slot and has ended: the slot at its end fires.
    let until = p.until?;
    e.next_after(until - chrono::Duration::microseconds(1))
        .map(|f| f.at)
}

/// The oldest outstanding slot of `e` at `now`, from stored facts: the
/// slot after its cursor (the last slot decided) once it is due, and the
/// oldest slot claimed but never sent; slots its `pause` takes are not
/// outstanding (see [`past_pause`]). An entry without a cursor has not
/// been seen by a leader yet (a new or re-enabled entry starts when it is)
/// and has none of the former.
pub fn outstanding(
    e: &Entry,
    cursor: Option<DateTime<Utc>>,
    unsent: Option<DateTime<Utc>>,
    pause: Option<&Pause>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let undecided = cursor
        .and_then(|c| e.next_after(c))
        .and_then(|f| past_pause(e, f.at, pause, now))
        .filter(|&slot| e.send_at(slot) <= now);
    // Only the oldest unsent claim is known: one the pause took hides any
    // later one, which the next turn of a leader decides anyway.
    let unsent = unsent.filter(|&slot| past_pause(e, slot, pause, now) == Some(slot));
    match (undecided, unsent) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The slot that makes `e` overdue at `now`, from stored facts, if any.
pub fn overdue_slot(
    e: &Entry,
    cursor: Option<DateTime<Utc>>,
    unsent: Option<DateTime<Utc>>,
    pause: Option<&Pause>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    outstanding(e, cursor, unsent, pause, now).filter(|&slot| is_overdue(e, slot, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Context, Origin, RawEntry, validate};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn entry(every: &str, grace: &str, enabled: bool) -> Entry {
        let raw = RawEntry {
            task: Some("t.t".into()),
            every: Some(every.into()),
            grace: Some(grace.into()),
            enabled: Some(enabled),
            ..Default::default()
        };
        let origin = Origin {
            file: "t".into(),
            line: 1,
        };
        validate("e", raw, origin, &Context::default()).0.unwrap()
    }

    #[test]
    fn a_slot_is_overdue_only_past_its_grace() {
        let e = entry("1m", "30s", true);
        let slot = at("2026-11-21T10:00:00Z");
        assert!(!is_overdue(&e, slot, at("2026-11-21T10:00:30Z")));
        assert!(is_overdue(&e, slot, at("2026-11-21T10:00:30.001Z")));
        assert!(!is_overdue(
            &entry("1m", "30s", false),
            slot,
            at("2026-11-21T11:00:00Z")
        ));
    }

    /// Judged by the latest slot due, a stuck 10-second entry with a
    /// minute's grace would never be overdue.
    #[test]
    fn a_stuck_frequent_entry_is_overdue_by_its_oldest_outstanding_slot() {
        let e = entry("10s", "1m", true);
        let cursor = Some(at("2026-11-21T10:00:00Z"));
        let now = at("2026-11-21T10:05:00Z");
        assert_eq!(
            overdue_slot(&e, cursor, None, None, now),
            Some(at("2026-11-21T10:00:10Z"))
        );
        // Caught up: the next slot is not due yet.
        assert_eq!(
            overdue_slot(&e, Some(at("2026-11-21T10:05:00Z")), None, None, now),
            None
        );
    }

    #[test]
    fn a_claim_never_sent_is_outstanding_though_the_cursor_moved_on() {
        let e = entry("1m", "1m", true);
        let now = at("2026-11-21T10:05:30Z");
        let cursor = Some(at("2026-11-21T10:05:00Z"));
        assert_eq!(overdue_slot(&e, cursor, None, None, now), None);
        let failing = Some(at("2026-11-21T10:02:00Z"));
        assert_eq!(overdue_slot(&e, cursor, failing, None, now), failing);
        // A recent failure, within grace, is not overdue yet.
        let recent = Some(at("2026-11-21T10:05:00Z"));
        assert_eq!(overdue_slot(&e, cursor, recent, None, now), None);
    }

    #[test]
    fn an_entry_no_leader_has_seen_is_not_overdue() {
        let e = entry("1m", "1m", true);
        assert_eq!(
            overdue_slot(&e, None, None, None, at("2026-11-21T10:05:30Z")),
            None
        );
    }

    /// A paused entry is held on purpose: reported overdue, it would page
    /// whoever paused it for as long as the pause lasts.
    #[test]
    fn a_paused_entry_is_never_overdue_and_its_paused_slots_are_decided() {
        let e = entry("1m", "1m", true);
        let cursor = Some(at("2026-11-21T10:01:00Z"));
        let now = at("2026-11-21T10:05:00Z");
        let unsent = Some(at("2026-11-21T10:01:00Z"));
        assert_eq!(
            overdue_slot(&e, cursor, None, None, now),
            Some(at("2026-11-21T10:02:00Z")),
            "stuck and not paused"
        );
        let open = Pause {
            from: at("2026-11-21T10:01:30Z"),
            until: None,
        };
        assert_eq!(overdue_slot(&e, cursor, unsent, Some(&open), now), None);
        // Ended at 10:03: 10:02 is the pause's (missed as paused when
        // decided); 10:03, the first slot after it, is what is late.
        let ended = Pause {
            from: at("2026-11-21T10:01:30Z"),
            until: Some(at("2026-11-21T10:03:00Z")),
        };
        assert_eq!(
            overdue_slot(&e, cursor, None, Some(&ended), now),
            Some(at("2026-11-21T10:03:00Z"))
        );
        assert_eq!(
            overdue_slot(&e, cursor, None, Some(&ended), at("2026-11-21T10:04:00Z")),
            None,
            "10:03 is within its grace"
        );
        // A claim never sent that the pause took is decided too.
        let took = Some(at("2026-11-21T10:02:00Z"));
        assert_eq!(
            overdue_slot(
                &e,
                Some(at("2026-11-21T10:04:00Z")),
                took,
                Some(&ended),
                now
            ),
            None
        );
        // A pause still to come holds nothing yet.
        let later = Pause {
            from: at("2026-11-21T11:00:00Z"),
            until: None,
        };
        assert_eq!(
            overdue_slot(&e, cursor, None, Some(&later), now),
            Some(at("2026-11-21T10:02:00Z"))
        );
    }
}
