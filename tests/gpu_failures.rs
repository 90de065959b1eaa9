//! GPU trouble becomes an error, never a panic or a hang.

mod common;

use common::gpu_or_skip;
use std::time::Duration;
use wgpu_learn::gpu::{GpuBackend, GpuOptions};
use wgpu_learn::{Backend, Batch, Dataset, Error, Split, Splits};

fn splits(rows: usize, d: usize) -> Splits {
    let mut rng = common::Rng::new(11);
    let data = Dataset::new(
        "random",
        rng.vec(rows * d, -1.0, 1.0),
        rng.labels(rows, 10),
        vec![d],
        10,
    )
    .unwrap();
    Splits::new(data.clone(), data.clone(), data).unwrap()
}

#[test]
fn read_back_timeout_is_an_error() {
    let data = splits(20_000, 784);
    let options = GpuOptions::default().with_read_back_timeout(Duration::from_nanos(1));
    let Some(mut gpu) = gpu_or_skip(GpuBackend::new(&data, options)) else {
        return;
    };
    let all = [Batch {
        start: 0,
        len: 20_000,
    }];
    match gpu.evaluate(Split::Train, &all) {
        Err(Error::Gpu { reason }) => {
            assert!(reason.contains("GPU read-back timed out"), "{reason}")
        }
        other => panic!("expected a read-back timeout, got {other:?}"),
    }

    // Positive control: the same evaluation with the default timeout succeeds.
    let mut gpu = GpuBackend::new(&data, GpuOptions::default()).unwrap();
    assert_eq!(gpu.evaluate(Split::Train, &all).unwrap().rows, 20_000);
}

#[test]
fn lost_device_is_an_error() {
    let data = splits(600, 30);
    let Some(mut gpu) = gpu_or_skip(GpuBackend::new(&data, GpuOptions::default())) else {
        return;
    };
    gpu.context().device().destroy();
    let steps = gpu.train_steps(&[Batch { start: 0, len: 600 }], 0.1);
    let evaluation = gpu.evaluate(Split::Validation, &[Batch { start: 0, len: 600 }]);
    let error = steps
        .err()
        .or(evaluation.err())
        .expect("a destroyed device must fail");
    assert!(matches!(error, Error::Gpu { .. }), "{error:?}");
    assert!(
        gpu.current_model().is_err(),
        "no model is read from a lost device"
    );
}
