//! One-shot kernel runs on host arrays, to test each kernel against the CPU
//! operations in [`crate::cpu::ops`].
//!
//! Each call uploads its inputs, runs one dispatch and reads every output
//! back, so it is slow next to [`GpuBackend`](super::GpuBackend), which keeps
//! data on the GPU. Arrays use the layouts of the CPU operations: features
//! `n x d`, weights `d x k`, bias and logit rows of `k` entries.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use wgpu::util::DeviceExt;

use super::adapter::AdapterRequest;
use super::context::GpuContext;
use super::kernels::{
    Bindings, Kernel, Kernels, Params, StepKernels, STATUS_ERRORS, STATUS_FIRST_NON_FINITE_STEP,
    STATUS_LEN,
};
use super::storage::FeatureStorage;
use crate::error::{Error, Result};

/// Output of [`KernelRunner::softmax_nll`].
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxNllOutput {
    /// `(softmax(z) - onehot(label)) * scale`, `n x k`.
    pub gradient: Array2<f32>,
    /// Per-row loss `logsumexp(z) - z[label]`.
    pub losses: Vec<f32>,
    /// The `step` passed in if some loss was not finite.
    pub first_non_finite_step: Option<u32>,
}

/// Output of [`KernelRunner::sgd_update`].
#[derive(Clone, Debug, PartialEq)]
pub struct SgdUpdateOutput {
    /// Updated `d x k` weights.
    pub weights: Array2<f32>,
    /// Updated `k` biases.
    pub bias: Array1<f32>,
    /// The `step` passed in if some updated parameter was not finite.
    pub first_non_finite_step: Option<u32>,
}

/// Runs single kernels on host arrays.
pub struct KernelRunner {
    context: GpuContext,
    kernels: Kernels,
}

/// Host data for the bindings of one run. Empty slices become one zero, as
/// bindings cannot be empty.
#[derive(Default)]
struct Inputs<'a> {
    features: &'a [f32],
    labels: &'a [u32],
    weights: &'a [f32],
    bias: &'a [f32],
    scratch: &'a [f32],
    losses_len: usize,
}

/// Every writable binding's contents after a run.
struct Outputs {
    scratch: Vec<f32>,
    weights: Vec<f32>,
    bias: Vec<f32>,
    losses: Vec<f32>,
    status: [u32; STATUS_LEN],
}

impl KernelRunner {
    /// Creates a device for `request` and builds the kernels with
    /// `workgroup_size` invocations per workgroup (the default when `None`).
    ///
    /// # Errors
    /// [`Error::NoAdapter`] if no adapter matches, [`Error::Gpu`] otherwise.
    pub fn new(request: &AdapterRequest, workgroup_size: Option<u32>) -> Result<Self> {
        Self::with_step_kernels(request, workgroup_size, StepKernels::Tiles)
    }

    /// As [`KernelRunner::new`], with [`KernelRunner::logits`] and
    /// [`KernelRunner::sgd_update`] running the kernels that `step` selects
    /// for this adapter.
    ///
    /// # Errors
    /// As [`KernelRunner::new`], and [`Error::Gpu`] if the split kernels are
    /// requested with a workgroup size whose partial sums do not fit the
    /// device's workgroup storage.
    pub fn with_step_kernels(
        request: &AdapterRequest,
        workgroup_size: Option<u32>,
        step: StepKernels,
    ) -> Result<Self> {
        let context = GpuContext::new(request)?;
        let kernels = Kernels::new(&context, workgroup_size, FeatureStorage::F32, step)?;
        Ok(KernelRunner { context, kernels })
    }

    /// Returns the kernels that [`KernelRunner::logits`] and
    /// [`KernelRunner::sgd_update`] run, [`StepKernels::Tiles`] or
    /// [`StepKernels::Split`].
    pub fn step_kernels(&self) -> StepKernels {
        self.kernels.step_kernels()
    }

