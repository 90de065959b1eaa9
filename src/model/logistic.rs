//! Multiclass logistic regression.

use crate::cpu::ops;
use crate::data::Dataset;
use crate::error::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2};

/// Multiclass logistic regression: `p(y | x) = softmax(x · weights + bias)`.
///
/// `weights` is `d x k` (features by classes, row-major) and `bias` has `k`
/// entries. `sample_shape` records the shape of one input, for example
/// `[28, 28]`, whose product is `d`.
///
/// ```
/// use wgpu_learn::model::LogisticRegression;
/// let mut model = LogisticRegression::zeros(vec![2], 3);
/// model.bias[2] = 1.0;
/// let x = ndarray::array![[0.5f32, -0.5]];
/// assert_eq!(model.predict(x.view()).unwrap(), vec![2]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticRegression {
    /// `d x k` weights.
    pub weights: Array2<f32>,
    /// `k` biases.
    pub bias: Array1<f32>,
    /// Shape of one input sample; its product is `d`.
    pub sample_shape: Vec<usize>,
}

impl LogisticRegression {
    /// Creates a model with all weights and biases zero, as training starts.
    ///
    /// # Panics
    /// If the shape's product or `classes` is zero.
    pub fn zeros(sample_shape: Vec<usize>, classes: usize) -> Self {
        let features: usize = sample_shape.iter().product();
        assert!(
            features > 0 && classes > 0,
            "model needs at least one feature and one class"
        );
        LogisticRegression {
            weights: Array2::zeros((features, classes)),
            bias: Array1::zeros(classes),
            sample_shape,
        }
    }

    /// Number of input features `d`.
    pub fn n_features(&self) -> usize {
        self.weights.nrows()
    }

    /// Number of classes `k`.
    pub fn n_classes(&self) -> usize {
        self.weights.ncols()
    }

    /// Logits `x · weights + bias` for `n x d` inputs.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not have `d` columns.
    pub fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_columns(x.ncols())?;
        Ok(ops::logits(x, self.weights.view(), self.bias.view()))
    }

    /// Class probabilities, `n x k`, each row summing to 1.
    pub fn probabilities(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut logits = self.logits(x)?;
        ops::softmax_in_place(logits.view_mut());
        Ok(logits)
    }

    /// Most probable class of each row (the first one on ties).
    pub fn predict(&self, x: ArrayView2<'_, f32>) -> Result<Vec<u32>> {
        Ok(ops::argmax_rows(self.logits(x)?.view()))
    }

    /// Fraction of `data`'s rows that the model misclassifies (0 for no rows).
    ///
    /// # Errors
    /// [`Error::Shape`] if the dataset's feature count or class count differs
    /// from the model's.
    pub fn error_rate(&self, data: &Dataset) -> Result<f64> {
        self.check_dataset(data)?;
        if data.is_empty() {
            return Ok(0.0);
        }
        let logits = self.logits(data.features_view())?;
        Ok(ops::count_errors(logits.view(), data.labels()) as f64 / data.len() as f64)
    }

    /// Checks that `data` has this model's feature and class counts.
    pub fn check_dataset(&self, data: &Dataset) -> Result<()> {
        self.check_columns(data.n_features())?;
        if data.n_classes() > self.n_classes() {
            return Err(Error::Shape {
                reason: format!(
                    "the data has labels up to {} but the model has {} classes",
                    data.n_classes() - 1,
                    self.n_classes()
                ),
            });
        }
        Ok(())
    }

    fn check_columns(&self, columns: usize) -> Result<()> {
        if columns != self.n_features() {
            return Err(Error::Shape {
                reason: format!(
                    "the model takes {} features per sample (shape {:?}) but the data has {columns}",
                    self.n_features(),
                    self.sample_shape
                ),
            });
        }
        Ok(())
    }
}
