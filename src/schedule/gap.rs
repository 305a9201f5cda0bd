//! The shortest time between two consecutive fires of a cron schedule,
//! which bounds the `jitter` an entry may have: a jitter at least that long
//! lets a later slot be sent before an earlier one, and the beat, which
//! holds only each entry's next slot, then records slots as missed.
//!
//! Computed once per parsed schedule (they are shared `Arc`s per
//! expression and zone), in two cheap parts:
//!
//! - in wall-clock time, from the pattern's fields: the fire set is
//!   (matching days) × (matching times of day), so the shortest gap is the
//!   least of the step between seconds, minutes, hours and matching days,
//!   each less the spread of the finer fields;
//! - at DST changes, where an instant gap can be shorter than any wall gap
//!   (`*/25 1 * * *` in New York fires 01:50 EDT, then 01:00 EST ten
//!   minutes later): by walking the real fires around each change of the
//!   zone's offset between [`DST_FROM_YEAR`] and [`DST_TO_YEAR`]. Only the
//!   last fire before a change and the first two after it can be closer
//!   than the wall gap (before the change fires keep their wall spacing;
//!   after it a second pass repeats wall spacing, and a fire moved out of
//!   a gap lands on the change itself), so each change costs a few steps.
//!
//! The span is a bound chosen to be conservative, not the entry's own
//! lifetime: a change in it that an entry never lives to see can still
//! refuse a jitter, never the other way round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::CronSchedule;

/// First year whose DST changes are checked.
pub const DST_FROM_YEAR: i32 = 2020;
/// Year before which the last checked DST change falls.
pub const DST_TO_YEAR: i32 = 2060;

/// The shortest gap between consecutive fires, and the DST change that
/// makes it that short when one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinGap {
    pub gap: Duration,
    pub dst_change: Option<DateTime<Utc>>,
}

impl CronSchedule {
    /// The shortest time between two consecutive fires; `None` when it
    /// never fires twice.
    pub fn min_gap(&self) -> Option<MinGap> {
        *self.min_gap.0.get_or_init(|| self.compute_min_gap())
    }

    fn compute_min_gap(&self) -> Option<MinGap> {
        if !self.ever_fires {
            return None;
        }
        let wall = wall_min_gap(&self.cron)?;
        let mut best = MinGap {
            gap: wall,
            dst_change: None,
        };
        for &change in offset_changes(self.tz).iter() {
            if let Some(gap) = self.min_gap_around(change, wall)
                && gap < best.gap
            {
                best = MinGap {
                    gap,
                    dst_change: Some(change),
                };
            }
        }
        Some(best)
    }

    /// The shortest gap among the fires from `wall` before an offset change
    /// to the second fire after it: a pair closer than `wall` must have one
    /// fire on each side of the change, or be the first two after it.
    fn min_gap_around(&self, change: DateTime<Utc>, wall: Duration) -> Option<Duration> {
        let mut at = change - wall - Duration::milliseconds(1);
        let mut prev: Option<DateTime<Utc>> = None;
        let mut best: Option<Duration> = None;
        let mut after_change = 0;
        // Fires before the change are `wall` apart, so a handful of steps
        // reach two fires after it; the bound is for safety only.
        for _ in 0..16 {
            let fire = self.next_after(at)?.at;
            if let Some(p) = prev {
                best = Some(best.map_or(fire - p, |b| b.min(fire - p)));
            }
            prev = Some(fire);
            at = fire;
            if fire >= change {
                after_change += 1;
                if after_change == 2 {
                    break;
                }
            }
        }
        best
    }
}

