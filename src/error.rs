//! The crate's error type.
//!
//! Every variant names the file, value or device involved and says what to do
//! next. I/O causes are kept as `source()` and not repeated in the message, so
//! printing the error chain (for example with `anyhow`'s `{:#}`) shows each
//! fact once.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by wgpu-learn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be opened, read or written.
    #[error("{action} `{path}` failed")]
    Io {
        /// What was attempted, for example "reading" or "creating".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An IDX file is malformed, truncated or of an unsupported type.
    #[error("invalid IDX file `{path}`: {reason}")]
    Idx {
        /// The file being read.
        path: PathBuf,
        /// What is wrong and, where possible, what to do.
        reason: String,
    },

    /// A pickle file is malformed or contains something other than numpy arrays.
    #[error("invalid pickle file `{path}`: {reason}")]
    Pickle {
        /// The file being read.
        path: PathBuf,
        /// What is wrong and, where possible, what to do.
        reason: String,
    },

    /// Data that was read correctly but does not form a valid dataset:
    /// mismatched lengths, labels out of range, non-finite features, empty splits.
    #[error("invalid dataset {name}: {reason}")]
    Dataset {
        /// The dataset or file the data came from.
        name: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A training or model setting is outside its valid range.
    #[error("invalid setting {name} = {value}: {expected}")]
    InvalidConfig {
        /// The setting's name as the CLI spells it, for example `batch-size`.
        name: &'static str,
        /// The rejected value.
        value: String,
        /// The valid range.
        expected: String,
    },

    /// A model file is missing pieces, corrupt, or of another shape.
    #[error("invalid model file `{path}`: {reason}")]
    ModelFile {
        /// The model file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// Data of one shape was given to a model of another.
    #[error("shape mismatch: {reason}")]
    Shape {
        /// The shapes involved.
        reason: String,
    },

    /// No GPU adapter matched the request.
    #[error("no usable GPU adapter: {reason}")]
    NoAdapter {
        /// Which adapters were found and how to install a driver.
        reason: String,
    },

    /// The GPU reported a validation, memory or device-loss error, or timed out.
    #[error("GPU error: {reason}")]
    Gpu {
        /// The error as wgpu reported it, with the operation that failed.
        reason: String,
    },

    /// The loss or the parameters stopped being finite during training.
    #[error(
        "training diverged at epoch {epoch}, minibatch {minibatch}: {what} is not finite; \
         lower the learning rate (it was {learning_rate:?})"
    )]
    Diverged {
        /// 1-based epoch of the failing step.
        epoch: usize,
        /// 1-based minibatch index within the epoch.
        minibatch: usize,
        /// "the loss" or "a parameter".
        what: &'static str,
        /// The learning rate in use.
        learning_rate: f32,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_message_prints_rate_compactly() {
        let diverged = |learning_rate| Error::Diverged {
            epoch: 1,
            minibatch: 2,
            what: "the loss",
            learning_rate,
        };
        assert!(
            diverged(1e30).to_string().contains("(it was 1e30)"),
            "{}",
            diverged(1e30)
        );
        assert!(
            diverged(0.13).to_string().contains("(it was 0.13)"),
            "{}",
            diverged(0.13)
        );
    }
}
