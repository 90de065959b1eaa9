//! The CPU training step, fused and vectorised.
//!
//! Weights are kept classes-major (`k x d`, `wt[c * d + i]`), so that every
//! inner loop runs over features, where lanes are never wasted on a small
//! class count. A minibatch is cut into blocks of [`BLOCK_ROWS`] rows. Each
//! rayon task computes its block's logits, softmax gradient and weight
//! gradient while the rows are in cache. The block gradients are then added
//! in block order. Every sum uses [`LANES`] accumulators combined in a fixed
//! order and `mul_add`, so results are bit-identical on any number of threads
//! and with or without AVX2: only speed depends on the instruction set.

use rayon::prelude::*;

/// Rows per rayon task; fixed so that sums do not depend on the thread count.
pub const BLOCK_ROWS: usize = 64;

/// Accumulators per dot product; features `i` and `i + LANES` share one.
pub const LANES: usize = 8;

type Lanes = [f32; LANES];

/// A stored feature value: f32 as it is, or a byte `b` standing for the
/// exact f32 `b / 256` (see [`crate::data::bytes`]). The kernels convert as
/// they load, so both give bit-identical results.
pub trait Element: Copy + Send + Sync + 'static {
    /// Returns the feature as f32.
    fn value(self) -> f32;

    /// Loads eight features from `pointer` as f32 lanes, equal to
    /// [`Element::value`] of each.
    ///
    /// # Safety
    /// `pointer` must be valid for reading eight elements, and the CPU must
    /// support AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(pointer: *const Self) -> std::arch::x86_64::__m256;
}

impl Element for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(pointer: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees eight readable values and AVX.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(pointer) }
    }
}

impl Element for u8 {
    #[inline(always)]
    fn value(self) -> f32 {
        f32::from(self) * (1.0 / 256.0)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(pointer: *const u8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees eight readable bytes and AVX2. Bytes
        // widen to i32 and convert to f32 exactly; the product with 1/256 is
        // exact too, as in `value`.
        unsafe {
            let bytes = _mm_loadl_epi64(pointer.cast::<__m128i>());
            _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)),
                _mm256_set1_ps(1.0 / 256.0),
            )
        }
    }
}

/// Classes-major parameters of logistic regression.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedParams {
    /// Features per row.
    pub d: usize,
    /// Classes.
    pub k: usize,
    /// `k x d` weights, `wt[c * d + i]`.
    pub wt: Vec<f32>,
    /// `k` biases.
    pub bias: Vec<f32>,
}

impl FusedParams {
    /// All-zero parameters for `d` features and `k` classes.
    pub fn zeros(d: usize, k: usize) -> Self {
        FusedParams {
            d,
            k,
            wt: vec![0.0; d * k],
            bias: vec![0.0; k],
        }
    }

    /// Checks that every weight and bias is finite.
    pub fn is_finite(&self) -> bool {
        self.wt.iter().chain(&self.bias).all(|v| v.is_finite())
    }
}

/// Runs one SGD step on `rows` rows of `x` (row-major, `rows x d`) and
/// returns the mean loss (NaN or infinite if a row's loss is not finite).
///
/// Allocates its buffers for this one step; [`sgd_step_with`] reuses them.
pub fn sgd_step<T: Element>(
    params: &mut FusedParams,
    x: &[T],
    labels: &[u32],
    learning_rate: f32,
) -> f32 {
    sgd_step_with(
        &mut StepScratch::default(),
        params,
        x,
        labels,
        learning_rate,
    )
}

/// Buffers that [`sgd_step_with`] keeps from one step to the next, so that a
/// training loop does not allocate per minibatch.
#[derive(Debug, Default)]
pub struct StepScratch {
    blocks: Vec<BlockScratch>,
    weight_grad: Vec<f32>,
    bias_grad: Vec<f32>,
}

/// One rayon task's logits gradient and share of the parameter gradients.
#[derive(Debug, Default)]
struct BlockScratch {
    grad: Vec<f32>,
    weight_grad: Vec<f32>,
    bias_grad: Vec<f32>,
    loss: f64,
}

