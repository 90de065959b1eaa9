//! GpuBackend against CpuBackend: training, evaluation, chunking,
//! counters, divergence and the best-model copy.

mod common;

use common::{assert_close, gpu_or_skip, Rng};
use wgpu_learn::backend::{Backend, Batch};
use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::gpu::{list_adapters, AdapterRequest, GpuBackend, GpuOptions, StepKernels};
use wgpu_learn::{Dataset, Error, LogisticRegression, Split, Splits};

const FEATURES: usize = 50;
const CLASSES: usize = 10;
const BATCH: usize = 64;

/// Rows labelled by the argmax of a random linear map plus noise, so that
/// training makes progress but no model is perfect.
fn dataset(rng: &mut Rng, name: &str, rows: usize, truth: &[f32]) -> Dataset {
    let features = rng.vec(rows * FEATURES, 0.0, 1.0);
    let labels = (0..rows)
        .map(|row| {
            let x = &features[row * FEATURES..(row + 1) * FEATURES];
            let score = |class: usize| -> f32 {
                x.iter()
                    .enumerate()
                    .map(|(i, v)| v * truth[i * CLASSES + class])
                    .sum::<f32>()
            };
            let noisy = (0..CLASSES).map(|class| score(class) + rng.uniform(0.0, 0.5));
            noisy
                .enumerate()
                .fold((0, f32::MIN), |best, (class, value)| {
                    if value > best.1 {
                        (class, value)
                    } else {
                        best
                    }
                })
                .0 as u32
        })
        .collect();
    Dataset::new(name, features, labels, vec![FEATURES], CLASSES).unwrap()
}

fn splits() -> Splits {
    let mut rng = Rng::new(11);
    let truth = rng.vec(FEATURES * CLASSES, -1.0, 1.0);
    Splits::new(
        dataset(&mut rng, "train", 2000, &truth),
        dataset(&mut rng, "validation", 500, &truth),
        dataset(&mut rng, "test", 333, &truth),
    )
    .unwrap()
}

fn gpu(splits: &Splits, options: GpuOptions) -> Option<GpuBackend> {
    gpu_or_skip(GpuBackend::new(splits, options.with_batch_size(BATCH)))
}

fn assert_models_close(
    what: &str,
    gpu: &LogisticRegression,
    cpu: &LogisticRegression,
    relative: f32,
    absolute: f32,
) {
    assert_eq!(gpu.sample_shape, cpu.sample_shape, "{what}: sample shape");
    assert_close(
        &format!("{what} weights"),
        gpu.weights.as_slice().unwrap(),
        cpu.weights.as_slice().unwrap(),
        relative,
        absolute,
    );
    assert_close(
        &format!("{what} bias"),
        gpu.bias.as_slice().unwrap(),
        cpu.bias.as_slice().unwrap(),
        relative,
        absolute,
    );
}

#[test]
fn training_matches_cpu_backend() {
    training_matches_cpu_backend_with(StepKernels::Auto);
}

#[test]
fn training_with_split_kernels_matches_cpu_backend() {
    training_matches_cpu_backend_with(StepKernels::Split);
}

#[test]
fn training_with_tile_kernels_matches_cpu_backend() {
    training_matches_cpu_backend_with(StepKernels::Tiles);
}

fn training_matches_cpu_backend_with(kernels: StepKernels) {
    let splits = splits();
    let options = GpuOptions::default().with_step_kernels(kernels);
    let Some(mut gpu) = gpu(&splits, options) else {
        return;
    };
    let chosen = gpu
        .step_kernels()
        .expect("plain SGD uses the classic kernels");
    match kernels {
        StepKernels::Auto => assert_ne!(chosen, StepKernels::Auto),
        requested => assert_eq!(chosen, requested),
    }
    let description = gpu.description();
    assert!(
        description.ends_with(&format!(", step {}", chosen.name())),
        "{description}"
    );
    let mut cpu = CpuBackend::new(&splits);
    let batches = Batch::split(splits.train.len(), BATCH, false);
    assert_eq!(
        batches.last().unwrap().len,
        2000 % BATCH,
        "the last batch is partial"
    );

    // Two epochs, validated twice per epoch as a trainer would.
    for _ in 0..2 {
        for half in batches.chunks(batches.len().div_ceil(2)) {
            gpu.train_steps(half, 0.13).unwrap();
            cpu.train_steps(half, 0.13).unwrap();
            let validation = Batch::split(splits.validation.len(), 100, false);
            let gpu_eval = gpu.evaluate(Split::Validation, &validation).unwrap();
            let cpu_eval = cpu.evaluate(Split::Validation, &validation).unwrap();
            assert_eq!(gpu_eval.rows, 500);
            // NOTE: a row whose two best logits are within rounding could
            // flip between devices; allow 2 of 500 rows.
            assert!(
                gpu_eval.errors.abs_diff(cpu_eval.errors) <= 2,
                "validation errors: gpu {} vs cpu {}",
                gpu_eval.errors,
                cpu_eval.errors
            );
            assert_eq!(gpu_eval.first_non_finite_step, None);
        }
    }
    // 64 steps of float sums in different orders drift apart by a few ulps
    // per step; weights stay below about 1 in magnitude.
    assert_models_close(
        "after 2 epochs",
        &gpu.current_model().unwrap().into_logistic(),
        &cpu.current_model().unwrap().into_logistic(),
        1e-3,
        1e-4,
    );
    let trained = cpu.current_model().unwrap().into_logistic();
    assert!(
        trained.error_rate(&splits.test).unwrap() < 0.8,
        "training must learn something"
    );
}

