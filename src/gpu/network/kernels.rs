//! Pipelines of the network kernels, their shared bind group layout, the
//! per-dispatch [`NetworkParams`] and dispatch sizing.

use std::num::NonZeroU64;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{dispatch_grid, layout_entries, DEFAULT_WORKGROUP_SIZE};
use crate::gpu::shaders::{COMMON, FEATURES_F32, FEATURES_U8};
use crate::gpu::storage::FeatureStorage;

/// Per-dispatch values, mirrored by `struct NetworkParams` in
/// `shaders/network_prelude.wgsl`. 32 four-byte fields, 128 bytes in all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub(crate) struct NetworkParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub flags: u32,
    pub a_offset: u32,
    pub b_offset: u32,
    pub c_offset: u32,
    pub epilogue_offset: u32,
    pub activation: u32,
    pub rows: u32,
    pub row_start: u32,
    pub features: u32,
    pub step: u32,
    pub optimizer: u32,
    pub slots: u32,
    pub state_offset: u32,
    pub learning_rate: f32,
    pub scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    pub l1: f32,
    pub l2: f32,
    pub correction1: f32,
    pub correction2: f32,
    pub padding: [u32; 6],
}

/// Size of [`NetworkParams`] in bytes, which is also its uniform binding size.
pub(crate) const NETWORK_PARAMS_SIZE: u64 = std::mem::size_of::<NetworkParams>() as u64;

pub(crate) const FLAG_TRANSPOSE_A: u32 = 1;
pub(crate) const FLAG_TRANSPOSE_B: u32 = 2;
pub(crate) const FLAG_USE_ORDER: u32 = 4;
pub(crate) const FLAG_BIAS_ACTIVATION: u32 = 8;
pub(crate) const FLAG_TIMES_DERIVATIVE: u32 = 16;

pub(crate) const ACTIVATION_IDENTITY: u32 = 3;

/// Outputs per invocation along each dimension of the matrix multiply,
/// mirrored by `WORK` in `shaders/network_matmul.wgsl`.
const MATMUL_WORK: u32 = 4;

/// The network kernels, one per `shaders/network_*.wgsl` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetworkKernel {
    Gather,
    Matmul,
    SoftmaxNll,
    ColumnSums,
    Update,
    Evaluate,
}

impl NetworkKernel {
    const ALL: [NetworkKernel; 6] = [
        NetworkKernel::Gather,
        NetworkKernel::Matmul,
        NetworkKernel::SoftmaxNll,
        NetworkKernel::ColumnSums,
        NetworkKernel::Update,
        NetworkKernel::Evaluate,
    ];

    fn label(self) -> &'static str {
        match self {
            NetworkKernel::Gather => "network_gather",
            NetworkKernel::Matmul => "network_matmul",
            NetworkKernel::SoftmaxNll => "network_softmax_nll",
            NetworkKernel::ColumnSums => "network_column_sums",
            NetworkKernel::Update => "network_update",
            NetworkKernel::Evaluate => "network_evaluate",
        }
    }

    fn source(self) -> &'static str {
        match self {
            NetworkKernel::Gather => include_str!("../../../shaders/network_gather.wgsl"),
            NetworkKernel::Matmul => include_str!("../../../shaders/network_matmul.wgsl"),
            NetworkKernel::SoftmaxNll => {
                include_str!("../../../shaders/network_softmax_nll.wgsl")
            }
            NetworkKernel::ColumnSums => {
                include_str!("../../../shaders/network_column_sums.wgsl")
            }
            NetworkKernel::Update => include_str!("../../../shaders/network_update.wgsl"),
            NetworkKernel::Evaluate => include_str!("../../../shaders/network_evaluate.wgsl"),
        }
    }

    /// Invocations of a one-dimensional kernel for `params`.
    fn invocations(self, params: &NetworkParams) -> u64 {
        match self {
            NetworkKernel::Gather => params.rows as u64 * params.features as u64,
            NetworkKernel::SoftmaxNll | NetworkKernel::Evaluate => params.rows as u64,
            NetworkKernel::ColumnSums => params.n as u64,
            NetworkKernel::Update => params.m as u64 + params.n as u64,
            NetworkKernel::Matmul => unreachable!("the matrix multiply uses a 2-D grid"),
        }
    }
}

const NETWORK_PRELUDE: &str = include_str!("../../../shaders/network_prelude.wgsl");

/// One dispatch of a training or evaluation submission.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dispatch {
    pub kernel: NetworkKernel,
    pub params: NetworkParams,
    /// Workgroups along x and y.
    pub grid: (u32, u32),
}

/// The network pipelines and their bind group layout.
pub(crate) struct NetworkKernels {
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    workgroup_size: u32,
    tile: u32,
    max_workgroups_per_dimension: u32,
    params_stride: u64,
}

