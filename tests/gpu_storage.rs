//! Feature storage on the GPU: u8 storage of byte-exact data against f32
//! storage of the same data, the automatic choice, and the memory used.

mod common;

use std::path::Path;

use common::{gpu_or_skip, Rng};
use wgpu_learn::backend::{Backend, Batch};
use wgpu_learn::data::mnist::load_idx_dir;
use wgpu_learn::gpu::{FeatureStorage, GpuBackend, GpuOptions, StepKernels};
use wgpu_learn::{Dataset, Error, Split, Splits};

const CLASSES: usize = 10;
const SPLITS: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

/// Rows of random bytes / 256 with random labels.
fn byte_dataset(rng: &mut Rng, name: &str, rows: usize, features: usize) -> Dataset {
    let values = (0..rows * features)
        .map(|_| rng.below(256) as f32 / 256.0)
        .collect();
    let labels = rng.labels(rows, CLASSES);
    Dataset::new(name, values, labels, vec![features], CLASSES).unwrap()
}

fn byte_splits(features: usize, rows: [usize; 3]) -> Splits {
    let mut rng = Rng::new(features as u64);
    Splits::new(
        byte_dataset(&mut rng, "train", rows[0], features),
        byte_dataset(&mut rng, "validation", rows[1], features),
        byte_dataset(&mut rng, "test", rows[2], features),
    )
    .unwrap()
}

/// Loads the first 2000 training, 500 validation and 500 test rows of the shipped MNIST.
fn mnist_subset() -> Splits {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let full = load_idx_dir(&directory, None).expect("the repository ships data/mnist");
    Splits::new(
        full.train.slice_rows(0..2000),
        full.validation.slice_rows(0..500),
        full.test.slice_rows(0..500),
    )
    .unwrap()
}

fn gpu(splits: &Splits, batch_size: usize, storage: FeatureStorage) -> Option<GpuBackend> {
    gpu_with_step_kernels(splits, batch_size, storage, StepKernels::Auto)
}

fn gpu_with_step_kernels(
    splits: &Splits,
    batch_size: usize,
    storage: FeatureStorage,
    kernels: StepKernels,
) -> Option<GpuBackend> {
    let options = GpuOptions::default()
        .with_batch_size(batch_size)
        .with_feature_storage(storage)
        .with_step_kernels(kernels);
    gpu_or_skip(GpuBackend::new(splits, options))
}

/// Trains `backend` for two epochs of `batch_size` rows, then returns the
/// model and the error count of each split in batches of 100 rows.
fn train_and_evaluate(
    backend: &mut GpuBackend,
    splits: &Splits,
    batch_size: usize,
) -> (wgpu_learn::LogisticRegression, Vec<u64>) {
    let batches = Batch::split(splits.train.len(), batch_size, false);
    for _ in 0..2 {
        backend.train_steps(&batches, 0.1).unwrap();
    }
    let errors = SPLITS
        .iter()
        .map(|&split| {
            let ranges = Batch::split(splits.get(split).len(), 100, false);
            let evaluation = backend.evaluate(split, &ranges).unwrap();
            assert_eq!(evaluation.first_non_finite_step, None, "{split}");
            evaluation.errors
        })
        .collect();
    (backend.current_model().unwrap().into_logistic(), errors)
}

/// Expected feature bytes of `backend`: each chunk of `rows` rows contains
/// `rows * features` elements of `storage`.
fn expected_feature_bytes(backend: &GpuBackend, features: usize, storage: FeatureStorage) -> u64 {
    SPLITS
        .iter()
        .flat_map(|&split| backend.chunk_rows(split))
        .map(|rows| storage.buffer_bytes(rows.len() * features))
        .sum()
}

#[test]
fn u8_matches_f32_on_mnist() {
    let splits = mnist_subset();
    let Some(mut bytes) = gpu(&splits, 256, FeatureStorage::Auto) else {
        return;
    };
    let mut floats = gpu(&splits, 256, FeatureStorage::F32).unwrap();
    assert_eq!(
        bytes.feature_storage(),
        FeatureStorage::U8,
        "MNIST pixels are byte / 256"
    );
    assert_eq!(floats.feature_storage(), FeatureStorage::F32);

    let (bytes_model, bytes_errors) = train_and_evaluate(&mut bytes, &splits, 256);
    let (floats_model, floats_errors) = train_and_evaluate(&mut floats, &splits, 256);
    assert_eq!(bytes_model.weights, floats_model.weights);
    assert_eq!(bytes_model.bias, floats_model.bias);
    assert_eq!(bytes_errors, floats_errors);
    assert!(
        floats_model.weights.iter().any(|&w| w != 0.0),
        "training must move the weights"
    );

    // 3000 rows of 784 features: 784 is a multiple of 4, so u8 takes exactly a quarter.
    assert_eq!(floats.feature_bytes(), 3000 * 784 * 4);
    assert_eq!(bytes.feature_bytes(), 3000 * 784);
}

