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

// Returns W[feature, c] for the four class columns `columns`.
fn class_weights(feature: u32, columns: vec4<u32>) -> vec4<f32> {
    let start = feature * params.classes;
    return vec4<f32>(
        weights[start + columns.x],
        weights[start + columns.y],
        weights[start + columns.z],
        weights[start + columns.w],
    );
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
        let w = class_weights(i, columns);
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

// The feature columns of a gradient tile's TILE_ROWS parameter rows, as
// two halves. Parameter row p < d is feature p, and row d is the bias. The
// bias row and rows past it get a column clamped into range and a false
// `is_feature`, so they read x = 1 or store nothing.
struct ParameterTile {
    columns_low: vec4<u32>,
    columns_high: vec4<u32>,
    is_feature_low: vec4<bool>,
    is_feature_high: vec4<bool>,
}

// Returns the tile of parameter rows `first` to `first + TILE_ROWS - 1`.
fn parameter_tile(first: u32) -> ParameterTile {
    let d = params.features;
    let low = vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u);
    let high = low + vec4<u32>(4u);
    let last = vec4<u32>(max(d, 1u) - 1u);
    return ParameterTile(min(low, last), min(high, last), low < vec4<u32>(d), high < vec4<u32>(d));
}

// Adds row r's share of the gradients to `sums`: x[r, p] * G[r, c] for the
// tile's parameter rows p (x = 1 for the bias) and the classes c of
// `columns`. Entry h of `sums` holds half h of the tile, one column per
// parameter row.
fn add_row_gradient(
    r: u32,
    tile: ParameterTile,
    columns: vec4<u32>,
    sums: ptr<function, array<mat4x4<f32>, 2>>,
) {
    let x_start = (params.row_offset + r) * params.features;
    let x_low = select(
        vec4<f32>(1.0),
        vec4<f32>(
            load_feature(x_start + tile.columns_low.x),
            load_feature(x_start + tile.columns_low.y),
            load_feature(x_start + tile.columns_low.z),
            load_feature(x_start + tile.columns_low.w),
        ),
        tile.is_feature_low,
    );
    let x_high = select(
        vec4<f32>(1.0),
        vec4<f32>(
            load_feature(x_start + tile.columns_high.x),
            load_feature(x_start + tile.columns_high.y),
            load_feature(x_start + tile.columns_high.z),
            load_feature(x_start + tile.columns_high.w),
        ),
        tile.is_feature_high,
    );
    let g_start = r * params.classes;
    let g = vec4<f32>(
        scratch[g_start + columns.x],
        scratch[g_start + columns.y],
        scratch[g_start + columns.z],
        scratch[g_start + columns.w],
    );
    (*sums)[0][0] += x_low.x * g;
    (*sums)[0][1] += x_low.y * g;
    (*sums)[0][2] += x_low.z * g;
    (*sums)[0][3] += x_low.w * g;
    (*sums)[1][0] += x_high.x * g;
    (*sums)[1][1] += x_high.y * g;
    (*sums)[1][2] += x_high.z * g;
    (*sums)[1][3] += x_high.w * g;
}

// Subtracts learning_rate * gradient from parameter row `parameter` (the
// bias when it equals d) in class `column`, and returns the new value.
fn apply_update(parameter: u32, column: u32, gradient: f32) -> f32 {
    var updated: f32;
    if parameter == params.features {
        updated = bias[column] - params.learning_rate * gradient;
        bias[column] = updated;
    } else {
        let index = parameter * params.classes + column;
        updated = weights[index] - params.learning_rate * gradient;
        weights[index] = updated;
    }
    return updated;
}
