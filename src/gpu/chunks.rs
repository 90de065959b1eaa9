//! Splitting a dataset into GPU buffers of whole rows.
//!
//! One storage binding may hold at most `max_storage_buffer_binding_size`
//! bytes (128 MiB in wgpu's defaults and on lavapipe), less than MNIST's
//! 50000 x 784 training matrix in f32 storage (the u8 storage of
//! [`FeatureStorage`](super::FeatureStorage) needs a quarter of that). Each split is therefore stored as several
//! chunks of whole rows. Training chunks contain a multiple of the batch
//! size, so a batch that starts at a multiple of the batch size never
//! straddles two chunks. Evaluation splits a range over chunks freely.

use std::ops::Range;

use crate::error::{Error, Result};

/// Byte limit of one chunk and where it came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChunkLimit {
    /// Largest chunk in bytes, a multiple of 4.
    pub bytes: u64,
    /// The limits that set `bytes`, for example
    /// `max_storage_buffer_binding_size 134217728, max_buffer_size 268435456`.
    pub source: String,
}

impl ChunkLimit {
    /// Computes the smallest of the device's binding and buffer limits, of
    /// `u32::MAX` (kernels index elements with u32) and of an optional test limit.
    pub fn new(limits: &wgpu::Limits, max_chunk_bytes: Option<u64>) -> Self {
        let mut bytes = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        let mut source = format!(
            "max_storage_buffer_binding_size {}, max_buffer_size {}",
            limits.max_storage_buffer_binding_size, limits.max_buffer_size
        );
        if let Some(test_limit) = max_chunk_bytes {
            bytes = bytes.min(test_limit);
            source.push_str(&format!(", max_chunk_bytes {test_limit}"));
        }
        ChunkLimit {
            bytes: bytes / 4 * 4,
            source,
        }
    }
}

/// Splits `rows` rows of `row_bytes` bytes into chunks within `limit`.
/// Every chunk but the last contains a multiple of `rows_multiple` rows.
///
/// # Errors
/// [`Error::Gpu`] naming the limit if `rows_multiple` rows do not fit one
/// chunk; `what` names the rows in that message, for example "a training
/// batch".
pub(crate) fn plan_chunks(
    rows: usize,
    row_bytes: u64,
    rows_multiple: usize,
    limit: &ChunkLimit,
    what: &str,
) -> Result<Vec<Range<usize>>> {
    let rows_that_fit = (limit.bytes / row_bytes) as usize;
    if rows_that_fit < rows_multiple.max(1) {
        return Err(Error::Gpu {
            reason: format!(
                "{what} of {rows_multiple} rows x {row_bytes} bytes needs {} bytes, more than one \
                 storage binding can hold ({} bytes, from {}); at most {rows_that_fit} rows fit, \
                 so use a smaller batch size",
                rows_multiple as u64 * row_bytes,
                limit.bytes,
                limit.source
            ),
        });
    }
    let rows_per_chunk = rows_that_fit / rows_multiple.max(1) * rows_multiple.max(1);
    Ok((0..rows)
        .step_by(rows_per_chunk)
        .map(|start| start..(start + rows_per_chunk).min(rows))
        .collect())
}

/// Splits rows `range` at chunk boundaries; returns `(chunk index, rows
/// within that chunk)` pairs in order. `chunks` must be contiguous and start
/// at row 0.
pub(crate) fn pieces(chunks: &[Range<usize>], range: Range<usize>) -> Vec<(usize, Range<usize>)> {
    let first = chunks.partition_point(|chunk| chunk.end <= range.start);
    chunks[first..]
        .iter()
        .enumerate()
        .take_while(|(_, chunk)| chunk.start < range.end)
        .map(|(offset, chunk)| {
            let start = range.start.max(chunk.start) - chunk.start;
            let end = range.end.min(chunk.end) - chunk.start;
            (first + offset, start..end)
        })
        .filter(|(_, local)| !local.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: u64) -> ChunkLimit {
        ChunkLimit {
            bytes,
            source: "test".to_string(),
        }
    }

    #[test]
    fn mnist_train_chunks_hold_whole_batches() {
        // lavapipe's 128 MiB binding limit and MNIST's 784 features.
        let chunks =
            plan_chunks(50_000, 784 * 4, 600, &limit(128 << 20), "a training batch").unwrap();
        assert_eq!(chunks, vec![0..42_600, 42_600..50_000]);
    }

    #[test]
    fn chunks_cover_every_row_once() {
        let chunks = plan_chunks(1001, 12, 1, &limit(120), "a row").unwrap();
        assert_eq!(chunks.len(), 101);
        assert_eq!(chunks[0], 0..10);
        assert_eq!(chunks[100], 1000..1001);
        assert!(chunks.windows(2).all(|pair| pair[0].end == pair[1].start));
    }

    #[test]
    fn empty_split_has_no_chunks() {
        assert!(plan_chunks(0, 8, 4, &limit(64), "a row")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn batch_over_limit_names_limit() {
        let error = plan_chunks(100, 400, 10, &limit(3000), "a training batch").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("a training batch of 10 rows"), "{message}");
        assert!(message.contains("3000 bytes, from test"), "{message}");
        assert!(message.contains("at most 7 rows fit"), "{message}");
    }

    #[test]
    fn pieces_split_range_at_chunk_ends() {
        let chunks = vec![0..4, 4..8, 8..10];
        assert_eq!(pieces(&chunks, 2..9), vec![(0, 2..4), (1, 0..4), (2, 0..1)]);
        assert_eq!(pieces(&chunks, 4..8), vec![(1, 0..4)]);
        assert_eq!(pieces(&chunks, 9..10), vec![(2, 1..2)]);
        assert!(pieces(&chunks, 5..5).is_empty());
    }

    #[test]
    fn chunk_limit_takes_smallest() {
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: 1000,
            max_buffer_size: 5000,
            ..wgpu::Limits::default()
        };
        assert_eq!(ChunkLimit::new(&limits, None).bytes, 1000);
        assert_eq!(ChunkLimit::new(&limits, Some(402)).bytes, 400);
    }
}
