//! One owner for every long-running task of `run`.
//!
//! Each task is spawned into one [`Tasks`] set under a name. Services run
//! until shutdown; when one ends before that (returns, fails or panics) it
//! is logged by name, shutdown is cancelled for all, the rest drain within
//! a bound, and [`Tasks::supervise`] returns the failure so the process
//! exits non-zero and its supervisor (Kubernetes, systemd, compose)
//! restarts it. A process that silently lost its releaser or its reload
//! loop would keep answering ready while doing nothing.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Whether a task may end on its own before shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Runs until shutdown; ending earlier is a failure.
    Service,
    /// Does its work and ends (a start-up probe); failing or panicking is
    /// still a failure.
    Oneshot,
}

/// The first task that ended unexpectedly, and how.
#[derive(Debug, thiserror::Error)]
#[error("task `{name}` {how}; stopped the process so its supervisor restarts it")]
pub struct TaskFailure {
    pub name: &'static str,
    pub how: String,
}

/// The set of running tasks.
pub struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, (&'static str, Kind)>,
    shutdown: CancellationToken,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Self {
        Tasks {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Spawns a service: it must run until shutdown is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_kind(name, Kind::Service, task);
    }

    /// Spawns a task that may finish on its own.
    pub fn spawn_oneshot<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_kind(name, Kind::Oneshot, task);
    }

    fn spawn_kind<F>(&mut self, name: &'static str, kind: Kind, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let task = failpoint(name, task);
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), (name, kind));
    }

    /// Waits until shutdown is asked or a task ends unexpectedly; then
    /// cancels shutdown for all and waits up to `drain` for every task to
    /// finish (aborting what is left). Returns the first failure.
    pub async fn supervise(mut self, drain: Duration) -> Result<(), TaskFailure> {
        let mut failure = None;
        loop {
            let ended = tokio::select! {
                ended = self.set.join_next_with_id() => ended,
                _ = self.shutdown.cancelled() => break,
            };
            let Some(ended) = ended else { break };
            // A service may have seen shutdown before this loop did.
            let stopping = self.shutdown.is_cancelled();
            if let Some(f) = self.judge(ended, stopping) {
                error!(task = f.name, "{f}");
                failure = Some(f);
                self.shutdown.cancel();
                break;
            }
        }
        let deadline = tokio::time::sleep(drain);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ended = self.set.join_next_with_id() => match ended {
                    None => break,
                    Some(ended) => {
                        if let Some(f) = self.judge(ended, true) {
                            error!(task = f.name, "{f}");
                            failure.get_or_insert(f);
                        }
                    }
                },
                _ = &mut deadline => {
                    let left: Vec<&str> = self.names.values().map(|(n, _)| *n).collect();
                    warn!(tasks = ?left, drain_s = drain.as_secs(), "tasks still running after the drain bound; aborting them");
                    self.set.abort_all();
                    while self.set.join_next().await.is_some() {}
                    break;
                }
            }
        }
        match failure {
            Some(f) => Err(f),
            None => {
                info!("every task stopped");
                Ok(())
            }
        }
    }

    /// Whether an ended task is a failure. `stopping`: shutdown was asked,
    /// so a service returning is expected.
    fn judge(
        &mut self,
        ended: Result<(Id, anyhow::Result<()>), tokio::task::JoinError>,
        stopping: bool,
    ) -> Option<TaskFailure> {
        let (id, outcome) = match ended {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let (name, kind) = self.names.remove(&id).unwrap_or(("unnamed", Kind::Service));
        let how = match outcome {
            Ok(Ok(())) if stopping || kind == Kind::Oneshot => return None,
            Ok(Ok(())) => "ended before shutdown".to_string(),
            Ok(Err(e)) => format!("failed: {e:#}"),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e)),
            // Cancelled: only by abort_all, after the drain bound.
            Err(_) => return None,
        };
        Some(TaskFailure { name, how })
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// In debug builds, `SQSBEAT_FAILPOINT=<task>` makes that task fail as it
/// starts, so a process test can show a dying task stops `run`. Release
/// builds compile it away.
#[cfg(debug_assertions)]
fn failpoint<F>(name: &'static str, task: F) -> impl Future<Output = anyhow::Result<()>>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let fail = std::env::var("SQSBEAT_FAILPOINT").is_ok_and(|v| v == name);
    async move {
        if fail {
            panic!("failpoint SQSBEAT_FAILPOINT={name}");
        }
        task.await
    }
}

#[cfg(not(debug_assertions))]
fn failpoint<F>(_name: &'static str, task: F) -> F {
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service(shutdown: CancellationToken) -> anyhow::Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_stops_all_and_is_named() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn("steady", service(shutdown.clone()));
        tasks.spawn("doomed", async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            panic!("boom")
        });
        let err = tasks
            .supervise(Duration::from_secs(30))
            .await
            .expect_err("a panic is a failure");
        assert_eq!(err.name, "doomed");
        assert!(err.how.contains("boom"), "{}", err.how);
        assert!(shutdown.is_cancelled(), "the others were told to stop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_returns_early_is_a_failure_but_a_oneshot_is_not() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn("steady", service(shutdown.clone()));
        tasks.spawn_oneshot("probe", async { Ok(()) });
        tasks.spawn("quitter", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        });
        let err = tasks.supervise(Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(err.name, "quitter");
        assert_eq!(err.how, "ended before shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_and_aborts_what_outlives_the_bound() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn("steady", service(shutdown.clone()));
        tasks.spawn("stuck", std::future::pending());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.cancel();
        });
        let started = tokio::time::Instant::now();
        assert!(tasks.supervise(Duration::from_secs(10)).await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }
}
