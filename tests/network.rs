//! The CPU network engine: gradients against finite differences, against
//! the fused logistic-regression path, shuffling and resuming.

use wgpu_learn::cpu::network::Network;
use wgpu_learn::cpu::CpuBackend;
use wgpu_learn::model::Dense;
use wgpu_learn::optim::ADAM_DEFAULTS;
use wgpu_learn::trainer::epoch_order;
use wgpu_learn::{
    Activation, Backend, Batch, Dataset, LogisticRegression, Mlp, Model, Optimizer, Penalty,
    Schedule, Setup, Split, Splits, TrainConfig, Trainer,
};

/// Deterministic pseudo-random values in [-1, 1).
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Rows whose class is the index of the largest of the first `classes` features, plus noise.
fn dataset(rows: usize, features: usize, classes: usize, seed: u64) -> Dataset {
    let x = values(rows * features, seed);
    let labels = x
        .chunks(features)
        .map(|row| {
            let mut best = 0;
            for class in 1..classes {
                if row[class] > row[best] {
                    best = class;
                }
            }
            best as u32
        })
        .collect();
    Dataset::new("synthetic", x, labels, vec![features], classes).unwrap()
}

fn splits(rows: usize, features: usize, classes: usize) -> Splits {
    Splits::new(
        dataset(rows, features, classes, 1),
        dataset(rows / 2, features, classes, 2),
        dataset(rows / 2, features, classes, 3),
    )
    .unwrap()
}

/// Mean loss plus penalties of `layers` on `x`, computed in f64 from scratch.
fn loss_f64(
    layers: &[Vec<Vec<f64>>],
    biases: &[Vec<f64>],
    activation: Activation,
    penalty: Penalty,
    x: &[f32],
    labels: &[u32],
    features: usize,
) -> f64 {
    let act = |v: f64| match activation {
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Relu => v.max(0.0),
    };
    let mut total = 0.0;
    for (row, &label) in x.chunks(features).zip(labels) {
        let mut a: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        for (index, (weights, bias)) in layers.iter().zip(biases).enumerate() {
            let mut z = bias.clone();
            for (input, value) in a.iter().enumerate() {
                for (output, out) in z.iter_mut().enumerate() {
                    *out += value * weights[input][output];
                }
            }
            if index + 1 < layers.len() {
                z.iter_mut().for_each(|v| *v = act(*v));
            }
            a = z;
        }
        let max = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = a.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        total += log_sum - a[label as usize];
    }
    let mut penalty_sum = 0.0;
    for weights in layers {
        for w in weights.iter().flatten() {
            penalty_sum += penalty.l1 as f64 * w.abs() + penalty.l2 as f64 * w * w;
        }
    }
    total / labels.len() as f64 + penalty_sum
}

fn to_f64(layers: &[Dense]) -> (Vec<Vec<Vec<f64>>>, Vec<Vec<f64>>) {
    let weights = layers
        .iter()
        .map(|layer| {
            layer
                .weights
                .rows()
                .into_iter()
                .map(|row| row.iter().map(|&v| v as f64).collect())
                .collect()
        })
        .collect();
    let biases = layers
        .iter()
        .map(|layer| layer.bias.iter().map(|&v| v as f64).collect())
        .collect();
    (weights, biases)
}

