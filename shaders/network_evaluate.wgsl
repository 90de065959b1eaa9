// Error count: one invocation per batch row takes the argmax of the row's
// logits (n classes at a_offset) and counts the row with atomicAdd when it
// differs from the label.
//
// The argmax matches argmax_rows in src/cpu/ops.rs, which starts from
// -infinity at class 0 and moves on a strict `>`: the first maximum wins
// ties, NaN never wins, and a row with no value above -infinity predicts
// class 0.

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
    let row = linear_index(workgroup, workgroups, local);
    if row >= params.rows {
        return;
    }
    let logits = params.a_offset + row * params.n;
    var best = 0u;
    var best_found = false;
    var best_value = 0.0;
    for (var c = 0u; c < params.n; c++) {
        let value = net[logits + c];
        if beats(value, best_found, best_value) {
            best = c;
            best_value = value;
            best_found = true;
        }
    }
    if best != batch_labels[row] {
        atomicAdd(&status[STATUS_ERRORS], 1u);
    }
}
