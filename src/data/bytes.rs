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
    let scaled = value * 256.0;
    if !(0.0..=255.0).contains(&scaled) {
        return None;
    }
    let byte = scaled as u8;
    (crate::data::mnist::pixel_to_f32(byte).to_bits() == value.to_bits()).then_some(byte)
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