/// The shortest gap between consecutive matching wall-clock times.
fn wall_min_gap(cron: &Cron) -> Option<Duration> {
    let p = &cron.pattern;
    let matching = |n: u32, f: &dyn Fn(u32) -> bool| -> Vec<i64> {
        (0..n).filter(|v| f(*v)).map(i64::from).collect()
    };
    let s = matching(60, &|v| p.second_match(v).unwrap_or(false));
    let m = matching(60, &|v| p.minute_match(v).unwrap_or(false));
    let h = matching(24, &|v| p.hour_match(v).unwrap_or(false));
    let d = matching_days(cron);
    let (s0, s1) = (*s.first()?, *s.last()?);
    let (m0, m1) = (*m.first()?, *m.last()?);
    let (h0, h1) = (*h.first()?, *h.last()?);
    // From the last fire of one minute (hour, day) to the first of the
    // next: the step between them less the spread of the finer fields.
    let spread_m = (m1 * 60 + s1) - (m0 * 60 + s0);
    let spread_h = (h1 * 3600 + m1 * 60 + s1) - (h0 * 3600 + m0 * 60 + s0);
    [
        min_step(&s),
        min_step(&m).map(|x| x * 60 - (s1 - s0)),
        min_step(&h).map(|x| x * 3600 - spread_m),
        min_step(&d).map(|x| x * 86_400 - spread_h),
    ]
    .into_iter()
    .flatten()
    .min()
    .map(Duration::seconds)
}

/// The smallest difference between consecutive values.
fn min_step(values: &[i64]) -> Option<i64> {
    values.windows(2).map(|w| w[1] - w[0]).min()
}

/// Matching days, as day numbers, over two 28-year cycles (the Gregorian
/// weekday cycle, leap days included), stopping early at two consecutive
/// days, the closest they can be.
fn matching_days(cron: &Cron) -> Vec<i64> {
    let p = &cron.pattern;
    let (Some(mut day), Some(end)) = (
        NaiveDate::from_ymd_opt(2001, 1, 1),
        NaiveDate::from_ymd_opt(2001 + 56, 1, 1),
    ) else {
        return Vec::new();
    };
    let mut found: Vec<i64> = Vec::new();
    let mut n = 0i64;
    while day < end {
        let weekday = croner::Weekday::from_days_from_sunday(day.weekday().num_days_from_sunday());
        if p.month_match(day.month()).unwrap_or(false)
            && p.day_match(day.year(), day.month(), day.day(), weekday)
                .unwrap_or(false)
        {
            if found.last() == Some(&(n - 1)) {
                found.push(n);
                break;
            }
            found.push(n);
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
        n += 1;
    }
    found
}

type Changes = Arc<Vec<DateTime<Utc>>>;

/// Every instant in the checked span at which the zone's UTC offset
/// changes, to the second. Kept per zone: finding them is most of the cost
/// of a gap, and schedules share a few zones.
fn offset_changes(tz: Tz) -> Changes {
    static CACHE: OnceLock<Mutex<HashMap<Tz, Changes>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&tz).cloned()) {
        return hit;
    }
    let found = Arc::new(find_offset_changes(tz));
    if let Ok(mut c) = cache.lock() {
        c.insert(tz, found.clone());
    }
    found
}

