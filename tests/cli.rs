//! The `wgpu-learn` command as a user runs it.

use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wgpu_learn(args: &[&str], directory: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpu-learn"))
        .args(args)
        .current_dir(directory)
        .output()
        .expect("the binary runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Builds an IDX file of u8 values, with magic 0x0000_08NN where NN is the dimension count.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn write_gz(path: &Path, bytes: &[u8]) {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    std::fs::write(path, encoder.finish().unwrap()).unwrap();
}

/// Writes a 4x4-pixel, 3-class IDX dataset that a linear model separates:
/// class c lights up row c of the image.
fn write_tiny_idx(directory: &Path, train_rows: usize, test_rows: usize) {
    let make = |rows: usize| {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for row in 0..rows {
            let class = (row % 3) as u8;
            for pixel in 0..16u8 {
                images.push(if pixel / 4 == class {
                    200 + (row % 50) as u8
                } else {
                    (row % 7) as u8
                });
            }
            labels.push(class);
        }
        (images, labels)
    };
    let (images, labels) = make(train_rows);
    write_gz(
        &directory.join("train-images-idx3-ubyte.gz"),
        &idx_bytes(&[train_rows as u32, 4, 4], &images),
    );
    write_gz(
        &directory.join("train-labels-idx1-ubyte.gz"),
        &idx_bytes(&[train_rows as u32], &labels),
    );
    let (images, labels) = make(test_rows);
    // Plain (not gzipped) test files: gzip is decided by content.
    std::fs::write(
        directory.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[test_rows as u32, 4, 4], &images),
    )
    .unwrap();
    std::fs::write(
        directory.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[test_rows as u32], &labels),
    )
    .unwrap();
}

fn tiny_dir() -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("tiny");
    std::fs::create_dir(&data).unwrap();
    write_tiny_idx(&data, 120, 30);
    (directory, data)
}

#[test]
fn train_evaluate_predict_round_trip() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data,
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "3",
            "--output",
            "tiny.safetensors",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("epoch 1, minibatch 10/10, validation error"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Optimization complete with best validation score of 0.000000 %"),
        "{stdout}"
    );
    assert!(directory.path().join("tiny.safetensors").is_file());

    let output = wgpu_learn(
        &["evaluate", "--data", data, "--model", "tiny.safetensors"],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "test error 0.000000 % (0 of 30 rows misclassified)"
    );

    let output = wgpu_learn(
        &[
            "predict",
            "--data",
            data,
            "--model",
            "tiny.safetensors",
            "--count",
            "5",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("predicted: 0 1 2 0 1"), "{stdout}");
    assert!(stdout.contains("5 of 5 correct"), "{stdout}");
}

#[test]
fn quiet_prints_only_the_summary() {
    let (directory, data) = tiny_dir();
    let output = wgpu_learn(
        &[
            "train",
            "--quiet",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "2",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains("minibatch"), "{stdout}");
    assert!(stdout.contains("Optimization complete"), "{stdout}");
}

#[test]
fn invalid_settings_exit_with_code_2() {
    let directory = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--batch-size", "0"],
            "batch-size = 0: expected an integer from 1 to",
        ),
        (
            &["--learning-rate", "0"],
            "learning-rate = 0: expected a finite number greater than 0",
        ),
        (&["--learning-rate", "-0.5"], "learning-rate = -0.5"),
        (&["--learning-rate", "NaN"], "learning-rate = NaN"),
        (&["--learning-rate", "inf"], "learning-rate = inf"),
        (&["--max-epochs", "0"], "max-epochs = 0"),
        (&["--patience", "0"], "patience = 0"),
        (
            &["--improvement-threshold", "1.5"],
            "improvement-threshold = 1.5: expected a number in (0, 1]",
        ),
        (
            &["--improvement-threshold", "0"],
            "improvement-threshold = 0",
        ),
        (
            &["--batch-size", "-3"],
            "invalid value '-3' for '--batch-size <ROWS>'",
        ),
    ];
    for (arguments, expected) in cases {
        let mut args = vec!["train", "--data", "does-not-exist"];
        args.extend_from_slice(arguments);
        let output = wgpu_learn(&args, directory.path());
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {stderr}");
        assert!(stderr.contains(expected), "{arguments:?}: {stderr}");
        assert!(
            !stderr.contains("does-not-exist"),
            "no file is read before settings are checked: {stderr}"
        );
    }
}

