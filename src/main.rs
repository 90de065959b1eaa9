//! The `wgpu-learn` command: train, evaluate and predict from the shell.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wgpu_learn::data::mnist;
use wgpu_learn::model::MAX_PARAMETERS;
use wgpu_learn::model::{
    load_checkpoint, load_model_with_data, save_checkpoint, save_model_trained_on, Checkpoint,
    DataSummary,
};
use wgpu_learn::optim::ADAM_DEFAULTS;
use wgpu_learn::select::{open_backend_for, BackendChoice};
use wgpu_learn::{
    Activation, LogisticRegression, Mlp, Model, Optimizer, Penalty, Schedule, Setup, Split, Splits,
    TrainConfig, TrainEvent, Trainer,
};

/// Train classifiers with minibatch SGD on the GPU (wgpu) or the CPU (rayon).
///
/// Without a subcommand: train logistic regression on the MNIST copy shipped
/// in data/mnist with the classic defaults, save best_model.safetensors and
/// print the predictions for the first 20 test images.
#[derive(Parser, Debug)]
#[command(name = "wgpu-learn", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model with early stopping and save the best one.
    Train(TrainArgs),
    /// Print the error of a saved model on one split.
    Evaluate(EvaluateArgs),
    /// Print a saved model's predictions for the first rows of a split.
    Predict(PredictArgs),
    /// List the GPU adapters that wgpu finds, with their key limits.
    Devices,
    /// Time training on the CPU and every GPU adapter side by side.
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    data: DataArgs,

    /// Training runs per path; the table reports the minimum and median.
    #[arg(long, default_value_t = 3, value_name = "RUNS", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// Train exactly this many epochs instead of stopping early.
    #[arg(long, value_name = "EPOCHS")]
    epochs: Option<usize>,

    /// Drop incomplete minibatches, as the original tutorial did.
    #[arg(long)]
    drop_last: bool,

    /// Paths to measure, comma-separated: cpu, gpu. Default: cpu, and gpu
    /// when an adapter is found.
    #[arg(long, value_delimiter = ',', value_name = "PATHS")]
    paths: Vec<BackendChoice>,

    /// Use the first GPU adapter whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,

    /// Also write the table as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Print time per epoch against training-set size (10k, 25k, 50k and
    /// 500k rows, the last made by repeating the training rows) and against
    /// batch size (20, 100, 600, 6000), training 2 epochs each.
    #[arg(long)]
    scaling: bool,
}

#[derive(Args, Debug, Clone)]
struct DataArgs {
    /// Directory with the four IDX files (train-images-idx3-ubyte,
    /// train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
    /// each optionally gzipped). Default: the MNIST copy in data/mnist.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Read the splits from a pickle in the layout of the classic
    /// mnist.pkl.gz instead of an IDX directory.
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pickle: Option<PathBuf>,

    /// Rows at the end of the IDX training file kept for validation.
    /// Default: one sixth of the file (10000 of MNIST's 60000).
    #[arg(long, value_name = "ROWS", conflicts_with = "pickle")]
    validation_size: Option<usize>,
}

