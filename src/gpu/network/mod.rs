//! The network engine of [`GpuBackend`](super::GpuBackend): trains any
//! stack of dense layers with any [`Optimizer`] and [`Penalty`], following
//! `src/cpu/network.rs` operation by operation.
//!
//! Parameters, their gradients, the batch's input, every layer's output and
//! every layer's delta share one storage buffer (`net` in
//! `shaders/network_prelude.wgsl`), addressed by element offsets in the
//! per-dispatch [`NetworkParams`]. The optimiser state has its own buffer
//! in [`OptimizerState`]'s layout. Each split is one feature buffer and one
//! label buffer, and a training step first gathers its rows, through the
//! training order when one is set, into the input matrix.

mod kernels;

use ndarray::{Array1, Array2};
use wgpu::util::DeviceExt;

use self::kernels::{
    Dispatch, NetworkKernel, NetworkKernels, NetworkParams, ACTIVATION_IDENTITY,
    FLAG_BIAS_ACTIVATION, FLAG_TIMES_DERIVATIVE, FLAG_TRANSPOSE_A, FLAG_TRANSPOSE_B,
    FLAG_USE_ORDER,
};
use super::backend::{GpuCounters, GpuOptions};
use super::context::GpuContext;
use super::kernels::{evaluation_from_status, STATUS_ERRORS, STATUS_LEN};
use super::storage::{self, FeatureStorage};
use crate::backend::{check_order, Backend, Batch, Evaluation, Setup};
use crate::data::{Split, Splits};
use crate::error::{Error, Result};
use crate::model::{Activation, Dense, Model};
use crate::optim::{Optimizer, OptimizerState, Penalty};

/// Parameter slots of the first uniform buffer; it grows when a call needs more.
const INITIAL_PARAMS_SLOTS: usize = 1024;

/// Element offsets of one layer's matrices.
#[derive(Clone, Copy, Debug)]
struct LayerLayout {
    inputs: usize,
    outputs: usize,
    /// Weights in `net`, followed by the bias.
    params: usize,
    /// Weight gradient in `net`, followed by the bias gradient.
    grads: usize,
    /// Weight state in the state buffer, followed by the bias state.
    state: usize,
    /// The layer's input matrix in `net`: the gathered batch or the
    /// previous layer's output.
    input: usize,
    /// The layer's output matrix in `net`, after the activation.
    output: usize,
    /// Gradient with respect to the layer's pre-activation output, in `net`.
    delta: usize,
}

/// Element offsets of every matrix, for batches of up to `capacity` rows.
#[derive(Clone, Debug)]
struct NetLayout {
    layers: Vec<LayerLayout>,
    /// Parameters of all layers, which start `net`.
    param_count: usize,
    net_len: usize,
    state_len: usize,
}

impl NetLayout {
    fn new(shapes: &[(usize, usize)], capacity: usize, slots: usize) -> Self {
        let param_count: usize = shapes.iter().map(|&(i, o)| i * o + o).sum();
        let input_len = capacity * shapes[0].0;
        let outputs_len: usize = shapes.iter().map(|&(_, o)| capacity * o).sum();
        let mut layers = Vec::with_capacity(shapes.len());
        let mut params = 0;
        let mut state = 0;
        let mut input = 2 * param_count;
        let mut output = input + input_len;
        let mut delta = input + input_len + outputs_len;
        for &(inputs, outputs) in shapes {
            layers.push(LayerLayout {
                inputs,
                outputs,
                params,
                grads: param_count + params,
                state,
                input,
                output,
                delta,
            });
            params += inputs * outputs + outputs;
            state += slots * (inputs * outputs + outputs);
            input = output;
            output += capacity * outputs;
            delta += capacity * outputs;
        }
        NetLayout {
            layers,
            param_count,
            net_len: delta,
            state_len: state,
        }
    }
}

/// One split on the GPU: features (u8 or f32 storage) and labels.
struct SplitData {
    name: Split,
    rows: usize,
    features: wgpu::Buffer,
    labels: wgpu::Buffer,
    bind_group: Option<wgpu::BindGroup>,
}

/// The GPU buffers besides the splits.
struct NetBuffers {
    net: wgpu::Buffer,
    state: wgpu::Buffer,
    best: wgpu::Buffer,
    order: wgpu::Buffer,
    batch_labels: wgpu::Buffer,
    status: wgpu::Buffer,
    status_read_back: wgpu::Buffer,
    read_back: wgpu::Buffer,
}