    /// Lowers the workgroups per grid dimension of every dispatch to at most
    /// `cap` (at least 1), so that small inputs already need the
    /// two-dimensional grids that large ones use.
    pub fn with_workgroups_per_dimension(mut self, cap: u32) -> Self {
        self.kernels.cap_workgroups_per_dimension(cap);
        self
    }

    /// Returns the device the kernels run on.
    pub fn context(&self) -> &GpuContext {
        &self.context
    }

    /// Invocations per workgroup of the pipelines.
    pub fn workgroup_size(&self) -> u32 {
        self.kernels.workgroup_size()
    }

    /// Computes `x · weights + bias` (`n x k`) with the logits kernel of
    /// [`KernelRunner::step_kernels`].
    ///
    /// # Errors
    /// [`Error::Shape`] if the shapes disagree, [`Error::Gpu`] if the run fails.
    pub fn logits(
        &self,
        x: ArrayView2<'_, f32>,
        weights: ArrayView2<'_, f32>,
        bias: ArrayView1<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_model_shapes(x, weights, bias)?;
        let (rows, classes) = (x.nrows(), weights.ncols());
        let params = self.params(rows, x.ncols(), classes);
        let x = x.as_standard_layout();
        let weights = weights.as_standard_layout();
        let bias = bias.to_vec();
        // NaN marks every logit that the kernel fails to store.
        let scratch = vec![f32::NAN; rows * classes];
        let outputs = self.run(
            self.kernels.logits_dispatch(),
            &params,
            Inputs {
                features: slice(&x),
                weights: slice(&weights),
                bias: &bias,
                scratch: &scratch,
                ..Inputs::default()
            },
        )?;
        Ok(to_matrix(outputs.scratch, rows, classes))
    }

    /// Runs the `softmax_nll` kernel on `logits` (`n x k`) with one label
    /// per row, recording `step` if a loss is not finite.
    ///
    /// # Errors
    /// [`Error::Shape`] if a label count or value is wrong, [`Error::Gpu`]
    /// if the run fails.
    pub fn softmax_nll(
        &self,
        logits: ArrayView2<'_, f32>,
        labels: &[u32],
        scale: f32,
        step: u32,
    ) -> Result<SoftmaxNllOutput> {
        let (rows, classes) = logits.dim();
        check_labels(labels, rows, classes)?;
        let params = Params {
            scale,
            step,
            ..self.params(rows, 1, classes)
        };
        let logits = logits.as_standard_layout();
        let outputs = self.run(
            Kernel::SoftmaxNll,
            &params,
            Inputs {
                labels,
                scratch: slice(&logits),
                losses_len: rows,
                ..Inputs::default()
            },
        )?;
        Ok(SoftmaxNllOutput {
            gradient: to_matrix(outputs.scratch, rows, classes),
            losses: outputs.losses,
            first_non_finite_step: non_finite_step(outputs.status),
        })
    }

    /// Runs the update kernel of [`KernelRunner::step_kernels`]:
    /// `weights -= learning_rate * xᵀ·gradient`
    /// and `bias -= learning_rate * column sums of gradient`, recording
    /// `step` if an updated parameter is not finite.
    ///
    /// # Errors
    /// [`Error::Shape`] if the shapes disagree, [`Error::Gpu`] if the run fails.
    pub fn sgd_update(
        &self,
        x: ArrayView2<'_, f32>,
        gradient: ArrayView2<'_, f32>,
        weights: ArrayView2<'_, f32>,
        bias: ArrayView1<'_, f32>,
        learning_rate: f32,
        step: u32,
    ) -> Result<SgdUpdateOutput> {
        check_model_shapes(x, weights, bias)?;
        if gradient.dim() != (x.nrows(), weights.ncols()) {
            return Err(Error::Shape {
                reason: format!(
                    "gradient is {:?} but x has {} rows and the model {} classes",
                    gradient.dim(),
                    x.nrows(),
                    weights.ncols()
                ),
            });
        }
        let (features, classes) = weights.dim();
        let params = Params {
            learning_rate,
            step,
            ..self.params(x.nrows(), features, classes)
        };
        let x = x.as_standard_layout();
        let gradient = gradient.as_standard_layout();
        let weights = weights.as_standard_layout();
        let bias = bias.to_vec();
        let outputs = self.run(
            self.kernels.update_dispatch(),
            &params,
            Inputs {
                features: slice(&x),
                weights: slice(&weights),
                bias: &bias,
                scratch: slice(&gradient),
                ..Inputs::default()
            },
        )?;
        Ok(SgdUpdateOutput {
            weights: to_matrix(outputs.weights, features, classes),
            bias: Array1::from(outputs.bias),
            first_non_finite_step: non_finite_step(outputs.status),
        })
    }

