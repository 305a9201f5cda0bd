//! `sqsbeat schedule | pending | show | cancel | reschedule`: one-off jobs.

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::cli::{CancelArgs, Output, RescheduleArgs, ScheduleArgs};
use crate::config::Config;
use crate::jobs::JobSpec;
use crate::jobs::releaser::Releaser;
use crate::schedule::duration::{parse_duration, parse_instant};
use crate::store::Access;
use crate::store::jobs::{
    self, Cancelled, Filter, Inserted, JobRow, JobStatus, Match, Rescheduled,
};
use crate::wire::sqs::SqsSink;

fn json_arg(flag: &str, text: Option<&str>, default: Value) -> anyhow::Result<Value> {
    match text {
        None => Ok(default),
        Some(t) => {
            serde_json::from_str(t).with_context(|| format!("--{flag} is not valid JSON: {t}"))
        }
    }
}

fn spec_from(a: &ScheduleArgs, now: DateTime<Utc>) -> anyhow::Result<JobSpec> {
    let due_at = match (&a.at, &a.in_) {
        (Some(at), _) => *at,
        // Whole milliseconds: an instant a person reads back and compares.
        (None, Some(d)) => {
            let t = now + parse_duration(d).map_err(|e| anyhow::anyhow!("--in: {e}"))?;
            DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
        }
        (None, None) => bail!("give --at INSTANT or --in DURATION"),
    };
    let args = match json_arg("args", a.args.as_deref(), json!([]))? {
        Value::Array(v) => v,
        other => bail!("--args must be a JSON array (e.g. '[1, \"two\"]'), not {other}"),
    };
    let kwargs = match json_arg("kwargs", a.kwargs.as_deref(), json!({}))? {
        Value::Object(m) => m,
        other => bail!("--kwargs must be a JSON object (e.g. '{{\"account\": 42}}'), not {other}"),
    };
    let mut headers = Map::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once('=')
            .with_context(|| format!("--header {h:?}: expected K=V"))?;
        headers.insert(
            k.to_string(),
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string())),
        );
    }
    let expires_at = match a.expires.as_deref() {
        None => None,
        Some(x) => Some(match parse_duration(x) {
            Ok(d) => due_at + d,
            Err(_) => parse_instant(x).map_err(|_| anyhow::anyhow!("--expires {x:?}: expected a duration after the due instant (e.g. 1h) or an RFC 3339 instant"))?,
        }),
    };
    Ok(JobSpec {
        id: a.id.unwrap_or_else(crate::clock::random_id),
        task: a.task.trim().to_string(),
        args,
        kwargs,
        queue: a.queue.clone(),
        due_at,
        expires_at,
        priority: a.priority,
        headers,
    })
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "cli:{user}@{}",
        gethostname::gethostname().to_string_lossy()
    )
}

/// `now` is the CLI's one clock read, passed in from main.
pub async fn schedule(
    a: ScheduleArgs,
    now: DateTime<Utc>,
    config: &Config,
) -> anyhow::Result<bool> {
    let spec = spec_from(&a, now)?;
    let problems = spec.problems(now, a.allow_past, config.sqs.max_message_bytes);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("not scheduled");
        return Ok(false);
    }
    let store = crate::cmd::open_store(config, Access::Write).await?;
    let mut status = "pending";
    match jobs::insert(&store, &spec, &who()).await? {
        Inserted::Created => {}
        Inserted::Existing(row) => {
            status = if row.status == JobStatus::Pending {
                "pending"
            } else {
                "already-handled"
            };
            eprintln!(
                "job {} was already scheduled with this payload (status {}); nothing changed",
                row.id, row.status
            );
        }
        Inserted::Conflict(row) => bail!(
            "job {} already exists with a different payload (task {}, due {}, status {}); use another --id",
            row.id,
            row.task,
            iso(row.due_at),
            row.status
        ),
    }
    if status == "pending" {
        status = release_if_open(&store, config, spec.id, &spec.queue, spec.due_at, now)
            .await?
            .as_str();
    }
    match a.output {
        Output::Json => println!(
            "{}",
            json!({"id": spec.id, "task": spec.task, "due_at": iso(spec.due_at), "queue": spec.queue, "status": status})
        ),
        Output::Table => println!(
            "{} {} due {} on queue {} ({status})",
            spec.id,
            spec.task,
            iso(spec.due_at),
            spec.queue
        ),
    }
    Ok(true)
}

