//! Trained models and their files.

mod checkpoint;
mod file;
mod logistic;
mod mlp;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint};
pub use file::{
    load_model, load_model_with_data, save_model, save_model_trained_on, DataSummary,
    MODEL_FORMAT_VERSION,
};
pub use logistic::LogisticRegression;
pub use mlp::{Activation, Dense, Mlp, Model, MAX_PARAMETERS};
