//! `sqsbeat check`: validate schedule files, report every problem.

use std::path::PathBuf;

use crate::config::Config;
use crate::entry::file;

/// Prints diagnostics; returns whether the schedules are valid.
pub async fn run(paths: &[PathBuf], config: &Config) -> anyhow::Result<bool> {
    let loaded = super::load_all(paths, config).await?;
    let paths = super::schedule_paths(paths, config);
    if let Some(notice) = &loaded.notice {
        eprintln!("note: {notice}");
    }
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    let errors = loaded.errors().count();
    if errors > 0 {
        eprintln!("{errors} error(s); the schedule is not valid");
        return Ok(false);
    }
    let files = file::expand_paths(&paths)?.len();
    println!("ok: {} entries in {files} file(s)", loaded.entries.len());
    Ok(true)
}
