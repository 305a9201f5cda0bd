//! `sqsbeat.toml` and `SQSBEAT_<SECTION>_<KEY>` environment variables →
//! a validated `Config`.
//!
//! Precedence: command-line flag > environment > file > default. The file
//! is parsed to a TOML table, environment values are laid over it key by
//! key, and only then is it deserialized (unknown keys rejected) and
//! validated, so a setting behaves the same from either source.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::Duration;
use chrono_tz::Tz;
use serde::Deserialize;

use crate::schedule::duration::parse_duration;
use crate::wire::celery::BodyEncoding;

/// What a setting's value is, for reading it from an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Bool,
    Int,
    /// Comma-separated list.
    List,
    Secret,
}

/// One documented setting. The README's configuration reference is this table.
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        section: "sqs",
        key: "endpoint_url",
        kind: Kind::Text,
        default: "(AWS)",
        help: "custom SQS endpoint (moto, ElasticMQ, LocalStack); also AWS_ENDPOINT_URL_SQS",
    },
    Setting {
        section: "sqs",
        key: "region",
        kind: Kind::Text,
        default: "(AWS chain)",
        help: "AWS region; else AWS_REGION / profile / instance metadata",
    },
    Setting {
        section: "sqs",
        key: "queue_name_prefix",
        kind: Kind::Text,
        default: "\"\"",
        help: "prefix added to every logical queue name before mangling (kombu's queue_name_prefix)",
    },
    Setting {
        section: "sqs",
        key: "create_missing_queues",
        kind: Kind::Bool,
        default: "false",
        help: "create a queue that does not exist instead of failing its sends",
    },
    Setting {
        section: "sqs",
        key: "base64_encoding",
        kind: Kind::Bool,
        default: "true",
        help: "base64 the SQS body as kombu does (kombu's sqs_base64_encoding)",
    },
    Setting {
        section: "sqs",
        key: "max_message_bytes",
        kind: Kind::Int,
        default: "1048576",
        help: "refuse messages larger than this (the queue's MaximumMessageSize)",
    },
    Setting {
        section: "sqs",
        key: "queues",
        kind: Kind::Text,
        default: "{}",
        help: "predefined queue URLs keyed by SQS queue name: [sqs.queues] celery = \"https://...\" (file only)",
    },
    Setting {
        section: "schedules",
        key: "paths",
        kind: Kind::List,
        default: "[\"schedules\"]",
        help: "schedule files or directories of *.toml files",
    },
    Setting {
        section: "schedules",
        key: "timezone",
        kind: Kind::Text,
        default: "\"UTC\"",
        help: "zone for entries that name none",
    },
    Setting {
        section: "database",
        key: "url",
        kind: Kind::Secret,
        default: "(none)",
        help: "PostgreSQL URL; also DATABASE_URL",
    },
    Setting {
        section: "database",
        key: "path",
        kind: Kind::Text,
        default: "\"sqsbeat.db\"",
        help: "SQLite file used when no url is set (one replica)",
    },
    Setting {
        section: "database",
        key: "schema",
        kind: Kind::Text,
        default: "\"sqsbeat\"",
        help: "PostgreSQL schema holding sqsbeat's tables",
    },
    Setting {
        section: "database",
        key: "ledger_retention",
        kind: Kind::Text,
        default: "\"30d\"",
        help: "how long settled ledger rows are kept (pruned hourly by the leader)",
    },
    Setting {
        section: "http",
        key: "addr",
        kind: Kind::Text,
        default: "\"127.0.0.1:9405\"",
        help: "address of the status page (/), /api/status, /healthz, /readyz and /metrics",
    },
    Setting {
        section: "releaser",
        key: "window",
        kind: Kind::Text,
        default: "\"15m\"",
        help: "how long before its due instant a one-off job goes to SQS with DelaySeconds (at most 15m)",
    },
    Setting {
        section: "django_celery_beat",
        key: "enabled",
        kind: Kind::Bool,
        default: "false",
        help: "also fire django-celery-beat's PeriodicTask rows from the PostgreSQL database in [database] url",
    },
    Setting {
        section: "django_celery_beat",
        key: "schema",
        kind: Kind::Text,
        default: "\"public\"",
        help: "PostgreSQL schema holding Django's django_celery_beat_* tables",
    },
    Setting {
        section: "intake",
        key: "queue",
        kind: Kind::Text,
        default: "(none)",
        help: "logical queue to read Celery tasks diverted by sqsbeat_celery.install(app) from, each kept as a one-off job (python/INTAKE.md); [sqs] queue_name_prefix applies",
    },
    Setting {
        section: "metrics",
        key: "per_entry_limit",
        kind: Kind::Int,
        default: "1000",
        help: "most entries with series of their own on /metrics (by name); the rest count under entry=\"_other\"",
    },
    Setting {
        section: "sentry",
        key: "dsn",
        kind: Kind::Secret,
        default: "(none)",
        help: "Sentry DSN: the leader sends the in_progress check-in of each fire of a sentry_monitor entry, as celery beat's Sentry integration does",
    },
    Setting {
        section: "sentry",
        key: "environment",
        kind: Kind::Text,
        default: "\"production\"",
        help: "Sentry environment of those check-ins: the workers' (sentry-sdk's `environment`)",
    },
];

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sqs: RawSqs,
    #[serde(default)]
    schedules: RawSchedules,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    releaser: RawReleaser,
    #[serde(default)]
    django_celery_beat: RawDjangoCeleryBeat,
    #[serde(default)]
    intake: RawIntake,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    sentry: RawSentry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqs {
    endpoint_url: Option<String>,
    region: Option<String>,
    queue_name_prefix: Option<String>,
    create_missing_queues: Option<bool>,
    base64_encoding: Option<bool>,
    max_message_bytes: Option<i64>,
    #[serde(default)]
    queues: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedules {
    paths: Option<Vec<String>>,
    timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    path: Option<String>,
    schema: Option<String>,
    ledger_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReleaser {
    window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDjangoCeleryBeat {
    enabled: Option<bool>,
    schema: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    per_entry_limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntake {
    queue: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSentry {
    dsn: Option<String>,
    environment: Option<String>,
}

/// A value that must never reach a log line, `Debug` output included.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub queue_name_prefix: String,
    pub create_missing_queues: bool,
    pub body_encoding: BodyEncoding,
    pub max_message_bytes: usize,
    /// Predefined queue URLs, keyed by the mangled SQS name.
    pub queues: BTreeMap<String, String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sqs: SqsConfig,
    pub schedule_paths: Vec<PathBuf>,
    /// Whether `schedule_paths` were named (config file or environment):
    /// a named path must exist; the default `schedules` may be absent.
    pub schedule_paths_named: bool,
    pub timezone: Tz,
    pub database_url: Option<Secret>,
    pub database_schema: String,
    /// The SQLite file used when there is no database URL.
    pub database_path: PathBuf,
    pub ledger_retention: Duration,
    pub http_addr: String,
    pub release_window: Duration,
    /// The intake queue's logical name (`[intake] queue`): `None`, no
    /// intake. Its SQS name follows `[sqs] queue_name_prefix` and kombu's
    /// mangling, as on the application's side.
    pub intake_queue: Option<String>,
    /// `[django_celery_beat] enabled`: django-celery-beat's tables as a
    /// source of entries, in the database of `database_url`.
    pub django_celery_beat: Option<DjangoCeleryBeat>,
    /// Most entries with per-entry metric series.
    pub metrics_per_entry_limit: usize,
    pub sentry: SentryConfig,
}

/// Where django-celery-beat's tables are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DjangoCeleryBeat {
    /// The PostgreSQL schema of Django's tables (`public` unless Django's
    /// connection sets another `search_path`).
    pub schema: String,
}

/// Where the leader sends Sentry Crons check-ins, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct SentryConfig {
    pub dsn: Option<Secret>,
    pub environment: String,
}

/// Default of `[metrics] per_entry_limit`: 4 series per entry (sent,
/// failed, last sent, next fire) stay near 4 000, well inside what one
/// Prometheus target is expected to expose.
pub const DEFAULT_PER_ENTRY_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: invalid TOML at line {line}: {message}")]
    Toml {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

/// The environment variable name of a setting.
pub fn env_name(section: &str, key: &str) -> String {
    format!("SQSBEAT_{}_{}", section.to_uppercase(), key.to_uppercase())
}

/// Builds the configuration from the file's text (if any) and an
/// environment lookup. Pure: the caller supplies both.
pub fn parse(
    file: &str,
    text: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = match text {
        None => toml::Table::new(),
        Some(t) => t.parse().map_err(|e: toml::de::Error| ConfigError::Toml {
            file: file.to_string(),
            line: e
                .span()
                .map_or(1, |s| t[..s.start.min(t.len())].matches('\n').count() + 1),
            message: e.message().trim().to_string(),
        })?,
    };
    for s in SETTINGS {
        let var = env_name(s.section, s.key);
        let value = env(&var).or_else(|| match (s.section, s.key) {
            ("database", "url") => {
                env("DATABASE_URL").filter(|_| !table_has(&table, "database", "url"))
            }
            _ => None,
        });
        let Some(value) = value else { continue };
        let bad = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let v = match s.kind {
            Kind::Text | Kind::Secret => toml::Value::String(value),
            Kind::Bool => match value.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
                "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
                _ => return Err(bad(format!("expected true or false, got {value:?}"))),
            },
            Kind::Int => toml::Value::Integer(
                value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("expected a whole number, got {value:?}")))?,
            ),
            Kind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| toml::Value::String(p.into()))
                    .collect(),
            ),
        };
        if s.key == "queues" {
            return Err(bad(
                "predefined queues can only be set in the config file".into()
            ));
        }
        let section = table
            .entry(s.section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section {
            toml::Value::Table(t) => {
                t.insert(s.key.to_string(), v);
            }
            _ => {
                return Err(ConfigError::Invalid {
                    file: file.into(),
                    message: format!("[{}] must be a table", s.section),
                });
            }
        }
    }
    let raw: RawConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            file: file.into(),
            message: e.message().trim().to_string(),
        })?;
    validate(file, raw)
}

