//! The interface that the trainer drives, implemented by the CPU and GPU paths.

use crate::data::{Split, Splits};
use crate::error::Result;
use crate::model::{LogisticRegression, Model};
use crate::optim::{Optimizer, OptimizerState, Penalty};

/// A range of rows of one split: `start..start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// First row.
    pub start: usize,
    /// Number of rows, at least 1.
    pub len: usize,
}

impl Batch {
    /// Splits `rows` rows into minibatches of `batch_size`; the last one is
    /// shorter unless `drop_last` is set, in which case it is left out.
    pub fn split(rows: usize, batch_size: usize, drop_last: bool) -> Vec<Batch> {
        assert!(batch_size > 0, "batch size must be at least 1");
        (0..rows)
            .step_by(batch_size)
            .map(|start| Batch {
                start,
                len: batch_size.min(rows - start),
            })
            .filter(|batch| !drop_last || batch.len == batch_size)
            .collect()
    }
}

/// Result of evaluating the model on some rows of a split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Rows whose predicted class differs from the label.
    pub errors: u64,
    /// Rows evaluated.
    pub rows: u64,
    /// Global index (0-based, counted over all [`Backend::train_steps`] calls)
    /// of the first training step whose loss or updated parameters were not
    /// finite, if any step so far produced one.
    pub first_non_finite_step: Option<u64>,
}

impl Evaluation {
    /// Fraction of misclassified rows, or 0 if no rows were evaluated.
    pub fn error_rate(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.errors as f64 / self.rows as f64
        }
    }
}

/// Training inputs of a backend: the starting parameters, the update rule, the
/// penalties and, when resuming, the optimiser state.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    /// Model whose parameters training starts from.
    pub model: Model,
    /// Update rule.
    pub optimizer: Optimizer,
    /// L1 and L2 penalties on the weights.
    pub penalty: Penalty,
    /// Optimiser state to continue from; `None` starts from zero state.
    pub state: Option<OptimizerState>,
}

impl Setup {
    /// Returns the classic tutorial's setup: logistic regression with zero weights,
    /// plain SGD and no penalty.
    pub fn classic(splits: &Splits) -> Self {
        Setup::new(
            LogisticRegression::zeros(splits.train.sample_shape().to_vec(), splits.n_classes())
                .into(),
        )
    }

    /// Plain SGD without penalties, starting from `model`.
    pub fn new(model: Model) -> Self {
        Setup {
            model,
            optimizer: Optimizer::Sgd,
            penalty: Penalty::default(),
            state: None,
        }
    }

    /// Sets the update rule.
    pub fn with_optimizer(mut self, optimizer: Optimizer) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// Sets the L1 and L2 penalties.
    pub fn with_penalty(mut self, penalty: Penalty) -> Self {
        self.penalty = penalty;
        self
    }

    /// Continues from saved optimiser state.
    pub fn with_state(mut self, state: OptimizerState) -> Self {
        self.state = Some(state);
        self
    }

    /// Returns whether this is logistic regression with plain SGD and no penalty,
    /// which the fused classic kernels train.
    pub fn is_plain_logistic(&self) -> bool {
        matches!(self.model, Model::Logistic(_))
            && self.optimizer == Optimizer::Sgd
            && self.penalty.is_zero()
    }

    /// Checks the optimiser and penalty settings, and that the state (if
    /// any) fits the model and optimiser.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] or [`crate::Error::Shape`].
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.penalty.validate()?;
        if let Some(state) = &self.state {
            let slots = self.optimizer.slots();
            let expected: Vec<usize> = self
                .model
                .to_layers()
                .iter()
                .flat_map(|layer| [layer.weights.len() * slots, layer.bias.len() * slots])
                .collect();
            let found: Vec<usize> = state.tensors.iter().map(Vec::len).collect();
            if expected != found {
                return Err(crate::Error::Shape {
                    reason: format!(
                        "the optimiser state has tensors of lengths {found:?} but {} with {} needs {expected:?}",
                        self.model.summary(),
                        self.optimizer.name()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A place to train, containing the three splits, the model parameters and the
/// optimiser state.
///
/// The trainer calls [`Backend::train_steps`] with the minibatches between two
/// validations, then [`Backend::evaluate`]. A GPU backend may queue the steps
/// and only wait for them in `evaluate`, so errors from a step can surface
/// there.
pub trait Backend {
    /// Returns one line naming the path and device, for example `cpu (rayon, 2 threads)`.
    fn description(&self) -> String;

    /// Runs one optimiser step per batch of the training split, in order.
    /// Each step's loss is the mean over its own rows. Batches index rows of
    /// the order set by [`Backend::set_train_order`], or the split's own
    /// order if none was set.
    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()>;

    /// Sets the order in which training batches read rows: batch row `i`
    /// is training row `order[i]`. `order` is a permutation of
    /// `0..training rows`; `None` restores the split's own order.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] if `order` is not such a permutation.
    fn set_train_order(&mut self, order: Option<&[u32]>) -> Result<()>;

    /// Counts misclassified rows of `split` over `batches`.
    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation>;

    /// Keeps a copy of the current parameters as the best model so far.
    fn keep_best(&mut self) -> Result<()>;

    /// Returns the parameters saved by the last [`Backend::keep_best`], or the
    /// current ones if it was never called.
    fn best_model(&mut self) -> Result<Model>;

    /// Returns the current parameters.
    fn current_model(&mut self) -> Result<Model>;

    /// Returns the current optimiser state, in the model's layout.
    fn optimizer_state(&mut self) -> Result<OptimizerState>;
}

/// Checks that `order` is a permutation of `0..rows`.
///
/// # Errors
/// [`crate::Error::Shape`] naming the first problem.
pub fn check_order(order: &[u32], rows: usize) -> Result<()> {
    if order.len() != rows {
        return Err(crate::Error::Shape {
            reason: format!(
                "the training order has {} entries but the training set has {rows} rows",
                order.len()
            ),
        });
    }
    let mut seen = vec![false; rows];
    for (position, &row) in order.iter().enumerate() {
        let row = row as usize;
        if row >= rows || std::mem::replace(&mut seen[row], true) {
            return Err(crate::Error::Shape {
                reason: format!(
                    "the training order is not a permutation of 0..{rows}: entry {position} is {row}, out of range or repeated"
                ),
            });
        }
    }
    Ok(())
}
