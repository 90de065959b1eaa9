//! Tests of the IDX reader on files built in the tests, raw and gzip.

use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;
use std::io::Write;
use std::path::Path;
use wgpu_learn::data::idx::{parse_idx, read_idx, read_images, read_labels, IdxArray};
use wgpu_learn::Error;

/// Builds an IDX file of unsigned bytes with `dims` and `data`.
fn idx_bytes(type_byte: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, type_byte, dims.len() as u8];
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

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn idx_reason(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Idx { reason, .. }) => reason,
        other => panic!("expected Error::Idx, got {other:?}"),
    }
}

#[test]
fn idx_reads_images_raw_and_gzip() {
    let data: Vec<u8> = (0..2 * 3 * 5).map(|v| v as u8 * 7).collect();
    let raw = idx_bytes(0x08, &[2, 3, 5], &data);
    let dir = tempfile::tempdir().unwrap();
    // The content, not the file name, decides whether a file is gzip.
    for (name, bytes) in [("plain.gz", raw.clone()), ("compressed", gzip(&raw))] {
        let images = read_images(write_file(dir.path(), name, &bytes)).unwrap();
        assert_eq!(images.count, 2, "{name}");
        assert_eq!(images.sample_shape, vec![3, 5], "{name}");
        assert_eq!(images.bytes, data, "{name}");
    }
}

#[test]
fn idx_reads_labels_raw_and_gzip() {
    let raw = idx_bytes(0x08, &[4], &[5, 0, 4, 1]);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("labels", raw.clone()), ("labels.gz", gzip(&raw))] {
        let labels = read_labels(write_file(dir.path(), name, &bytes)).unwrap();
        assert_eq!(labels, vec![5, 0, 4, 1], "{name}");
    }
}

#[test]
fn idx_reads_odd_shapes() {
    for dims in [vec![1u32, 1], vec![3, 7], vec![2, 1, 3, 2], vec![0, 28, 28]] {
        let len: u32 = dims.iter().product();
        let data: Vec<u8> = (0..len).map(|v| v as u8).collect();
        let array = parse_idx(&idx_bytes(0x08, &dims, &data), "odd").unwrap();
        let expected: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        assert_eq!(
            array,
            IdxArray {
                dims: expected,
                data: data.clone()
            }
        );
        let images = array.into_images(Path::new("odd")).unwrap();
        assert_eq!(images.count, dims[0] as usize);
        assert_eq!(images.bytes, data);
    }
}

#[test]
fn idx_rejects_empty_file() {
    let reason = idx_reason(parse_idx(&[], "empty"));
    assert!(reason.contains("the file is empty"), "{reason}");
}

#[test]
fn idx_rejects_file_shorter_than_header() {
    let full = idx_bytes(0x08, &[2, 3, 5], &[0; 30]);
    assert!(parse_idx(&full, "full").is_ok());
    for length in [1, 3, 4, 8, 15] {
        let reason = idx_reason(parse_idx(&full[..length], "short"));
        assert!(
            reason.contains("ends inside its header"),
            "length {length}: {reason}"
        );
    }
    let reason = idx_reason(parse_idx(&gzip(&full[..6]), "short.gz"));
    assert!(reason.contains("ends inside its header"), "{reason}");
}

#[test]
fn idx_rejects_truncated_data_without_allocating() {
    // 60000 images of 28x28 promise 47 MB, but only 10 bytes follow.
    let bytes = idx_bytes(0x08, &[60000, 28, 28], &[0; 10]);
    let reason = idx_reason(parse_idx(&bytes, "short"));
    assert!(reason.contains("promises 47040000 data bytes"), "{reason}");
    assert!(reason.contains("only 10 follow"), "{reason}");
    let reason = idx_reason(parse_idx(&gzip(&bytes), "short.gz"));
    assert!(reason.contains("only 10 follow"), "{reason}");

    // Dimensions whose product overflows 64 bits fail before any reading.
    let huge = idx_bytes(0x08, &[u32::MAX, u32::MAX, u32::MAX], &[0; 10]);
    let reason = idx_reason(parse_idx(&huge, "huge"));
    assert!(reason.contains("more bytes than fit in memory"), "{reason}");
    let huge = idx_bytes(0x08, &[u32::MAX, u32::MAX], &[0; 10]);
    let reason = idx_reason(parse_idx(&gzip(&huge), "huge.gz"));
    assert!(reason.contains("only 10 follow"), "{reason}");
}

#[test]
fn idx_rejects_trailing_bytes() {
    let exact = idx_bytes(0x08, &[2, 2], &[1, 2, 3, 4]);
    assert!(parse_idx(&exact, "exact").is_ok());
    let longer = idx_bytes(0x08, &[2, 2], &[1, 2, 3, 4, 5]);
    for (name, bytes) in [("raw", longer.clone()), ("gzip", gzip(&longer))] {
        let reason = idx_reason(parse_idx(&bytes, name));
        assert!(reason.contains("but more follow"), "{name}: {reason}");
    }
}