fn table_has(t: &toml::Table, section: &str, key: &str) -> bool {
    t.get(section)
        .and_then(|s| s.as_table())
        .is_some_and(|s| s.contains_key(key))
}

fn validate(file: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        file: file.to_string(),
        message,
    };
    let timezone = match raw.schedules.timezone.as_deref() {
        None => Tz::UTC,
        Some(z) => z
            .parse()
            .map_err(|_| invalid(format!("[schedules] timezone: unknown timezone {z:?}")))?,
    };
    let release_window = release_window(&raw.releaser).map_err(invalid)?;
    let ledger_retention = match raw.database.ledger_retention.as_deref() {
        None => Duration::days(30),
        Some(r) => match parse_duration(r) {
            Ok(d) if d >= Duration::hours(1) => d,
            Ok(_) => {
                return Err(invalid(format!(
                    "[database] ledger_retention = {r:?}: keep at least 1h"
                )));
            }
            Err(e) => return Err(invalid(format!("[database] ledger_retention: {e}"))),
        },
    };
    let max_message_bytes = match raw.sqs.max_message_bytes {
        None => crate::wire::limits::SQS_MAX_MESSAGE_BYTES,
        Some(n) if (1024..=crate::wire::limits::SQS_MAX_MESSAGE_BYTES as i64).contains(&n) => {
            n as usize
        }
        Some(n) => {
            return Err(invalid(format!(
                "[sqs] max_message_bytes = {n}: must be 1024..=1048576"
            )));
        }
    };
    let has_url = raw.database.url.as_ref().is_some_and(|u| !u.is_empty());
    let django_celery_beat =
        django_celery_beat(&raw.django_celery_beat, has_url).map_err(invalid)?;
    let intake_queue = raw.intake.queue.filter(|q| !q.is_empty());
    if let Some(q) = &intake_queue {
        crate::wire::limits::check_queue_name(q)
            .map_err(|e| invalid(format!("[intake] queue: {e}")))?;
    }
    let metrics_per_entry_limit = per_entry_limit(&raw.metrics).map_err(invalid)?;
    let sentry = sentry_config(raw.sentry).map_err(invalid)?;
    for (name, url) in &raw.sqs.queues {
        if name.ends_with(".fifo") != url.ends_with(".fifo") {
            return Err(invalid(format!(
                "[sqs.queues] {name} = {url:?}: a FIFO queue's name and URL must both end in .fifo"
            )));
        }
    }
    Ok(Config {
        sqs: SqsConfig {
            endpoint_url: raw.sqs.endpoint_url.filter(|u| !u.is_empty()),
            region: raw.sqs.region.filter(|r| !r.is_empty()),
            queue_name_prefix: raw.sqs.queue_name_prefix.unwrap_or_default(),
            create_missing_queues: raw.sqs.create_missing_queues.unwrap_or(false),
            body_encoding: if raw.sqs.base64_encoding.unwrap_or(true) {
                BodyEncoding::Base64
            } else {
                BodyEncoding::RawJson
            },
            max_message_bytes,
            queues: raw.sqs.queues,
        },
        schedule_paths_named: raw.schedules.paths.is_some(),
        schedule_paths: raw
            .schedules
            .paths
            .unwrap_or_else(|| vec!["schedules".into()])
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        timezone,
        database_url: raw.database.url.filter(|u| !u.is_empty()).map(Secret),
        database_schema: raw.database.schema.unwrap_or_else(|| "sqsbeat".into()),
        ledger_retention,
        database_path: PathBuf::from(
            raw.database
                .path
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "sqsbeat.db".into()),
        ),
        http_addr: raw.http.addr.unwrap_or_else(|| "127.0.0.1:9405".into()),
        release_window,
        django_celery_beat,
        intake_queue,
        metrics_per_entry_limit,
        sentry,
    })
}