#[test]
fn missing_model_file_is_named() {
    let (directory, data) = tiny_dir();
    let output = wgpu_learn(
        &[
            "evaluate",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "nothing.safetensors",
        ],
        directory.path(),
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("nothing.safetensors"), "{stderr}");
}

#[test]
fn output_in_missing_directory_is_rejected_before_training() {
    let (directory, data) = tiny_dir();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "cpu",
            "--output",
            "no/such/dir/model.safetensors",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("directory `no/such/dir` does not exist"),
        "{stderr}"
    );
    assert!(!stdout.contains("epoch"), "{stdout}");
}

#[test]
fn model_for_other_input_shape_is_rejected() {
    let (directory, data) = tiny_dir();
    let status = wgpu_learn(
        &[
            "train",
            "--quiet",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "1",
        ],
        directory.path(),
    )
    .status;
    assert!(status.success());
    // Evaluate the 16-feature model on 5x5 images.
    let other = directory.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let images: Vec<u8> = vec![1; 6 * 25];
    let labels: Vec<u8> = vec![0, 1, 2, 0, 1, 2];
    std::fs::write(
        other.join("train-images-idx3-ubyte"),
        idx_bytes(&[6, 5, 5], &images),
    )
    .unwrap();
    std::fs::write(
        other.join("train-labels-idx1-ubyte"),
        idx_bytes(&[6], &labels),
    )
    .unwrap();
    std::fs::write(
        other.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[6, 5, 5], &images),
    )
    .unwrap();
    std::fs::write(
        other.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[6], &labels),
    )
    .unwrap();
    let output = wgpu_learn(
        &["evaluate", "--data", other.to_str().unwrap()],
        directory.path(),
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("takes 16 features per sample"), "{stderr}");
    assert!(stderr.contains("the data has 25"), "{stderr}");
}

#[test]
fn devices_lists_adapters() {
    let directory = tempfile::tempdir().unwrap();
    let output = wgpu_learn(&["devices"], directory.path());
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.trim().is_empty());
}

#[test]
fn train_on_gpu_backend_or_explain_why_not() {
    let (directory, data) = tiny_dir();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "gpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "3",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    if stderr.contains("no usable GPU adapter") {
        assert!(
            stderr.contains("mesa-vulkan-drivers"),
            "the error says how to get an adapter: {stderr}"
        );
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true and no GPU adapter: {stderr}"
        );
        eprintln!("skipping the GPU part: no adapter");
        return;
    }
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("backend: gpu"), "{stdout}");
    assert!(
        stdout.contains("Optimization complete with best validation score of 0.000000 %"),
        "{stdout}"
    );
}

#[test]
fn unknown_adapter_name_lists_adapters() {
    let (directory, data) = tiny_dir();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "gpu",
            "--adapter",
            "no-such-gpu-name",
        ],
        directory.path(),
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("no usable GPU adapter"), "{stderr}");
    assert!(stderr.contains("no-such-gpu-name"), "{stderr}");
}

#[test]
fn divergence_fails_and_keeps_previous_model() {
    // Labels unrelated to the pixels keep the gradients large, so a huge
    // learning rate drives the weights to infinity.
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("noise");
    std::fs::create_dir(&data).unwrap();
    let rows = 60u32;
    let images: Vec<u8> = (0..rows * 16)
        .map(|i| ((i * 37 + i / 16 * 11) % 256) as u8)
        .collect();
    let labels: Vec<u8> = (0..rows).map(|r| ((r * 7 + r / 5) % 3) as u8).collect();
    for prefix in ["train", "t10k"] {
        std::fs::write(
            data.join(format!("{prefix}-images-idx3-ubyte")),
            idx_bytes(&[rows, 4, 4], &images),
        )
        .unwrap();
        std::fs::write(
            data.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_bytes(&[rows], &labels),
        )
        .unwrap();
    }
    let model = directory.path().join("model.safetensors");
    std::fs::write(&model, b"previous model").unwrap();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--learning-rate",
            "3e38",
            "--output",
            "model.safetensors",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("training diverged at epoch 1, minibatch "),
        "{stderr}"
    );
    assert!(stderr.contains("lower the learning rate"), "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), b"previous model");
}

