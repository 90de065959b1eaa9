// Weight and bias gradients fused with the SGD update. One invocation per
// parameter: index e < d * k is weight (e / k, e % k) with gradient
// sum_r x[r, e / k] * G[r, e % k]; the last k indices are the biases with
// gradient sum_r G[r, c]. Rows are summed in order, so results repeat from
// run to run. A non-finite updated parameter records the step in the status
// buffer.
//
// TODO: each multiply-add loads both operands from storage, with no tiling
// in workgroup memory. examples/gpu_epoch_time.rs measured about 13 s per
// MNIST-sized epoch on lavapipe with 2 cores, roughly half in this kernel
// (an estimate from its share of the multiply-adds).

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let k = params.classes;
    let weight_count = params.features * k;
    if index >= weight_count + k {
        return;
    }

    var updated: f32;
    if index < weight_count {
        let feature = index / k;
        let column = index % k;
        var gradient = 0.0;
        for (var r = 0u; r < params.rows; r++) {
            let x = features[(params.row_offset + r) * params.features + feature];
            gradient += x * scratch[r * k + column];
        }
        updated = weights[index] - params.learning_rate * gradient;
        weights[index] = updated;
    } else {
        let column = index - weight_count;
        var gradient = 0.0;
        for (var r = 0u; r < params.rows; r++) {
            gradient += scratch[r * k + column];
        }
        updated = bias[column] - params.learning_rate * gradient;
        bias[column] = updated;
    }
    if !is_finite_f32(updated) {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
