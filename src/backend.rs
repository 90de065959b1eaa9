//! The interface that the trainer drives, implemented by the CPU and GPU paths.

use crate::data::Split;
use crate::error::Result;
use crate::model::LogisticRegression;

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

/// A place to train: holds the three splits and the model parameters, which
/// start at zero.
///
/// The trainer calls [`Backend::train_steps`] with the minibatches between two
/// validations, then [`Backend::evaluate`]. A GPU backend may queue the steps
/// and only wait for them in `evaluate`, so errors from a step can surface
/// there.
pub trait Backend {
    /// Returns one line naming the path and device, for example `cpu (rayon, 2 threads)`.
    fn description(&self) -> String;

    /// Runs one SGD step per batch of the training split, in order. Each
    /// step's loss is the mean over its own rows.
    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()>;

    /// Counts misclassified rows of `split` over `batches`.
    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation>;

    /// Keeps a copy of the current parameters as the best model so far.
    fn keep_best(&mut self) -> Result<()>;

    /// Returns the parameters saved by the last [`Backend::keep_best`], or the
    /// current ones if it was never called.
    fn best_model(&mut self) -> Result<LogisticRegression>;

    /// Returns the current parameters.
    fn current_model(&mut self) -> Result<LogisticRegression>;
}