impl NetworkKernels {
    /// Builds the pipelines for features stored as `storage`.
    ///
    /// # Errors
    /// [`Error::Gpu`] if a shader fails to compile.
    pub fn new(context: &GpuContext, storage: FeatureStorage) -> Result<Self> {
        let limits = context.limits();
        let workgroup_size = DEFAULT_WORKGROUP_SIZE.min(
            limits
                .max_compute_invocations_per_workgroup
                .min(limits.max_compute_workgroup_size_x),
        );
        let tile = choose_tile(limits);
        let params_stride =
            NETWORK_PARAMS_SIZE.next_multiple_of(limits.min_uniform_buffer_offset_alignment as u64);
        let features = match storage {
            FeatureStorage::U8 => FEATURES_U8,
            FeatureStorage::F32 | FeatureStorage::Auto => FEATURES_F32,
        };

        context.scoped("building the network pipelines", || {
            let device = context.device();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("network kernel bindings"),
                entries: &layout_entries(NETWORK_PARAMS_SIZE, 3),
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("network pipeline layout"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipelines = NetworkKernel::ALL
                .iter()
                .map(|&kernel| {
                    let mut source = format!("{COMMON}\n{NETWORK_PRELUDE}\n{features}\n");
                    if kernel == NetworkKernel::Matmul {
                        source.push_str(&format!("const TILE: u32 = {tile}u;\n"));
                    }
                    source.push_str(kernel.source());
                    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.label()),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    });
                    let constants: &[(&str, f64)] = &[("WORKGROUP_SIZE", workgroup_size as f64)];
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(kernel.label()),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some("main"),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants,
                            zero_initialize_workgroup_memory: true,
                        },
                        cache: None,
                    })
                })
                .collect();
            NetworkKernels {
                layout,
                pipelines,
                workgroup_size,
                tile,
                max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
                params_stride,
            }
        })
    }

    /// Distance in bytes between [`NetworkParams`] slots in the uniform buffer.
    pub fn params_stride(&self) -> u64 {
        self.params_stride
    }

    /// Packs the dispatches' parameters into slots [`Self::params_stride`] bytes apart.
    pub fn pack_params(&self, dispatches: &[Dispatch]) -> Vec<u8> {
        let stride = self.params_stride as usize;
        let mut bytes = vec![0u8; dispatches.len() * stride];
        for (slot, dispatch) in bytes.chunks_exact_mut(stride).zip(dispatches) {
            slot[..NETWORK_PARAMS_SIZE as usize]
                .copy_from_slice(bytemuck::bytes_of(&dispatch.params));
        }
        bytes
    }

    /// Returns the dispatch of `kernel` with `params`, sized for it.
    ///
    /// # Errors
    /// [`Error::Gpu`] naming `max_compute_workgroups_per_dimension` if the
    /// grid does not fit the device.
    pub fn dispatch(&self, kernel: NetworkKernel, params: NetworkParams) -> Result<Dispatch> {
        let grid = if kernel == NetworkKernel::Matmul {
            let block = self.tile * MATMUL_WORK;
            let x = params.n.div_ceil(block);
            let y = params.m.div_ceil(block);
            let max = self.max_workgroups_per_dimension;
            if x > max || y > max {
                return Err(Error::Gpu {
                    reason: format!(
                        "a {} x {} matrix product needs {x} x {y} workgroups, more than \
                         max_compute_workgroups_per_dimension ({max}) allows; use smaller \
                         batches or layers",
                        params.m, params.n
                    ),
                });
            }
            (x, y)
        } else {
            dispatch_grid(
                kernel.label(),
                kernel.invocations(&params),
                self.workgroup_size,
                self.max_workgroups_per_dimension,
            )?
        };
        Ok(Dispatch {
            kernel,
            params,
            grid,
        })
    }

    /// Encodes one dispatch with its parameters at `params_offset`.
    pub fn encode_one(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        bind_group: &wgpu::BindGroup,
        params_offset: u32,
        dispatch: &Dispatch,
    ) {
        let (x, y) = dispatch.grid;
        if x == 0 || y == 0 {
            return;
        }
        pass.set_pipeline(&self.pipelines[dispatch.kernel as usize]);
        pass.set_bind_group(0, bind_group, &[params_offset]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Creates a bind group over `buffers`, in binding order 0 to 7. Call
    /// inside an error scope.
    pub fn bind_group(
        &self,
        context: &GpuContext,
        label: &str,
        buffers: [&wgpu::Buffer; 8],
    ) -> wgpu::BindGroup {
        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = Vec::with_capacity(8);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: buffers[0],
                offset: 0,
                size: NonZeroU64::new(NETWORK_PARAMS_SIZE),
            }),
        });
        for (binding, buffer) in buffers.iter().enumerate().skip(1) {
            entries.push(wgpu::BindGroupEntry {
                binding: binding as u32,
                resource: buffer.as_entire_binding(),
            });
        }
        context
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &self.layout,
                entries: &entries,
            })
    }
}

/// Chooses the matrix multiply's tile side: 16 (256 invocations and 8 KiB
/// of workgroup memory) where the device allows it, else 8.
fn choose_tile(limits: &wgpu::Limits) -> u32 {
    let fits = |tile: u32| {
        let workgroup_bytes = 2 * tile * tile * MATMUL_WORK * 4;
        tile * tile <= limits.max_compute_invocations_per_workgroup
            && tile <= limits.max_compute_workgroup_size_x
            && tile <= limits.max_compute_workgroup_size_y
            && workgroup_bytes <= limits.max_compute_workgroup_storage_size
    };
    if fits(16) {
        16
    } else {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_params_size_matches_wgsl_struct() {
        assert_eq!(NETWORK_PARAMS_SIZE, 128);
        assert_eq!(std::mem::align_of::<NetworkParams>(), 4);
    }

    #[test]
    fn tile_shrinks_on_small_devices() {
        assert_eq!(choose_tile(&wgpu::Limits::default()), 16);
        let small = wgpu::Limits {
            max_compute_invocations_per_workgroup: 128,
            ..wgpu::Limits::default()
        };
        assert_eq!(choose_tile(&small), 8);
    }
}
