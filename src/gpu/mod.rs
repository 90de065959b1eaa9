//! The GPU path: WGSL compute kernels through wgpu.
#![allow(missing_docs)]
pub fn list_adapters() -> Vec<String> { vec![] }