#[test]
fn interrupt_saves_complete_best_model() {
    // The shipped MNIST on the CPU path runs for seconds, long enough to
    // interrupt after the first validation.
    let directory = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgpu-learn"))
        .args([
            "train",
            "--backend",
            "cpu",
            "--output",
            "interrupted.safetensors",
        ])
        .current_dir(directory.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(
            read > 0,
            "training ended before its first validation: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("epoch 1,") {
            break;
        }
    }

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let exit = child.wait().unwrap();

    assert_eq!(exit.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("interrupted: saving the best model so far"),
        "{rest}"
    );
    let model =
        wgpu_learn::model::load_model(&directory.path().join("interrupted.safetensors")).unwrap();
    assert_eq!(model.n_features(), 784);
    assert_eq!(model.n_classes(), 10);
    assert!(model
        .as_logistic()
        .unwrap()
        .weights
        .iter()
        .any(|&w| w != 0.0));
}

#[test]
fn missing_data_paths_are_named() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("a-file"), b"x").unwrap();
    for (data, expected) in [("no-such-dir", "no-such-dir"), ("a-file", "a-file")] {
        let output = wgpu_learn(
            &["train", "--backend", "cpu", "--data", data],
            directory.path(),
        );
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn closed_stdout_still_saves_model() {
    // `wgpu-learn train | head -1` closes the pipe early; training must
    // finish and save its model rather than panic on the next line.
    let (directory, data) = tiny_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgpu-learn"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "3",
        ])
        .current_dir(directory.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());

    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(directory.path().join("best_model.safetensors").is_file());
}

#[test]
fn evaluate_drop_last_matches_training_report() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let status = wgpu_learn(
        &[
            "train",
            "--quiet",
            "--data",
            data,
            "--backend",
            "cpu",
            "--batch-size",
            "7",
            "--max-epochs",
            "1",
        ],
        directory.path(),
    )
    .status;
    assert!(status.success());

    // 30 test rows in batches of 7: 28 rows in complete batches.
    let output = wgpu_learn(
        &[
            "evaluate",
            "--data",
            data,
            "--drop-last",
            "--batch-size",
            "7",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("of 28 rows misclassified"), "{stdout}");
}

#[test]
fn mlp_trains_evaluates_and_predicts() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data,
            "--backend",
            "cpu",
            "--model",
            "mlp",
            "--hidden",
            "8,6",
            "--activation",
            "relu",
            "--optimizer",
            "adam",
            "--learning-rate",
            "0.01",
            "--batch-size",
            "10",
            "--epochs",
            "6",
            "--shuffle",
            "--seed",
            "3",
            "--output",
            "mlp.safetensors",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("model: mlp 16-8-6-3 relu, optimiser adam"),
        "{stdout}"
    );
    assert!(
        stdout.contains("The code ran for 6 epochs (60 iterations)"),
        "{stdout}"
    );

    let output = wgpu_learn(
        &["evaluate", "--data", data, "--model", "mlp.safetensors"],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.starts_with("test error "), "{stdout}");
    let misclassified: usize = stdout
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        misclassified <= 3,
        "an MLP separates the tiny classes: {stdout}"
    );

    let output = wgpu_learn(
        &[
            "predict",
            "--data",
            data,
            "--model",
            "mlp.safetensors",
            "--count",
            "6",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("labels:    0 1 2 0 1 2"), "{stdout}");
}

