//! Compute pipelines, their shared bind group layout and dispatch sizing.
//!
//! Every kernel uses the bind group described in `shaders/prelude.wgsl`.
//! It contains a uniform [`Params`] at a dynamic offset, the feature and
//! label chunk, the weights and bias, and a scratch buffer for logits and
//! their gradient. Per-row losses and a status buffer of atomic counters
//! complete it.

use std::num::NonZeroU64;

use bytemuck::{Pod, Zeroable};

use super::context::GpuContext;
use super::shaders::{self, KernelSource};
use super::storage::FeatureStorage;
use crate::error::{Error, Result};

/// Per-dispatch values, mirrored by `struct Params` in `shaders/prelude.wgsl`.
///
/// Eight 4-byte fields, 32 bytes in all, which is a multiple of the 16-byte
/// alignment of WGSL uniform structs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// First row of the batch within the bound chunk.
    pub row_offset: u32,
    /// Rows in the batch.
    pub rows: u32,
    /// Features per row (`d`).
    pub features: u32,
    /// Classes (`k`).
    pub classes: u32,
    /// Factor applied to the loss gradient, `1 / rows` when training.
    pub scale: f32,
    /// SGD step size.
    pub learning_rate: f32,
    /// Global index of the training step, recorded when it goes non-finite.
    pub step: u32,
    /// Unused; pads the struct to 32 bytes.
    pub padding: u32,
}

/// Size of [`Params`] in bytes, which is also its uniform binding size.
pub const PARAMS_SIZE: u64 = std::mem::size_of::<Params>() as u64;

/// Status buffer slot holding the first non-finite step, `u32::MAX` for none.
pub(crate) const STATUS_FIRST_NON_FINITE_STEP: usize = 0;
/// Status buffer slot holding the error count of an evaluation.
pub(crate) const STATUS_ERRORS: usize = 1;
/// Entries in the status buffer.
pub(crate) const STATUS_LEN: usize = 2;

/// Classes per invocation in the logits, evaluate and sgd_update kernels,
/// mirrored by `CLASS_BLOCK` in `shaders/prelude.wgsl`.
const CLASS_BLOCK: u64 = 4;
/// Rows (parameter rows in sgd_update) per invocation, mirrored by
/// `TILE_ROWS` in `shaders/prelude.wgsl`.
const TILE_ROWS: u64 = 8;

/// Rows per workgroup of the split logits kernel, mirrored by `SPLIT_ROWS`
/// in `shaders/logits_split.wgsl`.
const SPLIT_ROWS: u64 = 4;

/// Workgroup memory per invocation of the split kernels: the two
/// `mat4x4<f32>` of partial sums in `shaders/split_reduce.wgsl`.
const SPLIT_BYTES_PER_INVOCATION: u32 = 128;

/// Workgroup size used when the caller does not choose one.
pub const DEFAULT_WORKGROUP_SIZE: u32 = 64;

/// The kernels of the classic training step that compute the logits and
/// the gradient with its update, a setting of
/// [`GpuOptions`](super::GpuOptions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepKernels {
    /// [`StepKernels::Split`] on hardware adapters whose workgroup storage
    /// has room for its partial sums, [`StepKernels::Tiles`] on software
    /// adapters such as lavapipe and otherwise.
    #[default]
    Auto,
    /// One invocation per output tile, summing in order over all features
    /// (`shaders/logits.wgsl`, 8 rows by 4 classes) or all rows
    /// (`shaders/sgd_update.wgsl`, 8 parameters by 4 classes). Results do
    /// not depend on the workgroup size.
    Tiles,
    /// One workgroup per output tile, whose invocations split the features
    /// (`shaders/logits_split.wgsl`, 4 rows by 4 classes) or the rows
    /// (`shaders/sgd_update_split.wgsl`, 8 parameters by 4 classes) and add
    /// their partial sums in a fixed order. Results depend on the workgroup
    /// size.
    Split,
}

