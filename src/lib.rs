//! sqsbeat: Celery beat for Amazon SQS.
//!
//! Fires periodic entries (cron strings, Celery crontab tables, anchored
//! intervals) as Celery task messages on SQS that an unmodified Celery
//! worker executes.
//!
//! # Architecture
//!
//! Pure modules (no I/O, no clock; everything takes `now` as an argument):
//!
//! | module | what |
//! | --- | --- |
//! | [`schedule`] | cron / crontab / interval → next fire instant, with the DST rules |
//! | [`schedule::gap`] | the shortest time between two fires of a cron schedule (bounds `jitter`), DST changes included |
//! | [`schedule::duration`] | the duration (`90s`, `1h30m`, `2w`) and instant grammar |
//! | [`schedule::preview`] | what `sqsbeat next` shows |
//! | [`entry`] | the validated [`entry::Entry`]; jitter; the entry's message |
//! | [`entry::raw`] | an entry as written (serde shapes, every field optional) |
//! | [`entry::validate`](mod@entry::validate) | raw entry → entry: one parser per field, every problem reported |
//! | [`entry::file`] | schedule TOML text → entries + diagnostics with file and line |
//! | [`entry::merge`] | entries-table rows → entries; bad rows set aside; files and rows merged |
//! | [`entry::django`] | django-celery-beat rows → entries; bad and clashing rows set aside |
//! | [`config`] | `sqsbeat.toml` + `SQSBEAT_*` environment → [`config::Config`] |
//! | [`wire::celery`] | Celery protocol-2 message and kombu's SQS envelope, byte-compatible |
//! | [`wire::limits`] | what Celery and SQS accept: reserved headers, names, FIFO ids, message size |
//! | [`wire::saferepr`](mod@wire::saferepr) | Celery's `saferepr`: the `argsrepr` / `kwargsrepr` headers |
//! | [`wire::queue`] | logical Celery queue → SQS queue name (kombu's mangling) |
//! | [`wire::intake`] | the intake contract: a diverted Celery task → its job, or why it is malformed; its release bytes |
//! | [`beat::tick`] | beat state + now → fires due, fires missed, next wake-up; the pause rule; which entries are overdue |
//! | [`beat::freshness`] | the dead-man's switch: when an entry is overdue |
//! | [`beat::backfill`] | which slots `sqsbeat backfill` sends: the range, the ledger, the beat's bound |
//! | [`entry::history`] | what a change did to an entry, for its history |
//! | [`wire::sentry`] | Sentry Crons: a monitored entry's headers and check-ins, as sentry-sdk's beat integration makes them |
//! | [`jobs`] | one-off jobs: validation, message, release plan (DelaySeconds, eta) |
//!
//! Effectful, kept thin:
//!
//! | module | what |
//! | --- | --- |
//! | [`clock`] | the one place the wall clock and random ids are read |
//! | [`store`] | PostgreSQL or SQLite: every SQL statement, one file per table; opening, migrations |
//! | [`store::ledger`] | the run ledger and per-entry cursors: claim, confirm, miss, prune |
//! | [`store::jobs`] | the jobs table: insert, query, cancel, the releaser's lease and settlement |
//! | [`store::intake`] | jobs read from the intake queue: one transaction per batch, idempotent by task id and `retries` |
//! | [`store::entries`] | periodic entries kept in the database |
//! | [`store::django`] | django-celery-beat's tables: rows, `last_update`, the run write-back |
//! | [`store::pauses`] | entry pauses (any entry, whatever its source) |
//! | [`store::history`] | every change made through the CLI to an entry |
//! | [`store::manual`] | the ledger of manual runs (`entries run`) |
//! | [`store::backfill`] | the ledger as backfill claims it |
//! | [`store::replicas`] | replica heartbeats, what `sqsbeat status` lists |
//! | [`store::leader`] | the leader row, the epoch, the advisory-lock session |
//! | [`store::listen`] | PostgreSQL NOTIFY as wake-ups, reconnecting |
//! | [`store::sqlite::codec`] | instants, UUIDs and JSON as SQLite text |
//! | [`wire::sink`] | the [`wire::sink::Sink`] seam the drivers send through; an in-memory sink for tests |
//! | [`wire::source`] | the [`wire::source::Source`] seam the intake consumer receives and deletes through; an in-memory queue for tests |
//! | [`wire::sqs`] | SQS through aws-sdk-sqs: queue URLs, batches, per-message outcomes; receive and delete on the intake queue |
//! | [`beat::driver`] | the periodic driver: decide, claim (fenced), send, confirm |
//! | [`beat::ops`] | run an entry now; backfill: claim, send, confirm outside the beat |
//! | [`jobs::releaser`] | hands one-off jobs to SQS in their final minutes (every replica) |
//! | [`jobs::intake`] | the intake consumer: diverted Celery tasks → one-off jobs, deleted only after the commit (every replica) |
//! | [`runtime`] | `sqsbeat run`: every long-running task in one supervised set |
//! | [`runtime::leader`] | the PostgreSQL advisory-lock campaign and heartbeat loop |
//! | [`runtime::reload`] | schedule reloads and what triggers them (files, SIGHUP, tables, django-celery-beat's `last_update`) |
//! | [`runtime::pauses`] | pauses reach the running beat within a second |
//! | [`runtime::http`], [`runtime::metrics`] | `/healthz`, `/readyz`, `/metrics`, the status page; per-entry series within a limit |
//! | [`runtime::status`] | what `status`, the status page and `/api/status` show, bounded at any size |
//! | [`runtime::sentry`] | the leader's `in_progress` check-ins to Sentry, off the fire's path |
//! | [`cli`], [`cmd`] | clap definitions; one thin module per command |
//!
//! # Our names and Celery's
//!
//! | sqsbeat | Celery |
//! | --- | --- |
//! | entry (`[entries.NAME]`) | `beat_schedule` item / `ScheduleEntry` |
//! | `cron` string | (none: Celery has no cron strings; Vixie cron semantics) |
//! | `crontab` table | `celery.schedules.crontab(...)` |
//! | `every` | `timedelta` / `schedule(run_every)` (but anchored, not drifting) |
//! | `task` | task name (`headers.task`) |
//! | `queue` | `options.queue` → `delivery_info.routing_key`; SQS name via kombu's mangling |
//! | `expires` | `options.expires` → `headers.expires` + `properties.expiration` |
//! | fire / slot | one due run of an entry (`last_run_at` in beat) |
//! | periodic task id | random in beat; here UUIDv5(entry, slot), see [`wire::celery::fire_task_id`] |
//! | one-off job | `apply_async(eta=...)`, but held in the database until its last minutes |
//! | intake queue | (none: where `sqsbeat_celery.install(app)` diverts far-ETA task messages, whole) |
//! | release window | (none: Celery holds an `eta` task in the worker instead) |
//! | `sqsbeat run` | `celery beat` |

pub mod beat;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod entry;
pub mod jobs;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod wire;
