//! Multilayer perceptrons, and [`Model`], the type that covers every model
//! this crate trains.

use super::LogisticRegression;
use crate::cpu::ops;
use crate::data::Dataset;
use crate::error::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest parameter count that the command line accepts for a new network:
/// 2^28 (1 GiB of f32 per copy). Training keeps several copies (gradients,
/// optimiser state, the best model), so larger networks risk exhausting
/// memory part way, where an allocation failure aborts the process.
pub const MAX_PARAMETERS: usize = 1 << 28;

/// Activation function of the hidden layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Hyperbolic tangent, the classic tutorial's choice.
    #[default]
    Tanh,
    /// Logistic sigmoid `1 / (1 + e^-x)`.
    Sigmoid,
    /// Rectified linear unit `max(0, x)`.
    Relu,
}

impl Activation {
    /// Name as the command line and model files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
        }
    }

    /// Applies the activation to `x`.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Relu => x.max(0.0),
        }
    }

    /// Derivative of the activation, written in terms of its output `y`.
    /// For ReLU it is 1 where `y > 0` and 0 elsewhere, including at 0.
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Tanh => 1.0 - y * y,
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "tanh" => Ok(Activation::Tanh),
            "sigmoid" => Ok(Activation::Sigmoid),
            "relu" => Ok(Activation::Relu),
            other => Err(format!(
                "unknown activation `{other}`; expected tanh, sigmoid or relu"
            )),
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One fully connected layer: `y = x · weights + bias`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// `inputs x outputs` weights, row-major.
    pub weights: Array2<f32>,
    /// `outputs` biases.
    pub bias: Array1<f32>,
}

impl Dense {
    /// Creates a layer with zero weights and biases.
    pub fn zeros(inputs: usize, outputs: usize) -> Self {
        Dense {
            weights: Array2::zeros((inputs, outputs)),
            bias: Array1::zeros(outputs),
        }
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.weights.nrows()
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.weights.ncols()
    }
}

/// A multilayer perceptron: hidden layers with one activation, then a
/// softmax output layer.
///
/// `layers[i]` maps the output of layer `i - 1` (the input for `i = 0`) to
/// its own outputs. The last layer has one output per class and no
/// activation of its own, because the softmax is part of the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Layers from the input to the output.
    pub layers: Vec<Dense>,
    /// Activation of every hidden layer.
    pub activation: Activation,
    /// Shape of one input sample; its product is the first layer's input count.
    pub sample_shape: Vec<usize>,
}

impl Mlp {
    /// Creates a network with the given hidden layer widths, initialised as
    /// is usual for its activation from a generator seeded with `seed`.
    ///
    /// Weights are drawn uniformly from `[-r, r]`: `r = sqrt(6 / (fan_in +
    /// fan_out))` (Glorot and Bengio, 2010) for tanh, four times that for
    /// sigmoid, and `r = sqrt(6 / fan_in)` (He et al., 2015, uniform form) for
    /// ReLU. The output layer uses the same rule as the hidden layers.
    /// Biases start at zero. The same seed gives the same weights.
    ///
    /// # Panics
    /// If the sample shape's product, a width or `classes` is zero.
    pub fn new(
        sample_shape: Vec<usize>,
        hidden: &[usize],
        classes: usize,
        activation: Activation,
        seed: u64,
    ) -> Self {
        let features: usize = sample_shape.iter().product();
        assert!(
            features > 0 && classes > 0,
            "a network needs at least one feature and one class"
        );
        assert!(
            hidden.iter().all(|&width| width > 0),
            "hidden layers need at least one unit"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut widths = vec![features];
        widths.extend_from_slice(hidden);
        widths.push(classes);
        let layers = widths
            .windows(2)
            .map(|pair| {
                let (fan_in, fan_out) = (pair[0], pair[1]);
                let range = match activation {
                    Activation::Tanh => (6.0 / (fan_in + fan_out) as f64).sqrt(),
                    Activation::Sigmoid => 4.0 * (6.0 / (fan_in + fan_out) as f64).sqrt(),
                    Activation::Relu => (6.0 / fan_in as f64).sqrt(),
                } as f32;
                let weights = Array2::from_shape_simple_fn((fan_in, fan_out), || {
                    rng.random_range(-range..=range)
                });
                Dense {
                    weights,
                    bias: Array1::zeros(fan_out),
                }
            })
            .collect();
        Mlp {
            layers,
            activation,
            sample_shape,
        }
    }

    /// Returns the number of weights and biases of a network with these
    /// sizes, or `None` if it overflows `usize`.
    pub fn parameter_count(features: usize, hidden: &[usize], classes: usize) -> Option<usize> {
        let mut widths = vec![features];
        widths.extend_from_slice(hidden);
        widths.push(classes);
        widths.windows(2).try_fold(0usize, |total, pair| {
            let layer = pair[0].checked_add(1)?.checked_mul(pair[1])?;
            total.checked_add(layer)
        })
    }

    /// Widths of the hidden layers, from the input side.
    pub fn hidden(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1]
            .iter()
            .map(Dense::outputs)
            .collect()
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.layers[0].inputs()
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }

