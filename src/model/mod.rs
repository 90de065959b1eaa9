//! Trained models and their files.

mod file;
mod logistic;

pub use file::{load_model, save_model, MODEL_FORMAT_VERSION};
pub use logistic::LogisticRegression;
