//! [`Backend`] on the GPU.

use std::ops::Range;
use std::time::Duration;

use ndarray::{Array1, Array2};
use wgpu::util::DeviceExt;

use super::adapter::AdapterRequest;
use super::chunks::{pieces, plan_chunks, ChunkLimit};
use super::context::GpuContext;
use super::kernels::{
    evaluation_from_status, Bindings, Kernel, Kernels, Params, StepKernels, STATUS_ERRORS,
    STATUS_LEN,
};
use super::network::NetworkEngine;
use super::storage::{self, FeatureStorage};
use crate::backend::{Backend, Batch, Evaluation, Setup};
use crate::data::{Dataset, Split, Splits};
use crate::error::{Error, Result};
use crate::model::{LogisticRegression, Model};
use crate::optim::OptimizerState;

/// Settings of [`GpuBackend::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct GpuOptions {
    /// Adapter request. Default: any adapter, hardware GPUs first.
    pub adapter: AdapterRequest,
    /// Largest training batch in rows. Default 600. Training chunks hold a
    /// multiple of it, and longer batches are rejected.
    pub batch_size: usize,
    /// Invocations per workgroup. Default `None`: 64, or less if the device
    /// allows fewer.
    pub workgroup_size: Option<u32>,
    /// Extra cap on the bytes of one feature chunk, below the device limits.
    /// Default `None`. Tests set it to exercise chunking on small data.
    pub max_chunk_bytes: Option<u64>,
    /// Maximum wait for a read-back, which also waits for all training steps
    /// queued since the last one. Default 300 s, so that an epoch of 500000
    /// MNIST-sized rows on a software adapter such as lavapipe still fits.
    pub read_back_timeout: Duration,
    /// Storage of the features on the GPU. Default [`FeatureStorage::Auto`]:
    /// bytes when every feature is `byte / 256`, f32 otherwise.
    pub feature_storage: FeatureStorage,
    /// The kernels of the classic training step. Default
    /// [`StepKernels::Auto`]: sums split across workgroups on hardware
    /// GPUs, one invocation per output tile on software adapters.
    pub step_kernels: StepKernels,
    /// Whether the trainer will set a training order with
    /// [`Backend::set_train_order`]. Default `false`. The classic kernels
    /// read rows in order, so a shuffled run uses the network kernels.
    pub shuffled: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter: AdapterRequest::default(),
            batch_size: 600,
            workgroup_size: None,
            max_chunk_bytes: None,
            read_back_timeout: Duration::from_secs(300),
            feature_storage: FeatureStorage::Auto,
            step_kernels: StepKernels::Auto,
            shuffled: false,
        }
    }
}

impl GpuOptions {
    /// Declares that the trainer will shuffle the training rows (default `false`).
    pub fn with_shuffled(mut self, shuffled: bool) -> Self {
        self.shuffled = shuffled;
        self
    }

    /// Sets the adapter request (default: any, hardware first).
    pub fn with_adapter(mut self, adapter: AdapterRequest) -> Self {
        self.adapter = adapter;
        self
    }

    /// Sets the largest training batch (default 600 rows).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the kernels of the classic training step (default
    /// [`StepKernels::Auto`]).
    pub fn with_step_kernels(mut self, step_kernels: StepKernels) -> Self {
        self.step_kernels = step_kernels;
        self
    }

    /// Sets the workgroup size (default 64, capped by the device).
    pub fn with_workgroup_size(mut self, workgroup_size: u32) -> Self {
        self.workgroup_size = Some(workgroup_size);
        self
    }

    /// Caps the bytes of one feature chunk (default: only the device limits).
    pub fn with_max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.max_chunk_bytes = Some(bytes);
        self
    }

    /// Sets the maximum wait for a read-back (default 300 s).
    pub fn with_read_back_timeout(mut self, timeout: Duration) -> Self {
        self.read_back_timeout = timeout;
        self
    }

    /// Sets the feature storage (default [`FeatureStorage::Auto`]).
    pub fn with_feature_storage(mut self, storage: FeatureStorage) -> Self {
        self.feature_storage = storage;
        self
    }
}

