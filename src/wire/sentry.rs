//! Sentry Crons, as sentry-sdk's Celery beat integration speaks it
//! (`sentry_sdk/integrations/celery/beat.py`, sentry-sdk 2.75): the
//! monitor an entry stands for, the headers its fires carry, and the
//! `in_progress` check-in celery beat sends when it fires.
//!
//! Under celery beat with `CeleryIntegration(monitor_beat_tasks=True)`,
//! beat sends an `in_progress` check-in for each fire and adds the
//! monitor's slug, config and check-in id to the message headers; the
//! worker's integration reads them back when the task ends and sends `ok`
//! or `error` with the same check-in id. Fires of an entry with
//! `sentry_monitor = true` carry the same headers, so an unmodified worker
//! closes the check-ins it closed under beat; with `[sentry] dsn` set, the
//! leader sends the `in_progress` check-in too.
//!
//! Pure: the caller passes the task id and the send instant.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

/// What the fires of a monitored entry tell Sentry: computed once, when
/// the entry is validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitor {
    /// The entry name, as sentry-sdk sends beat's entry name: Sentry
    /// slugifies it on ingestion, so the same name reaches the same
    /// monitor under beat and under sqsbeat.
    pub slug: String,
    /// `{"schedule": {...}, "timezone": "..."}`, keys in sentry-sdk's order.
    pub config: Value,
}

/// An entry's schedule, as Sentry Crons can describe it.
#[derive(Debug, Clone, Copy)]
pub enum MonitorSchedule<'a> {
    /// A Celery `crontab()` table's fields, as written.
    Crontab {
        minute: &'a str,
        hour: &'a str,
        day_of_week: &'a str,
        day_of_month: &'a str,
        month_of_year: &'a str,
    },
    /// A cron string, macros already expanded.
    Cron(&'a str),
    Every(Duration),
}

/// A schedule Sentry Crons cannot describe: the entry fires without the
/// headers, as celery beat's integration leaves such an entry unmonitored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "Sentry Crons does not take intervals shorter than one minute ({0}s); the entry fires without Sentry headers"
    )]
    ShortInterval(i64),
    #[error(
        "Sentry Crons takes intervals of whole minutes only ({0} ms); the entry fires without Sentry headers"
    )]
    PartMinute(i64),
    #[error(
        "Sentry Crons takes 5-field crontabs; {0:?} has a seconds field other than 0, so the entry fires without Sentry headers"
    )]
    Seconds(String),
}

/// The units sentry-sdk expresses an interval in, largest first
/// (`sentry_sdk/crons/utils.py`).
const UNITS: [(&str, i64); 3] = [("day", 86_400), ("hour", 3_600), ("minute", 60)];

impl Monitor {
    /// The monitor of entry `name` firing on `schedule` in `tz`, as
    /// sentry-sdk's `_get_monitor_config` computes it for the Celery
    /// schedule a beat user would have written.
    pub fn new(name: &str, schedule: MonitorSchedule<'_>, tz: Tz) -> Result<Self, Unsupported> {
        let schedule = match schedule {
            MonitorSchedule::Crontab {
                minute,
                hour,
                day_of_week,
                day_of_month,
                month_of_year,
            } => json!({
                "type": "crontab",
                "value": format!("{minute} {hour} {day_of_month} {month_of_year} {day_of_week}"),
            }),
            MonitorSchedule::Cron(pattern) => {
                json!({"type": "crontab", "value": five_fields(pattern)?})
            }
            MonitorSchedule::Every(every) => interval(every)?,
        };
        Ok(Monitor {
            slug: name.to_string(),
            config: json!({"schedule": schedule, "timezone": tz.name()}),
        })
    }

