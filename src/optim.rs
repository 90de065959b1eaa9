//! Optimisers, penalties and learning-rate schedules, shared by the CPU and
//! GPU paths.
//!
//! Every path applies the same update rules, written here once as
//! [`Optimizer::update`] on plain slices. The CPU path calls it directly and
//! the GPU kernels follow it term by term, so tests can hold one against the
//! other.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Update rule applied to each parameter tensor after its gradient is known.
///
/// With gradient `g`, learning rate `lr` and step count `t` (from 1):
/// - `Sgd`: `p -= lr * g`.
/// - `Momentum`: `v = mu * v + g`, then `p -= lr * v`, or with `nesterov`
///   `p -= lr * (g + mu * v)`. This is the form PyTorch uses.
/// - `Adam`: `m = b1 * m + (1 - b1) * g`, `v = b2 * v + (1 - b2) * g^2`,
///   `p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
/// - `AdamW`: Adam, after first shrinking weights (not biases) by
///   `p -= lr * weight_decay * p` (decoupled weight decay, Loshchilov and
///   Hutter, 2019).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// Plain stochastic gradient descent, the classic tutorial's rule.
    #[default]
    Sgd,
    /// SGD with classical or Nesterov momentum.
    Momentum {
        /// Momentum factor `mu`, in `[0, 1)`.
        momentum: f32,
        /// Use Nesterov's look-ahead form.
        nesterov: bool,
    },
    /// Adam (Kingma and Ba, 2015).
    Adam {
        /// Decay of the first moment, in `[0, 1)`.
        beta1: f32,
        /// Decay of the second moment, in `[0, 1)`.
        beta2: f32,
        /// Added to the root of the second moment, greater than 0.
        epsilon: f32,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        /// Decay of the first moment, in `[0, 1)`.
        beta1: f32,
        /// Decay of the second moment, in `[0, 1)`.
        beta2: f32,
        /// Added to the root of the second moment, greater than 0.
        epsilon: f32,
        /// Decoupled weight decay per unit of learning rate, at least 0.
        weight_decay: f32,
    },
}

/// Defaults of Adam's moment decays and epsilon, as in its paper.
pub const ADAM_DEFAULTS: (f32, f32, f32) = (0.9, 0.999, 1e-8);

/// Kind of tensor an update applies to. Weight decay and the L1 and L2
/// penalties apply to weights only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// A weight matrix.
    Weights,
    /// A bias vector.
    Bias,
}

