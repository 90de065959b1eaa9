//! The classic protocol on the shipped MNIST reaches the published figures.
//!
//! With incomplete batches dropped, as the original Theano tutorial did, its
//! published result is a best validation error of 7.50 % (720 of 9600 rows),
//! a test error of 7.489583 % (719 of 9600) and 74 epochs. Keeping every row
//! (the default) gives 7.48 % (748 of 10000), 7.80 % (780 of 10000) and
//! 86 epochs; the numpy script benches/reference/numpy_logistic.py, run
//! without --drop-last, prints the same figures.

use std::path::Path;
use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::{TrainConfig, Trainer};

fn shipped_mnist() -> wgpu_learn::Splits {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    load_idx_dir(&directory, None).expect("the repository ships data/mnist")
}

#[test]
fn classic_protocol_reproduces_tutorial_figures() {
    let splits = shipped_mnist();
    let config = TrainConfig::default().with_drop_last(true);
    let mut backend = CpuBackend::new(&splits);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&splits, &mut backend, |_| {})
        .unwrap();
    let report = &trained.report;
    assert_eq!(report.best_validation_error, 720.0 / 9600.0);
    assert_eq!(report.test_error, Some(719.0 / 9600.0));
    assert_eq!(report.epochs, 74);
    assert!(!report.interrupted);

    // The returned model is the best one, not the last: its errors on the
    // full splits are those of the reported run.
    let validation_errors = trained.model.error_rate(&splits.validation).unwrap() * 10_000.0;
    assert!(
        (700.0..=760.0).contains(&validation_errors.round()),
        "{validation_errors}"
    );
}

#[test]
fn all_rows_protocol_matches_numpy_reference() {
    let splits = shipped_mnist();
    let mut backend = CpuBackend::new(&splits);
    let trained = Trainer::new(TrainConfig::default())
        .unwrap()
        .fit(&splits, &mut backend, |_| {})
        .unwrap();
    let report = &trained.report;
    assert_eq!(report.best_validation_error, 748.0 / 10_000.0);
    assert_eq!(report.test_error, Some(780.0 / 10_000.0));
    assert_eq!(report.epochs, 86);
    assert_eq!(
        trained.model.error_rate(&splits.test).unwrap(),
        780.0 / 10_000.0
    );
}