#[derive(Args, Debug, Clone)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,

    /// SGD learning rate.
    #[arg(
        long,
        default_value_t = 0.13,
        value_name = "RATE",
        allow_negative_numbers = true
    )]
    learning_rate: f32,

    /// Rows per minibatch.
    #[arg(
        long,
        default_value_t = 600,
        value_name = "ROWS",
        allow_negative_numbers = true
    )]
    batch_size: usize,

    /// Maximum number of epochs.
    #[arg(
        long,
        default_value_t = 1000,
        value_name = "EPOCHS",
        allow_negative_numbers = true
    )]
    max_epochs: usize,

    /// Minimum number of minibatch iterations before stopping.
    #[arg(
        long,
        default_value_t = 5000,
        value_name = "ITERATIONS",
        allow_negative_numbers = true
    )]
    patience: usize,

    /// Relative improvement of the validation error that extends patience:
    /// a new error below best * THRESHOLD counts.
    #[arg(
        long,
        default_value_t = 0.995,
        value_name = "THRESHOLD",
        allow_negative_numbers = true
    )]
    improvement_threshold: f64,

    /// Drop incomplete minibatches in training and evaluation, as the
    /// original tutorial did.
    #[arg(long)]
    drop_last: bool,

    /// Model to train: logistic (multiclass logistic regression) or mlp
    /// (hidden layers set by --hidden and --activation, then softmax).
    #[arg(
        long = "model",
        default_value = "logistic",
        value_name = "logistic|mlp"
    )]
    model_kind: ModelKind,

    /// Widths of the MLP's hidden layers, comma-separated, from the input side.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500",
        value_name = "UNITS",
        value_parser = parse_width
    )]
    hidden: Vec<usize>,

    /// Activation of the MLP's hidden layers.
    #[arg(long, default_value = "tanh", value_name = "tanh|sigmoid|relu")]
    activation: Activation,

    /// Update rule: sgd, momentum (classical), nesterov, adam or adamw.
    #[arg(long, default_value = "sgd", value_name = "NAME")]
    optimizer: OptimizerKind,

    /// Momentum factor of momentum and nesterov.
    #[arg(
        long,
        default_value_t = 0.9,
        value_name = "MU",
        allow_negative_numbers = true
    )]
    momentum: f32,

    /// Adam's first-moment decay.
    #[arg(long, default_value_t = ADAM_DEFAULTS.0, value_name = "BETA1", allow_negative_numbers = true)]
    beta1: f32,

    /// Adam's second-moment decay.
    #[arg(long, default_value_t = ADAM_DEFAULTS.1, value_name = "BETA2", allow_negative_numbers = true)]
    beta2: f32,

    /// Adam's epsilon, added to the root of the second moment.
    #[arg(long, default_value_t = ADAM_DEFAULTS.2, value_name = "EPSILON", allow_negative_numbers = true)]
    epsilon: f32,

    /// AdamW's decoupled weight decay per unit of learning rate.
    #[arg(
        long,
        default_value_t = 0.01,
        value_name = "DECAY",
        allow_negative_numbers = true
    )]
    weight_decay: f32,

    /// L1 penalty coefficient on the weights, added to each minibatch's mean loss.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "COEFFICIENT",
        allow_negative_numbers = true
    )]
    l1: f32,

    /// L2 penalty coefficient on the weights (sum of squares), added to each
    /// minibatch's mean loss.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "COEFFICIENT",
        allow_negative_numbers = true
    )]
    l2: f32,

    /// Learning-rate schedule by epoch: constant, step (times --step-factor
    /// every --step-every epochs), cosine (to 0 over --epochs, or
    /// --max-epochs) or inverse (divided by 1 + --decay * epoch).
    #[arg(long, default_value = "constant", value_name = "NAME")]
    schedule: ScheduleKind,

    /// Epochs between decays of the step schedule.
    #[arg(long, default_value_t = 10, value_name = "EPOCHS")]
    step_every: usize,

    /// Factor of each decay of the step schedule.
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "FACTOR",
        allow_negative_numbers = true
    )]
    step_factor: f32,

    /// Decay per epoch of the inverse schedule.
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "DECAY",
        allow_negative_numbers = true
    )]
    decay: f32,

    /// Reshuffle the training rows every epoch (seeded by --seed).
    #[arg(long)]
    shuffle: bool,

    /// Seed of the MLP's initial weights and of --shuffle.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,

    /// Train exactly this many epochs instead of stopping by patience; the
    /// saved model is still the one with the lowest validation error.
    #[arg(long, value_name = "EPOCHS", value_parser = parse_epochs)]
    epochs: Option<u64>,

    /// Also save the training state (current parameters, optimiser state,
    /// counters, settings) to FILE when training stops, for --resume.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,

    /// Continue the run saved in a checkpoint. Its model, optimiser and
    /// training settings are used, and the options that set them are
    /// ignored, except --epochs and --max-epochs, which set the run's new
    /// total number of epochs. The checkpoint is updated in place unless
    /// --checkpoint names another file.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,

    /// Backend to train on: auto (a hardware GPU if found, else the CPU), gpu
    /// (any GPU adapter, including software ones such as lavapipe) or cpu.
    #[arg(long, default_value = "auto", value_name = "auto|gpu|cpu")]
    backend: BackendChoice,

    /// Use the first GPU adapter whose name contains NAME (case-insensitive).
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,

    /// Output file for the best model.
    #[arg(
        long,
        short,
        default_value = "best_model.safetensors",
        value_name = "FILE"
    )]
    output: PathBuf,

    /// Print only the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct EvaluateArgs {
    #[command(flatten)]
    data: DataArgs,

    /// The model file to evaluate.
    #[arg(long, default_value = "best_model.safetensors", value_name = "FILE")]
    model: PathBuf,

    /// Split to evaluate: train, validation or test.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    split: Split,

    /// Count only rows in complete minibatches of --batch-size, as
    /// `train --drop-last` does, to reproduce the error it reported.
    #[arg(long)]
    drop_last: bool,

    /// Minibatch size for --drop-last.
    #[arg(long, default_value_t = 600, value_name = "ROWS", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
}