/// Sends a pending job at once when its release window is open at `now`
/// (straight to SQS with DelaySeconds, as a releaser would), and returns
/// the job's status after: `released` when this pass sent it. A running
/// releaser may have claimed it first (the window opened for it too), so a
/// pass that sent nothing reads the row again and says what it is rather
/// than `pending`. If SQS cannot be reached it stays pending for a running
/// releaser, with a warning.
async fn release_if_open(
    store: &crate::store::Store,
    config: &Config,
    id: Uuid,
    queue: &str,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<JobStatus> {
    let opens = crate::jobs::opens_at(
        due_at,
        config.release_window,
        &crate::wire::queue::QueueName::new(&config.sqs.queue_name_prefix, queue),
    );
    if opens > now {
        return Ok(JobStatus::Pending);
    }
    let sink = match SqsSink::connect(config.sqs.clone()).await {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!(
                "warning: stored, but SQS is not reachable from here ({e:#}); a running sqsbeat releases it"
            );
            return Ok(JobStatus::Pending);
        }
    };
    let releaser = Releaser {
        store: store.clone(),
        sink,
        opts: crate::wire::MessageOptions::from_config(config),
        window: config.release_window,
        max_message_bytes: config.sqs.max_message_bytes,
        clock: crate::clock::Clock::System,
        renew_every: crate::jobs::releaser::RENEW_EVERY,
        // One pass, not the loop: the loop is what consults it.
        trust: tokio::sync::watch::channel(crate::clock::Trust::Unchecked).1,
    };
    // Read again: connecting took time, and the delay SQS gets must count
    // from when the message is actually sent.
    let pass = releaser.pass(releaser.clock.now(), Some(id)).await?;
    if pass.released == 1 {
        return Ok(JobStatus::Released);
    }
    // The job is stored either way: a failed read leaves it `pending` in
    // what this prints rather than failing the command.
    let status = match jobs::get(store, id).await {
        Ok(row) => row.map_or(JobStatus::Pending, |r| r.status),
        Err(_) => JobStatus::Pending,
    };
    if status == JobStatus::Pending {
        eprintln!(
            "warning: not released yet (see `sqsbeat show {id}`); a running sqsbeat releases it"
        );
    }
    Ok(status)
}

/// Lists jobs; a row that cannot be read is an error line naming it (and
/// exit status 1), and the others still list.
pub async fn pending(filter: Filter, output: Output, config: &Config) -> anyhow::Result<bool> {
    let store = crate::cmd::open_store(config, Access::Read).await?;
    let mut rows = Vec::new();
    let mut ok = true;
    for row in jobs::list(&store, &filter).await? {
        match row {
            Ok(r) => rows.push(r),
            Err(e) => {
                ok = false;
                eprintln!("error: {e}");
            }
        }
    }
    match output {
        Output::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Output::Table => print!("{}", table(&rows)),
    }
    Ok(ok)
}

pub async fn show(id: Uuid, output: Output, config: &Config) -> anyhow::Result<bool> {
    let store = crate::cmd::open_store(config, Access::Read).await?;
    let Some(row) = jobs::get(&store, id).await? else {
        bail!("no job with id {id}")
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string(&row)?),
        Output::Table => println!("{}", serde_json::to_string_pretty(&row)?),
    }
    Ok(true)
}

/// `sqsbeat cancel`: by ids, or every pending job of a task (`--task`, in
/// one statement).
pub async fn cancel(a: CancelArgs, config: &Config) -> anyhow::Result<bool> {
    let store = crate::cmd::open_store(config, Access::Write).await?;
    let Some(task) = a.task else {
        return cancel_ids(&store, &a.ids).await;
    };
    let m = Match {
        task,
        queue: a.queue,
        due_after: a.due_after,
        due_before: a.due_before,
    };
    let n = jobs::cancel_matching(&store, &m, a.dry_run).await?;
    let mut scope = format!("of task {}", m.task);
    if let Some(q) = &m.queue {
        scope.push_str(&format!(" on queue {q}"));
    }
    if let Some(t) = m.due_after {
        scope.push_str(&format!(" due at or after {}", iso(t)));
    }
    if let Some(t) = m.due_before {
        scope.push_str(&format!(" due before {}", iso(t)));
    }
    if a.dry_run {
        println!("would cancel {n} pending job(s) {scope} (dry run: nothing changed)");
    } else {
        println!("cancelled {n} pending job(s) {scope}");
    }
    Ok(true)
}

