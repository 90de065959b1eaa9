//! The GPU network engine against the CPU network engine: every
//! activation, optimiser and penalty, training orders, partial batches,
//! resuming, counters, divergence and the choice between the engines.

mod common;

use common::{assert_close, gpu_or_skip, Rng};
use std::path::Path;
use wgpu_learn::backend::{Backend, Batch, Setup};
use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::gpu::{FeatureStorage, GpuBackend, GpuOptions};
use wgpu_learn::optim::ADAM_DEFAULTS;
use wgpu_learn::{
    Activation, Dataset, Error, LogisticRegression, Mlp, Model, Optimizer, OptimizerState, Penalty,
    Split, Splits,
};

const FEATURES: usize = 12;
const CLASSES: usize = 4;
/// 200 training rows make 6 batches of 32 and a partial one of 8.
const BATCH: usize = 32;
const TRAIN_ROWS: usize = 200;

/// Rows labelled by the argmax of a random linear map, with features in
/// [-1, 1] so that the data uses f32 storage.
fn dataset(rng: &mut Rng, name: &str, rows: usize, truth: &[f32]) -> Dataset {
    let features = rng.vec(rows * FEATURES, -1.0, 1.0);
    let labels = (0..rows)
        .map(|row| {
            let x = &features[row * FEATURES..(row + 1) * FEATURES];
            let score = |class: usize| -> f32 {
                x.iter()
                    .enumerate()
                    .map(|(i, v)| v * truth[i * CLASSES + class])
                    .sum()
            };
            (0..CLASSES)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap() as u32
        })
        .collect();
    Dataset::new(name, features, labels, vec![FEATURES], CLASSES).unwrap()
}

fn splits() -> Splits {
    let mut rng = Rng::new(7);
    let truth = rng.vec(FEATURES * CLASSES, -1.0, 1.0);
    Splits::new(
        dataset(&mut rng, "train", TRAIN_ROWS, &truth),
        dataset(&mut rng, "validation", 60, &truth),
        dataset(&mut rng, "test", 50, &truth),
    )
    .unwrap()
}

fn mlp(activation: Activation) -> Model {
    Mlp::new(vec![FEATURES], &[16, 8], CLASSES, activation, 3).into()
}

fn adam() -> Optimizer {
    let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
    Optimizer::Adam {
        beta1,
        beta2,
        epsilon,
    }
}

fn gpu(splits: &Splits, setup: &Setup) -> Option<GpuBackend> {
    gpu_or_skip(GpuBackend::with_setup(
        splits,
        GpuOptions::default().with_batch_size(BATCH),
        setup,
    ))
}

fn assert_models_close(what: &str, gpu: &Model, cpu: &Model, relative: f32, absolute: f32) {
    assert_eq!(gpu.kind(), cpu.kind(), "{what}: model kind");
    assert_eq!(gpu.summary(), cpu.summary(), "{what}: architecture");
    for (index, (g, c)) in gpu.to_layers().iter().zip(cpu.to_layers()).enumerate() {
        assert_close(
            &format!("{what} layer {index} weights"),
            &g.weights.iter().copied().collect::<Vec<_>>(),
            &c.weights.iter().copied().collect::<Vec<_>>(),
            relative,
            absolute,
        );
        assert_close(
            &format!("{what} layer {index} bias"),
            g.bias.as_slice().unwrap(),
            c.bias.as_slice().unwrap(),
            relative,
            absolute,
        );
    }
}

fn assert_states_close(what: &str, gpu: &OptimizerState, cpu: &OptimizerState) {
    assert_eq!(gpu.steps, cpu.steps, "{what}: steps");
    assert_eq!(gpu.tensors.len(), cpu.tensors.len(), "{what}: tensor count");
    for (index, (g, c)) in gpu.tensors.iter().zip(&cpu.tensors).enumerate() {
        assert_close(&format!("{what} tensor {index}"), g, c, 1e-3, 1e-6);
    }
}