/// Compares one SGD step with learning rate 1 (so the change is the
/// gradient) against central differences of the f64 loss.
fn check_gradients(hidden: &[usize], activation: Activation, penalty: Penalty) {
    let (features, classes, rows) = (5, 3, 7);
    let data = dataset(rows, features, classes, 11);
    let mut model = Mlp::new(vec![features], hidden, classes, activation, 5);
    // Non-zero biases so that every gradient term is exercised.
    for (index, layer) in model.layers.iter_mut().enumerate() {
        for (unit, bias) in layer.bias.iter_mut().enumerate() {
            *bias = 0.1 * (unit as f32 - 1.0) + 0.05 * index as f32;
        }
    }
    let setup = Setup::new(model.clone().into()).with_penalty(penalty);
    let mut network = Network::new(&setup);
    network.step(data.features_view(), data.labels(), 1.0);
    let after = network.model().to_layers();

    let (mut weights, mut biases) = to_f64(&model.layers);
    let loss = |weights: &[Vec<Vec<f64>>], biases: &[Vec<f64>]| {
        loss_f64(
            weights,
            biases,
            activation,
            penalty,
            data.features(),
            data.labels(),
            features,
        )
    };
    let step = 1e-6;
    let mut checked = 0;
    for layer in 0..model.layers.len() {
        let (inputs, outputs) = model.layers[layer].weights.dim();
        for input in 0..inputs {
            for output in 0..outputs {
                let original = weights[layer][input][output];
                weights[layer][input][output] = original + step;
                let up = loss(&weights, &biases);
                weights[layer][input][output] = original - step;
                let down = loss(&weights, &biases);
                weights[layer][input][output] = original;
                let numeric = (up - down) / (2.0 * step);
                let analytic = (model.layers[layer].weights[[input, output]]
                    - after[layer].weights[[input, output]]) as f64;
                assert!(
                    (numeric - analytic).abs() <= 2e-4 + 1e-3 * numeric.abs(),
                    "{activation} {hidden:?} layer {layer} weight [{input}, {output}]: numeric {numeric}, analytic {analytic}"
                );
                checked += 1;
            }
        }
        for output in 0..outputs {
            let original = biases[layer][output];
            biases[layer][output] = original + step;
            let up = loss(&weights, &biases);
            biases[layer][output] = original - step;
            let down = loss(&weights, &biases);
            biases[layer][output] = original;
            let numeric = (up - down) / (2.0 * step);
            let analytic = (model.layers[layer].bias[output] - after[layer].bias[output]) as f64;
            assert!(
                (numeric - analytic).abs() <= 2e-4 + 1e-3 * numeric.abs(),
                "{activation} {hidden:?} layer {layer} bias {output}: numeric {numeric}, analytic {analytic}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 18, "checked {checked} parameters");
}

#[test]
fn gradients_match_finite_differences_tanh() {
    check_gradients(&[4, 6], Activation::Tanh, Penalty::default());
}

#[test]
fn gradients_match_finite_differences_sigmoid() {
    check_gradients(&[4, 6], Activation::Sigmoid, Penalty::default());
}

#[test]
fn gradients_match_finite_differences_relu() {
    check_gradients(&[6, 4], Activation::Relu, Penalty::default());
}

#[test]
fn gradients_include_l1_and_l2_penalties() {
    check_gradients(&[4], Activation::Tanh, Penalty { l1: 0.01, l2: 0.05 });
}

#[test]
fn gradients_of_single_layer() {
    check_gradients(&[], Activation::Tanh, Penalty { l1: 0.0, l2: 0.02 });
}

#[test]
fn network_engine_matches_fused_logistic() {
    let splits = splits(300, 12, 4);
    let batches = Batch::split(300, 32, false);
    let mut fused = CpuBackend::new(&splits);
    fused.train_steps(&batches, 0.2).unwrap();
    let setup = Setup::classic(&splits);
    let mut network = Network::new(&setup);
    let train = &splits.train;
    for batch in &batches {
        let rows = batch.start..batch.start + batch.len;
        let x = train
            .features_view()
            .slice_move(ndarray::s![rows.clone(), ..]);
        network.step(x, &train.labels()[rows], 0.2);
    }
    let expected = fused.current_model().unwrap().into_logistic();
    let found = network.model().into_logistic();
    for (a, b) in expected.weights.iter().zip(found.weights.iter()) {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * a.abs(),
            "weights {a} and {b}"
        );
    }
    for (a, b) in expected.bias.iter().zip(found.bias.iter()) {
        assert!((a - b).abs() <= 1e-5 + 1e-4 * a.abs(), "bias {a} and {b}");
    }
    assert!(
        expected.weights.iter().any(|&w| w.abs() > 0.01),
        "training moved the weights"
    );
}

fn optimizers() -> Vec<Optimizer> {
    let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
    vec![
        Optimizer::Sgd,
        Optimizer::Momentum {
            momentum: 0.9,
            nesterov: false,
        },
        Optimizer::Momentum {
            momentum: 0.9,
            nesterov: true,
        },
        Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        },
        Optimizer::AdamW {
            beta1,
            beta2,
            epsilon,
            weight_decay: 0.01,
        },
    ]
}

#[test]
fn every_optimizer_learns_synthetic_task() {
    let splits = splits(600, 12, 4);
    for optimizer in optimizers() {
        let learning_rate = match optimizer {
            Optimizer::Sgd => 0.5,
            Optimizer::Momentum { .. } => 0.05,
            _ => 0.01,
        };
        let model = Mlp::new(vec![12], &[16], 4, Activation::Tanh, 3);
        let setup = Setup::new(model.into()).with_optimizer(optimizer);
        let mut backend = CpuBackend::with_setup(&splits, &setup).unwrap();
        let config = TrainConfig::default()
            .with_learning_rate(learning_rate)
            .with_batch_size(20)
            .with_epochs(30);
        let trained = Trainer::new(config)
            .unwrap()
            .fit(&splits, &mut backend, |_| {})
            .unwrap();
        let test_error = trained.report.test_error.unwrap();
        assert!(
            test_error < 0.12,
            "{}: test error {test_error}",
            optimizer.name()
        );
        let state = backend.optimizer_state().unwrap();
        assert_eq!(state.steps, 30 * 30, "{}", optimizer.name());
        let slots = optimizer.slots();
        assert_eq!(
            state.tensors[0].len(),
            12 * 16 * slots,
            "{}",
            optimizer.name()
        );
    }
}

#[test]
fn shuffle_orders_are_seeded_permutations() {
    let first = epoch_order(7, 1, 1000);
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    assert_eq!(first, epoch_order(7, 1, 1000), "same seed and epoch");
    assert_ne!(first, epoch_order(7, 2, 1000), "each epoch reshuffles");
    assert_ne!(first, epoch_order(8, 1, 1000), "the seed changes the order");
}

fn run(splits: &Splits, config: TrainConfig, setup: &Setup) -> (Model, wgpu_learn::TrainReport) {
    let mut backend = CpuBackend::with_setup(splits, setup).unwrap();
    let trained = Trainer::new(config)
        .unwrap()
        .fit(splits, &mut backend, |_| {})
        .unwrap();
    (backend.current_model().unwrap(), trained.report)
}

#[test]
fn shuffled_runs_repeat_with_same_seed() {
    let splits = splits(300, 12, 4);
    let setup = Setup::new(Mlp::new(vec![12], &[8], 4, Activation::Relu, 1).into());
    let config = TrainConfig::default()
        .with_batch_size(25)
        .with_epochs(3)
        .with_learning_rate(0.1);
    let (first, _) = run(&splits, config.clone().with_shuffle(5), &setup);
    let (again, _) = run(&splits, config.clone().with_shuffle(5), &setup);
    let (other_seed, _) = run(&splits, config.clone().with_shuffle(6), &setup);
    let (unshuffled, _) = run(&splits, config, &setup);
    assert_eq!(first, again);
    assert_ne!(first, other_seed);
    assert_ne!(first, unshuffled);
}

#[test]
fn shuffled_fused_logistic_matches_network_engine() {
    // The fused path gathers shuffled rows itself; the network engine
    // (forced by a zero-strength momentum) gathers them separately.
    let splits = splits(300, 12, 4);
    let config = TrainConfig::default()
        .with_batch_size(32)
        .with_epochs(2)
        .with_shuffle(3)
        .with_learning_rate(0.2);
    let (fused, _) = run(&splits, config.clone(), &Setup::classic(&splits));
    let network_setup = Setup::classic(&splits).with_optimizer(Optimizer::Momentum {
        momentum: 0.0,
        nesterov: false,
    });
    let (network, _) = run(&splits, config, &network_setup);
    let (fused, network) = (fused.into_logistic(), network.into_logistic());
    for (a, b) in fused.weights.iter().zip(network.weights.iter()) {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * a.abs(),
            "weights {a} and {b}"
        );
    }
}

