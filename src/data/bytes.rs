//! Features that are bytes in disguise.
//!
//! Image data such as MNIST stores each feature as `byte / 256`, which f32
//! represents exactly. Both paths keep such data as one byte per feature and
//! convert each byte back to the same f32 as they read it, which cuts the
//! memory traffic by four and gives bit-identical results.

use rayon::prelude::*;

use super::{Split, Splits};

/// Returns the byte `b` with `b / 256 == value`, bit for bit, or `None` when
/// no byte gives `value` (this includes -0.0, NaN and values off the grid).
pub fn feature_byte(value: f32) -> Option<u8> {
    let (byte, exact) = nearest_byte(value);
    exact.then_some(byte)
}

/// Returns `value * 256` cast to a byte (saturating, NaN to 0) and whether
/// that byte converts back to `value` bit for bit. It has no branch, so
/// loops over many values vectorise.
#[inline(always)]
fn nearest_byte(value: f32) -> (u8, bool) {
    let byte = (value * 256.0) as u8;
    let exact = crate::data::mnist::pixel_to_f32(byte).to_bits() == value.to_bits();
    (byte, exact)
}

/// Writes the byte of each of `values` to `bytes` and returns whether all
/// of them have one (see [`feature_byte`]). The bytes written for values
/// without one are unspecified.
///
/// # Panics
/// If the slices differ in length.
pub fn features_to_bytes(values: &[f32], bytes: &mut [u8]) -> bool {
    assert_eq!(values.len(), bytes.len(), "one byte per value");
    let mut all_exact = true;
    for (byte, &value) in bytes.iter_mut().zip(values) {
        let (nearest, exact) = nearest_byte(value);
        *byte = nearest;
        all_exact &= exact;
    }
    all_exact
}

/// A feature that has no byte form: the split, row, column and value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonByteFeature {
    /// The split containing the value.
    pub split: Split,
    /// Its row.
    pub row: usize,
    /// Its column.
    pub column: usize,
    /// The value itself.
    pub value: f32,
}

/// Finds the first feature, in split order train, validation, test and
/// then row-major order, that is not `b / 256` for a byte `b`. Scans in
/// parallel with rayon.
pub fn first_non_byte_feature(splits: &Splits) -> Option<NonByteFeature> {
    let features = splits.n_features().max(1);
    [Split::Train, Split::Validation, Split::Test]
        .into_iter()
        .find_map(|split| {
            let values = splits.get(split).features();
            let index = values
                .par_iter()
                .position_first(|&value| feature_byte(value).is_none())?;
            Some(NonByteFeature {
                split,
                row: index / features,
                column: index % features,
                value: values[index],
            })
        })
}

/// Features of the three splits as bytes, one vector per split.
pub struct SplitBytes([Vec<u8>; 3]);

impl SplitBytes {
    /// Converts every feature of `splits` to its byte, in parallel with
    /// rayon. Returns `None` if some feature has no byte form, and then
    /// stops converting early.
    pub fn convert(splits: &Splits) -> Option<Self> {
        let convert = |split: Split| -> Option<Vec<u8>> {
            splits
                .get(split)
                .features()
                .par_iter()
                .map(|&value| feature_byte(value))
                .collect()
        };
        Some(SplitBytes([
            convert(Split::Train)?,
            convert(Split::Validation)?,
            convert(Split::Test)?,
        ]))
    }

    /// Returns the bytes of `split`, row-major like its f32 features.
    pub fn get(&self, split: Split) -> &[u8] {
        match split {
            Split::Train => &self.0[0],
            Split::Validation => &self.0[1],
            Split::Test => &self.0[2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mnist::pixel_to_f32;

    #[test]
    fn every_byte_round_trips() {
        for byte in 0..=255u8 {
            assert_eq!(feature_byte(pixel_to_f32(byte)), Some(byte));
        }
    }

    #[test]
    fn values_off_the_byte_grid_have_no_byte() {
        for value in [
            -0.0,
            1.0,
            255.5 / 256.0,
            0.5 / 256.0,
            -1.0 / 256.0,
            300.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            assert_eq!(feature_byte(value), None, "{value}");
        }
    }

    #[test]
    fn features_to_bytes_flags_off_grid_value() {
        let values: Vec<f32> = (0..=255u8).map(pixel_to_f32).collect();
        let mut bytes = vec![0u8; values.len()];
        assert!(features_to_bytes(&values, &mut bytes));
        assert!(bytes.iter().copied().eq(0..=255u8));

        let mut off = values.clone();
        off[200] = 0.3;
        assert!(!features_to_bytes(&off, &mut bytes));
    }
}
