//! The CPU path: training with rayon over rows.

mod backend;
pub mod fused;
pub mod network;
pub mod ops;
pub mod sparse;

pub use backend::CpuBackend;

/// Runs `work` in a new rayon pool of `threads` threads, for tests that
/// check that results do not depend on the thread count.
#[cfg(test)]
pub(crate) fn with_threads<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a test thread pool starts")
        .install(work)
}
