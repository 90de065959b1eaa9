// Logits of a training batch: scratch[r * k + c] = b[c] + sum_i x[r, i] * W[i, c].
// One invocation per (row, block of CLASS_BLOCK classes), rows fastest; the
// sum runs over features in order, one accumulator per class.
//
// Within a loop over features the weight addresses depend only on the loop
// counter and the block, so every invocation of a SIMD group loads the same
// address, and only the feature load differs per invocation. Control flow
// stays uniform until the final store, because llvmpipe (lavapipe) turns a
// load at a uniform address into one scalar load only where it can tell that
// all invocations run it.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let k = params.classes;
    let blocks = class_blocks(k);
    // Invocations past the last output compute on clamped indices and store nothing.
    let valid = index < params.rows * blocks;
    let row = min(index % params.rows, params.rows - 1u);
    let block = min(index / params.rows, blocks - 1u);
    let x_start = (params.row_offset + row) * params.features;

    let sum = block_dot(x_start, block);
    if valid {
        let first = block * CLASS_BLOCK;
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            let column = first + j;
            if column < k {
                scratch[row * k + column] = sum[j] + bias[column];
            }
        }
    }
}
