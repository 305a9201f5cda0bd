//! Every fenced example in README.md and python/INTAKE.md, run as written,
//! so a user who follows them meets no broken one.
//!
//! Each block is classified by its info string (and, where one info string
//! covers several uses, by what it holds) and run the way a user would:
//! SQL from a plain PostgreSQL connection with the default search_path, in
//! a database where sqsbeat is migrated beside an application's own
//! `public.jobs` and `public.entries`; `$ sqsbeat ...` transcripts in a
//! shell against the built binary, with the README's example schedule and
//! moto; schedule files through `sqsbeat check`; `sqsbeat.toml` snippets
//! through the configuration loader; Python with the venv's Celery and
//! Django. Judged by exit status, database state, the queues' contents and
//! the documented output lines (ids and instants matched, not copied).
//!
//! A block the test cannot classify fails it, unless the line before it is
//! `<!-- not run by tests/it/readme.rs: REASON -->`. A command synopsis is
//! marked `<!-- synopsis: ... -->` and checked against each command's
//! `--help`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection};

use crate::pg::TestDb;
use crate::stack::{self, Proc};

const FILES: &[&str] = &["README.md", "python/INTAKE.md"];
const NOT_RUN: &str = "<!-- not run by tests/it/readme.rs:";
const SYNOPSIS: &str = "<!-- synopsis:";

/// The instant the transcripts were written at (the pause's `until` in
/// "Operating a running schedule" is two hours after it). They name
/// absolute instants (`--due-before`, a backfill's range) that hold only
/// around then, so they run under libfaketime at this instant.
const TRANSCRIPT_NOW: &str = "2026-11-28 12:00:00";

/// How far an instant a transcript prints may be from the documented one.
const INSTANT_TOLERANCE_S: i64 = 60;

#[derive(Debug)]
struct Block {
    file: &'static str,
    line: usize,
    info: String,
    body: String,
    mark: Option<String>,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The fenced blocks of a Markdown file, with the HTML comment on the line
/// before each, if any.
fn blocks(file: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(stack::repo().join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("{file}:{}: unclosed code block", start + 1));
        let mark = (0..start)
            .rev()
            .map(|j| lines[j].trim())
            .find(|l| !l.is_empty())
            .filter(|l| l.starts_with("<!--"))
            .map(str::to_string);
        out.push(Block {
            file,
            line: start + 1,
            info: info.trim().to_string(),
            body: lines[start + 1..end].join("\n") + "\n",
            mark,
        });
        i = end + 1;
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    NotRun,
    Synopsis,
    Transcript,
    /// Shell lines that export a beat_schedule: run in a Celery project
    /// whose config is the README's `celeryconfig.py` block.
    Export,
    /// A `beat_schedule` config module: the export's input.
    CeleryConfig,
    Schedule,
    Config,
    Sql,
    Django,
    Install,
    Json,
    Yaml,
    Layout,
}

fn classify(b: &Block) -> Result<Kind, String> {
    if let Some(mark) = &b.mark {
        if let Some(reason) = mark.strip_prefix(NOT_RUN) {
            let reason = reason.trim_end_matches("-->").trim();
            return if reason.is_empty() {
                Err("a block not run must say why".into())
            } else {
                Ok(Kind::NotRun)
            };
        }
        if mark.starts_with(SYNOPSIS) {
            return Ok(Kind::Synopsis);
        }
    }
    let body = &b.body;
    let kind = match b.info.as_str() {
        "sql" => Kind::Sql,
        "toml" if body.contains("[entries.") => Kind::Schedule,
        "toml" => Kind::Config,
        "json" => Kind::Json,
        "yaml" => Kind::Yaml,
        "" => Kind::Layout,
        "bash" | "sh" | "console" if body.lines().any(|l| l.starts_with("$ ")) => Kind::Transcript,
        "bash" | "sh" if body.contains("sqsbeat_celery export-schedule") => Kind::Export,
        "python" if body.contains("sqsbeat_celery.install(app)") => Kind::Install,
        "python" if body.contains("beat_schedule = {") => Kind::CeleryConfig,
        "python" if body.contains("from django.db import") => Kind::Django,
        other => {
            return Err(format!(
                "a ```{other} block this test does not know how to run: teach tests/it/readme.rs to run it, or put `{NOT_RUN} why -->` on the line before it"
            ));
        }
    };
    Ok(kind)
}

/// What the blocks run against: one temp dir, one moto, one database.
struct Ctx {
    dir: tempfile::TempDir,
    endpoint: String,
    db: TestDb,
    _moto: Proc,
}

impl Ctx {
    fn d(&self) -> &Path {
        self.dir.path()
    }

