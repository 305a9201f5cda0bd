//! `sqsbeat entries ...`: periodic entries kept in the database.

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};

use crate::cli::{EntriesCommand, EntryArgs, Output};
use crate::config::Config;
use crate::entry::file;
use crate::entry::{self, Origin};
use crate::store::entries::{self, EntryRow};
use crate::store::{Access, StoreError};

pub async fn run(command: EntriesCommand, config: &Config) -> anyhow::Result<bool> {
    let access = match command {
        EntriesCommand::List { .. } | EntriesCommand::Show { .. } => Access::Read,
        _ => Access::Write,
    };
    let store = crate::cmd::open_store(config, access).await?;
    match command {
        EntriesCommand::Add(args) => {
            let row = row_from_args(&args).map_err(anyhow::Error::msg)?;
            // The same validation as a schedule file, before anything is written.
            let raw = row.to_raw().map_err(anyhow::Error::msg)?;
            let origin = Origin {
                file: crate::entry::merge::SOURCE.into(),
                line: 0,
            };
            let (valid, problems) =
                entry::validate(&row.name, raw, origin, &super::context(config));
            for p in &problems {
                eprintln!(
                    "{}entry '{}': {}",
                    if p.warning { "warning: " } else { "" },
                    row.name,
                    p.message
                );
            }
            if valid.is_none() {
                eprintln!("not added: fix the problems above");
                return Ok(false);
            }
            let paths = super::schedule_paths(&[], config);
            if let Ok(files) = file::load_paths(&paths, &super::context(config))
                && let Some((_, o)) = files.names.iter().find(|(n, _)| *n == row.name)
            {
                bail!(
                    "entry '{}' is already defined in {}:{}; names must be unique across files and database",
                    row.name,
                    o.file,
                    o.line
                );
            }
            if !entries::insert(&store, &row, args.replace).await? {
                bail!(
                    "entry '{}' already exists in the database; use --replace to overwrite it",
                    row.name
                );
            }
            println!(
                "{} entry '{}'",
                if args.replace { "saved" } else { "added" },
                row.name
            );
        }
        EntriesCommand::List { output } => {
            // A row that cannot be read is an error line naming it (and exit
            // status 1); the others still list.
            let mut rows = Vec::new();
            let mut ok = true;
            for row in entries::list(&store).await? {
                match row {
                    Ok(r) => rows.push(r),
                    Err(e) => {
                        ok = false;
                        eprintln!("error: {e}");
                    }
                }
            }
            print_rows(&rows, output)?;
            return Ok(ok);
        }
        EntriesCommand::Show { name, output } => {
            let rows = entries::list(&store).await?;
            let found = rows.into_iter().find(|r| match r {
                Ok(r) => r.name == name,
                Err(StoreError::Decode { row, .. }) => *row == name,
                Err(_) => false,
            });
            let row = match found {
                Some(r) => r?,
                None => bail!("no database entry named '{name}'"),
            };
            match output {
                Output::Json => println!("{}", serde_json::to_string(&row)?),
                Output::Table => println!("{}", serde_json::to_string_pretty(&row)?),
            }
        }
        EntriesCommand::Enable { name } => toggle(&store, &name, true).await?,
        EntriesCommand::Disable { name } => toggle(&store, &name, false).await?,
        EntriesCommand::Remove { name } => {
            if !entries::remove(&store, &name).await? {
                bail!("no database entry named '{name}'");
            }
            println!("removed entry '{name}'");
        }
    }
    Ok(true)
}

async fn toggle(store: &crate::store::Store, name: &str, enabled: bool) -> anyhow::Result<()> {
    if !entries::set_enabled(store, name, enabled).await? {
        bail!("no database entry named '{name}'");
    }
    println!(
        "{} entry '{name}'",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

fn json_flag(flag: &str, text: Option<&str>, default: Value) -> Result<Value, String> {
    match text {
        None => Ok(default),
        Some(t) => {
            serde_json::from_str(t).map_err(|e| format!("--{flag} is not valid JSON ({e}): {t}"))
        }
    }
}

fn row_from_args(a: &EntryArgs) -> Result<EntryRow, String> {
    let mut headers = Map::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| format!("--header {h:?}: expected K=V"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        headers.insert(k.to_string(), v);
    }
    Ok(EntryRow {
        name: a.name.clone(),
        task: a.task.clone(),
        cron: a.cron.clone(),
        crontab: a
            .crontab
            .as_deref()
            .map(|t| json_flag("crontab", Some(t), Value::Null))
            .transpose()?,
        every: a.every.clone(),
        timezone: a.timezone.clone(),
        args: json_flag("args", a.args.as_deref(), Value::Array(vec![]))?,
        kwargs: json_flag("kwargs", a.kwargs.as_deref(), Value::Object(Map::new()))?,
        queue: a.queue.clone(),
        priority: a.priority,
        headers: Value::Object(headers),
        expires: a.expires.clone(),
        enabled: !a.disabled,
        start_at: a.start_at,
        end_at: a.end_at,
        catch_up: a.catch_up.clone(),
        grace: a.grace.clone(),
        jitter: a.jitter.clone(),
        anchor: a.anchor,
        group_id: a.group_id.clone(),
    })
}

fn print_rows(rows: &[EntryRow], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            for r in rows {
                println!("{}", serde_json::to_string(r).context("encode")?);
            }
        }
        Output::Table => {
            let cells: Vec<[String; 5]> = rows
                .iter()
                .map(|r| {
                    let when = r
                        .cron
                        .clone()
                        .or_else(|| r.every.as_ref().map(|e| format!("every {e}")))
                        .or_else(|| r.crontab.as_ref().map(|c| format!("crontab {c}")))
                        .unwrap_or_default();
                    let on = if r.enabled { "yes" } else { "no" };
                    [
                        r.name.clone(),
                        r.task.clone(),
                        when,
                        r.queue.clone().unwrap_or_else(|| "celery".into()),
                        on.into(),
                    ]
                })
                .collect();
            let headers = ["NAME", "TASK", "SCHEDULE", "QUEUE", "ENABLED"];
            let mut widths = headers.map(str::len);
            for c in &cells {
                for (w, v) in widths.iter_mut().zip(c) {
                    *w = (*w).max(v.chars().count());
                }
            }
            let line = |vals: [&str; 5]| {
                vals.iter()
                    .zip(widths)
                    .map(|(v, w)| format!("{v:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!("{}", line(headers));
            for c in &cells {
                println!("{}", line([&c[0], &c[1], &c[2], &c[3], &c[4]]));
            }
        }
    }
    Ok(())
}
