//! The GPU path: WGSL compute kernels through wgpu.
