//! `sqsbeat run`: the daemon, in two steps.
//!
//! [`prepare`] loads the configuration's schedule (files, entries table,
//! django-celery-beat's rows), opens the store and refuses to start on an invalid schedule;
//! [`serve`] then runs every long-running part — beat, releaser, intake
//! consumer, leadership, reload and its triggers, heartbeats, gauges, HTTP — as named
//! tasks in one [`tasks::Tasks`] set with one shutdown token. The first task
//! that ends unexpectedly stops them all and `serve` returns its failure,
//! so the process exits non-zero and is restarted by its supervisor.
//!
//! Signals are the caller's (`cmd/run.rs`): `serve` takes the shutdown
//! token, a [`Clock`], a [`Sink`] and a [`Source`], so tests can run the
//! whole daemon in-process against a [`crate::wire::sink::MemorySink`] and
//! a [`crate::wire::source::MemorySource`] with a manual clock.

pub mod housekeeping;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pauses;
pub mod reload;
pub mod sentry;
pub mod status;
pub mod tasks;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::beat::driver::Driver;
use crate::clock::{Clock, Trust};
use crate::config::Config;
use crate::entry::file::SchedulePaths;
use crate::entry::{Entry, file};
use crate::jobs::intake::Consumer;
use crate::jobs::releaser::{self, Releaser};
use crate::store::leader::Leadership;
use crate::store::listen::{Channel, Listener};
use crate::store::{self, Access, Store};
use crate::wire::MessageOptions;
use crate::wire::queue::QueueName;
use crate::wire::sink::Sink;
use crate::wire::source::Source;
use crate::wire::sqs::SqsSink;
use leader::Role;
use tasks::Tasks;

/// How long the tasks get to finish after shutdown: long enough for a send
/// in flight to hit the SQS client's own 30 s operation timeout and be
/// recorded.
pub const DRAIN: Duration = Duration::from_secs(40);

/// A daemon ready to serve: the store is open and migrated, the schedule
/// valid, the HTTP port bound.
pub struct Prepared {
    pub config: Config,
    pub paths: SchedulePaths,
    pub store: Store,
    pub entries: Vec<Entry>,
    pub http: Option<TcpListener>,
    /// PostgreSQL: campaign; SQLite: the lock that makes this process the
    /// one replica, and the epoch it took.
    leadership: Leadership,
}

