//! Which slots `sqsbeat backfill` sends, decided without I/O: the entry's
//! slots in a range, less what the ledger records, less what belongs to
//! the running beat.
//!
//! The rule against a running leader: the beat claims only slots after an
//! entry's cursor (the last slot it decided), and the cursor never moves
//! back. So a slot strictly before the cursor is never claimed by the beat
//! again, and backfill may claim it; a slot at or after the cursor is the
//! beat's, and backfill leaves it alone. An entry whose cursor was recorded
//! while it was disabled, or that has none (no leader has run it), starts
//! where the beat starts it when it takes it up: at the entry's
//! `resume_from` (a django-celery-beat row's last run), else at the
//! leader's own `now`, never earlier; for it the bound is that instant,
//! the caller's `now` standing for the leader's.
//!
//! Among the slots before the bound, backfill claims one only where the
//! ledger has no row or a `missed` one (the store does this in one
//! statement, so two backfills at once never claim the same slot); a
//! `sent` slot is not sent again (so a second backfill sends nothing), and
//! a `claimed` one is someone else's send in progress (a leader retrying
//! it, another backfill).
//!
//! The other way round: a leader beginning a term sends again the claims
//! it finds unconfirmed (their leader died before confirming them), but
//! not a backfill's claim renewed within
//! [`crate::store::ledger::BACKFILL_LEASE_SECS`]: that backfill is still
//! sending it, and renews it while it does. Only a lapsed one (the
//! backfill died) is taken over, and then it is the beat's.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::entry::Entry;

/// Slots one backfill sends without an explicit `--max`.
pub const DEFAULT_LIMIT: usize = 1_000;

/// What the ledger holds for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Claimed,
    Sent,
    Missed,
}

impl Recorded {
    /// The ledger's `outcome` text; `None` for a value sqsbeat never writes.
    pub fn parse(outcome: &str) -> Option<Recorded> {
        match outcome {
            "claimed" => Some(Recorded::Claimed),
            "sent" => Some(Recorded::Sent),
            "missed" => Some(Recorded::Missed),
            _ => None,
        }
    }
}

/// A range backfill will not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("--from {from} is after --to {to}; give the earlier instant first")]
    Inverted { from: String, to: String },
    #[error(
        "--from {from} is older than the ledger keeps its records ([database] ledger_retention): slots before {earliest} may have been sent and pruned since, so backfill cannot tell which were; use --from {earliest} or later"
    )]
    BeforeRetention { from: String, earliest: String },
    #[error(
        "entry '{entry}' has more than {limit} slots in the range; pass --max N with N at least the number of slots to send more at once, or narrow the range"
    )]
    TooMany { entry: String, limit: usize },
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Every slot of `entry` in `[from, to]` (both ends included), oldest
/// first; more than `limit` is an error, found without listing them all.
/// `earliest` is the oldest instant the ledger still answers for.
pub fn slots_in(
    entry: &Entry,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    earliest: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<DateTime<Utc>>, RangeError> {
    if from > to {
        return Err(RangeError::Inverted {
            from: iso(from),
            to: iso(to),
        });
    }
    if from < earliest {
        return Err(RangeError::BeforeRetention {
            from: iso(from),
            earliest: iso(earliest),
        });
    }
    let mut out = Vec::new();
    // `next_after` is strictly after: start a microsecond (the ledger's
    // precision) before `from`, so a slot at `from` counts.
    let mut at = from - Duration::microseconds(1);
    while let Some(f) = entry.next_after(at) {
        if f.at > to {
            break;
        }
        if out.len() == limit {
            return Err(RangeError::TooMany {
                entry: entry.name.clone(),
                limit,
            });
        }
        out.push(f.at);
        at = f.at;
    }
    Ok(out)
}

/// Slots before this instant are backfill's, the rest the beat's: the
/// entry's cursor (`(instant, enabled when recorded)` from the ledger)
/// while it was recorded enabled, else where the beat would start the
/// entry, its `resume_from` or `now` (see the module's rule).
pub fn bound(
    cursor: Option<(DateTime<Utc>, bool)>,
    resume_from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match cursor {
        Some((at, true)) => at,
        _ => resume_from.map_or(now, |r| r.min(now)),
    }
}

/// What backfill does with each slot of the range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// To claim and send, oldest first.
    pub send: Vec<DateTime<Utc>>,
    /// Recorded as sent: not sent again.
    pub sent: Vec<DateTime<Utc>>,
    /// Claimed by someone else whose send is in progress.
    pub claimed: Vec<DateTime<Utc>>,
    /// At or after the bound: the running beat's to decide.
    pub beat: Vec<DateTime<Utc>>,
}