/// Runs [`sgd_step`] with buffers kept in `scratch`; the result is the same.
pub fn sgd_step_with<T: Element>(
    scratch: &mut StepScratch,
    params: &mut FusedParams,
    x: &[T],
    labels: &[u32],
    learning_rate: f32,
) -> f32 {
    let (d, k) = (params.d, params.k);
    let rows = labels.len();
    assert_eq!(x.len(), rows * d, "x must hold rows x d values");
    let scale = 1.0 / rows as f32;
    scratch
        .blocks
        .resize_with(rows.div_ceil(BLOCK_ROWS), BlockScratch::default);
    let blocks = &mut scratch.blocks[..rows.div_ceil(BLOCK_ROWS)];

    // Each block: logits, softmax gradient, then its share of the gradients.
    let params_view = &*params;
    blocks
        .par_iter_mut()
        .zip(x.par_chunks(BLOCK_ROWS * d))
        .zip(labels.par_chunks(BLOCK_ROWS))
        .for_each(|((block, x_block), label_block)| {
            block.grad.resize(label_block.len() * k, 0.0);
            logits(params_view, x_block, &mut block.grad);
            block.loss = 0.0;
            for (row, &label) in block.grad.chunks_exact_mut(k).zip(label_block) {
                block.loss += softmax_nll_grad(row, label as usize, scale) as f64;
            }
            zero(&mut block.weight_grad, k * d);
            zero(&mut block.bias_grad, k);
            accumulate_gradient(
                x_block,
                &block.grad,
                d,
                k,
                &mut block.weight_grad,
                &mut block.bias_grad,
            );
        });

    // Add the block gradients in block order and apply the update.
    zero(&mut scratch.weight_grad, k * d);
    zero(&mut scratch.bias_grad, k);
    let mut loss = 0.0f64;
    for block in blocks.iter() {
        add_into(&mut scratch.weight_grad, &block.weight_grad);
        add_into(&mut scratch.bias_grad, &block.bias_grad);
        loss += block.loss;
    }
    for (w, g) in params.wt.iter_mut().zip(&scratch.weight_grad) {
        *w -= learning_rate * g;
    }
    for (b, g) in params.bias.iter_mut().zip(&scratch.bias_grad) {
        *b -= learning_rate * g;
    }
    (loss / rows as f64) as f32
}

/// Sets `buffer` to `len` zeros, reusing its allocation.
fn zero(buffer: &mut Vec<f32>, len: usize) {
    buffer.clear();
    buffer.resize(len, 0.0);
}

/// Counts the rows of `x` whose argmax (first maximum on ties, NaN never
/// chosen) differs from the label.
pub fn count_errors<T: Element>(params: &FusedParams, x: &[T], labels: &[u32]) -> u64 {
    let (d, k) = (params.d, params.k);
    x.par_chunks(BLOCK_ROWS * d)
        .zip(labels.par_chunks(BLOCK_ROWS))
        .map(|(x_block, label_block)| {
            let mut out = vec![0.0f32; label_block.len() * k];
            logits(params, x_block, &mut out);
            out.chunks_exact(k)
                .zip(label_block)
                .filter(|(row, &label)| argmax(row) != label as usize)
                .count() as u64
        })
        .sum()
}

