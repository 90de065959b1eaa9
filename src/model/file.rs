//! Model files in the safetensors format.
//!
//! Every file has the string metadata `format` (`wgpu-learn`),
//! `format_version`, `model`, `classes` and `input_shape` (JSON, such as
//! `[28,28]`). A `logistic_regression` file contains two f32 tensors,
//! `weight` (`d x k`) and `bias` (`k`). An `mlp` file adds the metadata
//! `hidden` (JSON widths, such as `[500]`) and `activation`, and contains
//! `layers.{i}.weight` (`inputs x outputs`) and `layers.{i}.bias` for each
//! layer `i` from the input side.

use super::{Activation, Dense, LogisticRegression, Mlp, Model};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Version written to the `format_version` metadata entry.
pub const MODEL_FORMAT_VERSION: u32 = 1;

const FORMAT_NAME: &str = "wgpu-learn";

/// Writes `model` to `path` as safetensors.
///
/// The bytes go to a temporary file in the same directory, which is flushed to
/// disk and then renamed over `path`, so a failure part way leaves any
/// previous file at `path` as it was.
///
/// # Errors
/// [`Error::Io`] naming the path if the directory does not exist or cannot be
/// written.
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    let bytes = encode(model, "", HashMap::new())?;
    write_atomically(path, |file| file.write_all(&bytes))
}

/// Writes `model` to `path` as [`save_model`] does, recording in the
/// metadata entry `training_data` which data it was trained on.
///
/// # Errors
/// As [`save_model`].
pub fn save_model_trained_on(model: &Model, data: &DataSummary, path: &Path) -> Result<()> {
    let metadata = HashMap::from([(TRAINING_DATA_KEY.to_string(), data.to_json())]);
    let bytes = encode(model, "", metadata)?;
    write_atomically(path, |file| file.write_all(&bytes))
}

/// Writes a file through a temporary file and a rename; `write` fills the
/// temporary file.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".wgpu-learn-")
        .suffix(".tmp")
        .tempfile_in(directory)
        .map_err(|source| Error::io("creating a temporary file in", directory, source))?;
    write(temporary.as_file_mut()).map_err(|source| Error::io("writing", path, source))?;
    // The temporary file is created private (0600); give the result the
    // permissions of the file it replaces, or the usual 0644.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::metadata(path)
            .map(|metadata| metadata.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
        temporary
            .as_file()
            .set_permissions(permissions)
            .map_err(|source| Error::io("setting permissions of", path, source))?;
    }
    temporary
        .as_file()
        .sync_all()
        .map_err(|source| Error::io("writing", path, source))?;
    temporary
        .persist(path)
        .map_err(|error| Error::io("renaming the temporary file to", path, error.error))?;
    Ok(())
}

/// Metadata entry that records the training data of a model.
pub(crate) const TRAINING_DATA_KEY: &str = "training_data";

/// Identity of a training set: its size and a hash of its labels. Model
/// files and checkpoints record it, so using a model on other data can be
/// flagged. Two different datasets of the same size almost never share the
/// label hash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataSummary {
    /// Training rows.
    pub rows: usize,
    /// Features per row.
    pub features: usize,
    /// Classes.
    pub classes: usize,
    /// 64-bit FNV-1a hash of the labels (each as 4 little-endian bytes), in hex.
    pub labels_hash: String,
}

impl DataSummary {
    /// Summarises `data`.
    pub fn of(data: &crate::data::Dataset) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for label in data.labels() {
            for byte in label.to_le_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        DataSummary {
            rows: data.len(),
            features: data.n_features(),
            classes: data.n_classes(),
            labels_hash: format!("{hash:016x}"),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary serialises")
    }

    pub(crate) fn from_metadata(metadata: &HashMap<String, String>) -> Option<Self> {
        metadata
            .get(TRAINING_DATA_KEY)
            .and_then(|text| serde_json::from_str(text).ok())
    }
}

impl std::fmt::Display for DataSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows of {} features, {} classes, labels hash {}",
            self.rows, self.features, self.classes, self.labels_hash
        )
    }
}

/// A named f32 tensor ready to serialise.
pub(crate) struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl NamedTensor {
    pub(crate) fn new(name: String, shape: Vec<usize>, values: &[f32]) -> Self {
        NamedTensor {
            name,
            shape,
            bytes: bytemuck::cast_slice(values).to_vec(),
        }
    }
}