#[derive(Args, Debug)]
struct PredictArgs {
    #[command(flatten)]
    data: DataArgs,

    /// The model file to predict with.
    #[arg(long, default_value = "best_model.safetensors", value_name = "FILE")]
    model: PathBuf,

    /// How many rows to predict, from the first.
    #[arg(long, default_value_t = 20, value_name = "ROWS", value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// Split to read rows from: train, validation or test.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    split: Split,
}

/// Model kinds that `train --model` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModelKind {
    Logistic,
    Mlp,
}

/// Optimisers that `train --optimizer` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OptimizerKind {
    Sgd,
    Momentum,
    Nesterov,
    Adam,
    Adamw,
}

/// Schedules that `train --schedule` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ScheduleKind {
    Constant,
    Step,
    Cosine,
    Inverse,
}

fn parse_width(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(width) if width > 0 => Ok(width),
        _ => Err(format!(
            "invalid layer width `{text}`; expected comma-separated positive integers, such as 500 or 500,300"
        )),
    }
}

fn parse_epochs(text: &str) -> std::result::Result<u64, String> {
    match text.parse::<u64>() {
        Ok(epochs) if epochs > 0 => Ok(epochs),
        _ => Err(format!(
            "invalid epoch count `{text}`; expected an integer of at least 1"
        )),
    }
}

fn parse_split(text: &str) -> std::result::Result<Split, String> {
    match text {
        "train" => Ok(Split::Train),
        "validation" | "valid" => Ok(Split::Validation),
        "test" => Ok(Split::Test),
        other => Err(format!(
            "unknown split `{other}`; expected train, validation or test"
        )),
    }
}

/// Prints a line to stdout and ignores write errors, so that a closed pipe
/// (`wgpu-learn train | head`) or a full disk neither panics nor stops a
/// training run before its model is saved.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or("warn,wgpu_core=error,wgpu_hal=error,naga=error"),
    )
    .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => run_default(),
        Some(Command::Train(args)) => train(&args).map(|_| ()),
        Some(Command::Evaluate(args)) => evaluate(&args),
        Some(Command::Predict(args)) => predict(&args),
        Some(Command::Devices) => devices(),
        Some(Command::Bench(args)) => bench(&args),
    };
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// Trains with the defaults on the shipped MNIST, then predicts 20 test digits.
fn run_default() -> Result<()> {
    let Some(Command::Train(args)) = Cli::parse_from(["wgpu-learn", "train"]).command else {
        unreachable!("`train` parses to the train subcommand");
    };
    let output = train(&args)?;
    say!();
    predict(&PredictArgs {
        data: args.data.clone(),
        model: output,
        count: 20,
        split: Split::Test,
    })
}

/// Settings of a run from the command line, or from the checkpoint given
/// to --resume.
struct RunPlan {
    config: TrainConfig,
    optimizer: Optimizer,
    penalty: Penalty,
    resumed: Option<Checkpoint>,
}

impl RunPlan {
    fn from_args(args: &TrainArgs) -> wgpu_learn::Result<RunPlan> {
        if let Some(path) = &args.resume {
            return Self::resumed(args, load_checkpoint(path)?);
        }
        let epochs = args.epochs.map(|epochs| epochs as usize);
        let config = TrainConfig {
            learning_rate: args.learning_rate,
            batch_size: args.batch_size,
            max_epochs: args.max_epochs,
            patience: args.patience,
            improvement_threshold: args.improvement_threshold,
            drop_last: args.drop_last,
            schedule: schedule_from_args(args, epochs),
            shuffle: args.shuffle,
            seed: args.seed,
            epochs,
            ..TrainConfig::default()
        };
        let penalty = Penalty {
            l1: args.l1,
            l2: args.l2,
        };
        penalty.validate()?;
        Ok(RunPlan {
            config,
            optimizer: optimizer_from_args(args)?,
            penalty,
            resumed: None,
        })
    }

