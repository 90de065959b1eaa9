//! Minibatch SGD with patience-based early stopping.
//!
//! The loop follows the classic Theano logistic-regression tutorial. After
//! each minibatch step the iteration counter `iter` (0-based, counted over
//! all epochs) advances. Every `validation_interval` iterations the
//! validation error is measured. An error below `best * improvement_threshold`
//! extends patience to `iter * patience_increase`, and any improvement records
//! the test error of the new best model. Training stops as soon as
//! `patience <= iter`, or after `max_epochs`.

use crate::backend::{Backend, Batch, Evaluation};
use crate::config::TrainConfig;
use crate::data::{Split, Splits};
use crate::error::{Error, Result};
use crate::model::Model;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Progress reported to the callback of [`Trainer::fit`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TrainEvent {
    /// An epoch begins. `epoch` is 1-based.
    EpochStarted {
        /// Epoch number, from 1.
        epoch: usize,
        /// Minibatches per epoch.
        batches: usize,
    },
    /// Minibatch steps finished; `done` of `batches` steps of this epoch are complete.
    StepsCompleted {
        /// Epoch number, from 1.
        epoch: usize,
        /// Steps of this epoch finished so far.
        done: usize,
        /// Minibatches per epoch.
        batches: usize,
    },
    /// The validation error was measured after minibatch `minibatch` of `epoch`.
    Validated {
        /// Epoch number, from 1.
        epoch: usize,
        /// 1-based index of the minibatch just trained.
        minibatch: usize,
        /// Minibatches per epoch.
        batches: usize,
        /// Fraction of validation rows misclassified.
        validation_error: f64,
        /// Whether this is the best validation error so far.
        improved: bool,
    },
    /// The test error of a new best model.
    TestedBest {
        /// Epoch number, from 1.
        epoch: usize,
        /// 1-based index of the minibatch just trained.
        minibatch: usize,
        /// Minibatches per epoch.
        batches: usize,
        /// Fraction of test rows misclassified.
        test_error: f64,
    },
}

/// Figures of a finished training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// Lowest validation error seen (a fraction, not a percentage).
    pub best_validation_error: f64,
    /// Test error of the best model; `None` when the test set is empty.
    pub test_error: Option<f64>,
    /// 0-based iteration after which the best model was measured.
    pub best_iteration: usize,
    /// Epochs started, counting those of the run that a resumed run continues.
    pub epochs: usize,
    /// Epochs completed before this call, by the run it resumed; 0 for a new run.
    pub resumed_after_epochs: usize,
    /// Minibatch steps run.
    pub iterations: usize,
    /// Wall time of the training loop in seconds, without loading data or
    /// starting the backend.
    pub seconds: f64,
    /// Whether training ended early because the stop flag was set.
    pub interrupted: bool,
}

impl TrainReport {
    /// Epochs per second of training time in this call.
    pub fn epochs_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.epochs.saturating_sub(self.resumed_after_epochs) as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// A trained model with the figures of its run.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The parameters with the lowest validation error.
    pub model: Model,
    /// Figures of the run.
    pub report: TrainReport,
    /// Counters at the point where the run stopped, for a checkpoint to resume from.
    pub progress: Progress,
}

/// The trainer's counters at the point where a run stopped; with the
/// backend's parameters and optimiser state it lets a later run continue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs started, from 1; 0 before training.
    pub epoch: usize,
    /// Minibatches of that epoch already trained.
    pub minibatch: usize,
    /// Minibatch steps run over all epochs.
    pub iterations: usize,
    /// Iteration count at which early stopping ends training.
    pub patience: usize,
    /// Lowest validation error so far; `None` before the first validation.
    pub best_validation_error: Option<f64>,
    /// 0-based iteration of the best validation.
    pub best_iteration: usize,
    /// Test error of the best model, if measured.
    pub test_error: Option<f64>,
}

impl Progress {
    /// Counters before the first step.
    pub fn start(config: &TrainConfig) -> Self {
        Progress {
            epoch: 0,
            minibatch: 0,
            iterations: 0,
            patience: config.patience,
            best_validation_error: None,
            best_iteration: 0,
            test_error: None,
        }
    }
}

/// Returns the training order of epoch `epoch` (from 1): a permutation of
/// `0..rows` drawn from ChaCha8 seeded with `seed`, on stream `epoch`.
pub fn epoch_order(seed: u64, epoch: usize, rows: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    let mut order: Vec<u32> = (0..rows as u32).collect();
    order.shuffle(&mut rng);
    order
}

