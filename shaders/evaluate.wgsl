// Evaluation: one invocation per row computes the row's logits block by
// block, takes the argmax and counts a misclassified row with atomicAdd.
// Invocations past the last row compute on the last row and count nothing,
// which keeps control flow uniform for block_dot's loads.
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
    let valid = index < params.rows;
    let row = min(index, params.rows - 1u);
    let k = params.classes;
    let x_start = (params.row_offset + row) * params.features;

    var best = 0u;
    var best_found = false;
    var best_value = 0.0;
    for (var block = 0u; block < class_blocks(k); block++) {
        // Same order of operations as logits.wgsl: the sum, then the bias.
        let sums = block_dot(x_start, block);
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            let c = block * CLASS_BLOCK + j;
            if c < k {
                let value = sums[j] + bias[c];
                if beats(value, best_found, best_value) {
                    best = c;
                    best_value = value;
                    best_found = true;
                }
            }
        }
    }
    if valid && best != labels[params.row_offset + row] {
        atomicAdd(&status[STATUS_ERRORS], 1u);
    }
}
