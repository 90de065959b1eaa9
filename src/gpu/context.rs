//! The device and queue, with wgpu errors turned into [`Error::Gpu`].
//!
//! wgpu's default handler panics on any error that no error scope catches.
//! [`GpuContext`] installs a handler that records such errors instead, wraps
//! operations in error scopes, and waits for read-backs with a timeout.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::adapter::{new_instance, select_adapter, AdapterInfoSummary, AdapterRequest};
use crate::error::{Error, Result};

/// A wgpu device and queue on a chosen adapter.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: AdapterInfoSummary,
    limits: wgpu::Limits,
    uncaptured_errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Chooses an adapter for `request` and creates a device with all of the
    /// adapter's limits, so buffers may be as large as the adapter allows.
    ///
    /// # Errors
    /// [`Error::NoAdapter`] if no adapter matches, [`Error::Gpu`] if the
    /// device cannot be created.
    pub fn new(request: &AdapterRequest) -> Result<Self> {
        let instance = new_instance();
        let adapter = select_adapter(&instance, request)?;
        let summary = AdapterInfoSummary::from_adapter(&adapter);
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("wgpu-learn device"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&descriptor)).map_err(|error| {
                Error::Gpu {
                    reason: format!("creating a device on {summary} failed: {error}"),
                }
            })?;

        let uncaptured_errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&uncaptured_errors);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            log::error!("uncaptured GPU error: {error}");
            sink.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(error.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            *lost_sink
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });

        let limits = device.limits();
        log::info!("using GPU adapter {summary}");
        Ok(GpuContext {
            device,
            queue,
            adapter: summary,
            limits,
            uncaptured_errors,
            lost,
        })
    }

    /// Returns the wgpu device, for programs that run their own work beside training.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Returns the chosen adapter.
    pub fn adapter(&self) -> &AdapterInfoSummary {
        &self.adapter
    }

    /// Returns the device's limits, which equal the adapter's.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Returns one line naming the device, for example
    /// `gpu: llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn description(&self) -> String {
        format!("gpu: {}", self.adapter)
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Runs `work` inside validation, out-of-memory and internal error
    /// scopes, and returns the first error caught as [`Error::Gpu`] naming
    /// `operation`.
    pub(crate) fn scoped<T>(&self, operation: &str, work: impl FnOnce() -> T) -> Result<T> {
        self.check_health(operation)?;
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = work();
        // Scopes pop in reverse order of their creation.
        let errors = [
            pollster::block_on(internal.pop()),
            pollster::block_on(out_of_memory.pop()),
            pollster::block_on(validation.pop()),
        ];
        if let Some(error) = errors.into_iter().flatten().next() {
            return Err(Error::Gpu {
                reason: format!("{operation} failed: {error}"),
            });
        }
        self.check_health(operation)?;
        Ok(value)
    }

    /// Returns [`Error::Gpu`] if the device was lost or an error escaped the
    /// error scopes.
    pub(crate) fn check_health(&self, operation: &str) -> Result<()> {
        if let Some(reason) = self
            .lost
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            return Err(Error::Gpu {
                reason: format!("{operation} failed: the GPU device was lost ({reason})"),
            });
        }
        let mut uncaptured = self
            .uncaptured_errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !uncaptured.is_empty() {
            let errors = std::mem::take(&mut *uncaptured).join("; ");
            return Err(Error::Gpu {
                reason: format!("{operation} failed: {errors}"),
            });
        }
        Ok(())
    }

    /// Maps `buffer`, which `submission` writes, waits at most `timeout` for
    /// the GPU, and returns the buffer's bytes.
    ///
    /// # Errors
    /// [`Error::Gpu`] with "GPU read-back timed out" if the wait runs out,
    /// or if mapping fails or the device is lost.
    pub(crate) fn read_back(
        &self,
        operation: &str,
        buffer: &wgpu::Buffer,
        submission: wgpu::SubmissionIndex,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let (sender, receiver) = mpsc::channel();
        buffer.map_async(wgpu::MapMode::Read, .., move |result| {
            // The receiver is dropped only after a timeout, when no caller waits.
            let _ = sender.send(result);
        });

        let deadline = Instant::now() + timeout;
        let timed_out = || Error::Gpu {
            reason: format!(
                "GPU read-back timed out after {} s during {operation}; the device may be hung \
                 or far slower than expected",
                timeout.as_secs_f64()
            ),
        };
        let mapped = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let poll = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(submission.clone()),
                timeout: Some(remaining),
            });
            match poll {
                Ok(_) => {}
                Err(wgpu::PollError::Timeout) => return Err(timed_out()),
                Err(error) => {
                    return Err(Error::Gpu {
                        reason: format!("waiting for the GPU during {operation} failed: {error}"),
                    })
                }
            }
            self.check_health(operation)?;
            if let Ok(result) = receiver.try_recv() {
                break result;
            }
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            std::thread::yield_now();
        };
        mapped.map_err(|error| Error::Gpu {
            reason: format!("mapping the read-back buffer during {operation} failed: {error}"),
        })?;

        let bytes = buffer
            .get_mapped_range(..)
            .map_err(|error| Error::Gpu {
                reason: format!("reading the mapped buffer during {operation} failed: {error}"),
            })?
            .to_vec();
        buffer.unmap();
        Ok(bytes)
    }
}
