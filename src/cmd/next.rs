//! `sqsbeat next`: preview fire instants.

use std::path::PathBuf;

use anyhow::bail;
use chrono::{DateTime, Utc};

use crate::cli::Output;
use crate::config::Config;
use crate::schedule::preview;

pub struct Args<'a> {
    pub paths: &'a [PathBuf],
    pub entry: Option<&'a str>,
    pub count: usize,
    pub after: DateTime<Utc>,
    pub output: Output,
}

/// Prints the preview; returns false when the schedules are invalid.
pub async fn run(args: Args<'_>, config: &Config) -> anyhow::Result<bool> {
    let paths = super::schedule_paths(args.paths, config);
    let loaded = super::load_all(args.paths, config).await?;
    if loaded.has_errors() {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        eprintln!("the schedule is not valid; fix it (see `sqsbeat check`) to preview it");
        return Ok(false);
    }
    let mut entries = loaded.entries;
    if let Some(name) = args.entry {
        entries.retain(|e| e.name == name);
        if entries.is_empty() {
            bail!(
                "no entry named {name:?} in {}",
                paths
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let rows = preview::upcoming(&entries, args.after, args.count);
    for e in entries
        .iter()
        .filter(|e| !rows.iter().any(|r| r.entry == e.name))
    {
        eprintln!(
            "entry '{}': no fires after {}",
            e.name,
            args.after.to_rfc3339()
        );
    }
    match args.output {
        Output::Table => print!("{}", preview::table(&rows)),
        Output::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
    }
    Ok(true)
}
