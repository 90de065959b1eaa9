//! The classic CPU step on sparse byte features.
//!
//! Four in five MNIST pixels are zero, and a zero feature adds nothing to a
//! logit or to the weight gradient. [`SparseRows`] stores each row's nonzero
//! bytes, and [`SparseTrainer`] runs the step of [`super::fused`] over them.
//! Weights are kept features-major, so that one nonzero pixel reaches all
//! ten classes with one 8-lane and one 4-lane multiply-add.
//!
//! Results are bit-identical to the dense fused step. A logit is still
//! summed in [`LANES`] accumulators, feature `i` in accumulator `i % LANES`
//! in increasing `i`, and a weight gradient over the rows of a block in row
//! order. The blocks are the same [`BLOCK_ROWS`]-row blocks, added in block
//! order. Skipping a zero feature leaves every accumulator unchanged because
//! `fma(0, w, acc) == acc` for finite `w` and `acc != -0.0`, and accumulators
//! start at `+0.0`. The tests here and in `tests/sparse.rs` check the
//! bit-identity on random rows of many shapes.

use std::ops::Range;

use rayon::prelude::*;

use super::fused::{add_into, argmax, softmax_nll_grad, FusedParams, BLOCK_ROWS, LANES};

/// Maximum number of classes of the sparse step; models with more classes
/// use the dense step.
pub const MAX_CLASSES: usize = LOW + HIGH;

/// Lists per group of one row: entry `4t + j` of group `g` is the `t`-th
/// entry of list `4g + j`, or padding when that list is shorter.
const GROUP: usize = 4;

/// One more than the largest feature count: an entry has 22 bits for the
/// feature, and feature `d` is the padding.
const MAX_FEATURES: usize = (1 << 22) - 1;

/// `BYTE_VALUES[b] == b / 256`, the f32 value of a stored byte.
static BYTE_VALUES: [f32; 256] = {
    let mut values = [0.0f32; 256];
    let mut byte = 0;
    while byte < 256 {
        values[byte] = byte as f32 / 256.0;
        byte += 1;
    }
    values
};

/// Rows of byte features stored by their nonzero entries.
///
/// Each entry is `feature << 10 | byte`, so that `entry >> 8` is the feature
/// times 4, which x86 addressing scales to the address of either weight row.
/// A row's nonzero features are split into [`LANES`] lists by accumulator
/// (`feature % LANES`), each in increasing feature order. The lists are
/// sorted by length, and the row stores them as two groups of four. Within
/// a group the entries of the four lists alternate. The shorter lists are
/// padded with entries of byte 0 at feature `d`, a feature whose weights
/// stay zero, and sorting first keeps that padding short.
#[derive(Clone, Debug)]
pub struct SparseRows {
    features: usize,
    /// Row `r`'s entries are `entries[starts[r]..starts[r + 1]]`.
    starts: Vec<usize>,
    layouts: Vec<RowLayout>,
    entries: Vec<u32>,
}

/// Position of one row's lists within its entries.
#[derive(Clone, Copy, Debug, Default)]
struct RowLayout {
    /// Entries of list `s`, padding excluded; lists 0 to 3 form the first
    /// group and are the longest.
    lengths: [u32; LANES],
    /// The accumulator of list `s`.
    lanes: [u8; LANES],
}

impl RowLayout {
    /// Entries of group `group`, padding included.
    fn group_len(&self, group: usize) -> usize {
        GROUP * self.lengths[GROUP * group] as usize
    }
}

impl SparseRows {
    /// Stores `bytes` (row-major, `rows x features`) by their nonzero
    /// entries, building the rows in parallel with rayon.
    ///
    /// # Panics
    /// If `features` is 0 or above 4194302, or `bytes.len()` is not a
    /// multiple of `features`.
    pub fn from_bytes(bytes: &[u8], features: usize) -> Self {
        Self::build(bytes, features, |row, row_bytes| {
            row_bytes.copy_from_slice(row);
            true
        })
        .expect("every byte converts")
    }

    /// Stores f32 features (row-major, `rows x features`) that are all
    /// `byte / 256`, or returns `None` at the first that is not (see
    /// [`crate::data::bytes::feature_byte`]).
    ///
    /// # Panics
    /// As [`SparseRows::from_bytes`].
    pub fn from_features(values: &[f32], features: usize) -> Option<Self> {
        Self::build(values, features, crate::data::bytes::features_to_bytes)
    }

