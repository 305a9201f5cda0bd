use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::*;
use crate::schedule::Schedule;
use crate::store::StoreError;
use crate::store::django::{CrontabRow, IntervalRow, SolarRow};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// A row as django-celery-beat writes it, saved at 2026-11-20 10:00:07Z.
fn row(name: &str) -> PeriodicTaskRow {
    PeriodicTaskRow {
        id: 7,
        name: name.into(),
        task: "app.tasks.t".into(),
        args: Some("[]".into()),
        kwargs: Some("{}".into()),
        headers: Some("{}".into()),
        enabled: true,
        date_changed: Some(at("2026-11-20T10:00:07Z")),
        ..Default::default()
    }
}

fn every(mut r: PeriodicTaskRow, n: i64, period: &str) -> PeriodicTaskRow {
    r.interval_id = Some(1);
    r.interval = Some(IntervalRow {
        every: n,
        period: period.into(),
    });
    r
}

fn crontab(mut r: PeriodicTaskRow, minute: &str, hour: &str, tz: &str) -> PeriodicTaskRow {
    r.crontab_id = Some(2);
    r.crontab = Some(CrontabRow {
        minute: minute.into(),
        hour: hour.into(),
        day_of_week: "*".into(),
        day_of_month: "*".into(),
        month_of_year: "*".into(),
        timezone: tz.into(),
    });
    r
}

fn clocked(mut r: PeriodicTaskRow, when: &str) -> PeriodicTaskRow {
    r.clocked_id = Some(3);
    r.clocked = Some(at(when));
    r.one_off = true;
    r
}

fn ok(r: &PeriodicTaskRow) -> Entry {
    let (e, d) = entry(r, "public", &Context::default());
    assert!(d.iter().all(|d| d.warning), "{d:?}");
    e.unwrap_or_else(|| panic!("no entry: {d:?}"))
}

fn errors(r: &PeriodicTaskRow) -> Vec<String> {
    let (e, d) = entry(r, "public", &Context::default());
    assert!(e.is_none(), "an entry from a bad row: {e:?}");
    d.iter()
        .filter(|d| !d.warning)
        .map(|d| d.to_string())
        .collect()
}

/// The first `n` fires after `from`, as the beat walks them.
fn fires(e: &Entry, from: &str, n: usize) -> Vec<String> {
    let mut t = at(from);
    let mut out = Vec::new();
    while out.len() < n {
        let Some(f) = e.next_after(t) else { break };
        out.push(f.at.to_rfc3339());
        t = f.at;
    }
    out
}

#[test]
fn a_crontab_row_keeps_celery_semantics_in_its_own_zone() {
    let mut r = crontab(row("paris"), "30", "9", "Europe/Paris");
    let e = ok(&r);
    assert_eq!(
        fires(&e, "2026-11-20T00:00:00Z", 2),
        ["2026-11-20T08:30:00+00:00", "2026-11-21T08:30:00+00:00"],
        "09:30 in Paris is 08:30 UTC in winter"
    );
    // Celery's rule, not Vixie's: the 13th AND a Friday.
    let c = r.crontab.as_mut().unwrap();
    c.day_of_month = "13".into();
    c.day_of_week = "fri".into();
    c.timezone = "UTC".into();
    let e = ok(&r);
    assert_eq!(
        fires(&e, "2026-01-01T00:00:00Z", 2),
        ["2026-02-13T09:30:00+00:00", "2026-03-13T09:30:00+00:00"]
    );
    // Django and Celery accept spaces after commas.
    let mut r = crontab(row("spaced"), "0, 30", "*", "UTC");
    r.crontab.as_mut().unwrap().hour = "1, 2".into();
    assert_eq!(
        fires(&ok(&r), "2026-11-20T00:00:00Z", 3),
        [
            "2026-11-20T01:00:00+00:00",
            "2026-11-20T01:30:00+00:00",
            "2026-11-20T02:00:00+00:00"
        ]
    );
}

#[test]
fn a_crontab_row_with_an_unknown_zone_is_an_error_naming_the_row() {
    let r = crontab(row("mars"), "0", "*", "Mars/Olympus");
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("public.django_celery_beat_periodictask id 7: entry 'mars': unknown timezone \"Mars/Olympus\""),
        "{}",
        e[0]
    );
}

