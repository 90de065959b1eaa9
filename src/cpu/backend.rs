//! [`Backend`] on the CPU.

use super::fused::{self, FusedParams, StepScratch};
use super::network::Network;
use super::sparse::{SparseRows, SparseTrainer};
use crate::backend::{check_order, Backend, Batch, Evaluation, Setup};
use crate::data::bytes::SplitBytes;
use crate::data::{Split, Splits};
use crate::error::Result;
use crate::model::{LogisticRegression, Model};
use crate::optim::OptimizerState;
use ndarray::Array2;
use rayon::prelude::*;
use std::ops::Range;

/// Trains on the CPU with rayon, reading the splits in place.
///
/// Logistic regression with plain SGD and no penalty, the classic setup,
/// runs through the fused step. When every feature is `byte / 256`, as with
/// MNIST, it trains on bytes: on [`SparseRows`] with the [`SparseTrainer`]
/// when at most a third of the training features need storing, else on a
/// dense byte copy with [`fused::sgd_step`]. Both give the same results as
/// f32 features, bit for bit. Every other setup runs through [`Network`].
pub struct CpuBackend<'a> {
    splits: &'a Splits,
    engine: Engine,
    order: Option<Vec<u32>>,
    steps_done: u64,
    first_non_finite_step: Option<u64>,
}

enum Engine {
    Fused(Box<FusedEngine>),
    Network {
        current: Box<Network>,
        best: Option<Model>,
    },
}

struct FusedEngine {
    sample_shape: Vec<usize>,
    kernel: FusedKernel,
    best: Option<FusedParams>,
    /// Labels of one batch gathered in training order when an order is set.
    gathered_labels: Vec<u32>,
}

/// The fused step's kernel and the feature storage it reads.
// Each backend has one, inside the `Box` of `Engine::Fused`, so the size
// of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum FusedKernel {
    /// Dense rows, as bytes when every feature is `byte / 256`, else as f32.
    Dense {
        bytes: Option<SplitBytes>,
        params: FusedParams,
        scratch: StepScratch,
        /// Rows of one batch gathered in training order when an order is set.
        gathered_bytes: Vec<u8>,
        gathered_floats: Vec<f32>,
    },
    /// Byte rows stored by their nonzero entries, one set per split, indexed
    /// by `Split as usize` (train, validation, test).
    Sparse {
        rows: Box<[SparseRows; 3]>,
        trainer: Box<SparseTrainer>,
        /// Row indices of the current batch.
        picked: Vec<u32>,
    },
}

/// Largest fraction of stored training features (nonzero ones plus
/// padding) for which the fused step reads sparse rows. Above it the dense
/// kernels, which do a multiply-add per feature at full SIMD width, are
/// faster.
///
/// NOTE: 0.33 is the crossover measured on a 2-core AVX2 Zen 3 machine,
/// where MNIST (20.1 % stored) trains 1.4 times faster on sparse rows and
/// Fashion-MNIST (51.5 %) 1.4 times slower. Other CPUs may cross elsewhere.
const SPARSE_MAX_DENSITY: f64 = 0.33;

impl FusedKernel {
    /// Picks the storage for `splits`: sparse rows when every feature is a
    /// byte and at most `max_density` of the training features need storing,
    /// else dense bytes when every feature is a byte, else f32.
    fn choose(splits: &Splits, params: FusedParams, max_density: f64) -> Self {
        if let Some(sparse) = Self::sparse(splits, &params, max_density) {
            return sparse;
        }
        FusedKernel::Dense {
            bytes: SplitBytes::convert(splits),
            params,
            scratch: StepScratch::default(),
            gathered_bytes: Vec::new(),
            gathered_floats: Vec::new(),
        }
    }

