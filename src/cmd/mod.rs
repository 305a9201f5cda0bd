//! The CLI commands: thin I/O around the pure modules.

pub mod check;
pub mod entries;
pub mod jobs;
pub mod migrate;
pub mod next;
pub mod run;
pub mod status;

use std::path::PathBuf;

use crate::config::Config;
use crate::entry::Context;
use crate::entry::file::SchedulePaths;
use crate::store::Access;

/// Schedule paths from the command line, else from the config; only the
/// default (`./schedules`, named nowhere) may be absent.
pub fn schedule_paths(args: &[PathBuf], config: &Config) -> SchedulePaths {
    if args.is_empty() {
        SchedulePaths {
            paths: config.schedule_paths.clone(),
            named: config.schedule_paths_named,
        }
    } else {
        SchedulePaths::named(args.to_vec())
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
/// read: a PostgreSQL URL, or an existing SQLite file (never created here),
/// and django-celery-beat's rows when enabled. An unreachable database is a
/// warning, so `check` works in CI without one.
pub async fn load_all(
    paths: &[PathBuf],
    config: &Config,
) -> anyhow::Result<crate::entry::file::Loaded> {
    let ctx = context(config);
    let files = crate::entry::file::load_paths(&schedule_paths(paths, config), &ctx)?;
    if config.database_url.is_none() && !config.database_path.exists() {
        return Ok(files);
    }
    let store = match crate::cmd::open_store(config, Access::Read).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("warning: database entries not checked: {e:#}");
            return Ok(files);
        }
    };
    let loaded = match crate::store::entries::list(&store).await {
        Ok(rows) => crate::entry::merge::merge(files, crate::entry::merge::validate(&rows, &ctx)),
        Err(e) => {
            eprintln!("warning: database entries not checked: {e:#}");
            files
        }
    };
    let Some(dj) = &config.django_celery_beat else {
        return Ok(loaded);
    };
    match crate::store::django::list(&store, &dj.schema).await {
        Ok(rows) => {
            use crate::entry::django;
            // Here a row set aside is an error: `check` is where to see it.
            let rows = django::validate(&rows, &dj.schema, &ctx);
            let (rows, clashes) = django::set_aside_clashes(&loaded, rows);
            let mut all = django::merge(loaded, rows);
            all.diagnostics.extend(clashes);
            Ok(all)
        }
        Err(e) => {
            eprintln!("warning: django-celery-beat's rows not checked: {e}");
            Ok(loaded)
        }
    }
}

/// The store for a one-shot command (one connection). Only commands that
/// write pass [`Access::Write`], which creates the schema and applies
/// migrations, so `schedule`, `cancel` and `entries add` work on a fresh
/// database; read-only commands run no DDL and say to run `sqsbeat
/// migrate` when there is no schema.
pub async fn open_store(config: &Config, access: Access) -> anyhow::Result<crate::store::Store> {
    crate::store::Store::open(config, access)
        .await
        .map_err(|e| open_error(config, e))
}

/// What failed to open, for the message a person reads.
pub fn open_error(config: &Config, e: crate::store::StoreError) -> anyhow::Error {
    match &config.database_url {
        Some(_) => anyhow::Error::new(e).context("cannot open the PostgreSQL database"),
        None => anyhow::Error::new(e).context(format!(
            "cannot open the SQLite database {}",
            config.database_path.display()
        )),
    }
}
