//! Listing and choosing GPU adapters.
//!
//! Adapters are enumerated on every backend compiled in (Vulkan, Metal and
//! DX12). Hardware GPUs (discrete or integrated) rank above software ones
//! such as Mesa's lavapipe, which reports itself as a `Cpu` device named
//! `llvmpipe`.

use crate::error::{Error, Result};

/// Name, backend, type and the limits that matter for training of one adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterInfoSummary {
    /// Adapter name, for example `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Graphics API, for example `Vulkan`.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub device_type: wgpu::DeviceType,
    /// Largest storage buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Maximum workgroups in one dimension of a dispatch.
    pub max_compute_workgroups_per_dimension: u32,
    /// Maximum invocations in one workgroup.
    pub max_compute_invocations_per_workgroup: u32,
}

impl AdapterInfoSummary {
    pub(crate) fn from_adapter(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterInfoSummary {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        }
    }

    /// Returns whether this is a hardware GPU, that is a discrete or integrated one.
    pub fn is_hardware(&self) -> bool {
        matches!(
            self.device_type,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
        )
    }
}

impl std::fmt::Display for AdapterInfoSummary {
    /// Formats as `name (backend, type)`, for example
    /// `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?})",
            self.name, self.backend, self.device_type
        )
    }
}

/// Kinds of adapter that may be chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdapterPreference {
    /// Only discrete or integrated GPUs. The CLI's `--backend auto` uses this
    /// and falls back to the CPU path on [`Error::NoAdapter`].
    HardwareOnly,
    /// Any adapter, software ones such as lavapipe included, with hardware
    /// GPUs ranked first. The CLI's `--backend gpu` uses this.
    #[default]
    PreferHardware,
}

/// A request for an adapter: the kinds allowed and an optional name filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterRequest {
    /// Kinds of adapter that may be chosen.
    pub preference: AdapterPreference,
    /// If set, only adapters whose name contains this text, compared without
    /// regard to case, may be chosen.
    pub name_contains: Option<String>,
}

impl AdapterRequest {
    /// Creates a request for any adapter, hardware GPUs first.
    pub fn any() -> Self {
        AdapterRequest::default()
    }

    /// Creates a request for a discrete or integrated GPU only.
    pub fn hardware_only() -> Self {
        AdapterRequest {
            preference: AdapterPreference::HardwareOnly,
            name_contains: None,
        }
    }

    /// Sets the name filter.
    pub fn with_name_contains(mut self, text: impl Into<String>) -> Self {
        self.name_contains = Some(text.into());
        self
    }

    fn accepts(&self, summary: &AdapterInfoSummary) -> bool {
        let kind_ok = match self.preference {
            AdapterPreference::HardwareOnly => summary.is_hardware(),
            AdapterPreference::PreferHardware => true,
        };
        let name_ok = self
            .name_contains
            .as_ref()
            .is_none_or(|text| summary.name.to_lowercase().contains(&text.to_lowercase()));
        kind_ok && name_ok
    }
}

/// Rank of a device type; lower ranks are chosen first.
fn device_type_rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

pub(crate) fn new_instance() -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
    descriptor.backends = wgpu::Backends::all();
    wgpu::Instance::new(descriptor)
}

