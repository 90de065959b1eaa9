//! Training any [`Model`] on the CPU: forward and backward passes through
//! dense layers with ndarray's matrix products, then an [`Optimizer`] step.
//!
//! This is the reference for the GPU network kernels. Matrix products run
//! through `matrixmultiply`, one rayon task per fixed block of output
//! columns, so the summation order, and therefore every result, does not
//! depend on the thread count.

use crate::backend::Setup;
use crate::model::{Activation, Dense, Model};
use crate::optim::{Optimizer, OptimizerState, Penalty, TensorKind};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Output columns per rayon task in matrix products.
const COLUMN_BLOCK: usize = 64;

/// Computes `c = a · b + beta * c`, one rayon task per block of
/// [`COLUMN_BLOCK`] columns of `c`.
fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: &mut Array2<f32>) {
    c.axis_chunks_iter_mut(Axis(1), COLUMN_BLOCK)
        .into_par_iter()
        .zip(b.axis_chunks_iter(Axis(1), COLUMN_BLOCK).into_par_iter())
        .for_each(|(mut c_block, b_block)| general_mat_mul(1.0, &a, &b_block, beta, &mut c_block));
}

/// Parameters, optimiser state and scratch buffers of one network.
#[derive(Clone, Debug)]
pub struct Network {
    /// Template of the model kind and architecture.
    template: Model,
    /// Current parameters, input layer first.
    pub layers: Vec<Dense>,
    activation: Activation,
    optimizer: Optimizer,
    penalty: Penalty,
    /// Optimiser state in the model's layout.
    pub state: OptimizerState,
    /// Outputs of each layer for the current batch: hidden activations, then logits.
    outputs: Vec<Array2<f32>>,
    /// Gradient with respect to the current layer's pre-activation output.
    delta: Array2<f32>,
    /// Gradient with respect to the previous layer's output.
    delta_previous: Array2<f32>,
    weight_grad: Array2<f32>,
    bias_grad: Vec<f32>,
    /// Finiteness of every parameter after the last update.
    finite: bool,
}

impl Network {
    /// Creates the network of `setup`.
    ///
    /// # Panics
    /// If `setup.state` does not fit the model; [`Setup::validate`] checks it.
    pub fn new(setup: &Setup) -> Self {
        let layers = setup.model.to_layers();
        let shapes: Vec<(usize, usize)> = layers.iter().map(|layer| layer.weights.dim()).collect();
        let state = setup
            .state
            .clone()
            .unwrap_or_else(|| OptimizerState::zeros(&setup.optimizer, &shapes));
        Network {
            template: setup.model.clone(),
            activation: setup.model.activation().unwrap_or_default(),
            layers,
            optimizer: setup.optimizer,
            penalty: setup.penalty,
            state,
            outputs: Vec::new(),
            delta: Array2::zeros((0, 0)),
            delta_previous: Array2::zeros((0, 0)),
            weight_grad: Array2::zeros((0, 0)),
            bias_grad: Vec::new(),
            finite: true,
        }
    }

    /// Returns the current parameters as a model of the setup's kind.
    pub fn model(&self) -> Model {
        self.template.with_layers(self.layers.clone())
    }

    /// Returns whether every parameter was finite after the last step (true
    /// before the first one). The optimiser update computes it in its pass
    /// over the parameters, so no extra pass is needed.
    pub fn is_finite(&self) -> bool {
        self.finite
    }

    /// Computes every layer's output for the rows of `x` into `self.outputs`.
    fn forward(&mut self, x: ArrayView2<'_, f32>) {
        let rows = x.nrows();
        let last = self.layers.len() - 1;
        self.outputs
            .resize_with(self.layers.len(), || Array2::zeros((0, 0)));
        for (index, layer) in self.layers.iter().enumerate() {
            let (before, rest) = self.outputs.split_at_mut(index);
            let input = if index == 0 {
                x.view()
            } else {
                before[index - 1].view()
            };
            let output = &mut rest[0];
            if output.dim() != (rows, layer.outputs()) {
                *output = Array2::zeros((rows, layer.outputs()));
            }
            output.assign(&layer.bias.view().insert_axis(Axis(0)));
            matmul(input, layer.weights.view(), 1.0, output);
            if index < last {
                let activation = self.activation;
                output.par_mapv_inplace(|value| activation.apply(value));
            }
        }
    }

