// Bias gradient: c[j] = sum over rows r, in order, of a[r, j] for the
// rows x n matrix at a_offset. One invocation per column.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let column = linear_index(workgroup, workgroups, local);
    let n = params.n;
    if column >= n {
        return;
    }
    var sum = 0.0;
    for (var r = 0u; r < params.rows; r++) {
        sum += net[params.a_offset + r * n + column];
    }
    net[params.c_offset + column] = sum;
}
