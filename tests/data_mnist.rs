//! Tests of the MNIST loaders on the data shipped in data/mnist, on small
//! IDX directories built in the tests, and against the classic pickle.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::{Path, PathBuf};
use wgpu_learn::data::mnist::{
    load_idx_dir, load_pickle, pixel_to_f32, read_idx_dir, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES,
    TRAIN_LABELS,
};
use wgpu_learn::Error;

fn shipped_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Writes a small MNIST-style directory: 6 training and 2 test images of
/// 2x3 pixels, with pixel value `10 * row + column` and label `row % 3`.
fn write_small_dir(dir: &Path) {
    let images = |rows: u32| {
        let data: Vec<u8> = (0..rows * 6)
            .map(|v| (10 * (v / 6) + v % 6) as u8)
            .collect();
        idx_bytes(&[rows, 2, 3], &data)
    };
    let labels = |rows: u32| {
        idx_bytes(
            &[rows],
            &(0..rows).map(|r| (r % 3) as u8).collect::<Vec<_>>(),
        )
    };
    std::fs::write(dir.join(TRAIN_IMAGES), images(6)).unwrap();
    std::fs::write(dir.join(format!("{TRAIN_LABELS}.gz")), gzip(&labels(6))).unwrap();
    std::fs::write(dir.join(format!("{TEST_IMAGES}.gz")), gzip(&images(2))).unwrap();
    std::fs::write(dir.join(TEST_LABELS), labels(2)).unwrap();
}

fn dataset_reason(error: Error) -> String {
    match error {
        Error::Dataset { reason, .. } => reason,
        other => panic!("expected Error::Dataset, got {other:?}"),
    }
}

#[test]
fn mnist_shipped_idx_splits() {
    let splits = load_idx_dir(&shipped_mnist(), None).unwrap();
    assert_eq!(splits.train.len(), 50000);
    assert_eq!(splits.validation.len(), 10000);
    assert_eq!(splits.test.len(), 10000);
    assert_eq!(splits.train.sample_shape(), &[28, 28]);
    assert_eq!(splits.n_features(), 784);
    assert_eq!(splits.n_classes(), 10);
    assert_eq!(splits.train.labels()[0], 5);
    assert_eq!(splits.test.labels()[0], 7);

    let max = splits
        .train
        .features()
        .iter()
        .copied()
        .fold(0.0f32, f32::max);
    assert_eq!(max, 0.99609375);
    let min = splits
        .test
        .features()
        .iter()
        .copied()
        .fold(1.0f32, f32::min);
    assert_eq!(min, 0.0);
}

#[test]
fn mnist_shipped_idx_raw_bytes() {
    let raw = read_idx_dir(&shipped_mnist()).unwrap();
    assert_eq!(raw.train_images.count, 60000);
    assert_eq!(raw.train_labels.len(), 60000);
    assert_eq!(raw.test_images.count, 10000);
    assert_eq!(raw.test_labels.len(), 10000);

    // The last training rows become the validation set, scaled by 1/256.
    let splits = load_idx_dir(&shipped_mnist(), Some(7)).unwrap();
    assert_eq!(splits.train.len(), 59993);
    assert_eq!(splits.validation.len(), 7);
    let first_validation = &raw.train_images.bytes[59993 * 784..59994 * 784];
    let expected: Vec<f32> = first_validation.iter().map(|&b| pixel_to_f32(b)).collect();
    assert_eq!(splits.validation.row(0), expected.as_slice());
    assert_eq!(
        splits.validation.labels()[0],
        u32::from(raw.train_labels[59993])
    );
}

#[test]
fn mnist_pixel_scaling_is_exact() {
    assert_eq!(pixel_to_f32(0), 0.0);
    assert_eq!(pixel_to_f32(128), 0.5);
    assert_eq!(pixel_to_f32(255), 0.99609375);
}

#[test]
fn mnist_small_dir_mixes_gzip_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    let splits = load_idx_dir(dir.path(), Some(2)).unwrap();
    assert_eq!(splits.train.len(), 4);
    assert_eq!(splits.validation.len(), 2);
    assert_eq!(splits.test.len(), 2);
    assert_eq!(splits.train.sample_shape(), &[2, 3]);
    assert_eq!(splits.n_classes(), 3);
    assert_eq!(
        splits.validation.row(1),
        &[
            50.0 / 256.0,
            51.0 / 256.0,
            52.0 / 256.0,
            53.0 / 256.0,
            54.0 / 256.0,
            55.0 / 256.0
        ]
    );
    assert_eq!(splits.validation.labels(), &[1, 2]);
}

#[test]
fn mnist_default_validation_is_one_sixth() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    let splits = load_idx_dir(dir.path(), None).unwrap();
    assert_eq!(splits.train.len(), 5);
    assert_eq!(splits.validation.len(), 1);
}

#[test]
fn mnist_prefers_uncompressed_file() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    // A second, different labels file with .gz: the uncompressed one wins.
    std::fs::write(
        dir.path().join(format!("{TEST_LABELS}.gz")),
        gzip(&idx_bytes(&[2], &[9, 9])),
    )
    .unwrap();
    let splits = load_idx_dir(dir.path(), Some(1)).unwrap();
    assert_eq!(splits.test.labels(), &[0, 1]);
}

