//! Whole training runs on real MNIST rows: the GPU path against the CPU path.

mod common;

use common::gpu_or_skip;
use std::path::Path;
use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::gpu::{GpuBackend, GpuOptions};
use wgpu_learn::{Backend, Splits, TrainConfig, Trainer};

/// Loads the first 3000 training rows, 1000 validation rows and 1000 test rows of the shipped MNIST.
fn mnist_subset() -> Splits {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let full = load_idx_dir(&directory, None).expect("the repository ships data/mnist");
    Splits::new(
        full.train.slice_rows(0..3000),
        full.validation.slice_rows(0..1000),
        full.test.slice_rows(0..1000),
    )
    .unwrap()
}

#[test]
fn gpu_training_on_mnist_matches_cpu() {
    let splits = mnist_subset();
    // 3 epochs of 6 batches (5 of 512 rows and one of 440), validated each epoch.
    let config = TrainConfig::default()
        .with_batch_size(512)
        .with_max_epochs(3);
    let trainer = Trainer::new(config.clone()).unwrap();

    let Some(mut gpu) = gpu_or_skip(GpuBackend::new(
        &splits,
        GpuOptions::default().with_batch_size(config.batch_size),
    )) else {
        return;
    };
    let gpu_trained = trainer.fit(&splits, &mut gpu, |_| {}).unwrap();
    let mut cpu = CpuBackend::new(&splits);
    let cpu_trained = trainer.fit(&splits, &mut cpu, |_| {}).unwrap();

    // Weights after 18 SGD steps: sums over 784 features and 512 rows run
    // in another order on the GPU, so they agree to rounding, well inside
    // 1e-4 absolute plus 1e-3 relative.
    let (gpu_model, cpu_model) = (
        gpu.current_model().unwrap().into_logistic(),
        cpu.current_model().unwrap().into_logistic(),
    );
    let mut mismatches = Vec::new();
    for ((index, g), c) in gpu_model
        .weights
        .indexed_iter()
        .zip(cpu_model.weights.iter())
    {
        if (g - c).abs() > 1e-4 + 1e-3 * c.abs() {
            mismatches.push(format!("weight {index:?}: gpu {g} cpu {c}"));
        }
    }
    for ((index, g), c) in gpu_model.bias.iter().enumerate().zip(cpu_model.bias.iter()) {
        if (g - c).abs() > 1e-4 + 1e-3 * c.abs() {
            mismatches.push(format!("bias {index}: gpu {g} cpu {c}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert!(
        cpu_model.weights.iter().any(|&w| w != 0.0),
        "training must move the weights"
    );

    // Error counts on 1000 rows may differ by a row whose two best logits are within rounding.
    let gpu_errors = gpu_trained.report.best_validation_error * 1000.0;
    let cpu_errors = cpu_trained.report.best_validation_error * 1000.0;
    assert!(
        (gpu_errors - cpu_errors).abs() <= 2.0,
        "gpu {gpu_errors} cpu {cpu_errors}"
    );
    // A constant guess misclassifies about 90 % of the rows; 18 steps reach
    // 23 % on the CPU path (measured), so 35 % leaves room without hiding a
    // model that did not learn.
    assert!(
        cpu_errors < 350.0,
        "training must learn, got {cpu_errors} errors of 1000"
    );
    assert_eq!(gpu_trained.report.epochs, cpu_trained.report.epochs);
}