#[test]
fn intervals_are_anchored_at_start_time_else_at_the_epoch() {
    let e = ok(&every(row("hourly"), 1, "hours"));
    assert_eq!(
        fires(&e, "2026-11-20T10:00:07Z", 2),
        ["2026-11-20T11:00:00+00:00", "2026-11-20T12:00:00+00:00"],
        "on the hour, whenever the row was saved"
    );
    let mut r = every(row("from-start"), 90, "minutes");
    r.start_time = Some(at("2026-11-21T09:15:00Z"));
    let e = ok(&r);
    assert_eq!(
        fires(&e, "2026-11-20T10:00:07Z", 3),
        [
            "2026-11-21T09:15:00+00:00",
            "2026-11-21T10:45:00+00:00",
            "2026-11-21T12:15:00+00:00"
        ],
        "the first at start_time, as django-celery-beat, then every 90 minutes from it"
    );
    let periods = [
        (2, "days", "2d"),
        (3, "hours", "3h"),
        (5, "minutes", "5m"),
        (30, "seconds", "30s"),
        (250_000, "microseconds", "250ms"),
    ];
    for (n, period, want) in periods {
        let e = ok(&every(row("p"), n, period));
        let Schedule::Interval(i) = &e.schedule else {
            panic!("not an interval")
        };
        assert_eq!(
            crate::schedule::duration::format_duration(i.every),
            want,
            "{n} {period}"
        );
    }
    for (n, period, needle) in [
        (1500, "microseconds", "whole milliseconds"),
        (0, "seconds", "must be at least 1"),
        (1, "fortnights", "interval period \"fortnights\""),
    ] {
        let e = errors(&every(row("p"), n, period));
        assert!(e[0].contains(needle), "{e:?}");
    }
}

#[test]
fn a_clocked_row_fires_once_at_its_time_even_when_saved_after_it() {
    let e = ok(&clocked(row("once"), "2026-11-25T12:00:00Z"));
    assert_eq!(
        fires(&e, "2026-11-20T00:00:00Z", 3),
        ["2026-11-25T12:00:00+00:00"]
    );
    // Saved after its time and never run: django-celery-beat sends it at
    // once; here the beat starts from just before the slot, and catch_up
    // sends it once.
    let mut r = clocked(row("late"), "2026-11-20T09:00:00Z");
    r.date_changed = Some(at("2026-11-20T10:00:07Z"));
    let e = ok(&r);
    assert_eq!(e.resume_from(), Some(at("2026-11-20T08:59:59.999999Z")));
    assert_eq!(
        fires(&e, &e.resume_from().unwrap().to_rfc3339(), 3),
        ["2026-11-20T09:00:00+00:00"]
    );
    // Run since: starts from the run, after the slot; nothing more.
    r.last_run_at = Some(at("2026-11-20T10:00:08Z"));
    let e = ok(&r);
    assert_eq!(
        fires(&e, &e.resume_from().unwrap().to_rfc3339(), 3),
        [""; 0]
    );
    // A start_time after the clocked time holds it until then.
    let mut r = clocked(row("held"), "2026-11-25T12:00:00Z");
    r.start_time = Some(at("2026-11-26T08:00:00Z"));
    assert_eq!(
        fires(&ok(&r), "2026-11-20T00:00:00Z", 3),
        ["2026-11-26T08:00:00+00:00"]
    );
}

#[test]
fn a_one_off_fires_at_its_first_slot_only_and_is_done_once_it_ran() {
    let mut r = every(row("once"), 10, "minutes");
    r.one_off = true;
    let e = ok(&r);
    assert!(e.enabled);
    assert_eq!(
        e.django().as_ref().map(|l| (l.id, l.one_off)),
        Some((7, true))
    );
    assert_eq!(
        fires(&e, "2026-11-20T10:00:07Z", 3),
        ["2026-11-20T10:10:00+00:00"],
        "the first slot after it was saved, and no other"
    );
    // django-celery-beat's rule: a one-off that ran is done, even if not
    // disabled yet (the beat that ran it stopped first).
    r.total_run_count = 1;
    r.last_run_at = Some(at("2026-11-20T10:10:00Z"));
    assert!(!ok(&r).enabled);
    // Enabled again in the admin: the count is 0 (the write-back resets
    // it, as django-celery-beat does) and it fires once more, at the first
    // slot after that save.
    r.total_run_count = 0;
    r.date_changed = Some(at("2026-11-22T08:03:00Z"));
    let e = ok(&r);
    assert!(e.enabled);
    assert_eq!(
        fires(&e, &e.resume_from().unwrap().to_rfc3339(), 3),
        ["2026-11-22T08:10:00+00:00"]
    );
}

