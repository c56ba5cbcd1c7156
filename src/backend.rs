//! Backends by name: the `--backend` flag.

use burn::tensor::Device;
use kd_core::{KdError, Result};

/// The backends compiled into this build, in the order of preference on a CPU.
pub fn compiled() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
        names.push("wgpu-cpu");
    }
    if cfg!(feature = "vulkan") {
        names.push("vulkan");
    }
    names
}

/// The device for a backend name (`flex`, `ndarray`, `wgpu`, `wgpu-cpu`, `vulkan`).
///
/// A name whose feature is not compiled in is an error that says which feature to enable.
/// GPU backends look for an adapter when first used; [`probe`] runs a tiny operation so that a
/// missing adapter is reported before training starts.
pub fn device(name: &str) -> Result<Device> {
    let missing = |feature: &str| KdError::Backend {
        name: name.into(),
        reason: format!("not compiled in; rebuild with `--features {feature}` (compiled: {})", compiled().join(", ")),
    };
    match name {
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            return Err(missing("flex"));
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[cfg(not(feature = "ndarray"))]
            return Err(missing("ndarray"));
        }
        "wgpu" | "wgpu-cpu" => {
            #[cfg(feature = "wgpu")]
            {
                let kind = if name == "wgpu-cpu" { burn::tensor::DeviceKind::Cpu } else { burn::tensor::DeviceKind::DefaultDevice };
                return Ok(Device::wgpu(kind));
            }
            #[cfg(not(feature = "wgpu"))]
            return Err(missing("wgpu"));
        }
        "vulkan" => {
            #[cfg(feature = "vulkan")]
            return Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice));
            #[cfg(not(feature = "vulkan"))]
            return Err(missing("vulkan"));
        }
        other => Err(KdError::Backend {
            name: other.into(),
            reason: format!("unknown backend; known: flex, ndarray, wgpu, wgpu-cpu, vulkan (compiled: {})", compiled().join(", ")),
        }),
    }
}

/// Runs a tiny computation on the device, turning a panic (no adapter found) into an error.
pub fn probe(name: &str, device: &Device) -> Result<()> {
    let dev = device.clone();
    let result = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0, 3.0], &dev);
        t.sum().into_scalar::<f32>()
    });
    match result {
        Ok(v) if (v - 6.0).abs() < 1e-4 => Ok(()),
        Ok(v) => Err(KdError::Backend { name: name.into(), reason: format!("probe computed {v} instead of 6") }),
        Err(_) => Err(KdError::Backend { name: name.into(), reason: "no usable adapter or device found (the probe panicked)".into() }),
    }
}