/// Returns the model's tensors, each name prefixed with `prefix`.
pub(crate) fn model_tensors(model: &Model, prefix: &str) -> Vec<NamedTensor> {
    let slice = |array: &ndarray::Array2<f32>| {
        array
            .as_slice()
            .expect("weights are standard layout")
            .to_vec()
    };
    match model {
        Model::Logistic(model) => vec![
            NamedTensor::new(
                format!("{prefix}weight"),
                vec![model.n_features(), model.n_classes()],
                &slice(&model.weights),
            ),
            NamedTensor::new(
                format!("{prefix}bias"),
                vec![model.n_classes()],
                &model.bias.to_vec(),
            ),
        ],
        Model::Mlp(model) => model
            .layers
            .iter()
            .enumerate()
            .flat_map(|(index, layer)| {
                [
                    NamedTensor::new(
                        format!("{prefix}layers.{index}.weight"),
                        vec![layer.inputs(), layer.outputs()],
                        &slice(&layer.weights),
                    ),
                    NamedTensor::new(
                        format!("{prefix}layers.{index}.bias"),
                        vec![layer.outputs()],
                        &layer.bias.to_vec(),
                    ),
                ]
            })
            .collect(),
    }
}

/// Returns the metadata entries that describe the model's architecture.
fn model_metadata(model: &Model) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        (
            "format_version".to_string(),
            MODEL_FORMAT_VERSION.to_string(),
        ),
        ("model".to_string(), model.kind().to_string()),
        ("classes".to_string(), model.n_classes().to_string()),
        (
            "input_shape".to_string(),
            serde_json::to_string(model.sample_shape()).expect("a list of integers serialises"),
        ),
    ]);
    if let Model::Mlp(mlp) = model {
        metadata.insert(
            "hidden".to_string(),
            serde_json::to_string(&mlp.hidden()).expect("a list of integers serialises"),
        );
        metadata.insert("activation".to_string(), mlp.activation.name().to_string());
    }
    metadata
}