    fn build<T: Copy + Sync>(
        values: &[T],
        features: usize,
        to_bytes: impl Fn(&[T], &mut [u8]) -> bool + Sync,
    ) -> Option<Self> {
        assert!(
            (1..MAX_FEATURES).contains(&features),
            "sparse rows need 1 to {} features, not {features}",
            MAX_FEATURES - 1
        );
        assert_eq!(values.len() % features, 0, "values must hold whole rows");
        let chunks: Vec<(Vec<RowLayout>, Vec<u32>)> = values
            .par_chunks(1024 * features)
            .map(|chunk| {
                let mut row_bytes = vec![0u8; features];
                let mut lists = LaneLists::new(features);
                let mut layouts = Vec::new();
                let mut entries = Vec::new();
                for row in chunk.chunks_exact(features) {
                    if !to_bytes(row, &mut row_bytes) {
                        return None;
                    }
                    layouts.push(lists.push_row(&row_bytes, &mut entries));
                }
                Some((layouts, entries))
            })
            .collect::<Option<_>>()?;

        let rows = values.len() / features;
        let mut starts = Vec::with_capacity(rows + 1);
        let mut layouts = Vec::with_capacity(rows);
        let mut entries = Vec::with_capacity(chunks.iter().map(|(_, e)| e.len()).sum());
        starts.push(0);
        for (chunk_layouts, chunk_entries) in chunks {
            for layout in chunk_layouts {
                let end = starts.last().expect("starts begins with 0")
                    + layout.group_len(0)
                    + layout.group_len(1);
                starts.push(end);
                layouts.push(layout);
            }
            entries.extend_from_slice(&chunk_entries);
        }
        Some(SparseRows {
            features,
            starts,
            layouts,
            entries,
        })
    }

    /// Features per row.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.layouts.len()
    }

    /// Stored entries, padding included.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Returns the fraction of all `rows x features` values that are
    /// stored, padding included.
    pub fn stored_fraction(&self) -> f64 {
        self.entries.len() as f64 / (self.rows().max(1) * self.features) as f64
    }

    /// Row `row`'s entries, padding included.
    fn row_entries(&self, row: usize) -> &[u32] {
        &self.entries[self.starts[row]..self.starts[row + 1]]
    }

    /// Row `row`'s layout and its two groups of entries.
    fn row(&self, row: usize) -> (&RowLayout, [&[u32]; 2]) {
        let layout = &self.layouts[row];
        let (first, second) = self.row_entries(row).split_at(layout.group_len(0));
        (layout, [first, second])
    }
}

/// Room for one row's nonzero entries split into [`LANES`] lists by
/// accumulator, kept from row to row so that building rows allocates
/// nothing per row.
struct LaneLists {
    /// List `lane` starts at `entries[lane * capacity]`.
    entries: Vec<u32>,
    capacity: usize,
}

impl LaneLists {
    fn new(features: usize) -> Self {
        let capacity = features.div_ceil(LANES);
        LaneLists {
            entries: vec![0; LANES * capacity],
            capacity,
        }
    }

    /// Appends the entries of `row` in the order that [`SparseRows`]
    /// describes and returns their layout.
    fn push_row(&mut self, row: &[u8], entries: &mut Vec<u32>) -> RowLayout {
        let features = row.len();
        debug_assert_eq!(features.div_ceil(LANES), self.capacity);
        // Every feature is written, and a zero one is then overwritten by
        // the next feature of its list, so there is no branch on the pixel.
        let mut lengths = [0; LANES];
        let lists = &mut self.entries[..LANES * self.capacity];
        for (eight, bytes) in row.chunks(LANES).enumerate() {
            for (lane, &byte) in bytes.iter().enumerate() {
                let feature = (eight * LANES + lane) as u32;
                lists[lane * self.capacity + lengths[lane]] = feature << 10 | u32::from(byte);
                lengths[lane] += usize::from(byte != 0);
            }
        }

        let mut order: [usize; LANES] = std::array::from_fn(|lane| lane);
        order.sort_by_key(|&lane| std::cmp::Reverse(lengths[lane]));
        let layout = RowLayout {
            lengths: order.map(|lane| lengths[lane] as u32),
            lanes: order.map(|lane| lane as u8),
        };
        let padding = (features as u32) << 10;
        for group in order.chunks_exact(GROUP) {
            let longest = lengths[group[0]];
            for t in 0..longest {
                for &lane in group {
                    entries.push(if t < lengths[lane] {
                        self.entries[lane * self.capacity + t]
                    } else {
                        padding
                    });
                }
            }
        }
        layout
    }
}