fn release_window(raw: &RawReleaser) -> Result<Duration, String> {
    let Some(w) = raw.window.as_deref() else {
        return Ok(Duration::minutes(15));
    };
    let d = parse_duration(w).map_err(|e| format!("[releaser] window: {e}"))?;
    if d > Duration::minutes(15) || d < Duration::zero() {
        return Err(format!(
            "[releaser] window = {w:?}: must be between 0s and 15m (SQS DelaySeconds stops at 900)"
        ));
    }
    Ok(d)
}

fn per_entry_limit(raw: &RawMetrics) -> Result<usize, String> {
    match raw.per_entry_limit {
        None => Ok(DEFAULT_PER_ENTRY_LIMIT),
        Some(n) if (0..=1_000_000).contains(&n) => Ok(n as usize),
        Some(n) => Err(format!(
            "[metrics] per_entry_limit = {n}: must be 0..=1000000 (0: totals only)"
        )),
    }
}

/// `[sentry]`: a DSN that does not parse is refused here, at start-up,
/// not at the first check-in.
fn sentry_config(raw: RawSentry) -> Result<SentryConfig, String> {
    let dsn = raw.dsn.filter(|d| !d.trim().is_empty());
    if let Some(d) = &dsn {
        crate::wire::sentry::Dsn::parse(d).map_err(|e| format!("[sentry] dsn: {e}"))?;
    }
    Ok(SentryConfig {
        dsn: dsn.map(Secret),
        environment: raw
            .environment
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "production".into()),
    })
}