/// Trains `setup` for `epochs` epochs on the GPU and the CPU with the same
/// batches and returns both backends, or `None` without an adapter.
fn train_both<'a>(
    splits: &'a Splits,
    setup: &Setup,
    epochs: usize,
    learning_rate: f32,
) -> Option<(GpuBackend, CpuBackend<'a>)> {
    let mut gpu = gpu(splits, setup)?;
    let mut cpu = CpuBackend::with_setup(splits, setup).unwrap();
    let batches = Batch::split(TRAIN_ROWS, BATCH, false);
    assert_eq!(batches.last().unwrap().len, 8, "the last batch is partial");
    for _ in 0..epochs {
        gpu.train_steps(&batches, learning_rate).unwrap();
        cpu.train_steps(&batches, learning_rate).unwrap();
    }
    Some((gpu, cpu))
}

// Tolerances: the GPU sums each product in order of k, and matrixmultiply
// sums in blocks, so parameters drift apart by a few ulps per step. On
// lavapipe nearly every value agreed within 1e-6 relative plus 1e-7
// absolute after 3 epochs, the worst being a Nesterov bias of -0.006 off by
// 1.1e-7, so these bounds leave a margin of about 100.
const RELATIVE: f32 = 1e-4;
const ABSOLUTE: f32 = 1e-5;

#[test]
fn activations_match_cpu() {
    let splits = splits();
    for activation in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        let setup = Setup::new(mlp(activation));
        let Some((mut gpu, mut cpu)) = train_both(&splits, &setup, 3, 0.1) else {
            return;
        };
        assert!(gpu.uses_network_kernels());
        let gpu_model = gpu.current_model().unwrap();
        let cpu_model = cpu.current_model().unwrap();
        assert_models_close(
            activation.name(),
            &gpu_model,
            &cpu_model,
            RELATIVE,
            ABSOLUTE,
        );
        assert_ne!(
            gpu_model, setup.model,
            "{activation}: training must change the parameters"
        );
    }
}

#[test]
fn optimizers_match_cpu() {
    let splits = splits();
    let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
    let optimizers = [
        Optimizer::Momentum {
            momentum: 0.9,
            nesterov: false,
        },
        Optimizer::Momentum {
            momentum: 0.9,
            nesterov: true,
        },
        adam(),
        Optimizer::AdamW {
            beta1,
            beta2,
            epsilon,
            weight_decay: 0.05,
        },
    ];
    for optimizer in optimizers {
        let setup = Setup::new(mlp(Activation::Tanh)).with_optimizer(optimizer);
        let learning_rate = if optimizer.slots() == 2 { 0.01 } else { 0.05 };
        let Some((mut gpu, mut cpu)) = train_both(&splits, &setup, 3, learning_rate) else {
            return;
        };
        let name = optimizer.name();
        assert_models_close(
            name,
            &gpu.current_model().unwrap(),
            &cpu.current_model().unwrap(),
            RELATIVE,
            ABSOLUTE,
        );
        let gpu_state = gpu.optimizer_state().unwrap();
        assert_eq!(gpu_state.steps, 21, "{name}: 3 epochs of 7 steps");
        assert_states_close(name, &gpu_state, &cpu.optimizer_state().unwrap());
    }
}

#[test]
fn penalties_match_cpu() {
    let splits = splits();
    let setup = Setup::new(mlp(Activation::Relu))
        .with_optimizer(Optimizer::Momentum {
            momentum: 0.5,
            nesterov: false,
        })
        .with_penalty(Penalty { l1: 1e-3, l2: 1e-2 });
    let Some((mut gpu, mut cpu)) = train_both(&splits, &setup, 3, 0.05) else {
        return;
    };
    let penalised = gpu.current_model().unwrap();
    assert_models_close(
        "l1 and l2",
        &penalised,
        &cpu.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );

    // Positive control: the penalty changes the result.
    let plain = Setup {
        penalty: Penalty::default(),
        ..setup
    };
    let Some((mut unpenalised, _)) = train_both(&splits, &plain, 3, 0.05) else {
        return;
    };
    assert_ne!(unpenalised.current_model().unwrap(), penalised);
}

