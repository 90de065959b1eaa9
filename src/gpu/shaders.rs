//! WGSL sources of the kernels, one file per kernel in the crate's
//! `shaders/` directory.

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
}

/// Declarations that every kernel starts with: the `Params` struct, the
/// bindings, the workgroup size override and float helpers.
pub(crate) const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");

/// Logits of a training batch into the scratch buffer.
pub(crate) const LOGITS: KernelSource = kernel_source!("logits");
/// Softmax and NLL, replacing logits by their gradient.
pub(crate) const SOFTMAX_NLL: KernelSource = kernel_source!("softmax_nll");
/// Weight and bias gradients fused with the SGD update.
pub(crate) const SGD_UPDATE: KernelSource = kernel_source!("sgd_update");
/// Logits, argmax and error count for evaluation.
pub(crate) const EVALUATE: KernelSource = kernel_source!("evaluate");

/// Returns the prelude followed by the kernel, as one WGSL module.
pub(crate) fn full_source(kernel: KernelSource) -> String {
    format!("{PRELUDE}\n{}", kernel.source)
}