/// `[django_celery_beat]`: the tables live in the application's own
/// PostgreSQL database, so the source needs `[database] url`; SQLite is
/// sqsbeat's private file and cannot hold them.
fn django_celery_beat(
    raw: &RawDjangoCeleryBeat,
    has_url: bool,
) -> Result<Option<DjangoCeleryBeat>, String> {
    let schema = raw.schema.clone().unwrap_or_else(|| "public".into());
    let valid = schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "[django_celery_beat] schema = {schema:?}: use the schema's plain name (letters, digits and _, e.g. \"public\")"
        ));
    }
    if !raw.enabled.unwrap_or(false) {
        return Ok(None);
    }
    if !has_url {
        return Err("[django_celery_beat] enabled = true reads django-celery-beat's tables from the application's PostgreSQL database: set [database] url (or DATABASE_URL) to it; the SQLite store cannot hold them".into());
    }
    Ok(Some(DjangoCeleryBeat { schema }))
}

/// Reads the config file (`--config`, else `sqsbeat.toml` in the working
/// directory if present) and the process environment.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let (file, text) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Io {
                file: p.display().to_string(),
                source: e,
            })?;
            (p.display().to_string(), Some(text))
        }
        None => match std::fs::read_to_string("sqsbeat.toml") {
            Ok(t) => ("sqsbeat.toml".to_string(), Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ("(defaults)".to_string(), None),
            Err(e) => {
                return Err(ConfigError::Io {
                    file: "sqsbeat.toml".into(),
                    source: e,
                });
            }
        },
    };
    parse(&file, text.as_deref(), &|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_without_file_or_env() {
        let c = parse("x", None, &env(&[])).unwrap();
        assert_eq!(c.schedule_paths, [PathBuf::from("schedules")]);
        assert!(!c.schedule_paths_named);
        assert_eq!(c.release_window, Duration::minutes(15));
        assert!(!c.sqs.create_missing_queues);
        assert_eq!(c.intake_queue, None, "no intake unless named");
    }

    #[test]
    fn an_intake_queue_sqs_cannot_name_is_refused() {
        let e = parse(
            "f.toml",
            Some("[intake]\nqueue = \"my intake\"\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.toml: [intake] queue: queue \"my intake\""),
            "{e}"
        );
        let c = parse("f.toml", Some("[intake]\nqueue = \"\"\n"), &env(&[])).unwrap();
        assert_eq!(c.intake_queue, None, "empty means no intake");
    }

    #[test]
    fn environment_overrides_file() {
        let file = "[sqs]\nendpoint_url = \"http://file\"\ncreate_missing_queues = false\n[schedules]\npaths = [\"a\"]\n";
        let c = parse(
            "sqsbeat.toml",
            Some(file),
            &env(&[
                ("SQSBEAT_SQS_ENDPOINT_URL", "http://env"),
                ("SQSBEAT_SQS_CREATE_MISSING_QUEUES", "true"),
                ("SQSBEAT_SCHEDULES_PATHS", "b, c"),
            ]),
        )
        .unwrap();
        assert_eq!(c.sqs.endpoint_url.as_deref(), Some("http://env"));
        assert!(c.sqs.create_missing_queues);
        assert_eq!(c.schedule_paths, [PathBuf::from("b"), PathBuf::from("c")]);
        assert!(c.schedule_paths_named);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = parse("f.toml", Some("[sqs]\nendpoint = \"x\"\n"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let e = parse("f.toml", Some("[releaser]\nwindow = \"16m\"\n"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("15m"), "{e}");
        let e = parse(
            "f.toml",
            None,
            &env(&[("SQSBEAT_SQS_CREATE_MISSING_QUEUES", "perhaps")]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("SQSBEAT_SQS_CREATE_MISSING_QUEUES"),
            "{e}"
        );
    }

    #[test]
    fn every_documented_setting_is_read_from_its_variable() {
        let c = parse(
            "x",
            None,
            &env(&[
                ("SQSBEAT_SQS_ENDPOINT_URL", "http://e"),
                ("SQSBEAT_SQS_REGION", "eu-west-1"),
                ("SQSBEAT_SQS_QUEUE_NAME_PREFIX", "dev-"),
                ("SQSBEAT_SQS_CREATE_MISSING_QUEUES", "1"),
                ("SQSBEAT_SQS_BASE64_ENCODING", "false"),
                ("SQSBEAT_SQS_MAX_MESSAGE_BYTES", "262144"),
                ("SQSBEAT_SCHEDULES_PATHS", "a,b"),
                ("SQSBEAT_SCHEDULES_TIMEZONE", "Europe/London"),
                ("SQSBEAT_DATABASE_URL", "postgres://h/db"),
                ("SQSBEAT_DATABASE_PATH", "/var/lib/sqsbeat/state.db"),
                ("SQSBEAT_DATABASE_SCHEMA", "beat"),
                ("SQSBEAT_DATABASE_LEDGER_RETENTION", "7d"),
                ("SQSBEAT_HTTP_ADDR", "127.0.0.1:1"),
                ("SQSBEAT_RELEASER_WINDOW", "5m"),
                ("SQSBEAT_DJANGO_CELERY_BEAT_ENABLED", "true"),
                ("SQSBEAT_DJANGO_CELERY_BEAT_SCHEMA", "app"),
                ("SQSBEAT_INTAKE_QUEUE", "sqsbeat-intake"),
                ("SQSBEAT_METRICS_PER_ENTRY_LIMIT", "50"),
                ("SQSBEAT_SENTRY_DSN", "https://key@o1.ingest.sentry.io/42"),
                ("SQSBEAT_SENTRY_ENVIRONMENT", "staging"),
            ]),
        )
        .unwrap();
        assert_eq!(c.sqs.endpoint_url.as_deref(), Some("http://e"));
        assert_eq!(c.sqs.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.sqs.queue_name_prefix, "dev-");
        assert!(c.sqs.create_missing_queues);
        assert_eq!(c.sqs.body_encoding, BodyEncoding::RawJson);
        assert_eq!(c.sqs.max_message_bytes, 262_144);
        assert_eq!(c.schedule_paths.len(), 2);
        assert_eq!(c.timezone.name(), "Europe/London");
        assert_eq!(
            c.database_url.map(|u| u.0).as_deref(),
            Some("postgres://h/db")
        );
        assert_eq!(c.database_path, PathBuf::from("/var/lib/sqsbeat/state.db"));
        assert_eq!(c.database_schema, "beat");
        assert_eq!(c.ledger_retention, Duration::days(7));
        assert_eq!(c.http_addr, "127.0.0.1:1");
        assert_eq!(c.release_window, Duration::minutes(5));
        assert_eq!(
            c.django_celery_beat,
            Some(DjangoCeleryBeat {
                schema: "app".into()
            })
        );
        assert_eq!(c.intake_queue.as_deref(), Some("sqsbeat-intake"));
        assert_eq!(c.metrics_per_entry_limit, 50);
        assert!(c.sentry.dsn.is_some());
        assert_eq!(c.sentry.environment, "staging");
        // Every setting but the file-only table has a variable tested above.
        assert_eq!(SETTINGS.iter().filter(|s| s.key != "queues").count(), 20);
    }

    #[test]
    fn django_celery_beat_needs_postgresql_and_a_plain_schema() {
        let c = parse("x", None, &env(&[])).unwrap();
        assert_eq!(c.django_celery_beat, None, "off by default");
        let file = "[database]\nurl = \"postgres://h/app\"\n[django_celery_beat]\nenabled = true\n";
        let c = parse("f.toml", Some(file), &env(&[])).unwrap();
        assert_eq!(
            c.django_celery_beat.map(|d| d.schema).as_deref(),
            Some("public")
        );
        let e = parse(
            "f.toml",
            Some("[django_celery_beat]\nenabled = true\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("set [database] url") && e.to_string().contains("SQLite"),
            "{e}"
        );
        let e = parse(
            "f.toml",
            Some(&format!("{file}schema = \"x; drop\"\n")),
            &env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[django_celery_beat] schema"), "{e}");
        // DATABASE_URL counts as the url.
        let c = parse(
            "x",
            None,
            &env(&[
                ("DATABASE_URL", "postgres://h/app"),
                ("SQSBEAT_DJANGO_CELERY_BEAT_ENABLED", "1"),
            ]),
        )
        .unwrap();
        assert!(c.django_celery_beat.is_some());
    }

    #[test]
    fn database_url_is_redacted_in_debug() {
        let c = parse(
            "x",
            None,
            &env(&[("DATABASE_URL", "postgres://u:hunter2@h/db")]),
        )
        .unwrap();
        assert!(c.database_url.is_some());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn sentry_dsn_is_checked_and_redacted() {
        let c = parse(
            "x",
            Some("[sentry]\ndsn = \"https://pubkey@o1.ingest.sentry.io/42\"\n"),
            &env(&[]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("pubkey"));
        assert_eq!(c.sentry.environment, "production");
        let e = parse("f.toml", Some("[sentry]\ndsn = \"not a dsn\"\n"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("[sentry] dsn"), "{e}");
        let e = parse(
            "f.toml",
            Some("[metrics]\nper_entry_limit = -1\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("per_entry_limit"), "{e}");
    }
}