#[test]
fn training_order_matches_cpu() {
    let splits = splits();
    let setup = Setup::new(mlp(Activation::Tanh)).with_optimizer(adam());
    let Some(mut gpu) = gpu(&splits, &setup) else {
        return;
    };
    let mut cpu = CpuBackend::with_setup(&splits, &setup).unwrap();
    let mut rng = Rng::new(5);
    let mut order: Vec<u32> = (0..TRAIN_ROWS as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u32 + 1) as usize);
    }
    let batches = Batch::split(TRAIN_ROWS, BATCH, false);

    gpu.set_train_order(Some(&order)).unwrap();
    cpu.set_train_order(Some(&order)).unwrap();
    gpu.train_steps(&batches, 0.01).unwrap();
    cpu.train_steps(&batches, 0.01).unwrap();
    assert_models_close(
        "shuffled epoch",
        &gpu.current_model().unwrap(),
        &cpu.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );

    gpu.set_train_order(None).unwrap();
    cpu.set_train_order(None).unwrap();
    gpu.train_steps(&batches, 0.01).unwrap();
    cpu.train_steps(&batches, 0.01).unwrap();
    let gpu_model = gpu.current_model().unwrap();
    assert_models_close(
        "then file order",
        &gpu_model,
        &cpu.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );

    // Positive control: two epochs in file order end elsewhere.
    let Some((mut in_order, _)) = train_both(&splits, &setup, 2, 0.01) else {
        return;
    };
    assert_ne!(in_order.current_model().unwrap(), gpu_model);
}

#[test]
fn invalid_order_is_rejected() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, &Setup::new(mlp(Activation::Tanh))) else {
        return;
    };
    let mut order: Vec<u32> = (0..TRAIN_ROWS as u32).collect();
    order[3] = 4;
    let error = gpu.set_train_order(Some(&order)).unwrap_err();
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    let error = gpu.set_train_order(Some(&order[..10])).unwrap_err();
    assert!(matches!(error, Error::Shape { .. }), "{error}");
}

#[test]
fn evaluation_matches_cpu() {
    let splits = splits();
    let setup = Setup::new(mlp(Activation::Sigmoid)).with_optimizer(adam());
    let Some((mut gpu, mut cpu)) = train_both(&splits, &setup, 5, 0.03) else {
        return;
    };
    // Batches longer than the GPU batch size run in pieces.
    for (split, rows) in [(Split::Validation, 60), (Split::Test, 50)] {
        let batches = [Batch {
            start: 0,
            len: rows,
        }];
        let gpu_eval = gpu.evaluate(split, &batches).unwrap();
        let cpu_eval = cpu.evaluate(split, &batches).unwrap();
        assert_eq!(gpu_eval.rows, rows as u64);
        // NOTE: a row whose two best logits are within rounding could flip
        // between the devices; allow one row.
        assert!(
            gpu_eval.errors.abs_diff(cpu_eval.errors) <= 1,
            "{split} errors: gpu {} vs cpu {}",
            gpu_eval.errors,
            cpu_eval.errors
        );
        assert_eq!(gpu_eval.first_non_finite_step, None);
    }
    let trained = gpu.current_model().unwrap();
    let before = setup.model.error_rate(&splits.test).unwrap();
    let after = trained.error_rate(&splits.test).unwrap();
    assert!(
        after < before,
        "training must learn something: test error rate {before} before, {after} after"
    );
}

#[test]
fn resumed_run_matches_unbroken_run() {
    let splits = splits();
    let setup = Setup::new(mlp(Activation::Tanh)).with_optimizer(adam());
    let batches = Batch::split(TRAIN_ROWS, BATCH, false);
    let Some(mut unbroken) = gpu(&splits, &setup) else {
        return;
    };
    for _ in 0..3 {
        unbroken.train_steps(&batches, 0.01).unwrap();
    }

    let Some(mut first) = gpu(&splits, &setup) else {
        return;
    };
    first.train_steps(&batches, 0.01).unwrap();
    let state = first.optimizer_state().unwrap();
    assert_eq!(state.steps, 7);
    let resumed_setup = Setup::new(first.current_model().unwrap())
        .with_optimizer(adam())
        .with_state(state);
    let Some(mut resumed) = gpu(&splits, &resumed_setup) else {
        return;
    };
    for _ in 0..2 {
        resumed.train_steps(&batches, 0.01).unwrap();
    }

    // The same kernels on the same device repeat their results exactly.
    assert_eq!(
        resumed.current_model().unwrap(),
        unbroken.current_model().unwrap()
    );
    assert_eq!(
        resumed.optimizer_state().unwrap(),
        unbroken.optimizer_state().unwrap()
    );

    // And the CPU resumes from the GPU's state to the same place.
    let mut cpu = CpuBackend::with_setup(&splits, &resumed_setup).unwrap();
    for _ in 0..2 {
        cpu.train_steps(&batches, 0.01).unwrap();
    }
    assert_models_close(
        "resumed on the cpu",
        &cpu.current_model().unwrap(),
        &resumed.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );
}

