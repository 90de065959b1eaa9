// The weight and bias gradients fused with the SGD update, the same sums as
// sgd_update.wgsl, with the sum over the batch's rows split across a
// workgroup. One workgroup per tile of TILE_ROWS parameter rows by
// CLASS_BLOCK classes, parameter row tiles fastest. Invocation t sums rows
// t, t + WORKGROUP_SIZE, t + 2 * WORKGROUP_SIZE and so on in order.
// reduce_workgroup (split_reduce.wgsl) then adds the partial sums in a
// fixed order, and the invocations apply the update. Results repeat from
// run to run but depend on the workgroup size. A non-finite updated
// parameter records the step in the status buffer.
//
// sgd_update.wgsl runs one invocation per tile, 297 for MNIST's 785
// parameter rows and 10 classes, each looping over all rows of the batch.
// This kernel gives each tile a workgroup, for hardware GPUs.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = workgroup.y * workgroups.x + workgroup.x;
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
    for (var r = local; r < params.rows; r += WORKGROUP_SIZE) {
        add_row_gradient(r, tile, columns, &sums);
    }
    let total = reduce_workgroup(local, sums, 2u);

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
        let updated = apply_update(parameter, column, total[p / 4u][p % 4u][j]);
        all_finite = all_finite && is_finite_f32(updated);
    }
    if !all_finite {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
