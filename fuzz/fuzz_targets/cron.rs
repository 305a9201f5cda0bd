//! Cron strings and Celery crontab fields: parse, then walk a few fires
//! across a DST zone. Must never panic or loop.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use sqsbeat::schedule::{CronSchedule, CrontabFields, Schedule};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (zone, expr) = match text.split_once('|') {
        Some((z, e)) => (z.parse().unwrap_or(chrono_tz::Tz::America__New_York), e),
        None => (chrono_tz::Tz::America__New_York, text),
    };
    let mut parsed = Vec::new();
    if let Ok(c) = CronSchedule::parse_cron(expr, zone) {
        parsed.push(c);
    }
    let f: Vec<&str> = expr.split_whitespace().collect();
    if f.len() == 5 {
        let fields = CrontabFields {
            minute: f[0].into(),
            hour: f[1].into(),
            day_of_month: f[2].into(),
            month_of_year: f[3].into(),
            day_of_week: f[4].into(),
        };
        if let Ok(c) = CronSchedule::parse_crontab(&fields, zone) {
            parsed.push(c);
        }
    }
    for c in parsed {
        let s = Schedule::Cron(c);
        let mut at: DateTime<Utc> = DateTime::from_timestamp(1_793_000_000, 0).unwrap_or_default();
        for _ in 0..4 {
            match s.next_after(at) {
                Some(fire) => {
                    assert!(fire.at > at, "fires must move forward");
                    at = fire.at;
                }
                None => break,
            }
        }
    }
});
