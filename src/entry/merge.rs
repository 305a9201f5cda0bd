//! Periodic entries from the database, judged by the same validation as
//! schedule files: a row becomes a `RawEntry`; rows that do not validate
//! are set aside on their own (applications and people write that table,
//! and one bad row must not take every schedule down); files and rows are
//! merged, and a name defined in both places is an error naming both.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::entry::file::{Diagnostic, Loaded};
use crate::entry::{self, Context, Entry, Origin, RawCrontab, RawEntry, RawInstant};
use crate::store::StoreError;
use crate::store::entries::EntryRow;

/// Where database entries say they come from, in diagnostics.
pub const SOURCE: &str = "database entries table";

impl EntryRow {
    /// The TOML-shaped entry this row describes. A crontab that is not a
    /// table of the known fields is reported by the caller.
    pub fn to_raw(&self) -> Result<RawEntry, String> {
        let crontab = match &self.crontab {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<RawCrontab>(v.clone())
                    .map_err(|e| format!("crontab must be an object with minute, hour, day_of_week, day_of_month, month_of_year: {e}"))?,
            ),
        };
        let instant = |t: &Option<DateTime<Utc>>| {
            t.map(|t| RawInstant::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        };
        Ok(RawEntry {
            task: Some(self.task.clone()),
            cron: self.cron.clone(),
            crontab,
            every: self.every.clone(),
            timezone: self.timezone.clone(),
            args: Some(self.args.clone()),
            kwargs: Some(self.kwargs.clone()),
            queue: self.queue.clone(),
            priority: self.priority,
            headers: Some(self.headers.clone()),
            expires: self.expires.clone(),
            enabled: Some(self.enabled),
            start_at: instant(&self.start_at),
            end_at: instant(&self.end_at),
            catch_up: self.catch_up.clone(),
            grace: self.grace.clone(),
            jitter: self.jitter.clone(),
            anchor: instant(&self.anchor),
            group_id: self.group_id.clone(),
            sentry_monitor: self.sentry_monitor,
        })
    }
}

/// Validates rows as entries, with diagnostics naming the table. A row the
/// store could not read is an error naming it, like a row that does not
/// validate.
pub fn validate(rows: &[Result<EntryRow, StoreError>], ctx: &Context) -> Loaded {
    let mut out = Loaded::default();
    // Shared by every row's origin.
    let source = crate::entry::SharedName::from(SOURCE);
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let (name, message) = match e {
                    StoreError::Decode {
                        column,
                        row,
                        reason,
                        ..
                    } => (
                        row.clone(),
                        format!("cannot read column {column}: {reason}; fix the row or delete it"),
                    ),
                    other => ("?".to_string(), other.to_string()),
                };
                out.names.push((
                    name.clone(),
                    Origin {
                        file: source.clone(),
                        line: 0,
                    },
                ));
                out.diagnostics.push(Diagnostic {
                    file: SOURCE.to_string(),
                    line: 0,
                    entry: Some(name),
                    message,
                    warning: false,
                });
                continue;
            }
        };
        let origin = Origin {
            file: source.clone(),
            line: 0,
        };
        out.names.push((row.name.clone(), origin.clone()));
        let diag = |message: String, warning: bool| Diagnostic {
            file: SOURCE.to_string(),
            line: 0,
            entry: Some(row.name.clone()),
            message,
            warning,
        };
        let raw = match row.to_raw() {
            Ok(r) => r,
            Err(m) => {
                out.diagnostics.push(diag(m, false));
                continue;
            }
        };
        let (entry, problems) = entry::validate(&row.name, raw, origin, ctx);
        out.diagnostics
            .extend(problems.into_iter().map(|p| diag(p.message, p.warning)));
        out.entries.extend(entry);
    }
    out
}

/// Sets aside the rows that do not validate, so that they cannot stop the
/// beat: applications and people write this table, and one bad row must
/// not take every schedule down (schedule files, checked before a deploy,
/// stay strict). A row set aside keeps the definition it last had in
/// `current`, if any; the errors come back for the caller to report.
pub fn set_aside_invalid(db: Loaded, current: &[Entry]) -> (Loaded, Vec<Diagnostic>) {
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        db.diagnostics.into_iter().partition(|d| !d.warning);
    let bad: std::collections::HashSet<&str> =
        errors.iter().filter_map(|d| d.entry.as_deref()).collect();
    let entries = db
        .entries
        .into_iter()
        .filter(|e| !bad.contains(e.name.as_str()))
        .chain(
            current
                .iter()
                .filter(|e| &*e.origin.file == SOURCE && bad.contains(e.name.as_str()))
                .cloned(),
        )
        .collect();
    let kept = Loaded {
        entries,
        diagnostics: warnings,
        names: db.names,
        notice: db.notice,
    };
    (kept, errors)
}

