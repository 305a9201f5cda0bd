//! Command-line interface (clap). Parsing only; the commands live in `cmd/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::store::jobs::JobStatus;

#[derive(Debug, Parser)]
#[command(
    name = "sqsbeat",
    version,
    about = "Celery beat for Amazon SQS: periodic entries and far-future one-off jobs"
)]
pub struct Cli {
    /// Configuration file (default: ./sqsbeat.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "SQSBEAT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate schedule files; print every problem as file:line: entry 'name': what is wrong.
    Check {
        /// Schedule files or directories (default: the `[schedules] paths` setting, else ./schedules).
        paths: Vec<PathBuf>,
    },
    /// Preview the next fire instants of each entry.
    Next {
        /// Schedule files or directories (default: the `[schedules] paths` setting, else ./schedules).
        paths: Vec<PathBuf>,
        /// Only this entry.
        #[arg(long, value_name = "NAME")]
        entry: Option<String>,
        /// Fires per entry.
        #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
        /// Start after this instant (RFC 3339 with offset; default: now).
        #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg)]
        after: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Create sqsbeat's schema and apply pending migrations (run also does this).
    Migrate,
    /// Schedule a one-off task, possibly weeks away; it is sent to SQS in its final minutes.
    Schedule(Box<ScheduleArgs>),
    /// List one-off jobs (pending ones unless --status says otherwise).
    Pending {
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        /// pending, releasing, released, cancelled, failed, or all.
        #[arg(long, default_value = "pending", value_parser = parse_status_filter)]
        status: StatusFilter,
        #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg)]
        due_after: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg)]
        due_before: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show one job.
    Show {
        id: uuid::Uuid,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Cancel pending jobs by id, or every pending job of a task with --task (a released job is already in SQS, one being released is on its way).
    Cancel(CancelArgs),
    /// Move a pending job to a new due instant; it keeps its task id.
    Reschedule(RescheduleArgs),
    /// Send the slots of an entry in a range that the ledger has not recorded as sent (deterministic task ids: a second run sends nothing).
    Backfill(Box<BackfillArgs>),
    /// Replicas and their roles, each entry's last and next fire, pause and last manual run, pending jobs, recent failures.
    Status {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Manage periodic entries: the database's (add, enable, ...), and any entry's pause, manual run and history.
    Entries {
        #[command(subcommand)]
        command: EntriesCommand,
    },
    /// Fire the schedule's entries as Celery tasks on SQS until SIGTERM/SIGINT.
    Run {
        /// Schedule files or directories (default: the `[schedules] paths` setting, else ./schedules).
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("due").required(true).args(["at", "in_"])))]
pub struct ScheduleArgs {
    /// Celery task name, e.g. app.tasks.send_report.
    pub task: String,
    /// JSON array of positional arguments.
    #[arg(long)]
    pub args: Option<String>,
    /// JSON object of keyword arguments.
    #[arg(long)]
    pub kwargs: Option<String>,
    /// Due instant (RFC 3339 with offset).
    #[arg(long, value_parser = parse_instant_arg)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Due after this long, e.g. 90s, 14d, 2w.
    #[arg(long = "in", value_name = "DURATION")]
    pub in_: Option<String>,
    #[arg(long, default_value = "celery")]
    pub queue: String,
    /// A duration after the due instant, or an instant.
    #[arg(long)]
    pub expires: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub priority: u8,
    /// Extra message header, K=V (repeatable; V is JSON if it parses, else a string).
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// The task id; scheduling the same id twice is one job.
    #[arg(long)]
    pub id: Option<uuid::Uuid>,
    /// Accept a due instant in the past (sent at once).
    #[arg(long)]
    pub allow_past: bool,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `sqsbeat cancel`: ids, or a bulk filter that starts with --task.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// Job ids.
    #[arg(required_unless_present = "task", conflicts_with = "task")]
    pub ids: Vec<uuid::Uuid>,
    /// Cancel every pending job of this task (in one statement).
    #[arg(long)]
    pub task: Option<String>,
    /// With --task: only jobs on this queue.
    #[arg(long, requires = "task")]
    pub queue: Option<String>,
    /// With --task: only jobs due at or after this instant.
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg, requires = "task")]
    pub due_after: Option<chrono::DateTime<chrono::Utc>>,
    /// With --task: only jobs due before this instant.
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg, requires = "task")]
    pub due_before: Option<chrono::DateTime<chrono::Utc>>,
    /// With --task: count what would be cancelled, cancel nothing.
    #[arg(long, requires = "task")]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("due").required(true).args(["at", "in_"])))]
