//! Trained models and their files.

mod checkpoint;
mod file;
mod logistic;
mod mlp;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint};
pub use file::{load_model, save_model, MODEL_FORMAT_VERSION};
pub use logistic::LogisticRegression;
pub use mlp::{Activation, Dense, Mlp, Model, MAX_PARAMETERS};
