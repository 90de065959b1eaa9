//! WGSL sources of the kernels, one file per kernel in the crate's
//! `shaders/` directory.

use super::storage::FeatureStorage;

/// One kernel's source and the label its shader module and pipeline get.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelSource {
    /// File stem, used as the label.
    pub label: &'static str,
    /// WGSL source without the prelude.
    pub source: &'static str,
}

macro_rules! kernel_source {
    ($stem:literal) => {
        KernelSource {
            label: $stem,
            source: include_str!(concat!("../../shaders/", $stem, ".wgsl")),
        }
    };
    // A kernel that needs the declarations of another file first.
    ($stem:literal after $part:literal) => {
        KernelSource {
            label: $stem,
            source: concat!(
                include_str!(concat!("../../shaders/", $part, ".wgsl")),
                "\n",
                include_str!(concat!("../../shaders/", $stem, ".wgsl"))
            ),
        }
    };
}

/// Declarations that every kernel of both engines starts with: the status
/// slots, float helpers and dispatch indexing.
pub(crate) const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// Declarations that every classic kernel starts with after [`COMMON`]: the
/// `Params` struct, the bindings other than the features and the workgroup
/// size override.
pub(crate) const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");

/// The feature binding as `array<f32>` and its `load_feature` function.
pub(crate) const FEATURES_F32: &str = include_str!("../../shaders/features_f32.wgsl");
/// The feature binding as bytes packed four per `u32` and its `load_feature`
/// function.
pub(crate) const FEATURES_U8: &str = include_str!("../../shaders/features_u8.wgsl");

/// Logits of a training batch into the scratch buffer.
pub(crate) const LOGITS: KernelSource = kernel_source!("logits");
/// Logits of a training batch with each dot product split across a
/// workgroup, for hardware GPUs.
pub(crate) const LOGITS_SPLIT: KernelSource = kernel_source!("logits_split" after "split_reduce");
/// Softmax and NLL, replacing logits by their gradient.
pub(crate) const SOFTMAX_NLL: KernelSource = kernel_source!("softmax_nll");
/// Weight and bias gradients fused with the SGD update.
pub(crate) const SGD_UPDATE: KernelSource = kernel_source!("sgd_update");
/// The gradients fused with the update, with the sum over rows split
/// across a workgroup, for hardware GPUs.
pub(crate) const SGD_UPDATE_SPLIT: KernelSource =
    kernel_source!("sgd_update_split" after "split_reduce");
/// Logits, argmax and error count for evaluation.
pub(crate) const EVALUATE: KernelSource = kernel_source!("evaluate");

/// Returns the prelude, the feature binding for `storage` and the kernel,
/// as one WGSL module. [`FeatureStorage::Auto`] gets the f32 binding.
pub(crate) fn full_source(kernel: KernelSource, storage: FeatureStorage) -> String {
    let features = match storage {
        FeatureStorage::U8 => FEATURES_U8,
        FeatureStorage::F32 | FeatureStorage::Auto => FEATURES_F32,
    };
    format!("{COMMON}\n{PRELUDE}\n{features}\n{}", kernel.source)
}
