//! Choosing the burn [`Device`] the host runs the elastic model on: the CPU (burn's pure-Rust `flex`
//! backend, always built) or a wgpu adapter (burn's `wgpu` backend, WGSL shaders, behind this crate's `wgpu`
//! cargo feature).
//!
//! [`device_by_name`] / [`host_device`] return a [`HostDevice`]: the device (with autodiff for training) and,
//! for wgpu, the adapter wgpu picked ([`AdapterSummary`]: name, driver, graphics API, device type), so that
//! binaries can say where they run. The wgpu runtime is initialised once per process through
//! `burn::tensor::wgpu::WgpuOptions::init_with_setup` (burn 0.22.1, `burn-tensor/src/wgpu.rs`), which is what
//! exposes the adapter; later calls reuse it (burn refuses a second initialisation of the same selector).
//!
//! Which adapter: burn's `DeviceKind::DefaultDevice`, i.e. cubecl-wgpu's choice (a graphics API with a
//! non-CPU adapter if any, else one with a CPU adapter; within it wgpu's high-performance preference), or the
//! one named by the environment variable `CUBECL_WGPU_DEFAULT_DEVICE` (e.g. `Cpu`, `DiscreteGpu(1)`).
//! On a machine without a GPU, Mesa's Vulkan driver for the CPU (llvmpipe/lavapipe; Debian package
//! `mesa-vulkan-drivers`) gives wgpu an adapter: slow, but it runs the same kernels (docs/PERFORMANCE.md).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// The devices the host can run the burn model on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum DeviceName {
    /// burn's pure-Rust CPU backend (`Device::flex()`), threads from rayon's global pool
    /// (`RAYON_NUM_THREADS`).
    #[default]
    Cpu,
    /// burn's wgpu backend (`Device::wgpu`, WGSL shaders) on the adapter wgpu picks; needs a build with the
    /// `wgpu` cargo feature of `host`.
    Wgpu,
}

impl DeviceName {
    /// The name as written on the command line: `cpu` or `wgpu`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceName::Cpu => "cpu",
            DeviceName::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceName {
    type Err = DeviceError;

    /// `cpu` or `wgpu` (ASCII case-insensitive). Errors: [`DeviceError::Unknown`].
    fn from_str(s: &str) -> Result<DeviceName, DeviceError> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceName::Cpu),
            "wgpu" => Ok(DeviceName::Wgpu),
            _ => Err(DeviceError::Unknown { name: s.to_owned() }),
        }
    }
}

/// Errors of device selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A device name other than `cpu` or `wgpu`.
    #[error("unknown device `{name}`: expected `cpu` or `wgpu`")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// `wgpu` asked of a build without the `wgpu` cargo feature.
    #[error(
        "device `wgpu` is not available in this build: rebuild with --features wgpu \
         (e.g. `cargo build -p host --release --features wgpu`)"
    )]
    WgpuNotBuilt,
    /// wgpu found no adapter, or could not create a device on it.
    #[error(
        "no usable wgpu adapter: {message}. On a machine without a GPU, install Mesa's CPU Vulkan driver \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`) and set XDG_RUNTIME_DIR; \
         CUBECL_WGPU_DEFAULT_DEVICE selects another adapter (e.g. `Cpu`)"
    )]
    WgpuUnavailable {
        /// What burn / cubecl-wgpu reported.
        message: String,
    },
}

/// The wgpu adapter a device runs on (from `wgpu::Adapter::get_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `llvmpipe (LLVM 19.1.7, 256 bits)`.
    pub name: String,
    /// Driver name, e.g. `llvmpipe`.
    pub driver: String,
    /// Driver details, e.g. `Mesa 25.0.7-2 (LLVM 19.1.7)`.
    pub driver_info: String,
    /// Graphics API wgpu uses, e.g. `Vulkan`.
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {} {}", self.name, self.device_type, self.backend, self.driver)?;
        if !self.driver_info.is_empty() {
            write!(f, " {}", self.driver_info)?;
        }
        f.write_str(")")
    }
}

/// A device picked by [`host_device`]: the burn device and what it is.
#[derive(Clone, Debug)]
pub struct HostDevice {
    /// The burn device (with autodiff when asked for training).
    pub device: Device,
    /// Which kind it is.
    pub name: DeviceName,
    /// The wgpu adapter (`None` for the CPU device).
    pub adapter: Option<AdapterSummary>,
    /// Whether the device records gradients (`Device::autodiff`).
    pub training: bool,
}

