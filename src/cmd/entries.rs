//! `sqsbeat entries ...`: periodic entries kept in the database (add,
//! list, show, enable, disable, remove), and what works on any entry
//! whatever its source: pause, resume, run now, history. Every change is
//! recorded in the entry's history with who (`--by`) and when.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::cli::{EntriesCommand, EntryArgs, Output};
use crate::config::Config;
use crate::entry::file;
use crate::entry::{self, Origin};
use crate::schedule::duration::{parse_duration, parse_instant};
use crate::store::entries::{self, EntryRow, Saved};
use crate::store::pauses::{self, PauseRow, Paused};
use crate::store::{Access, Store, StoreError};
use crate::wire::sqs::SqsSink;

pub async fn run(
    command: EntriesCommand,
    now: DateTime<Utc>,
    config: &Config,
) -> anyhow::Result<bool> {
    let access = match command {
        EntriesCommand::List { .. }
        | EntriesCommand::Show { .. }
        | EntriesCommand::History { .. } => Access::Read,
        _ => Access::Write,
    };
    let store = crate::cmd::open_store(config, access).await?;
    match command {
        EntriesCommand::Add(args) => return add(&store, &args, now, config).await,
        EntriesCommand::List { output } => return list(&store, now, output).await,
        EntriesCommand::Show { name, output } => show(&store, &name, now, output, config).await?,
        EntriesCommand::Enable { name, by } => toggle(&store, &name, true, by, now).await?,
        EntriesCommand::Disable { name, by } => toggle(&store, &name, false, by, now).await?,
        EntriesCommand::Remove { name, by } => {
            if !entries::remove(&store, &name, &super::audit(by.as_deref(), now)).await? {
                bail!("no database entry named '{name}'");
            }
            println!("removed entry '{name}'");
        }
        EntriesCommand::Run { name, by, output } => {
            return run_now(&store, &name, by.as_deref(), now, output, config).await;
        }
        EntriesCommand::Pause {
            name,
            until,
            reason,
            by,
        } => {
            let until = until.as_deref().map(|u| until_arg(u, now)).transpose()?;
            let p = Pause {
                until,
                reason: reason.as_deref(),
                by: by.as_deref(),
            };
            pause(&store, &name, p, now, config).await?
        }
        EntriesCommand::Resume { name, by } => resume(&store, &name, by.as_deref(), now).await?,
        EntriesCommand::History { name, output } => history(&store, &name, output).await?,
    }
    Ok(true)
}

async fn add(
    store: &Store,
    args: &EntryArgs,
    now: DateTime<Utc>,
    config: &Config,
) -> anyhow::Result<bool> {
    let row = row_from_args(args).map_err(anyhow::Error::msg)?;
    // The same validation as a schedule file, before anything is written.
    let raw = row.to_raw().map_err(anyhow::Error::msg)?;
    let origin = Origin {
        file: crate::entry::merge::SOURCE.into(),
        line: 0,
    };
    let (valid, problems) = entry::validate(&row.name, raw, origin, &super::context(config));
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
    let audit = super::audit(args.by.as_deref(), now);
    match entries::save(store, &row, args.replace, &audit).await? {
        Saved::Exists => bail!(
            "entry '{}' already exists in the database; use --replace to overwrite it",
            row.name
        ),
        Saved::Added => println!(
            "{} entry '{}'",
            if args.replace { "saved" } else { "added" },
            row.name
        ),
        Saved::Replaced => println!("saved entry '{}'", row.name),
    }
    Ok(true)
}