/// Loads and checks everything `serve` needs. `Ok(None)`: the schedule is
/// invalid (every problem was logged) or shutdown came first.
pub async fn prepare(
    config: &Config,
    paths: &SchedulePaths,
    http: Option<TcpListener>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Prepared>> {
    let ctx = crate::cmd::context(config);
    let files = file::load_paths(paths, &ctx)?;
    let store = tokio::select! {
        s = Store::open(config, Access::Daemon) => s.map_err(|e| crate::cmd::open_error(config, e))?,
        _ = shutdown.cancelled() => return Ok(None),
    };
    let (loaded, set_aside) =
        reload::load_sources(&store, files, &ctx, config.django_celery_beat.as_ref(), &[]).await?;
    if let Some(notice) = &loaded.notice {
        info!("{notice}");
    }
    reload::report_set_aside(&set_aside);
    for d in &loaded.diagnostics {
        if d.warning {
            warn!("{d}")
        } else {
            error!("{d}")
        }
    }
    if loaded.has_errors() {
        error!(
            "the schedule is not valid; not starting (run `sqsbeat check` to see every problem)"
        );
        return Ok(None);
    }
    // SQLite serves one replica: a second process must fail here, at
    // start-up, and say why.
    let leadership = store::leader::prepare(&store, &holder())
        .await
        .context("cannot start")?;
    Ok(Some(Prepared {
        config: config.clone(),
        paths: paths.clone(),
        store,
        entries: loaded.entries,
        http,
        leadership,
    }))
}

/// This replica's name in the leader row and the replicas table.
fn holder() -> String {
    format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// Runs every part until `shutdown`, or until one fails. `source` is read
/// only when `[intake] queue` is set.
pub async fn serve<S: Sink, Q: Source>(
    p: Prepared,
    sink: S,
    source: Q,
    clock: Clock,
    hangup: Option<tokio::signal::unix::Signal>,
    probe: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        paths,
        store,
        entries,
        http,
        leadership,
    } = p;
    let holder = holder();
    let mut tasks = Tasks::new(shutdown.clone());
    if let Some(probe) = probe {
        let stop = shutdown.clone();
        tasks.spawn_oneshot("queue probe", async move {
            tokio::select! {
                _ = probe => {}
                _ = stop.cancelled() => {}
            }
            Ok(())
        });
    }
    // The leader lock goes only after the beat has drained its sends, so a
    // standby never fires while this replica still has fires in flight:
    // the beat task cancels `leader_stop` when it ends, however it ends.
    let leader_stop = CancellationToken::new();
    let (role_tx, role) = watch::channel(Role::Standby);
    // Host clock against the database's: measured by the heartbeats,
    // consulted before every decision (beat and releaser).
    let (trust_tx, trust) = watch::channel(Trust::Unchecked);
    let trust_tx = Arc::new(trust_tx);
    let shared = Shared {
        store: store.clone(),
        config,
        clock,
        role,
        trust,
        trust_tx,
        shutdown: shutdown.clone(),
    };
    spawn_leadership(
        &mut tasks,
        &shared,
        leadership,
        &holder,
        role_tx,
        &leader_stop,
    );
    metrics::get().set_per_entry_limit(shared.config.metrics_per_entry_limit);
    let (entries_tx, entries_rx) = watch::channel(Arc::new(reload::shared(entries)));
    if let Some(listener) = http {
        let page = http::StatusSource::new(entries_rx.clone(), shared.clock.clone(), &holder);
        let (store, role, stop) = (store.clone(), shared.role.clone(), shutdown.clone());
        tasks.spawn("http", async move {
            http::serve(listener, store, role, page, stop).await;
            Ok(())
        });
    }
    spawn_housekeeping(&mut tasks, &shared, &holder);
    spawn_reload(&mut tasks, &shared, &paths, entries_tx, hangup);
    let opts = MessageOptions::from_config(&shared.config);
    spawn_releaser(&mut tasks, &shared, &sink, &opts);
    spawn_intake(&mut tasks, &shared, source);
    let check_ins = spawn_check_ins(&mut tasks, &shared)?;
    let driver = Driver {
        trust: shared.trust.clone(),
        store,
        sink,
        opts,
        clock: shared.clock.clone(),
        check_ins,
        accepted: Default::default(),
        metrics: metrics::get(),
    };
    let (beat_role, stop, lock_guard) = (
        shared.role.clone(),
        shutdown.clone(),
        leader_stop.drop_guard(),
    );
    let pauses_rx = spawn_pauses(&mut tasks, &shared);
    tasks.spawn("beat", async move {
        let _release_lock_when_done = lock_guard;
        driver.run(entries_rx, pauses_rx, beat_role, stop).await;
        Ok(())
    });
    tasks.supervise(DRAIN).await.map_err(anyhow::Error::from)
}

/// The Sentry check-in poster, when `[sentry] dsn` is set; the handle the
/// beat queues check-ins on either way.
fn spawn_check_ins(tasks: &mut Tasks, sh: &Shared) -> anyhow::Result<sentry::CheckIns> {
    let (check_ins, poster) =
        sentry::start(&sh.config.sentry, sh.clock.clone(), sh.shutdown.clone())?;
    if let Some(poster) = poster {
        tasks.spawn("sentry check-ins", async move {
            poster.await;
            Ok(())
        });
    }
    Ok(check_ins)
}

/// Leadership: a campaign for the PostgreSQL lock, or, with SQLite, the
/// one replica holding its file lock until the beat ends.
fn spawn_leadership(
    tasks: &mut Tasks,
    sh: &Shared,
    leadership: Leadership,
    holder: &str,
    role_tx: watch::Sender<Role>,
    leader_stop: &CancellationToken,
) {
    let (clock, trust_tx, config) = (&sh.clock, &sh.trust_tx, &sh.config);
    match leadership {
        Leadership::Campaign(pg) => {
            let (holder, stop) = (holder.to_string(), leader_stop.clone());
            let (c, t) = (clock.clone(), trust_tx.clone());
            tasks.spawn("leadership", async move {
                leader::campaign(pg, holder, role_tx, c, t, stop).await;
                Ok(())
            });
        }
        Leadership::Sole { lock, epoch } => {
            info!(epoch, path = %config.database_path.display(), "SQLite store: this process is the one replica");
            role_tx.send_replace(Role::Leader {
                epoch,
                since: clock.now(),
            });
            let stop = leader_stop.clone();
            tasks.spawn("leadership", async move {
                // Holds the role channel and the file lock until the beat ends.
                let _keep = (role_tx, lock);
                stop.cancelled().await;
                Ok(())
            });
        }
    }
}

/// What the tasks are built from; each takes the clones it needs.
struct Shared {
    store: Store,
    config: Config,
    clock: Clock,
    role: watch::Receiver<Role>,
    /// The clock check, as the beat and the releaser consult it...
    trust: watch::Receiver<Trust>,
    /// ...and as the heartbeats publish it.
    trust_tx: Arc<watch::Sender<Trust>>,
    shutdown: CancellationToken,
}

/// The heartbeat, gauges and ledger pruning.
fn spawn_housekeeping(tasks: &mut Tasks, sh: &Shared, holder: &str) {
    let (r, stop) = (sh.role.clone(), sh.shutdown.clone());
    tasks.spawn("role gauge", async move {
        housekeeping::export_role(r, stop).await;
        Ok(())
    });
    let (s, h, r, c, t, stop) = (
        sh.store.clone(),
        holder.to_string(),
        sh.role.clone(),
        sh.clock.clone(),
        sh.trust_tx.clone(),
        sh.shutdown.clone(),
    );
    tasks.spawn("replica heartbeat", async move {
        housekeeping::report_alive(s, h, r, c, t, stop).await;
        Ok(())
    });
    let (s, c, stop) = (sh.store.clone(), sh.clock.clone(), sh.shutdown.clone());
    tasks.spawn("pending-jobs gauge", async move {
        housekeeping::export_pending_jobs(s, c, stop).await;
        Ok(())
    });
    let (s, r, retention, c, stop) = (
        sh.store.clone(),
        sh.role.clone(),
        sh.config.ledger_retention,
        sh.clock.clone(),
        sh.shutdown.clone(),
    );
    tasks.spawn("ledger pruning", async move {
        housekeeping::prune_ledger(s, r, retention, c, stop).await;
        Ok(())
    });
}

/// The reload loop and what triggers it: schedule files, SIGHUP, the
/// entries table, django-celery-beat's tables.
fn spawn_reload(
    tasks: &mut Tasks,
    sh: &Shared,
    paths: &SchedulePaths,
    entries: watch::Sender<Arc<Vec<Entry>>>,
    hangup: Option<tokio::signal::unix::Signal>,
) {
    let changed = Arc::new(Notify::new());
    let (s, c, stop) = (sh.store.clone(), changed.clone(), sh.shutdown.clone());
    tasks.spawn("entries-table watcher", async move {
        reload::watch_entries_table(s, c, stop).await;
        Ok(())
    });
    let (p, s, c, stop) = (
        paths.clone(),
        sh.store.clone(),
        changed.clone(),
        sh.shutdown.clone(),
    );
    tasks.spawn("schedule-file watcher", async move {
        reload::watch_files(p, s, c, stop).await;
        Ok(())
    });
    if let Some(hangup) = hangup {
        let (c, stop) = (changed.clone(), sh.shutdown.clone());
        tasks.spawn("SIGHUP watcher", async move {
            reload::watch_hangup(hangup, c, stop).await;
            Ok(())
        });
    }
    if let Some(dj) = &sh.config.django_celery_beat {
        let (s, schema, c, stop) = (
            sh.store.clone(),
            dj.schema.clone(),
            changed.clone(),
            sh.shutdown.clone(),
        );
        tasks.spawn("django-celery-beat watcher", async move {
            reload::watch_django(s, schema, c, stop).await;
            Ok(())
        });
    }
    let (s, p, ctx, dj, stop) = (
        sh.store.clone(),
        paths.clone(),
        crate::cmd::context(&sh.config),
        sh.config.django_celery_beat.clone(),
        sh.shutdown.clone(),
    );
    tasks.spawn("reload", async move {
        reload::reload_schedule(s, p, ctx, changed, entries, dj, stop).await;
        Ok(())
    });
}

/// The pauses watcher; returns what the beat watches.
fn spawn_pauses(
    tasks: &mut Tasks,
    sh: &Shared,
) -> watch::Receiver<Arc<crate::beat::driver::Pauses>> {
    let (tx, rx) = watch::channel(Arc::new(crate::beat::driver::Pauses::new()));
    let (s, stop) = (sh.store.clone(), sh.shutdown.clone());
    tasks.spawn("pauses watcher", async move {
        pauses::watch_pauses(s, tx, stop).await;
        Ok(())
    });
    rx
}

/// The releaser (every replica, leader or not) and its wake-up listener.
fn spawn_releaser<S: Sink>(tasks: &mut Tasks, sh: &Shared, sink: &S, opts: &MessageOptions) {
    let wake = Arc::new(Notify::new());
    let listener = Listener::new(&sh.store, Channel::Jobs);
    let (w, stop) = (wake.clone(), sh.shutdown.clone());
    tasks.spawn("jobs listener", async move {
        releaser::watch_jobs(listener, w, stop).await;
        Ok(())
    });
    let release = Releaser {
        store: sh.store.clone(),
        sink: sink.clone(),
        opts: opts.clone(),
        window: sh.config.release_window,
        max_message_bytes: sh.config.sqs.max_message_bytes,
        clock: sh.clock.clone(),
        renew_every: crate::jobs::releaser::RENEW_EVERY,
        trust: sh.trust.clone(),
    };
    let stop = sh.shutdown.clone();
    tasks.spawn("releaser", async move {
        release.run(wake, stop).await;
        Ok(())
    });
}

/// The intake consumer (every replica, leader or not), when
/// `[intake] queue` names the queue.
fn spawn_intake<Q: Source>(tasks: &mut Tasks, sh: &Shared, source: Q) {
    let Some(logical) = &sh.config.intake_queue else {
        return;
    };
    let consumer = Consumer {
        store: sh.store.clone(),
        source,
        queue: QueueName::new(&sh.config.sqs.queue_name_prefix, logical),
        max_message_bytes: sh.config.sqs.max_message_bytes,
        poll: crate::jobs::intake::POLL,
    };
    let stop = sh.shutdown.clone();
    tasks.spawn("intake consumer", async move {
        consumer.run(stop).await;
        Ok(())
    });
}

/// The queues enabled entries send to, for [`probe_queues`].
pub fn queues(entries: &[Entry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.enabled)
        .map(|e| e.queue.to_string())
        .collect()
}

/// Resolves every queue of the schedule once, so a missing one is reported
/// at start-up without delaying the first fires; its entries keep
/// retrying, the others fire normally. Takes the queue names alone: a copy
/// of the entries, alive until every queue answered, was a third of the
/// heap at 100 000 entries.
pub async fn probe_queues(sink: SqsSink, queues: BTreeSet<String>, prefix: String) {
    for q in queues {
        let name = QueueName::new(&prefix, &q);
        match sink.queue_url(&name).await {
            Ok(url) => info!(queue = %q, sqs_name = %name.sqs, %url, "queue ready"),
            Err(e) => error!(queue = %q, "{e}"),
        }
    }
}
