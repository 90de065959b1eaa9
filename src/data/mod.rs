//! Datasets in memory and the readers that load them.
//!
//! A [`Dataset`] is a row-major `n x d` matrix of f32 features with one u32
//! label per row. [`Splits`] holds the train, validation and test sets that
//! training uses. Readers: [`idx`] (MNIST's IDX format, raw or gzip),
//! [`pickle`] (the classic `mnist.pkl.gz`), and [`mnist`], which builds the
//! classic splits from either.

pub mod bytes;
pub mod idx;
pub mod mnist;
pub mod pickle;

use crate::error::{Error, Result};
use ndarray::ArrayView2;
use rayon::prelude::*;

/// Features and labels of one split, validated on construction.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<u32>,
    sample_shape: Vec<usize>,
    classes: usize,
}

impl Dataset {
    /// Builds a dataset from row-major features (`labels.len()` rows of
    /// `sample_shape.iter().product()` columns) and labels in `0..classes`.
    ///
    /// `name` appears in error messages, for example the file the data came from.
    ///
    /// # Errors
    /// [`Error::Dataset`] if the feature count does not match the rows, a
    /// label is out of range (the message gives its index), a feature is NaN
    /// or infinite (the message gives row and column), or a shape is zero.
    pub fn new(
        name: &str,
        features: Vec<f32>,
        labels: Vec<u32>,
        sample_shape: Vec<usize>,
        classes: usize,
    ) -> Result<Self> {
        let fail = |reason: String| Error::Dataset {
            name: name.to_string(),
            reason,
        };
        let columns: usize = sample_shape.iter().product();
        if sample_shape.is_empty() || columns == 0 {
            return Err(fail(format!(
                "each sample must have at least one feature, got shape {sample_shape:?}"
            )));
        }
        if classes < 2 {
            return Err(fail(format!(
                "a classifier needs at least 2 classes, got {classes}"
            )));
        }
        let expected = labels.len().checked_mul(columns);
        if expected != Some(features.len()) {
            return Err(fail(format!(
                "{} labels need {} x {columns} features, but there are {} values",
                labels.len(),
                labels.len(),
                features.len()
            )));
        }
        if let Some((index, label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(fail(format!(
                "label {label} at index {index} is outside 0..={}",
                classes - 1
            )));
        }
        if let Some(position) = first_non_finite(&features) {
            return Err(fail(format!(
                "feature at row {}, column {} is {}; remove or replace non-finite values",
                position / columns,
                position % columns,
                features[position]
            )));
        }
        Ok(Dataset {
            features,
            labels,
            sample_shape,
            classes,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns whether the dataset has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features per row (the product of [`Dataset::sample_shape`]).
    pub fn n_features(&self) -> usize {
        self.features
            .len()
            .checked_div(self.len())
            .unwrap_or_else(|| self.sample_shape.iter().product())
    }

    /// Number of classes; labels are in `0..n_classes()`.
    pub fn n_classes(&self) -> usize {
        self.classes
    }

    /// Shape of one sample, for example `[28, 28]` for MNIST.
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Row-major features, `len() * n_features()` values.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// Features as an `n x d` array view.
    pub fn features_view(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.len(), self.n_features()), &self.features)
            .expect("features length was checked in Dataset::new")
    }

    /// Labels, one per row.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Features of row `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn row(&self, index: usize) -> &[f32] {
        let d = self.n_features();
        &self.features[index * d..(index + 1) * d]
    }

    /// Copies rows `range` into a new dataset with the same shape and classes.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Dataset {
        let d = self.n_features();
        Dataset {
            features: self.features[range.start * d..range.end * d].to_vec(),
            labels: self.labels[range].to_vec(),
            sample_shape: self.sample_shape.clone(),
            classes: self.classes,
        }
    }

    /// Returns this dataset with its class count raised to `classes`.
    ///
    /// # Panics
    /// If `classes` is smaller than the current count.
    pub fn with_classes(mut self, classes: usize) -> Dataset {
        assert!(classes >= self.classes, "class count can only grow");
        self.classes = classes;
        self
    }

    /// Splits off the last `rows` rows: returns `(first part, last rows)`.
    ///
    /// # Panics
    /// If `rows > len()`.
    pub fn split_last(self, rows: usize) -> (Dataset, Dataset) {
        let keep = self.len() - rows;
        let tail = self.slice_rows(keep..self.len());
        let mut head = self;
        head.features.truncate(keep * tail.n_features());
        head.labels.truncate(keep);
        (head, tail)
    }
}

/// Which of the three splits an operation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set.
    Train,
    /// The validation set used for early stopping.
    Validation,
    /// The test set, reported for the best model.
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        })
    }
}