/// Trains any [`Setup`] on the GPU with tiled matrix multiplies.
pub(crate) struct NetworkEngine {
    context: GpuContext,
    kernels: NetworkKernels,
    options: GpuOptions,
    feature_storage: FeatureStorage,
    template: Model,
    activation: Activation,
    optimizer: Optimizer,
    penalty: Penalty,
    layout: NetLayout,
    splits: [SplitData; 3],
    buffers: NetBuffers,
    params: wgpu::Buffer,
    params_slots: usize,
    order_set: bool,
    steps_done: u64,
    has_best: bool,
    counters: GpuCounters,
}

impl NetworkEngine {
    /// Creates a device, builds the network kernels and uploads the splits,
    /// the parameters of `setup.model` and the optimiser state of `setup`.
    ///
    /// # Errors
    /// As [`GpuBackend::with_setup`](super::GpuBackend::with_setup); a split
    /// or the network's buffer that exceeds one storage binding is
    /// [`Error::Gpu`] naming its size and the limit.
    pub fn new(splits: &Splits, options: GpuOptions, setup: &Setup) -> Result<Self> {
        let split_bytes = storage::resolve(options.feature_storage, splits)?;
        let feature_storage = match split_bytes {
            Some(_) => FeatureStorage::U8,
            None => FeatureStorage::F32,
        };
        let context = GpuContext::new(&options.adapter)?;
        let kernels = NetworkKernels::new(&context, feature_storage)?;

        let layers = setup.model.to_layers();
        let shapes: Vec<(usize, usize)> = layers.iter().map(|layer| layer.weights.dim()).collect();
        let slots = setup.optimizer.slots();
        let layout = NetLayout::new(&shapes, options.batch_size, slots);
        let binding_limit = context
            .limits()
            .max_storage_buffer_binding_size
            .min(context.limits().max_buffer_size);
        check_binding(
            &format!(
                "the parameters, gradients and activations of {} for batches of {} rows",
                setup.model.summary(),
                options.batch_size
            ),
            layout.net_len as u64 * 4,
            binding_limit,
        )?;
        check_binding(
            "the optimiser state",
            layout.state_len as u64 * 4,
            binding_limit,
        )?;
        let features = splits.n_features();
        for split in [Split::Train, Split::Validation, Split::Test] {
            let elements = splits.get(split).len() * features;
            check_binding(
                &format!("the {split} split's features"),
                feature_storage.buffer_bytes(elements),
                binding_limit,
            )?;
            if elements > u32::MAX as usize {
                return Err(Error::Gpu {
                    reason: format!(
                        "the {split} split has {elements} feature values, more than the \
                         network kernels' 32-bit indices can address"
                    ),
                });
            }
        }

        let mut counters = GpuCounters::default();
        let mut net_init = vec![0.0f32; layout.net_len];
        let mut position = 0;
        for layer in &layers {
            for value in layer.weights.iter().chain(layer.bias.iter()) {
                net_init[position] = *value;
                position += 1;
            }
        }
        let state_init: Vec<f32> = match &setup.state {
            Some(state) => state.tensors.concat(),
            None => vec![0.0; layout.state_len],
        };
        let buffers = create_buffers(
            &context,
            &layout,
            &net_init,
            &state_init,
            splits.train.len(),
            options.batch_size,
            &mut counters,
        )?;
        drop(net_init);

        let upload = |split: Split, counters: &mut GpuCounters| {
            upload_split(
                &context,
                split,
                splits,
                split_bytes.as_ref().map(|all| all.get(split)),
                counters,
            )
        };
        let train = upload(Split::Train, &mut counters)?;
        let validation = upload(Split::Validation, &mut counters)?;
        let test = upload(Split::Test, &mut counters)?;
        let params = create_params_buffer(&context, &kernels, INITIAL_PARAMS_SLOTS)?;

        let mut engine = NetworkEngine {
            context,
            kernels,
            options,
            feature_storage,
            template: setup.model.clone(),
            activation: setup.model.activation().unwrap_or_default(),
            optimizer: setup.optimizer,
            penalty: setup.penalty,
            layout,
            splits: [train, validation, test],
            buffers,
            params,
            params_slots: INITIAL_PARAMS_SLOTS,
            order_set: false,
            steps_done: setup.state.as_ref().map_or(0, |state| state.steps),
            has_best: false,
            counters,
        };
        engine.create_bind_groups()?;
        Ok(engine)
    }

