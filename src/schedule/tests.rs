//! Fire-time tables with fixed instants. Expected values were worked out from
//! the zone rules and cross-checked against Python's croniter and Celery's
//! `crontab` (see the README's engine section for where they differ).

use super::*;
use chrono_tz::Tz;
use proptest::prelude::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

fn cron(expr: &str, zone: &str) -> Schedule {
    Schedule::Cron(CronSchedule::parse_cron(expr, tz(zone)).unwrap())
}

fn crontab(minute: &str, hour: &str, dow: &str, dom: &str, moy: &str, zone: &str) -> Schedule {
    let fields = CrontabFields {
        minute: minute.into(),
        hour: hour.into(),
        day_of_week: dow.into(),
        day_of_month: dom.into(),
        month_of_year: moy.into(),
    };
    Schedule::Cron(CronSchedule::parse_crontab(&fields, tz(zone)).unwrap())
}

/// The next `n` fires after `after`, as UTC RFC 3339 strings.
fn fires(s: &Schedule, after: &str, n: usize) -> Vec<String> {
    let mut t = at(after);
    let mut out = Vec::new();
    for _ in 0..n {
        let Some(f) = s.next_after(t) else { break };
        out.push(f.at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        t = f.at;
    }
    out
}

/// Found by `scripts/fuzz` (cron target, a 10 s timeout): an empty list
/// item made croner accept a field that matches nothing, and the
/// never-fires probe then walked decades minute by minute.
#[test]
fn fuzz_timeout_empty_list_item_is_an_error_not_a_hang() {
    for expr in [
        ", * * * * *",
        ", * * * *",
        "1,,2 * * * *",
        "* * * * 1,",
        "0 ,3 * * *",
    ] {
        let err = CronSchedule::parse_cron(expr, tz("UTC"))
            .err()
            .unwrap_or_else(|| panic!("{expr:?} parsed"));
        assert!(err.0.contains("empty"), "{expr:?}: {}", err.0);
    }
    let fields = CrontabFields {
        minute: "0,".into(),
        hour: "*".into(),
        day_of_month: "*".into(),
        month_of_year: "*".into(),
        day_of_week: "*".into(),
    };
    assert!(CronSchedule::parse_crontab(&fields, tz("UTC")).is_err());
}

/// Found by `scripts/fuzz` (cron target, a 10 s timeout): croner's own
/// search for the first fire of a pattern that matches no day walked day
/// by day to year 5000; and croner reads a bare `+` day-of-week (its own
/// AND prefix, not cron syntax) as matching no day.
#[test]
fn fuzz_timeout_a_pattern_matching_no_day_is_judged_without_a_search() {
    let err = CronSchedule::parse_cron("7\t3\t\t 31 *\t+", tz("America/New_York"))
        .expect_err("'+' is refused");
    assert!(err.0.contains("'+' is not cron syntax"), "{}", err.0);
    for (expr, fires) in [
        ("0 0 */40 * 1#5", false),
        ("0 0 30 2 *", false),
        ("0 0 31 4,6,9,11 *", false),
        ("0 0 29 2 *", true),
        ("0 0 29 2 1", true),
        ("0 0 LW * *", true),
    ] {
        let c = CronSchedule::parse_cron(expr, tz("America/New_York")).unwrap();
        assert_eq!(c.ever_fires, fires, "{expr}");
    }
}

#[test]
fn new_york_spring_forward_fixed_time_fires_after_the_gap() {
    // 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 02:30 does not exist.
    let s = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        fires(&s, "2026-03-06T12:00:00Z", 4),
        [
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // gap: 03:00 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
            "2026-03-10T06:30:00Z",
        ]
    );
    let f = s.next_after(at("2026-03-07T12:00:00Z")).unwrap();
    assert!(matches!(f.dst, Some(DstNote::MovedOutOfGap { .. })));
}

#[test]
fn new_york_fall_back_fixed_time_fires_first_pass_only() {
    // 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z); 01:30 happens twice.
    let s = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        fires(&s, "2026-10-31T00:00:00Z", 3),
        [
            "2026-10-31T05:30:00Z",
            "2026-11-01T05:30:00Z", // 01:30 EDT only, not 06:30Z
            "2026-11-02T06:30:00Z",
        ]
    );
}