#[test]
fn chunked_split_gives_same_results() {
    let splits = splits();
    let Some(mut whole) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    // 150 rows of 200 bytes fit one chunk: training chunks round down to
    // 128 rows (two batches), evaluation chunks hold 150 rows.
    let row_bytes = (FEATURES * 4) as u64;
    let mut chunked = gpu(
        &splits,
        GpuOptions::default().with_max_chunk_bytes(150 * row_bytes + 10),
    )
    .unwrap();
    let train_chunks = chunked.chunk_rows(Split::Train);
    assert_eq!(train_chunks.len(), 2000usize.div_ceil(128));
    assert!(train_chunks.iter().all(|rows| rows.start % 128 == 0));
    let validation_chunks = chunked.chunk_rows(Split::Validation);
    assert_eq!(validation_chunks[..2], [0..150, 150..300]);
    assert_eq!(whole.chunk_rows(Split::Train), vec![0..2000]);

    let batches = Batch::split(splits.train.len(), BATCH, false);
    whole.train_steps(&batches, 0.13).unwrap();
    chunked.train_steps(&batches, 0.13).unwrap();
    // The same kernels sum in the same order, so the results are identical.
    assert_eq!(
        chunked.current_model().unwrap(),
        whole.current_model().unwrap()
    );

    // Batches of 100 rows cross the evaluation chunk boundaries at 150, 300, ...
    for split in [Split::Train, Split::Validation, Split::Test] {
        let rows = splits.get(split).len();
        let ranges = Batch::split(rows, 100, false);
        let whole_eval = whole.evaluate(split, &ranges).unwrap();
        let chunked_eval = chunked.evaluate(split, &ranges).unwrap();
        assert_eq!(chunked_eval, whole_eval, "{split}");
        assert_eq!(chunked_eval.rows, rows as u64);
    }
    // One range over a whole split spans every chunk.
    let all = [Batch {
        start: 0,
        len: 2000,
    }];
    assert_eq!(
        chunked.evaluate(Split::Train, &all).unwrap(),
        whole.evaluate(Split::Train, &all).unwrap()
    );
}

#[test]
fn batch_crossing_chunk_is_rejected() {
    let splits = splits();
    let row_bytes = (FEATURES * 4) as u64;
    let Some(mut gpu) = gpu(
        &splits,
        GpuOptions::default().with_max_chunk_bytes(150 * row_bytes),
    ) else {
        return;
    };
    let error = gpu
        .train_steps(
            &[Batch {
                start: 100,
                len: 64,
            }],
            0.1,
        )
        .unwrap_err();
    assert!(matches!(error, Error::Gpu { .. }), "{error}");
    assert!(
        error.to_string().contains("crosses a chunk boundary"),
        "{error}"
    );
    // Positive control: a batch inside one chunk.
    gpu.train_steps(&[Batch { start: 0, len: 64 }], 0.1)
        .unwrap();
}

