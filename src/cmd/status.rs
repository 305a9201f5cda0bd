//! `sqsbeat status`: replicas and roles, each entry's last and next fire,
//! pending jobs, recent failures.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::cli::Output;
use crate::config::Config;
use crate::store::{Access, jobs, ledger, replicas};

/// A replica not heard from for this long is shown as gone.
const GONE_AFTER_S: i64 = 30;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
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
    let last = ledger::last_sent(&store).await?;
    let cursors = ledger::load_cursors(&store).await?;
    let buckets = jobs::pending_by_bucket(&store, now).await?;
    let failures = crate::store::recent_failures(&store, 10).await?;

    let entries: Vec<serde_json::Value> = loaded
        .entries
        .iter()
        .map(|e| {
            let from = cursors.get(&e.name).map(|c| c.0.max(now)).unwrap_or(now);
            let next = e.enabled.then(|| e.next_after(from)).flatten().map(|f| iso(e.send_at(f.at)));
            json!({"name": e.name, "enabled": e.enabled, "last_fire": last.get(&e.name).map(|t| iso(*t)), "next_fire": next})
        })
        .collect();
    let replicas_json: Vec<serde_json::Value> = replicas
        .iter()
        .map(|r| {
            let age = (now - r.seen_at).num_seconds();
            json!({"holder": r.holder, "role": if age > GONE_AFTER_S { "gone" } else { r.role.as_str() }, "epoch": r.epoch,
                   "seen_seconds_ago": age, "version": r.version, "started_at": iso(r.started_at)})
        })
        .collect();
    let pending: serde_json::Map<String, serde_json::Value> = buckets
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    match output {
        Output::Json => println!(
            "{}",
            json!({"replicas": replicas_json, "entries": entries, "pending_jobs": pending, "recent_failures": failures})
        ),
        Output::Table => {
            println!("REPLICAS");
            if replicas_json.is_empty() {
                println!("  none has run against this database");
            }
            for r in &replicas_json {
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
            println!("\nENTRIES");
            for e in &entries {
                println!(
                    "  {:<28} {:<9} last {:<22} next {}",
                    e["name"].as_str().unwrap_or(""),
                    if e["enabled"] == true {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    e["last_fire"].as_str().unwrap_or("-"),
                    e["next_fire"].as_str().unwrap_or("-")
                );
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