#[test]
fn resumed_run_matches_unbroken_run() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let common = [
        "train",
        "--data",
        data,
        "--backend",
        "cpu",
        "--model",
        "mlp",
        "--hidden",
        "5",
        "--optimizer",
        "nesterov",
        "--learning-rate",
        "0.05",
        "--l2",
        "0.001",
        "--batch-size",
        "10",
        "--shuffle",
        "--seed",
        "4",
        "--quiet",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = common.iter().chain(extra).copied().collect();
        let output = wgpu_learn(&args, directory.path());
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{args:?}\n{stdout}\n{stderr}");
        stdout
    };
    run(&[
        "--epochs",
        "5",
        "--output",
        "unbroken.safetensors",
        "--checkpoint",
        "unbroken.ckpt",
    ]);
    run(&[
        "--epochs",
        "2",
        "--output",
        "half.safetensors",
        "--checkpoint",
        "run.ckpt",
    ]);
    // Settings on the command line are ignored on resume, except --epochs.
    let stdout = run(&[
        "--epochs",
        "5",
        "--resume",
        "run.ckpt",
        "--l1",
        "9",
        "--output",
        "resumed.safetensors",
    ]);
    assert!(
        stdout.contains("The code ran for 5 epochs (50 iterations)"),
        "{stdout}"
    );

    // Metadata order in the files varies, so the contents are compared.
    let model = |name: &str| wgpu_learn::model::load_model(&directory.path().join(name)).unwrap();
    let checkpoint =
        |name: &str| wgpu_learn::model::load_checkpoint(&directory.path().join(name)).unwrap();
    assert_eq!(
        model("resumed.safetensors"),
        model("unbroken.safetensors"),
        "best models"
    );
    assert_eq!(
        checkpoint("run.ckpt"),
        checkpoint("unbroken.ckpt"),
        "the checkpoint is updated in place"
    );
    let checkpoint = checkpoint("run.ckpt");
    assert_eq!(checkpoint.progress.epoch, 5);
    assert_eq!(checkpoint.state.steps, 50);
}

#[test]
fn resume_from_plain_model_is_rejected() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            data,
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "1",
        ];
        args.extend_from_slice(extra);
        wgpu_learn(&args, directory.path())
    };
    let output = train(&["--output", "plain.safetensors"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let output = train(&["--resume", "plain.safetensors"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("plain.safetensors"), "{stderr}");
    assert!(
        stderr.contains("write checkpoints with `train --checkpoint FILE`"),
        "{stderr}"
    );
}

#[test]
fn invalid_mlp_settings_exit_with_code_2() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (
            &["--model", "mlp", "--hidden", "0"],
            "invalid layer width `0`",
        ),
        (
            &["--model", "mlp", "--hidden", "500,abc"],
            "invalid layer width `abc`",
        ),
        // Settings of an optimiser that is not selected are checked too.
        (&["--momentum", "1"], "momentum"),
        (
            &["--optimizer", "adam", "--weight-decay", "-1"],
            "weight-decay",
        ),
        (
            &["--optimizer", "momentum", "--momentum", "1.5"],
            "momentum",
        ),
        (&["--l2", "-1"], "l2"),
        (&["--epochs", "0"], "--epochs"),
        (&["--activation", "softplus"], "softplus"),
        (&["--schedule", "step", "--step-factor", "2"], "step-factor"),
    ];
    for (extra, named) in cases {
        let mut args = vec!["train", "--data", data, "--backend", "cpu"];
        args.extend_from_slice(extra);
        let output = wgpu_learn(&args, directory.path());
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(named), "{extra:?}: {stderr}");
    }
}