/// Writes the logits of the rows of `x` into `out` (`rows x k`).
pub fn logits<T: Element>(params: &FusedParams, x: &[T], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features that the function enables.
            unsafe { logits_avx2(params, x, out) };
            return;
        }
    }
    logits_portable(params, x, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logits_avx2<T: Element>(params: &FusedParams, x: &[T], out: &mut [f32]) {
    // Same tiles and the same arithmetic as `logits_portable`, written with
    // intrinsics so that the accumulators stay in registers.
    let (d, k) = (params.d, params.k);
    let rows = x.len() / d;
    let mut row = 0;
    while row < rows {
        let pair = (rows - row).min(2);
        let mut class = 0;
        while class < k {
            let group = (k - class).min(5);
            // SAFETY: the CPU supports AVX2 and FMA (checked by the caller),
            // and the tile stays inside the rows and classes.
            unsafe {
                match (pair, group) {
                    (2, 5) => logits_tile_avx2::<T, 2, 5>(params, x, out, row, class),
                    (2, 4) => logits_tile_avx2::<T, 2, 4>(params, x, out, row, class),
                    (2, 3) => logits_tile_avx2::<T, 2, 3>(params, x, out, row, class),
                    (2, 2) => logits_tile_avx2::<T, 2, 2>(params, x, out, row, class),
                    (2, _) => logits_tile_avx2::<T, 2, 1>(params, x, out, row, class),
                    (_, 5) => logits_tile_avx2::<T, 1, 5>(params, x, out, row, class),
                    (_, 4) => logits_tile_avx2::<T, 1, 4>(params, x, out, row, class),
                    (_, 3) => logits_tile_avx2::<T, 1, 3>(params, x, out, row, class),
                    (_, 2) => logits_tile_avx2::<T, 1, 2>(params, x, out, row, class),
                    (_, _) => logits_tile_avx2::<T, 1, 1>(params, x, out, row, class),
                }
            }
            class += group;
        }
        row += pair;
    }
}

/// [`logits_tile`] with AVX2 intrinsics: the same lanes, the same fused
/// multiply-adds in the same order, so the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logits_tile_avx2<T: Element, const R: usize, const C: usize>(
    params: &FusedParams,
    x: &[T],
    out: &mut [f32],
    row: usize,
    class: usize,
) {
    use std::arch::x86_64::*;
    let (d, k) = (params.d, params.k);
    let x_rows: [&[T]; R] = std::array::from_fn(|r| &x[(row + r) * d..(row + r + 1) * d]);
    let w_rows: [&[f32]; C] =
        std::array::from_fn(|c| &params.wt[(class + c) * d..(class + c + 1) * d]);
    let full = d / LANES * LANES;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut start = 0;
    while start < full {
        // SAFETY: start + LANES <= full <= d, the length of every row slice.
        let xs: [__m256; R] =
            std::array::from_fn(|r| unsafe { T::load8(x_rows[r].as_ptr().add(start)) });
        for c in 0..C {
            // SAFETY: as above.
            let w = unsafe { _mm256_loadu_ps(w_rows[c].as_ptr().add(start)) };
            for r in 0..R {
                acc[r][c] = _mm256_fmadd_ps(xs[r], w, acc[r][c]);
            }
        }
        start += LANES;
    }
    for r in 0..R {
        for c in 0..C {
            let mut lanes = [0.0f32; LANES];
            // SAFETY: `lanes` has room for LANES floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][c]) };
            for i in full..d {
                lanes[i - full] = x_rows[r][i].value().mul_add(w_rows[c][i], lanes[i - full]);
            }
            out[(row + r) * k + class + c] = sum_lanes(&lanes) + params.bias[class + c];
        }
    }
}

#[inline(always)]
fn logits_portable<T: Element>(params: &FusedParams, x: &[T], out: &mut [f32]) {
    let (d, k) = (params.d, params.k);
    let rows = x.len() / d;
    let mut row = 0;
    while row < rows {
        let pair = (rows - row).min(2);
        let mut class = 0;
        while class < k {
            let group = (k - class).min(5);
            match (pair, group) {
                (2, 5) => logits_tile::<T, 2, 5>(params, x, out, row, class),
                (2, 4) => logits_tile::<T, 2, 4>(params, x, out, row, class),
                (2, 3) => logits_tile::<T, 2, 3>(params, x, out, row, class),
                (2, 2) => logits_tile::<T, 2, 2>(params, x, out, row, class),
                (2, _) => logits_tile::<T, 2, 1>(params, x, out, row, class),
                (_, 5) => logits_tile::<T, 1, 5>(params, x, out, row, class),
                (_, 4) => logits_tile::<T, 1, 4>(params, x, out, row, class),
                (_, 3) => logits_tile::<T, 1, 3>(params, x, out, row, class),
                (_, 2) => logits_tile::<T, 1, 2>(params, x, out, row, class),
                (_, _) => logits_tile::<T, 1, 1>(params, x, out, row, class),
            }
            class += group;
        }
        row += pair;
    }
}