/// Values of classes 0 to 7 for one feature, aligned so that a row never
/// crosses a cache line.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(32))]
struct Low([f32; LOW]);

/// Values of classes 8 and 9 for one feature.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(8))]
struct High([f32; HIGH]);

/// Classes in a [`Low`] row.
const LOW: usize = 8;

/// Classes in a [`High`] row.
const HIGH: usize = 2;

/// Per-class values of every feature, features-major, split in two arrays so
/// that ten classes take 40 bytes a feature: MNIST's weights then fit a
/// 32 KiB L1 data cache. Row `d` belongs to the padding entries.
#[derive(Clone, Debug, Default)]
struct FeatureRows {
    low: Vec<Low>,
    high: Vec<High>,
}

impl FeatureRows {
    fn zeros(rows: usize) -> Self {
        FeatureRows {
            low: vec![Low::default(); rows],
            high: vec![High::default(); rows],
        }
    }

    /// Sets every value to zero, keeping `rows` rows.
    fn reset(&mut self, rows: usize) {
        self.low.resize(rows, Low::default());
        self.high.resize(rows, High::default());
        bytemuck::cast_slice_mut::<Low, f32>(&mut self.low).fill(0.0);
        bytemuck::cast_slice_mut::<High, f32>(&mut self.high).fill(0.0);
    }

    fn get(&self, feature: usize, class: usize) -> f32 {
        if class < LOW {
            self.low[feature].0[class]
        } else {
            self.high[feature].0[class - LOW]
        }
    }

    fn set(&mut self, feature: usize, class: usize, value: f32) {
        if class < LOW {
            self.low[feature].0[class] = value;
        } else {
            self.high[feature].0[class - LOW] = value;
        }
    }
}

/// Logistic regression trained with plain SGD on [`SparseRows`].
///
/// Keeps the weights features-major, zero past the class count and in the
/// padding row, so that one entry reads one 40-byte row of weights.
#[derive(Clone, Debug)]
pub struct SparseTrainer {
    features: usize,
    classes: usize,
    weights: FeatureRows,
    bias: [f32; MAX_CLASSES],
    finite: bool,
    use_avx2: bool,
    blocks: Vec<Block>,
    weight_grad: FeatureRows,
}

/// One rayon task's rows: their logits, then their gradients.
#[derive(Clone, Debug, Default)]
struct Block {
    logits: Vec<Logits>,
    weight_grad: FeatureRows,
    bias_grad: [f32; MAX_CLASSES],
    loss: f64,
}

/// One row's logits, or its softmax gradient, zero past the class count.
type Logits = [f32; MAX_CLASSES];

impl SparseTrainer {
    /// Starts from `params`, or returns `None` when the model has more than
    /// [`MAX_CLASSES`] classes or too many features for a [`SparseRows`]
    /// entry.
    ///
    /// # Panics
    /// If `params.wt` does not have `d * k` values or `params.bias` `k`.
    pub fn new(params: &FusedParams) -> Option<Self> {
        let (d, k) = (params.d, params.k);
        assert_eq!(params.wt.len(), d * k, "weights must have d * k values");
        assert_eq!(params.bias.len(), k, "biases must have k values");
        if k > MAX_CLASSES || !(1..MAX_FEATURES).contains(&d) {
            return None;
        }
        let mut weights = FeatureRows::zeros(d + 1);
        for c in 0..k {
            for i in 0..d {
                weights.set(i, c, params.wt[c * d + i]);
            }
        }
        let mut bias = [0.0; MAX_CLASSES];
        bias[..k].copy_from_slice(&params.bias);
        Some(SparseTrainer {
            features: d,
            classes: k,
            weights,
            bias,
            finite: params.is_finite(),
            use_avx2: avx2_available(),
            blocks: Vec::new(),
            weight_grad: FeatureRows::default(),
        })
    }

    /// Returns the parameters in the classes-major layout of [`FusedParams`].
    pub fn params(&self) -> FusedParams {
        let (d, k) = (self.features, self.classes);
        let mut params = FusedParams::zeros(d, k);
        for c in 0..k {
            for i in 0..d {
                params.wt[c * d + i] = self.weights.get(i, c);
            }
        }
        params.bias.copy_from_slice(&self.bias[..k]);
        params
    }

