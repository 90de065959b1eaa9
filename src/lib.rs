//! wgpu-learn trains classifiers with minibatch stochastic gradient descent,
//! on any GPU through WebGPU (wgpu and WGSL compute shaders) or on the CPU
//! with rayon.
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod config;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod model;
pub mod optim;
pub mod select;
pub mod trainer;

pub use backend::{Backend, Batch, Evaluation, Setup};
pub use config::TrainConfig;
pub use data::{Dataset, Split, Splits};
pub use error::{Error, Result};
pub use model::{Activation, LogisticRegression, Mlp, Model};
pub use optim::{Optimizer, OptimizerState, Penalty, Schedule};
pub use trainer::{TrainEvent, TrainReport, Trained, Trainer};