    /// Logits of `n x d` inputs, computed in f32 with ndarray.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not have `d` columns.
    pub fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_columns(x.ncols(), self.n_features(), &self.sample_shape)?;
        let (last, hidden) = self
            .layers
            .split_last()
            .expect("a network has an output layer");
        let mut activations = x.to_owned();
        for layer in hidden {
            let mut z = activations.dot(&layer.weights);
            z += &layer.bias.view().insert_axis(Axis(0));
            z.mapv_inplace(|value| self.activation.apply(value));
            activations = z;
        }
        let mut logits = activations.dot(&last.weights);
        logits += &last.bias.view().insert_axis(Axis(0));
        Ok(logits)
    }
}

/// Any model this crate trains, saves and loads.
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    /// Multiclass logistic regression, the classic tutorial's model.
    Logistic(LogisticRegression),
    /// A multilayer perceptron.
    Mlp(Mlp),
}

impl From<LogisticRegression> for Model {
    fn from(model: LogisticRegression) -> Self {
        Model::Logistic(model)
    }
}

impl From<Mlp> for Model {
    fn from(model: Mlp) -> Self {
        Model::Mlp(model)
    }
}

impl Model {
    /// Kind name as model files spell it: `logistic_regression` or `mlp`.
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Logistic(_) => "logistic_regression",
            Model::Mlp(_) => "mlp",
        }
    }

    /// Returns one line describing the architecture, such as `mlp 784-500-10 tanh`.
    pub fn summary(&self) -> String {
        match self {
            Model::Logistic(model) => format!(
                "logistic regression {}-{}",
                model.n_features(),
                model.n_classes()
            ),
            Model::Mlp(model) => {
                let mut widths = vec![model.n_features()];
                widths.extend(model.hidden());
                widths.push(model.n_classes());
                let widths: Vec<String> = widths.iter().map(ToString::to_string).collect();
                format!("mlp {} {}", widths.join("-"), model.activation)
            }
        }
    }

    /// Returns the logistic regression inside, if this is one.
    pub fn as_logistic(&self) -> Option<&LogisticRegression> {
        match self {
            Model::Logistic(model) => Some(model),
            Model::Mlp(_) => None,
        }
    }

    /// Returns the logistic regression inside.
    ///
    /// # Panics
    /// If this is not a logistic regression.
    pub fn into_logistic(self) -> LogisticRegression {
        match self {
            Model::Logistic(model) => model,
            Model::Mlp(model) => panic!(
                "expected a logistic regression, found {}",
                Model::Mlp(model).summary()
            ),
        }
    }

    /// Shape of one input sample.
    pub fn sample_shape(&self) -> &[usize] {
        match self {
            Model::Logistic(model) => &model.sample_shape,
            Model::Mlp(model) => &model.sample_shape,
        }
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        match self {
            Model::Logistic(model) => model.n_features(),
            Model::Mlp(model) => model.n_features(),
        }
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        match self {
            Model::Logistic(model) => model.n_classes(),
            Model::Mlp(model) => model.n_classes(),
        }
    }

    /// Logits of `n x d` inputs.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not have `d` columns.
    pub fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        match self {
            Model::Logistic(model) => model.logits(x),
            Model::Mlp(model) => model.logits(x),
        }
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
        check_columns(data.n_features(), self.n_features(), self.sample_shape())?;
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

    /// Copies the model's parameters into layers, one layer for logistic
    /// regression.
    pub fn to_layers(&self) -> Vec<Dense> {
        match self {
            Model::Logistic(model) => vec![Dense {
                weights: model.weights.clone(),
                bias: model.bias.clone(),
            }],
            Model::Mlp(model) => model.layers.clone(),
        }
    }

    /// Returns a model of the same kind and architecture with `layers` as its
    /// parameters.
    ///
    /// # Panics
    /// If the layer count or a shape differs from this model's.
    pub fn with_layers(&self, layers: Vec<Dense>) -> Model {
        let current = self.to_layers();
        assert_eq!(layers.len(), current.len(), "layer count must not change");
        for (new, old) in layers.iter().zip(&current) {
            assert_eq!(
                new.weights.dim(),
                old.weights.dim(),
                "layer shape must not change"
            );
            assert_eq!(
                new.bias.len(),
                old.bias.len(),
                "layer shape must not change"
            );
        }
        match self {
            Model::Logistic(model) => {
                let layer = layers.into_iter().next().expect("one layer");
                Model::Logistic(LogisticRegression {
                    weights: layer.weights,
                    bias: layer.bias,
                    sample_shape: model.sample_shape.clone(),
                })
            }
            Model::Mlp(model) => Model::Mlp(Mlp {
                layers,
                activation: model.activation,
                sample_shape: model.sample_shape.clone(),
            }),
        }
    }

    /// Activation of the hidden layers; `None` for logistic regression.
    pub fn activation(&self) -> Option<Activation> {
        match self {
            Model::Logistic(_) => None,
            Model::Mlp(model) => Some(model.activation),
        }
    }
}