/// Logits of `R` rows from `row` for `C` classes from `class`.
#[inline(always)]
fn logits_tile<T: Element, const R: usize, const C: usize>(
    params: &FusedParams,
    x: &[T],
    out: &mut [f32],
    row: usize,
    class: usize,
) {
    let (d, k) = (params.d, params.k);
    let mut acc = [[[0.0f32; LANES]; C]; R];
    let x_rows: [&[T]; R] = std::array::from_fn(|r| &x[(row + r) * d..(row + r + 1) * d]);
    let w_rows: [&[f32]; C] =
        std::array::from_fn(|c| &params.wt[(class + c) * d..(class + c + 1) * d]);
    let full = d / LANES * LANES;
    for start in (0..full).step_by(LANES) {
        // SAFETY: start + LANES <= full <= d, the length of every row slice.
        let xs: [Lanes; R] = std::array::from_fn(|r| unsafe { load_lanes(x_rows[r], start) });
        for c in 0..C {
            // SAFETY: as above.
            let w = unsafe { load_lanes(w_rows[c], start) };
            for r in 0..R {
                for lane in 0..LANES {
                    acc[r][c][lane] = xs[r][lane].mul_add(w[lane], acc[r][c][lane]);
                }
            }
        }
    }
    for i in full..d {
        for c in 0..C {
            for r in 0..R {
                acc[r][c][i - full] = x_rows[r][i]
                    .value()
                    .mul_add(w_rows[c][i], acc[r][c][i - full]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[(row + r) * k + class + c] = sum_lanes(&acc[r][c]) + params.bias[class + c];
        }
    }
}

/// Reads `LANES` values from `values[start..]`.
///
/// # Safety
/// `start + LANES <= values.len()`.
#[inline(always)]
unsafe fn load_lanes<T: Element>(values: &[T], start: usize) -> Lanes {
    debug_assert!(start + LANES <= values.len());
    // SAFETY: the caller keeps the read inside `values`, and read_unaligned
    // has no alignment requirement.
    let raw: [T; LANES] =
        unsafe { std::ptr::read_unaligned(values.as_ptr().add(start).cast::<[T; LANES]>()) };
    raw.map(Element::value)
}

/// Adds `g^T x` to `weight_grad` (`k x d`) and the column sums of `g` to
/// `bias_grad`, for the rows of one block; rows are summed in order.
fn accumulate_gradient<T: Element>(
    x: &[T],
    g: &[f32],
    d: usize,
    k: usize,
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features that the function enables.
            unsafe { accumulate_gradient_avx2(x, g, d, k, weight_grad, bias_grad) };
            return;
        }
    }
    accumulate_gradient_portable(x, g, d, k, weight_grad, bias_grad);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_gradient_avx2<T: Element>(
    x: &[T],
    g: &[f32],
    d: usize,
    k: usize,
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    // Same tiles and arithmetic as `accumulate_gradient_portable`.
    let mut class = 0;
    while class < k {
        let group = (k - class).min(5);
        // SAFETY: the CPU supports AVX2 and FMA (checked by the caller).
        unsafe {
            match group {
                5 => gradient_tile_avx2::<T, 5>(x, g, d, k, class, weight_grad),
                4 => gradient_tile_avx2::<T, 4>(x, g, d, k, class, weight_grad),
                3 => gradient_tile_avx2::<T, 3>(x, g, d, k, class, weight_grad),
                2 => gradient_tile_avx2::<T, 2>(x, g, d, k, class, weight_grad),
                _ => gradient_tile_avx2::<T, 1>(x, g, d, k, class, weight_grad),
            }
        }
        class += group;
    }
    for row in g.chunks_exact(k) {
        add_into(bias_grad, row);
    }
}

/// [`gradient_tile`] with AVX2 intrinsics: the same sums in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gradient_tile_avx2<T: Element, const C: usize>(
    x: &[T],
    g: &[f32],
    d: usize,
    k: usize,
    class: usize,
    weight_grad: &mut [f32],
) {
    use std::arch::x86_64::*;
    let rows = g.len() / k;
    let pairs = d / (2 * LANES) * (2 * LANES);
    let mut start = 0;
    while start < pairs {
        let column = |c: usize| (class + c) * d + start;
        // SAFETY: column(c) + 2 * LANES <= (class + c) * d + d, inside weight_grad.
        let mut low: [__m256; C] = std::array::from_fn(|c| unsafe {
            _mm256_loadu_ps(weight_grad.as_ptr().add(column(c)))
        });
        let mut high: [__m256; C] = std::array::from_fn(|c| unsafe {
            _mm256_loadu_ps(weight_grad.as_ptr().add(column(c) + LANES))
        });
        for r in 0..rows {
            let x_row = &x[r * d..(r + 1) * d];
            // SAFETY: start + 2 * LANES <= pairs <= d, the length of x_row.
            let (x_low, x_high) = unsafe {
                (
                    T::load8(x_row.as_ptr().add(start)),
                    T::load8(x_row.as_ptr().add(start + LANES)),
                )
            };
            let g_row = &g[r * k + class..r * k + class + C];
            for c in 0..C {
                let scale = _mm256_set1_ps(g_row[c]);
                low[c] = _mm256_fmadd_ps(scale, x_low, low[c]);
                high[c] = _mm256_fmadd_ps(scale, x_high, high[c]);
            }
        }
        for c in 0..C {
            // SAFETY: as for the loads above.
            unsafe {
                _mm256_storeu_ps(weight_grad.as_mut_ptr().add(column(c)), low[c]);
                _mm256_storeu_ps(weight_grad.as_mut_ptr().add(column(c) + LANES), high[c]);
            }
        }
        start += 2 * LANES;
    }
    for i in pairs..d {
        for c in 0..C {
            let mut sum = weight_grad[(class + c) * d + i];
            for r in 0..rows {
                sum = g[r * k + class + c].mul_add(x[r * d + i].value(), sum);
            }
            weight_grad[(class + c) * d + i] = sum;
        }
    }
}

