//! The CLI commands: thin I/O around the pure modules.

pub mod backfill;
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
    let loaded = match crate::runtime::reload::load_table(&store, &ctx).await {
        Ok(table) => crate::entry::merge::merge(files, table),
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

/// Who makes a change, for an entry's history: `--by`, else `user@host`.
pub fn actor(by: Option<&str>) -> String {
    match by.map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => b.to_string(),
        None => {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into());
            format!("{user}@{}", gethostname::gethostname().to_string_lossy())
        }
    }
}

/// Who and when, for a change made at `now` (the command's one clock read).
pub fn audit(by: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> crate::store::history::Audit {
    crate::store::history::Audit {
        at: now,
        actor: actor(by),
    }
}

/// The valid entry named `name` among every source `load_all` read; an
/// entry that is defined but does not load is an error naming its
/// problems.
pub fn find_entry<'a>(
    loaded: &'a crate::entry::file::Loaded,
    name: &str,
) -> anyhow::Result<&'a crate::entry::Entry> {
    if let Some(e) = loaded.entries.iter().find(|e| e.name == name) {
        return Ok(e);
    }
    if let Some((_, o)) = loaded.names.iter().find(|(n, _)| n == name) {
        let problems: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| !d.warning && d.entry.as_deref() == Some(name))
            .map(|d| d.message.clone())
            .collect();
        anyhow::bail!(
            "entry '{name}' ({}:{}) does not load: {}; fix it first (`sqsbeat check` shows every problem)",
            o.file,
            o.line,
            problems.join("; ")
        );
    }
    anyhow::bail!(unknown_entry(name))
}

/// The error for a name no source defines.
pub fn unknown_entry(name: &str) -> String {
    format!(
        "no entry named '{name}' in the schedule files, the entries table or django-celery-beat; `sqsbeat status` lists them"
    )
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