#[test]
fn batch_over_binding_limit_is_rejected() {
    let splits = splits();
    let options = GpuOptions::default()
        .with_batch_size(BATCH)
        .with_max_chunk_bytes(1000);
    let error = match GpuBackend::new(&splits, options) {
        Ok(_) => panic!("a 64-row batch of 200-byte rows cannot fit 1000 bytes"),
        Err(error @ Error::NoAdapter { .. }) => {
            gpu_or_skip::<()>(Err(error));
            return;
        }
        Err(error) => error,
    };
    assert!(matches!(error, Error::Gpu { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("max_chunk_bytes 1000"), "{message}");
    assert!(message.contains("at most 5 rows fit"), "{message}");
}

#[test]
fn counters_show_one_submission_per_call() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    let batches = Batch::split(splits.train.len(), BATCH, false);
    let start = gpu.counters();
    gpu.train_steps(&batches, 0.1).unwrap();
    let after_train = gpu.counters();
    assert_eq!(
        after_train.submissions,
        start.submissions + 1,
        "one submission for {} steps",
        batches.len()
    );
    assert_eq!(
        after_train.read_backs, start.read_backs,
        "training reads nothing back"
    );
    assert_eq!(
        after_train.uploads,
        start.uploads + 1,
        "one write of all step parameters"
    );

    let ranges = Batch::split(splits.validation.len(), 100, false);
    gpu.evaluate(Split::Validation, &ranges).unwrap();
    let after_eval = gpu.counters();
    assert_eq!(after_eval.submissions, after_train.submissions + 1);
    assert_eq!(
        after_eval.read_backs,
        after_train.read_backs + 1,
        "one read-back per evaluation"
    );

    gpu.keep_best().unwrap();
    let after_keep = gpu.counters();
    assert_eq!(
        after_keep.read_backs, after_eval.read_backs,
        "keep_best copies on the GPU"
    );
    assert_eq!(
        after_keep.uploads, after_eval.uploads,
        "keep_best uploads nothing"
    );
}

#[test]
fn divergence_reports_first_non_finite_step() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    let mut cpu = CpuBackend::new(&splits);
    let batches = Batch::split(splits.train.len(), BATCH, false);
    let validation = [Batch { start: 0, len: 10 }];

    // Positive control: a normal learning rate stays finite.
    gpu.train_steps(&batches[..3], 0.13).unwrap();
    cpu.train_steps(&batches[..3], 0.13).unwrap();
    assert_eq!(
        gpu.evaluate(Split::Validation, &validation)
            .unwrap()
            .first_non_finite_step,
        None
    );

    gpu.train_steps(&batches[3..], 1e38).unwrap();
    cpu.train_steps(&batches[3..], 1e38).unwrap();
    let gpu_step = gpu
        .evaluate(Split::Validation, &validation)
        .unwrap()
        .first_non_finite_step;
    let cpu_step = cpu
        .evaluate(Split::Validation, &validation)
        .unwrap()
        .first_non_finite_step;
    assert!(
        gpu_step.is_some_and(|step| step >= 3),
        "gpu step {gpu_step:?}"
    );
    assert!(cpu_step.is_some(), "cpu step {cpu_step:?}");
    // Whether a sum of huge terms of mixed sign overflows depends on the
    // summation order, which differs between the devices, so the first
    // non-finite step may differ by one (measured on lavapipe: gpu 5, cpu 4).
    assert!(
        gpu_step.unwrap().abs_diff(cpu_step.unwrap()) <= 1,
        "gpu step {gpu_step:?}, cpu step {cpu_step:?}"
    );
}

#[test]
fn best_model_is_copy_at_keep_best() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    let batches = Batch::split(splits.train.len(), BATCH, false);
    assert_eq!(
        gpu.best_model().unwrap(),
        LogisticRegression::zeros(vec![FEATURES], CLASSES).into(),
        "before keep_best"
    );

    gpu.train_steps(&batches[..5], 0.1).unwrap();
    gpu.keep_best().unwrap();
    let kept = gpu.current_model().unwrap();
    gpu.train_steps(&batches[5..], 0.1).unwrap();

    assert_eq!(gpu.best_model().unwrap(), kept);
    assert_ne!(
        gpu.current_model().unwrap(),
        kept,
        "training after keep_best moves the weights"
    );
}

#[test]
fn evaluate_rejects_rows_outside_split() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    let error = gpu
        .evaluate(
            Split::Test,
            &[Batch {
                start: 300,
                len: 34,
            }],
        )
        .unwrap_err();
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    assert!(error.to_string().contains("333 rows"), "{error}");
    let error = gpu
        .train_steps(
            &[Batch {
                start: 0,
                len: BATCH + 1,
            }],
            0.1,
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("exceeds the batch size 64"),
        "{error}"
    );
}

#[test]
fn description_and_adapters_name_device() {
    let splits = splits();
    let Some(gpu) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    let description = gpu.description();
    assert!(description.starts_with("gpu: "), "{description}");
    assert!(
        description.contains(&gpu.context().adapter().name),
        "{description}"
    );

    let adapters = list_adapters();
    assert!(
        adapters
            .iter()
            .any(|adapter| *adapter == *gpu.context().adapter()),
        "{adapters:?}"
    );
    for adapter in &adapters {
        assert!(adapter.max_storage_buffer_binding_size > 0, "{adapter:?}");
        assert!(
            adapter.max_compute_workgroups_per_dimension > 0,
            "{adapter:?}"
        );
        assert!(
            adapter.max_compute_invocations_per_workgroup > 0,
            "{adapter:?}"
        );
    }
}

