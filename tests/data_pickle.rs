//! Tests of the numpy pickle reader against fixtures written by
//! tests/fixtures/pickle/make_fixtures.py with numpy 1.26.4 and 2.4.6.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use wgpu_learn::data::mnist::{load_pickle, splits_from_pickle};
use wgpu_learn::data::pickle::{
    parse_numpy_pickle, read_numpy_pickle, Dtype, ElementKind, NumpyArray, PickleValue,
};
use wgpu_learn::{Dataset, Error};

const ROWS: [usize; 3] = [4, 2, 3];
const FEATURES: usize = 6;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pickle")
        .join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name} is missing: {e}"))
}

/// Returns the integer feature value of make_fixtures.py: `(11k + 7i + 3j) % 17`.
fn raw_value(split: usize, row: usize, column: usize) -> u32 {
    ((11 * split + 7 * row + 3 * column) % 17) as u32
}

/// Returns the labels of make_fixtures.py: `(k + 5i) % 4`.
fn expected_labels(split: usize) -> Vec<u32> {
    (0..ROWS[split])
        .map(|i| ((split + 5 * i) % 4) as u32)
        .collect()
}

fn expected_features(split: usize, scale: f32) -> Vec<f32> {
    let mut values = Vec::new();
    for row in 0..ROWS[split] {
        for column in 0..FEATURES {
            values.push(raw_value(split, row, column) as f32 * scale);
        }
    }
    values
}