/// Counts of GPU traffic since [`GpuBackend::new`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Queue submissions.
    pub submissions: u64,
    /// Buffers mapped and read back to the host.
    pub read_backs: u64,
    /// Host-to-GPU uploads: buffers created with data and `write_buffer` calls.
    pub uploads: u64,
}

/// Trains on a GPU through wgpu.
///
/// All three splits are uploaded once at creation and stay on the GPU.
/// Each [`Backend::train_steps`] call is one queue submission and one
/// upload of the steps' parameters, with no read-back, and each
/// [`Backend::evaluate`] call is one submission and one read-back of the
/// error count and the non-finite status. Errors of queued steps can
/// therefore surface in the next `evaluate`.
///
/// Two engines run behind it. Logistic regression with plain SGD, no
/// penalty and rows in file order runs on the classic fused kernels. Every
/// other [`Setup`] runs on the network kernels (`src/gpu/network`): tiled
/// matrix multiplies through any number of dense layers, any optimiser and
/// penalty, and a training order applied on the device.
pub struct GpuBackend {
    engine: Engine,
}

enum Engine {
    Classic(Box<ClassicEngine>),
    Network(Box<NetworkEngine>),
}

impl GpuBackend {
    /// Creates a device for `options.adapter`, builds the kernels and uploads
    /// the three splits and the parameters and optimiser state of `setup`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero batch size or invalid optimiser
    /// settings, or for [`FeatureStorage::U8`] with a feature that is not
    /// `byte / 256`, whose split, row and column the message names.
    /// [`Error::Shape`] if the model or the optimiser state does not fit the
    /// data. [`Error::NoAdapter`] if no adapter matches, [`Error::Gpu`] if a
    /// batch, the weights, a split of the network engine or a single row
    /// exceed a device limit (named in the message) or the device reports an
    /// error.
    pub fn with_setup(splits: &Splits, options: GpuOptions, setup: &Setup) -> Result<Self> {
        if options.batch_size == 0 || options.batch_size > u32::MAX as usize {
            return Err(Error::InvalidConfig {
                name: "batch-size",
                value: options.batch_size.to_string(),
                expected: format!("an integer in 1..={}", u32::MAX),
            });
        }
        setup.validate()?;
        setup.model.check_dataset(&splits.train)?;
        let engine = match &setup.model {
            Model::Logistic(model) if setup.is_plain_logistic() && !options.shuffled => {
                let steps_done = setup.state.as_ref().map_or(0, |state| state.steps);
                Engine::Classic(Box::new(ClassicEngine::new(
                    splits, options, model, steps_done,
                )?))
            }
            _ => Engine::Network(Box::new(NetworkEngine::new(splits, options, setup)?)),
        };
        Ok(GpuBackend { engine })
    }

    /// Creates a device for `options.adapter`, builds the kernels and uploads
    /// the three splits, with a zero logistic-regression model trained by
    /// plain SGD on the classic kernels.
    ///
    /// # Errors
    /// As [`GpuBackend::with_setup`].
    pub fn new(splits: &Splits, options: GpuOptions) -> Result<Self> {
        Self::with_setup(splits, options, &Setup::classic(splits))
    }

    /// GPU traffic counts since creation.
    pub fn counters(&self) -> GpuCounters {
        match &self.engine {
            Engine::Classic(engine) => engine.counters(),
            Engine::Network(engine) => engine.counters(),
        }
    }

    /// Returns the classic step's kernels, [`StepKernels::Tiles`] or
    /// [`StepKernels::Split`], or `None` when the backend trains with the
    /// network kernels.
    pub fn step_kernels(&self) -> Option<StepKernels> {
        match &self.engine {
            Engine::Classic(engine) => Some(engine.kernels.step_kernels()),
            Engine::Network(_) => None,
        }
    }