#[test]
fn u8_packs_rows_of_odd_width() {
    // Rows of 3 and 785 bytes start in the middle of u32 words, and the
    // row counts leave partial words at the end of each split.
    for (features, kernels) in [
        (3, StepKernels::Tiles),
        (785, StepKernels::Tiles),
        (3, StepKernels::Split),
        (785, StepKernels::Split),
    ] {
        let splits = byte_splits(features, [601, 203, 97]);
        let Some(mut bytes) = gpu_with_step_kernels(&splits, 64, FeatureStorage::U8, kernels)
        else {
            return;
        };
        let mut floats = gpu_with_step_kernels(&splits, 64, FeatureStorage::F32, kernels).unwrap();
        let case = format!("{features} features, step {}", kernels.name());

        let (bytes_model, bytes_errors) = train_and_evaluate(&mut bytes, &splits, 64);
        let (floats_model, floats_errors) = train_and_evaluate(&mut floats, &splits, 64);
        assert_eq!(bytes_model.weights, floats_model.weights, "{case}");
        assert_eq!(bytes_model.bias, floats_model.bias, "{case}");
        assert_eq!(bytes_errors, floats_errors, "{case}");

        let expected = [601, 203, 97]
            .map(|rows: u64| (rows * features as u64).next_multiple_of(4))
            .iter()
            .sum::<u64>();
        assert_eq!(bytes.feature_bytes(), expected, "{features} features");
        assert_eq!(
            floats.feature_bytes(),
            901 * features as u64 * 4,
            "{features} features"
        );
    }
}

#[test]
fn u8_chunks_give_same_results() {
    let features = 785;
    let splits = byte_splits(features, [601, 203, 97]);
    let Some(mut whole) = gpu(&splits, 64, FeatureStorage::U8) else {
        return;
    };
    // 150 rows of 785 bytes fit: training chunks round down to 128 rows,
    // evaluation chunks hold 150 rows. With f32 storage only 37 rows fit.
    let options = GpuOptions::default()
        .with_batch_size(64)
        .with_feature_storage(FeatureStorage::U8)
        .with_max_chunk_bytes(150 * features as u64 + 10);
    let mut chunked = GpuBackend::new(&splits, options).unwrap();
    let train_chunks = chunked.chunk_rows(Split::Train);
    assert_eq!(train_chunks.len(), 601usize.div_ceil(128));
    assert!(
        train_chunks.iter().all(|rows| rows.start % 128 == 0),
        "{train_chunks:?}"
    );
    assert_eq!(
        chunked.chunk_rows(Split::Validation)[..2],
        [0..150, 150..203]
    );
    assert_eq!(whole.chunk_rows(Split::Train), vec![0..601]);

    let (whole_model, whole_errors) = train_and_evaluate(&mut whole, &splits, 64);
    let (chunked_model, chunked_errors) = train_and_evaluate(&mut chunked, &splits, 64);
    assert_eq!(chunked_model, whole_model);
    assert_eq!(chunked_errors, whole_errors);

    // Each chunk is padded on its own: 128 * 785 is a multiple of 4, but
    // 89 * 785 (the last training chunk), 150 * 785 and 53 * 785 are not.
    let expected = expected_feature_bytes(&chunked, features, FeatureStorage::U8);
    assert_eq!(chunked.feature_bytes(), expected);
    let unpadded = 901 * features as u64;
    assert!(expected > unpadded, "{expected} vs {unpadded}");
    assert!(
        expected < unpadded + 4 * 8,
        "at most 3 padding bytes per chunk: {expected} vs {unpadded}"
    );
}

#[test]
fn auto_picks_f32_for_other_data() {
    let mut splits = byte_splits(3, [64, 20, 20]);
    let mut values = splits.validation.features().to_vec();
    values[7 * 3 + 2] = 0.3;
    let labels = splits.validation.labels().to_vec();
    splits.validation = Dataset::new("validation", values, labels, vec![3], CLASSES).unwrap();

    let Some(backend) = gpu(&splits, 64, FeatureStorage::Auto) else {
        return;
    };
    assert_eq!(backend.feature_storage(), FeatureStorage::F32);
    assert!(
        backend.description().contains(", features f32,"),
        "{}",
        backend.description()
    );
    assert_eq!(
        backend.feature_bytes(),
        expected_feature_bytes(&backend, 3, FeatureStorage::F32)
    );
}

#[test]
fn u8_rejects_other_data() {
    let mut splits = byte_splits(3, [64, 20, 20]);
    let mut values = splits.validation.features().to_vec();
    values[7 * 3 + 2] = 0.3;
    values[9 * 3] = -1.0;
    let labels = splits.validation.labels().to_vec();
    splits.validation = Dataset::new("validation", values, labels, vec![3], CLASSES).unwrap();

    // The data is checked before any adapter is requested, so this runs without a GPU.
    let options = GpuOptions::default()
        .with_batch_size(64)
        .with_feature_storage(FeatureStorage::U8);
    let error = GpuBackend::new(&splits, options).map(|_| ()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            Error::InvalidConfig {
                name: "feature-storage",
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains("validation split has 0.3 at row 7, column 2"),
        "{message}"
    );
}

#[test]
fn description_names_u8_storage() {
    let splits = byte_splits(3, [64, 20, 20]);
    let Some(backend) = gpu(&splits, 64, FeatureStorage::Auto) else {
        return;
    };
    assert_eq!(backend.feature_storage(), FeatureStorage::U8);
    assert!(
        backend.description().contains(", features u8,"),
        "{}",
        backend.description()
    );
}
