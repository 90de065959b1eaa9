// Declarations shared by every kernel. The Rust side concatenates this file
// in front of each kernel, so all kernels use one bind group layout.
//
// Layouts: features are row-major `rows x features`, weights `features x
// classes`, and the scratch buffer holds `rows x classes` logits or their
// gradient. Row indices in `params.row_offset` count from the start of the
// bound feature chunk.
//
// Binding 1 and `load_feature`, the only access to it, come from
// features_f32.wgsl or features_u8.wgsl, chosen when the pipelines are built.

// Mirrored by `Params` in src/gpu/kernels.rs; the two must keep the same
// field order and size (32 bytes).
struct Params {
    // First row of the batch within the bound chunk.
    row_offset: u32,
    // Rows in the batch.
    rows: u32,
    // Features per row (d).
    features: u32,
    // Classes (k).
    classes: u32,
    // Factor applied to the loss gradient, 1 / rows when training.
    scale: f32,
    learning_rate: f32,
    // Global index of the training step, recorded when it goes non-finite.
    step: u32,
    _padding: u32,
}

// Invocations per workgroup, set by name when the pipeline is built.
override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> losses: array<f32>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

// Classes per invocation in the logits, evaluate and sgd_update kernels.
// Each invocation keeps one accumulator per class of its block in a vec4.
const CLASS_BLOCK: u32 = 4u;

// Rows per invocation in the logits and evaluate kernels, and parameter
// rows per invocation in sgd_update. On llvmpipe (lavapipe) the measured
// time follows the storage loads per multiply-add, and a tile of 8 rows by
// 4 classes needs 12 loads for 32 multiply-adds. Kernels hold a tile's rows
// as two vec4 halves.
const TILE_ROWS: u32 = 8u;

// Blocks of `size` that cover `count`, at least 1.
fn blocks_of(count: u32, size: u32) -> u32 {
    return max((count + size - 1u) / size, 1u);
}

// Columns of the classes of `block`; entries past the last class repeat the
// last class, so every load stays in bounds and callers ignore those entries.
fn block_columns(block: u32) -> vec4<u32> {
    let first = block * CLASS_BLOCK;
    let last = vec4<u32>(params.classes - 1u);
    return min(vec4<u32>(first, first + 1u, first + 2u, first + 3u), last);
}

// Rows `first` to `first + 3` of the batch, clamped to the last row.
fn tile_rows(first: u32) -> vec4<u32> {
    let last = vec4<u32>(params.rows - 1u);
    return min(vec4<u32>(first, first + 1u, first + 2u, first + 3u), last);
}

// Returns, for the TILE_ROWS rows from `low` then `high`, the sums over
// features i, in order, of x[row, i] * W[i, c] for the classes c of `block`
// (see block_columns). Entry h of the result holds half h, one column per
// row. Rows count from the start of the bound chunk. Each sum is
// accumulated on its own, so it does not depend on the tile.
fn tile_dot(low: vec4<u32>, high: vec4<u32>, block: u32) -> array<mat4x4<f32>, 2> {
    let d = params.features;
    let k = params.classes;
    let columns = block_columns(block);
    let x_low = low * d;
    let x_high = high * d;
    let zero = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var sums_low = zero;
    var sums_high = zero;
    for (var i = 0u; i < d; i++) {
        let w_start = i * k;
        let w = vec4<f32>(
            weights[w_start + columns.x],
            weights[w_start + columns.y],
            weights[w_start + columns.z],
            weights[w_start + columns.w],
        );
        sums_low[0] += load_feature(x_low.x + i) * w;
        sums_low[1] += load_feature(x_low.y + i) * w;
        sums_low[2] += load_feature(x_low.z + i) * w;
        sums_low[3] += load_feature(x_low.w + i) * w;
        sums_high[0] += load_feature(x_high.x + i) * w;
        sums_high[1] += load_feature(x_high.y + i) * w;
        sums_high[2] += load_feature(x_high.z + i) * w;
        sums_high[3] += load_feature(x_high.w + i) * w;
    }
    return array<mat4x4<f32>, 2>(sums_low, sums_high);
}
