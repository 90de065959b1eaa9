// Declarations shared by the classic and the network kernels. Each engine's
// prelude declares WORKGROUP_SIZE, which linear_index uses.

// Slots of the status buffer.
const STATUS_FIRST_NON_FINITE_STEP: u32 = 0u;
const STATUS_ERRORS: u32 = 1u;

// WGSL lets implementations assume that floats are finite, so comparisons
// with NaN or infinity cannot be trusted; these tests read the bits instead.
fn is_finite_f32(value: f32) -> bool {
    return (bitcast<u32>(value) & 0x7f800000u) != 0x7f800000u;
}

fn is_nan_f32(value: f32) -> bool {
    let bits = bitcast<u32>(value);
    return (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u;
}

const POSITIVE_INFINITY_BITS: u32 = 0x7f800000u;
const NEGATIVE_INFINITY_BITS: u32 = 0xff800000u;

// Linear index of an invocation in a dispatch that may use a second
// dimension when the first would exceed max_compute_workgroups_per_dimension.
fn linear_index(workgroup: vec3<u32>, workgroups: vec3<u32>, local: u32) -> u32 {
    return (workgroup.y * workgroups.x + workgroup.x) * WORKGROUP_SIZE + local;
}
