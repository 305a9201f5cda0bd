//! Command-line interface (clap). Parsing only; the commands live in `cmd/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
        /// Schedule files or directories (default: [schedules] paths, else ./schedules).
        paths: Vec<PathBuf>,
    },
    /// Preview the next fire instants of each entry.
    Next {
        /// Schedule files or directories (default: [schedules] paths, else ./schedules).
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
    /// Fire the schedule's entries as Celery tasks on SQS until SIGTERM/SIGINT.
    Run {
        /// Schedule files or directories (default: [schedules] paths, else ./schedules).
        paths: Vec<PathBuf>,
    },
}

fn parse_instant_arg(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    crate::duration::parse_instant(s).map_err(|e| e.to_string())
}