impl StepKernels {
    /// Returns the name used in descriptions: `auto`, `tiles` or `split`.
    pub fn name(self) -> &'static str {
        match self {
            StepKernels::Auto => "auto",
            StepKernels::Tiles => "tiles",
            StepKernels::Split => "split",
        }
    }

    /// Resolves [`StepKernels::Auto`] for an adapter of `device_type` with
    /// `limits` and `workgroup_size` invocations per workgroup.
    ///
    /// # Errors
    /// [`Error::Gpu`] if [`StepKernels::Split`] is requested and its
    /// partial sums do not fit the device's workgroup storage.
    fn resolve(
        self,
        device_type: wgpu::DeviceType,
        limits: &wgpu::Limits,
        workgroup_size: u32,
    ) -> Result<StepKernels> {
        let split_bytes = workgroup_size as u64 * SPLIT_BYTES_PER_INVOCATION as u64;
        let split_fits = split_bytes <= limits.max_compute_workgroup_storage_size as u64;
        match self {
            StepKernels::Auto => {
                let software = device_type == wgpu::DeviceType::Cpu;
                Ok(if split_fits && !software {
                    StepKernels::Split
                } else {
                    StepKernels::Tiles
                })
            }
            StepKernels::Split if !split_fits => Err(Error::Gpu {
                reason: format!(
                    "the split step kernels need {split_bytes} bytes of workgroup storage with \
                     {workgroup_size} invocations per workgroup, more than the device's \
                     max_compute_workgroup_storage_size of {}; use a smaller workgroup size or \
                     the tiles kernels",
                    limits.max_compute_workgroup_storage_size
                ),
            }),
            chosen => Ok(chosen),
        }
    }
}

/// The kernels, one per file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Logits,
    LogitsSplit,
    SoftmaxNll,
    SgdUpdate,
    SgdUpdateSplit,
    Evaluate,
}

impl Kernel {
    fn source(self) -> KernelSource {
        match self {
            Kernel::Logits => shaders::LOGITS,
            Kernel::LogitsSplit => shaders::LOGITS_SPLIT,
            Kernel::SoftmaxNll => shaders::SOFTMAX_NLL,
            Kernel::SgdUpdate => shaders::SGD_UPDATE,
            Kernel::SgdUpdateSplit => shaders::SGD_UPDATE_SPLIT,
            Kernel::Evaluate => shaders::EVALUATE,
        }
    }

    /// Invocations that a dispatch with `params` needs. Softmax_nll takes
    /// one per row. Logits_split takes a workgroup of `workgroup_size` per
    /// tile of [`SPLIT_ROWS`] rows by [`CLASS_BLOCK`] classes, and
    /// sgd_update_split one per tile of [`TILE_ROWS`] parameter rows by
    /// [`CLASS_BLOCK`] classes. The others take one invocation per tile of
    /// [`TILE_ROWS`] rows (or parameter rows) by [`CLASS_BLOCK`] classes.
    fn invocations(self, params: &Params, workgroup_size: u32) -> u64 {
        let row_tiles = (params.rows as u64).div_ceil(TILE_ROWS);
        let parameter_tiles = (params.features as u64 + 1).div_ceil(TILE_ROWS);
        let blocks = (params.classes as u64).div_ceil(CLASS_BLOCK).max(1);
        match self {
            Kernel::Logits => row_tiles * blocks,
            Kernel::LogitsSplit => {
                (params.rows as u64).div_ceil(SPLIT_ROWS) * blocks * workgroup_size as u64
            }
            Kernel::SoftmaxNll => params.rows as u64,
            Kernel::Evaluate => row_tiles,
            Kernel::SgdUpdate => parameter_tiles * blocks,
            Kernel::SgdUpdateSplit => parameter_tiles * blocks * workgroup_size as u64,
        }
    }
}