#[inline(always)]
fn accumulate_gradient_portable<T: Element>(
    x: &[T],
    g: &[f32],
    d: usize,
    k: usize,
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let mut class = 0;
    while class < k {
        let group = (k - class).min(5);
        match group {
            5 => gradient_tile::<T, 5>(x, g, d, k, class, weight_grad),
            4 => gradient_tile::<T, 4>(x, g, d, k, class, weight_grad),
            3 => gradient_tile::<T, 3>(x, g, d, k, class, weight_grad),
            2 => gradient_tile::<T, 2>(x, g, d, k, class, weight_grad),
            _ => gradient_tile::<T, 1>(x, g, d, k, class, weight_grad),
        }
        class += group;
    }
    for row in g.chunks_exact(k) {
        add_into(bias_grad, row);
    }
}

/// Weight gradient of `C` classes from `class`, sixteen features at a time.
#[inline(always)]
fn gradient_tile<T: Element, const C: usize>(
    x: &[T],
    g: &[f32],
    d: usize,
    k: usize,
    class: usize,
    weight_grad: &mut [f32],
) {
    let rows = g.len() / k;
    let pairs = d / (2 * LANES) * (2 * LANES);
    for start in (0..pairs).step_by(2 * LANES) {
        let mut low: [Lanes; C] =
            std::array::from_fn(|c| lanes(&weight_grad[(class + c) * d + start..][..LANES]));
        let mut high: [Lanes; C] = std::array::from_fn(|c| {
            lanes(&weight_grad[(class + c) * d + start + LANES..][..LANES])
        });
        for r in 0..rows {
            let x_row = &x[r * d..(r + 1) * d];
            // SAFETY: start + 2 * LANES <= pairs <= d, the length of x_row.
            let (x_low, x_high) =
                unsafe { (load_lanes(x_row, start), load_lanes(x_row, start + LANES)) };
            let g_row = &g[r * k + class..r * k + class + C];
            for c in 0..C {
                let scale = g_row[c];
                for lane in 0..LANES {
                    low[c][lane] = scale.mul_add(x_low[lane], low[c][lane]);
                    high[c][lane] = scale.mul_add(x_high[lane], high[c][lane]);
                }
            }
        }
        for c in 0..C {
            weight_grad[(class + c) * d + start..][..LANES].copy_from_slice(&low[c]);
            weight_grad[(class + c) * d + start + LANES..][..LANES].copy_from_slice(&high[c]);
        }
    }
    for i in pairs..d {
        for c in 0..C {
            let mut sum = weight_grad[(class + c) * d + i];
            for r in 0..rows {
                sum = g[r * k + class + c].mul_add(x[r * d + i].value(), sum);
            }
            weight_grad[(class + c) * d + i] = sum;
        }
    }
}

/// Replaces a row of logits by `(softmax - onehot(label)) * scale` and
/// returns the row's loss `logsumexp - z[label]`. Each exponential is
/// computed once and then scaled by `scale / sum`.
///
/// # Panics
/// If `label` is not below `row.len()`.
pub(crate) fn softmax_nll_grad(row: &mut [f32], label: usize, scale: f32) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let target = row[label];
    let mut sum = 0.0f32;
    for z in row.iter_mut() {
        *z = (*z - max).exp();
        sum += *z;
    }
    let loss = max + sum.ln() - target;
    let factor = scale / sum;
    for z in row.iter_mut() {
        *z *= factor;
    }
    row[label] -= scale;
    loss
}

pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (index, &value) in row.iter().enumerate() {
        if value > best_value {
            best = index;
            best_value = value;
        }
    }
    best
}