/// Sorts `slots` by what the ledger `recorded` and the `bound`.
pub fn select(
    slots: &[DateTime<Utc>],
    bound: DateTime<Utc>,
    recorded: &HashMap<DateTime<Utc>, Recorded>,
) -> Selection {
    let mut s = Selection::default();
    for &slot in slots {
        let list = if slot >= bound {
            &mut s.beat
        } else {
            match recorded.get(&slot) {
                Some(Recorded::Sent) => &mut s.sent,
                Some(Recorded::Claimed) => &mut s.claimed,
                Some(Recorded::Missed) | None => &mut s.send,
            }
        };
        list.push(slot);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Context, Origin, RawEntry, RawInstant, validate};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn entry(f: impl FnOnce(&mut RawEntry)) -> Entry {
        let mut raw = RawEntry {
            task: Some("t.t".into()),
            every: Some("1m".into()),
            ..Default::default()
        };
        f(&mut raw);
        let origin = Origin {
            file: "t".into(),
            line: 1,
        };
        let (e, p) = validate("e", raw, origin, &Context::default());
        e.unwrap_or_else(|| panic!("{p:?}"))
    }

    const EARLIEST: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn slots_in_a_range_include_both_ends_and_respect_the_entry_window() {
        let e = entry(|_| {});
        let s = slots_in(
            &e,
            at("2026-11-21T10:00:00Z"),
            at("2026-11-21T10:03:00Z"),
            at(EARLIEST),
            DEFAULT_LIMIT,
        )
        .unwrap();
        assert_eq!(
            s,
            [
                at("2026-11-21T10:00:00Z"),
                at("2026-11-21T10:01:00Z"),
                at("2026-11-21T10:02:00Z"),
                at("2026-11-21T10:03:00Z")
            ]
        );
        let windowed = entry(|r| {
            r.start_at = Some(RawInstant::Text("2026-11-21T10:02:00Z".into()));
        });
        let s = slots_in(
            &windowed,
            at("2026-11-21T10:00:00Z"),
            at("2026-11-21T10:03:00Z"),
            at(EARLIEST),
            DEFAULT_LIMIT,
        )
        .unwrap();
        assert_eq!(s, [at("2026-11-21T10:02:00Z"), at("2026-11-21T10:03:00Z")]);
        let one = slots_in(
            &e,
            at("2026-11-21T10:00:30Z"),
            at("2026-11-21T10:00:40Z"),
            at(EARLIEST),
            DEFAULT_LIMIT,
        );
        assert_eq!(one, Ok(vec![]), "no slot in the range");
    }

    #[test]
    fn a_range_beyond_the_limit_or_the_ledger_retention_or_inverted_is_refused() {
        let e = entry(|r| r.every = Some("1s".into()));
        let (from, earliest) = (at("2026-11-21T10:00:00Z"), at(EARLIEST));
        // 1 001 slots: one more than the limit.
        let to = from + Duration::seconds(1000);
        assert_eq!(
            slots_in(&e, from, to, earliest, 1000),
            Err(RangeError::TooMany {
                entry: "e".into(),
                limit: 1000
            })
        );
        assert_eq!(slots_in(&e, from, to, earliest, 1001).unwrap().len(), 1001);
        // A year of seconds is refused without being listed.
        let far = slots_in(&e, from, from + Duration::days(365), earliest, 10);
        assert!(matches!(far, Err(RangeError::TooMany { limit: 10, .. })));
        assert!(matches!(
            slots_in(&e, to, from, earliest, 10),
            Err(RangeError::Inverted { .. })
        ));
        let err = slots_in(&e, from, to, from + Duration::seconds(1), 10).unwrap_err();
        assert!(matches!(err, RangeError::BeforeRetention { .. }));
        assert!(err.to_string().contains("ledger_retention"), "{err}");
    }

    #[test]
    fn the_bound_is_the_cursor_while_enabled_else_where_the_beat_would_start() {
        let (cursor, now) = (at("2026-11-21T10:05:00Z"), at("2026-11-21T11:00:00Z"));
        let last_run = at("2026-11-21T10:30:00Z");
        assert_eq!(bound(Some((cursor, true)), Some(last_run), now), cursor);
        assert_eq!(bound(Some((cursor, false)), None, now), now);
        assert_eq!(bound(None, None, now), now);
        // A django-celery-beat row is started from its last run.
        assert_eq!(bound(None, Some(last_run), now), last_run);
        assert_eq!(bound(Some((cursor, false)), Some(last_run), now), last_run);
        assert_eq!(bound(None, Some(now + Duration::hours(1)), now), now);
    }

    #[test]
    fn selection_sends_unrecorded_and_missed_slots_before_the_bound_only() {
        let t = |m: i64| at("2026-11-21T10:00:00Z") + Duration::minutes(m);
        let slots: Vec<_> = (0..8).map(t).collect();
        let recorded = HashMap::from([
            (t(1), Recorded::Sent),
            (t(2), Recorded::Missed),
            (t(3), Recorded::Claimed),
            (t(6), Recorded::Sent),
        ]);
        let s = select(&slots, t(5), &recorded);
        assert_eq!(s.send, [t(0), t(2), t(4)]);
        assert_eq!(s.sent, [t(1)]);
        assert_eq!(s.claimed, [t(3)]);
        assert_eq!(
            s.beat,
            [t(5), t(6), t(7)],
            "the cursor's slot is the beat's"
        );
        // A second backfill after the first confirmed its sends: nothing.
        let mut after = recorded.clone();
        for slot in &s.send {
            after.insert(*slot, Recorded::Sent);
        }
        assert!(select(&slots, t(5), &after).send.is_empty());
        assert_eq!(Recorded::parse("sent"), Some(Recorded::Sent));
        assert_eq!(Recorded::parse("bogus"), None);
    }
}
