// Optimiser update of one layer, term by term as Optimizer::update in
// src/optim.rs writes it. One invocation per parameter: the first m are the
// weights and the next n the bias, which follows the weights in `net`
// (parameters at a_offset, gradients at b_offset). The weight state holds
// `slots` vectors of m values from state_offset, and the bias state
// `slots` vectors of n values after it. The L1 and L2 penalty gradients and
// AdamW's decay apply to weights only. A non-finite updated parameter
// records the step in the status buffer.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = linear_index(workgroup, workgroups, local);
    let weights = params.m;
    let count = weights + params.n;
    if index >= count {
        return;
    }
    let is_weight = index < weights;
    var tensor_length = params.n;
    var state_index = params.state_offset + params.slots * weights + (index - weights);
    if is_weight {
        tensor_length = weights;
        state_index = params.state_offset + index;
    }

    var p = net[params.a_offset + index];
    var g = net[params.b_offset + index];
    if is_weight {
        let direction = select(select(0.0, -1.0, p < 0.0), 1.0, p > 0.0);
        g += params.l1 * direction + 2.0 * params.l2 * p;
    }
    let lr = params.learning_rate;
    switch params.optimizer {
        case OPTIMIZER_MOMENTUM, OPTIMIZER_NESTEROV: {
            let v = params.beta1 * state[state_index] + g;
            state[state_index] = v;
            var change = v;
            if params.optimizer == OPTIMIZER_NESTEROV {
                change = g + params.beta1 * v;
            }
            p -= lr * change;
        }
        case OPTIMIZER_ADAM, OPTIMIZER_ADAMW: {
            if params.optimizer == OPTIMIZER_ADAMW && is_weight {
                p -= (lr * params.weight_decay) * p;
            }
            let m = params.beta1 * state[state_index] + (1.0 - params.beta1) * g;
            let v = params.beta2 * state[state_index + tensor_length]
                + (1.0 - params.beta2) * g * g;
            state[state_index] = m;
            state[state_index + tensor_length] = v;
            p -= lr * (m / params.correction1) / (sqrt(v / params.correction2) + params.epsilon);
        }
        default: {
            p -= lr * g;
        }
    }
    net[params.a_offset + index] = p;
    if !is_finite_f32(p) {
        atomicMin(&status[STATUS_FIRST_NON_FINITE_STEP], params.step);
    }
}
