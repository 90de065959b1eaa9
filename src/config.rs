//! Training settings with the classic tutorial's defaults.

use crate::error::{Error, Result};
use crate::optim::Schedule;

/// Settings of minibatch SGD with patience-based early stopping.
///
/// The defaults are those of the classic Theano logistic-regression tutorial:
/// learning rate 0.13, batch size 600, at most 1000 epochs, patience 5000
/// iterations, patience increase 2, improvement threshold 0.995, validation
/// every `min(batches per epoch, patience / 2)` iterations.
///
/// Call [`TrainConfig::validate`] (the trainer does) before reading data or
/// starting a GPU, so that a bad setting fails at once.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// SGD step size. Default 0.13. Must be finite and greater than 0.
    pub learning_rate: f32,
    /// Rows per minibatch. Default 600. Must be in `1..=MAX_BATCH_SIZE`.
    pub batch_size: usize,
    /// Maximum number of passes over the training set. Default 1000, at least 1.
    pub max_epochs: usize,
    /// Minimum number of minibatch iterations to run, extended when validation
    /// improves. Default 5000, at least 1.
    pub patience: usize,
    /// Factor applied to the iteration count to extend patience after a
    /// significant improvement. Default 2.0, at least 1.
    pub patience_increase: f64,
    /// A validation error below `best * improvement_threshold` counts as a
    /// significant improvement. Default 0.995, in `(0, 1]`.
    pub improvement_threshold: f64,
    /// Validate every this many iterations. `None` (the default) means
    /// `min(batches per epoch, patience / 2)`, as in the tutorial.
    pub validation_frequency: Option<usize>,
    /// Drop incomplete minibatches in training and evaluation, as the original
    /// tutorial did. Default `false`: the last partial batch is trained on with
    /// its loss averaged over its own size, and every row is evaluated.
    pub drop_last: bool,
    /// Learning rate by epoch. Default [`Schedule::Constant`].
    pub schedule: Schedule,
    /// Reshuffle the training rows at the start of each epoch. Default
    /// `false`, the classic protocol, which reads them in file order.
    pub shuffle: bool,
    /// Seed of the shuffles (and, in the command line, of the weight
    /// initialisation). Default 0. The order of epoch `e` depends only on
    /// the seed and `e`, so a resumed run shuffles as an unbroken one would.
    pub seed: u64,
    /// Train exactly this many epochs, ignoring patience. Default `None`:
    /// stop by the patience rule or at `max_epochs`. The model returned is
    /// still the one with the lowest validation error.
    pub epochs: Option<usize>,
}

/// Largest accepted batch size (2^24 rows), far above any useful value; it
/// keeps row counts exact in f32 and sizes within GPU dispatch limits.
pub const MAX_BATCH_SIZE: usize = 1 << 24;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            learning_rate: 0.13,
            batch_size: 600,
            max_epochs: 1000,
            patience: 5000,
            patience_increase: 2.0,
            improvement_threshold: 0.995,
            validation_frequency: None,
            drop_last: false,
            schedule: Schedule::Constant,
            shuffle: false,
            seed: 0,
            epochs: None,
        }
    }
}

impl TrainConfig {
    /// Sets the learning rate (default 0.13).
    pub fn with_learning_rate(mut self, learning_rate: f32) -> Self {
        self.learning_rate = learning_rate;
        self
    }

    /// Sets the minibatch size (default 600).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the maximum number of epochs (default 1000).
    pub fn with_max_epochs(mut self, max_epochs: usize) -> Self {
        self.max_epochs = max_epochs;
        self
    }

    /// Sets the initial patience in iterations (default 5000).
    pub fn with_patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Sets the improvement threshold (default 0.995).
    pub fn with_improvement_threshold(mut self, threshold: f64) -> Self {
        self.improvement_threshold = threshold;
        self
    }

    /// Sets how often to validate, in iterations (default: once per epoch,
    /// or every `patience / 2` iterations if that is sooner).
    pub fn with_validation_frequency(mut self, iterations: usize) -> Self {
        self.validation_frequency = Some(iterations);
        self
    }