fn enumerate(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Lists every adapter that wgpu finds, in enumeration order.
pub fn list_adapters() -> Vec<AdapterInfoSummary> {
    enumerate(&new_instance())
        .iter()
        .map(AdapterInfoSummary::from_adapter)
        .collect()
}

/// Returns the adapter that [`GpuBackend::new`](super::GpuBackend::new)
/// would choose for `request`, without creating a device.
///
/// # Errors
/// [`Error::NoAdapter`] if no adapter matches; the message lists the
/// adapters found and how to install a driver.
pub fn find_adapter(request: &AdapterRequest) -> Result<AdapterInfoSummary> {
    let instance = new_instance();
    select_adapter(&instance, request).map(|adapter| AdapterInfoSummary::from_adapter(&adapter))
}

/// Chooses the best-ranked adapter that `request` accepts; ties keep the
/// enumeration order.
pub(crate) fn select_adapter(
    instance: &wgpu::Instance,
    request: &AdapterRequest,
) -> Result<wgpu::Adapter> {
    let adapters = enumerate(instance);
    let summaries: Vec<AdapterInfoSummary> = adapters
        .iter()
        .map(AdapterInfoSummary::from_adapter)
        .collect();
    let chosen = summaries
        .iter()
        .enumerate()
        .filter(|(_, summary)| request.accepts(summary))
        .min_by_key(|(index, summary)| (device_type_rank(summary.device_type), *index))
        .map(|(index, _)| index);
    match chosen {
        Some(index) => Ok(adapters
            .into_iter()
            .nth(index)
            .expect("index comes from this list")),
        None => Err(no_adapter_error(request, &summaries)),
    }
}

fn no_adapter_error(request: &AdapterRequest, found: &[AdapterInfoSummary]) -> Error {
    let wanted = match request.preference {
        AdapterPreference::HardwareOnly => "no hardware GPU (discrete or integrated) found",
        AdapterPreference::PreferHardware => "no GPU adapter found",
    };
    let filter = request
        .name_contains
        .as_ref()
        .map(|text| format!(" whose name contains `{text}`"))
        .unwrap_or_default();
    let listed = if found.is_empty() {
        "none".to_string()
    } else {
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    Error::NoAdapter {
        reason: format!(
            "{wanted}{filter}; adapters found: {listed}. Install your GPU's Vulkan, Metal or DX12 \
             driver, or for a software Vulkan device install Mesa's lavapipe \
             (`apt-get install mesa-vulkan-drivers` on Debian or Ubuntu), or use the CPU backend"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, device_type: wgpu::DeviceType) -> AdapterInfoSummary {
        AdapterInfoSummary {
            name: name.to_string(),
            backend: wgpu::Backend::Vulkan,
            device_type,
            max_storage_buffer_binding_size: 1 << 27,
            max_buffer_size: 1 << 28,
            max_compute_workgroups_per_dimension: 65535,
            max_compute_invocations_per_workgroup: 256,
        }
    }

    #[test]
    fn hardware_only_rejects_lavapipe() {
        let lavapipe = summary("llvmpipe (LLVM 15.0.6, 256 bits)", wgpu::DeviceType::Cpu);
        assert!(!AdapterRequest::hardware_only().accepts(&lavapipe));
        assert!(AdapterRequest::any().accepts(&lavapipe));
    }

    #[test]
    fn name_filter_ignores_case() {
        let gpu = summary("NVIDIA GeForce RTX 3060", wgpu::DeviceType::DiscreteGpu);
        assert!(AdapterRequest::any()
            .with_name_contains("rtx")
            .accepts(&gpu));
        assert!(!AdapterRequest::any()
            .with_name_contains("radeon")
            .accepts(&gpu));
    }

    #[test]
    fn hardware_ranks_before_software() {
        assert!(
            device_type_rank(wgpu::DeviceType::IntegratedGpu)
                < device_type_rank(wgpu::DeviceType::Cpu)
        );
        assert!(
            device_type_rank(wgpu::DeviceType::DiscreteGpu)
                < device_type_rank(wgpu::DeviceType::IntegratedGpu)
        );
    }

    #[test]
    fn no_adapter_error_lists_found_and_fix() {
        let found = [summary("llvmpipe", wgpu::DeviceType::Cpu)];
        let message = no_adapter_error(&AdapterRequest::hardware_only(), &found).to_string();
        assert!(message.contains("llvmpipe (Vulkan, Cpu)"), "{message}");
        assert!(
            message.contains("apt-get install mesa-vulkan-drivers"),
            "{message}"
        );
        let message = no_adapter_error(&AdapterRequest::any(), &[]).to_string();
        assert!(message.contains("adapters found: none"), "{message}");
    }
}
