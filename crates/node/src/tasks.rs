//! Supervised tasks (reth's task manager, `crates/tasks`): the tasks a
//! node cannot run without are owned by one [`TaskManager`]. If one of
//! them returns or panics, [`TaskManager::wait_for_failure`] reports which
//! and why, so the node stops instead of running on deaf.
//! [`TaskManager::shutdown`] stops them gracefully: the tasks spawned with
//! [`TaskManager::spawn_graceful`] (the API) are told to finish and given
//! until a deadline, then every other task is aborted and joined.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

/// How long [`TaskManager::wait_for_failure`] looks for the cause of a
/// task that returned: another task's failure or panic.
const CAUSE_WAIT: Duration = Duration::from_millis(200);

/// Why a critical task stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskExit {
    /// It returned, though it should run as long as the node.
    Returned,
    /// It returned an error.
    Failed(String),
    /// It panicked, with this message.
    Panicked(String),
}

/// A critical task that stopped while the node ran.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the critical task `{name}` {exit}")]
pub struct TaskFailure {
    /// The task's name (`p2p`, `head-follower`, `block-server`,
    /// `consensus`, `api`).
    pub name: String,
    /// How it stopped.
    pub exit: TaskExit,
}

impl fmt::Display for TaskExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskExit::Returned => write!(f, "stopped"),
            TaskExit::Failed(reason) => write!(f, "failed: {reason}"),
            TaskExit::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Completes when the task manager starts a graceful shutdown; handed to
/// the tasks spawned with [`TaskManager::spawn_graceful`]. Cancel-safe.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Waits for the shutdown to start (at once if it has; forever if the
    /// manager is gone without one, since its tasks are aborted then).
    pub async fn wait(mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Owns a node's critical tasks. Dropping it aborts them all.
pub struct TaskManager {
    tasks: JoinSet<TaskExit>,
    /// A task that returned, while [`TaskManager::wait_for_failure`]
    /// looks for its cause.
    returned: Option<TaskFailure>,
    names: HashMap<tokio::task::Id, String>,
    graceful: Vec<tokio::task::Id>,
    shutdown: watch::Sender<bool>,
}

impl Default for TaskManager {
    fn default() -> Self {
        TaskManager::new()
    }
}

impl fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.names.values().collect();
        names.sort();
        f.debug_struct("TaskManager")
            .field("tasks", &names)
            .finish()
    }
}

/// What a critical task may return: `()` (it should not return at all)
/// or a `Result` whose error says why it stopped.
pub trait TaskOutcome: Send + 'static {
    /// The outcome as a [`TaskExit`].
    fn into_exit(self) -> TaskExit;
}

impl TaskOutcome for () {
    fn into_exit(self) -> TaskExit {
        TaskExit::Returned
    }
}

impl<E: fmt::Display + Send + 'static> TaskOutcome for Result<(), E> {
    fn into_exit(self) -> TaskExit {
        match self {
            Ok(()) => TaskExit::Returned,
            Err(e) => TaskExit::Failed(e.to_string()),
        }
    }
}

impl TaskManager {
    /// A manager with no tasks, on the current tokio runtime.
    pub fn new() -> Self {
        TaskManager {
            tasks: JoinSet::new(),
            returned: None,
            names: HashMap::new(),
            graceful: Vec::new(),
            shutdown: watch::Sender::new(false),
        }
    }

    /// Runs `task` as a critical task called `name`: its returning or
    /// panicking is a failure of the node.
    pub fn spawn_critical<T: TaskOutcome>(
        &mut self,
        name: &str,
        task: impl Future<Output = T> + Send + 'static,
    ) {
        self.spawn_named(name, task, false);
    }