/// Serialises `model` (its tensor names prefixed with `prefix`), `extra`
/// tensors and metadata entries.
pub(crate) fn encode_with(
    model: &Model,
    prefix: &str,
    extra_tensors: Vec<NamedTensor>,
    extra_metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut tensors = model_tensors(model, prefix);
    tensors.extend(extra_tensors);
    let to_error = |error: safetensors::SafeTensorError| Error::Shape {
        reason: format!("cannot encode the model: {error}"),
    };
    let views = tensors
        .iter()
        .map(|tensor| {
            TensorView::new(Dtype::F32, tensor.shape.clone(), &tensor.bytes)
                .map(|view| (tensor.name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(to_error)?;
    let mut metadata = model_metadata(model);
    metadata.extend(extra_metadata);
    safetensors::serialize(views, Some(metadata)).map_err(to_error)
}

fn encode(model: &Model, prefix: &str, extra_metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    encode_with(model, prefix, Vec::new(), extra_metadata)
}

/// Reads a model written by [`save_model`].
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::ModelFile`] if it is not
/// a safetensors file, was written by something else, or its tensors disagree
/// with its metadata.
pub fn load_model(path: &Path) -> Result<Model> {
    load_model_with_data(path).map(|(model, _)| model)
}

/// Reads a model as [`load_model`] does, with the training data recorded by
/// [`save_model_trained_on`], if any.
///
/// # Errors
/// As [`load_model`].
pub fn load_model_with_data(path: &Path) -> Result<(Model, Option<DataSummary>)> {
    if !path.is_file() {
        return Err(Error::ModelFile {
            path: path.to_path_buf(),
            reason: if path.exists() {
                "it is not a file".to_string()
            } else {
                "the file does not exist; train a model first with `wgpu-learn train`, or pass --model FILE".to_string()
            },
        });
    }
    let bytes =
        std::fs::read(path).map_err(|source| Error::io("reading model file", path, source))?;
    decode(&bytes)
        .map(|(model, metadata)| (model, DataSummary::from_metadata(&metadata)))
        .map_err(|reason| Error::ModelFile {
            path: path.to_path_buf(),
            reason,
        })
}

/// Reads the model under `prefix` from a safetensors file, and returns it
/// with the file's metadata.
pub(crate) fn decode_with_prefix(
    bytes: &[u8],
    prefix: &str,
) -> std::result::Result<(Model, HashMap<String, String>), String> {
    if bytes.is_empty() {
        return Err("the file is empty; train a model first with `wgpu-learn train`".to_string());
    }
    if bytes.starts_with(b"version https://git-lfs") {
        return Err(
            "this is a Git LFS pointer, not the model; run `git lfs pull` to fetch it".to_string(),
        );
    }
    let tensors = SafeTensors::deserialize(bytes).map_err(|error| {
        format!(
            "not a readable safetensors file ({error}); it may be truncated or of another format"
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|error| error.to_string())?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let entry = |key: &str| {
        metadata.get(key).ok_or_else(|| {
            format!("metadata entry `{key}` is missing; the file was not written by wgpu-learn")
        })
    };
    if entry("format")? != FORMAT_NAME {
        return Err(format!(
            "metadata `format` is `{}`, expected `{FORMAT_NAME}`",
            entry("format")?
        ));
    }
    let version = entry("format_version")?;
    if version.parse::<u32>().ok() != Some(MODEL_FORMAT_VERSION) {
        return Err(format!(
            "format version {version} is not supported; this build reads version {MODEL_FORMAT_VERSION}"
        ));
    }
    let classes: usize = entry("classes")?.parse().map_err(|_| {
        format!(
            "metadata `classes` is `{}`, not an integer",
            entry("classes").unwrap_or(&String::new())
        )
    })?;
    let sample_shape: Vec<usize> = serde_json::from_str(entry("input_shape")?).map_err(|_| {
        format!(
            "metadata `input_shape` is `{}`, not a list of integers",
            entry("input_shape").unwrap_or(&String::new())
        )
    })?;
    let features: usize = sample_shape.iter().product();
    if features == 0 || classes < 2 {
        return Err(format!("metadata gives input shape {sample_shape:?} and {classes} classes; both must be non-empty"));
    }

    let read_layer =
        |name: &str, inputs: usize, outputs: usize| -> std::result::Result<Dense, String> {
            let weights = read_f32(
                &tensors,
                &format!("{prefix}{name}weight"),
                &[inputs, outputs],
            )?;
            let bias = read_f32(&tensors, &format!("{prefix}{name}bias"), &[outputs])?;
            Ok(Dense {
                weights: ndarray::Array2::from_shape_vec((inputs, outputs), weights)
                    .expect("shape was checked"),
                bias: ndarray::Array1::from_vec(bias),
            })
        };
    let model = match entry("model")?.as_str() {
        "logistic_regression" => {
            let layer = read_layer("", features, classes)?;
            Model::Logistic(LogisticRegression {
                weights: layer.weights,
                bias: layer.bias,
                sample_shape,
            })
        }
        "mlp" => {
            let hidden: Vec<usize> = serde_json::from_str(entry("hidden")?).map_err(|_| {
                format!(
                    "metadata `hidden` is `{}`, not a list of integers",
                    entry("hidden").unwrap_or(&String::new())
                )
            })?;
            if hidden.contains(&0) {
                return Err(format!(
                    "metadata `hidden` is {hidden:?}; every layer needs at least one unit"
                ));
            }
            let activation: Activation = entry("activation")?.parse()?;
            let mut widths = vec![features];
            widths.extend(&hidden);
            widths.push(classes);
            let layers = widths
                .windows(2)
                .enumerate()
                .map(|(index, pair)| read_layer(&format!("layers.{index}."), pair[0], pair[1]))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Model::Mlp(Mlp {
                layers,
                activation,
                sample_shape,
            })
        }
        other => {
            return Err(format!(
                "model kind `{other}` is not supported, expected `logistic_regression` or `mlp`"
            ))
        }
    };
    Ok((model, metadata))
}

fn decode(bytes: &[u8]) -> std::result::Result<(Model, HashMap<String, String>), String> {
    decode_with_prefix(bytes, "")
}

fn read_f32(
    tensors: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> std::result::Result<Vec<f32>, String> {
    let tensor = tensors
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if tensor.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor `{name}` has dtype {:?}, expected F32",
            tensor.dtype()
        ));
    }
    if tensor.shape() != shape {
        return Err(format!(
            "tensor `{name}` has shape {:?} but the metadata implies {shape:?}",
            tensor.shape()
        ));
    }
    let values: Vec<f32> = tensor
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "tensor `{name}` holds a non-finite value at index {index}"
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_round_trips_through_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.safetensors");
        let mut model = LogisticRegression::zeros(vec![2, 3], 4);
        model.weights[[5, 3]] = 1.5;
        model.bias[1] = -0.25;
        let model = Model::from(model);
        save_model(&model, &path).unwrap();
        assert_eq!(load_model(&path).unwrap(), model);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o644,
                "a new model file is readable by others, like files cp creates"
            );
        }
    }

    #[test]
    fn failed_write_keeps_previous_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.safetensors");
        std::fs::write(&path, b"previous").unwrap();
        let error = write_atomically(&path, |file| {
            file.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{error:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
        let leftovers = std::fs::read_dir(directory.path()).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file must be removed");
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.safetensors");
        let model = Model::from(LogisticRegression::zeros(vec![4], 3));
        let bytes = encode(&model, "", HashMap::new()).unwrap();

        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let error = load_model(&path).unwrap_err().to_string();
        assert!(error.contains("not a readable safetensors file"), "{error}");

        std::fs::write(&path, b"PK\x03\x04 a zip archive, not a model").unwrap();
        let error = load_model(&path).unwrap_err().to_string();
        assert!(error.contains("not a readable safetensors file"), "{error}");

        // Positive control: the complete bytes load.
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load_model(&path).unwrap(), model);
    }

    #[test]
    fn rejects_metadata_that_disagrees_with_tensors() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.safetensors");
        let weight = [0u8; 4 * 4 * 3];
        let bias = [0u8; 4 * 3];
        let write = |classes: &str, shape: &str, format: &str| {
            let tensors = [
                (
                    "weight",
                    TensorView::new(Dtype::F32, vec![4, 3], &weight).unwrap(),
                ),
                ("bias", TensorView::new(Dtype::F32, vec![3], &bias).unwrap()),
            ];
            let metadata = HashMap::from([
                ("format".to_string(), format.to_string()),
                ("format_version".to_string(), "1".to_string()),
                ("model".to_string(), "logistic_regression".to_string()),
                ("classes".to_string(), classes.to_string()),
                ("input_shape".to_string(), shape.to_string()),
            ]);
            std::fs::write(
                &path,
                safetensors::serialize(tensors, Some(metadata)).unwrap(),
            )
            .unwrap();
        };
        write("4", "[4]", "wgpu-learn");
        let error = load_model(&path).unwrap_err().to_string();
        assert!(
            error.contains("tensor `weight` has shape [4, 3] but the metadata implies [4, 4]"),
            "{error}"
        );
        write("3", "[2,2,2]", "wgpu-learn");
        let error = load_model(&path).unwrap_err().to_string();
        assert!(error.contains("metadata implies [8, 3]"), "{error}");
        write("3", "[4]", "something-else");
        let error = load_model(&path).unwrap_err().to_string();
        assert!(
            error.contains("metadata `format` is `something-else`"),
            "{error}"
        );
        // Positive control: consistent metadata loads.
        write("3", "[2,2]", "wgpu-learn");
        assert_eq!(load_model(&path).unwrap().sample_shape(), [2, 2]);
    }

    #[test]
    fn mlp_round_trips_with_architecture() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("mlp.safetensors");
        let model = Model::from(Mlp::new(vec![3, 2], &[5, 4], 3, Activation::Relu, 9));
        save_model(&model, &path).unwrap();
        let loaded = load_model(&path).unwrap();
        assert_eq!(loaded, model);
        assert_eq!(loaded.summary(), "mlp 6-5-4-3 relu");
    }

    #[test]
    fn rejects_mlp_with_bad_architecture() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("mlp.safetensors");
        let model = Model::from(Mlp::new(vec![3], &[5], 2, Activation::Tanh, 1));
        let write = |key: &str, value: &str| {
            let bytes = encode(
                &model,
                "",
                HashMap::from([(key.to_string(), value.to_string())]),
            )
            .unwrap();
            std::fs::write(&path, bytes).unwrap();
        };
        write("hidden", "[6]");
        let error = load_model(&path).unwrap_err().to_string();
        assert!(
            error.contains(
                "tensor `layers.0.weight` has shape [3, 5] but the metadata implies [3, 6]"
            ),
            "{error}"
        );
        write("activation", "softplus");
        let error = load_model(&path).unwrap_err().to_string();
        assert!(error.contains("unknown activation `softplus`"), "{error}");
        write("hidden", "[0]");
        let error = load_model(&path).unwrap_err().to_string();
        assert!(error.contains("needs at least one unit"), "{error}");
        // Positive control: the model's own metadata loads.
        write("activation", "tanh");
        assert_eq!(load_model(&path).unwrap(), model);
    }

    #[test]
    fn rejects_lfs_pointer_and_empty_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.safetensors");
        std::fs::write(
            &path,
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n",
        )
        .unwrap();
        assert!(load_model(&path)
            .unwrap_err()
            .to_string()
            .contains("Git LFS pointer"));
        std::fs::write(&path, b"").unwrap();
        assert!(load_model(&path).unwrap_err().to_string().contains("empty"));
    }
}