/// Runs the early-stopping protocol of a validated [`TrainConfig`] on a [`Backend`].
///
/// ```
/// use wgpu_learn::{cpu::CpuBackend, Dataset, Splits, TrainConfig, trainer::Trainer};
/// // Two classes that the first feature separates.
/// let rows = 40;
/// let features: Vec<f32> = (0..rows).flat_map(|r| [if r % 2 == 0 { 1.0 } else { -1.0 }, 0.5]).collect();
/// let labels: Vec<u32> = (0..rows).map(|r| (r % 2) as u32).collect();
/// let data = Dataset::new("toy", features, labels, vec![2], 2).unwrap();
/// let splits = Splits::new(data.clone(), data.clone(), data).unwrap();
/// let trainer = Trainer::new(TrainConfig::default().with_batch_size(10).with_max_epochs(5)).unwrap();
/// let mut backend = CpuBackend::new(&splits);
/// let trained = trainer.fit(&splits, &mut backend, |_| {}).unwrap();
/// assert_eq!(trained.report.best_validation_error, 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct Trainer {
    config: TrainConfig,
    stop: Option<Arc<AtomicBool>>,
    resume: Option<(Progress, Option<Model>)>,
}

impl Trainer {
    /// Validates `config` and returns a trainer for it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for the first setting out of range.
    pub fn new(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        Ok(Trainer {
            config,
            stop: None,
            resume: None,
        })
    }

    /// Continues a run from `progress`, the counters of a checkpoint, whose
    /// best model so far was `best`. The backend must hold the checkpoint's
    /// parameters and optimiser state. If validation does not improve on the
    /// checkpoint's best, `best` is the model returned.
    pub fn with_progress(mut self, progress: Progress, best: Option<Model>) -> Self {
        self.resume = Some((progress, best));
        self
    }

    /// Stops training at the next validation or epoch boundary once `flag`
    /// is set, for example from a Ctrl-C handler. The best model so far is
    /// returned and [`TrainReport::interrupted`] is set.
    pub fn with_stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Returns the configuration in use.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Trains on `backend`, which must hold the same `splits`, and returns
    /// the best model. `on_event` receives progress as it happens.
    ///
    /// # Errors
    /// [`Error::Dataset`] if a split has no complete minibatch to train or
    /// validate on, [`Error::Diverged`] when a loss or parameter stops being
    /// finite, and any error of the backend.
    pub fn fit(
        &self,
        splits: &Splits,
        backend: &mut dyn Backend,
        mut on_event: impl FnMut(&TrainEvent),
    ) -> Result<Trained> {
        let config = &self.config;
        let plan = Plan::new(splits, config)?;
        let batches = plan.train.len();
        let interval = config.validation_interval(batches);
        let epoch_limit = config.epoch_limit();

        let started = Instant::now();
        let (mut progress, resumed_best) = self
            .resume
            .clone()
            .unwrap_or_else(|| (Progress::start(config), None));
        let resumed_best_iteration = progress
            .best_validation_error
            .map(|_| progress.best_iteration);
        // A checkpoint taken mid-epoch continues that epoch, so it counts as not completed.
        let resumed_after_epochs = if progress.minibatch < batches {
            progress.epoch.saturating_sub(1)
        } else {
            progress.epoch
        };
        let mut interrupted = false;
        // Patience only ends a run when no fixed epoch count is set.
        let mut done = config.epochs.is_none()
            && progress.epoch > 0
            && progress.patience < progress.iterations;
        let mut resumed_epoch = progress.minibatch < batches && progress.epoch > 0;

        while !done
            && ((resumed_epoch && progress.epoch <= epoch_limit) || progress.epoch < epoch_limit)
        {
            if resumed_epoch {
                resumed_epoch = false;
            } else {
                progress.epoch += 1;
                progress.minibatch = 0;
            }
            let epoch = progress.epoch;
            on_event(&TrainEvent::EpochStarted { epoch, batches });
            if config.shuffle {
                let order = epoch_order(config.seed, epoch, splits.train.len());
                backend.set_train_order(Some(&order))?;
            }
            let learning_rate = config.schedule.rate(config.learning_rate, epoch - 1);
            while progress.minibatch < batches {
                // Run every step up to the next event: a validation, the
                // patience limit or the end of the epoch.
                let minibatch = progress.minibatch;
                let first = (epoch - 1) * batches + minibatch;
                let next_validation = (first / interval + 1) * interval - 1;
                let mut last = next_validation.min(epoch * batches - 1);
                if config.epochs.is_none() {
                    last = last.min(progress.patience.max(first));
                }
                let count = last - first + 1;
                backend.train_steps(&plan.train[minibatch..minibatch + count], learning_rate)?;
                progress.minibatch += count;
                progress.iterations = last + 1;
                on_event(&TrainEvent::StepsCompleted {
                    epoch,
                    done: progress.minibatch,
                    batches,
                });

                if (last + 1) % interval == 0 {
                    self.validate(&plan, backend, &mut progress, last, &mut on_event)?;
                }
                if config.epochs.is_none() && progress.patience <= last {
                    done = true;
                    break;
                }
                if self
                    .stop
                    .as_ref()
                    .is_some_and(|flag| flag.load(Ordering::Relaxed))
                {
                    interrupted = true;
                    done = true;
                    break;
                }
            }
        }

        // Steps after the last validation may still have diverged.
        let status = backend.evaluate(Split::Validation, &[])?;
        self.check_finite(&status, batches)?;
        let improved_since_resume = progress
            .best_validation_error
            .map(|_| progress.best_iteration)
            != resumed_best_iteration;
        let model = match resumed_best {
            Some(best) if !improved_since_resume => best,
            _ => backend.best_model()?,
        };
        Ok(Trained {
            model,
            report: TrainReport {
                best_validation_error: progress.best_validation_error.unwrap_or(f64::INFINITY),
                test_error: progress.test_error,
                best_iteration: progress.best_iteration,
                epochs: progress.epoch,
                resumed_after_epochs,
                iterations: progress.iterations,
                seconds: started.elapsed().as_secs_f64(),
                interrupted,
            },
            progress,
        })
    }

