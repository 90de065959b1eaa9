// Evaluation: one invocation per tile of TILE_ROWS rows computes the rows'
// logits block by block, takes each row's argmax and counts misclassified
// rows with atomicAdd. A last tile with fewer rows computes the last row
// again for the missing ones and counts only its own rows.
//
// The argmax matches the CPU path, which starts from -infinity at class 0
// and moves on a strict `>`: the first maximum wins ties, NaN never wins,
// and a row with no value above -infinity predicts class 0.

// Whether `value` replaces the current best. `best_found` is false while the
// best is still the starting -infinity.
fn beats(value: f32, best_found: bool, best_value: f32) -> bool {
    if is_nan_f32(value) || bitcast<u32>(value) == NEGATIVE_INFINITY_BITS {
        return false;
    }
    if !best_found {
        return true;
    }
    if !is_finite_f32(best_value) {
        // The best is +infinity, which nothing beats.
        return false;
    }
    if !is_finite_f32(value) {
        // +infinity beats every finite value.
        return true;
    }
    return value > best_value;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    if index >= blocks_of(params.rows, TILE_ROWS) {
        return;
    }
    let k = params.classes;
    let first_row = index * TILE_ROWS;
    let offset = vec4<u32>(params.row_offset);
    let low = tile_rows(first_row) + offset;
    let high = tile_rows(first_row + 4u) + offset;

    // Entry r of each array tracks row first_row + r.
    var best: array<u32, TILE_ROWS>;
    var best_found: array<bool, TILE_ROWS>;
    var best_value: array<f32, TILE_ROWS>;
    for (var block = 0u; block < blocks_of(k, CLASS_BLOCK); block++) {
        // Same order of operations as logits.wgsl: the sum, then the bias.
        var sums = tile_dot(low, high, block);
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            let c = block * CLASS_BLOCK + j;
            if c >= k {
                break;
            }
            for (var r = 0u; r < TILE_ROWS; r++) {
                let value = sums[r / 4u][r % 4u][j] + bias[c];
                if beats(value, best_found[r], best_value[r]) {
                    best[r] = c;
                    best_value[r] = value;
                    best_found[r] = true;
                }
            }
        }
    }
    for (var r = 0u; r < TILE_ROWS; r++) {
        let row = first_row + r;
        if row < params.rows && best[r] != labels[params.row_offset + row] {
            atomicAdd(&status[STATUS_ERRORS], 1u);
        }
    }
}