    /// Returns whether every weight and bias was finite after the last step.
    pub fn is_finite(&self) -> bool {
        self.finite
    }

    /// Runs one SGD step on rows `rows` of `data`, whose labels are
    /// `labels[row]`, and returns the mean loss (NaN or infinite if a row's
    /// loss is not finite).
    ///
    /// # Panics
    /// If `data` has another feature count than the model, a row is out of
    /// range, `rows` is empty, or a label is not below the class count.
    pub fn step(
        &mut self,
        data: &SparseRows,
        rows: &[u32],
        labels: &[u32],
        learning_rate: f32,
    ) -> f32 {
        assert_eq!(
            data.features, self.features,
            "rows and model differ in feature count"
        );
        assert!(!rows.is_empty(), "a step needs at least one row");
        let block_count = rows.len().div_ceil(BLOCK_ROWS);
        let scale = 1.0 / rows.len() as f32;
        self.blocks.resize_with(block_count, Block::default);

        // Each block: the logits of its rows, their softmax gradients, then
        // its share of the gradients, added in row order.
        let mut blocks = std::mem::take(&mut self.blocks);
        let view = &*self;
        blocks[..block_count]
            .par_iter_mut()
            .zip(rows.par_chunks(BLOCK_ROWS))
            .for_each(|(block, block_rows)| {
                view.block_gradient(data, block_rows, labels, scale, block)
            });

        // Add the block gradients in block order and update, in parallel
        // over features; each sum keeps the block order.
        let blocks_done = &blocks[..block_count];
        let finite = self.update_weights(blocks_done, learning_rate);
        let mut bias_grad = [0.0f32; MAX_CLASSES];
        let mut loss = 0.0f64;
        for block in blocks_done {
            add_into(&mut bias_grad, &block.bias_grad);
            loss += block.loss;
        }
        let mut bias_finite = true;
        for (b, g) in self.bias[..self.classes].iter_mut().zip(&bias_grad) {
            *b -= learning_rate * g;
            bias_finite &= b.is_finite();
        }
        self.blocks = blocks;
        self.finite = finite && bias_finite;
        (loss / rows.len() as f64) as f32
    }

    /// Computes one block's loss and gradients.
    fn block_gradient(
        &self,
        data: &SparseRows,
        rows: &[u32],
        labels: &[u32],
        scale: f32,
        block: &mut Block,
    ) {
        block.logits.clear();
        block
            .logits
            .extend(rows.iter().map(|&row| self.row_logits(data, row as usize)));
        block.loss = 0.0;
        for (logits, &row) in block.logits.iter_mut().zip(rows) {
            let label = labels[row as usize] as usize;
            block.loss += softmax_nll_grad(&mut logits[..self.classes], label, scale) as f64;
        }

        block.weight_grad.reset(self.features + 1);
        block.bias_grad = [0.0; MAX_CLASSES];
        for (g, &row) in block.logits.iter().zip(rows) {
            self.scatter_gradient(data, row as usize, g, &mut block.weight_grad);
            add_into(&mut block.bias_grad, &g[..self.classes]);
        }
    }

    /// Sums the block gradients in block order, applies them with
    /// `learning_rate` and returns whether every weight is finite. Runs in
    /// parallel over features and leaves the padding row at zero.
    fn update_weights(&mut self, blocks: &[Block], learning_rate: f32) -> bool {
        const CHUNK: usize = 128;
        let d = self.features;
        self.weight_grad.reset(d);
        let low = self.weights.low[..d]
            .par_chunks_mut(CHUNK)
            .zip(self.weight_grad.low.par_chunks_mut(CHUNK));
        let high = self.weights.high[..d]
            .par_chunks_mut(CHUNK)
            .zip(self.weight_grad.high.par_chunks_mut(CHUNK));
        low.zip(high)
            .enumerate()
            .map(|(chunk, ((low, low_total), (high, high_total)))| {
                let features = chunk * CHUNK..chunk * CHUNK + low.len();
                for block in blocks {
                    add_into(
                        bytemuck::cast_slice_mut(low_total),
                        bytemuck::cast_slice(&block.weight_grad.low[features.clone()]),
                    );
                    add_into(
                        bytemuck::cast_slice_mut(high_total),
                        bytemuck::cast_slice(&block.weight_grad.high[features.clone()]),
                    );
                }
                apply(
                    bytemuck::cast_slice_mut(low),
                    bytemuck::cast_slice(low_total),
                    learning_rate,
                ) & apply(
                    bytemuck::cast_slice_mut(high),
                    bytemuck::cast_slice(high_total),
                    learning_rate,
                )
            })
            .reduce(|| true, |a, b| a && b)
    }