    fn sparse(splits: &Splits, params: &FusedParams, max_density: f64) -> Option<Self> {
        let trainer = SparseTrainer::new(params)?;
        let d = splits.n_features();
        // The nonzero features are a lower bound on the stored entries, so
        // counting them rules out dense data before any rows are built.
        let features = splits.train.features();
        let nonzero = features.par_iter().filter(|&&value| value != 0.0).count();
        if nonzero as f64 > max_density * features.len().max(1) as f64 {
            return None;
        }
        let train = SparseRows::from_features(features, d)?;
        if train.stored_fraction() > max_density {
            return None;
        }
        let validation = SparseRows::from_features(splits.validation.features(), d)?;
        let test = SparseRows::from_features(splits.test.features(), d)?;
        Some(FusedKernel::Sparse {
            rows: Box::new([train, validation, test]),
            trainer: Box::new(trainer),
            picked: Vec::new(),
        })
    }

    fn params(&self) -> FusedParams {
        match self {
            FusedKernel::Dense { params, .. } => params.clone(),
            FusedKernel::Sparse { trainer, .. } => trainer.params(),
        }
    }

    fn is_finite(&self) -> bool {
        match self {
            FusedKernel::Dense { params, .. } => params.is_finite(),
            FusedKernel::Sparse { trainer, .. } => trainer.is_finite(),
        }
    }
}

impl FusedEngine {
    fn to_model(&self, params: &FusedParams) -> Model {
        let mut model = LogisticRegression::zeros(self.sample_shape.clone(), params.k);
        for ((feature, class), weight) in model.weights.indexed_iter_mut() {
            *weight = params.wt[class * params.d + feature];
        }
        model.bias = ndarray::Array1::from_vec(params.bias.clone());
        Model::Logistic(model)
    }

    fn from_model(model: &LogisticRegression) -> FusedParams {
        let (d, k) = model.weights.dim();
        let mut params = FusedParams::zeros(d, k);
        for ((feature, class), &weight) in model.weights.indexed_iter() {
            params.wt[class * d + feature] = weight;
        }
        params.bias = model.bias.to_vec();
        params
    }

    fn step(
        &mut self,
        train: &crate::data::Dataset,
        order: Option<&[u32]>,
        batch: &Batch,
        learning_rate: f32,
    ) -> f32 {
        let d = train.n_features();
        let rows = batch.start..batch.start + batch.len;
        let (bytes, params, scratch, gathered_bytes, gathered_floats) = match &mut self.kernel {
            FusedKernel::Sparse {
                rows: sparse,
                trainer,
                picked,
            } => {
                picked.clear();
                match order {
                    Some(order) => picked.extend_from_slice(&order[rows]),
                    None => picked.extend(rows.start as u32..rows.end as u32),
                }
                let train_rows = &sparse[Split::Train as usize];
                return trainer.step(train_rows, picked, train.labels(), learning_rate);
            }
            FusedKernel::Dense {
                bytes,
                params,
                scratch,
                gathered_bytes,
                gathered_floats,
            } => (bytes, params, scratch, gathered_bytes, gathered_floats),
        };
        let Some(order) = order else {
            let features = rows.start * d..rows.end * d;
            let labels = &train.labels()[rows];
            return match bytes {
                Some(bytes) => {
                    let x = &bytes.get(Split::Train)[features];
                    fused::sgd_step_with(scratch, params, x, labels, learning_rate)
                }
                None => fused::sgd_step_with(
                    scratch,
                    params,
                    &train.features()[features],
                    labels,
                    learning_rate,
                ),
            };
        };
        let picked = &order[rows];
        self.gathered_labels.clear();
        self.gathered_labels
            .extend(picked.iter().map(|&row| train.labels()[row as usize]));
        match bytes {
            Some(bytes) => {
                let source = bytes.get(Split::Train);
                gathered_bytes.clear();
                for &row in picked {
                    let row = row as usize;
                    gathered_bytes.extend_from_slice(&source[row * d..(row + 1) * d]);
                }
                fused::sgd_step_with(
                    scratch,
                    params,
                    gathered_bytes,
                    &self.gathered_labels,
                    learning_rate,
                )
            }
            None => {
                gathered_floats.clear();
                for &row in picked {
                    gathered_floats.extend_from_slice(train.row(row as usize));
                }
                fused::sgd_step_with(
                    scratch,
                    params,
                    gathered_floats,
                    &self.gathered_labels,
                    learning_rate,
                )
            }
        }
    }