/// The buffers of one bind group, in binding order.
pub(crate) struct Bindings<'a> {
    pub params: &'a wgpu::Buffer,
    pub features: &'a wgpu::Buffer,
    pub labels: &'a wgpu::Buffer,
    pub weights: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
    pub scratch: &'a wgpu::Buffer,
    pub losses: &'a wgpu::Buffer,
    pub status: &'a wgpu::Buffer,
}

/// The four compute pipelines and their bind group layout.
pub(crate) struct Kernels {
    layout: wgpu::BindGroupLayout,
    /// The kernels of the training step, never [`StepKernels::Auto`].
    step_kernels: StepKernels,
    logits: wgpu::ComputePipeline,
    softmax_nll: wgpu::ComputePipeline,
    sgd_update: wgpu::ComputePipeline,
    evaluate: wgpu::ComputePipeline,
    workgroup_size: u32,
    max_workgroups_per_dimension: u32,
    params_stride: u64,
}

impl Kernels {
    /// Builds the pipelines with `workgroup_size` invocations per workgroup,
    /// or [`DEFAULT_WORKGROUP_SIZE`] capped by the device limits, reading
    /// features stored as `storage` ([`FeatureStorage::Auto`] reads f32),
    /// with the training step's kernels chosen by `step`.
    ///
    /// # Errors
    /// [`Error::Gpu`] if the requested size exceeds a device limit (named in
    /// the message) or a shader fails to compile.
    pub fn new(
        context: &GpuContext,
        workgroup_size: Option<u32>,
        storage: FeatureStorage,
        step: StepKernels,
    ) -> Result<Self> {
        let limits = context.limits();
        let workgroup_size = choose_workgroup_size(limits, workgroup_size)?;
        let step_kernels = step.resolve(context.adapter().device_type, limits, workgroup_size)?;
        let params_stride =
            PARAMS_SIZE.next_multiple_of(limits.min_uniform_buffer_offset_alignment as u64);

        context.scoped("building the compute pipelines", || {
            let device = context.device();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("kernel bindings"),
                entries: &layout_entries(PARAMS_SIZE, 2),
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("kernel pipeline layout"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let build = |kernel: Kernel| {
                build_pipeline(
                    device,
                    &pipeline_layout,
                    kernel.source(),
                    storage,
                    workgroup_size,
                )
            };
            let (logits, sgd_update) = step_dispatches(step_kernels);
            Kernels {
                logits: build(logits),
                step_kernels,
                softmax_nll: build(Kernel::SoftmaxNll),
                sgd_update: build(sgd_update),
                evaluate: build(Kernel::Evaluate),
                layout,
                workgroup_size,
                max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
                params_stride,
            }
        })
    }

    /// Invocations per workgroup.
    pub fn workgroup_size(&self) -> u32 {
        self.workgroup_size
    }

    /// Lowers the workgroups per grid dimension to at most `cap`, so that
    /// tests reach the two-dimensional grids that large dispatches use.
    pub fn cap_workgroups_per_dimension(&mut self, cap: u32) {
        self.max_workgroups_per_dimension = self.max_workgroups_per_dimension.min(cap.max(1));
    }

    /// Returns the training step's kernels, [`StepKernels::Tiles`] or
    /// [`StepKernels::Split`].
    pub fn step_kernels(&self) -> StepKernels {
        self.step_kernels
    }

    /// Returns the kernel that computes a training batch's logits.
    pub fn logits_dispatch(&self) -> Kernel {
        step_dispatches(self.step_kernels).0
    }

    /// Returns the kernel that computes the gradients and updates.
    pub fn update_dispatch(&self) -> Kernel {
        step_dispatches(self.step_kernels).1
    }

    /// Distance in bytes between [`Params`] slots in a uniform buffer:
    /// [`PARAMS_SIZE`] rounded up to `min_uniform_buffer_offset_alignment`.
    pub fn params_stride(&self) -> u64 {
        self.params_stride
    }

    /// Packs `params` into slots [`Kernels::params_stride`] bytes apart.
    pub fn pack_params(&self, params: &[Params]) -> Vec<u8> {
        let stride = self.params_stride as usize;
        let mut bytes = vec![0u8; params.len() * stride];
        for (slot, value) in bytes.chunks_exact_mut(stride).zip(params) {
            slot[..PARAMS_SIZE as usize].copy_from_slice(bytemuck::bytes_of(value));
        }
        bytes
    }

    /// Creates a bind group over `bindings`. Call inside an error scope.
    pub fn bind_group(
        &self,
        context: &GpuContext,
        label: &str,
        bindings: &Bindings<'_>,
    ) -> wgpu::BindGroup {
        fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            }
        }
        context
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: bindings.params,
                            offset: 0,
                            size: NonZeroU64::new(PARAMS_SIZE),
                        }),
                    },
                    whole(1, bindings.features),
                    whole(2, bindings.labels),
                    whole(3, bindings.weights),
                    whole(4, bindings.bias),
                    whole(5, bindings.scratch),
                    whole(6, bindings.losses),
                    whole(7, bindings.status),
                ],
            })
    }

    /// Encodes one SGD step: logits, softmax with NLL, then the fused
    /// gradient and update, all with the [`Params`] at `params_offset`.
    pub fn encode_train_step(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        bind_group: &wgpu::BindGroup,
        params_offset: u32,
        params: &Params,
    ) -> Result<()> {
        let kernels = [
            self.logits_dispatch(),
            Kernel::SoftmaxNll,
            self.update_dispatch(),
        ];
        for kernel in kernels {
            self.encode(pass, kernel, bind_group, params_offset, params)?;
        }
        Ok(())
    }

    /// Encodes one dispatch of `kernel` sized for `params`. Nothing is
    /// encoded when no invocations are needed.
    ///
    /// # Errors
    /// [`Error::Gpu`] naming `max_compute_workgroups_per_dimension` if the
    /// dispatch would not fit even in two dimensions.
    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        kernel: Kernel,
        bind_group: &wgpu::BindGroup,
        params_offset: u32,
        params: &Params,
    ) -> Result<()> {
        let invocations = kernel.invocations(params, self.workgroup_size);
        if invocations == 0 {
            return Ok(());
        }
        let (x, y) = self.grid(kernel, invocations)?;
        pass.set_pipeline(self.pipeline(kernel));
        pass.set_bind_group(0, bind_group, &[params_offset]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }

    fn pipeline(&self, kernel: Kernel) -> &wgpu::ComputePipeline {
        match kernel {
            Kernel::Logits | Kernel::LogitsSplit => {
                debug_assert_eq!(
                    kernel,
                    self.logits_dispatch(),
                    "only one logits kernel is built"
                );
                &self.logits
            }
            Kernel::SoftmaxNll => &self.softmax_nll,
            Kernel::SgdUpdate | Kernel::SgdUpdateSplit => {
                debug_assert_eq!(
                    kernel,
                    self.update_dispatch(),
                    "only one update kernel is built"
                );
                &self.sgd_update
            }
            Kernel::Evaluate => &self.evaluate,
        }
    }

    /// Workgroup counts `(x, y)` covering `invocations`; `y` exceeds 1 only
    /// when `x` alone would pass `max_compute_workgroups_per_dimension`.
    fn grid(&self, kernel: Kernel, invocations: u64) -> Result<(u32, u32)> {
        dispatch_grid(
            kernel.source().label,
            invocations,
            self.workgroup_size,
            self.max_workgroups_per_dimension,
        )
    }
}

