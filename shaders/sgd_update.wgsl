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
    let tile = parameter_tile(first_parameter);
    let columns = block_columns(block);

    let zero = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var sums = array<mat4x4<f32>, 2>(zero, zero);
    for (var r = 0u; r < params.rows; r++) {
        add_row_gradient(r, tile, columns, &sums);
    }

    let first = block * CLASS_BLOCK;
    var all_finite = true;
    for (var p = 0u; p < TILE_ROWS; p++) {
        let parameter = first_parameter + p;
        if parameter > d {
            break;
        }
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            let column = first + j;
            if column >= k {
                break;
            }
            let updated = apply_update(parameter, column, sums[p / 4u][p % 4u][j]);
            all_finite = all_finite && is_finite_f32(updated);
        }
    }
    if !all_finite {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