    /// Takes the settings of `checkpoint`, with the epoch limits of `args`.
    fn resumed(args: &TrainArgs, checkpoint: Checkpoint) -> wgpu_learn::Result<RunPlan> {
        let mut config = checkpoint.config.clone();
        config.max_epochs = args.max_epochs;
        if let Some(epochs) = args.epochs {
            config.epochs = Some(epochs as usize);
        }
        if let Schedule::Cosine { epochs } = config.schedule {
            if config.epoch_limit() > epochs {
                return Err(wgpu_learn::Error::InvalidConfig {
                    name: "epochs",
                    value: config.epoch_limit().to_string(),
                    expected: format!(
                        "at most {epochs}: the checkpoint's cosine schedule reaches a learning rate of 0 \
                         after epoch {epochs}, so later epochs would not train; start a new run with a \
                         larger --epochs instead"
                    ),
                });
            }
        }
        Ok(RunPlan {
            config,
            optimizer: checkpoint.optimizer,
            penalty: checkpoint.penalty,
            resumed: Some(checkpoint),
        })
    }

    /// Builds the setup: the checkpoint's state, or a new model for `splits`.
    fn setup(&self, args: &TrainArgs, splits: &Splits) -> Setup {
        if let Some(checkpoint) = &self.resumed {
            return Setup::new(checkpoint.model.clone())
                .with_optimizer(checkpoint.optimizer)
                .with_penalty(checkpoint.penalty)
                .with_state(checkpoint.state.clone());
        }
        let shape = splits.train.sample_shape().to_vec();
        let model: Model = match args.model_kind {
            ModelKind::Logistic => LogisticRegression::zeros(shape, splits.n_classes()).into(),
            ModelKind::Mlp => Mlp::new(
                shape,
                &args.hidden,
                splits.n_classes(),
                args.activation,
                args.seed,
            )
            .into(),
        };
        Setup::new(model)
            .with_optimizer(self.optimizer)
            .with_penalty(self.penalty)
    }
}