/// Returns the logits and the update kernel of `step`, which must be
/// resolved.
fn step_dispatches(step: StepKernels) -> (Kernel, Kernel) {
    match step {
        StepKernels::Split => (Kernel::LogitsSplit, Kernel::SgdUpdateSplit),
        StepKernels::Auto | StepKernels::Tiles => (Kernel::Logits, Kernel::SgdUpdate),
    }
}

/// Computes the workgroup grid for `invocations`; see [`Kernels::grid`].
pub(crate) fn dispatch_grid(
    label: &str,
    invocations: u64,
    workgroup_size: u32,
    max_per_dimension: u32,
) -> Result<(u32, u32)> {
    let workgroups = invocations.div_ceil(workgroup_size as u64);
    let max = max_per_dimension as u64;
    let (x, y) = if workgroups <= max {
        (workgroups, 1)
    } else {
        (max, workgroups.div_ceil(max))
    };
    // Shaders index invocations with u32, so the whole grid must fit one.
    let grid_invocations = x * y * workgroup_size as u64;
    if y > max || grid_invocations > u32::MAX as u64 {
        return Err(Error::Gpu {
            reason: format!(
                "kernel {label} needs {invocations} invocations, more than a grid of \
                 {max_per_dimension} x {max_per_dimension} workgroups \
                 (max_compute_workgroups_per_dimension) of {workgroup_size} invocations with \
                 32-bit indices can cover; use smaller batches or fewer features"
            ),
        });
    }
    Ok((x as u32, y as u32))
}