#[test]
fn new_york_fixed_list_of_hours_is_not_wildcard() {
    // `0 1,2` names fixed times: a repeated 01:00 fires once, a skipped 02:00 moves.
    let s = cron("0 1,2 * * *", "America/New_York");
    assert_eq!(
        fires(&s, "2026-11-01T00:00:00Z", 2),
        ["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"]
    );
    assert_eq!(
        fires(&s, "2026-03-08T00:00:00Z", 2),
        ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"]
    );
    let s = cron("30 1,2 * * *", "America/New_York");
    assert_eq!(
        fires(&s, "2026-11-01T04:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-01T07:30:00Z"]
    );
}

#[test]
fn new_york_several_skipped_times_merge_into_one_fire() {
    let s = cron("0,30 2 * * *", "America/New_York");
    assert_eq!(
        fires(&s, "2026-03-08T00:00:00Z", 3),
        [
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:00:00Z",
            "2026-03-09T06:30:00Z"
        ]
    );
}

#[test]
fn new_york_wildcard_hourly_fires_both_passes_and_skips_gap() {
    let s = cron("0 * * * *", "America/New_York");
    assert_eq!(
        fires(&s, "2026-11-01T04:30:00Z", 4),
        [
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T07:00:00Z", // 02:00 EST
            "2026-11-01T08:00:00Z",
        ]
    );
    assert_eq!(
        fires(&s, "2026-03-08T05:30:00Z", 3),
        [
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT (02:00 never existed)
            "2026-03-08T08:00:00Z",
        ]
    );
}

#[test]
fn new_york_every_quarter_hour_runs_straight_through_both_transitions() {
    let s = cron("*/15 * * * *", "America/New_York");
    let fall = fires(&s, "2026-11-01T05:40:00Z", 5);
    assert_eq!(
        fall,
        [
            "2026-11-01T05:45:00Z", // 01:45 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T06:15:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T06:45:00Z",
        ]
    );
    let spring = fires(&s, "2026-03-08T06:40:00Z", 2);
    assert_eq!(spring, ["2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z"]);
}

#[test]
fn second_pass_is_found_from_inside_the_first_pass() {
    // From 01:40 EDT the next */15 fire is 01:45 EDT, then 01:00 EST.
    let s = cron("*/15 * * * *", "America/New_York");
    let f = s.next_after(at("2026-11-01T05:40:00Z")).unwrap();
    assert_eq!(f.at, at("2026-11-01T05:45:00Z"));
    // From 01:50 EDT the next is 01:00 EST, a wall time already passed once.
    let f = s.next_after(at("2026-11-01T05:50:00Z")).unwrap();
    assert_eq!(f.at, at("2026-11-01T06:00:00Z"));
    assert!(matches!(f.dst, Some(DstNote::RepeatedSecondPass { .. })));
}

#[test]
fn wildcard_hour_with_fixed_minute_list_is_wildcard() {
    // `*/5 2 * * *`: the minute field starts with `*`, so Vixie calls it
    // wildcard: on spring-forward day hour 2 never exists and nothing fires.
    let s = cron("*/5 2 * * *", "America/New_York");
    let got = fires(&s, "2026-03-07T12:00:00Z", 1);
    assert_eq!(got, ["2026-03-09T06:00:00Z"]);
}

