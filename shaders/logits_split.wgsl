// Logits of a training batch, the same sums as logits.wgsl, with each dot
// product split across a workgroup. One workgroup per tile of SPLIT_ROWS
// rows by CLASS_BLOCK classes, row tiles fastest. Invocation t sums
// features t, t + WORKGROUP_SIZE, t + 2 * WORKGROUP_SIZE and so on in
// order, so neighbouring invocations read neighbouring features of a row.
// reduce_workgroup (split_reduce.wgsl) then adds the partial sums in a
// fixed order: results repeat from run to run but depend on the workgroup
// size.
//
// A hardware GPU runs many invocations at once, and logits.wgsl launches
// only one per tile of 8 rows, 225 for a batch of 600 MNIST rows. This
// kernel launches a workgroup per tile instead, and the host picks it for
// hardware adapters.

const SPLIT_ROWS: u32 = 4u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = workgroup.y * workgroups.x + workgroup.x;
    let d = params.features;
    let k = params.classes;
    let row_tiles = blocks_of(params.rows, SPLIT_ROWS);
    if tile >= row_tiles * blocks_of(k, CLASS_BLOCK) {
        return;
    }
    let first_row = (tile % row_tiles) * SPLIT_ROWS;
    let block = tile / row_tiles;
    let columns = block_columns(block);
    let x_start = (tile_rows(first_row) + vec4<u32>(params.row_offset)) * d;

    let zero = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var sums = zero;
    for (var i = local; i < d; i += WORKGROUP_SIZE) {
        let w = class_weights(i, columns);
        sums[0] += load_feature(x_start.x + i) * w;
        sums[1] += load_feature(x_start.y + i) * w;
        sums[2] += load_feature(x_start.z + i) * w;
        sums[3] += load_feature(x_start.w + i) * w;
    }
    // The tile has 4 rows, so only the first matrix is summed.
    let total = reduce_workgroup(local, array<mat4x4<f32>, 2>(sums, zero), 1u)[0];

    // Invocations store the tile's outputs, several each when the
    // workgroup has fewer invocations than the tile has outputs.
    for (var output = local; output < SPLIT_ROWS * CLASS_BLOCK; output += WORKGROUP_SIZE) {
        let r = output / CLASS_BLOCK;
        let j = output % CLASS_BLOCK;
        let row = first_row + r;
        let column = block * CLASS_BLOCK + j;
        if row < params.rows && column < k {
            scratch[row * k + column] = total[r][j] + bias[column];
        }
    }
}
