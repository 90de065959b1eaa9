//! Each GPU kernel against the CPU operations in `wgpu_learn::cpu::ops`, on
//! seeded random inputs at sizes that are not multiples of the workgroup size.

mod common;

use common::{assert_close, gpu_or_skip, Rng};
use ndarray::{array, Array1, Array2};
use wgpu_learn::cpu::ops;
use wgpu_learn::gpu::{AdapterRequest, KernelRunner, StepKernels};

/// Shapes around the tile sizes (4 and 8 rows or parameter rows, 4
/// classes): the bias row falls at several positions of a parameter tile.
const ROWS: [usize; 5] = [1, 4, 7, 8, 601];
const FEATURES: [usize; 5] = [1, 3, 6, 784, 785];
const CLASSES: [usize; 5] = [1, 2, 4, 10, 17];

/// Sums of up to 785 products of values in [-1, 1] are summed sequentially
/// on the GPU and in blocks on the CPU. The two differ by rounding of at most
/// about 785 * 2^-24 * 785, so the absolute tolerance is 1e-3.
const SUM_ABSOLUTE: f32 = 1e-3;
const SUM_RELATIVE: f32 = 1e-4;

fn runner() -> Option<KernelRunner> {
    gpu_or_skip(KernelRunner::new(&AdapterRequest::any(), None))
}

fn matrix(rng: &mut Rng, rows: usize, columns: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_vec((rows, columns), rng.vec(rows * columns, -scale, scale)).unwrap()
}

#[test]
fn logits_match_cpu() {
    let Some(runner) = runner() else { return };
    logits_match_cpu_on(&runner, 1);
}

/// Checks the logits kernel of `runner` against the CPU operations on
/// random inputs drawn with `seed`.
fn logits_match_cpu_on(runner: &KernelRunner, seed: u64) {
    let mut rng = Rng::new(seed);
    for rows in ROWS {
        for features in FEATURES {
            for classes in CLASSES {
                let x = matrix(&mut rng, rows, features, 1.0);
                let w = matrix(&mut rng, features, classes, 1.0);
                let b = Array1::from(rng.vec(classes, -1.0, 1.0));
                let gpu = runner.logits(x.view(), w.view(), b.view()).unwrap();
                let cpu = ops::logits(x.view(), w.view(), b.view());
                let case = format!(
                    "logits {rows}x{features}x{classes}, {} kernels, workgroup {}",
                    runner.step_kernels().name(),
                    runner.workgroup_size()
                );
                assert_close(
                    &case,
                    gpu.as_slice().unwrap(),
                    cpu.as_slice().unwrap(),
                    SUM_RELATIVE,
                    SUM_ABSOLUTE,
                );
            }
        }
    }
}

/// Workgroup sizes for the split kernels: one invocation, sizes that are
/// not powers of two, the default and the largest whose partial sums fit
/// the 16 KiB of workgroup storage that WebGPU guarantees every device.
const SPLIT_WORKGROUP_SIZES: [u32; 5] = [1, 7, 48, 64, 128];

fn split_runner(workgroup_size: u32) -> KernelRunner {
    let runner = KernelRunner::with_step_kernels(
        &AdapterRequest::any(),
        Some(workgroup_size),
        StepKernels::Split,
    )
    .unwrap();
    assert_eq!(runner.step_kernels(), StepKernels::Split);
    runner
}

#[test]
fn split_logits_match_cpu() {
    if runner().is_none() {
        return;
    }
    for size in SPLIT_WORKGROUP_SIZES {
        logits_match_cpu_on(&split_runner(size), 20 + u64::from(size));
    }
}

#[test]
fn split_logits_repeat_exactly() {
    if runner().is_none() {
        return;
    }
    let runner = split_runner(48);
    let mut rng = Rng::new(22);
    let x = matrix(&mut rng, 601, 785, 1.0);
    let w = matrix(&mut rng, 785, 17, 1.0);
    let b = Array1::from(rng.vec(17, -1.0, 1.0));
    let first = runner.logits(x.view(), w.view(), b.view()).unwrap();
    let second = runner.logits(x.view(), w.view(), b.view()).unwrap();
    assert_eq!(first, second);
}