    /// Counts the errors of the current parameters on `range` of `split`.
    fn count_errors(&self, data: &crate::data::Dataset, split: Split, range: Range<usize>) -> u64 {
        let d = data.n_features();
        let labels = &data.labels()[range.clone()];
        let features = range.start * d..range.end * d;
        match &self.kernel {
            FusedKernel::Sparse { rows, trainer, .. } => {
                trainer.count_errors(&rows[split as usize], range, data.labels())
            }
            FusedKernel::Dense {
                bytes: Some(bytes),
                params,
                ..
            } => fused::count_errors(params, &bytes.get(split)[features], labels),
            FusedKernel::Dense {
                bytes: None,
                params,
                ..
            } => fused::count_errors(params, &data.features()[features], labels),
        }
    }

    /// Describes the feature storage, such as "features u8" or "features u8
    /// sparse, 20.1 % stored".
    fn storage(&self) -> String {
        match &self.kernel {
            FusedKernel::Sparse { rows, .. } => {
                let stored = rows[Split::Train as usize].stored_fraction();
                format!("features u8 sparse, {:.1} % stored", 100.0 * stored)
            }
            FusedKernel::Dense { bytes: Some(_), .. } => "features u8".to_string(),
            FusedKernel::Dense { bytes: None, .. } => "features f32".to_string(),
        }
    }
}

impl<'a> CpuBackend<'a> {
    /// Creates a backend over `splits` with the classic setup: logistic
    /// regression with zero weights and plain SGD.
    pub fn new(splits: &'a Splits) -> Self {
        Self::with_setup(splits, &Setup::classic(splits)).expect("the classic setup is valid")
    }

    /// Creates a backend over `splits` that trains `setup`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for invalid optimiser settings and
    /// [`crate::Error::Shape`] if the model or the optimiser state does not
    /// fit the data.
    pub fn with_setup(splits: &'a Splits, setup: &Setup) -> Result<Self> {
        setup.validate()?;
        setup.model.check_dataset(&splits.train)?;
        let engine = match &setup.model {
            Model::Logistic(model) if setup.is_plain_logistic() => {
                Engine::Fused(Box::new(FusedEngine {
                    sample_shape: model.sample_shape.clone(),
                    kernel: FusedKernel::choose(
                        splits,
                        FusedEngine::from_model(model),
                        SPARSE_MAX_DENSITY,
                    ),
                    best: None,
                    gathered_labels: Vec::new(),
                }))
            }
            _ => Engine::Network {
                current: Box::new(Network::new(setup)),
                best: None,
            },
        };
        Ok(CpuBackend {
            splits,
            engine,
            order: None,
            steps_done: setup.state.as_ref().map_or(0, |state| state.steps),
            first_non_finite_step: None,
        })
    }
}

