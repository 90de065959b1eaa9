//! The mathematics of training on the CPU, on ndarray arrays.
//!
//! These functions are the reference that the GPU kernels are tested
//! against, and the CPU backend is built from them. Work is split over rayon
//! in blocks of [`ROW_BLOCK`] rows, and partial sums are combined in block
//! order, so results do not depend on the number of threads.
//!
//! Layouts: features `x` are `n x d`, weights are `d x k`, bias and logits
//! rows have `k` entries, one per class.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

/// Rows per rayon task. Fixed, so that sums are grouped the same way on any
/// number of threads.
pub const ROW_BLOCK: usize = 128;

/// Computes `x · weights + bias`, an `n x k` matrix of logits.
pub fn logits(
    x: ArrayView2<'_, f32>,
    weights: ArrayView2<'_, f32>,
    bias: ArrayView1<'_, f32>,
) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows(), weights.ncols()));
    out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(0), ROW_BLOCK).into_par_iter())
        .for_each(|(mut out_block, x_block)| {
            ndarray::linalg::general_mat_mul(1.0, &x_block, &weights, 0.0, &mut out_block);
            out_block += &bias;
        });
    out
}

/// Replaces each row of logits by its softmax, computed as
/// `exp(z - max(z)) / sum(exp(z - max(z)))` so that no exponent overflows.
pub fn softmax_in_place(mut logits: ArrayViewMut2<'_, f32>) {
    logits
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let max = row_max(row.view());
            row.mapv_inplace(|z| (z - max).exp());
            let sum: f32 = row.iter().sum();
            row.mapv_inplace(|e| e / sum);
        });
}

/// Returns the row-wise softmax of `logits`.
pub fn softmax(logits: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut probabilities = logits.to_owned();
    softmax_in_place(probabilities.view_mut());
    probabilities
}

/// Fused softmax and negative log-likelihood with its gradient.
///
/// On return `logits` holds the gradient of `scale * sum(loss)` with respect
/// to the logits, `(softmax(z) - onehot(label)) * scale`; the function returns
/// each row's loss `logsumexp(z) - z[label]`. Training passes
/// `scale = 1 / rows` so that the gradient is that of the mean loss.
///
/// # Panics
/// If `labels.len() != logits.nrows()` or a label is not below `logits.ncols()`.
pub fn softmax_nll_grad_in_place(
    mut logits: ArrayViewMut2<'_, f32>,
    labels: &[u32],
    scale: f32,
) -> Vec<f32> {
    assert_eq!(labels.len(), logits.nrows(), "one label per row");
    let mut losses = vec![0.0f32; labels.len()];
    logits
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(losses.par_iter_mut())
        .zip(labels.par_iter())
        .for_each(|((row, loss), &label)| {
            *loss = softmax_nll_grad_row(row, label as usize, scale);
        });
    losses
}

fn softmax_nll_grad_row(mut row: ArrayViewMut1<'_, f32>, label: usize, scale: f32) -> f32 {
    let max = row_max(row.view());
    let sum: f32 = row.iter().map(|&z| (z - max).exp()).sum();
    let log_sum = sum.ln();
    let loss = max + log_sum - row[label];
    row.mapv_inplace(|z| (z - max - log_sum).exp() * scale);
    row[label] -= scale;
    loss
}

/// Returns the weight gradient `xᵀ · grad` (`d x k`) and the bias gradient,
/// the column sums of `grad` (`k`).
///
/// Rows are summed per block of [`ROW_BLOCK`] rows, then the block sums in
/// order, so the result is the same on any number of threads.
pub fn weight_grad(
    x: ArrayView2<'_, f32>,
    grad: ArrayView2<'_, f32>,
) -> (Array2<f32>, Array1<f32>) {
    assert_eq!(x.nrows(), grad.nrows(), "x and grad need the same rows");
    let partials: Vec<(Array2<f32>, Array1<f32>)> = x
        .axis_chunks_iter(Axis(0), ROW_BLOCK)
        .into_par_iter()
        .zip(grad.axis_chunks_iter(Axis(0), ROW_BLOCK).into_par_iter())
        .map(|(x_block, grad_block)| (x_block.t().dot(&grad_block), grad_block.sum_axis(Axis(0))))
        .collect();
    let mut weight = Array2::<f32>::zeros((x.ncols(), grad.ncols()));
    let mut bias = Array1::<f32>::zeros(grad.ncols());
    for (block_weight, block_bias) in &partials {
        weight += block_weight;
        bias += block_bias;
    }
    (weight, bias)
}

/// Applies one SGD step: `param -= learning_rate * grad` for weights and bias.
pub fn sgd_update(
    mut weights: ArrayViewMut2<'_, f32>,
    mut bias: ArrayViewMut1<'_, f32>,
    weight_grad: ArrayView2<'_, f32>,
    bias_grad: ArrayView1<'_, f32>,
    learning_rate: f32,
) {
    Zip::from(&mut weights)
        .and(&weight_grad)
        .for_each(|w, &g| *w -= learning_rate * g);
    Zip::from(&mut bias)
        .and(&bias_grad)
        .for_each(|b, &g| *b -= learning_rate * g);
}

/// Returns the index of the largest value in each row; the first one wins a
/// tie, as numpy's `argmax` does. NaN entries are never chosen over a number.
pub fn argmax_rows(logits: ArrayView2<'_, f32>) -> Vec<u32> {
    let mut out = vec![0u32; logits.nrows()];
    out.par_iter_mut()
        .zip(logits.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(index, row)| *index = argmax(row));
    out
}