fn find_offset_changes(tz: Tz) -> Vec<DateTime<Utc>> {
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let year = |y| {
        NaiveDate::from_ymd_opt(y, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    };
    let (Some(mut t), Some(end)) = (year(DST_FROM_YEAR), year(DST_TO_YEAR)) else {
        return Vec::new();
    };
    // Six-hour steps: no zone changes its offset twice within six hours.
    let step = Duration::hours(6);
    let mut changes = Vec::new();
    while t < end {
        let next = t + step;
        if offset(t) != offset(next) {
            // Whole seconds: offsets change on a second.
            let (mut lo, mut hi) = (t.timestamp(), next.timestamp());
            let before = offset(t);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                match DateTime::from_timestamp(mid, 0) {
                    Some(m) if offset(m) == before => lo = mid,
                    _ => hi = mid,
                }
            }
            changes.extend(DateTime::from_timestamp(hi, 0));
        }
        t = next;
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(expr: &str, tz: &str) -> MinGap {
        let tz: Tz = tz.parse().unwrap();
        CronSchedule::parse_cron(expr, tz)
            .unwrap()
            .min_gap()
            .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn wall_gaps_follow_the_finest_field_and_the_wrap_between_units() {
        for (expr, want) in [
            ("* * * * *", Duration::minutes(1)),
            ("*/5 * * * *", Duration::minutes(5)),
            ("0,50 * * * *", Duration::minutes(10)),
            ("*/25 1 * * *", Duration::minutes(25)),
            ("0 3 * * *", Duration::days(1)),
            ("30 23 * * *", Duration::days(1)),
            ("0 0,23 * * *", Duration::hours(1)),
            ("0 9 * * MON", Duration::weeks(1)),
            ("0 9 * * MON,TUE", Duration::days(1)),
            ("0 0 1 * *", Duration::days(28)),
            ("*/10 * * * * *", Duration::seconds(10)),
            ("0 9 * * 1-5", Duration::days(1)),
        ] {
            assert_eq!(
                gap(expr, "UTC"),
                MinGap {
                    gap: want,
                    dst_change: None
                },
                "{expr}"
            );
        }
    }

    /// New York, 2026-11-01: 01:00-02:00 repeats. A wildcard entry fires
    /// on both passes, so 01:50 EDT is followed by 01:00 EST ten minutes
    /// later, closer than the 25 minutes of any ordinary day.
    #[test]
    fn a_repeated_hour_can_bring_fires_closer_than_any_wall_gap() {
        let g = gap("*/25 1 * * *", "America/New_York");
        assert_eq!(g.gap, Duration::minutes(10));
        assert!(g.dst_change.is_some());
        // Fixed-time entries fire on the first pass only: no closer pair.
        let fixed = gap("0,25,50 1 * * *", "America/New_York");
        assert_eq!(fixed.gap, Duration::minutes(25));
    }

    /// New York, 2026-03-08: 02:00-03:00 is skipped. A fixed-time 02:30
    /// fires at 03:00 EDT, one minute after 01:59 EST.
    #[test]
    fn a_skipped_hour_can_bring_fires_closer_than_any_wall_gap() {
        let g = gap("30,59 1,2 * * *", "America/New_York");
        assert_eq!(g.gap, Duration::minutes(1));
        assert_eq!(g.dst_change, Some(at("2020-03-08T07:00:00Z")));
        // Hourly is hourly across every change.
        assert_eq!(gap("0 * * * *", "Europe/London").gap, Duration::hours(1));
        assert_eq!(gap("0 * * * *", "Europe/London").dst_change, None);
    }

    #[test]
    fn offset_changes_are_found_to_the_second() {
        let changes = offset_changes("Europe/London".parse().unwrap());
        assert!(changes.contains(&at("2026-03-29T01:00:00Z")), "{changes:?}");
        assert!(changes.contains(&at("2026-10-25T01:00:00Z")), "{changes:?}");
        assert!(offset_changes(Tz::UTC).is_empty());
    }

    /// The computed gap against a walk through every fire of a year, in
    /// zones with hour-long and half-hour DST changes (Lord Howe, in the
    /// southern hemisphere), and none.
    #[test]
    fn min_gap_matches_a_walk_through_a_year_of_fires() {
        let exprs = [
            "0,50 * * * *",
            "31,59 * * * *",
            "*/25 1 * * *",
            "30,59 1,2 * * *",
            "45 1,2,3 * * *",
            "0 2 * * *",
            "10,40 1-3 * * SUN",
        ];
        for zone in ["America/New_York", "Australia/Lord_Howe", "UTC"] {
            let tz: Tz = zone.parse().unwrap();
            for expr in exprs {
                let c = CronSchedule::parse_cron(expr, tz).unwrap();
                let (mut t, end) = (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
                let mut walked = Duration::MAX;
                let mut prev = None;
                while let Some(f) = c.next_after(t).filter(|f| f.at < end) {
                    if let Some(p) = prev {
                        walked = walked.min(f.at - p);
                    }
                    prev = Some(f.at);
                    t = f.at;
                }
                assert_eq!(c.min_gap().unwrap().gap, walked, "{expr} in {zone}");
            }
        }
    }

    /// Parsed schedules are shared across the process, and the section
    /// parse's equality test read two equal files apart when another test
    /// asked one shared schedule its gap between the two reads (eight
    /// tests at once): the computed gap is not part of what a schedule
    /// prints.
    #[test]
    fn a_computed_gap_does_not_change_what_a_schedule_prints() {
        let shared = CronSchedule::parse_cron("*/5 * * * *", Tz::UTC).unwrap();
        // Two schedules, as a cache cleared between two parses gives.
        let (asked, fresh) = ((*shared).clone(), (*shared).clone());
        assert!(asked.min_gap().is_some());
        assert_eq!(format!("{asked:?}"), format!("{fresh:?}"));
    }
}
