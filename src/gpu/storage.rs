//! Storage of feature values on the GPU.
//!
//! Image data such as MNIST stores each feature as `byte / 256`, which f32
//! represents exactly. Such data goes to the GPU as one byte per feature, packed
//! four per `u32` word in little-endian order (byte j of word w is element
//! 4w + j), and `shaders/features_u8.wgsl` converts each byte back to the
//! same f32. This uses a quarter of the memory and bandwidth of f32 storage
//! and gives bit-identical results.

use crate::data::bytes::{first_non_byte_feature, SplitBytes};
use crate::data::Splits;
use crate::error::{Error, Result};

/// Storage of the features on the GPU, a setting of
/// [`GpuOptions`](super::GpuOptions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeatureStorage {
    /// [`FeatureStorage::U8`] when every feature of the three splits is
    /// byte-exact, [`FeatureStorage::F32`] otherwise.
    #[default]
    Auto,
    /// Four bytes per feature; works for any data.
    F32,
    /// One byte per feature; only for data where every feature is `b / 256`
    /// for a byte `b`, as [`pixel_to_f32`](crate::data::mnist::pixel_to_f32)
    /// produces.
    U8,
}

impl FeatureStorage {
    /// Bytes that `elements` features occupy on the GPU: 4 each for f32, and
    /// for u8 one each rounded up to a whole `u32` word.
    /// [`FeatureStorage::Auto`] counts as f32.
    pub fn buffer_bytes(self, elements: usize) -> u64 {
        match self {
            FeatureStorage::U8 => (elements as u64).next_multiple_of(4),
            FeatureStorage::F32 | FeatureStorage::Auto => elements as u64 * 4,
        }
    }

    /// Bytes of one row of `features` values, for chunk planning.
    pub(crate) fn row_bytes(self, features: usize) -> u64 {
        match self {
            FeatureStorage::U8 => features as u64,
            FeatureStorage::F32 | FeatureStorage::Auto => features as u64 * 4,
        }
    }

    /// Returns the storage name used in descriptions: `f32`, `u8` or `auto`.
    pub fn name(self) -> &'static str {
        match self {
            FeatureStorage::Auto => "auto",
            FeatureStorage::F32 => "f32",
            FeatureStorage::U8 => "u8",
        }
    }
}

/// Chooses the storage for `requested`, checking that the data allows it.
/// Returns the features as bytes for u8 storage and `None` for f32 storage.
///
/// # Errors
/// [`Error::InvalidConfig`] when `requested` is [`FeatureStorage::U8`] and
/// some feature is not `b / 256` for a byte `b`. The message names the
/// first such value with its split, row and column.
pub(crate) fn resolve(requested: FeatureStorage, splits: &Splits) -> Result<Option<SplitBytes>> {
    match requested {
        FeatureStorage::F32 => Ok(None),
        FeatureStorage::Auto => Ok(SplitBytes::convert(splits)),
        FeatureStorage::U8 => match SplitBytes::convert(splits) {
            Some(bytes) => Ok(Some(bytes)),
            None => {
                let found = first_non_byte_feature(splits)
                    .expect("the conversion found a feature without a byte form");
                Err(Error::InvalidConfig {
                    name: "feature-storage",
                    value: "u8".to_string(),
                    expected: format!(
                        "every feature must be b / 256 for an integer b in 0..=255, but the {} split has \
                         {:?} at row {}, column {}; use f32 or auto storage for this data",
                        found.split, found.value, found.row, found.column
                    ),
                })
            }
        },
    }
}

/// Copies `bytes` into a buffer padded with zeros to a multiple of 4, so
/// that byte j of little-endian word w is element 4w + j.
pub(crate) fn pad_to_words(bytes: &[u8]) -> Vec<u8> {
    let mut padded = Vec::with_capacity(bytes.len().next_multiple_of(4));
    padded.extend_from_slice(bytes);
    padded.resize(bytes.len().next_multiple_of(4), 0);
    padded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::bytes::{feature_byte, NonByteFeature};
    use crate::data::Split;

    #[test]
    fn every_byte_round_trips() {
        for byte in 0..=255u8 {
            assert_eq!(feature_byte(f32::from(byte) / 256.0), Some(byte));
        }
    }

    #[test]
    fn off_grid_values_have_no_byte() {
        for value in [
            -0.0,
            -1.0 / 256.0,
            1.0,
            0.5 / 256.0,
            0.3,
            f32::NAN,
            f32::INFINITY,
            256.0,
        ] {
            assert_eq!(feature_byte(value), None, "{value:?}");
        }
    }

    #[test]
    fn conversion_finds_other_data() {
        let byte_values = vec![0.0, 1.0 / 256.0, 255.0 / 256.0];
        let mut other_values = byte_values.clone();
        other_values[1] = 0.3;
        let dataset =
            |values: Vec<f32>| crate::Dataset::new("d", values, vec![0], vec![3], 2).unwrap();
        let byte_splits = Splits::new(
            dataset(byte_values.clone()),
            dataset(byte_values.clone()),
            dataset(byte_values.clone()),
        )
        .unwrap();
        let other_splits = Splits::new(
            dataset(byte_values.clone()),
            dataset(byte_values),
            dataset(other_values),
        )
        .unwrap();

        let bytes = SplitBytes::convert(&byte_splits).unwrap();
        assert_eq!(bytes.get(Split::Test), [0, 1, 255]);
        assert!(SplitBytes::convert(&other_splits).is_none());
        let found = first_non_byte_feature(&other_splits).unwrap();
        assert_eq!(
            found,
            NonByteFeature {
                split: Split::Test,
                row: 0,
                column: 1,
                value: 0.3
            }
        );
    }

    #[test]
    fn packing_pads_to_whole_words() {
        assert_eq!(pad_to_words(&[1, 2, 3, 4, 5]), vec![1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(pad_to_words(&[1, 2, 3, 4]), vec![1, 2, 3, 4]);
        assert_eq!(FeatureStorage::U8.buffer_bytes(5), 8);
        assert_eq!(FeatureStorage::F32.buffer_bytes(5), 20);
    }
}