    /// Runs `task(shutdown)` as a critical task that stops on its own once
    /// `shutdown` completes; [`TaskManager::shutdown`] waits for it (up to
    /// its deadline) before aborting the rest.
    pub fn spawn_graceful<T: TaskOutcome, F: Future<Output = T> + Send + 'static>(
        &mut self,
        name: &str,
        task: impl FnOnce(Shutdown) -> F,
    ) {
        let future = task(Shutdown(self.shutdown.subscribe()));
        self.spawn_named(name, future, true);
    }

    fn spawn_named<T: TaskOutcome>(
        &mut self,
        name: &str,
        task: impl Future<Output = T> + Send + 'static,
        graceful: bool,
    ) {
        let handle = self.tasks.spawn(inject::wrap(name, task));
        self.names.insert(handle.id(), name.to_string());
        if graceful {
            self.graceful.push(handle.id());
        }
    }

    /// The names of the tasks running, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.values().cloned().collect();
        names.sort();
        names
    }

    /// Waits until a critical task stops and says which and how; pending
    /// forever if there are none. A task that merely returned is often the
    /// consequence of another's failure (the channel it read closed when
    /// that one panicked), so a failure or panic that follows within
    /// [`CAUSE_WAIT`] is reported instead. Cancel-safe: a task that stops
    /// while the future is dropped is reported by the next call.
    pub async fn wait_for_failure(&mut self) -> TaskFailure {
        let first = match self.returned.take() {
            Some(returned) => returned,
            None => self.next_exit().await,
        };
        if first.exit != TaskExit::Returned {
            return first;
        }
        // Kept until the wait is over, for a call that is dropped meanwhile.
        self.returned = Some(first.clone());
        let cause = tokio::time::timeout(CAUSE_WAIT, self.next_exit()).await;
        self.returned = None;
        match cause {
            Ok(cause) if cause.exit != TaskExit::Returned => {
                tracing::debug!(task = %first.name, "stopped after another task's failure");
                cause
            }
            _ => first,
        }
    }

    async fn next_exit(&mut self) -> TaskFailure {
        loop {
            let Some(joined) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, exit) = match joined {
                Ok((id, exit)) => (id, exit),
                Err(e) if e.is_cancelled() => {
                    self.names.remove(&e.id());
                    continue;
                }
                Err(e) => (e.id(), TaskExit::Panicked(panic_message(e))),
            };
            self.graceful.retain(|g| *g != id);
            let name = self.names.remove(&id).unwrap_or_else(|| "unknown".into());
            return TaskFailure { name, exit };
        }
    }

    /// Stops every task: the graceful ones are told to finish and waited
    /// for until `deadline`, then the rest are aborted and joined. Returns
    /// whether the graceful ones finished in time.
    pub async fn shutdown(&mut self, deadline: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let graceful = std::mem::take(&mut self.graceful);
        let in_time = tokio::time::timeout(deadline, async {
            let mut waiting = graceful.len();
            while waiting > 0 {
                let Some(joined) = self.tasks.join_next_with_id().await else {
                    break;
                };
                let id = joined.as_ref().map_or_else(JoinError::id, |(id, _)| *id);
                let name = self.names.remove(&id).unwrap_or_default();
                if graceful.contains(&id) {
                    waiting -= 1;
                    tracing::debug!(task = %name, "stopped gracefully");
                } else {
                    tracing::debug!(task = %name, "stopped before the graceful tasks");
                }
            }
        })
        .await
        .is_ok();
        if !in_time {
            tracing::warn!(?deadline, "tasks did not stop in time; aborting them");
        }
        self.tasks.shutdown().await;
        self.names.clear();
        in_time
    }
}

fn panic_message(error: JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => {
            if let Some(s) = payload.downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "a panic without a message".to_string()
            }
        }
        Err(e) => e.to_string(),
    }
}

/// Fault injection for tests of the supervision, in debug builds only:
/// `HYPERTENSOR_FAIL_TASK=<name>` makes the critical task `<name>` fail a
/// second after it starts, `HYPERTENSOR_FAIL_TASK=<name>:panic` makes it
/// panic. Release builds ignore the variable.
mod inject {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use super::{TaskExit, TaskOutcome};

    /// The environment variable read.
    pub(super) const VARIABLE: &str = "HYPERTENSOR_FAIL_TASK";

    /// How long the task runs before the injected failure.
    const AFTER: Duration = Duration::from_secs(1);