    /// Drops incomplete minibatches in training and evaluation (default `false`).
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the learning-rate schedule (default constant).
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Reshuffles the training rows each epoch with `seed` (default: no shuffling).
    pub fn with_shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Trains exactly `epochs` epochs, ignoring patience (default: early stopping).
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = Some(epochs);
        self
    }

    /// Epochs after which training ends at the latest.
    pub fn epoch_limit(&self) -> usize {
        self.epochs.unwrap_or(self.max_epochs)
    }

    /// Checks every setting against its valid range.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first invalid setting and its range.
    pub fn validate(&self) -> Result<()> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid(
                "learning-rate",
                self.learning_rate,
                "expected a finite number greater than 0, such as 0.13",
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(invalid(
                "batch-size",
                self.batch_size,
                format!("expected an integer from 1 to {MAX_BATCH_SIZE}, such as 600"),
            ));
        }
        if self.max_epochs == 0 {
            return Err(invalid(
                "max-epochs",
                self.max_epochs,
                "expected at least 1",
            ));
        }
        if self.patience == 0 {
            return Err(invalid(
                "patience",
                self.patience,
                "expected at least 1 iteration",
            ));
        }
        if !(self.patience_increase.is_finite() && self.patience_increase >= 1.0) {
            return Err(invalid(
                "patience-increase",
                self.patience_increase,
                "expected a finite number of at least 1, such as 2",
            ));
        }
        let threshold = self.improvement_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(invalid(
                "improvement-threshold",
                threshold,
                "expected a number in (0, 1], such as 0.995",
            ));
        }
        if self.epochs == Some(0) {
            return Err(invalid("epochs", 0, "expected at least 1"));
        }
        self.schedule.validate()?;
        if self.validation_frequency == Some(0) {
            return Err(invalid(
                "validation-frequency",
                0,
                "expected at least 1 iteration",
            ));
        }
        Ok(())
    }

    /// Returns the number of iterations between validations for an epoch of
    /// `batches_per_epoch` minibatches.
    pub fn validation_interval(&self, batches_per_epoch: usize) -> usize {
        self.validation_frequency
            .unwrap_or_else(|| batches_per_epoch.min(self.patience / 2))
            .max(1)
    }
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> Error {
    Error::InvalidConfig {
        name,
        value: value.to_string(),
        expected: expected.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_classic() {
        let config = TrainConfig::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.learning_rate, 0.13);
        assert_eq!(config.batch_size, 600);
        assert_eq!(config.validation_interval(83), 83);
        assert_eq!(config.validation_interval(5000), 2500);
    }

    #[test]
    fn rejects_out_of_range_settings() {
        let cases: Vec<(TrainConfig, &str)> = vec![
            (
                TrainConfig::default().with_learning_rate(0.0),
                "learning-rate",
            ),
            (
                TrainConfig::default().with_learning_rate(-0.1),
                "learning-rate",
            ),
            (
                TrainConfig::default().with_learning_rate(f32::NAN),
                "learning-rate",
            ),
            (
                TrainConfig::default().with_learning_rate(f32::INFINITY),
                "learning-rate",
            ),
            (TrainConfig::default().with_batch_size(0), "batch-size"),
            (
                TrainConfig::default().with_batch_size(MAX_BATCH_SIZE + 1),
                "batch-size",
            ),
            (TrainConfig::default().with_max_epochs(0), "max-epochs"),
            (TrainConfig::default().with_patience(0), "patience"),
            (
                TrainConfig::default().with_improvement_threshold(0.0),
                "improvement-threshold",
            ),
            (
                TrainConfig::default().with_improvement_threshold(1.5),
                "improvement-threshold",
            ),
            (
                TrainConfig::default().with_improvement_threshold(f64::NAN),
                "improvement-threshold",
            ),
            (
                TrainConfig::default().with_validation_frequency(0),
                "validation-frequency",
            ),
        ];
        for (config, expected_name) in cases {
            match config.validate() {
                Err(Error::InvalidConfig { name, .. }) => assert_eq!(name, expected_name),
                other => panic!("expected InvalidConfig for {expected_name}, got {other:?}"),
            }
        }
        // Positive control: the edge of each range is accepted.
        let edge = TrainConfig::default()
            .with_batch_size(1)
            .with_improvement_threshold(1.0)
            .with_patience(1)
            .with_max_epochs(1);
        assert!(edge.validate().is_ok());
    }
}