    /// Counts the rows in `rows` of `data` whose argmax (first maximum on
    /// ties, NaN never chosen) differs from `labels[row]`.
    ///
    /// # Panics
    /// If `data` has another feature count than the model or a row is out of
    /// range.
    pub fn count_errors(&self, data: &SparseRows, rows: Range<usize>, labels: &[u32]) -> u64 {
        assert_eq!(
            data.features, self.features,
            "rows and model differ in feature count"
        );
        rows.into_par_iter()
            .with_min_len(BLOCK_ROWS)
            .filter(|&row| {
                let logits = self.row_logits(data, row);
                argmax(&logits[..self.classes]) != labels[row] as usize
            })
            .count() as u64
    }

    /// Returns the logits of row `row`, zero past the class count.
    fn row_logits(&self, data: &SparseRows, row: usize) -> Logits {
        let (layout, groups) = data.row(row);
        #[cfg(target_arch = "x86_64")]
        if self.use_avx2 {
            // SAFETY: `use_avx2` is set only when the CPU has AVX2 and FMA,
            // and every entry of `data` indexes a row of `weights` because
            // the feature counts match.
            return unsafe { row_logits_avx2(&self.weights, &self.bias, layout, groups) };
        }
        row_logits_portable(&self.weights, &self.bias, layout, groups)
    }

    /// Adds `g * x` for the nonzero features of row `row` to `weight_grad`.
    fn scatter_gradient(
        &self,
        data: &SparseRows,
        row: usize,
        g: &Logits,
        weight_grad: &mut FeatureRows,
    ) {
        let entries = data.row_entries(row);
        #[cfg(target_arch = "x86_64")]
        if self.use_avx2 {
            // SAFETY: as in `row_logits`; `weight_grad` has as many rows as
            // `weights`.
            unsafe { scatter_gradient_avx2(entries, g, weight_grad) };
            return;
        }
        scatter_gradient_portable(entries, g, weight_grad);
    }
}

