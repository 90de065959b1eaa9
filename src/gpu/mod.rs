//! The GPU path: WGSL compute kernels through wgpu.
//!
//! - [`adapter`]: list adapters and choose one; hardware GPUs rank above
//!   software ones such as lavapipe.
//! - [`GpuContext`]: the device and queue, with wgpu errors returned as
//!   [`Error::Gpu`](crate::Error::Gpu) instead of panics.
//! - [`GpuBackend`]: the [`Backend`](crate::Backend) that trains on the GPU,
//!   with the classic fused kernels for plain logistic regression and the
//!   network kernels (`network`) for every other setup.
//! - [`KernelRunner`]: runs one kernel on host arrays, for tests.
//! - [`FeatureStorage`]: features on the GPU as f32, or as bytes when every
//!   value is `byte / 256`.
//!
//! The kernels live in the crate's `shaders/` directory, one WGSL file each,
//! after a shared prelude. Every sum runs in a fixed order and no kernel
//! uses float atomics, so results repeat from run to run on one device.

pub mod adapter;
mod backend;
mod chunks;
mod context;
pub mod kernels;
mod network;
mod runner;
mod shaders;
mod storage;

pub use adapter::{
    find_adapter, list_adapters, AdapterInfoSummary, AdapterPreference, AdapterRequest,
};
pub use backend::{GpuBackend, GpuCounters, GpuOptions};
pub use context::GpuContext;
pub use kernels::StepKernels;
pub use runner::{KernelRunner, SgdUpdateOutput, SoftmaxNllOutput};
pub use storage::FeatureStorage;
