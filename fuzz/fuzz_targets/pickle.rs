//! Feeds arbitrary bytes to the pickle reader and the MNIST pickle loader.
//! libFuzzer reports any panic as a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wgpu_learn::data::mnist::splits_from_pickle;
use wgpu_learn::data::pickle::parse_numpy_pickle;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    if let Ok(value) = parse_numpy_pickle(data, path) {
        let _ = splits_from_pickle(value, path);
    }
});