    /// A directory of its own under the temp dir.
    fn sub(&self, name: &str) -> PathBuf {
        let p = self.d().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The environment of the README's "From another terminal" exports,
    /// with `sqsbeat` and the venv's `python` first on PATH and nothing
    /// from the developer's own configuration.
    fn shell(&self, dir: &Path, script: &str) -> Command {
        let bin = self.d().join("bin");
        if !bin.exists() {
            std::fs::create_dir(&bin).unwrap();
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sqsbeat"), bin.join("sqsbeat")).unwrap();
        }
        let venv = stack::python().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}:{}",
            bin.display(),
            venv.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-e", "-c", script])
            .current_dir(dir)
            .env("PATH", path)
            .env("TZ", "UTC")
            .env("AWS_ACCESS_KEY_ID", "dev")
            .env("AWS_SECRET_ACCESS_KEY", "dev")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SQSBEAT_SQS_ENDPOINT_URL", &self.endpoint)
            .env_remove("AWS_PROFILE")
            .env_remove("DATABASE_URL")
            .env_remove("SQSBEAT_DATABASE_URL")
            .env_remove("SQSBEAT_SCHEDULES_PATHS")
            .env_remove("SQSBEAT_SCHEDULES_TIMEZONE")
            .env_remove("SQSBEAT_LOG");
        cmd
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    stack::output_within(cmd, Duration::from_secs(60))
}

fn succeeded(what: &str, out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

fn python(dir: &Path, code: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let out = run(Command::new(stack::python())
        .args(["-c", code])
        .current_dir(dir)
        .envs(env.iter().copied()));
    succeeded("python", &out)
}

/// The last line of a Python run's output, as JSON.
fn last_json(stdout: &str) -> Result<Value, String> {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_in_the_readme_runs_as_written() {
    let all: Vec<Block> = FILES.iter().flat_map(|&f| blocks(f)).collect();
    let mut failures = Vec::new();
    let mut kinds = Vec::new();
    for b in &all {
        match classify(b) {
            Ok(k) => kinds.push(k),
            Err(e) => {
                failures.push(format!("{}: {e}", b.at()));
                kinds.push(Kind::NotRun);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (moto, endpoint) = stack::moto(dir.path());
    for q in ["celery", "sqsbeat-intake"] {
        stack::create_queue(&endpoint, q);
    }
    let ctx = Ctx {
        dir,
        endpoint,
        db: migrated_db().await,
        _moto: moto,
    };
    for (i, (b, kind)) in all.iter().zip(&kinds).enumerate() {
        eprintln!("{}: {kind:?}", b.at());
        let result = match kind {
            Kind::NotRun | Kind::CeleryConfig => Ok(()),
            Kind::Synopsis => synopsis(&ctx, b),
            Kind::Transcript => transcript(&ctx, b),
            Kind::Export => export(&ctx, b, &all, &kinds),
            Kind::Schedule => schedule(&ctx, b, i),
            Kind::Config => config(b),
            Kind::Sql => sql(&ctx, b).await,
            Kind::Django => django(&ctx, b).await,
            Kind::Install => install(&ctx, b),
            Kind::Json => json(&ctx, b),
            Kind::Yaml => yaml(&ctx, b),
            Kind::Layout => layout(b),
        };
        if let Err(e) = result {
            failures.push(format!("{} ({kind:?}): {e}", b.at()));
        }
    }
    if let Err(e) = rows_are_sqsbeats(&ctx).await {
        failures.push(format!("after the SQL examples: {e}"));
    }
    for (want, min) in [(Kind::Sql, 2), (Kind::Transcript, 2), (Kind::Schedule, 2)] {
        let n = kinds.iter().filter(|k| **k == want).count();
        if n < min {
            failures.push(format!(
                "expected at least {min} {want:?} blocks, found {n}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A fresh database with the application's tables (`pg.rs`), migrated by
/// `sqsbeat migrate` as a user migrates it.
async fn migrated_db() -> TestDb {
    let db = TestDb::new().await;
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = stack::cli(d.path(), Some(&db.url), None, &["migrate"]);
    assert_eq!(code, 0, "sqsbeat migrate: {err}");
    db
}

/// A plain connection, as an application opens one: no options, so the
/// default search_path (`"$user", public`).
async fn app_connection(ctx: &Ctx) -> Result<sqlx::PgConnection, String> {
    let mut conn = sqlx::PgConnection::connect(&ctx.db.url)
        .await
        .map_err(|e| e.to_string())?;
    let path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if path != "\"$user\", public" {
        return Err(format!("not the default search_path: {path}"));
    }
    Ok(conn)
}

async fn sql(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let mut conn = app_connection(ctx).await?;
    for stmt in b.body.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        let stmt = stmt.trim_end_matches(';');
        let done = sqlx::raw_sql(AssertSqlSafe(stmt.to_string()))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("{stmt}: {e}"))?;
        let writes = ["INSERT", "UPDATE", "DELETE"]
            .iter()
            .any(|w| stmt.to_ascii_uppercase().starts_with(w));
        if writes && done.rows_affected() == 0 {
            return Err(format!("{stmt}: changed no row"));
        }
    }
    Ok(())
}

/// The README's Django snippet inside a minimal application: Django with
/// the test database, an `Invoice` model and an account.
async fn django(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let fixture = stack::repo().join("tests/fixtures/django");
    // No `import json` here: the snippet must bring what it uses.
    let prelude = format!(
        r#"import os, sys
sys.path.insert(0, {fixture:?})
os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
import django
django.setup()
from django.db import models, connection as _conn

class Account(models.Model):
    class Meta:
        app_label = "billing"

class Invoice(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE)
    class Meta:
        app_label = "billing"

with _conn.schema_editor() as _editor:
    _editor.create_model(Account)
    _editor.create_model(Invoice)
account = Account.objects.create()
"#,
        fixture = fixture.display().to_string()
    );
    let epilogue = "\nimport json as _json\nprint(_json.dumps({\"task_id\": str(task_id), \"account\": account.id}))\n";
    let code = format!("{prelude}\n{}{epilogue}", b.body);
    let out = python(ctx.d(), &code, &[("DATABASE_URL", &ctx.db.url)])?;
    let v = last_json(&out)?;
    let id: uuid::Uuid = v["task_id"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{e}: {v}"))?;
    let mut conn = app_connection(ctx).await?;
    let row: Option<(String, Value, bool)> = sqlx::query_as(
        "SELECT task, kwargs, due_at BETWEEN now() + interval '14 days' - interval '1 minute' AND now() + interval '14 days'
         FROM sqsbeat.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let want = (
        "app.tasks.send_report".to_string(),
        serde_json::json!({"account": v["account"]}),
        true,
    );
    match row {
        Some(r) if r == want => Ok(()),
        other => Err(format!(
            "sqsbeat.jobs row {id}: {other:?}, expected {want:?}"
        )),
    }
}

/// Whatever the SQL and Django examples wrote is in sqsbeat's tables, as
/// rows sqsbeat reads as valid, and nothing in the application's.
async fn rows_are_sqsbeats(ctx: &Ctx) -> Result<(), String> {
    let mut conn = app_connection(ctx).await?;
    for table in ["public.jobs", "public.entries"] {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if n != 0 {
            return Err(format!("{n} row(s) in the application's {table}"));
        }
    }
    let d = ctx.sub("rows");
    let url = Some(ctx.db.url.as_str());
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM sqsbeat.jobs")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err("no job in sqsbeat.jobs".into());
    }
    for id in ids {
        let (code, out, err) = stack::cli(&d, url, None, &["show", &id.to_string()]);
        if code != 0 || !out.contains("pending") {
            return Err(format!("sqsbeat show {id}: {out}{err}"));
        }
    }
    let (code, out, err) = stack::cli(&d, url, None, &["check"]);
    if code != 0 {
        return Err(format!("sqsbeat check on the entries table: {out}{err}"));
    }
    Ok(())
}

fn schedule(ctx: &Ctx, b: &Block, i: usize) -> Result<(), String> {
    let d = ctx.sub(&format!("schedule-{i}"));
    std::fs::write(d.join("example.toml"), &b.body).unwrap();
    let out = run(&mut ctx.shell(&d, "sqsbeat check example.toml"));
    let stdout = succeeded("sqsbeat check", &out)?;
    if stdout.starts_with("ok: ") {
        Ok(())
    } else {
        Err(stdout)
    }
}

fn config(b: &Block) -> Result<(), String> {
    sqsbeat::config::parse(&b.at(), Some(&b.body), &|_| None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The first schedule file example, as `schedules/example.toml` of the
/// directory the transcripts run in (its `nightly-report` goes to
/// `celery`, as the transcripts print).
fn transcript_dir(ctx: &Ctx) -> PathBuf {
    let d = ctx.d().join("transcripts");
    if !d.exists() {
        let readme = blocks("README.md");
        let first = readme
            .iter()
            .find(|b| b.info == "toml" && b.body.contains("[entries."))
            .expect("a schedule example");
        std::fs::create_dir_all(d.join("schedules")).unwrap();
        std::fs::write(d.join("schedules/example.toml"), &first.body).unwrap();
    }
    d
}

/// `$ command` lines, each followed by the output lines it documents.
fn steps(body: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in body.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_string(), Vec::new()));
        } else if let Some(last) = steps.last_mut()
            && !line.trim().is_empty()
        {
            last.1.push(line.to_string());
        }
    }
    steps
}

/// Runs each command in a shell under libfaketime at [`TRANSCRIPT_NOW`],
/// on the default SQLite store; every documented output line must appear.
/// A documented task id stands for the one the command printed, in later
/// commands too.
fn transcript(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let d = transcript_dir(ctx);
    let mut ids: HashMap<String, String> = HashMap::new();
    for (cmd, expected) in steps(&b.body) {
        let cmd = ids.iter().fold(cmd, |c, (doc, real)| c.replace(doc, real));
        let mut sh = ctx.shell(&d, &cmd);
        sh.env("LD_PRELOAD", crate::clock::libfaketime())
            .env("FAKETIME", format!("@{TRANSCRIPT_NOW}"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        let out = run(&mut sh);
        let stdout = succeeded(&format!("`{cmd}`"), &out)?;
        for want in &expected {
            let found = stdout.lines().find_map(|got| {
                let mut tentative = ids.clone();
                line_matches(want, got, &mut tentative).then_some(tentative)
            });
            match found {
                Some(bound) => ids = bound,
                None => {
                    return Err(format!(
                        "`{cmd}` printed no line like\n  {want}\nbut:\n{stdout}{}",
                        text(&out.stderr)
                    ));
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug)]
enum Piece {
    Lit(String),
    Id(String),
    Time(DateTime<Utc>),
}

fn uuid_at(s: &str) -> Option<&str> {
    let cand = s.get(..36)?;
    let ok = cand.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    ok.then_some(cand)
}

/// An RFC 3339 instant at the start of `s` (seconds, fraction, offset).
fn instant_at(s: &str) -> Option<(&str, DateTime<Utc>)> {
    if s.len() < 20 || s.as_bytes()[10] != b'T' || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let mut end = 19;
    let bytes = s.as_bytes();
    if bytes.get(end) == Some(&b'.') {
        end += 1;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    end += match bytes.get(end) {
        Some(b'Z') => 1,
        Some(b'+' | b'-') => 6,
        _ => return None,
    };
    let t = s.get(..end)?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|v| (t, v.to_utc()))
}

fn pieces(line: &str) -> Vec<Piece> {
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = line.as_str();
    while let Some(c) = rest.chars().next() {
        let piece = if let Some(id) = uuid_at(rest) {
            Some((id.len(), Piece::Id(id.to_string())))
        } else {
            instant_at(rest).map(|(t, v)| (t.len(), Piece::Time(v)))
        };
        match piece {
            Some((len, p)) => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(p);
                rest = &rest[len..];
            }
            None => {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

/// Whether `got` is the documented line `want`: the same text, where a
/// task id is any id (the same one wherever the documented id recurs) and
/// an instant is within [`INSTANT_TOLERANCE_S`] of the documented one.
/// Two documented ids are two printed ids.
fn line_matches(want: &str, got: &str, ids: &mut HashMap<String, String>) -> bool {
    let (w, g) = (pieces(want), pieces(got));
    w.len() == g.len()
        && w.iter().zip(&g).all(|pair| match pair {
            (Piece::Lit(a), Piece::Lit(b)) => a == b,
            (Piece::Time(a), Piece::Time(b)) => {
                (*a - *b).num_seconds().abs() <= INSTANT_TOLERANCE_S
            }
            (Piece::Id(a), Piece::Id(b)) => match ids.get(a) {
                Some(bound) => bound == b,
                // One printed id stands for one documented id.
                None if ids.values().any(|v| v == b) => false,
                None => {
                    ids.insert(a.clone(), b.clone());
                    true
                }
            },
            _ => false,
        })
}

/// The export block, run in a Celery project whose config module is the
/// README's `celeryconfig.py`; what it writes must read as the schedule
/// file shown beside that module.
fn export(ctx: &Ctx, b: &Block, all: &[Block], kinds: &[Kind]) -> Result<(), String> {
    let at = kinds
        .iter()
        .position(|k| *k == Kind::CeleryConfig)
        .ok_or("no celeryconfig.py (beat_schedule) block")?;
    let shown = all
        .get(at + 1)
        .filter(|_| kinds[at + 1] == Kind::Schedule)
        .ok_or("no schedule file block beside the beat_schedule block")?;
    let d = ctx.sub("celery-project");
    std::fs::create_dir_all(d.join("proj")).unwrap();
    std::fs::write(d.join("proj/__init__.py"), "").unwrap();
    std::fs::write(
        d.join("proj/celery.py"),
        "from celery import Celery\n\napp = Celery(\"proj\")\napp.config_from_object(\"celeryconfig\")\n",
    )
    .unwrap();
    std::fs::write(d.join("celeryconfig.py"), &all[at].body).unwrap();
    let out = run(&mut ctx.shell(&d, &b.body));
    let stdout = succeeded("the export commands", &out)?;
    let written =
        std::fs::read_to_string(d.join("schedules/app.toml")).map_err(|e| e.to_string())?;
    let (ours, theirs) = (normalized(&written)?, normalized(&shown.body)?);
    if ours != theirs {
        return Err(format!(
            "export-schedule wrote\n{written}\nwhich differs from {}:\n{}",
            shown.at(),
            shown.body
        ));
    }
    let missing: Vec<&String> = theirs["entries"]
        .as_table()
        .map(|t| {
            t.keys()
                .filter(|name| !stdout.contains(name.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("`next` shows no fire of {missing:?}:\n{stdout}"))
    }
}

/// A schedule file's values, with crontab fields as strings (Celery's
/// `crontab(minute=0)` and `minute = "0"` are the same field).
fn normalized(toml_text: &str) -> Result<toml::Table, String> {
    let mut t: toml::Table = toml_text.parse().map_err(|e| format!("{e}"))?;
    if let Some(entries) = t.get_mut("entries").and_then(|e| e.as_table_mut()) {
        for (_, entry) in entries.iter_mut() {
            let fields = entry.get_mut("crontab").and_then(|c| c.as_table_mut());
            for (_, v) in fields.into_iter().flat_map(|f| f.iter_mut()) {
                if let toml::Value::Integer(n) = *v {
                    *v = toml::Value::String(n.to_string());
                }
            }
        }
    }
    Ok(t)
}

/// The README's `install(app)` lines after an app on moto: a task with a
/// far ETA goes to the intake queue, a near one to its own queue.
fn install(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let port = ctx.endpoint.rsplit(':').next().unwrap();
    let prelude = format!(
        "from celery import Celery\napp = Celery(\"proj\", broker=\"sqs://dev:dev@127.0.0.1:{port}\")\napp.conf.broker_transport_options = {{\"region\": \"us-east-1\", \"is_secure\": False}}\n"
    );
    let epilogue = format!(
        r#"
import base64 as _b64, json as _json, boto3 as _boto3
far = app.send_task("app.tasks.send_report", kwargs={{"account": 42}}, countdown=3600)
near = app.send_task("app.tasks.send_report", countdown=60)
sqs = _boto3.client("sqs", endpoint_url="{endpoint}", region_name="us-east-1", aws_access_key_id="dev", aws_secret_access_key="dev")
def ids(queue):
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    return [_json.loads(_b64.b64decode(m["Body"]))["headers"]["id"] for m in got]
print(_json.dumps({{"far": far.id, "near": near.id, "intake": ids("sqsbeat-intake"), "celery": ids("celery")}}))
"#,
        endpoint = ctx.endpoint
    );
    let code = format!("{prelude}{}{epilogue}", b.body);
    let v = last_json(&python(ctx.d(), &code, &[])?)?;
    let has = |queue: &str, id: &Value| v[queue].as_array().is_some_and(|a| a.contains(id));
    if has("intake", &v["far"]) && !has("intake", &v["near"]) && has("celery", &v["near"]) {
        Ok(())
    } else {
        Err(format!(
            "the far ETA should be on the intake queue, the near one on celery: {v}"
        ))
    }
}

fn json(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let next_lines: Option<Vec<Value>> = b
        .body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).ok())
        .collect::<Option<Vec<_>>>()
        .filter(|ls| {
            ls.iter()
                .all(|l| l.get("entry").is_some() && l.get("fire_at").is_some())
        });
    if let Some(lines) = next_lines {
        return lines.iter().try_for_each(|l| next_line(ctx, l));
    }
    let doc: Value = serde_json::from_str(&b.body).map_err(|e| format!("not JSON: {e}"))?;
    json_document(&doc)
}

/// A `next --output json` line: `next` over schedules/ from just before
/// its `fire_at` prints exactly it.
fn next_line(ctx: &Ctx, line: &Value) -> Result<(), String> {
    let fire_at: DateTime<Utc> = line["fire_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .ok_or("fire_at is not an instant")?;
    let after = (fire_at - chrono::Duration::seconds(1)).to_rfc3339();
    let schedules = stack::repo().join("schedules");
    let script = format!(
        "sqsbeat next '{}' --entry '{}' --after {after} --count 1 --output json",
        schedules.display(),
        line["entry"].as_str().unwrap_or_default()
    );
    let out = run(&mut ctx.shell(&ctx.sub("next"), &script));
    let stdout = succeeded(&script, &out)?;
    let got: Value = serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))?;
    if &got == line {
        Ok(())
    } else {
        Err(format!("`{script}` prints\n{got}\nnot\n{line}"))
    }
}

fn json_document(doc: &Value) -> Result<(), String> {
    if doc["headers"].get("sqsbeat_intake").is_some() {
        return intake_fixture(doc);
    }
    let statements: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(s)) => s.iter().collect(),
        _ if doc.get("Effect").is_some() => vec![doc],
        _ => return Err(format!("a JSON document of an unknown kind: {doc}")),
    };
    for s in statements {
        let actions = s["Action"].as_array().ok_or("Action is not a list")?;
        let sqs_only = actions
            .iter()
            .all(|a| a.as_str().is_some_and(|a| a.starts_with("sqs:")));
        let resource = s["Resource"].as_str().unwrap_or_default();
        if s["Effect"] != "Allow" || !sqs_only || !resource.starts_with("arn:aws:sqs:") {
            return Err(format!("not an SQS-only Allow statement: {s}"));
        }
    }
    Ok(())
}

/// An intake message example is one of the captured fixtures.
fn intake_fixture(doc: &Value) -> Result<(), String> {
    let root = stack::repo().join("tests/fixtures/intake");
    for case in std::fs::read_dir(&root).unwrap().flatten() {
        let path = case.path().join("intake/envelope.json");
        let Ok(t) = std::fs::read_to_string(&path) else {
            continue;
        };
        if serde_json::from_str::<Value>(&t).ok().as_ref() == Some(doc) {
            return Ok(());
        }
    }
    Err(format!(
        "no fixture under {} holds this message",
        root.display()
    ))
}

/// Prometheus rules: valid YAML of groups of rules, and every sqsbeat
/// metric an expression names is one sqsbeat exports.
fn yaml(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let code = format!(
        "import json, yaml\nprint(json.dumps(yaml.safe_load({:?})))",
        b.body
    );
    let doc = last_json(&python(ctx.d(), &code, &[])?)?;
    let exported = sqsbeat::runtime::metrics::get().render();
    let rules = doc["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten());
    let mut n = 0;
    for rule in rules {
        n += 1;
        let expr = rule["expr"]
            .as_str()
            .ok_or(format!("a rule without expr: {rule}"))?;
        if rule["alert"].as_str().is_none() {
            return Err(format!("a rule without alert: {rule}"));
        }
        for name in metric_names(expr) {
            let family = name.strip_suffix("_total").unwrap_or(&name);
            if !exported.contains(&format!("# TYPE {family} ")) {
                return Err(format!(
                    "{name} in `{expr}` is not a metric sqsbeat exports"
                ));
            }
        }
    }
    if n == 0 {
        return Err("no rules".into());
    }
    Ok(())
}

fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sqsbeat_"))
        .map(str::to_string)
        .collect()
}

/// The layout: every folder it names exists.
fn layout(b: &Block) -> Result<(), String> {
    let mut n = 0;
    for line in b.body.lines().filter(|l| !l.starts_with(' ')) {
        let Some(path) = line.split_whitespace().next().filter(|p| p.ends_with('/')) else {
            return Err(format!(
                "an untagged block that is not a folder layout: {line}"
            ));
        };
        if !stack::repo().join(path).is_dir() {
            return Err(format!("{path} does not exist"));
        }
        n += 1;
    }
    if n == 0 { Err("empty".into()) } else { Ok(()) }
}

/// The command synopsis: each command (and each `a | b` alternative)
/// exists, and has every flag the synopsis gives it.
fn synopsis(ctx: &Ctx, b: &Block) -> Result<(), String> {
    let mut commands: Vec<String> = Vec::new();
    for line in b.body.lines() {
        let code = line.split(" #").next().unwrap_or_default();
        if let Some(rest) = code.strip_prefix("sqsbeat ") {
            commands.push(rest.to_string());
        } else if !code.trim().is_empty() {
            let last = commands
                .last_mut()
                .ok_or(format!("not a command: {line}"))?;
            last.push(' ');
            last.push_str(code.trim());
        }
    }
    let mut checked = 0;
    for command in &commands {
        for (path, flags) in synopsis_groups(command) {
            let script = format!("sqsbeat {} --help", path.join(" "));
            let out = run(&mut ctx.shell(ctx.d(), &script));
            let help = succeeded(&script, &out)?;
            for flag in flags {
                let shown = help.match_indices(&flag).any(|(i, _)| {
                    !help[i + flag.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                });
                if !shown {
                    return Err(format!("`sqsbeat {}` has no {flag}", path.join(" ")));
                }
            }
            checked += 1;
        }
    }
    if checked < 10 {
        return Err(format!("only {checked} commands found"));
    }
    Ok(())
}

/// `entries enable NAME | disable NAME [--by WHO]` → (`entries enable`,
/// []), (`entries disable`, [`--by`]): leading lowercase words name the
/// command, a word after a lone `|` an alternative to its last word.
fn synopsis_groups(command: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut groups: Vec<(Vec<String>, Vec<String>)> = vec![(Vec::new(), Vec::new())];
    let mut naming = true;
    let mut alternative = false;
    for token in command.split_whitespace() {
        let word = !token.is_empty() && token.chars().all(|c| c.is_ascii_lowercase());
        if token == "|" {
            alternative = true;
            continue;
        }
        if word && alternative {
            let mut path = groups.last().unwrap().0.clone();
            path.pop();
            path.push(token.to_string());
            groups.push((path, Vec::new()));
        } else if word && naming {
            groups.last_mut().unwrap().0.push(token.to_string());
        } else {
            naming = false;
            let flags = token
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|f| f.starts_with("--") && f.len() > 2);
            groups
                .last_mut()
                .unwrap()
                .1
                .extend(flags.map(str::to_string));
        }
        alternative = false;
    }
    groups
}