    /// The headers of one fire, in the order sentry-sdk adds them. The
    /// check-in id is the task id's hex (any UUID is a valid check-in id),
    /// so a re-send of the same fire updates the same check-in. The
    /// integration also nests them under a `headers` header (Celery
    /// issue 4875: a worker's `task.request.headers` is that one), where
    /// the worker looks first.
    pub fn headers(&self, task_id: &str, sent_at: DateTime<Utc>) -> Vec<(String, Value)> {
        let own = [
            ("sentry-monitor-slug", Value::from(self.slug.clone())),
            ("sentry-monitor-config", self.config.clone()),
            ("sentry-monitor-check-in-id", check_in_id(task_id).into()),
            (
                "sentry-monitor-start-timestamp-s",
                epoch_seconds(sent_at).into(),
            ),
        ];
        let nested: Map<String, Value> = own
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        own.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([("headers".to_string(), Value::Object(nested))])
            .collect()
    }

    /// The `in_progress` check-in celery beat sends for a fire.
    pub fn in_progress(&self, task_id: &str, environment: &str) -> Value {
        json!({
            "check_in_id": check_in_id(task_id),
            "monitor_slug": self.slug,
            "status": "in_progress",
            "environment": environment,
            "monitor_config": self.config,
        })
    }
}

/// Header names a monitored entry's own headers may not use.
pub fn is_own_header(name: &str) -> bool {
    name == "headers" || name.starts_with("sentry-monitor-")
}

/// The check-in id of a fire: its task id as 32 hex digits, the form
/// sentry-sdk writes (`uuid4().hex`).
pub fn check_in_id(task_id: &str) -> String {
    task_id.replace('-', "")
}

/// `"%.9f" % time.time()`, as sentry-sdk writes the start timestamp.
fn epoch_seconds(t: DateTime<Utc>) -> String {
    format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())
}

fn five_fields(pattern: &str) -> Result<String, Unsupported> {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    match fields.as_slice() {
        [_, _, _, _, _] => Ok(fields.join(" ")),
        // A seconds field of 0 fires on the minute: a plain crontab.
        ["0", rest @ ..] if rest.len() == 5 => Ok(rest.join(" ")),
        _ => Err(Unsupported::Seconds(pattern.to_string())),
    }
}

fn interval(every: Duration) -> Result<Value, Unsupported> {
    let ms = every.num_milliseconds();
    if ms < 60_000 {
        return Err(Unsupported::ShortInterval(ms / 1000));
    }
    if ms % 1000 != 0 {
        return Err(Unsupported::PartMinute(ms));
    }
    let secs = ms / 1000;
    UNITS
        .iter()
        .find(|(_, unit)| secs % unit == 0)
        .map(|(name, unit)| json!({"type": "interval", "value": secs / unit, "unit": name}))
        .ok_or(Unsupported::PartMinute(ms))
}

/// A Sentry DSN: `{scheme}://{public_key}@{host}{path}/{project_id}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    scheme: String,
    public_key: String,
    /// Host and port, as written.
    host: String,
    path: String,
    project_id: String,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dsn({}://<key>@{})", self.scheme, self.host)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a Sentry DSN ({0}); copy it from Sentry's project settings, e.g. https://<key>@o1.ingest.sentry.io/42"
)]
pub struct DsnError(&'static str);

impl Dsn {
    pub fn parse(text: &str) -> Result<Dsn, DsnError> {
        let (scheme, rest) = text.trim().split_once("://").ok_or(DsnError("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(DsnError("the scheme is not http or https"));
        }
        let (key, rest) = rest.split_once('@').ok_or(DsnError("no key"))?;
        // A secret key after ':' is legacy and not needed for envelopes.
        let public_key = key.split(':').next().unwrap_or_default();
        let (host, path) = rest.split_once('/').ok_or(DsnError("no project id"))?;
        let (path, project_id) = match path.rsplit_once('/') {
            Some((p, id)) => (format!("/{p}"), id),
            None => (String::new(), path),
        };
        let project_id = project_id.trim_end_matches('/');
        if public_key.is_empty() || host.is_empty() {
            return Err(DsnError("no key or host"));
        }
        if project_id.is_empty() || !project_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DsnError("the project id is not a number"));
        }
        Ok(Dsn {
            scheme: scheme.to_string(),
            public_key: public_key.to_string(),
            host: host.to_string(),
            path,
            project_id: project_id.to_string(),
        })
    }

    /// Where envelopes are posted.
    pub fn envelope_url(&self) -> String {
        format!(
            "{}://{}{}/api/{}/envelope/",
            self.scheme, self.host, self.path, self.project_id
        )
    }

    /// The `X-Sentry-Auth` header.
    pub fn auth_header(&self, client: &str) -> String {
        format!(
            "Sentry sentry_version=7, sentry_key={}, sentry_client={client}",
            self.public_key
        )
    }
}