    pub fn counters(&self) -> GpuCounters {
        self.counters
    }

    pub fn feature_storage(&self) -> FeatureStorage {
        self.feature_storage
    }

    pub fn feature_bytes(&self) -> u64 {
        self.splits.iter().map(|split| split.features.size()).sum()
    }

    pub fn context(&self) -> &GpuContext {
        &self.context
    }

    /// Rows of `split`, which the network engine keeps in one buffer.
    pub fn chunk_rows(&self, split: Split) -> Vec<std::ops::Range<usize>> {
        vec![0..self.split(split).rows]
    }

    fn split(&self, split: Split) -> &SplitData {
        &self.splits[split_index(split)]
    }

    /// (Re)creates the bind group of every split, after creation or after
    /// the parameter buffer grew.
    fn create_bind_groups(&mut self) -> Result<()> {
        let context = &self.context;
        let kernels = &self.kernels;
        let buffers = &self.buffers;
        let params = &self.params;
        context.scoped("creating the network bind groups", || {
            for split in &mut self.splits {
                let label = format!("{} network bindings", split.name);
                split.bind_group = Some(kernels.bind_group(
                    context,
                    &label,
                    [
                        params,
                        &split.features,
                        &split.labels,
                        &buffers.order,
                        &buffers.net,
                        &buffers.state,
                        &buffers.batch_labels,
                        &buffers.status,
                    ],
                ));
            }
        })
    }

    /// Makes room for `slots` parameter slots.
    fn reserve_params(&mut self, slots: usize) -> Result<()> {
        if slots <= self.params_slots {
            return Ok(());
        }
        let slots = slots.next_power_of_two();
        self.params = create_params_buffer(&self.context, &self.kernels, slots)?;
        self.params_slots = slots;
        self.create_bind_groups()
    }

    /// Checks that `batch` lies within `split` and is not empty.
    fn check_batch(&self, split: Split, batch: &Batch) -> Result<()> {
        let rows = self.split(split).rows;
        if batch.len == 0
            || batch
                .start
                .checked_add(batch.len)
                .is_none_or(|end| end > rows)
        {
            return Err(Error::Shape {
                reason: format!(
                    "batch of rows {}..{} is empty or outside the {split} split's {rows} rows",
                    batch.start,
                    batch.start.saturating_add(batch.len),
                ),
            });
        }
        Ok(())
    }

    /// Appends the gather and the forward pass of `rows` rows from
    /// `row_start`, leaving the logits in the last layer's output.
    fn plan_forward(
        &self,
        dispatches: &mut Vec<Dispatch>,
        row_start: usize,
        rows: usize,
        use_order: bool,
    ) -> Result<()> {
        let first = &self.layout.layers[0];
        dispatches.push(self.kernels.dispatch(
            NetworkKernel::Gather,
            NetworkParams {
                rows: rows as u32,
                row_start: row_start as u32,
                features: first.inputs as u32,
                c_offset: first.input as u32,
                flags: if use_order { FLAG_USE_ORDER } else { 0 },
                ..NetworkParams::default()
            },
        )?);
        let last = self.layout.layers.len() - 1;
        for (index, layer) in self.layout.layers.iter().enumerate() {
            let activation = if index == last {
                ACTIVATION_IDENTITY
            } else {
                activation_code(self.activation)
            };
            dispatches.push(self.kernels.dispatch(
                NetworkKernel::Matmul,
                NetworkParams {
                    m: rows as u32,
                    k: layer.inputs as u32,
                    n: layer.outputs as u32,
                    a_offset: layer.input as u32,
                    b_offset: layer.params as u32,
                    c_offset: layer.output as u32,
                    flags: FLAG_BIAS_ACTIVATION,
                    epilogue_offset: (layer.params + layer.inputs * layer.outputs) as u32,
                    activation,
                    ..NetworkParams::default()
                },
            )?);
        }
        Ok(())
    }