#[inline(always)]
fn lanes(values: &[f32]) -> Lanes {
    values[..LANES].try_into().expect("slice has LANES values")
}

/// Sums the lanes pairwise in a fixed order.
#[inline(always)]
fn sum_lanes(acc: &Lanes) -> f32 {
    let quad = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (quad[0] + quad[2]) + (quad[1] + quad[3])
}

/// Adds `values` to `target` element by element.
pub(crate) fn add_into(target: &mut [f32], values: &[f32]) {
    for (t, v) in target.iter_mut().zip(values) {
        *t += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::ops;
    use ndarray::{Array1, Array2, ArrayView2};

    fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn fused_step_matches_reference_ops() {
        for (rows, d, k) in [(1, 3, 2), (7, 785, 17), (601, 784, 10), (130, 9, 3)] {
            let x = pseudo_random(rows * d, 1);
            let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 7) % k as u32).collect();
            let mut params = FusedParams::zeros(d, k);
            params.wt = pseudo_random(d * k, 2);
            params.bias = pseudo_random(k, 3);

            let mut weights = Array2::from_shape_fn((d, k), |(i, c)| params.wt[c * d + i]);
            let mut bias = Array1::from_vec(params.bias.clone());
            let x_view = ArrayView2::from_shape((rows, d), &x).unwrap();
            let expected_loss =
                ops::sgd_step(x_view, &labels, weights.view_mut(), bias.view_mut(), 0.1);
            let loss = sgd_step(&mut params, &x, &labels, 0.1);

            assert!(
                (loss - expected_loss).abs() <= 1e-5 + 1e-5 * expected_loss.abs(),
                "{rows}x{d}x{k}: loss {loss} vs {expected_loss}"
            );
            for i in 0..d {
                for c in 0..k {
                    let (got, want) = (params.wt[c * d + i], weights[[i, c]]);
                    assert!(
                        (got - want).abs() <= 1e-5 + 1e-5 * want.abs(),
                        "{rows}x{d}x{k}: w[{i},{c}] {got} vs {want}"
                    );
                }
            }
            for c in 0..k {
                assert!(
                    (params.bias[c] - bias[c]).abs() <= 1e-5,
                    "{rows}x{d}x{k}: b[{c}]"
                );
            }
        }
    }

    #[test]
    fn reused_scratch_matches_fresh_buffers() {
        let (d, k) = (37, 4);
        let x = pseudo_random(600 * d, 10);
        let labels: Vec<u32> = (0..600u32).map(|r| r % k as u32).collect();
        let mut fresh = FusedParams::zeros(d, k);
        let mut reused = FusedParams::zeros(d, k);
        let mut scratch = StepScratch::default();
        // Batch sizes that grow and shrink the block list between steps.
        for rows in [600, 130, 1, 600] {
            let loss_fresh = sgd_step(&mut fresh, &x[..rows * d], &labels[..rows], 0.3);
            let loss_reused = sgd_step_with(
                &mut scratch,
                &mut reused,
                &x[..rows * d],
                &labels[..rows],
                0.3,
            );
            assert_eq!(loss_fresh.to_bits(), loss_reused.to_bits(), "{rows} rows");
            assert_eq!(fresh, reused, "{rows} rows");
        }
    }

    #[test]
    fn fused_step_does_not_depend_on_thread_count() {
        let (rows, d, k) = (600, 100, 10);
        let x = pseudo_random(rows * d, 4);
        let labels: Vec<u32> = (0..rows as u32).map(|r| r % k as u32).collect();
        let run = |threads: usize| {
            crate::cpu::with_threads(threads, || {
                let mut params = FusedParams::zeros(d, k);
                for _ in 0..3 {
                    sgd_step(&mut params, &x, &labels, 0.5);
                }
                params
            })
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert!(one.wt.iter().any(|&w| w != 0.0));
    }

    #[test]
    fn avx2_and_portable_paths_agree_bit_for_bit() {
        let (rows, d, k) = (9, 787, 11);
        let x = pseudo_random(rows * d, 5);
        let mut params = FusedParams::zeros(d, k);
        params.wt = pseudo_random(d * k, 6);
        let mut portable = vec![0.0; rows * k];
        logits_portable(&params, &x, &mut portable);
        let mut dispatched = vec![0.0; rows * k];
        logits(&params, &x, &mut dispatched);
        assert_eq!(portable, dispatched);

        let g = pseudo_random(rows * k, 7);
        let (mut w1, mut b1) = (vec![0.0; k * d], vec![0.0; k]);
        let (mut w2, mut b2) = (vec![0.0; k * d], vec![0.0; k]);
        accumulate_gradient_portable(&x, &g, d, k, &mut w1, &mut b1);
        accumulate_gradient(&x, &g, d, k, &mut w2, &mut b2);
        assert_eq!((w1, b1), (w2, b2));
    }

    #[test]
    fn softmax_gradient_is_finite_for_extreme_logits() {
        let cases: [([f32; 3], usize); 3] = [
            ([90.0, 2.0, -2.0], 0),
            ([1000.0, 0.0, -1000.0], 2),
            ([-1000.0, -1000.0, -1000.0], 1),
        ];
        for (logits, label) in cases {
            let mut row = logits;
            let loss = softmax_nll_grad(&mut row, label, 1.0);
            assert!(
                loss.is_finite() && row.iter().all(|g| g.is_finite()),
                "{logits:?}: {loss} {row:?}"
            );
        }
        let mut row = [1000.0f32, 0.0, -1000.0];
        assert_eq!(softmax_nll_grad(&mut row, 2, 1.0), 2000.0);
        assert_eq!(row, [1.0, 0.0, -1.0]);
        let mut row = [0.0f32, 120.0];
        assert_eq!(softmax_nll_grad(&mut row, 0, 1.0), 120.0);
        assert_eq!(row, [-1.0, 1.0]);
    }

    #[test]
    fn softmax_gradient_matches_f64_reference() {
        let logits = [0.3f32, -1.2, 2.5, 0.0, 1.1, -0.4, 0.9, 3.0, -2.2, 0.05];
        let label = 4;
        let scale = 0.25f32;
        let mut row = logits;
        let loss = softmax_nll_grad(&mut row, label, scale);

        let max = 3.0f64;
        let sum: f64 = logits.iter().map(|&z| (z as f64 - max).exp()).sum();
        let expected_loss = max + sum.ln() - logits[label] as f64;
        assert!(
            (loss as f64 - expected_loss).abs() < 1e-6,
            "loss {loss} vs {expected_loss}"
        );
        for (c, (&g, &z)) in row.iter().zip(&logits).enumerate() {
            let p = (z as f64 - max).exp() / sum;
            let expected = (p - f64::from(c == label)) * scale as f64;
            assert!(
                (g as f64 - expected).abs() < 1e-7,
                "class {c}: {g} vs {expected}"
            );
        }
    }

    #[test]
    fn byte_features_match_f32_bit_for_bit() {
        let (rows, d, k) = (203, 785, 10);
        let bytes: Vec<u8> = (0..rows * d)
            .map(|i| ((i * 131 + i / 7) % 256) as u8)
            .collect();
        let floats: Vec<f32> = bytes.iter().map(|&b| b.value()).collect();
        let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 3) % k as u32).collect();
        let mut from_bytes = FusedParams::zeros(d, k);
        let mut from_floats = FusedParams::zeros(d, k);
        for _ in 0..3 {
            let loss_bytes = sgd_step(&mut from_bytes, &bytes, &labels, 0.1);
            let loss_floats = sgd_step(&mut from_floats, &floats, &labels, 0.1);
            assert_eq!(loss_bytes.to_bits(), loss_floats.to_bits());
        }
        assert_eq!(from_bytes, from_floats);
        assert_eq!(
            count_errors(&from_bytes, &bytes, &labels),
            count_errors(&from_floats, &floats, &labels)
        );
    }

    #[test]
    fn count_errors_matches_reference() {
        let (rows, d, k) = (301, 20, 4);
        let x = pseudo_random(rows * d, 8);
        let labels: Vec<u32> = (0..rows as u32).map(|r| r % k as u32).collect();
        let mut params = FusedParams::zeros(d, k);
        params.wt = pseudo_random(d * k, 9);
        let weights = Array2::from_shape_fn((d, k), |(i, c)| params.wt[c * d + i]);
        let x_view = ArrayView2::from_shape((rows, d), &x).unwrap();
        let logits = ops::logits(x_view, weights.view(), Array1::zeros(k).view());
        let expected = ops::count_errors(logits.view(), &labels);
        assert_eq!(count_errors(&params, &x, &labels), expected);
        assert!(expected > 0, "the random model must make some errors");
        assert!(
            expected < rows as u64,
            "the random model must get some rows right"
        );
    }
}