fn choose_workgroup_size(limits: &wgpu::Limits, requested: Option<u32>) -> Result<u32> {
    let cap = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x);
    match requested {
        None => Ok(DEFAULT_WORKGROUP_SIZE.min(cap)),
        Some(0) => Err(Error::Gpu {
            reason: "workgroup size 0 is invalid; use at least 1".to_string(),
        }),
        Some(size) if size > limits.max_compute_invocations_per_workgroup => Err(Error::Gpu {
            reason: format!(
                "workgroup size {size} exceeds the device's max_compute_invocations_per_workgroup \
                 of {}",
                limits.max_compute_invocations_per_workgroup
            ),
        }),
        Some(size) if size > limits.max_compute_workgroup_size_x => Err(Error::Gpu {
            reason: format!(
                "workgroup size {size} exceeds the device's max_compute_workgroup_size_x of {}",
                limits.max_compute_workgroup_size_x
            ),
        }),
        Some(size) => Ok(size),
    }
}

/// Returns the bind group layout both engines use: binding 0 a uniform
/// block of `params_size` bytes at a dynamic offset, then seven storage
/// buffers, of which the first `read_only` are read-only.
pub(crate) fn layout_entries(params_size: u64, read_only: u32) -> [wgpu::BindGroupLayoutEntry; 8] {
    let storage = |binding: u32| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage {
                read_only: binding <= read_only,
            },
            has_dynamic_offset: false,
            min_binding_size: NonZeroU64::new(4),
        },
        count: None,
    };
    [
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: NonZeroU64::new(params_size),
            },
            count: None,
        },
        storage(1),
        storage(2),
        storage(3),
        storage(4),
        storage(5),
        storage(6),
        storage(7),
    ]
}

/// Decodes the status words read back after an evaluation of `batches`.
pub(crate) fn evaluation_from_status(
    bytes: &[u8],
    batches: &[crate::backend::Batch],
) -> crate::backend::Evaluation {
    let status: Vec<u32> = bytemuck::pod_collect_to_vec(bytes);
    let first_non_finite = status[STATUS_FIRST_NON_FINITE_STEP];
    crate::backend::Evaluation {
        errors: status[STATUS_ERRORS] as u64,
        rows: batches.iter().map(|batch| batch.len as u64).sum(),
        first_non_finite_step: (first_non_finite != u32::MAX).then_some(first_non_finite as u64),
    }
}