fn train(args: &TrainArgs) -> Result<PathBuf> {
    // Settings are checked before any data is read; clap exits with code 2.
    let checked = RunPlan::from_args(args).and_then(|plan| {
        let trainer = Trainer::new(plan.config.clone())?;
        Ok((plan, trainer))
    });
    let (plan, mut trainer) = match checked {
        Ok(checked) => checked,
        Err(error @ wgpu_learn::Error::InvalidConfig { .. }) => {
            let mut command = Cli::command();
            let train_command = command
                .find_subcommand_mut("train")
                .expect("train is a subcommand");
            train_command
                .clone()
                .bin_name("wgpu-learn train")
                .error(clap::error::ErrorKind::ValueValidation, error.to_string())
                .exit()
        }
        Err(other) => return Err(other.into()),
    };
    if let Some(checkpoint) = &plan.resumed {
        trainer = trainer.with_progress(checkpoint.progress.clone(), Some(checkpoint.best.clone()));
    }
    let checkpoint_path = args.checkpoint.clone().or_else(|| args.resume.clone());
    if let Some(path) = &checkpoint_path {
        check_output_directory(path, "the checkpoint")?;
        if same_file(path, &args.output) {
            anyhow::bail!(
                "--checkpoint and --output both name `{}`; the checkpoint would replace the best model, so give them different files",
                path.display()
            );
        }
    }
    if plan.resumed.is_some() {
        let ignored = options_ignored_on_resume();
        if !ignored.is_empty() {
            eprintln!(
                "note: ignored with --resume, which uses the checkpoint's settings: {}",
                ignored.join(", ")
            );
        }
    }
    check_output_directory(&args.output, "the model")?;

    if args.adapter.is_some() && args.backend == BackendChoice::Cpu {
        eprintln!("note: --adapter is ignored with --backend cpu");
    }
    let splits = load_splits(&args.data)?;
    let quiet = args.quiet;
    macro_rules! detail {
        ($($arg:tt)*) => {{
            if !quiet {
                say!($($arg)*);
            }
        }};
    }
    detail!(
        "data: {} train, {} validation, {} test rows of {} features, {} classes",
        splits.train.len(),
        splits.validation.len(),
        splits.test.len(),
        splits.n_features(),
        splits.n_classes()
    );
    check_work_left(&plan, &splits)?;
    let trained_on = DataSummary::of(&splits.train);
    if let Some(recorded) = plan
        .resumed
        .as_ref()
        .and_then(|checkpoint| checkpoint.data.as_ref())
    {
        warn_if_other_data("the checkpoint", recorded, &trained_on);
    }
    if plan.resumed.is_none() && args.model_kind == ModelKind::Mlp {
        let parameters =
            Mlp::parameter_count(splits.n_features(), &args.hidden, splits.n_classes());
        if parameters.is_none_or(|count| count > MAX_PARAMETERS) {
            anyhow::bail!(
                "--hidden {:?} with {} input features makes more than {MAX_PARAMETERS} parameters; use narrower layers",
                args.hidden,
                splits.n_features()
            );
        }
    }
    let setup = plan.setup(args, &splits);
    setup
        .model
        .check_dataset(&splits.train)
        .context("the model does not fit this data")?;
    let opened = open_backend_for(
        args.backend,
        args.adapter.as_deref(),
        &splits,
        &setup,
        &plan.config,
    )?;
    detail!(
        "backend: {} ({})",
        opened.backend.description(),
        opened.reason
    );
    detail!(
        "model: {}, optimiser {}",
        setup.model.summary(),
        setup.optimizer.name()
    );
    if let Some(checkpoint) = &plan.resumed {
        detail!(
            "resuming after epoch {} minibatch {} ({} iterations)",
            checkpoint.progress.epoch,
            checkpoint.progress.minibatch,
            checkpoint.progress.iterations
        );
    }
    let mut backend = opened.backend;

    let stop = Arc::new(AtomicBool::new(false));
    install_interrupt_handler(stop.clone());
    let trainer = trainer.with_stop_flag(stop);
    let mut progress = Progress::new(args.quiet);
    let trained = trainer.fit(&splits, backend.as_mut(), |event| progress.show(event))?;
    progress.finish();

    let report = &trained.report;
    if report.interrupted {
        say!("interrupted: saving the best model so far");
    }
    save_model_trained_on(&trained.model, &trained_on, &args.output)?;
    if let Some(path) = &checkpoint_path {
        let checkpoint = Checkpoint {
            model: backend.current_model()?,
            best: trained.model.clone(),
            optimizer: plan.optimizer,
            penalty: plan.penalty,
            state: backend.optimizer_state()?,
            progress: trained.progress.clone(),
            config: plan.config.clone(),
            data: Some(trained_on.clone()),
        };
        save_checkpoint(&checkpoint, path)?;
        say!("checkpoint saved to {}", path.display());
    }
    say!(
        "Optimization complete with best validation score of {:.6} %, with test performance {}",
        report.best_validation_error * 100.0,
        report
            .test_error
            .map_or("n/a (empty test set)".to_string(), |e| format!(
                "{:.6} %",
                e * 100.0
            ))
    );
    say!(
        "The code ran for {} epochs ({} iterations), with {:.6} epochs/sec, in {:.3} s of training",
        report.epochs,
        report.iterations,
        report.epochs_per_second(),
        report.seconds
    );
    say!("best model saved to {}", args.output.display());
    if report.interrupted {
        std::process::exit(130);
    }
    Ok(args.output.clone())
}

fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let (model, recorded) = load_model_with_data(&args.model)?;
    let splits = load_splits(&args.data)?;
    if let Some(recorded) = &recorded {
        warn_if_other_data("the model", recorded, &DataSummary::of(&splits.train));
    }
    let full = splits.get(args.split);
    let complete_batches;
    let data = if args.drop_last {
        let batch_size = args.batch_size as usize;
        complete_batches = full.slice_rows(0..full.len() / batch_size * batch_size);
        &complete_batches
    } else {
        full
    };
    let error = model.error_rate(data).with_context(|| {
        format!(
            "cannot evaluate `{}` on the {} split",
            args.model.display(),
            args.split
        )
    })?;
    let errors = (error * data.len() as f64).round() as u64;
    say!(
        "{} error {:.6} % ({errors} of {} rows misclassified)",
        args.split,
        error * 100.0,
        data.len()
    );
    Ok(())
}