    /// Storage of the features on the GPU: [`FeatureStorage::F32`] or
    /// [`FeatureStorage::U8`], never [`FeatureStorage::Auto`].
    pub fn feature_storage(&self) -> FeatureStorage {
        match &self.engine {
            Engine::Classic(engine) => engine.feature_storage(),
            Engine::Network(engine) => engine.feature_storage(),
        }
    }

    /// Bytes of GPU memory that the features of all three splits use.
    pub fn feature_bytes(&self) -> u64 {
        match &self.engine {
            Engine::Classic(engine) => engine.feature_bytes(),
            Engine::Network(engine) => engine.feature_bytes(),
        }
    }

    /// Returns the device this backend runs on.
    pub fn context(&self) -> &GpuContext {
        match &self.engine {
            Engine::Classic(engine) => engine.context(),
            Engine::Network(engine) => engine.context(),
        }
    }

    /// Rows held by each chunk of `split`, in order. The network engine
    /// keeps each split in one chunk.
    pub fn chunk_rows(&self, split: Split) -> Vec<Range<usize>> {
        match &self.engine {
            Engine::Classic(engine) => engine.chunk_rows(split),
            Engine::Network(engine) => engine.chunk_rows(split),
        }
    }

    /// Returns whether this backend trains on the network kernels rather than the
    /// classic fused ones.
    pub fn uses_network_kernels(&self) -> bool {
        matches!(self.engine, Engine::Network(_))
    }

    fn backend(&mut self) -> &mut dyn Backend {
        match &mut self.engine {
            Engine::Classic(engine) => engine.as_mut(),
            Engine::Network(engine) => engine.as_mut(),
        }
    }
}

impl Backend for GpuBackend {
    fn description(&self) -> String {
        match &self.engine {
            Engine::Classic(engine) => engine.description(),
            Engine::Network(engine) => engine.description(),
        }
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
        self.backend().train_steps(batches, learning_rate)
    }

    fn set_train_order(&mut self, order: Option<&[u32]>) -> Result<()> {
        self.backend().set_train_order(order)
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        self.backend().evaluate(split, batches)
    }

    fn keep_best(&mut self) -> Result<()> {
        self.backend().keep_best()
    }

    fn best_model(&mut self) -> Result<Model> {
        self.backend().best_model()
    }

    fn current_model(&mut self) -> Result<Model> {
        self.backend().current_model()
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        self.backend().optimizer_state()
    }
}

/// One chunk of a split: whole rows of features with their labels.
struct Chunk {
    features: wgpu::Buffer,
    labels: wgpu::Buffer,
    bind_group: Option<wgpu::BindGroup>,
}

/// A split's chunks and the rows each holds.
struct SplitBuffers {
    name: Split,
    rows: usize,
    ranges: Vec<Range<usize>>,
    chunks: Vec<Chunk>,
}

/// Model parameters, scratch space and the status counters on the GPU.
struct ModelBuffers {
    weights: wgpu::Buffer,
    bias: wgpu::Buffer,
    best_weights: wgpu::Buffer,
    best_bias: wgpu::Buffer,
    scratch: wgpu::Buffer,
    losses: wgpu::Buffer,
    status: wgpu::Buffer,
    status_read_back: wgpu::Buffer,
    model_read_back: wgpu::Buffer,
}

/// The classic engine: logistic regression with plain SGD through the
/// fused kernels of `shaders/logits.wgsl`, `softmax_nll.wgsl` and
/// `sgd_update.wgsl`, reading rows in file order.
///
/// Splits are uploaded in chunks of whole rows, and batches are addressed
/// by row offsets in a uniform buffer.
struct ClassicEngine {
    context: GpuContext,
    kernels: Kernels,
    options: GpuOptions,
    feature_storage: FeatureStorage,
    sample_shape: Vec<usize>,
    features: usize,
    classes: usize,
    train: SplitBuffers,
    validation: SplitBuffers,
    test: SplitBuffers,
    model: ModelBuffers,
    params: wgpu::Buffer,
    params_slots: usize,
    steps_done: u64,
    has_best: bool,
    counters: GpuCounters,
}

