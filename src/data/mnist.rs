//! The classic MNIST splits from IDX files or the pickle.
//!
//! Both loaders return train, validation and test sets in the layout of the
//! classic Theano tutorials' `mnist.pkl.gz`. The validation set is the last
//! rows of the training file (10000 of MNIST's 60000), the training set is
//! the rows before them, and the test set is the t10k file. Fashion-MNIST uses the
//! same file names and layout, so [`load_idx_dir`] reads it too.

use super::idx::{self, IdxImages};
use super::pickle::{self, NumpyArray, PickleValue};
use super::{Dataset, Splits};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File name of the training images, without `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// File name of the training labels, without `.gz`.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// File name of the test images, without `.gz`.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// File name of the test labels, without `.gz`.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Raw MNIST-style data as stored in the IDX files: u8 pixels and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxMnist {
    /// The training images, including the rows [`load_idx_dir`] uses for validation.
    pub train_images: IdxImages,
    /// One label per training image.
    pub train_labels: Vec<u8>,
    /// The test images.
    pub test_images: IdxImages,
    /// One label per test image.
    pub test_labels: Vec<u8>,
}

/// Converts a pixel byte to the feature value the loaders use: `byte / 256`.
///
/// The division by a power of two is exact in f32, so the values are
/// `0.0, 1/256, ..., 255/256 = 0.99609375`, equal bit for bit to the arrays
/// of the classic `mnist.pkl.gz`.
pub fn pixel_to_f32(byte: u8) -> f32 {
    f32::from(byte) / 256.0
}

/// Reads the four IDX files of MNIST or Fashion-MNIST from `dir` without
/// converting them.
///
/// Each file may be stored as `NAME` or `NAME.gz`. If both exist, the
/// uncompressed one is read. Whether a file is gzip-compressed is decided by
/// its content, not its name.
///
/// # Errors
/// [`Error::Dataset`] if a file is missing (the message lists the expected
/// names), an images file and its labels file have different counts, or
/// the test images have another shape than the training images.
/// [`Error::Idx`] or [`Error::Io`] if a file cannot be read.
pub fn read_idx_dir(dir: &Path) -> Result<IdxMnist> {
    if !dir.is_dir() {
        let reason = if dir.exists() {
            "it is not a directory; pass the directory that contains the four IDX files"
        } else {
            "the directory does not exist"
        };
        return Err(Error::Dataset {
            name: dir.display().to_string(),
            reason: reason.to_string(),
        });
    }
    let train_images_path = find_file(dir, TRAIN_IMAGES)?;
    let train_labels_path = find_file(dir, TRAIN_LABELS)?;
    let test_images_path = find_file(dir, TEST_IMAGES)?;
    let test_labels_path = find_file(dir, TEST_LABELS)?;

    // The training images take most of the time, so the other three files
    // decompress on a second thread meanwhile. Errors are returned in file
    // order, as a sequential read returns them.
    let (train_images, (train_labels, test_images, test_labels)) = rayon::join(
        || idx::read_images(&train_images_path),
        || {
            (
                idx::read_labels(&train_labels_path),
                idx::read_images(&test_images_path),
                idx::read_labels(&test_labels_path),
            )
        },
    );
    let (train_images, train_labels) = (train_images?, train_labels?);
    check_counts(
        &train_images,
        &train_images_path,
        &train_labels,
        &train_labels_path,
    )?;
    let (test_images, test_labels) = (test_images?, test_labels?);
    check_counts(
        &test_images,
        &test_images_path,
        &test_labels,
        &test_labels_path,
    )?;

    if test_images.sample_shape != train_images.sample_shape {
        return Err(Error::Dataset {
            name: test_images_path.display().to_string(),
            reason: format!(
                "test images have shape {:?} but the training images in `{}` have shape {:?}",
                test_images.sample_shape,
                train_images_path.display(),
                train_images.sample_shape
            ),
        });
    }
    Ok(IdxMnist {
        train_images,
        train_labels,
        test_images,
        test_labels,
    })
}

/// Loads MNIST or Fashion-MNIST from the IDX files in `dir` (see
/// [`read_idx_dir`]) as train, validation and test sets.
///
/// Features are `pixel / 256` (see [`pixel_to_f32`]) with sample shape
/// `[28, 28]` for MNIST. The validation set is the last `validation_size`
/// rows of the training file, by default one sixth of it (10000 of 60000).
/// The training set is the rows before them. The class count is the
/// maximum label of both files plus one.
///
/// # Errors
/// As [`read_idx_dir`], and [`Error::InvalidConfig`] if `validation_size`
/// is not smaller than the number of training rows.
pub fn load_idx_dir(dir: &Path, validation_size: Option<usize>) -> Result<Splits> {
    let raw = read_idx_dir(dir)?;
    let rows = raw.train_images.count;
    if rows == 0 {
        return Err(Error::Dataset {
            name: dir.display().to_string(),
            reason: format!("the training file {TRAIN_IMAGES} has no rows"),
        });
    }
    let validation_rows = validation_size.unwrap_or(rows / 6);
    if validation_rows >= rows {
        return Err(Error::InvalidConfig {
            name: "validation-size",
            value: validation_rows.to_string(),
            expected: format!(
                "expected fewer than the {rows} rows of the training file in `{}`, so that some rows remain for training",
                dir.display()
            ),
        });
    }
    let max_label = raw
        .train_labels
        .iter()
        .chain(&raw.test_labels)
        .copied()
        .max()
        .unwrap_or(0);
    let classes = usize::from(max_label) + 1;

    let shape = raw.train_images.sample_shape.clone();
    let columns: usize = shape.iter().product();
    let train_rows = rows - validation_rows;
    let (train_pixels, validation_pixels) = raw.train_images.bytes.split_at(train_rows * columns);
    let (train_labels, validation_labels) = raw.train_labels.split_at(train_rows);
    let name = |split: &str| format!("{} ({split})", dir.display());

    let train = idx_dataset(&name("train"), train_pixels, train_labels, &shape, classes)?;
    let validation = idx_dataset(
        &name("validation"),
        validation_pixels,
        validation_labels,
        &shape,
        classes,
    )?;
    let test = idx_dataset(
        &name("test"),
        &raw.test_images.bytes,
        &raw.test_labels,
        &shape,
        classes,
    )?;
    Splits::new(train, validation, test)
}

/// Loads a pickle in the layout of the classic `mnist.pkl.gz`:
/// `((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`, gzip or raw.
///
/// Each `x` is a numpy array whose first dimension counts the samples; the
/// remaining dimensions give the sample shape (`[784]` for `mnist.pkl.gz`).
/// Float arrays are converted to f32 (float64 is rounded). Integer arrays,
/// uint8 included, are converted as their values, so uint8 pixels become
/// 0.0 to 255.0 and are not scaled. Each `y` is a 1-dimensional integer
/// array. The class count is the maximum label of all three splits plus one.
///
/// NOTE: there is no upper limit on the labels besides `u32::MAX - 1`, so a
/// single stray label such as 1000000 raises the class count to 1000001.
///
/// # Errors
/// [`Error::Io`] or [`Error::Pickle`] if the file cannot be read (see
/// [`pickle::read_numpy_pickle`]). [`Error::Dataset`] if the top level has
/// another structure, an array has the wrong dimensions or dtype, `x` and
/// `y` differ in length, or a label is negative (the message gives its index).
pub fn load_pickle(path: &Path) -> Result<Splits> {
    let value = pickle::read_numpy_pickle(path)?;
    splits_from_pickle(value, path)
}

/// Builds the splits from a pickle value already read, as [`load_pickle`] does.
///
/// `path` only names the data in error messages.
///
/// # Errors
/// As [`load_pickle`], except for reading errors.
pub fn splits_from_pickle(value: PickleValue, path: &Path) -> Result<Splits> {
    let fail = |reason: String| Error::Dataset {
        name: path.display().to_string(),
        reason,
    };
    let layout =
        "expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) as in mnist.pkl.gz";
    let splits = sequence_items(value)
        .filter(|items| items.len() == 3)
        .ok_or_else(|| {
            fail(format!(
                "the pickle's top level has another structure; {layout}"
            ))
        })?;

    let mut pairs = Vec::with_capacity(3);
    for (split, item) in ["train", "validation", "test"].into_iter().zip(splits) {
        let (x, y) = match sequence_items(item).map(<[PickleValue; 2]>::try_from) {
            Some(Ok([PickleValue::Array(x), PickleValue::Array(y)])) => (x, y),
            _ => {
                return Err(fail(format!(
                    "the {split} split is not a pair of numpy arrays (x, y); {layout}"
                )))
            }
        };
        let labels = pickle_labels(&y, split).map_err(fail)?;
        pairs.push((split, x, labels));
    }

    let max_label = pairs
        .iter()
        .flat_map(|(_, _, labels)| labels.iter())
        .copied()
        .max()
        .unwrap_or(0);
    let classes = max_label as usize + 1;
    let mut datasets = Vec::with_capacity(3);
    for (split, x, labels) in pairs {
        datasets.push(pickle_dataset(x, labels, split, classes, path)?);
    }
    let [train, validation, test]: [Dataset; 3] = datasets
        .try_into()
        .map_err(|_| fail("internal error: expected three splits".to_string()))?;
    Splits::new(train, validation, test)
}

/// Returns `path` of `dir/name`, or of `dir/name.gz` if only that exists.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    let compressed = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        return Ok(plain);
    }
    if compressed.is_file() {
        return Ok(compressed);
    }
    Err(Error::Dataset {
        name: dir.display().to_string(),
        reason: format!(
            "neither `{name}` nor `{name}.gz` is a file in this directory; an MNIST-style \
             directory holds {TRAIN_IMAGES}, {TRAIN_LABELS}, {TEST_IMAGES} and {TEST_LABELS}, \
             each with or without .gz"
        ),
    })
}

fn check_counts(
    images: &IdxImages,
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
) -> Result<()> {
    if images.count == labels.len() {
        return Ok(());
    }
    Err(Error::Dataset {
        name: images_path.display().to_string(),
        reason: format!(
            "it holds {} images but `{}` holds {} labels; use files from the same release",
            images.count,
            labels_path.display(),
            labels.len()
        ),
    })
}

fn idx_dataset(
    name: &str,
    pixels: &[u8],
    labels: &[u8],
    shape: &[usize],
    classes: usize,
) -> Result<Dataset> {
    let features = pixels.par_iter().map(|&byte| pixel_to_f32(byte)).collect();
    let labels = labels.iter().map(|&label| u32::from(label)).collect();
    Dataset::new(name, features, labels, shape.to_vec(), classes)
}

/// Returns the items of a tuple or list.
fn sequence_items(value: PickleValue) -> Option<Vec<PickleValue>> {
    match value {
        PickleValue::Tuple(items) | PickleValue::List(items) => Some(items),
        _ => None,
    }
}

/// Converts a pickled label array to u32, rejecting non-integers and labels
/// outside `0..u32::MAX`.
fn pickle_labels(y: &NumpyArray, split: &str) -> std::result::Result<Vec<u32>, String> {
    if y.shape.len() != 1 {
        return Err(format!(
            "the {split} labels have shape {:?}; expected one dimension",
            y.shape
        ));
    }
    let Some(values) = y.to_i128_vec() else {
        return Err(format!(
            "the {split} labels have dtype {}; expected an integer dtype",
            y.dtype
        ));
    };
    values
        .iter()
        .enumerate()
        .map(|(index, &label)| {
            u32::try_from(label)
                .ok()
                .filter(|&label| label < u32::MAX)
                .ok_or_else(|| {
                    format!(
                        "label {label} at index {index} of the {split} labels is outside 0..{}; \
                         labels must be non-negative class indices",
                        u32::MAX
                    )
                })
        })
        .collect()
}

fn pickle_dataset(
    x: NumpyArray,
    labels: Vec<u32>,
    split: &str,
    classes: usize,
    path: &Path,
) -> Result<Dataset> {
    let name = format!("{} ({split})", path.display());
    if x.shape.len() < 2 {
        return Err(Error::Dataset {
            name,
            reason: format!(
                "the features have shape {:?}; expected (samples, features...) with at least 2 dimensions",
                x.shape
            ),
        });
    }
    if x.shape[0] != labels.len() {
        return Err(Error::Dataset {
            name,
            reason: format!(
                "there are {} feature rows but {} labels",
                x.shape[0],
                labels.len()
            ),
        });
    }
    let sample_shape = x.shape[1..].to_vec();
    let features = x.to_f32_vec();
    drop(x);
    Dataset::new(&name, features, labels, sample_shape, classes)
}
