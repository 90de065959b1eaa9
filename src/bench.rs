//! Timing training runs on several paths side by side.
//!
//! [`run_protocol`] trains the same splits on each requested path a number of
//! times and reports the minimum and median training time, so that one
//! command measures the CPU and GPU paths in the same session.

use crate::config::TrainConfig;
use crate::data::Splits;
use crate::error::Result;
use crate::select::{open_backend, BackendChoice};
use crate::trainer::Trainer;

/// One path to measure: a backend choice and an optional adapter name filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchPath {
    /// Backend to open.
    pub choice: BackendChoice,
    /// Adapter name filter for GPU paths.
    pub adapter: Option<String>,
}

/// Timings of one path.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// `cpu` or `gpu`.
    pub path: String,
    /// The backend's description, naming the device.
    pub device: String,
    /// Epochs per run (the same in every repetition).
    pub epochs: usize,
    /// Training time of each repetition in seconds, sorted.
    pub seconds: Vec<f64>,
    /// Best validation error of the last repetition (a fraction).
    pub validation_error: f64,
    /// Test error of the last repetition, if the test set is not empty.
    pub test_error: Option<f64>,
}

impl BenchRow {
    /// Fastest repetition in seconds.
    pub fn min_seconds(&self) -> f64 {
        self.seconds.first().copied().unwrap_or(f64::NAN)
    }

    /// Median repetition in seconds (the upper median for an even count).
    pub fn median_seconds(&self) -> f64 {
        self.seconds
            .get(self.seconds.len() / 2)
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// Milliseconds per epoch of the fastest repetition.
    pub fn ms_per_epoch(&self) -> f64 {
        self.min_seconds() * 1000.0 / self.epochs as f64
    }
}

/// Trains `splits` with `config` `repeat` times on each path and times the
/// training loop (uploads and backend start-up are not included).
///
/// # Errors
/// Any error from opening a backend or training.
pub fn run_protocol(
    splits: &Splits,
    config: &TrainConfig,
    paths: &[BenchPath],
    repeat: usize,
) -> Result<Vec<BenchRow>> {
    let trainer = Trainer::new(config.clone())?;
    let mut rows = Vec::new();
    for path in paths {
        let mut seconds = Vec::new();
        let mut last = None;
        let mut device = String::new();
        for _ in 0..repeat.max(1) {
            let opened = open_backend(
                path.choice,
                path.adapter.as_deref(),
                splits,
                config.batch_size,
            )?;
            let mut backend = opened.backend;
            device = backend.description();
            let trained = trainer.fit(splits, backend.as_mut(), |_| {})?;
            seconds.push(trained.report.seconds);
            last = Some(trained.report);
        }
        seconds.sort_by(f64::total_cmp);
        let report = last.expect("at least one repetition ran");
        rows.push(BenchRow {
            path: match path.choice {
                BackendChoice::Cpu => "cpu".to_string(),
                BackendChoice::Gpu => "gpu".to_string(),
                BackendChoice::Auto => "auto".to_string(),
            },
            device,
            epochs: report.epochs,
            seconds,
            validation_error: report.best_validation_error,
            test_error: report.test_error,
        });
    }
    Ok(rows)
}

/// Characters of the device column, enough for a GPU description with its
/// adapter, feature storage and step kernels.
const DEVICE_WIDTH: usize = 80;

/// Formats rows as a plain-text table with the speed-up against the first
/// CPU row.
pub fn format_table(rows: &[BenchRow]) -> String {
    let baseline = rows
        .iter()
        .find(|row| row.path == "cpu")
        .map(BenchRow::min_seconds);
    let mut out = format!(
        "{:<5} {:<DEVICE_WIDTH$} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}\n",
        "path",
        "device",
        "epochs",
        "min s",
        "median s",
        "ms/epoch",
        "epochs/s",
        "speed-up",
        "valid err",
        "test err"
    );
    for row in rows {
        let speedup = baseline.map_or("n/a".to_string(), |cpu| {
            format!("{:.2}x", cpu / row.min_seconds())
        });
        let device: String = row.device.chars().take(DEVICE_WIDTH).collect();
        out.push_str(&format!(
            "{:<5} {:<DEVICE_WIDTH$} {:>6} {:>9.3} {:>9.3} {:>9.2} {:>9.2} {:>8} {:>9.4}% {:>10}\n",
            row.path,
            device,
            row.epochs,
            row.min_seconds(),
            row.median_seconds(),
            row.ms_per_epoch(),
            row.epochs as f64 / row.min_seconds(),
            speedup,
            row.validation_error * 100.0,
            row.test_error
                .map_or("n/a".to_string(), |e| format!("{:.4}%", e * 100.0)),
        ));
    }
    out
}

/// Formats rows as a JSON array of objects with the same fields as the table.
pub fn to_json(rows: &[BenchRow]) -> String {
    let baseline = rows
        .iter()
        .find(|row| row.path == "cpu")
        .map(BenchRow::min_seconds);
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "path": row.path,
                "device": row.device,
                "epochs": row.epochs,
                "seconds": row.seconds,
                "min_seconds": row.min_seconds(),
                "median_seconds": row.median_seconds(),
                "ms_per_epoch": row.ms_per_epoch(),
                "epochs_per_second": row.epochs as f64 / row.min_seconds(),
                "speedup_vs_cpu": baseline.map(|cpu| cpu / row.min_seconds()),
                "validation_error": row.validation_error,
                "test_error": row.test_error,
            })
        })
        .collect();
    serde_json::to_string_pretty(&values).expect("JSON values serialise")
}
