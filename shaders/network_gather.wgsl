// Copies the rows of a batch into the input matrix at c_offset in `net`
// (rows x features) and their labels into `batch_labels`. One invocation
// per element. Batch row r is split row row_start + r, or with
// FLAG_USE_ORDER split row order[row_start + r].

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let d = params.features;
    if index >= params.rows * d {
        return;
    }
    let row = index / d;
    let column = index % d;
    var source = params.row_start + row;
    if (params.flags & FLAG_USE_ORDER) != 0u {
        source = order[source];
    }
    net[params.c_offset + index] = load_feature(source * d + column);
    if column == 0u {
        batch_labels[row] = labels[source];
    }
}
