// Feature storage as bytes, four per u32 word: byte j (little-endian) of
// word w is element 4w + j, and element value b stands for the feature
// b / 256. The host uses this storage only when every feature equals
// b / 256 for a byte b, so loads return the same f32 as features_f32.wgsl.

@group(0) @binding(1) var<storage, read> features: array<u32>;

// Returns feature element `index` of the bound chunk (row * d + column).
fn load_feature(index: u32) -> f32 {
    let word = features[index >> 2u];
    let byte = (word >> (8u * (index & 3u))) & 0xffu;
    // Both the conversion and the power-of-two scale are exact in f32.
    return f32(byte) * (1.0 / 256.0);
}
