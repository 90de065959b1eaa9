//! Times one epoch of MNIST-sized training on the GPU with random data:
//! 50000 x 784 training rows, 10000 validation rows, 10 classes, batches of
//! 600 (84 steps with the last partial batch). Features are random bytes
//! divided by 256, like MNIST pixels, so any feature storage applies.
//!
//! Run with `cargo run --release --example gpu_epoch_time [auto|f32|u8]
//! [WORKGROUP_SIZE]`; the first argument sets the feature storage (default
//! auto, which picks u8 for this data). Each timed region ends with an
//! evaluation, which waits for the GPU.

use std::time::Instant;

use wgpu_learn::backend::{Backend, Batch};
use wgpu_learn::gpu::{FeatureStorage, GpuBackend, GpuOptions};
use wgpu_learn::{Dataset, Split, Splits};

const FEATURES: usize = 784;
const CLASSES: usize = 10;

/// Random features `byte / 256` and labels from a xorshift generator.
fn random_dataset(name: &str, rows: usize, seed: u64) -> Dataset {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let features = (0..rows * FEATURES)
        .map(|_| (next() >> 56) as f32 / 256.0)
        .collect();
    let labels = (0..rows)
        .map(|_| (next() % CLASSES as u64) as u32)
        .collect();
    Dataset::new(name, features, labels, vec![28, 28], CLASSES).expect("random data is valid")
}

fn main() -> wgpu_learn::Result<()> {
    let splits = Splits::new(
        random_dataset("train", 50_000, 1),
        random_dataset("validation", 10_000, 2),
        random_dataset("test", 10_000, 3),
    )?;

    let start = Instant::now();
    let storage = match std::env::args().nth(1).as_deref() {
        None | Some("auto") => FeatureStorage::Auto,
        Some("f32") => FeatureStorage::F32,
        Some("u8") => FeatureStorage::U8,
        Some(other) => panic!("invalid feature storage `{other}`; use auto, f32 or u8"),
    };
    let mut options = GpuOptions::default()
        .with_batch_size(600)
        .with_feature_storage(storage);
    if let Some(size) = std::env::args().nth(2) {
        options = options.with_workgroup_size(
            size.parse()
                .expect("WORKGROUP_SIZE must be a positive integer"),
        );
    }
    let mut backend = GpuBackend::new(&splits, options)?;
    println!("{}", backend.description());
    println!(
        "feature memory on the GPU: {} bytes",
        backend.feature_bytes()
    );
    println!(
        "setup (device, pipelines, upload of {} training chunks): {:.2} s",
        backend.chunk_rows(Split::Train).len(),
        start.elapsed().as_secs_f64()
    );

    let batches = Batch::split(splits.train.len(), 600, false);
    let validation = Batch::split(splits.validation.len(), 600, false);
    for epoch in 1..=2 {
        let start = Instant::now();
        backend.train_steps(&batches, 0.13)?;
        let evaluation = backend.evaluate(Split::Validation, &validation)?;
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "epoch {epoch}: {} steps and validation of {} rows in {elapsed:.2} s ({:.1} ms per step including \
             validation), validation error {:.3}",
            batches.len(),
            evaluation.rows,
            elapsed * 1000.0 / batches.len() as f64,
            evaluation.error_rate()
        );
    }

    let start = Instant::now();
    let evaluation = backend.evaluate(Split::Validation, &validation)?;
    println!(
        "validation alone ({} rows): {:.3} s",
        evaluation.rows,
        start.elapsed().as_secs_f64()
    );
    println!("counters: {:?}", backend.counters());
    Ok(())
}