fn build_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    kernel: KernelSource,
    storage: FeatureStorage,
    workgroup_size: u32,
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(kernel.label),
        source: wgpu::ShaderSource::Wgsl(shaders::full_source(kernel, storage).into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(kernel.label),
        layout: Some(layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WORKGROUP_SIZE", workgroup_size as f64)],
            zero_initialize_workgroup_memory: true,
        },
        cache: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_size_matches_wgsl_struct() {
        assert_eq!(PARAMS_SIZE, 32);
        assert_eq!(
            PARAMS_SIZE % 16,
            0,
            "uniform structs are padded to 16 bytes"
        );
        assert_eq!(std::mem::align_of::<Params>(), 4);
    }

    #[test]
    fn grid_stays_one_dimensional_within_limit() {
        assert_eq!(dispatch_grid("k", 1, 64, 65535).unwrap(), (1, 1));
        assert_eq!(dispatch_grid("k", 65, 64, 65535).unwrap(), (2, 1));
        assert_eq!(
            dispatch_grid("k", 64 * 65535, 64, 65535).unwrap(),
            (65535, 1)
        );
    }

    #[test]
    fn grid_uses_second_dimension_past_limit() {
        assert_eq!(
            dispatch_grid("k", 64 * 65536, 64, 65535).unwrap(),
            (65535, 2)
        );
        assert_eq!(dispatch_grid("k", 1000, 1, 40).unwrap(), (40, 25));
    }

    #[test]
    fn grid_rejects_dispatch_past_both_dimensions() {
        let error = dispatch_grid("logits", 1000, 1, 16)
            .map(|_| ())
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("max_compute_workgroups_per_dimension"),
            "{error}"
        );
        let error = dispatch_grid("logits", 1000, 1, 31)
            .map(|_| ())
            .unwrap_err();
        assert!(error.to_string().contains("logits"), "{error}");
    }

    #[test]
    fn auto_step_kernels_split_on_hardware_only() {
        let limits = wgpu::Limits::default();
        let resolve = |kernels: StepKernels, device_type, size| {
            kernels.resolve(device_type, &limits, size).unwrap()
        };
        use wgpu::DeviceType::{Cpu, DiscreteGpu, IntegratedGpu};
        use StepKernels::{Auto, Split, Tiles};
        assert_eq!(resolve(Auto, DiscreteGpu, 64), Split);
        assert_eq!(resolve(Auto, IntegratedGpu, 128), Split);
        assert_eq!(resolve(Auto, Cpu, 64), Tiles);
        // 256 invocations need 32 KiB, past the default 16 KiB of storage.
        assert_eq!(resolve(Auto, DiscreteGpu, 256), Tiles);
        assert_eq!(resolve(Split, Cpu, 64), Split);
        assert_eq!(resolve(Tiles, DiscreteGpu, 64), Tiles);
    }

    #[test]
    fn split_step_kernels_reject_too_large_workgroup() {
        let limits = wgpu::Limits::default();
        let error = StepKernels::Split
            .resolve(wgpu::DeviceType::DiscreteGpu, &limits, 256)
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("max_compute_workgroup_storage_size of 16384"),
            "{message}"
        );
        assert!(message.contains("need 32768 bytes"), "{message}");
    }

    #[test]
    fn split_dispatches_have_workgroup_per_tile() {
        let params = Params {
            rows: 600,
            features: 784,
            classes: 10,
            ..Params::default()
        };
        // Logits: 150 tiles of 4 rows by 3 blocks of 4 classes.
        assert_eq!(Kernel::LogitsSplit.invocations(&params, 64), 450 * 64);
        assert_eq!(Kernel::Logits.invocations(&params, 64), 75 * 3);
        // Update: 99 tiles of 8 of the 785 parameter rows by 3 blocks.
        assert_eq!(Kernel::SgdUpdateSplit.invocations(&params, 64), 297 * 64);
        assert_eq!(Kernel::SgdUpdate.invocations(&params, 64), 297);
    }

    #[test]
    fn workgroup_size_respects_limits() {
        let limits = wgpu::Limits::default();
        assert_eq!(choose_workgroup_size(&limits, None).unwrap(), 64);
        let error = choose_workgroup_size(&limits, Some(100_000)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("max_compute_invocations_per_workgroup"),
            "{error}"
        );
    }
}