/// Returns the index of the first value that is NaN or infinite. Scans
/// blocks in parallel with a branch-free test per value, then the first
/// block that contains a non-finite value one value at a time.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1 << 14;
    let block = values
        .par_chunks(BLOCK)
        .position_first(|block| block.iter().fold(false, |any, v| any | !v.is_finite()))?;
    let start = block * BLOCK;
    values[start..]
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| start + i)
}

/// Train, validation and test sets with one feature shape and class count.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training set.
    pub train: Dataset,
    /// Validation set, used for early stopping.
    pub validation: Dataset,
    /// Test set.
    pub test: Dataset,
}

impl Splits {
    /// Combines three datasets, checking that they share a sample shape and
    /// giving all of them the largest class count of the three.
    ///
    /// # Errors
    /// [`Error::Dataset`] if the sample shapes differ or the training set is empty.
    pub fn new(train: Dataset, validation: Dataset, test: Dataset) -> Result<Self> {
        for (name, other) in [("validation", &validation), ("test", &test)] {
            if other.sample_shape() != train.sample_shape() {
                return Err(Error::Dataset {
                    name: name.to_string(),
                    reason: format!(
                        "samples have shape {:?} but the training samples have shape {:?}",
                        other.sample_shape(),
                        train.sample_shape()
                    ),
                });
            }
        }
        if train.is_empty() {
            return Err(Error::Dataset {
                name: "train".to_string(),
                reason: "the training set has no rows".to_string(),
            });
        }
        let classes = train
            .n_classes()
            .max(validation.n_classes())
            .max(test.n_classes());
        Ok(Splits {
            train: train.with_classes(classes),
            validation: validation.with_classes(classes),
            test: test.with_classes(classes),
        })
    }

    /// Returns the dataset of `split`.
    pub fn get(&self, split: Split) -> &Dataset {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    /// Features per row.
    pub fn n_features(&self) -> usize {
        self.train.n_features()
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.train.n_classes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset::new(
            "tiny",
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            vec![0, 1, 2],
            vec![2],
            3,
        )
        .unwrap()
    }

    #[test]
    fn dataset_accessors_agree() {
        let data = tiny();
        assert_eq!(data.len(), 3);
        assert_eq!(data.n_features(), 2);
        assert_eq!(data.row(1), &[2.0, 3.0]);
        assert_eq!(data.features_view()[[2, 1]], 5.0);
        let (head, tail) = data.split_last(1);
        assert_eq!(head.labels(), &[0, 1]);
        assert_eq!(tail.features(), &[4.0, 5.0]);
    }

    #[test]
    fn dataset_rejects_label_out_of_range() {
        let error = Dataset::new("d", vec![0.0; 4], vec![0, 3], vec![2], 3).unwrap_err();
        assert!(error.to_string().contains("label 3 at index 1"), "{error}");
    }

    #[test]
    fn dataset_rejects_non_finite_feature() {
        let error =
            Dataset::new("d", vec![0.0, 0.0, 0.0, f32::NAN], vec![0, 1], vec![2], 2).unwrap_err();
        assert!(
            error.to_string().contains("row 1, column 1 is NaN"),
            "{error}"
        );
    }

    #[test]
    fn first_non_finite_finds_the_first_across_blocks() {
        let mut values = vec![0.5f32; 3 * (1 << 14) + 5];
        assert_eq!(first_non_finite(&values), None);
        let last = values.len() - 1;
        values[last] = f32::INFINITY;
        assert_eq!(first_non_finite(&values), Some(last));
        values[(1 << 14) + 17] = f32::NEG_INFINITY;
        values[(1 << 14) + 900] = f32::NAN;
        assert_eq!(first_non_finite(&values), Some((1 << 14) + 17));
        assert_eq!(first_non_finite(&[]), None);
    }

    #[test]
    fn dataset_rejects_length_mismatch() {
        let error = Dataset::new("d", vec![0.0; 5], vec![0, 1], vec![2], 2).unwrap_err();
        assert!(
            error.to_string().contains("2 labels need 2 x 2 features"),
            "{error}"
        );
    }

    #[test]
    fn splits_share_class_count() {
        let train = Dataset::new("t", vec![0.0; 2], vec![0, 1], vec![1], 2).unwrap();
        let test = Dataset::new("t", vec![0.0; 1], vec![4], vec![1], 5).unwrap();
        let splits = Splits::new(train.clone(), train, test).unwrap();
        assert_eq!(splits.n_classes(), 5);
        assert_eq!(splits.validation.n_classes(), 5);
    }
}