/// Each pause in force at `now`, by entry; rows that cannot be read are
/// warnings.
async fn active_pauses(
    store: &Store,
    now: DateTime<Utc>,
) -> anyhow::Result<HashMap<String, PauseRow>> {
    let mut out = HashMap::new();
    for row in pauses::list(store).await? {
        match row {
            Ok(r) if r.active(now) => {
                out.insert(r.entry.clone(), r);
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(out)
}

/// A pause for a person: `until <instant>` or `until resumed`, and why.
pub fn pause_text(p: &PauseRow) -> String {
    let until = p
        .paused_until
        .map_or("until resumed".to_string(), |u| format!("until {}", iso(u)));
    match &p.reason {
        Some(r) => format!("{until}: {r}"),
        None => until,
    }
}

async fn list(store: &Store, now: DateTime<Utc>, output: Output) -> anyhow::Result<bool> {
    // A row that cannot be read is an error line naming it (and exit
    // status 1); the others still list.
    let mut rows = Vec::new();
    let mut ok = true;
    for row in entries::list(store).await? {
        match row {
            Ok(r) => rows.push(r),
            Err(e) => {
                ok = false;
                eprintln!("error: {e}");
            }
        }
    }
    print_rows(&rows, &active_pauses(store, now).await?, output)?;
    Ok(ok)
}

async fn show(
    store: &Store,
    name: &str,
    now: DateTime<Utc>,
    output: Output,
    config: &Config,
) -> anyhow::Result<()> {
    let paused = active_pauses(store, now).await?.remove(name);
    let rows = entries::list(store).await?;
    let found = rows.into_iter().find(|r| match r {
        Ok(r) => r.name == name,
        Err(StoreError::Decode { row, .. }) => *row == name,
        Err(_) => false,
    });
    let value = match found {
        Some(r) => {
            let mut v = serde_json::to_value(r?)?;
            v["paused"] = serde_json::to_value(&paused)?;
            v
        }
        // Not a database entry: one from a file (or django-celery-beat),
        // which can be paused and run too.
        None => {
            let loaded = super::load_all(&[], config).await?;
            let Some(e) = loaded.entries.iter().find(|e| e.name == name) else {
                bail!("{}", super::unknown_entry(name));
            };
            serde_json::json!({
                "name": e.name,
                "defined_in": format!("{}:{}", e.origin.file, e.origin.line),
                "task": e.task,
                "queue": e.queue,
                "enabled": e.enabled,
                "paused": paused,
            })
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string(&value)?),
        Output::Table => println!("{}", serde_json::to_string_pretty(&value)?),
    }
    Ok(())
}

async fn toggle(
    store: &Store,
    name: &str,
    enabled: bool,
    by: Option<String>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let audit = super::audit(by.as_deref(), now);
    if !entries::set_enabled(store, name, enabled, &audit).await? {
        bail!("no database entry named '{name}'");
    }
    println!(
        "{} entry '{name}'",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// `--until`: an instant, or a duration from now; in the future.
fn until_arg(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let at = match parse_instant(text) {
        Ok(t) => t,
        Err(_) => now
            + parse_duration(text).map_err(|_| {
                anyhow::anyhow!(
                    "--until {text:?}: expected an RFC 3339 instant (e.g. 2026-12-01T09:00:00Z) or a duration from now (e.g. 2h)"
                )
            })?,
    };
    if at <= now {
        bail!(
            "--until {} is not in the future; give a later instant, or use `sqsbeat entries resume` to resume now",
            iso(at)
        );
    }
    Ok(at)
}

/// What `entries pause` was given.
struct Pause<'a> {
    until: Option<DateTime<Utc>>,
    reason: Option<&'a str>,
    by: Option<&'a str>,
}

async fn pause(
    store: &Store,
    name: &str,
    p: Pause<'_>,
    now: DateTime<Utc>,
    config: &Config,
) -> anyhow::Result<()> {
    // Any entry that is defined, loadable or not: a broken one may be what
    // needs pausing.
    let loaded = super::load_all(&[], config).await?;
    if !loaded.names.iter().any(|(n, _)| n == name) {
        bail!("{}", super::unknown_entry(name));
    }
    let audit = super::audit(p.by, now);
    match pauses::pause(store, name, p.until, p.reason, &audit).await? {
        Paused::New(row) => println!("paused entry '{name}' {}", pause_text(&row)),
        Paused::Updated { before, after } => println!(
            "entry '{name}' was paused since {}; now paused {}",
            iso(before.paused_at),
            pause_text(&after)
        ),
    }
    Ok(())
}

async fn resume(
    store: &Store,
    name: &str,
    by: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    match pauses::resume(store, name, &super::audit(by, now)).await? {
        Some(row) => println!(
            "resumed entry '{name}' (paused since {}): it fires from its next slot; the paused slots are not caught up",
            iso(row.paused_at)
        ),
        None => println!("entry '{name}' is not paused; nothing changed"),
    }
    Ok(())
}

async fn run_now(
    store: &Store,
    name: &str,
    by: Option<&str>,
    now: DateTime<Utc>,
    output: Output,
    config: &Config,
) -> anyhow::Result<bool> {
    let loaded = super::load_all(&[], config).await?;
    let entry = super::find_entry(&loaded, name)?;
    let sink = SqsSink::connect(config.sqs.clone())
        .await
        .context("cannot reach SQS; nothing was sent")?;
    let opts = crate::wire::MessageOptions::from_config(config);
    let audit = super::audit(by, now);
    let run = crate::beat::ops::run_now(store, &sink, &opts, entry, &audit).await?;
    if let Err(e) = &run.outcome {
        eprintln!(
            "error: entry '{name}' was not sent: {e}; recorded as a failed manual run (task {})",
            run.task_id
        );
        return Ok(false);
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"entry": name, "task_id": run.task_id, "queue": run.queue,
                               "scheduled_at": iso(run.scheduled_at), "trigger": crate::entry::MANUAL_TRIGGER, "status": "sent"})
        ),
        Output::Table => println!(
            "sent entry '{name}' now: task {} on queue {} (sqsbeat_trigger = manual); its schedule is unchanged",
            run.task_id, run.queue
        ),
    }
    Ok(true)
}

async fn history(store: &Store, name: &str, output: Output) -> anyhow::Result<()> {
    let mut events = Vec::new();
    for e in crate::store::history::list(store, name).await? {
        match e {
            Ok(e) => events.push(e),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    match output {
        Output::Json => {
            for e in &events {
                println!("{}", serde_json::to_string(e)?);
            }
        }
        Output::Table => {
            if events.is_empty() {
                println!("no recorded changes to entry '{name}'");
                return Ok(());
            }
            let cells: Vec<[String; 4]> = events
                .iter()
                .map(|e| {
                    [
                        iso(e.at),
                        e.actor.clone(),
                        e.action.clone(),
                        crate::entry::history::describe(&e.detail),
                    ]
                })
                .collect();
            print!("{}", table(["AT (UTC)", "BY", "ACTION", "CHANGE"], &cells));
        }
    }
    Ok(())
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Aligned columns, the last one unpadded.
fn table<const N: usize>(headers: [&str; N], cells: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for c in cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |vals: Vec<&str>| {
        vals.iter()
            .zip(widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for c in cells {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
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
        sentry_monitor: a.sentry_monitor.then_some(true),
    })
}

fn print_rows(
    rows: &[EntryRow],
    paused: &HashMap<String, PauseRow>,
    output: Output,
) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            for r in rows {
                let mut v = serde_json::to_value(r).context("encode")?;
                v["paused"] = serde_json::to_value(paused.get(&r.name))?;
                println!("{}", serde_json::to_string(&v).context("encode")?);
            }
        }
        Output::Table => {
            let cells: Vec<[String; 6]> = rows
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
                        paused.get(&r.name).map_or("no".into(), pause_text),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    ["NAME", "TASK", "SCHEDULE", "QUEUE", "ENABLED", "PAUSED"],
                    &cells
                )
            );
        }
    }
    Ok(())
}