    /// Appends one training step on `batch`, the `index`-th of this call.
    fn plan_train_step(
        &self,
        dispatches: &mut Vec<Dispatch>,
        batch: &Batch,
        index: usize,
        learning_rate: f32,
    ) -> Result<()> {
        let rows = batch.len;
        self.plan_forward(dispatches, batch.start, rows, self.order_set)?;

        let global_step = self.steps_done + index as u64;
        // Step indices past u32::MAX - 1 share the last value; u32::MAX means "none".
        let step = global_step.min(u32::MAX as u64 - 1) as u32;
        let (correction1, correction2) = self.optimizer.bias_corrections(global_step + 1);
        let (optimizer, beta1, beta2, epsilon, weight_decay) = optimizer_code(&self.optimizer);
        let layers = &self.layout.layers;
        let last = layers[layers.len() - 1];
        dispatches.push(self.kernels.dispatch(
            NetworkKernel::SoftmaxNll,
            NetworkParams {
                rows: rows as u32,
                n: last.outputs as u32,
                a_offset: last.output as u32,
                c_offset: last.delta as u32,
                scale: 1.0 / rows as f32,
                step,
                ..NetworkParams::default()
            },
        )?);

        for (index, layer) in layers.iter().enumerate().rev() {
            let weight_count = layer.inputs * layer.outputs;
            dispatches.push(self.kernels.dispatch(
                NetworkKernel::Matmul,
                NetworkParams {
                    m: layer.inputs as u32,
                    k: rows as u32,
                    n: layer.outputs as u32,
                    a_offset: layer.input as u32,
                    b_offset: layer.delta as u32,
                    c_offset: layer.grads as u32,
                    flags: FLAG_TRANSPOSE_A,
                    ..NetworkParams::default()
                },
            )?);
            dispatches.push(self.kernels.dispatch(
                NetworkKernel::ColumnSums,
                NetworkParams {
                    rows: rows as u32,
                    n: layer.outputs as u32,
                    a_offset: layer.delta as u32,
                    c_offset: (layer.grads + weight_count) as u32,
                    ..NetworkParams::default()
                },
            )?);
            // The previous layer's delta uses this layer's weights before the update.
            if index > 0 {
                let previous = layers[index - 1];
                dispatches.push(self.kernels.dispatch(
                    NetworkKernel::Matmul,
                    NetworkParams {
                        m: rows as u32,
                        k: layer.outputs as u32,
                        n: layer.inputs as u32,
                        a_offset: layer.delta as u32,
                        b_offset: layer.params as u32,
                        c_offset: previous.delta as u32,
                        flags: FLAG_TRANSPOSE_B | FLAG_TIMES_DERIVATIVE,
                        epilogue_offset: previous.output as u32,
                        activation: activation_code(self.activation),
                        ..NetworkParams::default()
                    },
                )?);
            }
            dispatches.push(self.kernels.dispatch(
                NetworkKernel::Update,
                NetworkParams {
                    m: weight_count as u32,
                    n: layer.outputs as u32,
                    a_offset: layer.params as u32,
                    b_offset: layer.grads as u32,
                    state_offset: layer.state as u32,
                    slots: self.optimizer.slots() as u32,
                    optimizer,
                    learning_rate,
                    beta1,
                    beta2,
                    epsilon,
                    weight_decay,
                    l1: self.penalty.l1,
                    l2: self.penalty.l2,
                    correction1,
                    correction2,
                    step,
                    ..NetworkParams::default()
                },
            )?);
        }
        Ok(())
    }

