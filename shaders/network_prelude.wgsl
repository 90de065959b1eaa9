// Declarations shared by the network kernels. The Rust side concatenates
// this file, a feature binding (features_f32.wgsl or features_u8.wgsl) and
// one kernel into a module, so all network kernels use one bind group
// layout.
//
// Every matrix lives in `net`, one f32 array, at an element offset from the
// per-dispatch parameters: the parameters of each layer (weights row-major
// `inputs x outputs`, then the bias), their gradients in the same layout,
// the gathered input batch and each layer's output, and each layer's
// gradient with respect to its pre-activation output. Keeping one array
// lets one matrix-multiply kernel read and write any of them.

// Mirrored by `NetworkParams` in src/gpu/network/kernels.rs; the two must
// keep the same field order and size (128 bytes).
struct NetworkParams {
    // Matrix multiply: C (m x n) = op(A) (m x k) * op(B) (k x n).
    m: u32,
    n: u32,
    k: u32,
    // FLAG_* bits below.
    flags: u32,
    a_offset: u32,
    b_offset: u32,
    c_offset: u32,
    // Bias of a forward epilogue, or the layer output whose activation
    // derivative a backward epilogue multiplies by.
    epilogue_offset: u32,
    // ACTIVATION_* of a forward epilogue or of a backward derivative.
    activation: u32,
    // Rows of the batch.
    rows: u32,
    // First row of the batch in the split (or in the training order).
    row_start: u32,
    // Features per input row.
    features: u32,
    // Global index of the training step, recorded when it goes non-finite.
    step: u32,
    // OPTIMIZER_* of the update kernel.
    optimizer: u32,
    // Optimiser state vectors per parameter.
    slots: u32,
    // First element of the updated layer's weight state in `state`.
    state_offset: u32,
    learning_rate: f32,
    // Factor applied to the loss gradient, 1 / rows.
    scale: f32,
    // Momentum factor, or Adam's first-moment decay.
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    weight_decay: f32,
    l1: f32,
    l2: f32,
    // Adam's bias corrections 1 - beta1^t and 1 - beta2^t.
    correction1: f32,
    correction2: f32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
    _padding3: u32,
    _padding4: u32,
    _padding5: u32,
}

const FLAG_TRANSPOSE_A: u32 = 1u;
const FLAG_TRANSPOSE_B: u32 = 2u;
const FLAG_USE_ORDER: u32 = 4u;
const FLAG_BIAS_ACTIVATION: u32 = 8u;
const FLAG_TIMES_DERIVATIVE: u32 = 16u;

const ACTIVATION_TANH: u32 = 0u;
const ACTIVATION_SIGMOID: u32 = 1u;
const ACTIVATION_RELU: u32 = 2u;
const ACTIVATION_IDENTITY: u32 = 3u;

const OPTIMIZER_SGD: u32 = 0u;
const OPTIMIZER_MOMENTUM: u32 = 1u;
const OPTIMIZER_NESTEROV: u32 = 2u;
const OPTIMIZER_ADAM: u32 = 3u;
const OPTIMIZER_ADAMW: u32 = 4u;

// Invocations per workgroup of the one-dimensional kernels, set by name
// when the pipeline is built.
override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> params: NetworkParams;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> order: array<u32>;
@group(0) @binding(4) var<storage, read_write> net: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> batch_labels: array<u32>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

// The activations as Activation::apply in src/model/mlp.rs writes them.
fn activate(kind: u32, x: f32) -> f32 {
    switch kind {
        case ACTIVATION_TANH: {
            // tanh(20) rounds to 1 in f32; the clamp keeps implementations
            // that compute tanh through exp(2x) away from inf / inf.
            return tanh(clamp(x, -20.0, 20.0));
        }
        case ACTIVATION_SIGMOID: {
            return 1.0 / (1.0 + exp(-x));
        }
        case ACTIVATION_RELU: {
            return max(x, 0.0);
        }
        default: {
            return x;
        }
    }
}

// Derivative of the activation from its output y, as
// Activation::derivative_from_output writes it.
fn derivative_from_output(kind: u32, y: f32) -> f32 {
    switch kind {
        case ACTIVATION_TANH: {
            return 1.0 - y * y;
        }
        case ACTIVATION_SIGMOID: {
            return y * (1.0 - y);
        }
        case ACTIVATION_RELU: {
            return select(0.0, 1.0, y > 0.0);
        }
        default: {
            return 1.0;
        }
    }
}