    /// Measures the validation error after iteration `last`, and on an
    /// improvement keeps the model and measures its test error.
    fn validate(
        &self,
        plan: &Plan,
        backend: &mut dyn Backend,
        progress: &mut Progress,
        last: usize,
        on_event: &mut impl FnMut(&TrainEvent),
    ) -> Result<()> {
        let config = &self.config;
        let batches = plan.train.len();
        let (epoch, minibatch) = (progress.epoch, progress.minibatch);
        let validation = backend.evaluate(Split::Validation, &plan.validation)?;
        self.check_finite(&validation, batches)?;
        let error = validation.error_rate();
        let best = progress.best_validation_error.unwrap_or(f64::INFINITY);
        let improved = error < best;
        on_event(&TrainEvent::Validated {
            epoch,
            minibatch,
            batches,
            validation_error: error,
            improved,
        });
        if !improved {
            return Ok(());
        }
        if error < best * config.improvement_threshold {
            progress.patience = progress
                .patience
                .max((last as f64 * config.patience_increase) as usize);
        }
        progress.best_validation_error = Some(error);
        progress.best_iteration = last;
        backend.keep_best()?;
        if !plan.test.is_empty() {
            let test = backend.evaluate(Split::Test, &plan.test)?;
            progress.test_error = Some(test.error_rate());
            on_event(&TrainEvent::TestedBest {
                epoch,
                minibatch,
                batches,
                test_error: test.error_rate(),
            });
        }
        Ok(())
    }

    fn check_finite(&self, evaluation: &Evaluation, batches: usize) -> Result<()> {
        match evaluation.first_non_finite_step {
            None => Ok(()),
            Some(step) => {
                let step = step as usize;
                Err(Error::Diverged {
                    epoch: step / batches + 1,
                    minibatch: step % batches + 1,
                    what: "the loss or a parameter",
                    learning_rate: self.config.learning_rate,
                })
            }
        }
    }
}

/// Minibatches of the three splits.
struct Plan {
    train: Vec<Batch>,
    validation: Vec<Batch>,
    test: Vec<Batch>,
}

impl Plan {
    fn new(splits: &Splits, config: &TrainConfig) -> Result<Self> {
        let split = |split: Split| {
            Batch::split(splits.get(split).len(), config.batch_size, config.drop_last)
        };
        let plan = Plan {
            train: split(Split::Train),
            validation: split(Split::Validation),
            test: split(Split::Test),
        };
        for (name, batches) in [
            (Split::Train, &plan.train),
            (Split::Validation, &plan.validation),
        ] {
            if batches.is_empty() {
                let rows = splits.get(name).len();
                let advice = if rows == 0 {
                    format!("the {name} set has no rows; early stopping needs both a training and a validation set")
                } else {
                    format!(
                        "the {name} set has {rows} rows, fewer than one batch of {}; lower the batch size or do not drop incomplete batches",
                        config.batch_size
                    )
                };
                return Err(Error::Dataset {
                    name: name.to_string(),
                    reason: advice,
                });
            }
        }
        Ok(plan)
    }
}