#[test]
fn resumed_run_equals_unbroken_run() {
    let splits = splits(300, 12, 4);
    let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
    let setup = Setup::new(Mlp::new(vec![12], &[8], 4, Activation::Tanh, 2).into())
        .with_optimizer(Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        })
        .with_penalty(Penalty { l1: 1e-4, l2: 1e-3 });
    let config = TrainConfig::default()
        .with_batch_size(40)
        .with_learning_rate(0.01)
        .with_shuffle(9)
        .with_schedule(Schedule::Cosine { epochs: 4 });

    let (unbroken, unbroken_report) = run(&splits, config.clone().with_epochs(4), &setup);

    let mut first = CpuBackend::with_setup(&splits, &setup).unwrap();
    let half = Trainer::new(config.clone().with_epochs(2))
        .unwrap()
        .fit(&splits, &mut first, |_| {})
        .unwrap();
    let resumed_setup = Setup::new(first.current_model().unwrap())
        .with_optimizer(setup.optimizer)
        .with_penalty(setup.penalty)
        .with_state(first.optimizer_state().unwrap());
    let mut second = CpuBackend::with_setup(&splits, &resumed_setup).unwrap();
    let trainer = Trainer::new(config.with_epochs(4))
        .unwrap()
        .with_progress(half.progress.clone(), Some(half.model));
    let rest = trainer.fit(&splits, &mut second, |_| {}).unwrap();

    assert_eq!(second.current_model().unwrap(), unbroken);
    assert_eq!(rest.report.epochs, 4);
    assert_eq!(rest.report.iterations, unbroken_report.iterations);
    assert_eq!(
        rest.report.best_validation_error,
        unbroken_report.best_validation_error
    );
    assert_eq!(rest.report.test_error, unbroken_report.test_error);
}