#[test]
fn mlp_trains_on_gpu_and_resumes_on_cpu() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data,
            "--backend",
            "gpu",
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--optimizer",
            "adam",
            "--learning-rate",
            "0.01",
            "--batch-size",
            "10",
            "--epochs",
            "3",
            "--shuffle",
            "--seed",
            "2",
            "--checkpoint",
            "gpu.ckpt",
            "--output",
            "gpu.safetensors",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    if stderr.contains("no usable GPU adapter") {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true and no GPU adapter: {stderr}"
        );
        eprintln!("skipping: no GPU adapter");
        return;
    }
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("network kernels"), "{stdout}");
    assert!(
        stdout.contains("model: mlp 16-8-3 tanh, optimiser adam"),
        "{stdout}"
    );

    // The checkpoint stores the state in the model's layout, so the CPU path continues it.
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data,
            "--backend",
            "cpu",
            "--resume",
            "gpu.ckpt",
            "--epochs",
            "5",
            "--output",
            "cpu.safetensors",
        ],
        directory.path(),
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("resuming after epoch 3 minibatch 10 (30 iterations)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("The code ran for 5 epochs (50 iterations)"),
        "{stdout}"
    );
    let checkpoint =
        wgpu_learn::model::load_checkpoint(&directory.path().join("gpu.ckpt")).unwrap();
    assert_eq!(checkpoint.state.steps, 50);
}

#[test]
fn checkpoint_and_resume_mistakes_are_reported() {
    let (directory, data) = tiny_dir();
    let data = data.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            data,
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let output = wgpu_learn(&args, directory.path());
        let (stdout, stderr) = text(&output);
        (output.status.code(), stdout, stderr)
    };

    let (code, stdout, stderr) = train(&["--epochs", "1", "--checkpoint", "no/such/dir/run.ckpt"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot save the checkpoint to `no/such/dir/run.ckpt`"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("Optimization complete"),
        "rejected before training: {stdout}"
    );

    let (code, _, stderr) = train(&[
        "--epochs",
        "1",
        "--checkpoint",
        "same.safetensors",
        "--output",
        "./same.safetensors",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--checkpoint and --output both name"),
        "{stderr}"
    );

    let cosine = [
        "--model",
        "mlp",
        "--hidden",
        "4",
        "--schedule",
        "cosine",
        "--epochs",
        "2",
        "--checkpoint",
        "cos.ckpt",
    ];
    let (code, _, stderr) = train(&cosine);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = train(&["--resume", "cos.ckpt", "--epochs", "4"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cosine schedule reaches a learning rate of 0"),
        "{stderr}"
    );

    let (code, _, stderr) = train(&["--resume", "cos.ckpt"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the checkpoint has finished epoch 2"),
        "{stderr}"
    );

    let (code, _, stderr) = train(&[
        "--model",
        "mlp",
        "--hidden",
        "1000000,1000",
        "--epochs",
        "1",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("parameters; use narrower layers"),
        "{stderr}"
    );

    // Positive control: a constant schedule resumes for more epochs, and
    // options that the checkpoint overrides are named.
    let (code, _, stderr) = train(&[
        "--model",
        "mlp",
        "--hidden",
        "4",
        "--epochs",
        "1",
        "--checkpoint",
        "run.ckpt",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = train(&[
        "--resume",
        "run.ckpt",
        "--epochs",
        "2",
        "--learning-rate",
        "0.5",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("note: ignored with --resume, which uses the checkpoint's settings: --learning-rate, --batch-size"), "{stderr}");
}

#[test]
fn model_used_on_other_data_is_noted() {
    let (directory, data) = tiny_dir();
    let other = directory.path().join("other");
    std::fs::create_dir(&other).unwrap();
    write_tiny_idx(&other, 90, 30);
    let data = data.to_str().unwrap();
    let output = wgpu_learn(
        &[
            "train",
            "--data",
            data,
            "--backend",
            "cpu",
            "--batch-size",
            "10",
            "--max-epochs",
            "1",
            "--quiet",
        ],
        directory.path(),
    );
    assert!(output.status.success(), "{:?}", text(&output));

    let output = wgpu_learn(&["evaluate", "--data", data], directory.path());
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("note:"), "same data, no note: {stderr}");

    for command in ["evaluate", "predict"] {
        let output = wgpu_learn(
            &[command, "--data", other.to_str().unwrap()],
            directory.path(),
        );
        let (_, stderr) = text(&output);
        assert!(output.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("note: the model was trained on other data (100 rows of 16 features"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("this training split (75 rows of 16 features"),
            "{command}: {stderr}"
        );
    }
}
