// The reduction that the split kernels share. Each invocation of a
// workgroup holds partial sums for the workgroup's output tile, as two
// 4 x 4 matrices (128 bytes per invocation, which the host checks against
// the device's workgroup storage).

var<workgroup> partial: array<array<mat4x4<f32>, 2>, WORKGROUP_SIZE>;

// Returns the sum of every invocation's `sums` in the workgroup, added
// pairwise in a fixed order: the invocations from the largest power of two
// up fold into the ones below it, then the width halves until one sum is
// left. Only the first `matrices` (1 or 2) of the two are added. Every
// invocation must call it, from uniform control flow.
fn reduce_workgroup(
    local: u32,
    sums: array<mat4x4<f32>, 2>,
    matrices: u32,
) -> array<mat4x4<f32>, 2> {
    partial[local] = sums;
    var width = 1u;
    while width * 2u <= WORKGROUP_SIZE {
        width *= 2u;
    }
    workgroupBarrier();
    if local + width < WORKGROUP_SIZE {
        add_partial(local, local + width, matrices);
    }
    while width > 1u {
        width /= 2u;
        workgroupBarrier();
        if local < width {
            add_partial(local, local + width, matrices);
        }
    }
    // NOTE: lavapipe runs a workgroup's invocations in chunks, one after
    // another between barriers, so the tests pass without this barrier.
    // On a hardware GPU the read of partial[0] below would race.
    workgroupBarrier();
    return partial[0];
}

// Adds the first `matrices` matrices of invocation `addend_index`'s
// partial sums to those of invocation `sum_index`.
fn add_partial(sum_index: u32, addend_index: u32, matrices: u32) {
    for (var m = 0u; m < matrices; m++) {
        partial[sum_index][m] += partial[addend_index][m];
    }
}
