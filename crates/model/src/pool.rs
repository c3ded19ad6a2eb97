//! The engine's worker threads.
//!
//! A forward pass runs dozens of short parallel products per block. When the
//! caller is outside the pool, every one of them is a round trip through
//! sleeping threads; running the whole pass inside the pool instead lets
//! the workers pick up each product while they are still spinning. The
//! thread count comes from `RAYON_NUM_THREADS`, else the number of CPUs.

use std::sync::OnceLock;

/// Runs `work` on the engine's thread pool (directly, if already on it).
pub(crate) fn run<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("hypertensor-compute-{i}"))
            .build()
            .map_err(|e| tracing::warn!("no compute pool ({e}); using rayon's global pool"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}
