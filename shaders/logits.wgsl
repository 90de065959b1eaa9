// Logits of a training batch: scratch[r * k + c] = b[c] + sum_i x[r, i] * W[i, c].
// One invocation per (row, column); the sum runs over features in order.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    if index >= params.rows * params.classes {
        return;
    }
    let row = index / params.classes;
    let column = index % params.classes;
    let x_start = (params.row_offset + row) * params.features;

    var sum = 0.0;
    for (var i = 0u; i < params.features; i++) {
        sum += features[x_start + i] * weights[i * params.classes + column];
    }
    scratch[index] = sum + bias[column];
}