    /// Encodes the dispatches, whose parameters sit in uniform slots 0..,
    /// into one compute pass over `split`'s bind group.
    fn encode(&self, encoder: &mut wgpu::CommandEncoder, split: Split, dispatches: &[Dispatch]) {
        let stride = self.kernels.params_stride();
        let bind_group = self
            .split(split)
            .bind_group
            .as_ref()
            .expect("bind groups are created in new");
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("network pass"),
            timestamp_writes: None,
        });
        for (slot, dispatch) in dispatches.iter().enumerate() {
            self.kernels.encode_one(
                &mut pass,
                bind_group,
                (slot as u64 * stride) as u32,
                dispatch,
            );
        }
    }

    /// Copies `bytes` bytes of `source` into the read-back buffer and
    /// returns them as floats.
    fn read_floats(
        &mut self,
        operation: &str,
        source: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<f32>> {
        let read_back = &self.buffers.read_back;
        let submission = self.context.scoped(operation, || {
            let mut encoder =
                self.context
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("network read-back commands"),
                    });
            encoder.copy_buffer_to_buffer(source, 0, read_back, 0, bytes);
            self.context.queue().submit([encoder.finish()])
        })?;
        self.counters.submissions += 1;
        let data = self.context.read_back(
            operation,
            read_back,
            submission,
            self.options.read_back_timeout,
        )?;
        self.counters.read_backs += 1;
        Ok(bytemuck::pod_collect_to_vec(&data[..bytes as usize]))
    }

    /// Reads the current or best parameters back into a model.
    fn read_model(&mut self, best: bool) -> Result<Model> {
        let bytes = self.layout.param_count as u64 * 4;
        let values = if best {
            let source = self.buffers.best.clone();
            self.read_floats("reading the best model", &source, bytes)?
        } else {
            let source = self.buffers.net.clone();
            self.read_floats("reading the model", &source, bytes)?
        };
        let layers = self
            .layout
            .layers
            .iter()
            .map(|layer| {
                let weights = &values[layer.params..layer.params + layer.inputs * layer.outputs];
                let bias = &values[layer.params + weights.len()..][..layer.outputs];
                Dense {
                    weights: Array2::from_shape_vec(
                        (layer.inputs, layer.outputs),
                        weights.to_vec(),
                    )
                    .expect("a layer has inputs x outputs weights"),
                    bias: Array1::from(bias.to_vec()),
                }
            })
            .collect();
        Ok(self.template.with_layers(layers))
    }
}

impl Backend for NetworkEngine {
    fn description(&self) -> String {
        format!(
            "{}, features {}, network kernels",
            self.context.description(),
            self.feature_storage.name()
        )
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut dispatches = Vec::new();
        for (index, batch) in batches.iter().enumerate() {
            self.check_batch(Split::Train, batch)?;
            if batch.len > self.options.batch_size {
                return Err(Error::Shape {
                    reason: format!(
                        "training batch of {} rows exceeds the batch size {} given to GpuBackend::new",
                        batch.len, self.options.batch_size
                    ),
                });
            }
            self.plan_train_step(&mut dispatches, batch, index, learning_rate)?;
        }
        self.reserve_params(dispatches.len())?;

        let this = &*self;
        this.context
            .scoped("encoding and submitting training steps", || {
                this.context.queue().write_buffer(
                    &this.params,
                    0,
                    &this.kernels.pack_params(&dispatches),
                );
                let mut encoder =
                    this.context
                        .device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("network training commands"),
                        });
                this.encode(&mut encoder, Split::Train, &dispatches);
                this.context.queue().submit([encoder.finish()]);
            })?;
        self.counters.uploads += 1;
        self.counters.submissions += 1;
        self.steps_done += batches.len() as u64;
        Ok(())
    }

    fn set_train_order(&mut self, order: Option<&[u32]>) -> Result<()> {
        match order {
            None => self.order_set = false,
            Some(order) => {
                check_order(order, self.split(Split::Train).rows)?;
                self.context.scoped("uploading the training order", || {
                    self.context.queue().write_buffer(
                        &self.buffers.order,
                        0,
                        bytemuck::cast_slice(order),
                    )
                })?;
                self.counters.uploads += 1;
                self.order_set = true;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        let capacity = self.options.batch_size;
        let mut dispatches = Vec::new();
        for batch in batches {
            self.check_batch(split, batch)?;
            let end = batch.start + batch.len;
            for start in (batch.start..end).step_by(capacity) {
                let rows = capacity.min(end - start);
                self.plan_forward(&mut dispatches, start, rows, false)?;
                let last = self.layout.layers[self.layout.layers.len() - 1];
                dispatches.push(self.kernels.dispatch(
                    NetworkKernel::Evaluate,
                    NetworkParams {
                        rows: rows as u32,
                        n: last.outputs as u32,
                        a_offset: last.output as u32,
                        ..NetworkParams::default()
                    },
                )?);
            }
        }
        self.reserve_params(dispatches.len())?;

        let this = &*self;
        let operation = format!("evaluating the {split} split");
        let submission = this.context.scoped(&operation, || {
            if !dispatches.is_empty() {
                this.context.queue().write_buffer(
                    &this.params,
                    0,
                    &this.kernels.pack_params(&dispatches),
                );
            }
            let status = &this.buffers.status;
            let mut encoder =
                this.context
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("network evaluation commands"),
                    });
            encoder.clear_buffer(status, (STATUS_ERRORS * 4) as u64, Some(4));
            this.encode(&mut encoder, split, &dispatches);
            encoder.copy_buffer_to_buffer(
                status,
                0,
                &this.buffers.status_read_back,
                0,
                status.size(),
            );
            this.context.queue().submit([encoder.finish()])
        })?;
        if !dispatches.is_empty() {
            self.counters.uploads += 1;
        }
        self.counters.submissions += 1;

        let bytes = self.context.read_back(
            &operation,
            &self.buffers.status_read_back,
            submission,
            self.options.read_back_timeout,
        )?;
        self.counters.read_backs += 1;
        Ok(evaluation_from_status(&bytes, batches))
    }

    fn keep_best(&mut self) -> Result<()> {
        let buffers = &self.buffers;
        let bytes = self.layout.param_count as u64 * 4;
        self.context.scoped("keeping the best model", || {
            let mut encoder =
                self.context
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("keep-best commands"),
                    });
            encoder.copy_buffer_to_buffer(&buffers.net, 0, &buffers.best, 0, bytes);
            self.context.queue().submit([encoder.finish()]);
        })?;
        self.counters.submissions += 1;
        self.has_best = true;
        Ok(())
    }

    fn best_model(&mut self) -> Result<Model> {
        self.read_model(self.has_best)
    }

    fn current_model(&mut self) -> Result<Model> {
        self.read_model(false)
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let slots = self.optimizer.slots();
        let values = if self.layout.state_len == 0 {
            Vec::new()
        } else {
            let source = self.buffers.state.clone();
            let bytes = self.layout.state_len as u64 * 4;
            self.read_floats("reading the optimiser state", &source, bytes)?
        };
        let tensors = self
            .layout
            .layers
            .iter()
            .flat_map(|layer| {
                let weights = slots * layer.inputs * layer.outputs;
                let bias = slots * layer.outputs;
                [
                    values[layer.state..layer.state + weights].to_vec(),
                    values[layer.state + weights..layer.state + weights + bias].to_vec(),
                ]
            })
            .collect();
        Ok(OptimizerState {
            steps: self.steps_done,
            tensors,
        })
    }
}