fn check_columns(columns: usize, features: usize, sample_shape: &[usize]) -> Result<()> {
    if columns != features {
        return Err(Error::Shape {
            reason: format!(
                "the model takes {features} features per sample (shape {sample_shape:?}) but the data has {columns}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialisation_is_seeded_and_bounded() {
        let first = Mlp::new(vec![20], &[30], 4, Activation::Tanh, 7);
        let again = Mlp::new(vec![20], &[30], 4, Activation::Tanh, 7);
        let other = Mlp::new(vec![20], &[30], 4, Activation::Tanh, 8);
        assert_eq!(first, again);
        assert_ne!(first, other);
        let limit = (6.0f32 / 50.0).sqrt();
        assert!(first.layers[0].weights.iter().all(|w| w.abs() <= limit));
        assert!(
            first.layers[0]
                .weights
                .iter()
                .any(|w| w.abs() > limit * 0.9),
            "draws cover the range"
        );
        let sigmoid = Mlp::new(vec![20], &[30], 4, Activation::Sigmoid, 7);
        assert!(sigmoid.layers[0]
            .weights
            .iter()
            .any(|w| w.abs() > limit * 1.5));
        let relu = Mlp::new(vec![20], &[30], 4, Activation::Relu, 7);
        let he_limit = (6.0f32 / 20.0).sqrt();
        assert!(relu.layers[0].weights.iter().all(|w| w.abs() <= he_limit));
        assert!(first
            .layers
            .iter()
            .all(|layer| layer.bias.iter().all(|&b| b == 0.0)));
    }

    #[test]
    fn summary_names_widths_and_activation() {
        let model = Model::from(Mlp::new(vec![28, 28], &[500, 100], 10, Activation::Relu, 1));
        assert_eq!(model.summary(), "mlp 784-500-100-10 relu");
        assert_eq!(model.n_features(), 784);
        assert_eq!(model.n_classes(), 10);
    }

    #[test]
    fn logits_match_manual_forward_pass() {
        let mut model = Mlp::new(vec![2], &[2], 2, Activation::Tanh, 3);
        model.layers[0].weights = ndarray::array![[1.0, -1.0], [0.5, 2.0]];
        model.layers[0].bias = ndarray::array![0.1, -0.2];
        model.layers[1].weights = ndarray::array![[1.0, 0.0], [0.0, 3.0]];
        model.layers[1].bias = ndarray::array![0.0, 1.0];
        let x = ndarray::array![[1.0f32, 2.0]];
        let logits = model.logits(x.view()).unwrap();
        let h0 = (1.0f32 + 1.0 + 0.1).tanh();
        let h1 = (-1.0f32 + 4.0 - 0.2).tanh();
        assert!((logits[[0, 0]] - h0).abs() < 1e-6);
        assert!((logits[[0, 1]] - (3.0 * h1 + 1.0)).abs() < 1e-6);
    }
}