#[test]
fn kernels_match_on_two_dimensional_grids() {
    if runner().is_none() {
        return;
    }
    let mut rng = Rng::new(23);
    let (rows, features, classes) = (601, 785, 17);
    let x = matrix(&mut rng, rows, features, 1.0);
    let w = matrix(&mut rng, features, classes, 1.0);
    let b = Array1::from(rng.vec(classes, -1.0, 1.0));
    let gradient = matrix(&mut rng, rows, classes, 1.0 / rows as f32);
    let labels = rng.labels(rows, classes);
    for (kernels, size) in [
        (StepKernels::Tiles, 7),
        (StepKernels::Split, 7),
        (StepKernels::Split, 64),
    ] {
        let one_dimension =
            KernelRunner::with_step_kernels(&AdapterRequest::any(), Some(size), kernels).unwrap();
        // With at most 30 workgroups a dimension, every logits and update
        // dispatch here needs a second dimension, and so does the softmax
        // at workgroup size 7. Each leaves some workgroups past the last
        // tile. The largest, 755 workgroups of split logits, fits 30 x 30.
        let two_dimensions =
            KernelRunner::with_step_kernels(&AdapterRequest::any(), Some(size), kernels)
                .unwrap()
                .with_workgroups_per_dimension(30);
        let case = format!("{} kernels, workgroup {size}", kernels.name());
        let logits = |runner: &KernelRunner| runner.logits(x.view(), w.view(), b.view()).unwrap();
        assert_eq!(
            logits(&one_dimension),
            logits(&two_dimensions),
            "logits, {case}"
        );
        let update = |runner: &KernelRunner| {
            runner
                .sgd_update(x.view(), gradient.view(), w.view(), b.view(), 0.5, 1)
                .unwrap()
        };
        assert_eq!(
            update(&one_dimension),
            update(&two_dimensions),
            "update, {case}"
        );
        let softmax = |runner: &KernelRunner| {
            runner
                .softmax_nll(gradient.view(), &labels, 1.0, 1)
                .unwrap()
        };
        assert_eq!(
            softmax(&one_dimension),
            softmax(&two_dimensions),
            "softmax, {case}"
        );
        let errors = |runner: &KernelRunner| {
            runner
                .count_errors(x.view(), w.view(), b.view(), &labels)
                .unwrap()
        };
        assert_eq!(
            errors(&one_dimension),
            errors(&two_dimensions),
            "errors, {case}"
        );
    }
}

#[test]
fn auto_step_kernels_follow_device_type() {
    let Some(runner) = gpu_or_skip(KernelRunner::with_step_kernels(
        &AdapterRequest::any(),
        None,
        StepKernels::Auto,
    )) else {
        return;
    };
    let expected = if runner.context().adapter().device_type == wgpu::DeviceType::Cpu {
        StepKernels::Tiles
    } else {
        StepKernels::Split
    };
    assert_eq!(runner.step_kernels(), expected);
}

#[test]
fn logits_same_for_any_workgroup_size() {
    let Some(default_runner) = runner() else {
        return;
    };
    let mut rng = Rng::new(2);
    let x = matrix(&mut rng, 601, 785, 1.0);
    let w = matrix(&mut rng, 785, 17, 1.0);
    let b = Array1::from(rng.vec(17, -1.0, 1.0));
    let expected = default_runner.logits(x.view(), w.view(), b.view()).unwrap();
    for size in [1, 7, 256] {
        let runner = KernelRunner::new(&AdapterRequest::any(), Some(size)).unwrap();
        assert_eq!(runner.workgroup_size(), size);
        let logits = runner.logits(x.view(), w.view(), b.view()).unwrap();
        assert_eq!(logits, expected, "workgroup size {size} changed the logits");
    }
}

#[test]
fn softmax_nll_matches_cpu() {
    let Some(runner) = runner() else { return };
    let mut rng = Rng::new(3);
    // Scale 1000 puts logits near +-1000, where exp overflows unless the
    // row maximum is subtracted first.
    for scale in [1.0, 30.0, 1000.0] {
        for rows in ROWS {
            for classes in CLASSES {
                let logits = matrix(&mut rng, rows, classes, scale);
                let labels = rng.labels(rows, classes);
                let loss_scale = 1.0 / rows as f32;
                let gpu = runner
                    .softmax_nll(logits.view(), &labels, loss_scale, 5)
                    .unwrap();
                let mut cpu_gradient = logits.clone();
                let cpu_losses =
                    ops::softmax_nll_grad_in_place(cpu_gradient.view_mut(), &labels, loss_scale);
                let what = format!("scale {scale}, {rows}x{classes}");
                // Exponentials and logarithms differ by a few ulps between
                // the GPU and the CPU's libm.
                assert_close(
                    &format!("gradient, {what}"),
                    gpu.gradient.as_slice().unwrap(),
                    cpu_gradient.as_slice().unwrap(),
                    1e-4,
                    1e-6,
                );
                assert_close(
                    &format!("losses, {what}"),
                    &gpu.losses,
                    &cpu_losses,
                    1e-5,
                    1e-4,
                );
                assert_eq!(
                    gpu.first_non_finite_step, None,
                    "{what}: all losses are finite"
                );
            }
        }
    }
}