fn assert_fixture_splits(name: &str, scale: f32, sample_shape: &[usize]) {
    let splits = load_pickle(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let datasets: [&Dataset; 3] = [&splits.train, &splits.validation, &splits.test];
    for (split, dataset) in datasets.into_iter().enumerate() {
        assert_eq!(dataset.len(), ROWS[split], "{name} split {split} rows");
        assert_eq!(
            dataset.sample_shape(),
            sample_shape,
            "{name} split {split} shape"
        );
        assert_eq!(
            dataset.features(),
            expected_features(split, scale).as_slice(),
            "{name} split {split} features"
        );
        assert_eq!(
            dataset.labels(),
            expected_labels(split).as_slice(),
            "{name} split {split} labels"
        );
    }
    assert_eq!(splits.n_classes(), 4, "{name} classes");
}

#[test]
fn pickle_reads_every_protocol_and_numpy_version() {
    for numpy in [1, 2] {
        for protocol in [2, 3, 4, 5] {
            for suffix in ["", "_fortran"] {
                assert_fixture_splits(
                    &format!("numpy{numpy}_protocol{protocol}{suffix}.pkl"),
                    1.0 / 16.0,
                    &[6],
                );
            }
        }
        assert_fixture_splits(
            &format!("numpy{numpy}_protocol5_readonly.pkl"),
            1.0 / 16.0,
            &[6],
        );
    }
}

#[test]
fn pickle_reads_python2_style_file() {
    assert_fixture_splits("python2_protocol2.pkl", 1.0 / 16.0, &[6]);
    assert_fixture_splits("python2_protocol2.pkl.gz", 1.0 / 16.0, &[6]);
}

#[test]
fn pickle_reads_other_dtypes() {
    assert_fixture_splits("numpy2_float64_int32.pkl", 1.0 / 16.0, &[6]);
    assert_fixture_splits("numpy2_uint8_uint8.pkl", 1.0, &[6]);
    assert_fixture_splits("numpy2_big_endian.pkl", 1.0 / 16.0, &[6]);
    assert_fixture_splits("numpy2_big_endian_fortran_protocol5.pkl", 1.0 / 16.0, &[6]);
    assert_fixture_splits("numpy2_shape_2x3.pkl", 1.0 / 16.0, &[2, 3]);
    // The dtype objects are shared through the memo, so the later arrays
    // decode as big-endian only if memo entries alias the built dtype.
    assert_fixture_splits("numpy2_shared_dtype.pkl", 1.0 / 16.0, &[6]);
}

#[test]
fn pickle_keeps_dtype_and_order() {
    let value = read_numpy_pickle(fixture("numpy2_big_endian_fortran_protocol5.pkl")).unwrap();
    let PickleValue::Tuple(splits) = value else {
        panic!("top level is not a tuple")
    };
    let PickleValue::Tuple(train) = &splits[0] else {
        panic!("train is not a tuple")
    };
    let PickleValue::Array(x) = &train[0] else {
        panic!("train_x is not an array")
    };
    assert_eq!(x.dtype.kind, ElementKind::Float);
    assert_eq!(x.dtype.item_size, 8);
    assert!(x.dtype.big_endian);
    assert!(x.fortran_order);
    assert_eq!(x.shape, vec![4, 6]);
    // Fortran order stores column 0 first, and rows 0 to 3 of column 0 are
    // 0, 7, 14 and 4 sixteenths. So the second stored value is row 1.
    assert_eq!(&x.data[8..16], &(7.0f64 / 16.0).to_be_bytes());
    assert_eq!(x.to_f32_vec()[1], 3.0 / 16.0);
}

#[test]
fn pickle_accepts_uncompressed_and_gzip_bytes() {
    let raw = fixture_bytes("python2_protocol2.pkl");
    let compressed = fixture_bytes("python2_protocol2.pkl.gz");
    assert_eq!(compressed[..2], [0x1F, 0x8B]);
    let from_raw = parse_numpy_pickle(&raw, "raw").unwrap();
    let from_gzip = parse_numpy_pickle(&compressed, "gzip").unwrap();
    assert_eq!(from_raw, from_gzip);
}

fn pickle_reason(error: Error) -> String {
    match error {
        Error::Pickle { path, reason } => {
            assert!(!path.as_os_str().is_empty());
            reason
        }
        other => panic!("expected Error::Pickle, got {other:?}"),
    }
}

fn dataset_reason(error: Error) -> String {
    match error {
        Error::Dataset { reason, .. } => reason,
        other => panic!("expected Error::Dataset, got {other:?}"),
    }
}

#[test]
fn pickle_rejects_os_system_global() {
    let error = read_numpy_pickle(fixture("reject_os_system.pkl")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("reject_os_system.pkl"), "{message}");
    let reason = pickle_reason(error);
    assert!(reason.contains("`posix.system`"), "{reason}");
    assert!(reason.contains("not allowed"), "{reason}");
}

#[test]
fn pickle_rejects_object_array() {
    let reason = pickle_reason(load_pickle(&fixture("reject_object_array.pkl")).unwrap_err());
    assert!(reason.contains("dtype 'O'"), "{reason}");
}

#[test]
fn pickle_rejects_out_of_band_buffer() {
    let reason = pickle_reason(load_pickle(&fixture("reject_out_of_band.pkl")).unwrap_err());
    assert!(reason.contains("out-of-band buffers"), "{reason}");
}

#[test]
fn pickle_rejects_wrong_top_level() {
    for name in ["reject_dict_top_level.pkl", "reject_two_splits.pkl"] {
        // Positive control: the reader itself accepts the file.
        assert!(read_numpy_pickle(fixture(name)).is_ok(), "{name}");
        let reason = dataset_reason(load_pickle(&fixture(name)).unwrap_err());
        assert!(
            reason.contains("top level has another structure"),
            "{name}: {reason}"
        );
    }
}

#[test]
fn pickle_rejects_length_mismatch() {
    let reason = pickle_reason(load_pickle(&fixture("reject_length_mismatch.pkl")).unwrap_err());
    assert!(
        reason.contains("shape [3, 5] and dtype float32 needs 60 bytes"),
        "{reason}"
    );
    assert!(reason.contains("holds 10"), "{reason}");
}

#[test]
fn pickle_rejects_negative_label() {
    let reason = dataset_reason(load_pickle(&fixture("reject_negative_label.pkl")).unwrap_err());
    assert!(
        reason.contains("label -1 at index 1 of the train labels"),
        "{reason}"
    );
}

#[test]
fn pickle_rejects_float16() {
    let reason = pickle_reason(load_pickle(&fixture("reject_float16.pkl")).unwrap_err());
    assert!(reason.contains("unsupported dtype 'f2'"), "{reason}");
}

#[test]
fn pickle_rejects_truncated_file() {
    let bytes = fixture_bytes("numpy2_protocol4.pkl");
    assert!(parse_numpy_pickle(&bytes, "whole").is_ok());
    for length in [0, 1, 2, 20, bytes.len() / 2, bytes.len() - 1] {
        let reason = pickle_reason(parse_numpy_pickle(&bytes[..length], "cut").unwrap_err());
        assert!(
            reason.contains("truncated") || reason.contains("empty"),
            "length {length}: {reason}"
        );
    }
}

#[test]
fn pickle_rejects_cut_gzip_stream() {
    let bytes = fixture_bytes("python2_protocol2.pkl.gz");
    let reason =
        pickle_reason(parse_numpy_pickle(&bytes[..bytes.len() / 2], "cut.pkl.gz").unwrap_err());
    assert!(
        reason.contains("gzip stream is corrupt or cut short"),
        "{reason}"
    );
}

#[test]
fn pickle_rejects_trailing_bytes() {
    let mut bytes = fixture_bytes("numpy2_protocol2.pkl");
    bytes.extend_from_slice(b"garbage");
    let reason = pickle_reason(parse_numpy_pickle(&bytes, "extra").unwrap_err());
    assert!(
        reason.contains("7 bytes follow the STOP opcode"),
        "{reason}"
    );
}

#[test]
fn pickle_rejects_protocol_0() {
    // `pickle.dumps((1,), protocol=0)` in Python 3.
    let reason = pickle_reason(parse_numpy_pickle(b"(I1\ntp0\n.", "old").unwrap_err());
    assert!(reason.contains("not with the PROTO opcode"), "{reason}");
}

/// Replaces the train labels of a valid fixture and returns the reason
/// `splits_from_pickle` gives.
fn reason_with_train_labels(labels: NumpyArray) -> String {
    let value = read_numpy_pickle(fixture("numpy2_protocol2.pkl")).unwrap();
    let PickleValue::Tuple(mut splits) = value else {
        panic!("top level is not a tuple")
    };
    let PickleValue::Tuple(train) = &mut splits[0] else {
        panic!("train is not a tuple")
    };
    train[1] = PickleValue::Array(labels);
    dataset_reason(
        splits_from_pickle(PickleValue::Tuple(splits), Path::new("replaced labels")).unwrap_err(),
    )
}

#[test]
fn pickle_rejects_float_labels() {
    // Positive control: the fixture loads with its int64 labels.
    assert!(load_pickle(&fixture("numpy2_protocol2.pkl")).is_ok());
    let float32 = Dtype {
        kind: ElementKind::Float,
        item_size: 4,
        big_endian: false,
    };
    let labels = NumpyArray {
        dtype: float32,
        shape: vec![4],
        fortran_order: false,
        data: vec![0; 16],
    };
    let reason = reason_with_train_labels(labels);
    assert!(
        reason.contains("train labels have dtype float32; expected an integer dtype"),
        "{reason}"
    );
}

#[test]
fn pickle_rejects_two_dimensional_labels() {
    let int8 = Dtype {
        kind: ElementKind::Int,
        item_size: 1,
        big_endian: false,
    };
    let labels = NumpyArray {
        dtype: int8,
        shape: vec![4, 1],
        fortran_order: false,
        data: vec![0; 4],
    };
    let reason = reason_with_train_labels(labels);
    assert!(
        reason.contains("train labels have shape [4, 1]; expected one dimension"),
        "{reason}"
    );
}

#[test]
fn pickle_rejects_label_count_mismatch() {
    let int8 = Dtype {
        kind: ElementKind::Int,
        item_size: 1,
        big_endian: false,
    };
    let labels = NumpyArray {
        dtype: int8,
        shape: vec![3],
        fortran_order: false,
        data: vec![0; 3],
    };
    let reason = reason_with_train_labels(labels);
    assert!(
        reason.contains("there are 4 feature rows but 3 labels"),
        "{reason}"
    );
}

#[test]
fn pickle_reports_missing_file_and_directory() {
    let missing = fixture("does-not-exist.pkl");
    match read_numpy_pickle(&missing).unwrap_err() {
        Error::Io { path, source, .. } => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    let directory = fixture("");
    match read_numpy_pickle(&directory).unwrap_err() {
        Error::Io { path, source, .. } => {
            assert_eq!(path, directory);
            assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

/// Builds `PROTO 2`, then `body`, then `STOP`.
fn protocol2(body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x80, 2];
    bytes.extend_from_slice(body);
    bytes.push(b'.');
    bytes
}

#[test]
fn pickle_rejects_adversarial_inputs() {
    // Positive control: a one-element list of None.
    let list = parse_numpy_pickle(&protocol2(b"]Na"), "list").unwrap();
    assert_eq!(list, PickleValue::List(vec![PickleValue::None]));

    // Tuples of (x, x), 40 levels deep through DUP, would expand to 2^40 leaves.
    let doubling: Vec<u8> = std::iter::once(b'N')
        .chain([b'2', 0x86].repeat(40))
        .collect();
    let mut five_arguments = b"c_codecs\nencode\n".to_vec();
    five_arguments.extend_from_slice(b"(");
    five_arguments.extend_from_slice(&[b'N'; 5]);
    five_arguments.extend_from_slice(b"tR");
    let mut huge_bytes8 = vec![0x8E];
    huge_bytes8.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut long_frame = vec![0x95];
    long_frame.extend_from_slice(&1000u64.to_le_bytes());

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "list containing itself",
            protocol2(b"]q\x00h\x00a"),
            "nested more than 64 levels",
        ),
        (
            "exponential sharing",
            protocol2(&doubling),
            "shares objects so often",
        ),
        (
            "negative BINSTRING",
            protocol2(b"T\xff\xff\xff\xff"),
            "negative length -1",
        ),
        (
            "BINBYTES8 of u64::MAX",
            protocol2(&huge_bytes8),
            "the file is truncated",
        ),
        (
            "FRAME past the end",
            protocol2(&long_frame),
            "a FRAME of 1000 bytes",
        ),
        (
            "LONG1 of 9 bytes",
            protocol2(b"\x8a\x09"),
            "does not fit in 64 bits",
        ),
        (
            "REDUCE with 5 arguments",
            protocol2(&five_arguments),
            "REDUCE with 5 arguments",
        ),
        (
            "memo read before write",
            protocol2(b"h\x05"),
            "memo key 5 is read before",
        ),
        (
            "STOP on an empty stack",
            protocol2(b""),
            "STOP found with 0 objects",
        ),
        (
            "APPEND without a list",
            protocol2(b"NNa"),
            "APPEND needs a list",
        ),
        (
            "protocol 6",
            vec![0x80, 6, b'N', b'.'],
            "protocol 6 is newer than 5",
        ),
    ];
    for (name, bytes, expected) in cases {
        let reason = pickle_reason(parse_numpy_pickle(&bytes, name).unwrap_err());
        assert!(reason.contains(expected), "{name}: {reason}");
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("WGPU_LEARN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Uncompressed fixtures, valid and rejected, as seeds for mutation.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(read_seeds)
}

fn read_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for numpy in [1, 2] {
        for protocol in [2, 3, 4, 5] {
            seeds.push(fixture_bytes(&format!(
                "numpy{numpy}_protocol{protocol}_fortran.pkl"
            )));
        }
    }
    for name in [
        "python2_protocol2.pkl",
        "numpy2_big_endian.pkl",
        "reject_object_array.pkl",
        "reject_out_of_band.pkl",
    ] {
        seeds.push(fixture_bytes(name));
    }
    seeds
}

/// A mutation of a seed: overwrite, insert or remove bytes at a position.
#[derive(Clone, Debug)]
enum Mutation {
    Overwrite(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let length = bytes.len().max(1);
        match *mutation {
            Mutation::Overwrite(i, b) if !bytes.is_empty() => bytes[i % length] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % length);
            }
            Mutation::Truncate(i) => bytes.truncate(i % length),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pickle_fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_numpy_pickle(&bytes, "fuzz");
        let mut with_header = vec![0x80, 2];
        with_header.extend_from_slice(&bytes);
        let _ = parse_numpy_pickle(&with_header, "fuzz");
    }

    #[test]
    fn pickle_fuzz_mutated_fixtures(seed in 0usize..12, mutations in proptest::collection::vec(mutation(), 1..8)) {
        let seeds = seeds();
        let bytes = apply(seeds[seed % seeds.len()].clone(), &mutations);
        if let Ok(value) = parse_numpy_pickle(&bytes, "fuzz") {
            let _ = splits_from_pickle(value, Path::new("fuzz"));
        }
    }
}
