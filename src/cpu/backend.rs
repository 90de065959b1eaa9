//! [`Backend`] on the CPU.

use super::ops;
use crate::backend::{Backend, Batch, Evaluation};
use crate::data::{Split, Splits};
use crate::error::Result;
use crate::model::LogisticRegression;

/// Trains on the CPU with rayon, reading the splits in place.
pub struct CpuBackend<'a> {
    splits: &'a Splits,
    model: LogisticRegression,
    best: Option<LogisticRegression>,
    steps_done: u64,
    first_non_finite_step: Option<u64>,
}

impl<'a> CpuBackend<'a> {
    /// A backend over `splits` with a zero-initialised model.
    pub fn new(splits: &'a Splits) -> Self {
        CpuBackend {
            splits,
            model: LogisticRegression::zeros(splits.train.sample_shape().to_vec(), splits.n_classes()),
            best: None,
            steps_done: 0,
            first_non_finite_step: None,
        }
    }
}

impl Backend for CpuBackend<'_> {
    fn description(&self) -> String {
        format!("cpu (rayon, {} threads)", rayon::current_num_threads())
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
        let train = &self.splits.train;
        let x = train.features_view();
        for batch in batches {
            let loss = ops::sgd_step(
                ops::rows(x, batch.start, batch.len),
                &train.labels()[batch.start..batch.start + batch.len],
                self.model.weights.view_mut(),
                self.model.bias.view_mut(),
                learning_rate,
            );
            let parameters_finite =
                self.model.bias.iter().all(|v| v.is_finite()) && self.model.weights.iter().all(|v| v.is_finite());
            if self.first_non_finite_step.is_none() && !(loss.is_finite() && parameters_finite) {
                self.first_non_finite_step = Some(self.steps_done);
            }
            self.steps_done += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        let data = self.splits.get(split);
        let x = data.features_view();
        let mut errors = 0;
        let mut rows = 0;
        for batch in batches {
            let logits = ops::logits(
                ops::rows(x, batch.start, batch.len),
                self.model.weights.view(),
                self.model.bias.view(),
            );
            errors += ops::count_errors(logits.view(), &data.labels()[batch.start..batch.start + batch.len]);
            rows += batch.len as u64;
        }
        Ok(Evaluation {
            errors,
            rows,
            first_non_finite_step: self.first_non_finite_step,
        })
    }

    fn keep_best(&mut self) -> Result<()> {
        self.best = Some(self.model.clone());
        Ok(())
    }

    fn best_model(&mut self) -> Result<LogisticRegression> {
        Ok(self.best.clone().unwrap_or_else(|| self.model.clone()))
    }

    fn current_model(&mut self) -> Result<LogisticRegression> {
        Ok(self.model.clone())
    }
}
