//! The process's one signal handler.

use std::future::Future;

/// Listens for Ctrl-C (SIGINT) and SIGTERM from the moment it is called
/// (so a signal that arrives while a command still starts is not lost, nor
/// kills the process); the future completes at the first of them. What
/// every long-running command (`chain`, `node`, `devnet`) stops on. Call
/// it on the runtime.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
                tracing::warn!("cannot listen for signals; stop with SIGKILL");
                return std::future::pending().await;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