pub struct RescheduleArgs {
    /// The job's id (its Celery task id, which it keeps).
    pub id: uuid::Uuid,
    /// New due instant (RFC 3339 with offset).
    #[arg(long, value_parser = parse_instant_arg)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Due this long from now, e.g. 90s, 14d, 2w.
    #[arg(long = "in", value_name = "DURATION")]
    pub in_: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// Entry name (from a schedule file, the entries table or django-celery-beat).
    pub name: String,
    /// First instant of the range (RFC 3339 with offset; included).
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// Last instant of the range (included).
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant_arg)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// List what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a range of up to N slots (default 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max: Option<u32>,
    /// Who does it, for the entry's history (default: user@host).
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum EntriesCommand {
    /// Add an entry (validated like a TOML entry before it is written).
    Add(Box<EntryArgs>),
    /// List the database entries.
    List {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show one entry.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Enable a database entry (it fires from now on; missed slots are not caught up).
    Enable {
        name: String,
        /// Who makes the change, for the entry's history (default: user@host).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Disable a database entry (kept, never fired).
    Disable {
        name: String,
        /// Who makes the change, for the entry's history (default: user@host).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Remove a database entry (its ledger and change history stay).
    Remove {
        name: String,
        /// Who makes the change, for the entry's history (default: user@host).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Send any entry's task now, with a fresh task id; its schedule is untouched.
    Run {
        name: String,
        /// Who runs it, for the entry's history (default: user@host).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Pause any entry: its slots are recorded as missed (reason `paused`) and not caught up.
    Pause {
        name: String,
        /// Resume by itself at this instant (RFC 3339), or after this long (e.g. 2h).
        #[arg(long, value_name = "INSTANT")]
        until: Option<String>,
        /// Why, shown by `entries list`, `entries show` and `status`.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Who makes the change, for the entry's history (default: user@host).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Resume a paused entry: it fires from its next slot; the paused ones are not caught up.
    Resume {
        name: String,
        /// Who makes the change, for the entry's history (default: user@host).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Every change made through the CLI to an entry: who, when, what.
    History {
        name: String,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// The fields of an entry, as flags; same meaning as in a schedule file.
#[derive(Debug, clap::Args)]
pub struct EntryArgs {
    /// Entry name (unique across files and database).
    pub name: String,
    /// Celery task name.
    #[arg(long)]
    pub task: String,
    /// Cron string (Vixie semantics).
    #[arg(long, group = "when")]
    pub cron: Option<String>,
    /// Celery crontab table as JSON, e.g. '{"minute": "0", "hour": "3"}'.
    #[arg(long, group = "when")]
    pub crontab: Option<String>,
    /// Interval, e.g. 30s, 5m, 1h30m.
    #[arg(long, group = "when")]
    pub every: Option<String>,
    #[arg(long)]
    pub timezone: Option<String>,
    /// JSON array of positional arguments.
    #[arg(long)]
    pub args: Option<String>,
    /// JSON object of keyword arguments.
    #[arg(long)]
    pub kwargs: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub priority: Option<i64>,
    /// Extra message header, K=V (repeatable; V is JSON if it parses, else a string).
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    #[arg(long)]
    pub expires: Option<String>,
    /// Add it disabled.
    #[arg(long)]
    pub disabled: bool,
    #[arg(long, value_parser = parse_instant_arg)]
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, value_parser = parse_instant_arg)]
    pub end_at: Option<chrono::DateTime<chrono::Utc>>,
    /// latest, all or none.
    #[arg(long)]
    pub catch_up: Option<String>,
    #[arg(long)]
    pub grace: Option<String>,
    #[arg(long)]
    pub jitter: Option<String>,
    #[arg(long, value_parser = parse_instant_arg)]
    pub anchor: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long)]
    pub group_id: Option<String>,
    /// Fires carry Sentry Crons' headers (as celery beat's Sentry integration adds).
    #[arg(long)]
    pub sentry_monitor: bool,
    /// Replace an existing entry of the same name.
    #[arg(long)]
    pub replace: bool,
    /// Who makes the change, for the entry's history (default: user@host).
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,
}

fn parse_instant_arg(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    crate::schedule::duration::parse_instant(s).map_err(|e| e.to_string())
}

/// `--status`: one status, or every job (`all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusFilter(pub Option<JobStatus>);

fn parse_status_filter(s: &str) -> Result<StatusFilter, String> {
    if s == "all" {
        return Ok(StatusFilter(None));
    }
    s.parse().map(|st| StatusFilter(Some(st))).map_err(|_| {
        format!("expected pending, releasing, released, cancelled, failed or all, not {s:?}")
    })
}