#[test]
fn mnist_rejects_validation_size_too_large() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    assert!(load_idx_dir(dir.path(), Some(5)).is_ok());
    for size in [6, 7] {
        match load_idx_dir(dir.path(), Some(size)).unwrap_err() {
            Error::InvalidConfig {
                name,
                value,
                expected,
            } => {
                assert_eq!(name, "validation-size");
                assert_eq!(value, size.to_string());
                assert!(expected.contains("fewer than the 6 rows"), "{expected}");
            }
            other => panic!("expected Error::InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn mnist_rejects_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    std::fs::remove_file(dir.path().join(format!("{TEST_IMAGES}.gz"))).unwrap();
    let reason = dataset_reason(load_idx_dir(dir.path(), None).unwrap_err());
    assert!(
        reason.contains("neither `t10k-images-idx3-ubyte` nor `t10k-images-idx3-ubyte.gz`"),
        "{reason}"
    );
    assert!(
        reason.contains("train-images-idx3-ubyte, train-labels-idx1-ubyte"),
        "{reason}"
    );
}

#[test]
fn mnist_rejects_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    std::fs::write(dir.path().join(TEST_LABELS), idx_bytes(&[1], &[0])).unwrap();
    let error = load_idx_dir(dir.path(), None).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("t10k-images-idx3-ubyte.gz"), "{message}");
    let reason = dataset_reason(error);
    assert!(reason.contains("holds 2 images but"), "{reason}");
    assert!(
        reason.contains("t10k-labels-idx1-ubyte` holds 1 labels"),
        "{reason}"
    );
}

#[test]
fn mnist_rejects_test_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    std::fs::write(
        dir.path().join(format!("{TEST_IMAGES}.gz")),
        idx_bytes(&[2, 3, 2], &[0; 12]),
    )
    .unwrap();
    let reason = dataset_reason(load_idx_dir(dir.path(), None).unwrap_err());
    assert!(
        reason.contains("test images have shape [3, 2] but the training images"),
        "{reason}"
    );
}

#[test]
fn mnist_rejects_labels_file_as_images() {
    let dir = tempfile::tempdir().unwrap();
    write_small_dir(dir.path());
    std::fs::copy(dir.path().join(TEST_LABELS), dir.path().join(TRAIN_IMAGES)).unwrap();
    match load_idx_dir(dir.path(), None).unwrap_err() {
        Error::Idx { path, reason } => {
            assert_eq!(path, dir.path().join(TRAIN_IMAGES));
            assert!(reason.contains("this looks like a labels file"), "{reason}");
        }
        other => panic!("expected Error::Idx, got {other:?}"),
    }
}

/// Returns the directory of the shared datasets from
/// WGPU_LEARN_SHARED_DATASETS, relative to the crate root if relative, or
/// `None` to skip. When CI=true, a missing variable fails the test instead.
fn shared_datasets() -> Option<PathBuf> {
    match std::env::var_os("WGPU_LEARN_SHARED_DATASETS") {
        Some(dir) => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but WGPU_LEARN_SHARED_DATASETS is not set; set it to the directory holding mnist.pkl.gz")
        }
        None => {
            eprintln!("skipped: set WGPU_LEARN_SHARED_DATASETS to the directory holding mnist.pkl.gz to run this test");
            None
        }
    }
}

#[test]
fn mnist_idx_equals_classic_pickle() {
    let Some(dir) = shared_datasets() else { return };
    let from_pickle = load_pickle(&dir.join("mnist.pkl.gz")).unwrap();
    let from_idx = load_idx_dir(&shipped_mnist(), None).unwrap();

    for (name, pickle, idx) in [
        ("train", &from_pickle.train, &from_idx.train),
        ("validation", &from_pickle.validation, &from_idx.validation),
        ("test", &from_pickle.test, &from_idx.test),
    ] {
        assert_eq!(pickle.len(), idx.len(), "{name} rows");
        assert_eq!(pickle.n_features(), 784, "{name} features");
        assert_eq!(pickle.labels(), idx.labels(), "{name} labels");
        let mismatch = pickle
            .features()
            .iter()
            .zip(idx.features())
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(mismatch, None, "{name}: first feature that differs in bits");
    }
    assert_eq!(from_pickle.train.sample_shape(), &[784]);
    assert_eq!(from_pickle.n_classes(), 10);
}

#[test]
fn mnist_reads_fashion_mnist() {
    // Debian's dataset-fashion-mnist package installs the files here, with
    // the same names as MNIST.
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        // CI installs the package, so there a missing directory is a failure.
        assert!(
            std::env::var("CI").map_or(true, |value| value != "true"),
            "CI=true but {} is missing; .ci/run installs dataset-fashion-mnist",
            dir.display()
        );
        eprintln!("skipped: install the Debian package dataset-fashion-mnist to run this test");
        return;
    }
    let splits = load_idx_dir(dir, None).unwrap();
    assert_eq!(splits.train.len(), 50000);
    assert_eq!(splits.validation.len(), 10000);
    assert_eq!(splits.test.len(), 10000);
    assert_eq!(splits.train.sample_shape(), &[28, 28]);
    assert_eq!(splits.n_classes(), 10);
}
