//! `sqsbeat status`: replicas and roles, each entry's last and next fire,
//! whether it is overdue, its pause and its last manual run, pending jobs,
//! recent failures.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cli::Output;
use crate::config::Config;
use crate::runtime::status::{self, EntryStatus, iso};
use crate::store::{Access, jobs, replicas};

/// One entry's line, and a line each for its pause and last manual run.
fn print_entry(e: &EntryStatus) {
    let state = match (&e.paused, e.enabled, e.overdue) {
        (Some(_), _, _) => "paused",
        (None, false, _) => "disabled",
        (None, true, true) => "OVERDUE",
        (None, true, false) => "enabled",
    };
    println!(
        "  {:<28} {:<9} last {:<22} next {}{}",
        e.name,
        state,
        e.last_fire.as_deref().unwrap_or("-"),
        e.next_fire.as_deref().unwrap_or("-"),
        e.overdue_slot
            .as_deref()
            .map(|s| format!("  (slot {s} neither sent nor missed)"))
            .unwrap_or_default()
    );
    if let Some(p) = &e.paused {
        println!(
            "  {:<28} paused since {} until {} by {}{}",
            "",
            p.since,
            p.until.as_deref().unwrap_or("resumed"),
            p.by,
            p.reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {r}"))
        );
    }
    if let Some(m) = &e.last_manual_run {
        println!(
            "  {:<28} manual run {} by {} (task {}, {})",
            "", m.at, m.by, m.task_id, m.outcome
        );
    }
}

pub async fn run(output: Output, now: DateTime<Utc>, config: &Config) -> anyhow::Result<bool> {
    let loaded = super::load_all(&[], config).await?;
    // An entry that does not load (a row that cannot be read, a file with
    // an error) is not listed below: say which and why.
    for d in loaded.errors() {
        eprintln!("warning: {d}; not listed");
    }
    let store = crate::cmd::open_store(config, Access::Read).await?;
    let replicas = replicas::replicas(&store).await?;
    let all: Vec<&crate::entry::Entry> = loaded.entries.iter().collect();
    let entries = status::entry_statuses(&store, &all, now).await?;
    let buckets = jobs::pending_by_bucket(&store, now).await?;
    let failures = crate::store::recent_failures(&store, 10).await?;

    let replicas_json: Vec<serde_json::Value> = replicas
        .iter()
        .map(|r| status::replica_json(r, now))
        .collect();
    let pending: serde_json::Map<String, serde_json::Value> = buckets
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let overdue = entries.iter().filter(|e| e.overdue).count();
    match output {
        Output::Json => println!(
            "{}",
            json!({"replicas": replicas_json, "entries": entries, "overdue": overdue,
                   "pending_jobs": pending, "recent_failures": failures})
        ),
        Output::Table => {
            print_replicas(&replicas_json);
            println!("\nENTRIES  {}, {overdue} overdue", entries.len());
            for e in &entries {
                print_entry(e);
            }
            let total: i64 = buckets.iter().map(|b| b.1).sum();
            println!(
                "\nPENDING JOBS  {total} ({})",
                buckets
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("\nRECENT FAILURES");
            if failures.is_empty() {
                println!("  none");
            }
            for f in &failures {
                println!(
                    "  {:<4} {:<36} {}  attempts {}  {}",
                    f.kind,
                    f.name,
                    f.at.map_or("-".to_string(), iso),
                    f.attempts,
                    f.error
                );
            }
        }
    }
    Ok(true)
}

fn print_replicas(replicas: &[serde_json::Value]) {
    println!("REPLICAS");
    if replicas.is_empty() {
        println!("  none has run against this database");
    }
    for r in replicas {
        println!(
            "  {:<28} {:<8} epoch {:<5} seen {}s ago  v{}",
            r["holder"].as_str().unwrap_or(""),
            r["role"].as_str().unwrap_or(""),
            r["epoch"]
                .as_i64()
                .map_or("-".to_string(), |e| e.to_string()),
            r["seen_seconds_ago"],
            r["version"].as_str().unwrap_or("")
        );
    }
}