    /// A task's future, or (in a debug build told to) one that fails.
    pub(super) fn wrap<T: TaskOutcome>(
        name: &str,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = TaskExit> + Send>> {
        let wanted = if cfg!(debug_assertions) {
            std::env::var(VARIABLE).ok()
        } else {
            None
        };
        let panic = match wanted
            .as_deref()
            .map(|w| w.split_once(':').unwrap_or((w, "")))
        {
            Some((target, mode)) if target == name => mode == "panic",
            _ => return Box::pin(async move { task.await.into_exit() }),
        };
        let name = name.to_string();
        Box::pin(async move {
            tokio::select! {
                exit = task => return exit.into_exit(),
                () = tokio::time::sleep(AFTER) => {}
            }
            tracing::error!(task = %name, "{VARIABLE}: injecting a failure");
            if panic {
                panic!("{VARIABLE} asked this task to panic");
            }
            TaskExit::Failed(format!("{VARIABLE} asked this task to fail"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn the_task_that_failed_is_named_not_the_one_that_stopped_because_of_it() {
        let mut tasks = TaskManager::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // Reads what the other one sends; returns when it is gone.
        tasks.spawn_critical("reader", async move { while rx.recv().await.is_some() {} });
        // Its channel closes before its panic is reported (as when a
        // panic unwinds through the event loop that owned the sender).
        tasks.spawn_critical("doomed", async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(tx);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if true {
                panic!("the socket is on fire");
            }
        });
        let failure = tasks.wait_for_failure().await;
        assert_eq!(failure.name, "doomed");
        assert_eq!(
            failure.exit,
            TaskExit::Panicked("the socket is on fire".into())
        );
    }

    #[tokio::test]
    async fn a_panicking_task_stops_the_manager_with_its_name() {
        let mut tasks = TaskManager::new();
        tasks.spawn_critical("forever", std::future::pending::<()>());
        tasks.spawn_critical("doomed", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if true {
                panic!("the disk is on fire");
            }
        });
        let failure = tasks.wait_for_failure().await;
        assert_eq!(failure.name, "doomed");
        assert_eq!(
            failure.exit,
            TaskExit::Panicked("the disk is on fire".into())
        );
        assert!(
            failure.to_string().contains("`doomed` panicked"),
            "{failure}"
        );
        assert_eq!(tasks.names(), vec!["forever".to_string()]);
    }

    #[tokio::test]
    async fn a_returning_or_failing_task_stops_the_manager_with_its_name() {
        let mut tasks = TaskManager::new();
        tasks.spawn_critical("forever", std::future::pending::<()>());
        tasks.spawn_critical("quitter", async {});
        let failure = tasks.wait_for_failure().await;
        assert_eq!(
            (failure.name.as_str(), failure.exit),
            ("quitter", TaskExit::Returned)
        );

        tasks.spawn_critical("broken", async { Err::<(), _>("socket closed") });
        let failure = tasks.wait_for_failure().await;
        assert_eq!(failure.name, "broken");
        assert_eq!(failure.exit, TaskExit::Failed("socket closed".into()));
        assert_eq!(
            failure.to_string(),
            "the critical task `broken` failed: socket closed"
        );
    }

    #[tokio::test]
    async fn shutdown_lets_graceful_tasks_finish_then_aborts_the_rest() {
        let mut tasks = TaskManager::new();
        let drained = Arc::new(AtomicBool::new(false));
        let flag = drained.clone();
        tasks.spawn_graceful("api", move |shutdown| async move {
            shutdown.wait().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        tasks.spawn_critical("p2p", std::future::pending::<()>());
        let started = std::time::Instant::now();
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert!(drained.load(Ordering::SeqCst), "the API drained first");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(tasks.names().is_empty());
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_a_stuck_graceful_task_at_the_deadline() {
        let mut tasks = TaskManager::new();
        tasks.spawn_graceful("api", |_shutdown| std::future::pending::<()>());
        tasks.spawn_critical("p2p", std::future::pending::<()>());
        let started = std::time::Instant::now();
        assert!(!tasks.shutdown(Duration::from_millis(100)).await);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(1),
            "{took:?}"
        );
        assert!(tasks.names().is_empty());
    }

    #[tokio::test]
    async fn without_tasks_the_manager_never_reports_a_failure() {
        let mut tasks = TaskManager::new();
        let waited =
            tokio::time::timeout(Duration::from_millis(50), tasks.wait_for_failure()).await;
        assert!(waited.is_err());
    }
}