/// An envelope holding one check-in: a header line, an item header, the
/// item.
pub fn check_in_envelope(check_in: &Value, sent_at: DateTime<Utc>) -> String {
    let item = check_in.to_string();
    format!(
        "{}\n{}\n{item}\n",
        json!({"sent_at": sent_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}),
        json!({"type": "check_in", "length": item.len()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn intervals_take_the_largest_unit_that_divides_them() {
        let cfg = |d: Duration| {
            Monitor::new("e", MonitorSchedule::Every(d), Tz::UTC)
                .map(|m| m.config["schedule"].clone())
        };
        assert_eq!(
            cfg(Duration::minutes(90)).unwrap(),
            json!({"type": "interval", "value": 90, "unit": "minute"})
        );
        assert_eq!(
            cfg(Duration::hours(48)).unwrap(),
            json!({"type": "interval", "value": 2, "unit": "day"})
        );
        assert_eq!(
            cfg(Duration::weeks(1)).unwrap(),
            json!({"type": "interval", "value": 7, "unit": "day"})
        );
        assert_eq!(
            cfg(Duration::seconds(30)),
            Err(Unsupported::ShortInterval(30))
        );
        assert_eq!(
            cfg(Duration::seconds(90)),
            Err(Unsupported::PartMinute(90_000))
        );
    }

    #[test]
    fn cron_strings_become_five_field_crontabs() {
        let value = |p: &str| {
            Monitor::new("e", MonitorSchedule::Cron(p), Tz::UTC)
                .map(|m| m.config["schedule"]["value"].clone())
        };
        assert_eq!(value("*/5  3 * * MON-FRI").unwrap(), "*/5 3 * * MON-FRI");
        assert_eq!(value("0 */5 3 * * *").unwrap(), "*/5 3 * * *");
        assert!(matches!(
            value("30 */5 3 * * *"),
            Err(Unsupported::Seconds(_))
        ));
    }

    #[test]
    fn a_fire_carries_the_headers_top_level_and_nested() {
        let m = Monitor::new(
            "Nightly report",
            MonitorSchedule::Crontab {
                minute: "0",
                hour: "3",
                day_of_week: "*",
                day_of_month: "*",
                month_of_year: "*",
            },
            "Europe/London".parse().unwrap(),
        )
        .unwrap();
        let h = m.headers(
            "0b6c1d2e-3f40-5a6b-8c7d-9e0f1a2b3c4d",
            at("2026-11-21T03:00:00.25Z"),
        );
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "sentry-monitor-slug",
                "sentry-monitor-config",
                "sentry-monitor-check-in-id",
                "sentry-monitor-start-timestamp-s",
                "headers"
            ]
        );
        assert_eq!(h[2].1, "0b6c1d2e3f405a6b8c7d9e0f1a2b3c4d");
        assert_eq!(h[3].1, "1795230000.250000000");
        assert_eq!(
            h[1].1,
            json!({"schedule": {"type": "crontab", "value": "0 3 * * *"}, "timezone": "Europe/London"})
        );
        let nested = h[4].1.as_object().unwrap();
        assert_eq!(nested.len(), 4);
        assert_eq!(nested["sentry-monitor-slug"], "Nightly report");
    }

    /// What sentry-sdk 2.75's own beat integration computes, on a real
    /// Celery beat (tests/fixtures/sentry-crons/generate.py), for each
    /// case's schedule; sqsbeat reads the same entry from its TOML.
    #[test]
    fn matches_sentry_sdk_beat_integration_on_every_case() {
        use crate::wire::celery::python_json;
        let fixture: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/sentry-crons/cases.json"))
                .unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        let sent_at = at("2026-11-21T03:00:00Z");
        for case in cases {
            let toml = case["toml"].as_str().unwrap();
            let loaded = crate::entry::file::parse_str(
                "cases.toml",
                toml,
                &crate::entry::Context::default(),
            );
            assert!(!loaded.has_errors(), "{toml}: {:?}", loaded.diagnostics);
            let entry = &loaded.entries[0];
            let want = &case["monitor_headers"];
            let Some(monitor) = entry.sentry_monitor() else {
                assert!(want.get("sentry-monitor-slug").is_none(), "{toml}");
                assert!(case["check_in"].is_null());
                assert!(
                    loaded
                        .diagnostics
                        .iter()
                        .any(|d| d.warning && d.message.contains("Sentry")),
                    "{toml}: {:?}",
                    loaded.diagnostics
                );
                continue;
            };
            let ours: Map<String, Value> = monitor
                .headers("0b6c1d2e-3f40-5a6b-8c7d-9e0f1a2b3c4d", sent_at)
                .into_iter()
                .collect();
            let keys = |m: &Map<String, Value>| {
                let mut k: Vec<String> = m
                    .keys()
                    .filter(|k| k.starts_with("sentry-monitor-"))
                    .cloned()
                    .collect();
                k.sort();
                k
            };
            let want_map = want.as_object().unwrap();
            assert_eq!(keys(&ours), keys(want_map), "{toml}");
            assert_eq!(
                serde_json::to_value(keys(ours["headers"].as_object().unwrap())).unwrap(),
                case["nested_monitor_headers"],
                "{toml}"
            );
            for k in ["sentry-monitor-slug", "sentry-monitor-config"] {
                // Key order too: the bytes on the wire are the same.
                assert_eq!(python_json(&ours[k]), python_json(&want[k]), "{toml}: {k}");
            }
            let check_in =
                monitor.in_progress("0b6c1d2e-3f40-5a6b-8c7d-9e0f1a2b3c4d", "production");
            for k in ["monitor_slug", "status", "monitor_config", "environment"] {
                assert_eq!(
                    python_json(&check_in[k]),
                    python_json(&case["check_in"][k]),
                    "{toml}: check-in {k}"
                );
            }
        }
    }

    #[test]
    fn dsn_gives_the_envelope_endpoint_and_auth() {
        let d = Dsn::parse("https://abc123@o7.ingest.sentry.io/4501").unwrap();
        assert_eq!(
            d.envelope_url(),
            "https://o7.ingest.sentry.io/api/4501/envelope/"
        );
        assert_eq!(
            d.auth_header("sqsbeat/1"),
            "Sentry sentry_version=7, sentry_key=abc123, sentry_client=sqsbeat/1"
        );
        let d = Dsn::parse("http://k:legacy@127.0.0.1:9000/sub/path/7").unwrap();
        assert_eq!(
            d.envelope_url(),
            "http://127.0.0.1:9000/sub/path/api/7/envelope/"
        );
        assert!(!format!("{d:?}").contains("legacy"));
        for bad in [
            "",
            "abc",
            "ftp://k@h/1",
            "https://h/1",
            "https://k@h/",
            "https://k@h/x",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_envelope_is_three_lines_with_the_item_length() {
        let m = Monitor::new("e", MonitorSchedule::Every(Duration::hours(1)), Tz::UTC).unwrap();
        let body = check_in_envelope(
            &m.in_progress("0b6c1d2e-3f40-5a6b-8c7d-9e0f1a2b3c4d", "production"),
            at("2026-11-21T03:00:00Z"),
        );
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 3);
        let item: Value = serde_json::from_str(lines[2]).unwrap();
        let header: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(header["type"], "check_in");
        assert_eq!(header["length"], lines[2].len());
        assert_eq!(item["status"], "in_progress");
        assert_eq!(item["check_in_id"], "0b6c1d2e3f405a6b8c7d9e0f1a2b3c4d");
    }
}
