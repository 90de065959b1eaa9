//! The trainer embedded in another program, on a dataset built in memory.
//!
//! Run with `cargo run --example embed`. Three classes of 2-D points around
//! different centres are learned on the CPU path; the program collects the
//! validation curve through the event callback instead of parsing output,
//! then classifies new points.

use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::{Dataset, Splits, TrainConfig, TrainEvent, Trainer};

/// Points around three centres, labelled by centre, with a fixed pseudo-random jitter.
fn blobs(rows: usize, seed: u32) -> Dataset {
    let centres = [(-2.0f32, 0.0f32), (2.0, 0.0), (0.0, 2.5)];
    let mut state = seed;
    let mut jitter = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let mut features = Vec::with_capacity(rows * 2);
    let mut labels = Vec::with_capacity(rows);
    for row in 0..rows {
        let class = row % 3;
        let (x, y) = centres[class];
        features.push(x + 4.0 * jitter());
        features.push(y + 4.0 * jitter());
        labels.push(class as u32);
    }
    Dataset::new("blobs", features, labels, vec![2], 3).expect("rows and labels agree")
}

fn main() -> wgpu_learn::Result<()> {
    let splits = Splits::new(blobs(600, 1), blobs(150, 2), blobs(150, 3))?;
    let config = TrainConfig::default()
        .with_learning_rate(0.02)
        .with_batch_size(50)
        .with_max_epochs(200)
        .with_patience(400);
    let trainer = Trainer::new(config)?;

    let mut curve = Vec::new();
    let mut backend = CpuBackend::new(&splits);
    let trained = trainer.fit(&splits, &mut backend, |event| {
        if let TrainEvent::Validated {
            epoch,
            validation_error,
            ..
        } = event
        {
            curve.push((*epoch, *validation_error));
        }
    })?;

    let first = curve.first().map_or(f64::NAN, |(_, error)| *error);
    println!(
        "validation error went from {:.2} % after epoch 1 to {:.2} % (best) over {} epochs",
        first * 100.0,
        trained.report.best_validation_error * 100.0,
        trained.report.epochs
    );
    println!(
        "test error {:.2} %",
        trained.report.test_error.unwrap_or(f64::NAN) * 100.0
    );

    let points = ndarray::array![[-2.0f32, 0.1], [2.1, -0.2], [0.0, 2.4]];
    let predicted = trained.model.predict(points.view())?;
    println!("points near the three centres are classified as {predicted:?}");
    assert_eq!(predicted, vec![0, 1, 2]);
    Ok(())
}
