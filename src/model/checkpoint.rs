//! Checkpoints: everything a stopped run needs to continue.
//!
//! A checkpoint is a model file (see [`super::save_model`]) holding the
//! current parameters, so `evaluate` and `predict` read it as a model. It
//! adds the best model so far under the tensor prefix `best.`, the
//! optimiser state as 1-D tensors `optimizer.{i}` (in the order of
//! [`OptimizerState::tensors`], empty ones left out), and a `checkpoint`
//! metadata entry with the settings and counters as JSON.

use super::file::{
    decode_with_prefix, encode_with, write_atomically, DataSummary, NamedTensor, TRAINING_DATA_KEY,
};
use super::Model;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::optim::{Optimizer, OptimizerState, Penalty};
use crate::trainer::Progress;
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A run's state at the point where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Current parameters, which training continues from.
    pub model: Model,
    /// Parameters with the lowest validation error so far.
    pub best: Model,
    /// Update rule.
    pub optimizer: Optimizer,
    /// L1 and L2 penalties.
    pub penalty: Penalty,
    /// Optimiser state matching `model`.
    pub state: OptimizerState,
    /// Trainer counters.
    pub progress: Progress,
    /// Training settings of the run.
    pub config: TrainConfig,
    /// Training data of the run, if recorded.
    pub data: Option<DataSummary>,
}

/// The JSON stored in the `checkpoint` metadata entry.
#[derive(Serialize, Deserialize)]
struct Header {
    optimizer: Optimizer,
    penalty: Penalty,
    steps: u64,
    progress: Progress,
    config: TrainConfig,
}

const BEST_PREFIX: &str = "best.";

/// Writes `checkpoint` to `path` through a temporary file and a rename.
///
/// # Errors
/// [`Error::Io`] naming the path if it cannot be written.
pub fn save_checkpoint(checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    let header = Header {
        optimizer: checkpoint.optimizer,
        penalty: checkpoint.penalty,
        steps: checkpoint.state.steps,
        progress: checkpoint.progress.clone(),
        config: checkpoint.config.clone(),
    };
    let mut extra = super::file::model_tensors(&checkpoint.best, BEST_PREFIX);
    for (index, tensor) in checkpoint.state.tensors.iter().enumerate() {
        if !tensor.is_empty() {
            extra.push(NamedTensor::new(
                format!("optimizer.{index}"),
                vec![tensor.len()],
                tensor,
            ));
        }
    }
    let mut metadata = HashMap::from([(
        "checkpoint".to_string(),
        serde_json::to_string(&header).expect("the header serialises"),
    )]);
    if let Some(data) = &checkpoint.data {
        metadata.insert(TRAINING_DATA_KEY.to_string(), data.to_json());
    }
    let bytes = encode_with(&checkpoint.model, "", extra, metadata)?;
    write_atomically(path, |file| file.write_all(&bytes))
}

/// Reads a checkpoint written by [`save_checkpoint`].
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::ModelFile`] if it is
/// not a checkpoint (a plain model file names `--checkpoint` as the fix) or
/// its parts disagree.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::io("reading checkpoint", path, source))?;
    decode(&bytes).map_err(|reason| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    })
}

fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    if bytes.is_empty() {
        return Err(
            "the file is empty; write checkpoints with `train --checkpoint FILE`".to_string(),
        );
    }
    let (model, metadata) = decode_with_prefix(bytes, "")?;
    let header = metadata.get("checkpoint").ok_or_else(|| {
        "this is a model file without training state; write checkpoints with `train --checkpoint FILE`".to_string()
    })?;
    let header: Header = serde_json::from_str(header)
        .map_err(|error| format!("metadata `checkpoint` is not valid: {error}"))?;
    let (best, _) = decode_with_prefix(bytes, BEST_PREFIX)?;
    if best.summary() != model.summary() {
        return Err(format!(
            "the best model is {} but the current one is {}",
            best.summary(),
            model.summary()
        ));
    }
    let tensors = SafeTensors::deserialize(bytes).map_err(|error| error.to_string())?;
    let slots = header.optimizer.slots();
    let mut state = OptimizerState {
        steps: header.steps,
        tensors: Vec::new(),
    };
    let layers = model.to_layers();
    let lengths = layers
        .iter()
        .flat_map(|layer| [layer.weights.len(), layer.bias.len()]);
    for (index, length) in lengths.enumerate() {
        let expected = length * slots;
        if expected == 0 {
            state.tensors.push(Vec::new());
            continue;
        }
        let name = format!("optimizer.{index}");
        let tensor = tensors.tensor(&name).map_err(|_| {
            format!(
                "tensor `{name}` of the {} state is missing",
                header.optimizer.name()
            )
        })?;
        if tensor.dtype() != Dtype::F32 || tensor.shape() != [expected] {
            return Err(format!(
                "tensor `{name}` is {:?} {:?}, expected F32 [{expected}] for {}",
                tensor.dtype(),
                tensor.shape(),
                header.optimizer.name()
            ));
        }
        state
            .tensors
            .push(bytemuck::pod_collect_to_vec(tensor.data()));
    }
    Ok(Checkpoint {
        model,
        best,
        optimizer: header.optimizer,
        penalty: header.penalty,
        state,
        progress: header.progress,
        config: header.config,
        data: DataSummary::from_metadata(&metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Mlp};

    fn checkpoint() -> Checkpoint {
        let model = Model::from(Mlp::new(vec![4], &[3], 2, Activation::Tanh, 1));
        let best = Model::from(Mlp::new(vec![4], &[3], 2, Activation::Tanh, 2));
        let optimizer = Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        };
        let mut state = OptimizerState::zeros(&optimizer, &[(4, 3), (3, 2)]);
        state.steps = 17;
        state.tensors[0][5] = 0.25;
        state.tensors[3][1] = -1.5;
        Checkpoint {
            model,
            best,
            optimizer,
            penalty: Penalty { l1: 0.0, l2: 1e-4 },
            state,
            progress: Progress {
                epoch: 3,
                minibatch: 5,
                iterations: 25,
                patience: 5000,
                best_validation_error: Some(0.125),
                best_iteration: 19,
                test_error: Some(0.25),
            },
            config: TrainConfig::default().with_shuffle(7).with_epochs(9),
            data: Some(DataSummary {
                rows: 100,
                features: 4,
                classes: 2,
                labels_hash: "00ff".to_string(),
            }),
        }
    }

    #[test]
    fn checkpoint_round_trips() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("run.safetensors");
        let original = checkpoint();
        save_checkpoint(&original, &path).unwrap();
        assert_eq!(load_checkpoint(&path).unwrap(), original);
        // A checkpoint is also a model file holding the current parameters.
        assert_eq!(super::super::load_model(&path).unwrap(), original.model);
    }

    #[test]
    fn plain_model_file_is_not_a_checkpoint() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.safetensors");
        super::super::save_model(&checkpoint().model, &path).unwrap();
        let error = load_checkpoint(&path).unwrap_err().to_string();
        assert!(error.contains("without training state"), "{error}");
        assert!(error.contains("--checkpoint"), "{error}");
    }
}
