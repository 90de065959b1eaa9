//! The early-stopping protocol, checked with a scripted backend and on the CPU path.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::{
    Backend, Batch, Dataset, Error, Evaluation, LogisticRegression, Split, Splits, TrainConfig,
    TrainEvent, Trainer,
};

/// A backend that records the calls it receives and returns validation
/// errors from a script (repeating the last one).
struct ScriptedBackend {
    validation_errors: Vec<u64>,
    validations: usize,
    steps: Vec<Batch>,
    submissions: usize,
    kept: usize,
    stop_after_steps: Option<(usize, Arc<AtomicBool>)>,
    orders: Vec<Option<Vec<u32>>>,
}

impl ScriptedBackend {
    fn new(validation_errors: Vec<u64>) -> Self {
        ScriptedBackend {
            validation_errors,
            validations: 0,
            steps: Vec::new(),
            submissions: 0,
            kept: 0,
            stop_after_steps: None,
            orders: Vec::new(),
        }
    }
}

impl Backend for ScriptedBackend {
    fn description(&self) -> String {
        "scripted".to_string()
    }

    fn train_steps(&mut self, batches: &[Batch], _learning_rate: f32) -> wgpu_learn::Result<()> {
        self.steps.extend_from_slice(batches);
        self.submissions += 1;
        if let Some((limit, flag)) = &self.stop_after_steps {
            if self.steps.len() >= *limit {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> wgpu_learn::Result<Evaluation> {
        let rows: u64 = batches.iter().map(|b| b.len as u64).sum();
        let errors = if split == Split::Validation && !batches.is_empty() {
            let index = self.validations.min(self.validation_errors.len() - 1);
            self.validations += 1;
            self.validation_errors[index]
        } else {
            0
        };
        Ok(Evaluation {
            errors,
            rows,
            first_non_finite_step: None,
        })
    }

    fn keep_best(&mut self) -> wgpu_learn::Result<()> {
        self.kept += 1;
        Ok(())
    }

    fn set_train_order(&mut self, order: Option<&[u32]>) -> wgpu_learn::Result<()> {
        self.orders.push(order.map(<[u32]>::to_vec));
        Ok(())
    }

    fn best_model(&mut self) -> wgpu_learn::Result<wgpu_learn::Model> {
        Ok(LogisticRegression::zeros(vec![1], 2).into())
    }

    fn current_model(&mut self) -> wgpu_learn::Result<wgpu_learn::Model> {
        self.best_model()
    }

    fn optimizer_state(&mut self) -> wgpu_learn::Result<wgpu_learn::OptimizerState> {
        Ok(wgpu_learn::OptimizerState::default())
    }
}

/// Splits of one feature with `train`, `validation` and `test` rows.
fn splits(train: usize, validation: usize, test: usize) -> Splits {
    let make = |rows: usize| {
        let features: Vec<f32> = (0..rows)
            .map(|r| if r % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let labels: Vec<u32> = (0..rows).map(|r| (r % 2) as u32).collect();
        Dataset::new("synthetic", features, labels, vec![1], 2).unwrap()
    };
    Splits::new(make(train), make(validation), make(test)).unwrap()
}

#[test]
fn stops_when_patience_runs_out_mid_epoch() {
    // 10 batches per epoch, validation every 5 iterations (patience / 2),
    // constant validation error: the first validation improves
    // (iter 4 -> patience max(10, 8) = 10), later ones do not, so the loop
    // stops right after iteration 10, the first minibatch of epoch 2.
    let data = splits(100, 10, 10);
    let config = TrainConfig::default().with_batch_size(10).with_patience(10);
    let mut backend = ScriptedBackend::new(vec![5]);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    assert_eq!(backend.steps.len(), 11);
    assert_eq!(trained.report.iterations, 11);
    assert_eq!(trained.report.epochs, 2);
    assert_eq!(backend.validations, 2);
    assert_eq!(backend.kept, 1);
    assert_eq!(trained.report.best_validation_error, 0.5);
    assert_eq!(trained.report.best_iteration, 4);
}

#[test]
fn significant_improvement_extends_patience() {
    // Validation every 10 iterations (one epoch). Errors 9, 8, 7: each is
    // below 0.995 * best, so patience becomes iter * 2 each time:
    // 19 at iter 9 (patience 20 stays), 38 at iter 19, 58 at iter 29; then
    // the error stays at 7, so training stops after iteration 58.
    let data = splits(100, 10, 10);
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_patience(20)
        .with_validation_frequency(10);
    let mut backend = ScriptedBackend::new(vec![9, 8, 7]);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    assert_eq!(trained.report.iterations, 59);
    assert_eq!(trained.report.epochs, 6);
    assert_eq!(backend.kept, 3);
    assert_eq!(trained.report.best_iteration, 29);
}

#[test]
fn insignificant_improvement_keeps_model_but_not_patience() {
    // 1000 -> 999 is better but not below 0.995 * 1000: the model is kept,
    // patience stays at 20, and training stops after iteration 20.
    let data = splits(10, 10_000, 10);
    let config = TrainConfig::default()
        .with_batch_size(1)
        .with_patience(20)
        .with_validation_frequency(10);
    let mut backend = ScriptedBackend::new(vec![1000, 999, 999]);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    assert_eq!(backend.kept, 2);
    assert_eq!(trained.report.iterations, 21);
}

#[test]
fn partial_last_batch_is_trained_unless_dropped() {
    let data = splits(25, 10, 10);
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_max_epochs(1);
    let mut backend = ScriptedBackend::new(vec![1]);
    Trainer::new(config.clone())
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    let lengths: Vec<usize> = backend.steps.iter().map(|b| b.len).collect();
    assert_eq!(lengths, vec![10, 10, 5]);
    assert_eq!(backend.steps[2].start, 20);

    let mut dropped = ScriptedBackend::new(vec![1]);
    Trainer::new(config.with_drop_last(true))
        .unwrap()
        .fit(&data, &mut dropped, |_| {})
        .unwrap();
    let lengths: Vec<usize> = dropped.steps.iter().map(|b| b.len).collect();
    assert_eq!(lengths, vec![10, 10]);
}

#[test]
fn one_submission_per_validation_interval() {
    let data = splits(100, 10, 10);
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_max_epochs(3)
        .with_validation_frequency(4);
    let mut backend = ScriptedBackend::new(vec![1]);
    Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    // Each epoch of 10 steps is cut at validations (after iterations 3, 7,
    // 11, ...) and at epoch ends: epoch 1 = 4+4+2, epoch 2 = 2+4+4, epoch 3 = 4+4+2.
    assert_eq!(backend.steps.len(), 30);
    assert_eq!(backend.submissions, 9);
    assert_eq!(backend.validations, 7);
}

#[test]
fn events_follow_the_tutorial_order() {
    let data = splits(20, 10, 10);
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_max_epochs(2);
    let mut backend = ScriptedBackend::new(vec![3, 2]);
    let mut events = Vec::new();
    Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |e| events.push(e.clone()))
        .unwrap();
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e {
            TrainEvent::EpochStarted { .. } => "epoch",
            TrainEvent::StepsCompleted { .. } => "steps",
            TrainEvent::Validated { .. } => "validated",
            TrainEvent::TestedBest { .. } => "tested",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        [
            "epoch",
            "steps",
            "validated",
            "tested",
            "epoch",
            "steps",
            "validated",
            "tested"
        ]
    );
    assert_eq!(
        events[2],
        TrainEvent::Validated {
            epoch: 1,
            minibatch: 2,
            batches: 2,
            validation_error: 0.3,
            improved: true
        }
    );
}

#[test]
fn stop_flag_interrupts_and_returns_best() {
    let data = splits(100, 10, 10);
    let flag = Arc::new(AtomicBool::new(false));
    let config = TrainConfig::default().with_batch_size(10);
    let mut backend = ScriptedBackend::new(vec![1]);
    backend.stop_after_steps = Some((25, flag.clone()));
    let trained = Trainer::new(config)
        .unwrap()
        .with_stop_flag(flag)
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    assert!(trained.report.interrupted);
    assert_eq!(trained.report.iterations, 30);
}

#[test]
fn rejects_validation_set_smaller_than_a_batch() {
    let data = splits(100, 5, 10);
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_drop_last(true);
    let error = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut ScriptedBackend::new(vec![1]), |_| {})
        .unwrap_err();
    match error {
        Error::Dataset { name, reason } => {
            assert_eq!(name, "validation");
            assert!(
                reason.contains("5 rows, fewer than one batch of 10"),
                "{reason}"
            );
        }
        other => panic!("expected a dataset error, got {other:?}"),
    }
}

#[test]
fn rejects_empty_validation_set() {
    let data = splits(100, 0, 10);
    let error = Trainer::new(TrainConfig::default())
        .unwrap()
        .fit(&data, &mut ScriptedBackend::new(vec![1]), |_| {})
        .unwrap_err();
    assert!(
        error.to_string().contains("validation set has no rows"),
        "{error}"
    );
}

#[test]
fn empty_test_set_reports_no_test_error() {
    let data = splits(20, 10, 0);
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_max_epochs(1);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut ScriptedBackend::new(vec![1]), |_| {})
        .unwrap();
    assert_eq!(trained.report.test_error, None);
}

#[test]
fn cpu_divergence_names_epoch_and_minibatch() {
    // Features near f32::MAX and a learning rate of 1e30 overflow the
    // weights in the first update.
    let rows = 40;
    let features: Vec<f32> = (0..rows)
        .map(|r| if r % 2 == 0 { 3e38 } else { -3e38 })
        .collect();
    let labels: Vec<u32> = (0..rows).map(|r| (r % 2) as u32).collect();
    let data = Dataset::new("huge", features, labels, vec![1], 2).unwrap();
    let splits = Splits::new(data.clone(), data.clone(), data).unwrap();
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_learning_rate(1e30);
    let mut backend = CpuBackend::new(&splits);
    let error = Trainer::new(config)
        .unwrap()
        .fit(&splits, &mut backend, |_| {})
        .unwrap_err();
    match error {
        Error::Diverged {
            epoch, minibatch, ..
        } => assert_eq!((epoch, minibatch), (1, 1)),
        other => panic!("expected divergence, got {other:?}"),
    }
    // Positive control: a sane learning rate trains without error.
    let config = TrainConfig::default()
        .with_batch_size(10)
        .with_learning_rate(1e-40)
        .with_max_epochs(2);
    let mut backend = CpuBackend::new(&splits);
    assert!(Trainer::new(config)
        .unwrap()
        .fit(&splits, &mut backend, |_| {})
        .is_ok());
}

#[test]
fn cpu_training_separates_toy_classes() {
    let data = splits(60, 20, 20);
    let config = TrainConfig::default().with_batch_size(7).with_max_epochs(5);
    let mut backend = CpuBackend::new(&data);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    assert_eq!(trained.report.best_validation_error, 0.0);
    assert_eq!(trained.model.error_rate(&data.test).unwrap(), 0.0);
    let model = trained.model.as_logistic().unwrap();
    assert!(model.weights[[0, 0]] > 0.0, "feature 0 votes for class 0");
    assert!(
        model.weights[[0, 1]] < 0.0,
        "feature 0 votes against class 1"
    );
}

#[test]
fn one_row_training_set_trains() {
    let data = splits(1, 1, 1);
    let config = TrainConfig::default().with_max_epochs(3);
    let mut backend = CpuBackend::new(&data);
    let trained = Trainer::new(config)
        .unwrap()
        .fit(&data, &mut backend, |_| {})
        .unwrap();
    assert_eq!(trained.report.epochs, 3);
    assert_eq!(trained.report.iterations, 3);
    assert_eq!(trained.report.best_validation_error, 0.0);
}

#[test]
fn model_rejects_label_beyond_its_classes() {
    // Data with labels 0..=10 has 11 classes. A 10-class model must reject
    // it rather than count label 10 as an ordinary error.
    let features = vec![0.5f32; 11];
    let labels: Vec<u32> = (0..11).collect();
    let data = Dataset::new("labels to 10", features, labels, vec![1], 11).unwrap();
    let model = LogisticRegression::zeros(vec![1], 10);
    let error = model.error_rate(&data).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("labels up to 10 but the model has 10 classes"),
        "{error}"
    );
    // Positive control: an 11-class model accepts the data.
    assert!(LogisticRegression::zeros(vec![1], 11)
        .error_rate(&data)
        .is_ok());
}