/// Subtracts `learning_rate * g` from each weight and returns whether all
/// results are finite.
fn apply(weights: &mut [f32], gradient: &[f32], learning_rate: f32) -> bool {
    let mut finite = true;
    for (w, g) in weights.iter_mut().zip(gradient) {
        *w -= learning_rate * g;
        finite &= w.is_finite();
    }
    finite
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Splits an entry into its feature and its value.
#[inline(always)]
fn decode(entry: u32) -> (usize, f32) {
    ((entry >> 10) as usize, BYTE_VALUES[(entry & 0xff) as usize])
}

/// Sums the eight accumulators pairwise in the order of the dense step's
/// `sum_lanes`, then adds the bias.
#[inline(always)]
fn finish_logits(acc: &[[f32; 12]; LANES], bias: &Logits) -> Logits {
    std::array::from_fn(|c| {
        let quad = [
            acc[0][c] + acc[4][c],
            acc[1][c] + acc[5][c],
            acc[2][c] + acc[6][c],
            acc[3][c] + acc[7][c],
        ];
        ((quad[0] + quad[2]) + (quad[1] + quad[3])) + bias[c]
    })
}

fn row_logits_portable(
    weights: &FeatureRows,
    bias: &Logits,
    layout: &RowLayout,
    groups: [&[u32]; 2],
) -> Logits {
    let mut acc = [[0.0f32; 12]; LANES];
    for (group, entries) in groups.into_iter().enumerate() {
        for four in entries.chunks_exact(GROUP) {
            for (j, &entry) in four.iter().enumerate() {
                let (feature, x) = decode(entry);
                let lane = &mut acc[layout.lanes[GROUP * group + j] as usize];
                let row = weights.low[feature]
                    .0
                    .iter()
                    .chain(&weights.high[feature].0);
                for (sum, &w) in lane.iter_mut().zip(row) {
                    *sum = x.mul_add(w, *sum);
                }
            }
        }
    }
    finish_logits(&acc, bias)
}

fn scatter_gradient_portable(entries: &[u32], g: &Logits, weight_grad: &mut FeatureRows) {
    for &entry in entries {
        let (feature, x) = decode(entry);
        let sums = weight_grad.low[feature]
            .0
            .iter_mut()
            .chain(&mut weight_grad.high[feature].0);
        for (sum, &g) in sums.zip(g) {
            *sum = g.mul_add(x, *sum);
        }
    }
}

/// [`row_logits_portable`] with AVX2: the same multiply-adds in the same
/// order, the four lists of a group at a time.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and every entry's feature must index a
/// row of `weights`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_logits_avx2(
    weights: &FeatureRows,
    bias: &Logits,
    layout: &RowLayout,
    groups: [&[u32]; 2],
) -> Logits {
    use std::arch::x86_64::*;
    let low = weights.low.as_ptr().cast::<u8>();
    let high = weights.high.as_ptr().cast::<u8>();
    let mut lanes = [[0.0f32; 12]; LANES];
    for (group, entries) in groups.into_iter().enumerate() {
        let mut acc_low = [_mm256_setzero_ps(); GROUP];
        let mut acc_high = [_mm_setzero_ps(); GROUP];
        for four in entries.chunks_exact(GROUP) {
            for j in 0..GROUP {
                let entry = four[j];
                let quad = (entry >> 8) as usize;
                debug_assert!(quad / 4 < weights.low.len() && quad / 4 < weights.high.len());
                // SAFETY: the caller guarantees that the feature `quad / 4`
                // indexes a row of both arrays: a `Low` row is 32 bytes and a
                // `High` row 8 bytes, one f64.
                unsafe {
                    let x = _mm256_broadcast_ss(&BYTE_VALUES[(entry & 0xff) as usize]);
                    let w_low = _mm256_load_ps(low.add(quad * 8).cast::<f32>());
                    let w_high = _mm_castpd_ps(_mm_load_sd(high.add(quad * 2).cast::<f64>()));
                    acc_low[j] = _mm256_fmadd_ps(x, w_low, acc_low[j]);
                    acc_high[j] = _mm_fmadd_ps(_mm256_castps256_ps128(x), w_high, acc_high[j]);
                }
            }
        }
        for j in 0..GROUP {
            let lane = &mut lanes[layout.lanes[GROUP * group + j] as usize];
            // SAFETY: `lane` has room for 12 floats.
            unsafe {
                _mm256_storeu_ps(lane.as_mut_ptr(), acc_low[j]);
                _mm_storeu_ps(lane.as_mut_ptr().add(LOW), acc_high[j]);
            }
        }
    }
    finish_logits(&lanes, bias)
}