impl Backend for CpuBackend<'_> {
    fn description(&self) -> String {
        let threads = rayon::current_num_threads();
        match &self.engine {
            Engine::Fused(fused) => {
                format!("cpu (rayon, {threads} threads), {}", fused.storage())
            }
            Engine::Network { .. } => format!("cpu (rayon, {threads} threads, matrixmultiply)"),
        }
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
        in_pool(|| self.train_steps_in_pool(batches, learning_rate))
    }

    fn set_train_order(&mut self, order: Option<&[u32]>) -> Result<()> {
        if let Some(order) = order {
            check_order(order, self.splits.train.len())?;
        }
        self.order = order.map(<[u32]>::to_vec);
        Ok(())
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        in_pool(|| self.evaluate_in_pool(split, batches))
    }

    fn keep_best(&mut self) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(fused) => fused.best = Some(fused.kernel.params()),
            Engine::Network { current, best } => *best = Some(current.model()),
        }
        Ok(())
    }

    fn best_model(&mut self) -> Result<Model> {
        Ok(match &self.engine {
            Engine::Fused(fused) => match &fused.best {
                Some(best) => fused.to_model(best),
                None => fused.to_model(&fused.kernel.params()),
            },
            Engine::Network { current, best } => best.clone().unwrap_or_else(|| current.model()),
        })
    }

    fn current_model(&mut self) -> Result<Model> {
        Ok(match &self.engine {
            Engine::Fused(fused) => fused.to_model(&fused.kernel.params()),
            Engine::Network { current, .. } => current.model(),
        })
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        Ok(match &self.engine {
            // Plain SGD keeps no state beyond the step count.
            Engine::Fused(_) => OptimizerState {
                steps: self.steps_done,
                tensors: vec![Vec::new(), Vec::new()],
            },
            Engine::Network { current, .. } => current.state.clone(),
        })
    }
}

impl CpuBackend<'_> {
    fn train_steps_in_pool(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
        let train = &self.splits.train;
        let order = self.order.as_deref();
        let mut gathered = Array2::<f32>::zeros((0, 0));
        let mut gathered_labels = Vec::new();
        for batch in batches {
            check_batch(train.len(), batch)?;
            let loss = match &mut self.engine {
                Engine::Fused(fused) => fused.step(train, order, batch, learning_rate),
                Engine::Network { current, .. } => {
                    let rows = batch.start..batch.start + batch.len;
                    match order {
                        None => {
                            let x = train
                                .features_view()
                                .slice_move(ndarray::s![rows.clone(), ..]);
                            current.step(x, &train.labels()[rows], learning_rate)
                        }
                        Some(order) => {
                            gather(train, &order[rows], &mut gathered, &mut gathered_labels);
                            current.step(gathered.view(), &gathered_labels, learning_rate)
                        }
                    }
                }
            };
            if self.first_non_finite_step.is_none() && !(loss.is_finite() && self.params_finite()) {
                self.first_non_finite_step = Some(self.steps_done);
            }
            self.steps_done += 1;
        }
        Ok(())
    }

    fn evaluate_in_pool(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        let data = self.splits.get(split);
        let mut errors = 0;
        let mut rows = 0;
        for batch in batches {
            check_batch(data.len(), batch)?;
            let range = batch.start..batch.start + batch.len;
            errors += match &mut self.engine {
                Engine::Fused(fused) => fused.count_errors(data, split, range),
                Engine::Network { current, .. } => {
                    let labels = &data.labels()[range.clone()];
                    let x = data.features_view().slice_move(ndarray::s![range, ..]);
                    current.count_errors(x, labels)
                }
            };
            rows += batch.len as u64;
        }
        Ok(Evaluation {
            errors,
            rows,
            first_non_finite_step: self.first_non_finite_step,
        })
    }

    fn params_finite(&self) -> bool {
        match &self.engine {
            Engine::Fused(fused) => fused.kernel.is_finite(),
            Engine::Network { current, .. } => current.is_finite(),
        }
    }
}

/// Runs `work` on a worker thread of rayon's global pool and waits for it.
/// A caller that already runs on a rayon worker runs `work` directly. The
/// parallel loops inside `work` then fork and join within the pool. Waking
/// the pool from outside costs a few microseconds per loop, and a training
/// step has two.
fn in_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    rayon::scope(|_| work())
}

/// Checks that `batch` lies within `rows` rows.
fn check_batch(rows: usize, batch: &Batch) -> Result<()> {
    if batch.len == 0 || batch.start + batch.len > rows {
        return Err(crate::Error::Shape {
            reason: format!(
                "batch of rows {}..{} is empty or outside the {rows} rows of the split",
                batch.start,
                batch.start + batch.len
            ),
        });
    }
    Ok(())
}