/// Parameter slots of the first uniform buffer; it grows when a call needs more.
const INITIAL_PARAMS_SLOTS: usize = 1024;

impl ClassicEngine {
    /// Creates a device for `options.adapter`, builds the classic kernels
    /// and uploads the three splits and `initial`, which has taken
    /// `steps_done` steps.
    ///
    /// # Errors
    /// As [`GpuBackend::with_setup`].
    fn new(
        splits: &Splits,
        options: GpuOptions,
        initial: &LogisticRegression,
        steps_done: u64,
    ) -> Result<Self> {
        if options.batch_size == 0 || options.batch_size > u32::MAX as usize {
            return Err(Error::InvalidConfig {
                name: "batch-size",
                value: options.batch_size.to_string(),
                expected: format!("an integer in 1..={}", u32::MAX),
            });
        }
        let split_bytes = storage::resolve(options.feature_storage, splits)?;
        let feature_storage = match split_bytes {
            Some(_) => FeatureStorage::U8,
            None => FeatureStorage::F32,
        };
        let context = GpuContext::new(&options.adapter)?;
        let kernels = Kernels::new(
            &context,
            options.workgroup_size,
            feature_storage,
            options.step_kernels,
        )?;
        let features = splits.n_features();
        let classes = splits.n_classes();
        let mut counters = GpuCounters::default();

        let model = create_model_buffers(
            &context,
            features,
            classes,
            options.batch_size,
            &mut counters,
        )?;
        let limit = ChunkLimit::new(context.limits(), options.max_chunk_bytes);
        let mut upload = |split: Split, rows_multiple: usize, what: &str| {
            let bytes = split_bytes.as_ref().map(|all| all.get(split));
            upload_split(
                &context,
                split,
                splits.get(split),
                bytes,
                rows_multiple,
                &limit,
                what,
                &mut counters,
            )
        };
        let train = upload(Split::Train, options.batch_size, "a training batch")?;
        let validation = upload(Split::Validation, 1, "one row")?;
        let test = upload(Split::Test, 1, "one row")?;

        let params = create_params_buffer(&context, &kernels, INITIAL_PARAMS_SLOTS)?;
        let mut backend = ClassicEngine {
            context,
            kernels,
            options,
            feature_storage,
            sample_shape: splits.train.sample_shape().to_vec(),
            features,
            classes,
            train,
            validation,
            test,
            model,
            params,
            params_slots: INITIAL_PARAMS_SLOTS,
            steps_done,
            has_best: false,
            counters,
        };
        backend.create_bind_groups()?;
        backend.upload_initial_model(initial)?;
        Ok(backend)
    }

    /// Writes `initial` into the weights and bias buffers unless it is all
    /// zeros, which new buffers already hold.
    fn upload_initial_model(&mut self, initial: &LogisticRegression) -> Result<()> {
        if initial
            .weights
            .iter()
            .chain(initial.bias.iter())
            .all(|&value| value == 0.0 && value.is_sign_positive())
        {
            return Ok(());
        }
        let weights: Vec<f32> = initial.weights.iter().copied().collect();
        let bias: Vec<f32> = initial.bias.iter().copied().collect();
        self.context.scoped("uploading the initial model", || {
            let queue = self.context.queue();
            queue.write_buffer(&self.model.weights, 0, bytemuck::cast_slice(&weights));
            queue.write_buffer(&self.model.bias, 0, bytemuck::cast_slice(&bias));
        })?;
        self.counters.uploads += 2;
        Ok(())
    }

    /// GPU traffic counts since creation.
    pub fn counters(&self) -> GpuCounters {
        self.counters
    }

