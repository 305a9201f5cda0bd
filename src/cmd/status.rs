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

/// One entry's line, and a line each for its pause and last manual run.
fn print_entry(e: &serde_json::Value) {
    let state = if e["paused"].is_object() {
        "paused"
    } else if e["enabled"] == true {
        "enabled"
    } else {
        "disabled"
    };
    println!(
        "  {:<28} {:<9} last {:<22} next {}",
        e["name"].as_str().unwrap_or(""),
        state,
        e["last_fire"].as_str().unwrap_or("-"),
        e["next_fire"].as_str().unwrap_or("-")
    );
    let p = &e["paused"];
    if p.is_object() {
        println!(
            "  {:<28} paused since {} until {} by {}{}",
            "",
            p["since"].as_str().unwrap_or("?"),
            p["until"].as_str().unwrap_or("resumed"),
            p["by"].as_str().unwrap_or("?"),
            p["reason"]
                .as_str()
                .map_or(String::new(), |r| format!(": {r}"))
        );
    }
    let m = &e["last_manual_run"];
    if m.is_object() {
        println!(
            "  {:<28} manual run {} by {} (task {}, {})",
            "",
            m["at"].as_str().unwrap_or("?"),
            m["by"].as_str().unwrap_or("?"),
            m["task_id"].as_str().unwrap_or("?"),
            m["outcome"].as_str().unwrap_or("?")
        );
    }
}

/// Each entry: enabled, last and next fire, its pause, its last manual run.
async fn entries_json(
    store: &crate::store::Store,
    loaded: &[crate::entry::Entry],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let last = ledger::last_sent(store).await?;
    let cursors = ledger::load_cursors(store).await?;
    let mut paused = std::collections::HashMap::new();
    for row in crate::store::pauses::list(store).await? {
        match row {
            Ok(p) if p.active(now) => {
                paused.insert(p.entry.clone(), p);
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: {e}; that pause is not honoured"),
        }
    }
    let manual = crate::store::manual::latest(store).await?;
    Ok(loaded
        .iter()
        .map(|e| {
            let pause = paused.get(&e.name);
            let mut from = cursors.get(&e.name).map(|c| c.0.max(now)).unwrap_or(now);
            // Paused: the next fire is the first slot at or after the end
            // of the pause; none while it has no end.
            let mut fires = e.enabled;
            match pause.map(|p| p.paused_until) {
                Some(Some(until)) => from = from.max(until - chrono::Duration::microseconds(1)),
                Some(None) => fires = false,
                None => {}
            }
            let next = fires.then(|| e.next_after(from)).flatten().map(|f| iso(e.send_at(f.at)));
            let pause_json = pause.map(|p| json!({"since": iso(p.paused_at), "until": p.paused_until.map(iso), "reason": p.reason, "by": p.paused_by}));
            let manual_json = manual.get(&e.name).map(|m| json!({"at": iso(m.requested_at), "task_id": m.task_id, "by": m.actor, "outcome": m.outcome}));
            json!({"name": e.name, "enabled": e.enabled, "last_fire": last.get(&e.name).map(|t| iso(*t)), "next_fire": next,
                   "paused": pause_json, "last_manual_run": manual_json})
        })
        .collect())
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
    let buckets = jobs::pending_by_bucket(&store, now).await?;
    let failures = crate::store::recent_failures(&store, 10).await?;
    let entries = entries_json(&store, &loaded.entries, now).await?;
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