    /// Counts rows whose argmax of `x · weights + bias` differs from the
    /// label, with the `evaluate` kernel.
    ///
    /// # Errors
    /// [`Error::Shape`] if the shapes or labels disagree, [`Error::Gpu`] if
    /// the run fails.
    pub fn count_errors(
        &self,
        x: ArrayView2<'_, f32>,
        weights: ArrayView2<'_, f32>,
        bias: ArrayView1<'_, f32>,
        labels: &[u32],
    ) -> Result<u64> {
        check_model_shapes(x, weights, bias)?;
        check_labels(labels, x.nrows(), weights.ncols())?;
        let params = self.params(x.nrows(), x.ncols(), weights.ncols());
        let x = x.as_standard_layout();
        let weights = weights.as_standard_layout();
        let bias = bias.to_vec();
        let outputs = self.run(
            Kernel::Evaluate,
            &params,
            Inputs {
                features: slice(&x),
                labels,
                weights: slice(&weights),
                bias: &bias,
                ..Inputs::default()
            },
        )?;
        Ok(outputs.status[STATUS_ERRORS] as u64)
    }

    fn params(&self, rows: usize, features: usize, classes: usize) -> Params {
        Params {
            rows: rows as u32,
            features: features as u32,
            classes: classes as u32,
            ..Params::default()
        }
    }