    /// Storage of the features on the GPU: [`FeatureStorage::F32`] or
    /// [`FeatureStorage::U8`], never [`FeatureStorage::Auto`].
    pub fn feature_storage(&self) -> FeatureStorage {
        self.feature_storage
    }

    /// Bytes of GPU memory that the feature chunks of all three splits use.
    pub fn feature_bytes(&self) -> u64 {
        [&self.train, &self.validation, &self.test]
            .iter()
            .flat_map(|split| &split.chunks)
            .map(|chunk| chunk.features.size())
            .sum()
    }

    /// Returns the device this backend runs on.
    pub fn context(&self) -> &GpuContext {
        &self.context
    }

    /// Rows held by each chunk of `split`, in order.
    pub fn chunk_rows(&self, split: Split) -> Vec<Range<usize>> {
        self.split(split).ranges.clone()
    }

    fn split(&self, split: Split) -> &SplitBuffers {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    /// (Re)creates the bind group of every chunk, after creation or after
    /// the parameter buffer grew.
    fn create_bind_groups(&mut self) -> Result<()> {
        let context = &self.context;
        let kernels = &self.kernels;
        let model = &self.model;
        let params = &self.params;
        context.scoped("creating bind groups", || {
            for split in [&mut self.train, &mut self.validation, &mut self.test] {
                for (index, chunk) in split.chunks.iter_mut().enumerate() {
                    let label = format!("{} chunk {index} bindings", split.name);
                    chunk.bind_group = Some(kernels.bind_group(
                        context,
                        &label,
                        &Bindings {
                            params,
                            features: &chunk.features,
                            labels: &chunk.labels,
                            weights: &model.weights,
                            bias: &model.bias,
                            scratch: &model.scratch,
                            losses: &model.losses,
                            status: &model.status,
                        },
                    ));
                }
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

    fn params_offset(&self, slot: usize) -> u32 {
        (slot as u64 * self.kernels.params_stride()) as u32
    }

    /// Checks that `batch` lies within `split` and is not empty.
    fn check_batch(&self, split: &SplitBuffers, batch: &Batch) -> Result<()> {
        if batch.len == 0
            || batch
                .start
                .checked_add(batch.len)
                .is_none_or(|end| end > split.rows)
        {
            return Err(Error::Shape {
                reason: format!(
                    "batch of rows {}..{} is empty or outside the {} split's {} rows",
                    batch.start,
                    batch.start.saturating_add(batch.len),
                    split.name,
                    split.rows
                ),
            });
        }
        Ok(())
    }

    /// Builds the chunk index and [`Params`] of each training step.
    fn plan_train_steps(
        &self,
        batches: &[Batch],
        learning_rate: f32,
    ) -> Result<Vec<(usize, Params)>> {
        let mut steps = Vec::with_capacity(batches.len());
        for (index, batch) in batches.iter().enumerate() {
            self.check_batch(&self.train, batch)?;
            if batch.len > self.options.batch_size {
                return Err(Error::Shape {
                    reason: format!(
                        "training batch of {} rows exceeds the batch size {} given to GpuBackend::new",
                        batch.len, self.options.batch_size
                    ),
                });
            }
            let parts = pieces(&self.train.ranges, batch.start..batch.start + batch.len);
            let [(chunk, rows)] = parts.as_slice() else {
                return Err(Error::Gpu {
                    reason: format!(
                        "training batch of rows {}..{} crosses a chunk boundary (chunks: {:?}); \
                         start batches at multiples of the batch size {}",
                        batch.start,
                        batch.start + batch.len,
                        self.train.ranges,
                        self.options.batch_size
                    ),
                });
            };
            // Step indices past u32::MAX - 1 share the last value; u32::MAX means "none".
            let step = (self.steps_done + index as u64).min(u32::MAX as u64 - 1) as u32;
            let params = Params {
                row_offset: rows.start as u32,
                rows: rows.len() as u32,
                features: self.features as u32,
                classes: self.classes as u32,
                scale: 1.0 / rows.len() as f32,
                learning_rate,
                step,
                padding: 0,
            };
            steps.push((*chunk, params));
        }
        Ok(steps)
    }

    /// Builds the chunk index and [`Params`] of each evaluation dispatch,
    /// splitting batches at chunk boundaries.
    fn plan_evaluation(
        &self,
        split: &SplitBuffers,
        batches: &[Batch],
    ) -> Result<Vec<(usize, Params)>> {
        let mut dispatches = Vec::new();
        for batch in batches {
            self.check_batch(split, batch)?;
            for (chunk, rows) in pieces(&split.ranges, batch.start..batch.start + batch.len) {
                let params = Params {
                    row_offset: rows.start as u32,
                    rows: rows.len() as u32,
                    features: self.features as u32,
                    classes: self.classes as u32,
                    ..Params::default()
                };
                dispatches.push((chunk, params));
            }
        }
        Ok(dispatches)
    }

    /// Writes `params` into slots 0.. of the uniform buffer.
    fn write_params(&mut self, params: &[Params]) -> Result<()> {
        self.reserve_params(params.len())?;
        if !params.is_empty() {
            let bytes = self.kernels.pack_params(params);
            self.context.queue().write_buffer(&self.params, 0, &bytes);
            self.counters.uploads += 1;
        }
        Ok(())
    }

    /// Reads `weights` and `bias` buffers back into a model.
    fn read_model(&mut self, best: bool) -> Result<LogisticRegression> {
        let operation = if best {
            "reading the best model"
        } else {
            "reading the model"
        };
        let (weights, bias) = if best {
            (&self.model.best_weights, &self.model.best_bias)
        } else {
            (&self.model.weights, &self.model.bias)
        };
        let read_back = &self.model.model_read_back;
        let submission = self.context.scoped(operation, || {
            let mut encoder =
                self.context
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("model read-back commands"),
                    });
            encoder.copy_buffer_to_buffer(weights, 0, read_back, 0, weights.size());
            encoder.copy_buffer_to_buffer(bias, 0, read_back, weights.size(), bias.size());
            self.context.queue().submit([encoder.finish()])
        })?;
        self.counters.submissions += 1;
        let bytes = self.context.read_back(
            operation,
            read_back,
            submission,
            self.options.read_back_timeout,
        )?;
        self.counters.read_backs += 1;

        let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let weight_count = self.features * self.classes;
        let weights = Array2::from_shape_vec(
            (self.features, self.classes),
            values[..weight_count].to_vec(),
        )
        .expect("the weight buffer contains features x classes values");
        let bias = Array1::from(values[weight_count..weight_count + self.classes].to_vec());
        Ok(LogisticRegression {
            weights,
            bias,
            sample_shape: self.sample_shape.clone(),
        })
    }
}

impl Backend for ClassicEngine {
    fn description(&self) -> String {
        format!(
            "{}, features {}, step {}",
            self.context.description(),
            self.feature_storage.name(),
            self.kernels.step_kernels().name()
        )
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let steps = self.plan_train_steps(batches, learning_rate)?;
        let params: Vec<Params> = steps.iter().map(|(_, params)| *params).collect();
        self.reserve_params(params.len())?;

        let this = &*self;
        this.context.scoped(
            "encoding and submitting training steps",
            || -> Result<()> {
                this.context.queue().write_buffer(
                    &this.params,
                    0,
                    &this.kernels.pack_params(&params),
                );
                let mut encoder =
                    this.context
                        .device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("training commands"),
                        });
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("training pass"),
                        timestamp_writes: None,
                    });
                    for (slot, (chunk, step_params)) in steps.iter().enumerate() {
                        let bind_group = this.train.chunks[*chunk]
                            .bind_group
                            .as_ref()
                            .expect("bind groups are created in new");
                        this.kernels.encode_train_step(
                            &mut pass,
                            bind_group,
                            this.params_offset(slot),
                            step_params,
                        )?;
                    }
                }
                this.context.queue().submit([encoder.finish()]);
                Ok(())
            },
        )??;
        self.counters.uploads += 1;
        self.counters.submissions += 1;
        self.steps_done += batches.len() as u64;
        Ok(())
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        let dispatches = self.plan_evaluation(self.split(split), batches)?;
        let params: Vec<Params> = dispatches.iter().map(|(_, params)| *params).collect();
        self.write_params(&params)?;

        let this = &*self;
        let operation = format!("evaluating the {split} split");
        let submission =
            this.context
                .scoped(&operation, || -> Result<wgpu::SubmissionIndex> {
                    let status = &this.model.status;
                    let mut encoder = this.context.device().create_command_encoder(
                        &wgpu::CommandEncoderDescriptor {
                            label: Some("evaluation commands"),
                        },
                    );
                    let errors_offset = (STATUS_ERRORS * 4) as u64;
                    encoder.clear_buffer(status, errors_offset, Some(4));
                    {
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some("evaluation pass"),
                            timestamp_writes: None,
                        });
                        for (slot, (chunk, dispatch_params)) in dispatches.iter().enumerate() {
                            let bind_group = this.split(split).chunks[*chunk]
                                .bind_group
                                .as_ref()
                                .expect("bind groups are created in new");
                            this.kernels.encode(
                                &mut pass,
                                Kernel::Evaluate,
                                bind_group,
                                this.params_offset(slot),
                                dispatch_params,
                            )?;
                        }
                    }
                    encoder.copy_buffer_to_buffer(
                        status,
                        0,
                        &this.model.status_read_back,
                        0,
                        status.size(),
                    );
                    Ok(this.context.queue().submit([encoder.finish()]))
                })??;
        self.counters.submissions += 1;

        let bytes = self.context.read_back(
            &operation,
            &self.model.status_read_back,
            submission,
            self.options.read_back_timeout,
        )?;
        self.counters.read_backs += 1;
        Ok(evaluation_from_status(&bytes, batches))
    }

    fn keep_best(&mut self) -> Result<()> {
        let model = &self.model;
        self.context.scoped("keeping the best model", || {
            let mut encoder =
                self.context
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("keep-best commands"),
                    });
            encoder.copy_buffer_to_buffer(
                &model.weights,
                0,
                &model.best_weights,
                0,
                model.weights.size(),
            );
            encoder.copy_buffer_to_buffer(&model.bias, 0, &model.best_bias, 0, model.bias.size());
            self.context.queue().submit([encoder.finish()]);
        })?;
        self.counters.submissions += 1;
        self.has_best = true;
        Ok(())
    }

    fn set_train_order(&mut self, order: Option<&[u32]>) -> Result<()> {
        match order {
            None => Ok(()),
            Some(_) => Err(Error::Gpu {
                reason: "the classic logistic-regression kernels read rows in order; shuffling needs the network kernels".to_string(),
            }),
        }
    }

    fn best_model(&mut self) -> Result<Model> {
        Ok(self.read_model(self.has_best)?.into())
    }

    fn current_model(&mut self) -> Result<Model> {
        Ok(self.read_model(false)?.into())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        // Plain SGD keeps no state beyond the step count.
        Ok(OptimizerState {
            steps: self.steps_done,
            tensors: vec![Vec::new(), Vec::new()],
        })
    }
}

