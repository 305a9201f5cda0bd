//! What `sqsbeat next` shows: upcoming fires per entry, pure.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::entry::Entry;
use crate::schedule::duration::format_duration;

/// One upcoming fire of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upcoming {
    pub entry: String,
    /// When it is sent: the nominal instant plus jitter (RFC 3339, `Z`).
    pub fire_at: String,
    /// The same instant with the entry's UTC offset.
    pub local: String,
    /// The slot it serves, when jitter moves `fire_at` away from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nominal: Option<String>,
    /// What DST did to it, if anything; or why it will not fire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The next `count` fires of each entry after `after`, in ascending order per entry.
pub fn upcoming(entries: &[Entry], after: DateTime<Utc>, count: usize) -> Vec<Upcoming> {
    let mut out = Vec::new();
    for e in entries {
        let tz = e.schedule.display_tz();
        let mut t = after;
        let mut fires = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(fire) = e.next_after(t) else { break };
            t = fire.at;
            let send = e.send_at(fire.at);
            let mut notes = Vec::new();
            if !e.enabled {
                notes.push("disabled: will not fire".to_string());
            }
            if let Some(d) = fire.dst {
                notes.push(d.to_string());
            }
            fires.push(Upcoming {
                entry: e.name.clone(),
                fire_at: send.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                local: send
                    .with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false),
                nominal: (send != fire.at).then(|| {
                    format!(
                        "{} (+{} jitter)",
                        fire.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                        format_duration(send - fire.at)
                    )
                }),
                note: (!notes.is_empty()).then(|| notes.join("; ")),
            });
        }
        // Jitter could reorder neighbours; keep the promise of ascending fire_at.
        fires.sort_by(|a, b| a.fire_at.cmp(&b.fire_at));
        out.extend(fires);
    }
    out
}

/// Renders the human table.
pub fn table(rows: &[Upcoming]) -> String {
    let headers = ["ENTRY", "FIRE AT (UTC)", "LOCAL", "NOTE"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let mut note = r.note.clone().unwrap_or_default();
            if let Some(n) = &r.nominal {
                note = if note.is_empty() {
                    format!("slot {n}")
                } else {
                    format!("slot {n}; {note}")
                };
            }
            [r.entry.clone(), r.fire_at.clone(), r.local.clone(), note]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |vals: [&str; 4]| {
        let text = vals
            .iter()
            .zip(widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3]]);
    }
    out
}