fn predict(args: &PredictArgs) -> Result<()> {
    let (model, recorded) = load_model_with_data(&args.model)?;
    let splits = load_splits(&args.data)?;
    if let Some(recorded) = &recorded {
        warn_if_other_data("the model", recorded, &DataSummary::of(&splits.train));
    }
    let data = splits.get(args.split);
    model
        .check_dataset(data)
        .with_context(|| format!("cannot use `{}` on this data", args.model.display()))?;
    let count = (args.count as usize).min(data.len());
    let rows = data.slice_rows(0..count);
    let predicted = model.predict(rows.features_view())?;
    let join = |values: &[u32]| {
        values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    say!(
        "Predicted values for the first {count} {} rows:",
        args.split
    );
    say!("predicted: {}", join(&predicted));
    say!("labels:    {}", join(rows.labels()));
    let correct = predicted
        .iter()
        .zip(rows.labels())
        .filter(|(p, l)| p == l)
        .count();
    say!("{correct} of {count} correct");
    Ok(())
}

fn devices() -> Result<()> {
    let adapters = wgpu_learn::gpu::list_adapters();
    if adapters.is_empty() {
        say!("no GPU adapters found; install a Vulkan, Metal or DX12 driver, or Mesa's lavapipe (`apt-get install mesa-vulkan-drivers`)");
    }
    for adapter in adapters {
        say!("{adapter}");
        say!(
            "    max storage binding {} MiB, max buffer {} MiB, max workgroups per dimension {}, max invocations per workgroup {}",
            adapter.max_storage_buffer_binding_size >> 20,
            adapter.max_buffer_size >> 20,
            adapter.max_compute_workgroups_per_dimension,
            adapter.max_compute_invocations_per_workgroup
        );
    }
    Ok(())
}

fn bench(args: &BenchArgs) -> Result<()> {
    use wgpu_learn::bench::{format_table, run_protocol, to_json, BenchPath};

    let mut config = TrainConfig::default().with_drop_last(args.drop_last);
    if let Some(epochs) = args.epochs {
        config = config.with_max_epochs(epochs).with_patience(usize::MAX);
    }
    if let Err(error) = config.validate() {
        let mut command = Cli::command();
        let bench_command = command
            .find_subcommand_mut("bench")
            .expect("bench is a subcommand");
        bench_command
            .clone()
            .bin_name("wgpu-learn bench")
            .error(clap::error::ErrorKind::ValueValidation, error.to_string())
            .exit()
    }
    let mut choices = args.paths.clone();
    if choices.is_empty() {
        choices.push(BackendChoice::Cpu);
        if !wgpu_learn::gpu::list_adapters().is_empty() {
            choices.push(BackendChoice::Gpu);
        }
    }
    let paths: Vec<BenchPath> = choices
        .iter()
        .map(|&choice| BenchPath {
            choice,
            adapter: args.adapter.clone(),
        })
        .collect();

    let splits = load_splits(&args.data)?;
    let protocol = match args.epochs {
        Some(epochs) => format!("{epochs} epochs"),
        None => "early stopping".to_string(),
    };
    say!(
        "protocol: {protocol}, batch size {}, learning rate {}, drop last {}, {} runs per path",
        config.batch_size,
        config.learning_rate,
        config.drop_last,
        args.repeat
    );
    let rows = run_protocol(&splits, &config, &paths, args.repeat as usize)?;
    say!("{}", format_table(&rows).trim_end());
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(&rows))
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }

    if args.scaling {
        let scaling_config = TrainConfig::default()
            .with_max_epochs(2)
            .with_patience(usize::MAX);
        say!("\ntime per epoch against training-set size (batch size 600, 2 epochs, minimum of {} runs)", args.repeat);
        say!("{:<5} {:>8} {:>10}", "path", "rows", "ms/epoch");
        for rows in [10_000usize, 25_000, 50_000, 500_000] {
            let sized = resize_training_set(&splits, rows)?;
            for row in run_protocol(&sized, &scaling_config, &paths, args.repeat as usize)? {
                say!("{:<5} {:>8} {:>10.2}", row.path, rows, row.ms_per_epoch());
            }
        }
        say!(
            "\ntime per epoch against batch size (50000 rows, 2 epochs, minimum of {} runs)",
            args.repeat
        );
        say!("{:<5} {:>8} {:>10}", "path", "batch", "ms/epoch");
        for batch_size in [20usize, 100, 600, 6000] {
            let config = scaling_config.clone().with_batch_size(batch_size);
            for row in run_protocol(&splits, &config, &paths, args.repeat as usize)? {
                say!(
                    "{:<5} {:>8} {:>10.2}",
                    row.path,
                    batch_size,
                    row.ms_per_epoch()
                );
            }
        }
    }
    Ok(())
}

