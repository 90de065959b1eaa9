// Feature storage as one f32 per element.

@group(0) @binding(1) var<storage, read> features: array<f32>;

// Returns feature element `index` of the bound chunk (row * d + column).
fn load_feature(index: u32) -> f32 {
    return features[index];
}
