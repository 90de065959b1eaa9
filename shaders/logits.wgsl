// Logits of a training batch: scratch[r * k + c] = b[c] + sum_i x[r, i] * W[i, c].
// One invocation per tile of TILE_ROWS rows by CLASS_BLOCK classes, row
// tiles fastest; each sum runs over features in order. A last tile with
// fewer rows computes the last row again for the missing ones and stores
// only its own rows.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let k = params.classes;
    let row_tiles = blocks_of(params.rows, TILE_ROWS);
    let blocks = blocks_of(k, CLASS_BLOCK);
    if index >= row_tiles * blocks {
        return;
    }
    let first_row = (index % row_tiles) * TILE_ROWS;
    let block = index / row_tiles;
    let offset = vec4<u32>(params.row_offset);

    var sums = tile_dot(tile_rows(first_row) + offset, tile_rows(first_row + 4u) + offset, block);
    let first = block * CLASS_BLOCK;
    for (var r = 0u; r < TILE_ROWS; r++) {
        let row = first_row + r;
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            let column = first + j;
            if row < params.rows && column < k {
                scratch[row * k + column] = sums[r / 4u][r % 4u][j] + bias[column];
            }
        }
    }
}