/// Copies the rows `picked` of `data` into `x` and their labels into `labels`.
fn gather(data: &crate::data::Dataset, picked: &[u32], x: &mut Array2<f32>, labels: &mut Vec<u32>) {
    let d = data.n_features();
    if x.dim() != (picked.len(), d) {
        *x = Array2::zeros((picked.len(), d));
    }
    for (mut target, &row) in x.axis_iter_mut(ndarray::Axis(0)).zip(picked) {
        target
            .as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(data.row(row as usize));
    }
    labels.clear();
    labels.extend(picked.iter().map(|&row| data.labels()[row as usize]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    /// Splits of byte-valued features where `zero_percent` of them are 0.
    fn byte_splits(zero_percent: u32) -> Splits {
        let (d, k) = (40, 4);
        let mut state = 7u32;
        let mut dataset = |name: &str, rows: usize| {
            let features: Vec<f32> = (0..rows * d)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let draw = state >> 8;
                    if draw % 100 < zero_percent {
                        0.0
                    } else {
                        (draw / 100 % 255 + 1) as f32 / 256.0
                    }
                })
                .collect();
            let labels = (0..rows as u32)
                .map(|r| (r * 5 + r / 7) % k as u32)
                .collect();
            Dataset::new(name, features, labels, vec![d], k).unwrap()
        };
        let train = dataset("train", 250);
        let validation = dataset("validation", 70);
        let test = dataset("test", 60);
        Splits::new(train, validation, test).unwrap()
    }

    fn backend_with(splits: &Splits, max_density: f64) -> CpuBackend<'_> {
        let Model::Logistic(model) = &Setup::classic(splits).model else {
            panic!("the classic setup is logistic regression");
        };
        CpuBackend {
            splits,
            engine: Engine::Fused(Box::new(FusedEngine {
                sample_shape: model.sample_shape.clone(),
                kernel: FusedKernel::choose(splits, FusedEngine::from_model(model), max_density),
                best: None,
                gathered_labels: Vec::new(),
            })),
            order: None,
            steps_done: 0,
            first_non_finite_step: None,
        }
    }

    #[test]
    fn sparse_storage_follows_density() {
        let sparse = byte_splits(80);
        assert!(CpuBackend::new(&sparse).description().contains("sparse"));
        let dense = byte_splits(10);
        let description = CpuBackend::new(&dense).description();
        assert!(description.contains("features u8"), "{description}");
        assert!(!description.contains("sparse"), "{description}");
    }

    #[test]
    fn sparse_and_dense_backends_train_identically() {
        let splits = byte_splits(70);
        let mut sparse = backend_with(&splits, 1.0);
        let mut dense = backend_with(&splits, 0.0);
        assert!(sparse.description().contains("sparse"));
        assert!(!dense.description().contains("sparse"));

        let batches: Vec<Batch> = (0..5)
            .map(|i| Batch {
                start: i * 50,
                len: 50,
            })
            .collect();
        let order: Vec<u32> = (0..250u32).map(|r| (r * 37) % 250).collect();
        for backend in [&mut sparse, &mut dense] {
            backend.train_steps(&batches, 0.2).unwrap();
            backend.keep_best().unwrap();
            backend.set_train_order(Some(&order)).unwrap();
            backend.train_steps(&batches[..3], 0.2).unwrap();
        }
        assert_eq!(
            sparse.current_model().unwrap(),
            dense.current_model().unwrap()
        );
        assert_eq!(sparse.best_model().unwrap(), dense.best_model().unwrap());
        for split in [Split::Train, Split::Validation, Split::Test] {
            let rows = splits.get(split).len();
            let all = [Batch {
                start: 0,
                len: rows,
            }];
            let (a, b) = (
                sparse.evaluate(split, &all).unwrap(),
                dense.evaluate(split, &all).unwrap(),
            );
            assert_eq!(a.errors, b.errors, "{split:?}");
            assert!(
                a.errors > 0 && a.errors < rows as u64,
                "{split:?}: {} errors",
                a.errors
            );
        }
    }
}