    /// Runs one optimiser step on the rows of `x` and returns the mean loss
    /// of the batch before the step (without the penalty terms).
    pub fn step(&mut self, x: ArrayView2<'_, f32>, labels: &[u32], learning_rate: f32) -> f32 {
        let rows = x.nrows();
        assert_eq!(labels.len(), rows, "one label per row");
        self.forward(x);
        let last = self.layers.len() - 1;
        let classes = self.layers[last].outputs();
        let scale = 1.0 / rows as f32;

        // Softmax and negative log-likelihood, turning the logits into their gradient.
        let logits = &mut self.outputs[last];
        let mut loss = 0.0f64;
        for (mut row, &label) in logits.axis_iter_mut(Axis(0)).zip(labels) {
            loss += softmax_nll_grad(
                row.as_slice_mut().expect("outputs are standard layout"),
                label as usize,
                scale,
            ) as f64;
        }
        std::mem::swap(&mut self.delta, &mut self.outputs[last]);
        debug_assert_eq!(self.delta.dim(), (rows, classes));

        self.state.steps += 1;
        let t = self.state.steps;
        let mut finite = true;
        let slots = self.optimizer.slots();
        for index in (0..self.layers.len()).rev() {
            let input = if index == 0 {
                x.view()
            } else {
                self.outputs[index - 1].view()
            };
            let (inputs, outputs) = self.layers[index].weights.dim();
            if self.weight_grad.dim() != (inputs, outputs) {
                self.weight_grad = Array2::zeros((inputs, outputs));
            }
            matmul(input.t(), self.delta.view(), 0.0, &mut self.weight_grad);
            self.bias_grad.clear();
            self.bias_grad.resize(outputs, 0.0);
            for row in self.delta.axis_iter(Axis(0)) {
                for (sum, &value) in self.bias_grad.iter_mut().zip(row) {
                    *sum += value;
                }
            }

            // The previous layer's gradient uses this layer's weights before the update.
            if index > 0 {
                if self.delta_previous.dim() != (rows, inputs) {
                    self.delta_previous = Array2::zeros((rows, inputs));
                }
                matmul(
                    self.delta.view(),
                    self.layers[index].weights.t(),
                    0.0,
                    &mut self.delta_previous,
                );
                let activation = self.activation;
                ndarray::Zip::from(&mut self.delta_previous)
                    .and(&self.outputs[index - 1])
                    .par_for_each(|delta, &output| {
                        *delta *= activation.derivative_from_output(output)
                    });
            }

            let layer = &mut self.layers[index];
            let weight_grad = self.weight_grad.as_slice_mut().expect("standard layout");
            let weights = layer.weights.as_slice_mut().expect("standard layout");
            let (weight_state, bias_state) = {
                let (head, tail) = self.state.tensors.split_at_mut(2 * index + 1);
                (&mut head[2 * index], &mut tail[0])
            };
            debug_assert_eq!(weight_state.len(), weights.len() * slots);
            finite &= self.optimizer.update_parallel(
                TensorKind::Weights,
                weights,
                weight_grad,
                weight_state,
                self.penalty,
                learning_rate,
                t,
            );
            let bias = layer.bias.as_slice_mut().expect("standard layout");
            finite &= self.optimizer.update(
                TensorKind::Bias,
                bias,
                &self.bias_grad,
                bias_state,
                learning_rate,
                t,
            );

            if index > 0 {
                std::mem::swap(&mut self.delta, &mut self.delta_previous);
            }
        }
        self.finite = finite;
        (loss / rows as f64) as f32
    }

    /// Writes the logits of the rows of `x` into the last output buffer and
    /// returns the number of rows whose argmax differs from the label.
    pub fn count_errors(&mut self, x: ArrayView2<'_, f32>, labels: &[u32]) -> u64 {
        self.forward(x);
        let logits = &self.outputs[self.layers.len() - 1];
        super::ops::argmax_rows(logits.view())
            .iter()
            .zip(labels)
            .filter(|(predicted, label)| predicted != label)
            .count() as u64
    }
}

/// Turns one row of logits into `(softmax - onehot(label)) * scale` and
/// returns the row's loss `logsumexp(z) - z[label]`.
pub fn softmax_nll_grad(row: &mut [f32], label: usize, scale: f32) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&z| (z - max).exp()).sum();
    let log_sum = sum.ln();
    let loss = max + log_sum - row[label];
    for z in row.iter_mut() {
        *z = (*z - max - log_sum).exp() * scale;
    }
    row[label] -= scale;
    loss
}