fn split_index(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Validation => 1,
        Split::Test => 2,
    }
}

/// `ACTIVATION_*` of `shaders/network_prelude.wgsl`.
fn activation_code(activation: Activation) -> u32 {
    match activation {
        Activation::Tanh => 0,
        Activation::Sigmoid => 1,
        Activation::Relu => 2,
    }
}

/// `OPTIMIZER_*` of `shaders/network_prelude.wgsl` with the settings as the
/// update kernel reads them: momentum or beta1, beta2, epsilon and weight decay.
fn optimizer_code(optimizer: &Optimizer) -> (u32, f32, f32, f32, f32) {
    match *optimizer {
        Optimizer::Sgd => (0, 0.0, 0.0, 0.0, 0.0),
        Optimizer::Momentum { momentum, nesterov } => {
            (if nesterov { 2 } else { 1 }, momentum, 0.0, 0.0, 0.0)
        }
        Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        } => (3, beta1, beta2, epsilon, 0.0),
        Optimizer::AdamW {
            beta1,
            beta2,
            epsilon,
            weight_decay,
        } => (4, beta1, beta2, epsilon, weight_decay),
    }
}

/// Returns [`Error::Gpu`] naming `what` if `bytes` exceed one storage binding.
fn check_binding(what: &str, bytes: u64, limit: u64) -> Result<()> {
    if bytes > limit {
        return Err(Error::Gpu {
            reason: format!(
                "{what} need {bytes} bytes, more than one storage binding can hold ({limit} \
                 bytes, the smaller of max_storage_buffer_binding_size and max_buffer_size); \
                 use smaller batches, layers or splits, or a device with higher limits"
            ),
        });
    }
    Ok(())
}