#[test]
fn order_must_be_permutation() {
    let splits = splits(30, 4, 2);
    let mut backend = CpuBackend::new(&splits);
    let error = backend
        .set_train_order(Some(&[0, 1, 2]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("3 entries but the training set has 30 rows"),
        "{error}"
    );
    let mut repeated: Vec<u32> = (0..30).collect();
    repeated[5] = 4;
    let error = backend
        .set_train_order(Some(&repeated))
        .unwrap_err()
        .to_string();
    assert!(error.contains("entry 5 is 4"), "{error}");
    // Positive control: a permutation is accepted.
    let reversed: Vec<u32> = (0..30).rev().collect();
    assert!(backend.set_train_order(Some(&reversed)).is_ok());
}

#[test]
fn setup_rejects_state_of_wrong_size() {
    let splits = splits(30, 4, 2);
    let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
    let setup = Setup::new(LogisticRegression::zeros(vec![4], 2).into())
        .with_optimizer(Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        })
        .with_state(wgpu_learn::OptimizerState {
            steps: 3,
            tensors: vec![vec![0.0; 8], vec![0.0; 4]],
        });
    let error = CpuBackend::with_setup(&splits, &setup)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("lengths [8, 4]"), "{error}");
    assert!(error.contains("needs [16, 4]"), "{error}");
}

#[test]
fn mlp_evaluation_counts_errors() {
    let splits = splits(200, 6, 3);
    let model = Mlp::new(vec![6], &[5], 3, Activation::Sigmoid, 4);
    let mut backend = CpuBackend::with_setup(&splits, &Setup::new(model.clone().into())).unwrap();
    let batches = Batch::split(splits.test.len(), 30, false);
    let evaluation = backend.evaluate(Split::Test, &batches).unwrap();
    let expected = Model::from(model).error_rate(&splits.test).unwrap();
    assert_eq!(evaluation.rows, 100);
    assert!(
        (evaluation.error_rate() - expected).abs() < 1e-12,
        "{} vs {expected}",
        evaluation.error_rate()
    );
}

#[test]
fn network_results_do_not_depend_on_thread_count() {
    // 150 x 200 weights span several column blocks and update blocks.
    let splits = splits(120, 150, 4);
    let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
    let setup = Setup::new(Mlp::new(vec![150], &[200], 4, Activation::Tanh, 4).into())
        .with_optimizer(Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        })
        .with_penalty(Penalty { l1: 1e-4, l2: 1e-4 });
    let config = TrainConfig::default()
        .with_batch_size(30)
        .with_epochs(2)
        .with_learning_rate(0.01);
    let in_pool = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run(&splits, config.clone(), &setup).0)
    };
    let one = in_pool(1);
    assert_eq!(one, in_pool(3));
    assert_ne!(one, setup.model, "training moved the weights");
}

#[test]
fn run_interrupted_mid_epoch_resumes_exactly() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let splits = splits(320, 12, 4);
    let setup = Setup::new(Mlp::new(vec![12], &[8], 4, Activation::Sigmoid, 6).into())
        .with_optimizer(Optimizer::Momentum {
            momentum: 0.8,
            nesterov: false,
        });
    // 8 batches per epoch and a validation every 3 steps, so a stop can fall inside an epoch.
    let config = TrainConfig::default()
        .with_batch_size(40)
        .with_learning_rate(0.1)
        .with_validation_frequency(3)
        .with_shuffle(4)
        .with_epochs(3);
    let (unbroken, unbroken_report) = run(&splits, config.clone(), &setup);

    let stop = Arc::new(AtomicBool::new(false));
    let mut first = CpuBackend::with_setup(&splits, &setup).unwrap();
    let trainer = Trainer::new(config.clone())
        .unwrap()
        .with_stop_flag(stop.clone());
    let stopped = trainer
        .fit(&splits, &mut first, |event| {
            if let wgpu_learn::TrainEvent::StepsCompleted {
                epoch: 2, done: 4, ..
            } = event
            {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    assert!(stopped.report.interrupted);
    assert_eq!(
        (stopped.progress.epoch, stopped.progress.minibatch),
        (2, 4),
        "stopped after the validation at step 12"
    );

    let resumed_setup = Setup::new(first.current_model().unwrap())
        .with_optimizer(setup.optimizer)
        .with_state(first.optimizer_state().unwrap());
    let mut second = CpuBackend::with_setup(&splits, &resumed_setup).unwrap();
    let rest = Trainer::new(config)
        .unwrap()
        .with_progress(stopped.progress, Some(stopped.model))
        .fit(&splits, &mut second, |_| {})
        .unwrap();
    assert_eq!(second.current_model().unwrap(), unbroken);
    assert_eq!(rest.report.iterations, unbroken_report.iterations);
    assert_eq!(
        rest.report.best_validation_error,
        unbroken_report.best_validation_error
    );
    assert_eq!(rest.report.resumed_after_epochs, 1);
}