/// Sets aside the rows whose name a schedule file also defines: the file's
/// definition keeps firing, and the error names both places. A row anyone
/// can insert must not stop `run` or freeze reloads (a running replica
/// would reject every later reload), which refusing the whole set did.
pub fn set_aside_clashes(files: &Loaded, db: Loaded) -> (Loaded, Vec<Diagnostic>) {
    let in_files: std::collections::HashMap<&str, &Origin> =
        files.names.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let mut errors = Vec::new();
    for (name, _) in &db.names {
        if let Some(o) = in_files.get(name.as_str()) {
            errors.push(Diagnostic {
                file: SOURCE.to_string(),
                line: 0,
                entry: Some(name.clone()),
                message: format!(
                    "also defined in {}:{}; the file's definition fires and this row is not loaded (remove it with `sqsbeat entries remove {name}`, or rename it)",
                    o.file, o.line
                ),
                warning: false,
            });
        }
    }
    let clashing: std::collections::HashSet<&str> =
        errors.iter().filter_map(|d| d.entry.as_deref()).collect();
    let kept = Loaded {
        entries: db
            .entries
            .into_iter()
            .filter(|e| !clashing.contains(e.name.as_str()))
            .collect(),
        diagnostics: db.diagnostics,
        names: db
            .names
            .into_iter()
            .filter(|(n, _)| !clashing.contains(n.as_str()))
            .collect(),
        notice: db.notice,
    };
    (kept, errors)
}

/// Files and database together: a name in both is an error naming both
/// places, and neither definition is loaded (what `check` reports; `run`
/// first sets clashing rows aside with [`set_aside_clashes`]).
pub fn merge(files: Loaded, db: Loaded) -> Loaded {
    let mut out = Loaded::default();
    let in_files: std::collections::HashMap<&str, &Origin> =
        files.names.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let clashes: std::collections::HashSet<String> = db
        .names
        .iter()
        .filter(|(n, _)| in_files.contains_key(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    for name in &clashes {
        let o = in_files[name.as_str()];
        out.diagnostics.push(Diagnostic {
            file: o.file.to_string(),
            line: o.line,
            entry: Some(name.clone()),
            message: format!("also defined in the {SOURCE}; keep one (remove it with `sqsbeat entries remove {name}` or from the file)"),
            warning: false,
        });
    }
    out.diagnostics.extend(files.diagnostics);
    out.diagnostics.extend(db.diagnostics);
    out.entries = files
        .entries
        .into_iter()
        .chain(db.entries)
        .filter(|e| !clashes.contains(&e.name))
        .collect();
    out.names = files.names.into_iter().chain(db.names).collect();
    out.notice = files.notice;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, every: &str) -> Result<EntryRow, StoreError> {
        Ok(EntryRow {
            name: name.into(),
            task: "app.t".into(),
            cron: None,
            crontab: None,
            every: Some(every.into()),
            timezone: None,
            args: Value::Array(vec![]),
            kwargs: Value::Object(Default::default()),
            queue: None,
            priority: None,
            headers: Value::Object(Default::default()),
            expires: None,
            enabled: true,
            start_at: None,
            end_at: None,
            catch_up: None,
            grace: None,
            jitter: None,
            anchor: None,
            group_id: None,
            sentry_monitor: None,
        })
    }

    #[test]
    fn a_bad_row_is_set_aside_alone_and_keeps_its_last_good_definition() {
        let ctx = Context::default();
        let before = validate(&[row("edited", "5m"), row("steady", "1m")], &ctx);
        assert!(!before.has_errors());
        let now = validate(
            &[
                row("edited", "-5m"),
                row("steady", "1m"),
                row("new_bad", "soon"),
            ],
            &ctx,
        );
        assert!(now.has_errors());
        let (kept, errors) = set_aside_invalid(now, &before.entries);
        assert!(!kept.has_errors());
        let names: Vec<&str> = kept.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["steady", "edited"]);
        let edited = kept.entries.iter().find(|e| e.name == "edited").unwrap();
        assert_eq!(
            format!("{edited:?}"),
            format!("{:?}", before.entries[0]),
            "the last good definition"
        );
        let named: Vec<&str> = errors.iter().filter_map(|d| d.entry.as_deref()).collect();
        assert_eq!(named, ["edited", "new_bad"]);
        // A new process has no last good definition: the row is just out.
        let (fresh, _) = set_aside_invalid(validate(&[row("edited", "-5m")], &ctx), &[]);
        assert!(fresh.entries.is_empty());
    }

    #[test]
    fn a_row_named_like_a_file_entry_is_set_aside_and_the_file_keeps_firing() {
        // Regression: such a row stopped `run` at start-up and froze every
        // later reload of a running replica.
        let ctx = Context::default();
        let files = crate::entry::file::parse_str(
            "schedules/app.toml",
            "[entries.x]\ntask = \"app.file\"\nevery = \"1m\"\n",
            &ctx,
        );
        let db = validate(&[row("x", "5m"), row("y", "5m")], &ctx);
        let (db, errors) = set_aside_clashes(&files, db);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].entry.as_deref(), Some("x"));
        assert!(
            errors[0].message.contains("schedules/app.toml:1"),
            "{}",
            errors[0]
        );
        let merged = merge(files, db);
        assert!(!merged.has_errors(), "{:?}", merged.diagnostics);
        let x: Vec<_> = merged.entries.iter().filter(|e| e.name == "x").collect();
        assert_eq!(x.len(), 1);
        assert_eq!(&*x[0].task, "app.file", "the file's definition fires");
        assert!(merged.entries.iter().any(|e| e.name == "y"));
    }
}
