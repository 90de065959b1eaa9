//! Choosing where to train: a hardware GPU, any GPU adapter, or the CPU.

use crate::backend::{Backend, Setup};
use crate::config::TrainConfig;
use crate::cpu::CpuBackend;
use crate::data::Splits;
use crate::error::{Error, Result};
use crate::gpu::{find_adapter, list_adapters, AdapterRequest, GpuBackend, GpuOptions};

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
            other => Err(format!(
                "unknown backend `{other}`; expected auto, gpu or cpu"
            )),
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
/// select, uploads `splits` to it, and prepares it to train the classic
/// setup: logistic regression from zero with plain SGD.
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
    open_backend_for(
        choice,
        adapter_filter,
        splits,
        &Setup::classic(splits),
        &TrainConfig::default().with_batch_size(batch_size),
    )
}

/// Opens the backend as [`open_backend`] does, prepared to train `setup`
/// with the batch size and shuffling of `config`.
///
/// # Errors
/// As [`open_backend`], and [`crate::Error::InvalidConfig`] or
/// [`crate::Error::Shape`] if the setup is invalid or does not fit the data.
pub fn open_backend_for<'a>(
    choice: BackendChoice,
    adapter_filter: Option<&str>,
    splits: &'a Splits,
    setup: &Setup,
    config: &TrainConfig,
) -> Result<Opened<'a>> {
    let batch_size = config.batch_size;
    let with_filter = |request: AdapterRequest| match adapter_filter {
        Some(name) => request.with_name_contains(name),
        None => request,
    };
    let open_gpu = |request: AdapterRequest, reason: String| -> Result<Opened<'a>> {
        let options = GpuOptions::default()
            .with_adapter(request)
            .with_batch_size(batch_size)
            .with_shuffled(config.shuffle);
        Ok(Opened {
            backend: Box::new(GpuBackend::with_setup(splits, options, setup)?),
            reason,
        })
    };
    match choice {
        BackendChoice::Cpu => Ok(Opened {
            backend: Box::new(CpuBackend::with_setup(splits, setup)?),
            reason: "CPU path requested with --backend cpu".to_string(),
        }),
        BackendChoice::Gpu => open_gpu(
            with_filter(AdapterRequest::any()),
            "GPU path requested with --backend gpu".to_string(),
        ),
        BackendChoice::Auto => {
            let request = with_filter(AdapterRequest::hardware_only());
            match find_adapter(&request) {
                Ok(adapter) => open_gpu(request, format!("auto: found hardware GPU {adapter}")),
                Err(Error::NoAdapter { .. }) => {
                    let found = list_adapters();
                    let reason = if found.is_empty() {
                        "auto: no GPU adapter found, using the CPU path".to_string()
                    } else {
                        let names: Vec<String> = found.iter().map(ToString::to_string).collect();
                        format!(
                            "auto: no hardware GPU among {}, using the CPU path; --backend gpu uses a software adapter",
                            names.join(", ")
                        )
                    };
                    log::info!("{reason}");
                    Ok(Opened {
                        backend: Box::new(CpuBackend::with_setup(splits, setup)?),
                        reason,
                    })
                }
                Err(other) => Err(other),
            }
        }
    }
}