#[test]
fn expires_ends_the_window_and_the_messages_expire_seconds_each_message() {
    let mut r = every(row("until"), 1, "hours");
    r.expires = Some(at("2026-11-20T12:30:00Z"));
    let e = ok(&r);
    assert_eq!(
        fires(&e, "2026-11-20T10:00:07Z", 5),
        ["2026-11-20T11:00:00+00:00", "2026-11-20T12:00:00+00:00"]
    );
    assert_eq!(
        e.expiry(at("2026-11-20T11:00:00Z")),
        Some(at("2026-11-20T12:30:00Z")),
        "django-celery-beat sends `expires` as the task's expiry"
    );
    let mut r = every(row("fresh"), 1, "hours");
    r.expire_seconds = Some(300);
    let e = ok(&r);
    assert_eq!(e.expires(), Some(Duration::seconds(300)));
    assert_eq!(
        e.expiry(at("2026-11-20T11:00:00Z")),
        Some(at("2026-11-20T11:05:00Z"))
    );
    r.expire_seconds = Some(0);
    assert_eq!(
        ok(&r).expires(),
        None,
        "0 is no expiry, as in django-celery-beat"
    );
    // An expiry before start_time: a valid row that never fires.
    let mut r = every(row("never"), 1, "hours");
    r.start_time = Some(at("2026-12-01T00:00:00Z"));
    r.expires = Some(at("2026-11-30T00:00:00Z"));
    assert_eq!(fires(&ok(&r), "2026-11-20T00:00:00Z", 3), [""; 0]);
}