#[test]
fn softmax_extreme_rows_stay_finite() {
    let Some(runner) = runner() else { return };
    let logits = array![
        [90.0f32, 2.0, -2.0],
        [1000.0, 0.0, -1000.0],
        [-1000.0, -1000.0, -1000.0]
    ];
    let labels = [0u32, 0, 0];
    let gpu = runner.softmax_nll(logits.view(), &labels, 1.0, 0).unwrap();
    // With scale 1 the gradient is softmax - onehot, so adding the one-hot
    // label back gives the probabilities.
    let mut probabilities = gpu.gradient.clone();
    for (row, &label) in labels.iter().enumerate() {
        probabilities[[row, label as usize]] += 1.0;
    }
    let expected = ops::softmax(logits.view());
    assert!(
        probabilities.iter().all(|p| p.is_finite()),
        "{probabilities:?}"
    );
    assert_close(
        "probabilities",
        probabilities.as_slice().unwrap(),
        expected.as_slice().unwrap(),
        1e-6,
        1e-6,
    );
    assert_eq!(probabilities[[1, 0]], 1.0);
    assert_eq!(probabilities[[1, 2]], 0.0);
    assert!(
        gpu.losses.iter().all(|loss| loss.is_finite()),
        "{:?}",
        gpu.losses
    );
    // lavapipe's log is off by about 2e-5 at 3 (measured), more than the
    // 3 ulp that Vulkan requires outside [0.5, 2].
    assert_close("losses", &gpu.losses, &[0.0, 0.0, 3.0f32.ln()], 0.0, 1e-4);
    assert_eq!(gpu.first_non_finite_step, None);
}

#[test]
fn nll_of_large_margin_is_finite() {
    let Some(runner) = runner() else { return };
    let gpu = runner
        .softmax_nll(array![[0.0f32, 120.0]].view(), &[0], 1.0, 0)
        .unwrap();
    assert_eq!(gpu.losses, vec![120.0]);
    assert_eq!(gpu.gradient, array![[-1.0f32, 1.0]]);
    assert_eq!(gpu.first_non_finite_step, None);
}

#[test]
fn softmax_nll_flags_non_finite_loss() {
    let Some(runner) = runner() else { return };
    let finite = runner
        .softmax_nll(array![[1.0f32, 2.0]].view(), &[0], 1.0, 42)
        .unwrap();
    assert_eq!(
        finite.first_non_finite_step, None,
        "positive control: finite logits"
    );
    let infinite = runner
        .softmax_nll(
            array![[1.0f32, 2.0], [f32::INFINITY, 0.0]].view(),
            &[0, 1],
            1.0,
            42,
        )
        .unwrap();
    assert_eq!(infinite.first_non_finite_step, Some(42));
}

#[test]
fn sgd_update_matches_cpu() {
    let Some(runner) = runner() else { return };
    sgd_update_matches_cpu_on(&runner, 4);
}

#[test]
fn split_sgd_update_matches_cpu() {
    if runner().is_none() {
        return;
    }
    for size in SPLIT_WORKGROUP_SIZES {
        sgd_update_matches_cpu_on(&split_runner(size), 40 + u64::from(size));
    }
}

/// Checks the update kernel of `runner` against the CPU operations on
/// random inputs drawn with `seed`.
fn sgd_update_matches_cpu_on(runner: &KernelRunner, seed: u64) {
    let mut rng = Rng::new(seed);
    let learning_rate = 0.5;
    for rows in ROWS {
        for features in FEATURES {
            for classes in CLASSES {
                let x = matrix(&mut rng, rows, features, 1.0);
                let gradient = matrix(&mut rng, rows, classes, 1.0 / rows as f32);
                let w = matrix(&mut rng, features, classes, 1.0);
                let b = Array1::from(rng.vec(classes, -1.0, 1.0));
                let gpu = runner
                    .sgd_update(
                        x.view(),
                        gradient.view(),
                        w.view(),
                        b.view(),
                        learning_rate,
                        3,
                    )
                    .unwrap();
                let (weight_gradient, bias_gradient) = ops::weight_grad(x.view(), gradient.view());
                let (mut cpu_w, mut cpu_b) = (w.clone(), b.clone());
                ops::sgd_update(
                    cpu_w.view_mut(),
                    cpu_b.view_mut(),
                    weight_gradient.view(),
                    bias_gradient.view(),
                    learning_rate,
                );
                let case = format!(
                    "{rows}x{features}x{classes}, {} kernels, workgroup {}",
                    runner.step_kernels().name(),
                    runner.workgroup_size()
                );
                // Each gradient sums `rows` products of magnitude at most
                // 1/rows, so the sum is at most 1 and 1e-5 covers rounding.
                assert_close(
                    &format!("weights {case}"),
                    gpu.weights.as_slice().unwrap(),
                    cpu_w.as_slice().unwrap(),
                    1e-5,
                    1e-5,
                );
                assert_close(
                    &format!("bias {case}"),
                    gpu.bias.as_slice().unwrap(),
                    cpu_b.as_slice().unwrap(),
                    1e-5,
                    1e-5,
                );
                assert_eq!(gpu.first_non_finite_step, None, "{case}");
            }
        }
    }
}