    /// Uploads `inputs`, dispatches `kernel` once and reads every writable
    /// binding back.
    fn run(&self, kernel: Kernel, params: &Params, inputs: Inputs<'_>) -> Result<Outputs> {
        let operation = format!("one-shot run of {kernel:?}");
        let status_init = [u32::MAX, 0];
        let (read_back, submission, sizes) =
            self.context.scoped(&operation, || -> Result<_> {
                let device = self.context.device();
                let storage = |label: &str, bytes: &[u8]| {
                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytes,
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    })
                };
                let params_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("one-shot params"),
                    contents: &self.kernels.pack_params(std::slice::from_ref(params)),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let losses_init = vec![0.0f32; inputs.losses_len];
                let features = storage(
                    "one-shot features",
                    bytemuck::cast_slice(&non_empty(inputs.features)),
                );
                let labels = storage(
                    "one-shot labels",
                    bytemuck::cast_slice(&non_empty(inputs.labels)),
                );
                let weights = storage(
                    "one-shot weights",
                    bytemuck::cast_slice(&non_empty(inputs.weights)),
                );
                let bias = storage(
                    "one-shot bias",
                    bytemuck::cast_slice(&non_empty(inputs.bias)),
                );
                let scratch = storage(
                    "one-shot scratch",
                    bytemuck::cast_slice(&non_empty(inputs.scratch)),
                );
                let losses = storage(
                    "one-shot losses",
                    bytemuck::cast_slice(&non_empty(&losses_init)),
                );
                let status = storage("one-shot status", bytemuck::cast_slice(&status_init));
                let bind_group = self.kernels.bind_group(
                    &self.context,
                    "one-shot bindings",
                    &Bindings {
                        params: &params_buffer,
                        features: &features,
                        labels: &labels,
                        weights: &weights,
                        bias: &bias,
                        scratch: &scratch,
                        losses: &losses,
                        status: &status,
                    },
                );

                // Every writable binding is copied, back to back, into one read-back buffer.
                let outputs = [&scratch, &weights, &bias, &losses, &status];
                let sizes: Vec<u64> = outputs.iter().map(|buffer| buffer.size()).collect();
                let read_back = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("one-shot read-back"),
                    size: sizes.iter().sum(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("one-shot commands"),
                });
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("one-shot pass"),
                        timestamp_writes: None,
                    });
                    self.kernels
                        .encode(&mut pass, kernel, &bind_group, 0, params)?;
                }
                let mut offset = 0;
                for (buffer, size) in outputs.iter().zip(&sizes) {
                    encoder.copy_buffer_to_buffer(buffer, 0, &read_back, offset, *size);
                    offset += size;
                }
                let submission = self.context.queue().submit([encoder.finish()]);
                Ok((read_back, submission, sizes))
            })??;

        let bytes = self.context.read_back(
            &operation,
            &read_back,
            submission,
            std::time::Duration::from_secs(60),
        )?;
        let mut parts = Vec::with_capacity(sizes.len());
        let mut offset = 0;
        for size in sizes {
            let part: Vec<f32> =
                bytemuck::pod_collect_to_vec(&bytes[offset..offset + size as usize]);
            parts.push(part);
            offset += size as usize;
        }
        let status_words: Vec<u32> = bytemuck::cast_slice(&parts[4]).to_vec();
        Ok(Outputs {
            scratch: truncate(parts[0].clone(), inputs.scratch.len()),
            weights: truncate(parts[1].clone(), inputs.weights.len()),
            bias: truncate(parts[2].clone(), inputs.bias.len()),
            losses: truncate(parts[3].clone(), inputs.losses_len),
            status: [
                status_words[STATUS_FIRST_NON_FINITE_STEP],
                status_words[STATUS_ERRORS],
            ],
        })
    }
}

fn check_model_shapes(
    x: ArrayView2<'_, f32>,
    weights: ArrayView2<'_, f32>,
    bias: ArrayView1<'_, f32>,
) -> Result<()> {
    if x.ncols() != weights.nrows() || bias.len() != weights.ncols() {
        return Err(Error::Shape {
            reason: format!(
                "x is {:?}, weights {:?} and bias {}; need x n x d, weights d x k, bias k",
                x.dim(),
                weights.dim(),
                bias.len()
            ),
        });
    }
    Ok(())
}

fn check_labels(labels: &[u32], rows: usize, classes: usize) -> Result<()> {
    if labels.len() != rows {
        return Err(Error::Shape {
            reason: format!("{} labels for {rows} rows", labels.len()),
        });
    }
    if let Some(label) = labels.iter().find(|&&label| label as usize >= classes) {
        return Err(Error::Shape {
            reason: format!("label {label} is not below the class count {classes}"),
        });
    }
    Ok(())
}

fn slice<'a>(array: &'a ndarray::CowArray<'_, f32, ndarray::Ix2>) -> &'a [f32] {
    array
        .as_slice()
        .expect("as_standard_layout returns a contiguous array")
}

fn non_empty<T: bytemuck::Pod + Default>(data: &[T]) -> Vec<T> {
    if data.is_empty() {
        vec![T::default()]
    } else {
        data.to_vec()
    }
}

fn truncate(mut values: Vec<f32>, len: usize) -> Vec<f32> {
    values.truncate(len);
    values
}

fn to_matrix(values: Vec<f32>, rows: usize, columns: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, columns), values)
        .expect("the read-back has rows x columns values")
}

fn non_finite_step(status: [u32; STATUS_LEN]) -> Option<u32> {
    let step = status[STATUS_FIRST_NON_FINITE_STEP];
    (step != u32::MAX).then_some(step)
}
