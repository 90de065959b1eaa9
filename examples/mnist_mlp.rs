//! A fast MLP recipe on MNIST through the library API.
//!
//! Run with `cargo run --release --example mnist_mlp [cpu|gpu|auto] [EPOCHS]`.
//! It trains a 784-800-10 ReLU network with Nesterov momentum 0.9,
//! learning rate 0.1 decayed to 0 by a cosine schedule over 15 epochs
//! (or EPOCHS), batch size 100 and shuffling with seed 1, on the MNIST copy
//! in data/mnist. It prints the validation and test errors per epoch and
//! saves the best model to mlp_model.safetensors. BENCHMARKS.md records
//! its errors and times.

use std::path::Path;
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::model::save_model;
use wgpu_learn::select::{open_backend_for, BackendChoice};
use wgpu_learn::{Activation, Mlp, Optimizer, Schedule, Setup, TrainConfig, TrainEvent, Trainer};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let choice: BackendChoice = match args.next() {
        Some(text) => text.parse().map_err(anyhow::Error::msg)?,
        None => BackendChoice::Auto,
    };
    let epochs: usize = match args.next() {
        Some(text) => text.parse().map_err(|_| {
            anyhow::anyhow!("invalid EPOCHS `{text}`; expected a positive integer such as 15")
        })?,
        None => 15,
    };

    let config = TrainConfig::default()
        .with_learning_rate(0.1)
        .with_batch_size(100)
        .with_epochs(epochs)
        .with_schedule(Schedule::Cosine { epochs })
        .with_shuffle(1);
    let trainer = Trainer::new(config.clone())?;

    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let splits = load_idx_dir(&data_dir, None)?;
    let model = Mlp::new(
        splits.train.sample_shape().to_vec(),
        &[800],
        splits.n_classes(),
        Activation::Relu,
        1,
    );
    let setup = Setup::new(model.into()).with_optimizer(Optimizer::Momentum {
        momentum: 0.9,
        nesterov: true,
    });
    let opened = open_backend_for(choice, None, &splits, &setup, &config)?;
    println!(
        "training {} on {} ({})",
        setup.model.summary(),
        opened.backend.description(),
        opened.reason
    );
    let mut backend = opened.backend;

    let trained = trainer.fit(&splits, backend.as_mut(), |event| match event {
        TrainEvent::Validated {
            epoch,
            validation_error,
            ..
        } => println!(
            "epoch {epoch}: validation error {:.2} %",
            validation_error * 100.0
        ),
        TrainEvent::TestedBest { test_error, .. } => {
            println!("    new best model, test error {:.2} %", test_error * 100.0)
        }
        _ => {}
    })?;

    let report = &trained.report;
    println!(
        "best validation error {:.2} %, its test error {:.2} %, {} epochs in {:.1} s of training",
        report.best_validation_error * 100.0,
        report.test_error.unwrap_or(f64::NAN) * 100.0,
        report.epochs,
        report.seconds
    );
    save_model(&trained.model, Path::new("mlp_model.safetensors"))?;
    println!("best model saved to mlp_model.safetensors");
    Ok(())
}