/// Counts rows whose argmax differs from the label.
pub fn count_errors(logits: ArrayView2<'_, f32>, labels: &[u32]) -> u64 {
    assert_eq!(labels.len(), logits.nrows(), "one label per row");
    logits
        .axis_iter(Axis(0))
        .into_par_iter()
        .zip(labels.par_iter())
        .filter(|(row, &label)| argmax(row.view()) != label)
        .count() as u64
}

/// Runs one SGD step on a minibatch and returns the mean loss.
///
/// This is [`logits`], [`softmax_nll_grad_in_place`] with `scale = 1/rows`,
/// [`weight_grad`] and [`sgd_update`] in sequence.
pub fn sgd_step(
    x: ArrayView2<'_, f32>,
    labels: &[u32],
    mut weights: ArrayViewMut2<'_, f32>,
    mut bias: ArrayViewMut1<'_, f32>,
    learning_rate: f32,
) -> f32 {
    let rows = x.nrows();
    let mut grad = logits(x, weights.view(), bias.view());
    let losses = softmax_nll_grad_in_place(grad.view_mut(), labels, 1.0 / rows as f32);
    let (weight_gradient, bias_gradient) = weight_grad(x, grad.view());
    sgd_update(
        weights.view_mut(),
        bias.view_mut(),
        weight_gradient.view(),
        bias_gradient.view(),
        learning_rate,
    );
    losses.iter().map(|&l| l as f64).sum::<f64>() as f32 / rows as f32
}

fn row_max(row: ArrayView1<'_, f32>) -> f32 {
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

fn argmax(row: ArrayView1<'_, f32>) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (index, &value) in row.iter().enumerate() {
        if value > best_value {
            best = index;
            best_value = value;
        }
    }
    best as u32
}

/// Returns rows `start..start + len` of `x`.
pub fn rows(x: ArrayView2<'_, f32>, start: usize, len: usize) -> ArrayView2<'_, f32> {
    x.slice_move(s![start..start + len, ..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_is_finite_for_extreme_logits() {
        let logits = array![
            [90.0f32, 2.0, -2.0],
            [1000.0, 0.0, -1000.0],
            [-1000.0, -1000.0, -1000.0]
        ];
        let p = softmax(logits.view());
        assert!(p.iter().all(|v| v.is_finite()));
        assert!((p[[0, 0]] - 1.0).abs() < 1e-6);
        assert!(p[[0, 1]] > 0.0);
        assert!((p[[0, 1]] - (-88.0f32).exp()).abs() < 1e-40);
        assert_eq!(p[[1, 0]], 1.0);
        assert_eq!(p[[1, 2]], 0.0);
        for v in p.row(2) {
            assert!((v - 1.0 / 3.0).abs() < 1e-6);
        }
    }

    #[test]
    fn nll_uses_log_sum_exp() {
        let mut logits = array![[0.0f32, 120.0]];
        let losses = softmax_nll_grad_in_place(logits.view_mut(), &[0], 1.0);
        assert_eq!(losses, vec![120.0]);
        assert_eq!(logits, array![[-1.0f32, 1.0]]);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        let logits = array![[1.0f32, 3.0, 3.0], [2.0, 2.0, 2.0], [f32::NAN, 0.5, 0.1]];
        assert_eq!(argmax_rows(logits.view()), vec![1, 0, 1]);
        assert_eq!(count_errors(logits.view(), &[2, 0, 1]), 1);
    }

    #[test]
    fn weight_grad_matches_plain_loops() {
        let n = 300;
        let (d, k) = (5, 3);
        let x = Array2::from_shape_fn((n, d), |(r, c)| ((r * 7 + c * 3) % 11) as f32 / 11.0 - 0.4);
        let g = Array2::from_shape_fn((n, k), |(r, c)| ((r * 5 + c) % 13) as f32 / 13.0 - 0.5);
        let (w, b) = weight_grad(x.view(), g.view());
        for i in 0..d {
            for j in 0..k {
                let expected: f64 = (0..n).map(|r| x[[r, i]] as f64 * g[[r, j]] as f64).sum();
                assert!((w[[i, j]] as f64 - expected).abs() < 1e-4, "w[{i},{j}]");
            }
        }
        for j in 0..k {
            let expected: f64 = (0..n).map(|r| g[[r, j]] as f64).sum();
            assert!((b[j] as f64 - expected).abs() < 1e-4, "b[{j}]");
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let n = 1000;
        let (d, k) = (37, 4);
        let x = Array2::from_shape_fn((n, d), |(r, c)| (((r * 31 + c * 17) % 97) as f32).sin());
        let labels: Vec<u32> = (0..n as u32).map(|r| r % k as u32).collect();
        let run = |threads: usize| {
            crate::cpu::with_threads(threads, || {
                let mut w = Array2::<f32>::zeros((d, k));
                let mut b = Array1::<f32>::zeros(k);
                for _ in 0..3 {
                    sgd_step(x.view(), &labels, w.view_mut(), b.view_mut(), 0.5);
                }
                (w, b)
            })
        };
        let (w1, b1) = run(1);
        let (w3, b3) = run(3);
        assert_eq!(w1, w3);
        assert_eq!(b1, b3);
        assert!(
            w1.iter().any(|&v| v != 0.0),
            "the steps must change the weights"
        );
    }
}
