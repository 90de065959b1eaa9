// The weight and bias gradients fused with the SGD update, the same sums as
// sgd_update.wgsl, with the sum over the batch's rows split across a
// workgroup. One workgroup per tile of TILE_ROWS parameter rows by
// CLASS_BLOCK classes, parameter row tiles fastest. Invocation t sums rows
// t, t + WORKGROUP_SIZE, t + 2 * WORKGROUP_SIZE and so on in order; the
// workgroup then adds the partial sums pairwise in a fixed order, and its
// invocations apply the update. Results repeat from run to run but depend
// on the workgroup size. A non-finite updated parameter records the step
// in the status buffer.
//
// sgd_update.wgsl runs one invocation per tile, 297 for MNIST's 785
// parameter rows and 10 classes, each looping over all rows of the batch;
// this kernel gives each tile a workgroup for hardware GPUs.

var<workgroup> partial: array<array<mat4x4<f32>, 2>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = workgroup.y * workgroups.x + workgroup.x;
    let d = params.features;
    let k = params.classes;
    let parameter_tiles = blocks_of(d + 1u, TILE_ROWS);
    if tile >= parameter_tiles * blocks_of(k, CLASS_BLOCK) {
        return;
    }
    let first_parameter = (tile % parameter_tiles) * TILE_ROWS;
    let block = tile / parameter_tiles;
    let parameters = vec4<u32>(first_parameter) + vec4<u32>(0u, 1u, 2u, 3u);
    let parameters_high = parameters + vec4<u32>(4u);
    // Feature columns of the tile, clamped into range for the bias row and
    // for parameter rows past it; those use x = 1 or store nothing.
    let x_columns = min(parameters, vec4<u32>(max(d, 1u) - 1u));
    let is_feature = parameters < vec4<u32>(d);
    let x_columns_high = min(parameters_high, vec4<u32>(max(d, 1u) - 1u));
    let is_feature_high = parameters_high < vec4<u32>(d);
    let columns = block_columns(block);

    var gradients = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var gradients_high = gradients;
    for (var r = local; r < params.rows; r += WORKGROUP_SIZE) {
        let x_start = (params.row_offset + r) * d;
        let x = select(
            vec4<f32>(1.0),
            vec4<f32>(
                load_feature(x_start + x_columns.x),
                load_feature(x_start + x_columns.y),
                load_feature(x_start + x_columns.z),
                load_feature(x_start + x_columns.w),
            ),
            is_feature,
        );
        let x_high = select(
            vec4<f32>(1.0),
            vec4<f32>(
                load_feature(x_start + x_columns_high.x),
                load_feature(x_start + x_columns_high.y),
                load_feature(x_start + x_columns_high.z),
                load_feature(x_start + x_columns_high.w),
            ),
            is_feature_high,
        );
        let g_start = r * k;
        let g = vec4<f32>(
            scratch[g_start + columns.x],
            scratch[g_start + columns.y],
            scratch[g_start + columns.z],
            scratch[g_start + columns.w],
        );
        gradients[0] += x.x * g;
        gradients[1] += x.y * g;
        gradients[2] += x.z * g;
        gradients[3] += x.w * g;
        gradients_high[0] += x_high.x * g;
        gradients_high[1] += x_high.y * g;
        gradients_high[2] += x_high.z * g;
        gradients_high[3] += x_high.w * g;
    }
    partial[local] = array<mat4x4<f32>, 2>(gradients, gradients_high);

    // Fold the invocations from the largest power of two up into the ones
    // below it, then halve the width until one sum is left.
    var width = 1u;
    while width * 2u <= WORKGROUP_SIZE {
        width *= 2u;
    }
    workgroupBarrier();
    if local + width < WORKGROUP_SIZE {
        partial[local][0] += partial[local + width][0];
        partial[local][1] += partial[local + width][1];
    }
    while width > 1u {
        width /= 2u;
        workgroupBarrier();
        if local < width {
            partial[local][0] += partial[local + width][0];
            partial[local][1] += partial[local + width][1];
        }
    }
    // NOTE: lavapipe runs a workgroup's invocations in chunks, one after
    // another between barriers, so the tests pass without this barrier;
    // on a hardware GPU the reads of partial[0] below would race.
    workgroupBarrier();

    // Invocations apply the tile's updates, several each when the workgroup
    // has fewer invocations than the tile has parameters.
    let first = block * CLASS_BLOCK;
    var all_finite = true;
    for (var output = local; output < TILE_ROWS * CLASS_BLOCK; output += WORKGROUP_SIZE) {
        let p = output / CLASS_BLOCK;
        let j = output % CLASS_BLOCK;
        let parameter = first_parameter + p;
        let column = first + j;
        if parameter > d || column >= k {
            continue;
        }
        let gradient = partial[0][p / 4u][p % 4u][j];
        var updated: f32;
        if parameter == d {
            updated = bias[column] - params.learning_rate * gradient;
            bias[column] = updated;
        } else {
            let w_index = parameter * k + column;
            updated = weights[w_index] - params.learning_rate * gradient;
            weights[w_index] = updated;
        }
        all_finite = all_finite && is_finite_f32(updated);
    }
    if !all_finite {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
