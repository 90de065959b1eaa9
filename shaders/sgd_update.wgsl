// Weight and bias gradients fused with the SGD update. One invocation per
// tile of TILE_ROWS parameter rows by CLASS_BLOCK classes, parameter row
// tiles fastest. Parameter row p < d is feature p: weights (p, c) get the
// gradient sum_r x[r, p] * G[r, c]. Parameter row d is the bias, whose
// gradient sum_r G[r, c] is computed as the same sum with x = 1. Rows are
// summed in order, so results repeat from run to run. A non-finite updated
// parameter records the step in the status buffer.
//
// TODO: on llvmpipe the time still follows the 12 storage loads per 32
// multiply-adds of a tile, even though the gradient addresses are the same
// in every invocation. With examples/gpu_epoch_time.rs on lavapipe (LLVM
// 15, 2-core AMD EPYC VM, load average near 4 from other processes) an
// MNIST-sized epoch took 4.2 to 6.9 s, against 14.6 to 21.9 s for one
// invocation per output, measured back to back. Workgroup memory or larger
// tiles may cut it further.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let d = params.features;
    let k = params.classes;
    let parameter_tiles = blocks_of(d + 1u, TILE_ROWS);
    if index >= parameter_tiles * blocks_of(k, CLASS_BLOCK) {
        return;
    }
    let first_parameter = (index % parameter_tiles) * TILE_ROWS;
    let block = index / parameter_tiles;
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
    for (var r = 0u; r < params.rows; r++) {
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

    let first = block * CLASS_BLOCK;
    var all_finite = true;
    for (var p = 0u; p < TILE_ROWS; p++) {
        let parameter = first_parameter + p;
        if parameter > d {
            break;
        }
        var gradient = gradients_high[p % 4u];
        if p < 4u {
            gradient = gradients[p];
        }
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            let column = first + j;
            if column >= k {
                break;
            }
            var updated: f32;
            if parameter == d {
                updated = bias[column] - params.learning_rate * gradient[j];
                bias[column] = updated;
            } else {
                let w_index = parameter * k + column;
                updated = weights[w_index] - params.learning_rate * gradient[j];
                weights[w_index] = updated;
            }
            all_finite = all_finite && is_finite_f32(updated);
        }
    }
    if !all_finite {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