impl HostDevice {
    /// One line for logs, e.g. `cpu (burn flex)` or
    /// `wgpu: llvmpipe (LLVM 19.1.7, 256 bits) (Cpu, Vulkan llvmpipe ...), autodiff`.
    pub fn describe(&self) -> String {
        let base = match (&self.name, &self.adapter) {
            (DeviceName::Cpu, _) => "cpu (burn flex backend)".to_string(),
            (DeviceName::Wgpu, Some(a)) => format!("wgpu (WGSL) on {a}"),
            (DeviceName::Wgpu, None) => "wgpu (adapter unknown)".to_string(),
        };
        if self.training { format!("{base}, autodiff") } else { base }
    }
}

/// The device named `name` (`cpu` or `wgpu`, see [`DeviceName`]); with `training` it records gradients
/// (`Device::autodiff()`, for fine-tuning).
///
/// Errors: [`DeviceError::Unknown`] for another name, and those of [`host_device`].
pub fn device_by_name(name: &str, training: bool) -> Result<HostDevice, DeviceError> {
    host_device(name.parse()?, training)
}

/// The device `name`; with `training` it records gradients (`Device::autodiff()`).
///
/// `Cpu` is `Device::flex()` (as [`super::default_device`]). `Wgpu` initialises burn's wgpu runtime on the
/// default adapter the first time (see the module docs) and reports that adapter.
///
/// Errors: [`DeviceError::WgpuNotBuilt`] for `Wgpu` in a build without the `wgpu` feature,
/// [`DeviceError::WgpuUnavailable`] when wgpu finds no adapter or cannot open it.
pub fn host_device(name: DeviceName, training: bool) -> Result<HostDevice, DeviceError> {
    let (device, adapter) = match name {
        DeviceName::Cpu => (Device::flex(), None),
        DeviceName::Wgpu => {
            let (d, a) = wgpu_device()?;
            (d, Some(a))
        }
    };
    let device = if training { device.autodiff() } else { device };
    Ok(HostDevice { device, name, adapter, training })
}

/// Whether this build has the `wgpu` feature (so [`DeviceName::Wgpu`] can work).
pub const WGPU_BUILT: bool = cfg!(feature = "wgpu");

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<(Device, AdapterSummary), DeviceError> {
    Err(DeviceError::WgpuNotBuilt)
}

/// Initialises burn's wgpu runtime on the default adapter once per process and returns its device and
/// adapter. The outcome (adapter or error) is cached: burn refuses to initialise a selector twice, and
/// `Device::wgpu(DeviceKind::DefaultDevice)` names the runtime registered here.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<(Device, AdapterSummary), DeviceError> {
    use std::sync::OnceLock;

    use burn::tensor::DeviceKind;

    static ADAPTER: OnceLock<Result<AdapterSummary, String>> = OnceLock::new();
    let adapter = ADAPTER.get_or_init(|| {
        let (_device, setup) = Device::wgpu_options()
            .device_kind(DeviceKind::DefaultDevice)
            .init_with_setup()
            .map_err(|e| e.to_string())?;
        let info = setup.adapter.get_info();
        Ok(AdapterSummary {
            name: info.name,
            driver: info.driver,
            driver_info: info.driver_info,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
        })
    });
    match adapter {
        Ok(a) => Ok((Device::wgpu(DeviceKind::DefaultDevice), a.clone())),
        Err(message) => Err(DeviceError::WgpuUnavailable { message: message.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        assert_eq!("cpu".parse::<DeviceName>().unwrap(), DeviceName::Cpu);
        assert_eq!("WGPU".parse::<DeviceName>().unwrap(), DeviceName::Wgpu);
        assert_eq!(DeviceName::Wgpu.to_string(), "wgpu");
        let e = "cuda".parse::<DeviceName>().unwrap_err();
        assert_eq!(e.to_string(), "unknown device `cuda`: expected `cpu` or `wgpu`");
        assert!(matches!(device_by_name("gpu", false), Err(DeviceError::Unknown { .. })));
    }

    #[test]
    fn cpu_device_runs_and_trains() {
        use burn::tensor::Tensor;
        let d = device_by_name("cpu", true).unwrap();
        assert_eq!((d.name, d.training, d.adapter.is_none()), (DeviceName::Cpu, true, true));
        assert_eq!(d.describe(), "cpu (burn flex backend), autodiff");
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d.device).require_grad();
        let g = x.clone().square().sum().backward();
        let gx = x.grad(&g).unwrap().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(gx, vec![2.0, 4.0, 6.0]); // d/dx sum x² = 2x
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn wgpu_without_the_feature_says_how_to_rebuild() {
        let e = device_by_name("wgpu", false).unwrap_err();
        assert!(matches!(e, DeviceError::WgpuNotBuilt));
        assert!(e.to_string().contains("rebuild with --features wgpu"), "{e}");
    }
}
