// Softmax with negative log-likelihood, one invocation per batch row: reads
// the row's logits (n classes) at a_offset and writes the loss gradient
// (softmax - onehot(label)) * scale at c_offset, as softmax_nll_grad in
// src/cpu/network.rs. A row whose loss is not finite records the step in
// the status buffer.

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
    let k = params.n;
    let logits = params.a_offset + row * k;
    let gradient = params.c_offset + row * k;
    let label = batch_labels[row];

    // A NaN or +infinity logit makes the loss non-finite, but the max and
    // the loss below cannot show it reliably when floats may be assumed finite.
    var max_logit = net[logits];
    var logits_valid = true;
    for (var c = 0u; c < k; c++) {
        let z = net[logits + c];
        max_logit = max(max_logit, z);
        if is_nan_f32(z) || bitcast<u32>(z) == POSITIVE_INFINITY_BITS {
            logits_valid = false;
        }
    }
    var sum = 0.0;
    for (var c = 0u; c < k; c++) {
        sum += exp(net[logits + c] - max_logit);
    }
    let log_sum = log(sum);
    let loss = max_logit + log_sum - net[logits + label];
    if !is_finite_f32(loss) || !logits_valid {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
    for (var c = 0u; c < k; c++) {
        net[gradient + c] = exp(net[logits + c] - max_logit - log_sum) * params.scale;
    }
    net[gradient + label] -= params.scale;
}