#[test]
fn name_filter_without_match_lists_adapters() {
    let request = AdapterRequest::any().with_name_contains("no adapter has this name");
    let error = wgpu_learn::gpu::find_adapter(&request).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::NoAdapter { .. }), "{message}");
    assert!(message.contains("`no adapter has this name`"), "{message}");
    assert!(
        message.contains("apt-get install mesa-vulkan-drivers"),
        "{message}"
    );
}

/// Forwards to a [`GpuBackend`] and records how its counters change in each call.
struct CountingBackend {
    gpu: GpuBackend,
    train_calls: Vec<(usize, wgpu_learn::gpu::GpuCounters)>,
    evaluate_calls: Vec<wgpu_learn::gpu::GpuCounters>,
}

fn difference(
    before: wgpu_learn::gpu::GpuCounters,
    after: wgpu_learn::gpu::GpuCounters,
) -> wgpu_learn::gpu::GpuCounters {
    wgpu_learn::gpu::GpuCounters {
        submissions: after.submissions - before.submissions,
        read_backs: after.read_backs - before.read_backs,
        uploads: after.uploads - before.uploads,
    }
}

impl Backend for CountingBackend {
    fn description(&self) -> String {
        self.gpu.description()
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> wgpu_learn::Result<()> {
        let before = self.gpu.counters();
        self.gpu.train_steps(batches, learning_rate)?;
        self.train_calls
            .push((batches.len(), difference(before, self.gpu.counters())));
        Ok(())
    }

    fn evaluate(
        &mut self,
        split: Split,
        batches: &[Batch],
    ) -> wgpu_learn::Result<wgpu_learn::Evaluation> {
        let before = self.gpu.counters();
        let evaluation = self.gpu.evaluate(split, batches)?;
        self.evaluate_calls
            .push(difference(before, self.gpu.counters()));
        Ok(evaluation)
    }

    fn keep_best(&mut self) -> wgpu_learn::Result<()> {
        let before = self.gpu.counters();
        self.gpu.keep_best()?;
        assert_eq!(
            difference(before, self.gpu.counters()).read_backs,
            0,
            "keep_best reads nothing back"
        );
        Ok(())
    }

    fn set_train_order(&mut self, order: Option<&[u32]>) -> wgpu_learn::Result<()> {
        self.gpu.set_train_order(order)
    }

    fn best_model(&mut self) -> wgpu_learn::Result<wgpu_learn::Model> {
        self.gpu.best_model()
    }

    fn current_model(&mut self) -> wgpu_learn::Result<wgpu_learn::Model> {
        self.gpu.current_model()
    }

    fn optimizer_state(&mut self) -> wgpu_learn::Result<wgpu_learn::OptimizerState> {
        self.gpu.optimizer_state()
    }
}

#[test]
fn training_epoch_is_one_submission() {
    let splits = splits();
    let Some(gpu) = gpu(&splits, GpuOptions::default()) else {
        return;
    };
    let mut counting = CountingBackend {
        gpu,
        train_calls: Vec::new(),
        evaluate_calls: Vec::new(),
    };
    let config = wgpu_learn::TrainConfig::default()
        .with_batch_size(BATCH)
        .with_max_epochs(4);
    let batches_per_epoch = splits.train.len().div_ceil(BATCH);
    let mut tested = 0;
    let trained = wgpu_learn::Trainer::new(config)
        .unwrap()
        .fit(&splits, &mut counting, |event| {
            if matches!(event, wgpu_learn::TrainEvent::TestedBest { .. }) {
                tested += 1;
            }
        })
        .unwrap();
    assert_eq!(trained.report.epochs, 4);

    // Each epoch: one call with every step, one submission, one upload of
    // the step parameters, nothing read back.
    assert_eq!(counting.train_calls.len(), 4);
    for (steps, counters) in &counting.train_calls {
        assert_eq!(*steps, batches_per_epoch);
        assert_eq!(counters.submissions, 1);
        assert_eq!(counters.read_backs, 0);
        assert_eq!(counters.uploads, 1);
    }
    // Validations (4), test evaluations of new best models, and the final
    // divergence check: one submission and one read-back each.
    assert_eq!(counting.evaluate_calls.len(), 4 + tested + 1);
    for counters in &counting.evaluate_calls {
        assert_eq!(counters.submissions, 1);
        assert_eq!(counters.read_backs, 1);
    }
    assert!(tested >= 1, "the first validation always improves");
}