/// [`scatter_gradient_portable`] with AVX2: the same multiply-adds.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and every entry's feature must index a
/// row of `weight_grad`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scatter_gradient_avx2(entries: &[u32], g: &Logits, weight_grad: &mut FeatureRows) {
    use std::arch::x86_64::*;
    let rows = weight_grad.low.len().min(weight_grad.high.len());
    let low = weight_grad.low.as_mut_ptr().cast::<u8>();
    let high = weight_grad.high.as_mut_ptr().cast::<u8>();
    let mut g_padded = [0.0f32; 12];
    g_padded[..MAX_CLASSES].copy_from_slice(g);
    // SAFETY: `g_padded` has 12 floats.
    let (g_low, g_high) = unsafe {
        (
            _mm256_loadu_ps(g_padded.as_ptr()),
            _mm_loadu_ps(g_padded.as_ptr().add(LOW)),
        )
    };
    for &entry in entries {
        let quad = (entry >> 8) as usize;
        debug_assert!(quad / 4 < rows);
        // SAFETY: the caller guarantees that the feature `quad / 4` indexes
        // a row of both arrays: a `Low` row is 32 bytes and a `High` row 8
        // bytes, one f64.
        unsafe {
            let x = _mm256_broadcast_ss(&BYTE_VALUES[(entry & 0xff) as usize]);
            let row_low = low.add(quad * 8).cast::<f32>();
            _mm256_store_ps(row_low, _mm256_fmadd_ps(g_low, x, _mm256_load_ps(row_low)));
            let row_high = high.add(quad * 2).cast::<f64>();
            let sum_high = _mm_castpd_ps(_mm_load_sd(row_high));
            let sum_high = _mm_fmadd_ps(g_high, _mm256_castps256_ps128(x), sum_high);
            _mm_store_sd(row_high, _mm_castps_pd(sum_high));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the entries of list `slot`, padding excluded: every fourth entry
    /// of its group.
    fn list_entries<'a>(
        layout: &RowLayout,
        groups: [&'a [u32]; 2],
        slot: usize,
    ) -> impl Iterator<Item = u32> + 'a {
        let len = layout.lengths[slot] as usize;
        let entries = groups[slot / GROUP].get(slot % GROUP..).unwrap_or(&[]);
        entries.iter().step_by(GROUP).take(len).copied()
    }
    use crate::cpu::fused;

    /// Bytes where about `zero_percent` of the features are 0, the rest
    /// spread over 1 to 255.
    fn sparse_bytes(len: usize, zero_percent: u32, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let draw = state >> 8;
                if draw % 100 < zero_percent {
                    0
                } else {
                    (draw / 100 % 255 + 1) as u8
                }
            })
            .collect()
    }

    fn labels(rows: usize, k: usize) -> Vec<u32> {
        (0..rows as u32)
            .map(|r| (r * 7 + r / 3) % k as u32)
            .collect()
    }

    #[test]
    fn entries_hold_every_nonzero_feature() {
        let (rows, d) = (5, 45);
        let bytes = sparse_bytes(rows * d, 70, 1);
        let sparse = SparseRows::from_bytes(&bytes, d);
        assert_eq!(sparse.rows(), rows);
        for row in 0..rows {
            let mut found = vec![0u8; d];
            let (layout, groups) = sparse.row(row);
            for slot in 0..LANES {
                let lane = layout.lanes[slot] as usize;
                let mut previous = None;
                for entry in list_entries(layout, groups, slot) {
                    let feature = (entry >> 10) as usize;
                    assert_ne!(entry & 0xff, 0, "row {row}: a listed entry is padding");
                    assert_eq!(
                        feature % LANES,
                        lane,
                        "row {row}: feature {feature} in lane {lane}"
                    );
                    assert!(
                        previous < Some(feature),
                        "row {row}: lane {lane} out of order"
                    );
                    assert_eq!(found[feature], 0, "row {row}: feature {feature} twice");
                    found[feature] = (entry & 0xff) as u8;
                    previous = Some(feature);
                }
            }
            for (group, entries) in groups.iter().enumerate() {
                assert_eq!(entries.len(), layout.group_len(group));
                for &entry in entries.iter() {
                    let feature = (entry >> 10) as usize;
                    assert!(
                        feature < d || entry == (d as u32) << 10,
                        "row {row}: bad padding"
                    );
                }
            }
            assert_eq!(found, bytes[row * d..(row + 1) * d], "row {row}");
        }
    }

    #[test]
    fn from_features_matches_bytes_and_rejects_others() {
        let (rows, d) = (9, 33);
        let bytes = sparse_bytes(rows * d, 60, 5);
        let floats: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 256.0).collect();
        let from_floats = SparseRows::from_features(&floats, d).unwrap();
        let from_bytes = SparseRows::from_bytes(&bytes, d);
        assert_eq!(from_floats.entries, from_bytes.entries);
        assert_eq!(from_floats.starts, from_bytes.starts);

        for bad in [0.3f32, -0.0, 1.0, f32::NAN] {
            let mut values = floats.clone();
            values[rows * d - 1] = bad;
            assert!(SparseRows::from_features(&values, d).is_none(), "{bad}");
        }
    }

    #[test]
    fn step_matches_dense_step_bit_for_bit() {
        for (rows, d, k, zero_percent) in [
            (600, 784, 10, 80),
            (130, 787, 3, 50),
            (1, 9, 10, 0),
            (70, 30, 1, 100),
        ] {
            let bytes = sparse_bytes(rows * d, zero_percent, 2);
            let labels = labels(rows, k);
            let sparse = SparseRows::from_bytes(&bytes, d);
            let mut dense = FusedParams::zeros(d, k);
            let mut trainer = SparseTrainer::new(&dense).unwrap();
            // Steps over the whole set, a reordered part, and a single row.
            let all: Vec<u32> = (0..rows as u32).collect();
            let reordered: Vec<u32> = all.iter().rev().step_by(2).copied().collect();
            for picked in [&all[..], &reordered[..], &all[..1], &all[..]] {
                let x: Vec<u8> = picked
                    .iter()
                    .flat_map(|&r| bytes[r as usize * d..(r as usize + 1) * d].iter().copied())
                    .collect();
                let y: Vec<u32> = picked.iter().map(|&r| labels[r as usize]).collect();
                let dense_loss = fused::sgd_step(&mut dense, &x, &y, 0.4);
                let sparse_loss = trainer.step(&sparse, picked, &labels, 0.4);
                assert_eq!(
                    dense_loss.to_bits(),
                    sparse_loss.to_bits(),
                    "{rows}x{d}x{k}: loss"
                );
                assert_eq!(trainer.params(), dense, "{rows}x{d}x{k}: parameters");
            }
            assert!(trainer.is_finite());
            assert_eq!(
                trainer.count_errors(&sparse, 0..rows, &labels),
                fused::count_errors(&dense, &bytes, &labels),
                "{rows}x{d}x{k}: errors"
            );
            if zero_percent < 100 {
                assert!(dense.wt.iter().any(|&w| w != 0.0), "the steps must learn");
            }
        }
    }

    #[test]
    fn avx2_and_portable_kernels_agree_bit_for_bit() {
        let (rows, d) = (7, 301);
        let bytes = sparse_bytes(rows * d, 60, 3);
        let sparse = SparseRows::from_bytes(&bytes, d);
        let mut weights = FeatureRows::zeros(d + 1);
        for i in 0..d {
            for c in 0..MAX_CLASSES {
                weights.set(i, c, ((i * 13 + c * 7) % 97) as f32 / 50.0 - 0.9);
            }
        }
        let bias: Logits = std::array::from_fn(|c| c as f32 * 0.1);
        let g: Logits = std::array::from_fn(|c| 0.3 - c as f32 * 0.05);

        let mut portable_grad = FeatureRows::zeros(d + 1);
        let mut avx2_grad = FeatureRows::zeros(d + 1);
        for row in 0..rows {
            let (layout, groups) = sparse.row(row);
            let portable = row_logits_portable(&weights, &bias, layout, groups);
            scatter_gradient_portable(sparse.row_entries(row), &g, &mut portable_grad);
            if !avx2_available() {
                println!("skipping the AVX2 comparison: this CPU lacks AVX2 or FMA");
                return;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA are available, and the weights have the
            // padding row for `d` features.
            unsafe {
                let avx2 = row_logits_avx2(&weights, &bias, layout, groups);
                assert_eq!(
                    portable.map(f32::to_bits),
                    avx2.map(f32::to_bits),
                    "row {row}"
                );
                scatter_gradient_avx2(sparse.row_entries(row), &g, &mut avx2_grad);
            }
        }

        let values = |rows: &FeatureRows| -> Vec<u32> {
            (0..=d)
                .flat_map(|i| (0..MAX_CLASSES).map(move |c| (i, c)))
                .map(|(i, c)| rows.get(i, c).to_bits())
                .collect()
        };
        assert_eq!(values(&portable_grad), values(&avx2_grad));
        assert!(values(&portable_grad).iter().any(|&v| v != 0));
    }

    #[test]
    fn step_does_not_depend_on_thread_count() {
        let (rows, d, k) = (600, 200, 10);
        let bytes = sparse_bytes(rows * d, 75, 4);
        let labels = labels(rows, k);
        let sparse = SparseRows::from_bytes(&bytes, d);
        let order: Vec<u32> = (0..rows as u32).collect();
        let run = |threads: usize| {
            crate::cpu::with_threads(threads, || {
                let mut trainer = SparseTrainer::new(&FusedParams::zeros(d, k)).unwrap();
                for _ in 0..3 {
                    trainer.step(&sparse, &order, &labels, 0.5);
                }
                trainer.params()
            })
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert!(one.wt.iter().any(|&w| w != 0.0));
    }

    #[test]
    fn diverging_step_reports_non_finite_weights() {
        let (rows, d, k) = (20, 16, 3);
        let bytes = vec![255u8; rows * d];
        let labels = labels(rows, k);
        let sparse = SparseRows::from_bytes(&bytes, d);
        let order: Vec<u32> = (0..rows as u32).collect();
        let mut trainer = SparseTrainer::new(&FusedParams::zeros(d, k)).unwrap();
        assert!(trainer.is_finite());
        for _ in 0..20 {
            trainer.step(&sparse, &order, &labels, 1e38);
            assert_eq!(trainer.is_finite(), trainer.params().is_finite());
        }
        assert!(
            !trainer.is_finite(),
            "a rate of 1e38 must overflow the weights"
        );
    }

    #[test]
    fn trainer_rejects_too_many_classes() {
        assert!(SparseTrainer::new(&FusedParams::zeros(4, MAX_CLASSES)).is_some());
        assert!(SparseTrainer::new(&FusedParams::zeros(4, MAX_CLASSES + 1)).is_none());
    }
}
