//! Kernel benchmarks at the MNIST shapes, CPU and GPU side by side.
//!
//! Run with `cargo bench --bench kernels`. Groups:
//! - `step_600x784x10`: one SGD step on a 600-row minibatch (forward,
//!   softmax-NLL gradient, weight gradient and update), dense and sparse;
//! - `evaluate_10000x784x10`: the error count over 10000 rows;
//! - `reference_ops`: the CPU reference operations one by one.
//!
//! CPU benchmarks run on a rayon worker thread, as the CPU backend does. The
//! dense `fused` step reads f32 features, and the `sparse` step reads
//! MNIST's nonzero bytes and skips the zero pixels. Both throughputs count
//! the dense step's operations, so the two compare directly.
//!
//! Throughput is given in elements per second where one element is one
//! floating-point operation (a multiply-add counts as 2), so "Gelem/s" reads
//! as GFLOP/s. GPU timings include waiting for the GPU: each iteration ends
//! with a read-back of the error count, which is also what the trainer waits
//! on. GPU groups need an adapter (lavapipe is enough) and are left out with
//! a printed reason when none is found.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use wgpu_learn::cpu::fused::{self, FusedParams};
use wgpu_learn::cpu::ops;
use wgpu_learn::cpu::sparse::{SparseRows, SparseTrainer};
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::gpu::{GpuBackend, GpuOptions, StepKernels};
use wgpu_learn::{Backend, Batch, Split, Splits};

const BATCH: usize = 600;

fn mnist() -> Splits {
    load_idx_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
        None,
    )
    .expect("data/mnist is shipped")
}

/// Times `iters` calls of `work` on a rayon worker thread, where the CPU
/// backend runs its steps too, so that the parallel loops inside `work` fork
/// within the pool instead of waking it from the benchmark's thread.
fn time_in_pool(iters: u64, mut work: impl FnMut() + Send) -> Duration {
    rayon::scope(|_| {
        let start = Instant::now();
        for _ in 0..iters {
            work();
        }
        start.elapsed()
    })
}

/// Floating-point operations of one training step on `rows` rows: the forward
/// and the weight gradient are `2 * rows * d * k` each.
fn step_flops(rows: usize, d: usize, k: usize) -> u64 {
    (4 * rows * d * k) as u64
}

fn step(c: &mut Criterion) {
    let splits = mnist();
    let (d, k) = (splits.n_features(), splits.n_classes());
    let mut group = c.benchmark_group("step_600x784x10");
    group.throughput(Throughput::Elements(step_flops(BATCH, d, k)));

    let x = &splits.train.features()[..BATCH * d];
    let labels = &splits.train.labels()[..BATCH];
    let mut params = FusedParams::zeros(d, k);
    group.bench_function(BenchmarkId::new("cpu", "fused"), |b| {
        b.iter_custom(|iters| {
            time_in_pool(iters, || {
                black_box(fused::sgd_step(&mut params, x, labels, 0.13));
            })
        })
    });
    let sparse = SparseRows::from_features(x, d).expect("MNIST features are bytes");
    let rows: Vec<u32> = (0..BATCH as u32).collect();
    let mut trainer = SparseTrainer::new(&FusedParams::zeros(d, k)).expect("10 classes fit");
    group.bench_function(BenchmarkId::new("cpu", "sparse"), |b| {
        b.iter_custom(|iters| {
            time_in_pool(iters, || {
                black_box(trainer.step(&sparse, &rows, labels, 0.13));
            })
        })
    });

    // Both sets of step kernels, so that one run on a GPU compares them.
    for kernels in [StepKernels::Tiles, StepKernels::Split] {
        let options = GpuOptions::default()
            .with_batch_size(BATCH)
            .with_step_kernels(kernels);
        match GpuBackend::new(&splits, options) {
            Ok(gpu) => gpu_steps(&mut group, gpu, d, k),
            Err(error) => {
                eprintln!("skipping GPU step benchmarks: {error}");
                break;
            }
        }
    }
    group.finish();
}

