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
    if cfg!(feature = "tch") {
        names.push("tch");
        names.push("tch-cuda");
    }
    names
}

/// The device for a backend name: `flex`, `ndarray`, `wgpu`, `wgpu-cpu`, `vulkan`, `tch` (LibTorch
/// on the CPU), `tch-cuda` or `tch-cuda:N` (LibTorch on CUDA device N, default 0).
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
        "tch" => {
            // Burn marks burn-tch deprecated in favour of its CubeCL cpu/cuda backends, whose
            // build scripts download an LLVM bundle; LibTorch is the fast path this build can use.
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            return Ok(Device::libtorch());
            #[cfg(not(feature = "tch"))]
            return Err(missing("tch"));
        }
        cuda if cuda == "tch-cuda" || cuda.starts_with("tch-cuda:") => {
            let index = match cuda.strip_prefix("tch-cuda:") {
                None => 0,
                Some(n) => n.parse::<usize>().map_err(|_| KdError::Backend {
                    name: name.into(),
                    reason: format!("`{n}` is not a CUDA device number (write tch-cuda:0, tch-cuda:1, ...)"),
                })?,
            };
            #[cfg(feature = "tch")]
            return libtorch_cuda(name, index);
            #[cfg(not(feature = "tch"))]
            return {
                let _ = index;
                Err(missing("tch"))
            };
        }
        other => Err(KdError::Backend {
            name: other.into(),
            reason: format!(
                "unknown backend; known: flex, ndarray, wgpu, wgpu-cpu, vulkan, tch, tch-cuda[:N] (compiled: {})",
                compiled().join(", ")
            ),
        }),
    }
}

/// LibTorch on CUDA device `index`, once LibTorch says the device exists: without this check a
/// missing GPU would surface as a panic deep inside the first kernel.
#[cfg(feature = "tch")]
fn libtorch_cuda(name: &str, index: usize) -> Result<Device> {
    let count = tch::Cuda::device_count().max(0) as usize;
    if !tch::Cuda::is_available() || count == 0 {
        return Err(KdError::Backend {
            name: name.into(),
            reason: "LibTorch sees no CUDA device (no NVIDIA driver, or a CPU-only PyTorch wheel); use `--backend tch` for the CPU".into(),
        });
    }
    if index >= count {
        return Err(KdError::Backend {
            name: name.into(),
            reason: format!("CUDA device {index} asked for, LibTorch sees {count} (0..{count})"),
        });
    }
    #[allow(deprecated)] // See `device`: burn-tch is deprecated, and the fast path here.
    Ok(Device::libtorch_cuda(index))
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

/// What the device of a backend is, for logs and result records: the adapter name on wgpu
/// (`llvmpipe (LLVM 15.0.6, 256 bits)` is Mesa's software Vulkan driver), the CUDA device on
/// LibTorch, the processor and thread count on the CPU backends.
pub fn describe(name: &str, device: &Device) -> String {
    // Only CubeCL devices (wgpu, vulkan) report an identity; Burn compiles the call with them.
    #[cfg(any(feature = "wgpu", feature = "vulkan"))]
    if let Some(identity) = device.identity() {
        return identity.name;
    }
    #[cfg(not(any(feature = "wgpu", feature = "vulkan")))]
    let _ = device;
    #[cfg(feature = "tch")]
    if name.starts_with("tch-cuda") {
        let index = name.strip_prefix("tch-cuda:").unwrap_or("0");
        return format!("LibTorch CUDA device {index} (CUDA runtime {})", tch::utils::version_cudart());
    }
    match cpu_threads(name) {
        Some(threads) => format!("{} ({threads} threads)", cpu_model()),
        None => name.to_string(),
    }
}

/// How many CPU threads a CPU backend computes with (flex and ndarray: rayon's pool, one per
/// logical core; LibTorch: its intra-op pool); `None` for GPU backends. A PyTorch reference of
/// the same work runs with as many.
pub fn cpu_threads(name: &str) -> Option<usize> {
    match name {
        "flex" | "ndarray" | "wgpu-cpu" => Some(std::thread::available_parallelism().map(usize::from).unwrap_or(1)),
        #[cfg(feature = "tch")]
        "tch" => Some(tch::utils::get_num_threads().max(1) as usize),
        _ => None,
    }
}

/// The processor's model name from /proc/cpuinfo (Linux), or "CPU".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        })
        .unwrap_or_else(|| "CPU".into())
}