#[test]
fn json_fields_queue_priority_and_headers_reach_the_entry() {
    let mut r = every(row("full"), 1, "minutes");
    r.args = Some(r#"[1, "two", {"three": 3}]"#.into());
    r.kwargs = Some(r#"{"account": 42}"#.into());
    r.headers = Some(r#"{"tenant": "acme"}"#.into());
    r.queue = Some("reports".into());
    r.priority = Some(7);
    let e = ok(&r);
    assert_eq!(json!(e.args()), json!([1, "two", {"three": 3}]));
    assert_eq!(json!(e.kwargs()), json!({"account": 42}));
    assert_eq!(json!(e.headers()), json!({"tenant": "acme"}));
    assert_eq!((&*e.queue, e.priority), ("reports", 7));
    assert_eq!(e.name, "full");
    // Empty text is unset, as django-celery-beat reads it.
    r.args = Some(String::new());
    r.headers = None;
    let e = ok(&r);
    assert!(e.args().is_empty() && e.headers().is_empty());
}

#[test]
fn bad_json_and_reserved_headers_are_errors_naming_the_row() {
    let mut r = every(row("broken"), 1, "minutes");
    r.args = Some(r#"[1, "tok-9f2c secret", "#.into());
    r.kwargs = Some("[]".into());
    let e = errors(&r);
    assert_eq!(e.len(), 1, "the JSON error first: {e:?}");
    assert_eq!(
        e[0],
        "public.django_celery_beat_periodictask id 7: entry 'broken': args is not valid JSON (EOF while parsing a value at line 1 column 22; 22 characters)"
    );
    r.args = Some("[1]".into());
    let e = errors(&r);
    assert!(e[0].contains("kwargs must be a table"), "{e:?}");
    r.kwargs = Some("{}".into());
    r.headers = Some(r#"{"periodic_task_name": "x", "eta": 1}"#.into());
    let e = errors(&r);
    assert!(
        e[0].contains("headers may not set \"eta\", \"periodic_task_name\"")
            || e[0].contains("headers may not set \"periodic_task_name\", \"eta\""),
        "{e:?}"
    );
}

#[test]
fn routing_key_names_the_queue_when_queue_is_unset_and_exchange_is_ignored() {
    let mut r = every(row("routed"), 1, "minutes");
    r.routing_key = Some("billing".into());
    assert_eq!(&*ok(&r).queue, "billing");
    r.queue = Some("reports".into());
    r.exchange = Some("celery".into());
    let (e, d) = entry(&r, "public", &Context::default());
    assert_eq!(&*e.unwrap().queue, "reports");
    let warnings: Vec<String> = d.iter().map(|d| d.message.clone()).collect();
    assert_eq!(
        warnings,
        [
            "exchange \"celery\" is ignored: SQS has no exchanges; the message goes to queue \"reports\"",
            "routing_key \"billing\" is ignored: on SQS the queue names the destination, and the message goes to queue \"reports\""
        ]
    );
    assert!(d.iter().all(|d| d.warning));
    assert_eq!(&*ok(&every(row("plain"), 1, "minutes")).queue, "celery");
}

#[test]
fn solar_rows_and_rows_without_one_schedule_are_set_aside() {
    let mut r = row("dawn");
    r.solar_id = Some(4);
    r.solar = Some(SolarRow {
        event: "sunrise".into(),
        latitude: "40.712800".into(),
        longitude: "-74.006000".into(),
    });
    assert_eq!(
        errors(&r),
        [
            "public.django_celery_beat_periodictask id 7: entry 'dawn': solar schedules (sunrise at 40.712800, -74.006000) are not supported; this row does not fire: use a crontab at the local time instead"
        ]
    );
    assert!(errors(&row("none"))[0].contains("no schedule"));
    let both = crontab(every(row("both"), 1, "minutes"), "0", "*", "UTC");
    assert!(errors(&both)[0].contains("not interval and crontab"));
    let mut dangling = row("dangling");
    dangling.interval_id = Some(99);
    assert!(errors(&dangling)[0].contains("interval_id 99 names no"));
}

#[test]
fn a_row_starts_from_its_last_run_or_change_whichever_is_later() {
    let mut r = every(row("r"), 1, "minutes");
    assert_eq!(ok(&r).resume_from(), Some(at("2026-11-20T10:00:07Z")));
    r.last_run_at = Some(at("2026-11-20T11:00:00Z"));
    assert_eq!(ok(&r).resume_from(), Some(at("2026-11-20T11:00:00Z")));
    r.date_changed = Some(at("2026-11-20T12:00:00Z"));
    assert_eq!(ok(&r).resume_from(), Some(at("2026-11-20T12:00:00Z")));
    // Never run, with a start_time: from just before it.
    let mut r = every(row("s"), 1, "minutes");
    r.start_time = Some(at("2026-11-19T00:00:00Z"));
    assert_eq!(
        ok(&r).resume_from(),
        Some(at("2026-11-18T23:59:59.999999Z"))
    );
}

#[test]
fn a_disabled_row_is_a_disabled_entry() {
    let mut r = every(row("off"), 1, "minutes");
    r.enabled = false;
    assert!(!ok(&r).enabled);
}

fn loaded(rows: Vec<PeriodicTaskRow>) -> Loaded {
    let rows: Vec<Result<PeriodicTaskRow, Unreadable>> = rows.into_iter().map(Ok).collect();
    validate(&rows, "public", &Context::default())
}

#[test]
fn a_bad_row_is_set_aside_alone_and_keeps_its_last_good_definition() {
    let before = loaded(vec![
        every(row("edited"), 5, "minutes"),
        every(row("steady"), 1, "minutes"),
    ]);
    assert!(!before.has_errors());
    let mut edited = row("edited");
    edited.solar_id = Some(1);
    let now = validate(
        &[
            Ok(edited),
            Ok(every(row("steady"), 1, "minutes")),
            Err(Unreadable {
                id: 12,
                name: "unreadable".into(),
                error: StoreError::Decode {
                    table: TABLE,
                    column: "expires".into(),
                    row: String::new(),
                    reason: "infinity is not an instant sqsbeat can use".into(),
                },
            }),
        ],
        "public",
        &Context::default(),
    );
    let (kept, errors) = set_aside_invalid(now, &before.entries);
    assert!(!kept.has_errors());
    let names: Vec<&str> = kept.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["steady", "edited"],
        "edited keeps its last good definition"
    );
    let named: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(named[1].starts_with("public.django_celery_beat_periodictask id 12: entry 'unreadable': cannot read table django_celery_beat_periodictask, column expires"), "{}", named[1]);
    // A new process has no last good definition: the row is just out.
    let mut solar = row("edited");
    solar.solar_id = Some(1);
    let (fresh, _) = set_aside_invalid(loaded(vec![solar]), &[]);
    assert!(fresh.entries.is_empty());
}

#[test]
fn a_row_named_like_a_file_or_table_entry_is_set_aside_naming_both_places() {
    let ctx = Context::default();
    let files = crate::entry::file::parse_str(
        "schedules/app.toml",
        "[entries.x]\ntask = \"app.file\"\nevery = \"1m\"\n",
        &ctx,
    );
    let mut table = Loaded::default();
    table.names.push((
        "y".into(),
        Origin {
            file: crate::entry::merge::SOURCE.into(),
            line: 0,
        },
    ));
    let others = crate::entry::merge::merge(files, table);
    let rows = loaded(vec![
        every(row("x"), 5, "minutes"),
        every(row("y"), 5, "minutes"),
        every(row("z"), 5, "minutes"),
    ]);
    let (rows, errors) = set_aside_clashes(&others, rows);
    let text: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text,
        [
            "public.django_celery_beat_periodictask id 7: entry 'x': also defined in schedules/app.toml:1; that definition fires and this row is not loaded (rename one of them)",
            "public.django_celery_beat_periodictask id 7: entry 'y': also defined in the database entries table; that definition fires and this row is not loaded (rename one of them)",
        ]
    );
    let all = merge(others, rows);
    assert!(!all.has_errors(), "{:?}", all.diagnostics);
    let x: Vec<&Entry> = all.entries.iter().filter(|e| e.name == "x").collect();
    assert_eq!(x.len(), 1);
    assert_eq!(&*x[0].task, "app.file", "the file's definition fires");
    assert!(
        all.entries
            .iter()
            .any(|e| e.name == "z" && e.django().is_some())
    );
}