#[test]
fn sgd_update_flags_non_finite_parameter() {
    let Some(runner) = runner() else { return };
    sgd_update_flags_non_finite_parameter_on(&runner);
}

#[test]
fn split_sgd_update_flags_non_finite_parameter() {
    if runner().is_none() {
        return;
    }
    for size in [1, 7, 48, 64] {
        sgd_update_flags_non_finite_parameter_on(&split_runner(size));
    }
}

fn sgd_update_flags_non_finite_parameter_on(runner: &KernelRunner) {
    // The weight gradient's first entry is 4 * 0.5 + 2 * -0.25 = 1.5, and
    // 1.5 * f32::MAX overflows to infinity.
    let x = array![[4.0f32, -4.0], [2.0, 8.0]];
    let gradient = array![[0.5f32, -0.5], [-0.25, 0.25]];
    let w = Array2::<f32>::zeros((2, 2));
    let b = Array1::<f32>::zeros(2);
    let small = runner
        .sgd_update(x.view(), gradient.view(), w.view(), b.view(), 0.1, 9)
        .unwrap();
    assert_eq!(
        small.first_non_finite_step, None,
        "positive control: small learning rate"
    );
    let huge = runner
        .sgd_update(x.view(), gradient.view(), w.view(), b.view(), f32::MAX, 9)
        .unwrap();
    assert!(
        huge.weights.iter().any(|w| !w.is_finite()),
        "{:?}",
        huge.weights
    );
    assert_eq!(huge.first_non_finite_step, Some(9));

    // Zero features leave the weights at 0, and the first bias gradient,
    // 2 + 2 = 4, overflows alone.
    let zeros = Array2::<f32>::zeros((2, 2));
    let gradient = array![[2.0f32, 0.0], [2.0, 0.0]];
    let bias_only = runner
        .sgd_update(
            zeros.view(),
            gradient.view(),
            w.view(),
            b.view(),
            f32::MAX,
            11,
        )
        .unwrap();
    assert!(
        bias_only.weights.iter().all(|w| *w == 0.0),
        "{:?}",
        bias_only.weights
    );
    assert_eq!(bias_only.bias[0], f32::NEG_INFINITY);
    assert_eq!(bias_only.first_non_finite_step, Some(11));
}

#[test]
fn count_errors_matches_cpu() {
    let Some(runner) = runner() else { return };
    let mut rng = Rng::new(5);
    for rows in ROWS {
        for features in FEATURES {
            for classes in CLASSES {
                let x = matrix(&mut rng, rows, features, 1.0);
                let w = matrix(&mut rng, features, classes, 1.0);
                let b = Array1::from(rng.vec(classes, -1.0, 1.0));
                let labels = rng.labels(rows, classes);
                let gpu = runner
                    .count_errors(x.view(), w.view(), b.view(), &labels)
                    .unwrap();
                let cpu =
                    ops::count_errors(ops::logits(x.view(), w.view(), b.view()).view(), &labels);
                // NOTE: a row whose two largest logits are within rounding of
                // each other could be counted differently. Random logits of
                // this spread make that unlikely, and these seeds have none.
                assert_eq!(gpu, cpu, "errors for {rows}x{features}x{classes}");
            }
        }
    }
}

#[test]
fn argmax_ties_and_nan_match_cpu() {
    let Some(runner) = runner() else { return };
    let rows = [
        [1.0f32, 3.0, 3.0],
        [2.0, 2.0, 2.0],
        [f32::NAN, 0.5, 0.1],
        [f32::NAN, f32::NAN, f32::NAN],
        [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY],
        [f32::NAN, f32::NEG_INFINITY, -1.0],
        [-5.0, f32::INFINITY, f32::INFINITY],
    ];
    // With one feature equal to 1 and zero weights, the logits are the bias.
    let x = array![[1.0f32]];
    let w = Array2::<f32>::zeros((1, 3));
    for row in rows {
        let expected =
            ops::argmax_rows(Array2::from_shape_vec((1, 3), row.to_vec()).unwrap().view())[0];
        let bias = Array1::from(row.to_vec());
        for label in 0..3u32 {
            let errors = runner
                .count_errors(x.view(), w.view(), bias.view(), &[label])
                .unwrap();
            assert_eq!(
                errors,
                (label != expected) as u64,
                "row {row:?}, label {label}, cpu argmax {expected}"
            );
        }
    }
}
