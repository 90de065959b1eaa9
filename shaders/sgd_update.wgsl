// Weight and bias gradients fused with the SGD update. One invocation per
// (feature, block of CLASS_BLOCK classes), features fastest: feature f < d
// updates weights (f, c) with gradient sum_r x[r, f] * G[r, c] for the
// classes c of the block, and f = d updates the biases with gradient
// sum_r G[r, c], computed as the same sum with x = 1. Rows are summed in
// order, so results repeat from run to run. A non-finite updated parameter
// records the step in the status buffer.
//
// The gradient addresses depend only on the row and the block, so a SIMD
// group loads each once, and the feature loads of neighbouring invocations
// are neighbouring addresses. Control flow stays uniform until the stores.
//
// TODO: llvmpipe loads storage inside a loop lane by lane, even at uniform
// addresses, so each load still costs about as much as a gather. With
// examples/gpu_epoch_time.rs on lavapipe (LLVM 15, 2-core AMD EPYC VM) an
// MNIST-sized epoch took 11.5 to 12.2 s, against 15.3 s for one invocation
// per parameter, measured back to back.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let d = params.features;
    let k = params.classes;
    let blocks = class_blocks(k);
    // Invocations past the last parameter compute on clamped indices and store nothing.
    let valid = index < (d + 1u) * blocks;
    let feature = index % (d + 1u);
    let block = min(index / (d + 1u), blocks - 1u);
    let is_bias = feature == d;
    let x_column = min(feature, d - 1u);
    let columns = block_columns(block);

    var gradient = vec4<f32>(0.0);
    for (var r = 0u; r < params.rows; r++) {
        let x = select(features[(params.row_offset + r) * d + x_column], 1.0, is_bias);
        let g_start = r * k;
        let g = vec4<f32>(
            scratch[g_start + columns.x],
            scratch[g_start + columns.y],
            scratch[g_start + columns.z],
            scratch[g_start + columns.w],
        );
        gradient += x * g;
    }
    if !valid {
        return;
    }

    let first = block * CLASS_BLOCK;
    var all_finite = true;
    for (var j = 0u; j < CLASS_BLOCK; j++) {
        let column = first + j;
        if column >= k {
            break;
        }
        var updated: f32;
        if is_bias {
            updated = bias[column] - params.learning_rate * gradient[j];
            bias[column] = updated;
        } else {
            let w_index = feature * k + column;
            updated = weights[w_index] - params.learning_rate * gradient[j];
            weights[w_index] = updated;
        }
        all_finite = all_finite && is_finite_f32(updated);
    }
    if !all_finite {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