/// Times one step and 83 steps in one submission on `gpu`.
fn gpu_steps(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    mut gpu: GpuBackend,
    d: usize,
    k: usize,
) {
    // The adapter and the step kernels, short enough to print whole.
    let kernels = gpu.step_kernels().map_or("network", StepKernels::name);
    let name = format!("{}, step {kernels}", gpu.context().adapter().name);
    let batch = [Batch {
        start: 0,
        len: BATCH,
    }];
    group.throughput(Throughput::Elements(step_flops(BATCH, d, k)));
    group.bench_function(BenchmarkId::new("gpu", &name), |b| {
        b.iter(|| {
            gpu.train_steps(&batch, 0.13).unwrap();
            black_box(gpu.evaluate(Split::Validation, &[]).unwrap())
        })
    });

    // 83 steps in one submission, as in a training epoch.
    let epoch: Vec<Batch> = (0..83)
        .map(|i| Batch {
            start: i * BATCH,
            len: BATCH,
        })
        .collect();
    group.throughput(Throughput::Elements(83 * step_flops(BATCH, d, k)));
    group.bench_function(BenchmarkId::new("gpu_83_steps", &name), |b| {
        b.iter(|| {
            gpu.train_steps(&epoch, 0.13).unwrap();
            black_box(gpu.evaluate(Split::Validation, &[]).unwrap())
        })
    });
}

fn evaluate(c: &mut Criterion) {
    let splits = mnist();
    let (d, k) = (splits.n_features(), splits.n_classes());
    let rows = splits.validation.len();
    let mut group = c.benchmark_group("evaluate_10000x784x10");
    group.throughput(Throughput::Elements((2 * rows * d * k) as u64));

    let params = FusedParams::zeros(d, k);
    group.bench_function(BenchmarkId::new("cpu", "fused"), |b| {
        b.iter_custom(|iters| {
            time_in_pool(iters, || {
                black_box(fused::count_errors(
                    &params,
                    splits.validation.features(),
                    splits.validation.labels(),
                ));
            })
        })
    });
    let sparse = SparseRows::from_features(splits.validation.features(), d)
        .expect("MNIST features are bytes");
    let trainer = SparseTrainer::new(&params).expect("10 classes fit");
    group.bench_function(BenchmarkId::new("cpu", "sparse"), |b| {
        b.iter_custom(|iters| {
            time_in_pool(iters, || {
                black_box(trainer.count_errors(&sparse, 0..rows, splits.validation.labels()));
            })
        })
    });
    match GpuBackend::new(&splits, GpuOptions::default().with_batch_size(BATCH)) {
        Ok(mut gpu) => {
            let all = [Batch {
                start: 0,
                len: rows,
            }];
            group.bench_function(BenchmarkId::new("gpu", gpu.description()), |b| {
                b.iter(|| black_box(gpu.evaluate(Split::Validation, &all).unwrap()))
            });
        }
        Err(error) => eprintln!("skipping GPU evaluation benchmark: {error}"),
    }
    group.finish();
}

fn reference_ops(c: &mut Criterion) {
    let splits = mnist();
    let (d, k) = (splits.n_features(), splits.n_classes());
    let x = ops::rows(splits.train.features_view(), 0, BATCH);
    let labels = &splits.train.labels()[..BATCH];
    let weights = ndarray::Array2::<f32>::from_elem((d, k), 0.001);
    let bias = ndarray::Array1::<f32>::zeros(k);
    let mut group = c.benchmark_group("reference_ops");

    group.throughput(Throughput::Elements((2 * BATCH * d * k) as u64));
    group.bench_function("logits", |b| {
        b.iter(|| black_box(ops::logits(x, weights.view(), bias.view())))
    });
    let logits = ops::logits(x, weights.view(), bias.view());
    group.bench_function("weight_grad", |b| {
        b.iter(|| black_box(ops::weight_grad(x, logits.view())))
    });

    group.throughput(Throughput::Elements((BATCH * k) as u64));
    group.bench_function("softmax_nll_grad", |b| {
        b.iter(|| {
            let mut scratch = logits.clone();
            black_box(ops::softmax_nll_grad_in_place(
                scratch.view_mut(),
                labels,
                1.0 / BATCH as f32,
            ))
        })
    });

    // The update reads the weights and gradient and writes the weights: 12 bytes a parameter.
    group.throughput(Throughput::Bytes((12 * (d * k + k)) as u64));
    let (weight_gradient, bias_gradient) = ops::weight_grad(x, logits.view());
    let mut updated = weights.clone();
    let mut updated_bias = bias.clone();
    group.bench_function("sgd_update", |b| {
        b.iter(|| {
            ops::sgd_update(
                updated.view_mut(),
                updated_bias.view_mut(),
                weight_gradient.view(),
                bias_gradient.view(),
                0.13,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, step, evaluate, reference_ops);
criterion_main!(benches);
