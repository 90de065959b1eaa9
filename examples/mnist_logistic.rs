//! The classic tutorial through the library API: logistic regression on
//! MNIST with minibatch SGD and early stopping.
//!
//! Run with `cargo run --release --example mnist_logistic [cpu|gpu|auto]`.
//! It trains on the MNIST copy in data/mnist with the tutorial's settings,
//! incomplete minibatches dropped as in the original, prints the tutorial's
//! progress lines, and saves the best model to best_model.safetensors.

use std::path::Path;
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::model::save_model;
use wgpu_learn::select::{open_backend, BackendChoice};
use wgpu_learn::{TrainConfig, TrainEvent, Trainer};

fn main() -> anyhow::Result<()> {
    let choice: BackendChoice = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(anyhow::Error::msg)?,
        None => BackendChoice::Auto,
    };

    // Learning rate 0.13, batch size 600, patience 5000, threshold 0.995.
    let config = TrainConfig::default().with_drop_last(true);
    let trainer = Trainer::new(config.clone())?;

    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let splits = load_idx_dir(&data_dir, None)?;
    let opened = open_backend(choice, None, &splits, config.batch_size)?;
    println!(
        "training on {} ({})",
        opened.backend.description(),
        opened.reason
    );
    let mut backend = opened.backend;

    let trained = trainer.fit(&splits, backend.as_mut(), |event| match event {
        TrainEvent::Validated {
            epoch,
            minibatch,
            batches,
            validation_error,
            ..
        } => println!(
            "epoch {epoch}, minibatch {minibatch}/{batches}, validation error {:.6} %",
            validation_error * 100.0
        ),
        TrainEvent::TestedBest {
            epoch,
            minibatch,
            batches,
            test_error,
        } => println!(
            "     epoch {epoch}, minibatch {minibatch}/{batches}, test error of best model {:.6} %",
            test_error * 100.0
        ),
        _ => {}
    })?;

    let report = &trained.report;
    println!(
        "Optimization complete with best validation score of {:.6} %, with test performance {:.6} %",
        report.best_validation_error * 100.0,
        report.test_error.unwrap_or(f64::NAN) * 100.0
    );
    println!(
        "The code ran for {} epochs, with {:.6} epochs/sec",
        report.epochs,
        report.epochs_per_second()
    );
    save_model(&trained.model, Path::new("best_model.safetensors"))?;
    Ok(())
}