/// Creates the zero model, the scratch buffers and the read-back buffers.
fn create_model_buffers(
    context: &GpuContext,
    features: usize,
    classes: usize,
    batch_size: usize,
    counters: &mut GpuCounters,
) -> Result<ModelBuffers> {
    let binding_limit = context
        .limits()
        .max_storage_buffer_binding_size
        .min(context.limits().max_buffer_size);
    let weight_bytes = (features * classes * 4) as u64;
    let scratch_bytes = (batch_size * classes * 4) as u64;
    for (what, bytes) in [
        ("the weights", weight_bytes),
        ("the batch logits", scratch_bytes),
    ] {
        if bytes > binding_limit {
            return Err(Error::Gpu {
                reason: format!(
                    "{what} need {bytes} bytes, more than one storage binding can hold ({binding_limit} \
                     bytes, the smaller of max_storage_buffer_binding_size and max_buffer_size); use \
                     fewer features, classes or rows per batch"
                ),
            });
        }
    }

    let status_init: [u32; STATUS_LEN] = [u32::MAX, 0];
    let buffers = context.scoped("creating the model buffers", || {
        let device = context.device();
        let storage = |label: &str, size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let read_back = |label: &str, size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        // wgpu zero-fills new buffers, so the model starts at zero.
        let bias_bytes = (classes * 4) as u64;
        ModelBuffers {
            weights: storage("weights", weight_bytes),
            bias: storage("bias", bias_bytes),
            best_weights: storage("best weights", weight_bytes),
            best_bias: storage("best bias", bias_bytes),
            scratch: storage("batch logits and gradient", scratch_bytes),
            losses: storage("batch losses", (batch_size * 4) as u64),
            status: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("status"),
                contents: bytemuck::cast_slice(&status_init),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            }),
            status_read_back: read_back("status read-back", (STATUS_LEN * 4) as u64),
            model_read_back: read_back("model read-back", weight_bytes + bias_bytes),
        }
    })?;
    counters.uploads += 1;
    Ok(buffers)
}

