//! The CLI commands: thin I/O around the pure modules.

pub mod check;
pub mod entries;
pub mod jobs;
pub mod migrate;
pub mod next;
pub mod status;

use std::path::PathBuf;

use crate::config::Config;
use crate::entry::Context;

/// Schedule paths from the command line, else from the config.
pub fn schedule_paths(args: &[PathBuf], config: &Config) -> Vec<PathBuf> {
    if args.is_empty() {
        config.schedule_paths.clone()
    } else {
        args.to_vec()
    }
}

/// Validation settings that come from the config.
pub fn context(config: &Config) -> Context {
    Context {
        default_tz: config.timezone,
        max_message_bytes: config.sqs.max_message_bytes,
    }
}

/// Schedule files plus the database entries, when a database is there to
/// read: a PostgreSQL URL, or an existing SQLite file (never created here).
/// An unreachable database is a warning, so `check` works in CI without one.
pub async fn load_all(
    paths: &[PathBuf],
    config: &Config,
) -> anyhow::Result<crate::entry::file::Loaded> {
    let files = crate::entry::file::load_paths(&schedule_paths(paths, config), &context(config))?;
    if config.database_url.is_none() && !config.database_path.exists() {
        return Ok(files);
    }
    let rows = match crate::runtime::open_store_cli(config).await {
        Ok(store) => crate::store::entries::list(&store)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => Ok(crate::store::entries::merge(
            files,
            crate::store::entries::validate(&rows, &context(config)),
        )),
        Err(e) => {
            eprintln!("warning: database entries not checked: {e:#}");
            Ok(files)
        }
    }
}