impl Optimizer {
    /// Name as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum {
                nesterov: false, ..
            } => "momentum",
            Optimizer::Momentum { nesterov: true, .. } => "nesterov",
            Optimizer::Adam { .. } => "adam",
            Optimizer::AdamW { .. } => "adamw",
        }
    }

    /// State vectors kept per parameter: 0 for SGD, 1 (velocity) for
    /// momentum, 2 (first and second moments) for Adam and AdamW.
    pub fn slots(&self) -> usize {
        match self {
            Optimizer::Sgd => 0,
            Optimizer::Momentum { .. } => 1,
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2,
        }
    }

    /// Checks the optimiser's settings.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the first setting out of range.
    pub fn validate(&self) -> crate::Result<()> {
        let unit = |name: &'static str, value: f32, example: &str| {
            if (0.0..1.0).contains(&value) {
                Ok(())
            } else {
                Err(crate::config::invalid(
                    name,
                    value,
                    format!("expected a number in [0, 1), such as {example}"),
                ))
            }
        };
        match *self {
            Optimizer::Sgd => Ok(()),
            Optimizer::Momentum { momentum, .. } => unit("momentum", momentum, "0.9"),
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            }
            | Optimizer::AdamW {
                beta1,
                beta2,
                epsilon,
                ..
            } => {
                unit("beta1", beta1, "0.9")?;
                unit("beta2", beta2, "0.999")?;
                if !(epsilon.is_finite() && epsilon > 0.0) {
                    return Err(crate::config::invalid(
                        "epsilon",
                        epsilon,
                        "expected a number greater than 0, such as 1e-8",
                    ));
                }
                if let Optimizer::AdamW { weight_decay, .. } = *self {
                    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
                        return Err(crate::config::invalid(
                            "weight-decay",
                            weight_decay,
                            "expected a finite number of at least 0, such as 0.01",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Bias corrections `(1 - beta1^t, 1 - beta2^t)` of Adam at step `t`
    /// (from 1), computed in f64 and rounded once; `(1, 1)` for the others.
    pub fn bias_corrections(&self, t: u64) -> (f32, f32) {
        match *self {
            Optimizer::Adam { beta1, beta2, .. } | Optimizer::AdamW { beta1, beta2, .. } => {
                let power = |beta: f32| (beta as f64).powf(t as f64);
                ((1.0 - power(beta1)) as f32, (1.0 - power(beta2)) as f32)
            }
            _ => (1.0, 1.0),
        }
    }

    /// Applies one update to `params` with gradient `grads`, which already
    /// includes any L1 or L2 penalty. `state` contains [`Optimizer::slots`]
    /// vectors of the same length, one after another. `t` is the step count
    /// from 1. Returns whether every updated parameter is finite.
    pub fn update(
        &self,
        kind: TensorKind,
        params: &mut [f32],
        grads: &[f32],
        state: &mut [f32],
        learning_rate: f32,
        t: u64,
    ) -> bool {
        let n = params.len();
        assert_eq!(grads.len(), n, "one gradient per parameter");
        assert_eq!(
            state.len(),
            n * self.slots(),
            "optimiser state has slots() vectors per tensor"
        );
        let (first, second) = split_slots(state, n, self.slots());
        let no_penalty = Penalty::default();
        self.update_slots(
            kind,
            params,
            grads,
            first,
            second,
            no_penalty,
            learning_rate,
            t,
        )
    }

    /// Runs [`Optimizer::update`] on blocks of parameters in parallel with
    /// rayon, first adding the gradient of `penalty` to the gradient of
    /// weights (not biases), in the same pass over memory. Each parameter's
    /// update depends only on its own values, so the result equals that of
    /// adding the penalty and calling [`Optimizer::update`].
    #[allow(clippy::too_many_arguments)]
    pub fn update_parallel(
        &self,
        kind: TensorKind,
        params: &mut [f32],
        grads: &[f32],
        state: &mut [f32],
        penalty: Penalty,
        learning_rate: f32,
        t: u64,
    ) -> bool {
        const BLOCK: usize = 16 * 1024;
        let n = params.len();
        assert_eq!(grads.len(), n, "one gradient per parameter");
        assert_eq!(
            state.len(),
            n * self.slots(),
            "optimiser state has slots() vectors per tensor"
        );
        let penalty = if kind == TensorKind::Weights {
            penalty
        } else {
            Penalty::default()
        };
        let (first, second) = split_slots(state, n, self.slots());
        if n <= BLOCK {
            return self.update_slots(
                kind,
                params,
                grads,
                first,
                second,
                penalty,
                learning_rate,
                t,
            );
        }
        // Empty slots give no chunks, so they are padded with empty slices.
        let first_chunks: Vec<&mut [f32]> = if first.is_empty() {
            (0..n.div_ceil(BLOCK)).map(|_| &mut [][..]).collect()
        } else {
            first.chunks_mut(BLOCK).collect()
        };
        let second_chunks: Vec<&mut [f32]> = if second.is_empty() {
            (0..n.div_ceil(BLOCK)).map(|_| &mut [][..]).collect()
        } else {
            second.chunks_mut(BLOCK).collect()
        };
        params
            .par_chunks_mut(BLOCK)
            .zip(grads.par_chunks(BLOCK))
            .zip(first_chunks.into_par_iter())
            .zip(second_chunks.into_par_iter())
            .map(|(((p, g), s0), s1)| {
                self.update_slots(kind, p, g, s0, s1, penalty, learning_rate, t)
            })
            .reduce(|| true, |a, b| a && b)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_slots(
        &self,
        kind: TensorKind,
        params: &mut [f32],
        grads: &[f32],
        first: &mut [f32],
        second: &mut [f32],
        penalty: Penalty,
        learning_rate: f32,
        t: u64,
    ) -> bool {
        let penalize = !penalty.is_zero();
        // The branch is the same for every element, so the compiler can
        // hoist it out of the loops.
        let effective = |g: f32, p: f32| if penalize { g + penalty.gradient(p) } else { g };
        let mut finite = true;
        match *self {
            Optimizer::Sgd => {
                for (p, &g) in params.iter_mut().zip(grads) {
                    let g = effective(g, *p);
                    *p -= learning_rate * g;
                    finite &= p.is_finite();
                }
            }
            Optimizer::Momentum { momentum, nesterov } => {
                for ((p, &g), v) in params.iter_mut().zip(grads).zip(first.iter_mut()) {
                    let g = effective(g, *p);
                    *v = momentum * *v + g;
                    let step = if nesterov { g + momentum * *v } else { *v };
                    *p -= learning_rate * step;
                    finite &= p.is_finite();
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            }
            | Optimizer::AdamW {
                beta1,
                beta2,
                epsilon,
                ..
            } => {
                let decay = match *self {
                    Optimizer::AdamW { weight_decay, .. } if kind == TensorKind::Weights => {
                        learning_rate * weight_decay
                    }
                    _ => 0.0,
                };
                let (c1, c2) = self.bias_corrections(t);
                for (((p, &g), m), v) in params
                    .iter_mut()
                    .zip(grads)
                    .zip(first.iter_mut())
                    .zip(second.iter_mut())
                {
                    let g = effective(g, *p);
                    *p -= decay * *p;
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= learning_rate * (*m / c1) / ((*v / c2).sqrt() + epsilon);
                    finite &= p.is_finite();
                }
            }
        }
        finite
    }
}

/// Splits a tensor's state into its first and second slot vectors (empty
/// when the optimiser keeps fewer).
fn split_slots(state: &mut [f32], n: usize, slots: usize) -> (&mut [f32], &mut [f32]) {
    match slots {
        0 => (&mut [], &mut []),
        1 => (state, &mut []),
        _ => state.split_at_mut(n),
    }
}

/// L1 and L2 penalties added to the mean loss of each minibatch, over all
/// weights (not biases): `loss + l1 * sum |w| + l2 * sum w^2`, as in the
/// classic tutorial's MLP. Their gradients are `l1 * sign(w)` (0 at 0) and
/// `2 * l2 * w`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Penalty {
    /// L1 coefficient, at least 0.
    pub l1: f32,
    /// L2 coefficient, at least 0.
    pub l2: f32,
}

impl Penalty {
    /// Returns whether both coefficients are zero.
    pub fn is_zero(&self) -> bool {
        self.l1 == 0.0 && self.l2 == 0.0
    }

    /// Gradient of the penalty at weight `w`.
    pub fn gradient(&self, w: f32) -> f32 {
        let sign = if w > 0.0 {
            1.0
        } else if w < 0.0 {
            -1.0
        } else {
            0.0
        };
        self.l1 * sign + 2.0 * self.l2 * w
    }

    /// Checks that both coefficients are finite and at least 0.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the coefficient.
    pub fn validate(&self) -> crate::Result<()> {
        for (name, value) in [("l1", self.l1), ("l2", self.l2)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(crate::config::invalid(
                    name,
                    value,
                    "expected a finite number of at least 0, such as 1e-4",
                ));
            }
        }
        Ok(())
    }
}

/// Learning rate as a function of the epoch. The rate is constant within
/// an epoch and changes at epoch boundaries; `e` below counts completed
/// epochs from 0 and `lr` is the configured rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// `lr` throughout.
    #[default]
    Constant,
    /// `lr * factor^floor(e / every)`.
    Step {
        /// Epochs between two decays, at least 1.
        every: usize,
        /// Factor applied at each decay, in `(0, 1]`.
        factor: f32,
    },
    /// `lr * (1 + cos(pi * e / epochs)) / 2`, from `lr` down towards 0 at
    /// epoch `epochs` and 0 after it.
    Cosine {
        /// Length of the decay in epochs, at least 1.
        epochs: usize,
    },
    /// `lr / (1 + decay * e)`.
    Inverse {
        /// Decay per epoch, at least 0.
        decay: f32,
    },
}

impl Schedule {
    /// Name as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Step { .. } => "step",
            Schedule::Cosine { .. } => "cosine",
            Schedule::Inverse { .. } => "inverse",
        }
    }

    /// Learning rate for the epoch after `completed` epochs.
    pub fn rate(&self, learning_rate: f32, completed: usize) -> f32 {
        let lr = learning_rate as f64;
        let e = completed as f64;
        let rate = match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, factor } => {
                lr * (factor as f64).powi((completed / every) as i32)
            }
            Schedule::Cosine { epochs } => {
                if completed >= epochs {
                    0.0
                } else {
                    lr * (1.0 + (std::f64::consts::PI * e / epochs as f64).cos()) / 2.0
                }
            }
            Schedule::Inverse { decay } => lr / (1.0 + decay as f64 * e),
        };
        rate as f32
    }

    /// Checks the schedule's settings.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the first setting out of range.
    pub fn validate(&self) -> crate::Result<()> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { every, factor } => {
                if every == 0 {
                    return Err(crate::config::invalid(
                        "step-every",
                        every,
                        "expected at least 1 epoch",
                    ));
                }
                if !(factor > 0.0 && factor <= 1.0) {
                    return Err(crate::config::invalid(
                        "step-factor",
                        factor,
                        "expected a number in (0, 1], such as 0.5",
                    ));
                }
                Ok(())
            }
            Schedule::Cosine { epochs } => {
                if epochs == 0 {
                    return Err(crate::config::invalid(
                        "cosine-epochs",
                        epochs,
                        "expected at least 1 epoch",
                    ));
                }
                Ok(())
            }
            Schedule::Inverse { decay } => {
                if !(decay.is_finite() && decay >= 0.0) {
                    return Err(crate::config::invalid(
                        "decay",
                        decay,
                        "expected a finite number of at least 0, such as 0.1",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Optimiser state of a whole model, in the model's own layout, so that a
/// run can be saved on one path and resumed on another.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Update steps taken so far; Adam's bias correction uses it.
    pub steps: u64,
    /// For each layer in order, its weights' state and then its bias's state.
    /// Each entry contains [`Optimizer::slots`] vectors one after another, each
    /// as long as its tensor (weights row-major, `inputs x outputs`).
    pub tensors: Vec<Vec<f32>>,
}

impl OptimizerState {
    /// Zero state for `optimizer` on a model with the given layer shapes
    /// `(inputs, outputs)`.
    pub fn zeros(optimizer: &Optimizer, shapes: &[(usize, usize)]) -> Self {
        let slots = optimizer.slots();
        let tensors = shapes
            .iter()
            .flat_map(|&(inputs, outputs)| {
                [
                    vec![0.0; inputs * outputs * slots],
                    vec![0.0; outputs * slots],
                ]
            })
            .collect();
        OptimizerState { steps: 0, tensors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_matches_closed_form() {
        let optimizer = Optimizer::Momentum {
            momentum: 0.5,
            nesterov: false,
        };
        let mut p = [1.0f32];
        let mut v = [0.0f32];
        optimizer.update(TensorKind::Weights, &mut p, &[2.0], &mut v, 0.1, 1);
        assert_eq!(v[0], 2.0);
        assert!((p[0] - 0.8).abs() < 1e-7);
        optimizer.update(TensorKind::Weights, &mut p, &[2.0], &mut v, 0.1, 2);
        assert_eq!(v[0], 3.0);
        assert!((p[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn nesterov_looks_ahead() {
        let optimizer = Optimizer::Momentum {
            momentum: 0.5,
            nesterov: true,
        };
        let mut p = [1.0f32];
        let mut v = [0.0f32];
        optimizer.update(TensorKind::Weights, &mut p, &[2.0], &mut v, 0.1, 1);
        // v = 2, step = 2 + 0.5 * 2 = 3.
        assert!((p[0] - 0.7).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_learning_rate() {
        let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
        let optimizer = Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        };
        let mut p = [1.0f32, 1.0];
        let mut state = [0.0f32; 4];
        optimizer.update(
            TensorKind::Weights,
            &mut p,
            &[0.5, -3.0],
            &mut state,
            0.01,
            1,
        );
        // After bias correction m / sqrt(v) = sign(g) on the first step.
        assert!((p[0] - 0.99).abs() < 1e-6, "{p:?}");
        assert!((p[1] - 1.01).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn adamw_decays_weights_not_biases() {
        let (beta1, beta2, epsilon) = ADAM_DEFAULTS;
        let optimizer = Optimizer::AdamW {
            beta1,
            beta2,
            epsilon,
            weight_decay: 0.5,
        };
        let mut weights = [2.0f32];
        let mut bias = [2.0f32];
        let mut state = [0.0f32; 2];
        optimizer.update(
            TensorKind::Weights,
            &mut weights,
            &[0.0],
            &mut state.clone(),
            0.1,
            1,
        );
        optimizer.update(TensorKind::Bias, &mut bias, &[0.0], &mut state, 0.1, 1);
        assert!((weights[0] - 1.9).abs() < 1e-6, "{weights:?}");
        assert_eq!(bias[0], 2.0);
    }

    #[test]
    fn schedules_follow_their_formulas() {
        assert_eq!(Schedule::Constant.rate(0.1, 50), 0.1);
        let step = Schedule::Step {
            every: 10,
            factor: 0.5,
        };
        assert_eq!(step.rate(0.1, 9), 0.1);
        assert_eq!(step.rate(0.1, 10), 0.05);
        assert_eq!(step.rate(0.1, 25), 0.025);
        let cosine = Schedule::Cosine { epochs: 10 };
        assert_eq!(cosine.rate(0.1, 0), 0.1);
        assert!((cosine.rate(0.1, 5) - 0.05).abs() < 1e-8);
        assert_eq!(cosine.rate(0.1, 10), 0.0);
        let inverse = Schedule::Inverse { decay: 0.5 };
        assert!((inverse.rate(0.1, 2) - 0.05).abs() < 1e-8);
    }

    #[test]
    fn penalty_gradient_has_both_terms() {
        let penalty = Penalty { l1: 0.1, l2: 0.01 };
        assert!((penalty.gradient(2.0) - (0.1 + 0.04)).abs() < 1e-7);
        assert!((penalty.gradient(-2.0) + (0.1 + 0.04)).abs() < 1e-7);
        assert_eq!(penalty.gradient(0.0), 0.0);
    }

    #[test]
    fn rejects_out_of_range_settings() {
        let bad = [
            Optimizer::Momentum {
                momentum: 1.0,
                nesterov: false,
            }
            .validate(),
            Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 0.0,
            }
            .validate(),
            Penalty { l1: -1.0, l2: 0.0 }.validate(),
            Schedule::Step {
                every: 0,
                factor: 0.5,
            }
            .validate(),
            Schedule::Cosine { epochs: 0 }.validate(),
        ];
        for result in bad {
            assert!(
                matches!(result, Err(crate::Error::InvalidConfig { .. })),
                "{result:?}"
            );
        }
        assert!(Optimizer::Sgd.validate().is_ok());
    }
}
