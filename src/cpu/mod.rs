//! The CPU path: training with rayon over rows.

mod backend;
pub mod fused;
pub mod network;
pub mod ops;
pub mod sparse;

pub use backend::CpuBackend;
