//! Helpers shared by the GPU tests: the policy for machines without an
//! adapter, seeded random data and float comparison.

#![allow(dead_code)]

use wgpu_learn::Error;

/// Returns the value, or `None` when no GPU adapter exists and the test
/// should be skipped.
///
/// With the environment variable `CI=true` a missing adapter fails the test
/// instead, so a CI machine without a driver cannot pass by skipping. Any
/// other error fails the test.
pub fn gpu_or_skip<T>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Error::NoAdapter { reason }) => {
            if std::env::var("CI").is_ok_and(|value| value == "true") {
                panic!("CI=true and no GPU adapter: {reason}");
            }
            eprintln!("skipping GPU test: {reason}");
            None
        }
        Err(error) => panic!("GPU setup failed: {error}"),
    }
}

/// A SplitMix64 generator, so test data depends only on the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// Uniform in `0..bound`.
    pub fn below(&mut self, bound: u32) -> u32 {
        (self.next_u64() % bound as u64) as u32
    }

    pub fn vec(&mut self, len: usize, low: f32, high: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(low, high)).collect()
    }

    pub fn labels(&mut self, len: usize, classes: usize) -> Vec<u32> {
        (0..len).map(|_| self.below(classes as u32)).collect()
    }
}

/// Panics unless every `actual[i]` is within `absolute + relative *
/// |expected[i]|` of `expected[i]`; NaN matches only NaN. The message lists
/// the first mismatches with their indices.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], relative: f32, absolute: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mismatches: Vec<String> = actual
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (&a, &e))| {
            if a.is_nan() || e.is_nan() {
                !(a.is_nan() && e.is_nan())
            } else if a.is_infinite() || e.is_infinite() {
                a != e
            } else {
                (a - e).abs() > absolute + relative * e.abs()
            }
        })
        .map(|(index, (a, e))| format!("[{index}] gpu {a} vs cpu {e}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {} values differ beyond {absolute} + {relative} * |cpu|; first: {}",
        mismatches.len(),
        actual.len(),
        mismatches
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
}