/// Creates the network, state, best-copy, order, label and status buffers.
fn create_buffers(
    context: &GpuContext,
    layout: &NetLayout,
    net_init: &[f32],
    state_init: &[f32],
    train_rows: usize,
    capacity: usize,
    counters: &mut GpuCounters,
) -> Result<NetBuffers> {
    let status_init: [u32; STATUS_LEN] = [u32::MAX, 0];
    let param_bytes = layout.param_count as u64 * 4;
    // Bindings need at least 4 bytes even where SGD keeps no state.
    let state_bytes = (layout.state_len as u64 * 4).max(4);
    let buffers = context.scoped("creating the network buffers", || {
        let device = context.device();
        let plain = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let storage_usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let state_contents: Vec<f32> = if state_init.is_empty() {
            vec![0.0]
        } else {
            state_init.to_vec()
        };
        NetBuffers {
            net: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("network parameters, gradients and activations"),
                contents: bytemuck::cast_slice(net_init),
                usage: storage_usage,
            }),
            state: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("optimiser state"),
                contents: bytemuck::cast_slice(&state_contents),
                usage: storage_usage,
            }),
            best: plain(
                "best parameters",
                param_bytes,
                wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            ),
            order: plain(
                "training order",
                (train_rows as u64 * 4).max(4),
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            ),
            batch_labels: plain(
                "batch labels",
                (capacity as u64 * 4).max(4),
                wgpu::BufferUsages::STORAGE,
            ),
            status: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("network status"),
                contents: bytemuck::cast_slice(&status_init),
                usage: storage_usage,
            }),
            status_read_back: plain(
                "network status read-back",
                (STATUS_LEN * 4) as u64,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            read_back: plain(
                "network read-back",
                param_bytes.max(state_bytes),
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        }
    })?;
    counters.uploads += 3;
    Ok(buffers)
}

/// Uploads one split's features (padded to whole words for u8 storage) and labels.
fn upload_split(
    context: &GpuContext,
    split: Split,
    splits: &Splits,
    bytes: Option<&[u8]>,
    counters: &mut GpuCounters,
) -> Result<SplitData> {
    let data = splits.get(split);
    let padded;
    let contents: &[u8] = match bytes {
        Some(bytes) => {
            padded = storage::pad_to_words(bytes);
            &padded
        }
        None => bytemuck::cast_slice(data.features()),
    };
    // Bindings need at least 4 bytes.
    let zero = [0u8; 4];
    let contents = if contents.is_empty() {
        &zero[..]
    } else {
        contents
    };
    let labels: &[u8] = if data.labels().is_empty() {
        &zero
    } else {
        bytemuck::cast_slice(data.labels())
    };
    let split_data = context.scoped(&format!("uploading the {split} split"), || {
        let device = context.device();
        SplitData {
            name: split,
            rows: data.len(),
            features: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&format!("{split} features")),
                contents,
                usage: wgpu::BufferUsages::STORAGE,
            }),
            labels: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&format!("{split} labels")),
                contents: labels,
                usage: wgpu::BufferUsages::STORAGE,
            }),
            bind_group: None,
        }
    })?;
    counters.uploads += 2;
    Ok(split_data)
}

fn create_params_buffer(
    context: &GpuContext,
    kernels: &NetworkKernels,
    slots: usize,
) -> Result<wgpu::Buffer> {
    context.scoped("creating the network parameter buffer", || {
        context.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("network dispatch parameters"),
            size: slots as u64 * kernels.params_stride(),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_places_matrices_without_overlap() {
        let layout = NetLayout::new(&[(3, 5), (5, 2)], 4, 2);
        assert_eq!(layout.param_count, 3 * 5 + 5 + 5 * 2 + 2);
        let [first, second] = layout.layers.as_slice() else {
            panic!("two layers expected");
        };
        assert_eq!(first.params, 0);
        assert_eq!(second.params, 20);
        assert_eq!(first.grads, 32);
        assert_eq!(second.grads, 52);
        assert_eq!(first.input, 64);
        assert_eq!(first.output, 64 + 4 * 3);
        assert_eq!(second.input, first.output);
        assert_eq!(second.output, first.output + 4 * 5);
        assert_eq!(first.delta, second.output + 4 * 2);
        assert_eq!(second.delta, first.delta + 4 * 5);
        assert_eq!(layout.net_len, second.delta + 4 * 2);
        assert_eq!(first.state, 0);
        assert_eq!(second.state, 2 * 20);
        assert_eq!(layout.state_len, 2 * 32);
    }
}