/// Returns `splits` with a training set of exactly `rows` rows: the first
/// rows, or the training rows repeated in order when more are requested.
fn resize_training_set(splits: &Splits, rows: usize) -> Result<Splits> {
    let train = &splits.train;
    let d = train.n_features();
    let mut features = Vec::with_capacity(rows * d);
    let mut labels = Vec::with_capacity(rows);
    for row in 0..rows {
        let source = row % train.len();
        features.extend_from_slice(train.row(source));
        labels.push(train.labels()[source]);
    }
    let resized = wgpu_learn::Dataset::new(
        "resized training set",
        features,
        labels,
        train.sample_shape().to_vec(),
        train.n_classes(),
    )?;
    Ok(Splits::new(
        resized,
        splits.validation.clone(),
        splits.test.clone(),
    )?)
}

fn load_splits(data: &DataArgs) -> Result<Splits> {
    if let Some(pickle) = &data.pickle {
        return Ok(mnist::load_pickle(pickle)?);
    }
    let directory = match &data.data {
        Some(directory) => directory.clone(),
        None => shipped_mnist_dir()?,
    };
    Ok(mnist::load_idx_dir(&directory, data.validation_size)?)
}

/// Finds the data/mnist directory shipped in the repository: relative to
/// the working directory, to the executable (target/release/wgpu-learn),
/// or at the path the crate was built from.
fn shipped_mnist_dir() -> Result<PathBuf> {
    let mut candidates = vec![PathBuf::from("data/mnist")];
    if let Ok(executable) = std::env::current_exe() {
        for ancestor in executable.ancestors().skip(1).take(4) {
            candidates.push(ancestor.join("data/mnist"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    candidates
        .iter()
        .find(|candidate| candidate.is_dir())
        .cloned()
        .with_context(|| {
            format!(
                "cannot find the shipped MNIST data (looked in {}); pass --data DIR",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn schedule_from_args(args: &TrainArgs, epochs: Option<usize>) -> Schedule {
    match args.schedule {
        ScheduleKind::Constant => Schedule::Constant,
        ScheduleKind::Step => Schedule::Step {
            every: args.step_every,
            factor: args.step_factor,
        },
        ScheduleKind::Cosine => Schedule::Cosine {
            epochs: epochs.unwrap_or(args.max_epochs),
        },
        ScheduleKind::Inverse => Schedule::Inverse { decay: args.decay },
    }
}

/// Builds the chosen optimiser, after checking every optimiser's settings
/// (not only the chosen one's) so that no value out of range is ignored.
fn optimizer_from_args(args: &TrainArgs) -> wgpu_learn::Result<Optimizer> {
    let (beta1, beta2, epsilon) = (args.beta1, args.beta2, args.epsilon);
    let momentum = |nesterov| Optimizer::Momentum {
        momentum: args.momentum,
        nesterov,
    };
    let adamw = Optimizer::AdamW {
        beta1,
        beta2,
        epsilon,
        weight_decay: args.weight_decay,
    };
    momentum(false).validate()?;
    adamw.validate()?;
    Ok(match args.optimizer {
        OptimizerKind::Sgd => Optimizer::Sgd,
        OptimizerKind::Momentum => momentum(false),
        OptimizerKind::Nesterov => momentum(true),
        OptimizerKind::Adam => Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        },
        OptimizerKind::Adamw => adamw,
    })
}

/// Prints a note when `what` was trained on other data than `current`.
fn warn_if_other_data(what: &str, recorded: &DataSummary, current: &DataSummary) {
    if recorded != current {
        eprintln!(
            "note: {what} was trained on other data ({recorded}) than this training split ({current}); pass the --data it was trained on"
        );
    }
}

/// Fails when a resumed run has nothing left to train: its epoch limit is
/// already reached, or early stopping already ended it.
fn check_work_left(plan: &RunPlan, splits: &Splits) -> Result<()> {
    let Some(checkpoint) = &plan.resumed else {
        return Ok(());
    };
    let config = &plan.config;
    let progress = &checkpoint.progress;
    let batches =
        wgpu_learn::Batch::split(splits.train.len(), config.batch_size, config.drop_last).len();
    let limit = config.epoch_limit();
    if progress.epoch > limit || (progress.epoch == limit && progress.minibatch >= batches) {
        anyhow::bail!(
            "the checkpoint has finished epoch {} and the run's limit is {limit} epochs; pass --epochs N with N greater than {} to train more",
            progress.epoch,
            progress.epoch
        );
    }
    if config.epochs.is_none() && progress.epoch > 0 && progress.patience < progress.iterations {
        anyhow::bail!(
            "early stopping already ended this run after {} iterations (patience); pass --epochs N with N greater than {} to train on",
            progress.iterations,
            progress.epoch
        );
    }
    Ok(())
}

/// Returns whether `a` and `b` name the same file, as written or once resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let resolve = |path: &Path| {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = path.file_name()?;
        parent
            .canonicalize()
            .ok()
            .map(|directory| directory.join(name))
    };
    matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// Returns the `train` options given on the command line that `--resume`
/// replaces with the checkpoint's settings.
fn options_ignored_on_resume() -> Vec<String> {
    const IGNORED: [&str; 22] = [
        "learning_rate",
        "batch_size",
        "patience",
        "improvement_threshold",
        "drop_last",
        "model_kind",
        "hidden",
        "activation",
        "optimizer",
        "momentum",
        "beta1",
        "beta2",
        "epsilon",
        "weight_decay",
        "l1",
        "l2",
        "schedule",
        "step_every",
        "step_factor",
        "decay",
        "shuffle",
        "seed",
    ];
    let Ok(matches) = Cli::command().try_get_matches_from(std::env::args_os()) else {
        return Vec::new();
    };
    let Some(train) = matches.subcommand_matches("train") else {
        return Vec::new();
    };
    IGNORED
        .iter()
        .filter(|id| train.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| match *id {
            "model_kind" => "--model".to_string(),
            other => format!("--{}", other.replace('_', "-")),
        })
        .collect()
}

fn check_output_directory(output: &Path, what: &str) -> Result<()> {
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        anyhow::bail!(
            "cannot save {what} to `{}`: directory `{}` does not exist",
            output.display(),
            directory.display()
        );
    }
    if output.is_dir() {
        anyhow::bail!(
            "cannot save {what} to `{}`: it is a directory",
            output.display()
        );
    }
    Ok(())
}

fn install_interrupt_handler(stop: Arc<AtomicBool>) {
    let result = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::Relaxed) {
            // A second Ctrl-C ends at once; model files are only ever
            // renamed into place, so none is left half-written.
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after the current steps (press Ctrl-C again to quit now)");
    });
    if let Err(error) = result {
        log::warn!("cannot install the Ctrl-C handler: {error}");
    }
}

/// Prints the tutorial's progress lines and, on a terminal, a progress bar.
struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress { quiet, bar: None }
    }

    fn show(&mut self, event: &TrainEvent) {
        if self.quiet {
            return;
        }
        match event {
            TrainEvent::EpochStarted { epoch, batches } => {
                if std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(*batches as u64);
                    bar.set_style(
                        ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} minibatches")
                            .expect("the template is valid")
                            .progress_chars("=> "),
                    );
                    bar.set_message(epoch.to_string());
                    self.bar = Some(bar);
                }
            }
            TrainEvent::StepsCompleted { done, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*done as u64);
                }
            }
            TrainEvent::Validated {
                epoch,
                minibatch,
                batches,
                validation_error,
                ..
            } => self.print_line(format!(
                "epoch {epoch}, minibatch {minibatch}/{batches}, validation error {:.6} %",
                validation_error * 100.0
            )),
            TrainEvent::TestedBest {
                epoch,
                minibatch,
                batches,
                test_error,
            } => self.print_line(format!(
                "     epoch {epoch}, minibatch {minibatch}/{batches}, test error of best model {:.6} %",
                test_error * 100.0
            )),
            _ => {}
        }
    }

    fn print_line(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| say!("{line}")),
            None => say!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
