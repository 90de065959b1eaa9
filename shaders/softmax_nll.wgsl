// Fused softmax and negative log-likelihood. One invocation per row replaces
// the row's logits in scratch by (softmax(z) - onehot(label)) * scale and
// writes the loss logsumexp(z) - z[label]. A non-finite loss records the
// step in the status buffer with atomicMin, so the earliest step wins.

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
    let k = params.classes;
    let start = row * k;
    let label = labels[params.row_offset + row];

    // Subtracting the row maximum keeps every exponent at or below 0. A NaN
    // or +infinity logit makes the loss NaN, as on the CPU; it is flagged
    // here as well because the compiler may assume floats are finite.
    var max_logit = scratch[start];
    var logits_valid = true;
    for (var c = 0u; c < k; c++) {
        let z = scratch[start + c];
        max_logit = max(max_logit, z);
        if is_nan_f32(z) || bitcast<u32>(z) == POSITIVE_INFINITY_BITS {
            logits_valid = false;
        }
    }
    var sum = 0.0;
    for (var c = 0u; c < k; c++) {
        sum += exp(scratch[start + c] - max_logit);
    }
    let log_sum = log(sum);
    let loss = max_logit + log_sum - scratch[start + label];
    losses[row] = loss;
    if !is_finite_f32(loss) || !logits_valid {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }

    for (var c = 0u; c < k; c++) {
        scratch[start + c] = exp(scratch[start + c] - max_logit - log_sum) * params.scale;
    }
    scratch[start + label] -= params.scale;
}
