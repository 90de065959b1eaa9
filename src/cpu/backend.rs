//! [`Backend`] on the CPU.

use super::fused::{self, FusedParams, StepScratch};
use super::network::Network;
use crate::backend::{check_order, Backend, Batch, Evaluation, Setup};
use crate::data::bytes::SplitBytes;
use crate::data::{Split, Splits};
use crate::error::Result;
use crate::model::{LogisticRegression, Model};
use crate::optim::OptimizerState;
use ndarray::Array2;

/// Trains on the CPU with rayon, reading the splits in place.
///
/// Logistic regression with plain SGD and no penalty, the classic setup,
/// runs through [`fused::sgd_step`], with the weights kept classes-major.
/// When every feature is `byte / 256`, as with MNIST, it trains on a byte
/// copy of the features: a quarter of the memory traffic, with
/// bit-identical results. Every other setup runs through [`Network`].
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
    bytes: Option<SplitBytes>,
    params: FusedParams,
    scratch: StepScratch,
    best: Option<FusedParams>,
    /// Rows of one batch gathered in training order when an order is set.
    gathered_bytes: Vec<u8>,
    gathered_floats: Vec<f32>,
    gathered_labels: Vec<u32>,
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
        let Some(order) = order else {
            let features = rows.start * d..rows.end * d;
            let labels = &train.labels()[rows];
            return match &self.bytes {
                Some(bytes) => {
                    let x = &bytes.get(Split::Train)[features];
                    fused::sgd_step_with(
                        &mut self.scratch,
                        &mut self.params,
                        x,
                        labels,
                        learning_rate,
                    )
                }
                None => fused::sgd_step_with(
                    &mut self.scratch,
                    &mut self.params,
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
        match &self.bytes {
            Some(bytes) => {
                let source = bytes.get(Split::Train);
                self.gathered_bytes.clear();
                for &row in picked {
                    let row = row as usize;
                    self.gathered_bytes
                        .extend_from_slice(&source[row * d..(row + 1) * d]);
                }
                fused::sgd_step_with(
                    &mut self.scratch,
                    &mut self.params,
                    &self.gathered_bytes,
                    &self.gathered_labels,
                    learning_rate,
                )
            }
            None => {
                self.gathered_floats.clear();
                for &row in picked {
                    self.gathered_floats
                        .extend_from_slice(train.row(row as usize));
                }
                fused::sgd_step_with(
                    &mut self.scratch,
                    &mut self.params,
                    &self.gathered_floats,
                    &self.gathered_labels,
                    learning_rate,
                )
            }
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
                    bytes: SplitBytes::convert(splits),
                    params: FusedEngine::from_model(model),
                    scratch: StepScratch::default(),
                    best: None,
                    gathered_bytes: Vec::new(),
                    gathered_floats: Vec::new(),
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
                let storage = if fused.bytes.is_some() { "u8" } else { "f32" };
                format!("cpu (rayon, {threads} threads), features {storage}")
            }
            Engine::Network { .. } => format!("cpu (rayon, {threads} threads, matrixmultiply)"),
        }
    }

    fn train_steps(&mut self, batches: &[Batch], learning_rate: f32) -> Result<()> {
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

    fn set_train_order(&mut self, order: Option<&[u32]>) -> Result<()> {
        if let Some(order) = order {
            check_order(order, self.splits.train.len())?;
        }
        self.order = order.map(<[u32]>::to_vec);
        Ok(())
    }

    fn evaluate(&mut self, split: Split, batches: &[Batch]) -> Result<Evaluation> {
        let data = self.splits.get(split);
        let d = data.n_features();
        let mut errors = 0;
        let mut rows = 0;
        for batch in batches {
            check_batch(data.len(), batch)?;
            let range = batch.start..batch.start + batch.len;
            let labels = &data.labels()[range.clone()];
            errors += match &mut self.engine {
                Engine::Fused(fused) => {
                    let features = range.start * d..range.end * d;
                    match &fused.bytes {
                        Some(bytes) => {
                            fused::count_errors(&fused.params, &bytes.get(split)[features], labels)
                        }
                        None => {
                            fused::count_errors(&fused.params, &data.features()[features], labels)
                        }
                    }
                }
                Engine::Network { current, .. } => {
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

    fn keep_best(&mut self) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(fused) => fused.best = Some(fused.params.clone()),
            Engine::Network { current, best } => *best = Some(current.model()),
        }
        Ok(())
    }

    fn best_model(&mut self) -> Result<Model> {
        Ok(match &self.engine {
            Engine::Fused(fused) => fused.to_model(fused.best.as_ref().unwrap_or(&fused.params)),
            Engine::Network { current, best } => best.clone().unwrap_or_else(|| current.model()),
        })
    }

    fn current_model(&mut self) -> Result<Model> {
        Ok(match &self.engine {
            Engine::Fused(fused) => fused.to_model(&fused.params),
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
    fn params_finite(&self) -> bool {
        match &self.engine {
            Engine::Fused(fused) => fused.params.is_finite(),
            Engine::Network { current, .. } => current.is_finite(),
        }
    }
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