#[test]
fn counters_show_one_submission_per_call() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, &Setup::new(mlp(Activation::Relu))) else {
        return;
    };
    let batches = Batch::split(TRAIN_ROWS, BATCH, false);
    let validation = Batch::split(60, 25, false);

    let start = gpu.counters();
    gpu.train_steps(&batches, 0.1).unwrap();
    let after_train = gpu.counters();
    assert_eq!(after_train.submissions, start.submissions + 1);
    assert_eq!(after_train.uploads, start.uploads + 1);
    assert_eq!(after_train.read_backs, start.read_backs);

    gpu.evaluate(Split::Validation, &validation).unwrap();
    let after_eval = gpu.counters();
    assert_eq!(after_eval.submissions, after_train.submissions + 1);
    assert_eq!(after_eval.read_backs, after_train.read_backs + 1);
    assert_eq!(after_eval.uploads, after_train.uploads + 1);

    let order: Vec<u32> = (0..TRAIN_ROWS as u32).rev().collect();
    gpu.set_train_order(Some(&order)).unwrap();
    let after_order = gpu.counters();
    assert_eq!(after_order.uploads, after_eval.uploads + 1);
    assert_eq!(after_order.submissions, after_eval.submissions);
    gpu.train_steps(&batches, 0.1).unwrap();
    let after_shuffled = gpu.counters();
    assert_eq!(after_shuffled.uploads, after_order.uploads + 1);
    assert_eq!(after_shuffled.submissions, after_order.submissions + 1);
    assert_eq!(after_shuffled.read_backs, after_order.read_backs);

    gpu.keep_best().unwrap();
    let after_keep = gpu.counters();
    assert_eq!(after_keep.uploads, after_shuffled.uploads);
    assert_eq!(after_keep.read_backs, after_shuffled.read_backs);
}

#[test]
fn best_model_is_copy_at_keep_best() {
    let splits = splits();
    let Some(mut gpu) = gpu(&splits, &Setup::new(mlp(Activation::Tanh))) else {
        return;
    };
    let batches = Batch::split(TRAIN_ROWS, BATCH, false);
    gpu.train_steps(&batches, 0.1).unwrap();
    assert_eq!(gpu.best_model().unwrap(), gpu.current_model().unwrap());
    gpu.keep_best().unwrap();
    let kept = gpu.current_model().unwrap();
    gpu.train_steps(&batches, 0.1).unwrap();
    assert_ne!(gpu.current_model().unwrap(), kept);
    assert_eq!(gpu.best_model().unwrap(), kept);
}

#[test]
fn divergence_reports_same_step_as_cpu() {
    let splits = splits();
    let setup = Setup::new(mlp(Activation::Relu));
    let Some(mut gpu) = gpu(&splits, &setup) else {
        return;
    };
    let mut cpu = CpuBackend::with_setup(&splits, &setup).unwrap();
    let batches = Batch::split(TRAIN_ROWS, BATCH, false);

    // Positive control: a normal learning rate stays finite.
    gpu.train_steps(&batches[..3], 0.1).unwrap();
    cpu.train_steps(&batches[..3], 0.1).unwrap();
    assert_eq!(
        gpu.evaluate(Split::Validation, &[])
            .unwrap()
            .first_non_finite_step,
        None
    );

    gpu.train_steps(&batches[3..], 1e38).unwrap();
    cpu.train_steps(&batches[3..], 1e38).unwrap();
    let gpu_step = gpu
        .evaluate(Split::Validation, &[])
        .unwrap()
        .first_non_finite_step;
    let cpu_step = cpu
        .evaluate(Split::Validation, &[])
        .unwrap()
        .first_non_finite_step;
    assert!(gpu_step.is_some(), "gpu step {gpu_step:?}");
    assert_eq!(gpu_step, cpu_step);
}

