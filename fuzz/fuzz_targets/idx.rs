//! Feeds arbitrary bytes to the IDX reader. libFuzzer reports any panic or
//! broken length invariant as a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wgpu_learn::data::idx::parse_idx;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    if let Ok(array) = parse_idx(data, path) {
        assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
        let _ = array.clone().into_images(path);
        let _ = array.into_labels(path);
    }
});