async fn cancel_ids(store: &crate::store::Store, ids: &[Uuid]) -> anyhow::Result<bool> {
    let mut ok = true;
    for id in ids {
        match jobs::cancel(store, *id).await? {
            Cancelled::Done => println!("cancelled {id}"),
            Cancelled::BeingReleased => {
                ok = false;
                eprintln!(
                    "error: job {id} is being released now (handed to SQS): it cannot be cancelled; if the send fails it becomes pending again, and `sqsbeat cancel {id}` works then"
                );
            }
            Cancelled::NotPending(s) => {
                ok = false;
                eprintln!(
                    "error: job {id} is {s}, not pending; only pending jobs can be cancelled"
                );
            }
            Cancelled::Missing => {
                ok = false;
                eprintln!("error: no job with id {id}");
            }
        }
    }
    Ok(ok)
}

/// `sqsbeat reschedule`: a pending job gets a new due instant and keeps its
/// id; into the release window, it is released at once as `schedule`
/// does. `now` is the CLI's one clock read.
pub async fn reschedule(
    a: RescheduleArgs,
    now: DateTime<Utc>,
    config: &Config,
) -> anyhow::Result<bool> {
    let due_at = match (&a.at, &a.in_) {
        (Some(at), _) => *at,
        (None, Some(d)) => {
            let t = now + parse_duration(d).map_err(|e| anyhow::anyhow!("--in: {e}"))?;
            DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
        }
        (None, None) => bail!("give --at INSTANT or --in DURATION"),
    };
    if due_at < now {
        bail!(
            "the new due instant {} is in the past; give a later one (--in 1s sends the job now)",
            iso(due_at)
        );
    }
    let store = crate::cmd::open_store(config, Access::Write).await?;
    let Some(row) = jobs::get(&store, a.id).await? else {
        bail!("no job with id {}", a.id)
    };
    if let Ok(mut spec) = row.spec() {
        spec.due_at = due_at;
        let problems = spec.problems(now, true, config.sqs.max_message_bytes);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("not rescheduled");
            return Ok(false);
        }
    }
    let id = a.id;
    match jobs::reschedule(&store, id, due_at).await? {
        Rescheduled::Done => {}
        Rescheduled::BeingReleased => bail!(
            "job {id} is being released now (handed to SQS): it cannot be rescheduled; if the send fails it becomes pending again, and `sqsbeat reschedule {id}` works then"
        ),
        Rescheduled::NotPending(s) => {
            bail!("job {id} is {s}, not pending; only pending jobs can be rescheduled")
        }
        Rescheduled::Missing => bail!("no job with id {id}"),
    }
    let status = release_if_open(&store, config, id, &row.queue, due_at, now)
        .await?
        .as_str();
    match a.output {
        Output::Json => println!(
            "{}",
            json!({"id": id, "task": row.task, "due_at": iso(due_at), "previous_due_at": iso(row.due_at), "queue": row.queue, "status": status})
        ),
        Output::Table => println!(
            "{id} {} rescheduled from {} to {} on queue {} ({status})",
            row.task,
            iso(row.due_at),
            iso(due_at),
            row.queue
        ),
    }
    Ok(true)
}

fn table(rows: &[JobRow]) -> String {
    let headers = ["ID", "TASK", "DUE (UTC)", "QUEUE", "STATUS", "ATTEMPTS"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.task.clone(),
                iso(r.due_at),
                r.queue.clone(),
                r.status.to_string(),
                r.attempts.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |vals: [&str; 6]| {
        let l = vals
            .iter()
            .zip(widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]);
    }
    out
}