#[test]
fn plain_logistic_uses_classic_kernels() {
    let splits = splits();
    let Some(classic) = gpu(&splits, &Setup::classic(&splits)) else {
        return;
    };
    assert!(!classic.uses_network_kernels());
    assert!(
        !classic.description().contains("network"),
        "{}",
        classic.description()
    );

    let Some(shuffled) = gpu_or_skip(GpuBackend::with_setup(
        &splits,
        GpuOptions::default()
            .with_batch_size(BATCH)
            .with_shuffled(true),
        &Setup::classic(&splits),
    )) else {
        return;
    };
    assert!(shuffled.uses_network_kernels());
    assert!(
        shuffled.description().ends_with(", network kernels"),
        "{}",
        shuffled.description()
    );
}

#[test]
fn classic_kernels_start_from_given_weights() {
    let splits = splits();
    let mut rng = Rng::new(9);
    let mut start = LogisticRegression::zeros(vec![FEATURES], CLASSES);
    start
        .weights
        .iter_mut()
        .for_each(|w| *w = rng.uniform(-0.5, 0.5));
    start
        .bias
        .iter_mut()
        .for_each(|b| *b = rng.uniform(-0.5, 0.5));
    let setup = Setup::new(start.into());
    let Some((mut gpu, mut cpu)) = train_both(&splits, &setup, 2, 0.1) else {
        return;
    };
    assert!(!gpu.uses_network_kernels());
    assert_models_close(
        "classic from given weights",
        &gpu.current_model().unwrap(),
        &cpu.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );
}

#[test]
fn logistic_adam_uses_network_kernels() {
    let splits = splits();
    let setup = Setup::classic(&splits).with_optimizer(adam());
    let Some((mut gpu, mut cpu)) = train_both(&splits, &setup, 3, 0.01) else {
        return;
    };
    assert!(gpu.uses_network_kernels());
    let model = gpu.current_model().unwrap();
    assert!(model.as_logistic().is_some(), "{}", model.summary());
    assert_models_close(
        "logistic adam",
        &model,
        &cpu.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );
    assert_states_close(
        "logistic adam",
        &gpu.optimizer_state().unwrap(),
        &cpu.optimizer_state().unwrap(),
    );
}

#[test]
fn mnist_mlp_matches_cpu() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let full = load_idx_dir(&directory, None).expect("the repository ships data/mnist");
    let splits = Splits::new(
        full.train.slice_rows(0..300),
        full.validation.slice_rows(0..100),
        full.test.slice_rows(0..100),
    )
    .unwrap();
    let model: Model = Mlp::new(vec![28, 28], &[32], 10, Activation::Relu, 1).into();
    let setup = Setup::new(model).with_optimizer(Optimizer::Momentum {
        momentum: 0.9,
        nesterov: true,
    });
    let Some(mut gpu) = gpu_or_skip(GpuBackend::with_setup(
        &splits,
        GpuOptions::default().with_batch_size(64),
        &setup,
    )) else {
        return;
    };
    assert_eq!(gpu.feature_storage(), FeatureStorage::U8);
    let mut cpu = CpuBackend::with_setup(&splits, &setup).unwrap();
    let batches = Batch::split(300, 64, false);
    for _ in 0..2 {
        gpu.train_steps(&batches, 0.05).unwrap();
        cpu.train_steps(&batches, 0.05).unwrap();
    }
    assert_models_close(
        "mnist 784-32-10",
        &gpu.current_model().unwrap(),
        &cpu.current_model().unwrap(),
        RELATIVE,
        ABSOLUTE,
    );
    let batches = [Batch { start: 0, len: 100 }];
    let gpu_eval = gpu.evaluate(Split::Test, &batches).unwrap();
    let cpu_eval = cpu.evaluate(Split::Test, &batches).unwrap();
    assert!(
        gpu_eval.errors.abs_diff(cpu_eval.errors) <= 1,
        "test errors: gpu {} vs cpu {}",
        gpu_eval.errors,
        cpu_eval.errors
    );
}