#[test]
fn idx_rejects_cut_gzip_stream() {
    let raw = idx_bytes(
        0x08,
        &[100, 10],
        &(0..1000).map(|v| (v * 31 % 251) as u8).collect::<Vec<_>>(),
    );
    let compressed = gzip(&raw);
    assert!(parse_idx(&compressed, "whole.gz").is_ok());
    let error = parse_idx(&compressed[..compressed.len() / 2], "cut.gz").unwrap_err();
    assert!(error.to_string().contains("`cut.gz`"), "{error}");
    let reason = idx_reason(Err::<(), _>(error));
    assert!(
        reason.contains("gzip stream is corrupt or cut short"),
        "{reason}"
    );

    // Bytes after the gzip stream are neither a gzip member nor ignored.
    let mut extra = compressed.clone();
    extra.extend_from_slice(b"junk");
    let reason = idx_reason(parse_idx(&extra, "extra.gz"));
    assert!(reason.contains("gzip stream is corrupt"), "{reason}");
}

#[test]
fn idx_rejects_unsupported_types() {
    for (type_byte, name) in [
        (0x0D, "0x0D (32-bit float)"),
        (0x0C, "0x0C (32-bit integer)"),
        (0x09, "0x09 (signed byte)"),
    ] {
        let bytes = idx_bytes(type_byte, &[2], &[0; 8]);
        let reason = idx_reason(parse_idx(&bytes, "typed"));
        assert!(
            reason.contains(&format!("unsupported IDX type {name}")),
            "{reason}"
        );
    }
    let reason = idx_reason(parse_idx(&idx_bytes(0x42, &[2], &[0; 2]), "unknown"));
    assert!(reason.contains("unknown IDX type 0x42"), "{reason}");
}

#[test]
fn idx_rejects_bad_magic_and_zero_dimensions() {
    let reason = idx_reason(parse_idx(b"P5\n28 28\n255\n", "image.pgm"));
    assert!(reason.contains("starts with bytes 50 35"), "{reason}");
    let reason = idx_reason(parse_idx(&[0, 0, 8, 0], "no dims"));
    assert!(reason.contains("declares 0 dimensions"), "{reason}");
}

#[test]
fn idx_rejects_labels_passed_as_images_and_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let images = write_file(dir.path(), "images", &idx_bytes(0x08, &[2, 2, 2], &[0; 8]));
    let labels = write_file(dir.path(), "labels", &idx_bytes(0x08, &[2], &[0, 1]));
    assert!(read_images(&images).is_ok());
    assert!(read_labels(&labels).is_ok());

    let reason = idx_reason(read_labels(&images));
    assert!(
        reason.contains("this looks like an images file (3 dimensions); pass it as images"),
        "{reason}"
    );
    let reason = idx_reason(read_images(&labels));
    assert!(
        reason.contains("this looks like a labels file (1 dimension); pass it as labels"),
        "{reason}"
    );
}

#[test]
fn idx_rejects_zero_image_dimension() {
    let reason = idx_reason(
        parse_idx(&idx_bytes(0x08, &[3, 0, 5], &[]), "flat")
            .and_then(|a| a.into_images(Path::new("flat"))),
    );
    assert!(
        reason.contains("image shape [0, 5] has a zero dimension"),
        "{reason}"
    );
}

#[test]
fn idx_reports_missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("train-images-idx3-ubyte");
    match read_idx(&missing).unwrap_err() {
        Error::Io { path, source, .. } => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    match read_images(dir.path()).unwrap_err() {
        Error::Io { path, source, .. } => {
            assert_eq!(path, dir.path());
            assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

/// Inputs that once broke the reader; each must return an error.
#[test]
fn idx_rejects_regression_inputs() {
    // Dimensions whose product is exactly u64::MAX once overflowed the
    // gzip read limit of promised + 1 bytes.
    let max_product = idx_bytes(0x08, &[u32::MAX, 641, 6_700_417], &[0; 10]);
    let reason = idx_reason(parse_idx(&gzip(&max_product), "max.gz"));
    assert!(
        reason.contains("only 10 follow") || reason.contains("more bytes than fit"),
        "{reason}"
    );
    let reason = idx_reason(parse_idx(&max_product, "max"));
    assert!(
        reason.contains("only 10 follow") || reason.contains("more bytes than fit"),
        "{reason}"
    );
}

fn fuzz_cases() -> u32 {
    std::env::var("WGPU_LEARN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn seed(index: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..60).map(|v| v as u8).collect();
    match index % 4 {
        0 => idx_bytes(0x08, &[3, 4, 5], &data),
        1 => idx_bytes(0x08, &[60], &data),
        2 => gzip(&idx_bytes(0x08, &[3, 20], &data)),
        _ => gzip(&idx_bytes(0x08, &[60], &data)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn idx_fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_idx(&bytes, "fuzz");
        let mut with_header = vec![0, 0, 8, bytes.first().copied().unwrap_or(1) % 4];
        with_header.extend_from_slice(&bytes);
        let _ = parse_idx(&with_header, "fuzz");
    }

    #[test]
    fn idx_fuzz_mutated_files(
        index in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = seed(index);
        for (position, value) in edits {
            let length = bytes.len();
            bytes[position % length] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        if let Ok(array) = parse_idx(&bytes, "fuzz") {
            let expected: usize = array.dims.iter().product();
            prop_assert_eq!(array.data.len(), expected);
        }
    }
}