/// Uploads one split as chunks of whole rows. With `bytes`, the split's
/// features as bytes, the features use u8 storage: each chunk is padded to
/// whole `u32` words, and its rows start at element `row * d`, which need
/// not be word-aligned. Without `bytes` they use f32 storage.
#[allow(clippy::too_many_arguments)]
fn upload_split(
    context: &GpuContext,
    split: Split,
    data: &Dataset,
    bytes: Option<&[u8]>,
    rows_multiple: usize,
    limit: &ChunkLimit,
    what: &str,
    counters: &mut GpuCounters,
) -> Result<SplitBuffers> {
    let features = data.n_features();
    let feature_storage = match bytes {
        Some(_) => FeatureStorage::U8,
        None => FeatureStorage::F32,
    };
    let ranges = plan_chunks(
        data.len(),
        feature_storage.row_bytes(features),
        rows_multiple,
        limit,
        what,
    )?;
    let chunks = context.scoped(&format!("uploading the {split} split"), || {
        let device = context.device();
        ranges
            .iter()
            .enumerate()
            .map(|(index, rows)| {
                let elements = rows.start * features..rows.end * features;
                let padded;
                let contents: &[u8] = match bytes {
                    Some(bytes) => {
                        padded = storage::pad_to_words(&bytes[elements]);
                        &padded
                    }
                    None => bytemuck::cast_slice(&data.features()[elements]),
                };
                let chunk = Chunk {
                    features: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(&format!("{split} features chunk {index}")),
                        contents,
                        usage: wgpu::BufferUsages::STORAGE,
                    }),
                    labels: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(&format!("{split} labels chunk {index}")),
                        contents: bytemuck::cast_slice(&data.labels()[rows.clone()]),
                        usage: wgpu::BufferUsages::STORAGE,
                    }),
                    bind_group: None,
                };
                chunk
            })
            .collect::<Vec<_>>()
    })?;
    counters.uploads += 2 * chunks.len() as u64;
    Ok(SplitBuffers {
        name: split,
        rows: data.len(),
        ranges,
        chunks,
    })
}

fn create_params_buffer(
    context: &GpuContext,
    kernels: &Kernels,
    slots: usize,
) -> Result<wgpu::Buffer> {
    context.scoped("creating the parameter buffer", || {
        context.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("step parameters"),
            size: slots as u64 * kernels.params_stride(),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}
