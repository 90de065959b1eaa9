//! Choosing where to train: a hardware GPU, any GPU adapter, or the CPU.

use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::data::Splits;
use crate::error::Result;

/// Where to train, as `--backend` spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// A hardware GPU if one is found, otherwise the CPU path.
    #[default]
    Auto,
    /// A GPU adapter, hardware preferred, software (such as lavapipe) accepted.
    Gpu,
    /// The rayon CPU path.
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "auto" => Ok(BackendChoice::Auto),
            "gpu" => Ok(BackendChoice::Gpu),
            "cpu" => Ok(BackendChoice::Cpu),
            other => Err(format!("unknown backend `{other}`; expected auto, gpu or cpu")),
        }
    }
}

/// A backend ready to train, with the reason it was chosen.
pub struct Opened<'a> {
    /// The backend, holding the splits.
    pub backend: Box<dyn Backend + 'a>,
    /// One line saying which device was chosen and why.
    pub reason: String,
}

/// Opens the backend that `choice` and the optional adapter name filter
/// select, and uploads `splits` to it.
///
/// `batch_size` lets a GPU backend lay out its buffers so that training
/// batches never straddle two of them.
///
/// # Errors
/// [`crate::Error::NoAdapter`] when a GPU is required and none matches, and
/// GPU errors while uploading.
pub fn open_backend<'a>(
    choice: BackendChoice,
    adapter_filter: Option<&str>,
    splits: &'a Splits,
    batch_size: usize,
) -> Result<Opened<'a>> {
    let _ = (adapter_filter, batch_size);
    let cpu = |reason: String| Opened {
        backend: Box::new(CpuBackend::new(splits)),
        reason,
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu("CPU path requested with --backend cpu".to_string())),
        BackendChoice::Auto | BackendChoice::Gpu => Ok(cpu("GPU path not built yet".to_string())),
    }
}