#[test]
fn london_both_transitions() {
    // 2026-03-29 01:00 GMT -> 02:00 BST (01:00Z); 2026-10-25 02:00 BST -> 01:00 GMT (01:00Z).
    let s = cron("30 1 * * *", "Europe/London");
    assert_eq!(
        fires(&s, "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    assert_eq!(
        fires(&s, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    let s = cron("*/30 * * * *", "Europe/London");
    assert_eq!(
        fires(&s, "2026-10-24T23:50:00Z", 4),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
        ]
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    // 2026-04-05 02:00 +11 -> 01:30 +10:30 (15:00Z on the 4th).
    let fixed = cron("45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(&fixed, "2026-04-04T12:00:00Z", 2),
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    let wild = cron("*/15 * * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(&wild, "2026-04-04T14:20:00Z", 5),
        [
            "2026-04-04T14:30:00Z", // 01:30 +11
            "2026-04-04T14:45:00Z", // 01:45 +11
            "2026-04-04T15:00:00Z", // 01:30 +10:30
            "2026-04-04T15:15:00Z", // 01:45 +10:30
            "2026-04-04T15:30:00Z", // 02:00 +10:30
        ]
    );
    // 2026-10-04 02:00 +10:30 -> 02:30 +11 (15:30Z on the 3rd).
    let fixed = cron("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(&fixed, "2026-10-02T12:00:00Z", 3),
        [
            "2026-10-02T15:45:00Z",
            "2026-10-03T15:30:00Z",
            "2026-10-04T15:15:00Z"
        ]
    );
    assert_eq!(
        fires(&wild, "2026-10-03T15:10:00Z", 2),
        ["2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z"]
    );
}

#[test]
fn sao_paulo_historical_midnight_transitions() {
    // 2018-11-04 00:00 -03 -> 01:00 -02: midnight did not exist.
    let s = cron("0 0 * * *", "America/Sao_Paulo");
    assert_eq!(
        fires(&s, "2018-11-02T12:00:00Z", 3),
        [
            "2018-11-03T03:00:00Z",
            "2018-11-04T03:00:00Z",
            "2018-11-05T02:00:00Z"
        ]
    );
    // 2019-02-17 00:00 -02 -> 2019-02-16 23:00 -03: 23:30 happened twice.
    let s = cron("30 23 * * *", "America/Sao_Paulo");
    assert_eq!(
        fires(&s, "2019-02-15T12:00:00Z", 3),
        [
            "2019-02-16T01:30:00Z",
            "2019-02-17T01:30:00Z",
            "2019-02-18T02:30:00Z"
        ]
    );
    // No DST since 2019: always -03.
    let s = cron("0 3 * * *", "America/Sao_Paulo");
    assert_eq!(
        fires(&s, "2026-11-01T00:00:00Z", 1),
        ["2026-11-01T06:00:00Z"]
    );
}

#[test]
fn leap_days_month_ends_and_impossible_dates() {
    let s = cron("0 0 29 2 *", "UTC");
    assert_eq!(
        fires(&s, "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
    let s = cron("0 0 L * *", "UTC");
    assert_eq!(
        fires(&s, "2028-01-15T00:00:00Z", 3),
        [
            "2028-01-31T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2028-03-31T00:00:00Z"
        ]
    );
    let s = cron("0 0 31 * *", "UTC");
    assert_eq!(
        fires(&s, "2026-03-31T12:00:00Z", 2),
        ["2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"]
    );
    let Schedule::Cron(feb30) = cron("0 0 30 2 *", "UTC") else {
        unreachable!()
    };
    assert!(!feb30.ever_fires);
    assert!(feb30.next_after(at("2026-01-01T00:00:00Z")).is_none());
}

#[test]
fn macros() {
    let after = "2026-11-21T12:34:56Z";
    let cases = [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-12-01T00:00:00Z"),
        ("@weekly", "2026-11-22T00:00:00Z"), // a Sunday
        ("@daily", "2026-11-22T00:00:00Z"),
        ("@midnight", "2026-11-22T00:00:00Z"),
        ("@hourly", "2026-11-21T13:00:00Z"),
    ];
    for (expr, want) in cases {
        assert_eq!(fires(&cron(expr, "UTC"), after, 1), [want], "{expr}");
    }
    assert!(CronSchedule::parse_cron("@reboot", Tz::UTC).is_err());
}

#[test]
fn vixie_or_for_cron_strings_celery_and_for_crontab_tables() {
    // Friday the 13th: Vixie fires on every 13th AND every Friday.
    let vixie = cron("0 0 13 * 5", "UTC");
    assert_eq!(
        fires(&vixie, "2026-11-01T00:00:00Z", 4),
        [
            "2026-11-06T00:00:00Z", // Friday
            "2026-11-13T00:00:00Z", // 13th and Friday
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
        ]
    );
    let celery = crontab("0", "0", "fri", "13", "*", "UTC");
    assert_eq!(
        fires(&celery, "2026-11-01T00:00:00Z", 2),
        ["2026-11-13T00:00:00Z", "2027-08-13T00:00:00Z"]
    );
}

#[test]
fn vixie_star_prefixed_day_field_means_and() {
    // Vixie sets DOM_STAR for `*/2`, so the day fields AND: odd days that are Mondays.
    let s = cron("0 0 */2 * 1", "UTC");
    assert_eq!(
        fires(&s, "2026-11-01T00:00:00Z", 2),
        ["2026-11-09T00:00:00Z", "2026-11-23T00:00:00Z"]
    );
}

#[test]
fn sunday_is_zero_and_seven_and_names_work() {
    let a = fires(&cron("0 9 * * 0", "UTC"), "2026-11-01T12:00:00Z", 3);
    let b = fires(&cron("0 9 * * 7", "UTC"), "2026-11-01T12:00:00Z", 3);
    let c = fires(&cron("0 9 * * SUN", "UTC"), "2026-11-01T12:00:00Z", 3);
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a[0], "2026-11-08T09:00:00Z");
    let d = fires(&cron("0 9 * JAN MON-FRI", "UTC"), "2026-12-31T12:00:00Z", 1);
    assert_eq!(d, ["2027-01-01T09:00:00Z"]);
}

/// croner turned `-SUN` into `-7` before `SUN` into `0`, so `SUN-SUN`
/// read as `0-7` and fired every day. A range whose ends are equal is that
/// one value, in every field, with names or numbers.
#[test]
fn a_range_whose_ends_are_equal_is_that_one_value() {
    // 2026-11-02 is a Monday.
    let sundays = [
        "2026-11-08T12:00:00Z",
        "2026-11-15T12:00:00Z",
        "2026-11-22T12:00:00Z",
    ];
    for expr in [
        "0 12 * * SUN-SUN",
        "0 12 * * sun-sun",
        "0 12 * * 0-0",
        "0 12 * * 7-7",
        "0 12 * * 0-SUN",
        "0 12 * * SUN-0",
        "0 12 * * SUN-SUN/2",
    ] {
        assert_eq!(
            fires(&cron(expr, "UTC"), "2026-11-02T00:00:00Z", 3),
            sundays,
            "{expr}"
        );
    }
    assert_eq!(
        fires(
            &crontab("0", "12", "sun-sun", "*", "*", "UTC"),
            "2026-11-02T00:00:00Z",
            3
        ),
        sundays
    );
    assert_eq!(
        fires(&cron("0 12 * * FRI-FRI", "UTC"), "2026-11-02T00:00:00Z", 2),
        ["2026-11-06T12:00:00Z", "2026-11-13T12:00:00Z"]
    );
    assert_eq!(
        fires(&cron("5-5 10 * * *", "UTC"), "2026-11-02T00:00:00Z", 2),
        ["2026-11-02T10:05:00Z", "2026-11-03T10:05:00Z"]
    );
    assert_eq!(
        fires(&cron("0 0 1 JAN-JAN *", "UTC"), "2026-11-02T00:00:00Z", 2),
        ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]
    );
    assert_eq!(
        fires(&cron("0 0 1 1-JAN *", "UTC"), "2026-11-02T00:00:00Z", 1),
        ["2027-01-01T00:00:00Z"]
    );
    // A range ending on Sunday still runs to the end of the week.
    let weekend = fires(&cron("0 12 * * SAT-SUN", "UTC"), "2026-11-02T00:00:00Z", 3);
    assert_eq!(
        weekend,
        [
            "2026-11-07T12:00:00Z",
            "2026-11-08T12:00:00Z",
            "2026-11-14T12:00:00Z"
        ]
    );
    assert_eq!(
        fires(&cron("0 12 * * MON-SUN", "UTC"), "2026-11-02T00:00:00Z", 7).len(),
        7
    );
    assert_eq!(
        fires(&cron("0 12 * * 5-SUN", "UTC"), "2026-11-02T00:00:00Z", 3),
        [
            "2026-11-06T12:00:00Z",
            "2026-11-07T12:00:00Z",
            "2026-11-08T12:00:00Z"
        ]
    );
}

/// croner replaced names anywhere in the pattern: `MON` as a minute was 1,
/// `JAN` as a weekday was Monday.
#[test]
fn a_name_outside_its_own_field_is_an_error() {
    for (expr, needle) in [
        ("MON * * * *", "names go in the month"),
        ("0 0 * * JAN", "is not a day name"),
        ("0 0 * SUN *", "is not a month name"),
        ("0 0 * * MONDAY", "is not a day name"),
    ] {
        let err = CronSchedule::parse_cron(expr, Tz::UTC)
            .err()
            .unwrap_or_else(|| panic!("{expr:?} parsed"));
        assert!(err.0.contains(needle), "{expr:?}: {}", err.0);
    }
}

#[test]
fn nth_weekday_last_weekday_and_nearest_weekday() {
    // Second Tuesday; last Friday; nearest weekday to the 1st.
    assert_eq!(
        fires(&cron("0 0 * * 2#2", "UTC"), "2026-11-01T00:00:00Z", 1),
        ["2026-11-10T00:00:00Z"]
    );
    assert_eq!(
        fires(&cron("0 0 * * 5L", "UTC"), "2026-11-01T00:00:00Z", 1),
        ["2026-11-27T00:00:00Z"]
    );
    // 2026-11-01 is a Sunday: 1W is Monday the 2nd.
    assert_eq!(
        fires(&cron("0 0 1W * *", "UTC"), "2026-10-31T00:00:00Z", 1),
        ["2026-11-02T00:00:00Z"]
    );
}

#[test]
fn seconds_field() {
    let s = cron("*/20 * * * * *", "UTC");
    assert_eq!(
        fires(&s, "2026-11-21T00:00:05Z", 3),
        [
            "2026-11-21T00:00:20Z",
            "2026-11-21T00:00:40Z",
            "2026-11-21T00:01:00Z"
        ]
    );
}

#[test]
fn bad_cron_strings_are_errors() {
    for bad in [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * *",
        "* 24 * * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 8",
        "abc * * * *",
        "@every 5m",
    ] {
        assert!(CronSchedule::parse_cron(bad, Tz::UTC).is_err(), "{bad:?}");
    }
}

#[test]
fn classification_follows_vixie() {
    let rule = |e: &str| CronSchedule::parse_cron(e, Tz::UTC).unwrap().dst;
    assert_eq!(rule("*/15 * * * *"), DstRule::Wildcard);
    assert_eq!(rule("0 * * * *"), DstRule::Wildcard);
    assert_eq!(rule("0 */2 * * *"), DstRule::Wildcard);
    assert_eq!(rule("*/5 2 * * *"), DstRule::Wildcard);
    assert_eq!(rule("@hourly"), DstRule::Wildcard);
    assert_eq!(rule("30 2 * * *"), DstRule::Fixed);
    assert_eq!(rule("0 1,2 * * *"), DstRule::Fixed);
    assert_eq!(rule("0 9-17/2 * * *"), DstRule::Fixed);
    assert_eq!(rule("@daily"), DstRule::Fixed);
}

#[test]
fn intervals_are_anchored_not_relative() {
    let hourly = Schedule::Interval(IntervalSchedule {
        every: Duration::hours(1),
        anchor: DateTime::UNIX_EPOCH,
    });
    assert_eq!(
        fires(&hourly, "2026-11-21T10:17:23Z", 2),
        ["2026-11-21T11:00:00Z", "2026-11-21T12:00:00Z"]
    );
    let phased = Schedule::Interval(IntervalSchedule {
        every: Duration::minutes(1),
        anchor: at("2026-01-01T00:00:30Z"),
    });
    assert_eq!(
        fires(&phased, "2025-06-01T00:00:00Z", 1),
        ["2025-06-01T00:00:30Z"],
        "instants before the anchor extend the same grid"
    );
    // Exactly on a grid point: the next one, never the same.
    assert_eq!(
        fires(&phased, "2026-11-21T00:00:30Z", 1),
        ["2026-11-21T00:01:30Z"]
    );
}

#[test]
fn an_instant_less_than_a_millisecond_before_the_anchor_fires_at_the_anchor() {
    let s = Schedule::Interval(IntervalSchedule {
        every: Duration::weeks(1),
        anchor: at("2026-11-20T09:00:00Z"),
    });
    assert_eq!(
        fires(&s, "2026-11-20T08:59:59.999999Z", 1),
        ["2026-11-20T09:00:00Z"]
    );
}

#[test]
fn intervals_never_see_dst() {
    let s = Schedule::Interval(IntervalSchedule {
        every: Duration::minutes(30),
        anchor: DateTime::UNIX_EPOCH,
    });
    assert_eq!(
        fires(&s, "2026-11-01T05:10:00Z", 4),
        [
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
        ]
    );
}

fn zones() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "UTC",
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
        "Pacific/Apia",
        "Asia/Kolkata",
    ])
}

fn exprs() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "* * * * *",
        "*/15 * * * *",
        "0 * * * *",
        "30 2 * * *",
        "30 1 * * *",
        "0 1,2 * * *",
        "0,30 0-3 * * *",
        "*/5 2 * * *",
        "0 0 * * *",
        "15 3 * * 1-5",
        "0 0 13 * 5",
        "0 0 L * *",
        "*/20 * * * * *",
        "@weekly",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn next_is_strictly_increasing(expr in exprs(), zone in zones(), secs in 1_230_000_000i64..2_000_000_000) {
        let s = cron(expr, zone);
        let mut t = DateTime::from_timestamp(secs, 0).unwrap();
        for _ in 0..50 {
            let f = s.next_after(t).unwrap();
            prop_assert!(f.at > t, "{expr} in {zone}: {} after {}", f.at, t);
            t = f.at;
        }
    }

    #[test]
    fn fires_do_not_depend_on_where_the_walk_starts(
        expr in exprs(),
        zone in zones(),
        secs in 1_230_000_000i64..2_000_000_000,
        skip in 0i64..7200,
    ) {
        let s = cron(expr, zone);
        let start = DateTime::from_timestamp(secs, 0).unwrap();
        let mut walk = Vec::new();
        let mut t = start;
        while t < start + Duration::hours(30) {
            let f = s.next_after(t).unwrap();
            walk.push(f.at);
            t = f.at;
        }
        // Starting anywhere inside the walk must land on the walk.
        let mid = start + Duration::seconds(skip * 7);
        let f = s.next_after(mid).unwrap();
        let expected = walk.iter().copied().find(|w| *w > mid);
        if let Some(e) = expected {
            prop_assert_eq!(f.at, e, "{} in {} from {}", expr, zone, mid);
        }
    }

    #[test]
    fn intervals_agree_from_any_start(every_s in 1i64..100_000, anchor in 0i64..2_000_000_000, a in 0i64..2_000_000_000, b in 0i64..2_000_000_000) {
        let s = IntervalSchedule { every: Duration::seconds(every_s), anchor: DateTime::from_timestamp(anchor, 0).unwrap() };
        let (lo, hi) = (a.min(b), a.max(b));
        let lo = DateTime::from_timestamp(lo, 0).unwrap();
        let hi = DateTime::from_timestamp(hi, 0).unwrap();
        let n = s.next_after(hi).unwrap();
        prop_assert!(n > hi);
        prop_assert!((n - s.anchor).num_seconds() % every_s == 0);
        prop_assert!(s.next_after(lo).unwrap() <= n);
    }
}

/// Entries share a parsed expression and its memo of the last answer: a
/// memo must answer only the question it was asked, and never show in the
/// schedule's `Debug`, which reloads compare.
#[test]
fn a_shared_schedule_answers_each_instant_as_if_asked_first() {
    let shared = CronSchedule::parse_cron("*/5 * * * *", tz("Europe/Paris")).unwrap();
    let before = format!("{shared:?}");
    let questions = [
        "2026-10-25T00:59:59Z",
        "2026-10-25T01:00:00Z",
        "2026-10-25T00:59:59Z",
        "2026-03-29T00:58:00Z",
        "2026-03-29T00:58:00Z",
    ];
    for q in questions {
        let fresh = CronSchedule::build(
            "fresh",
            "*/5 * * * *",
            "*/5",
            "*",
            true,
            DayRule::Vixie,
            tz("Europe/Paris"),
        )
        .unwrap();
        assert_eq!(
            shared.next_after(at(q)),
            fresh.search_after(at(q)),
            "after {q}"
        );
    }
    assert_eq!(format!("{shared:?}"), before);
}
