//! Facts about the machine a profile was measured on, from the `sysinfo` crate (CPU and memory), and the
//! wgpu adapter's facts for wgpu profiles.

use serde::{Deserialize, Serialize};

/// Facts about one wgpu adapter (from `wgpu::AdapterInfo`), as `edgerun devices` lists them and profiles
/// record them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdapterFacts {
    /// Adapter name (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`, `Intel(R) Iris(R) Xe Graphics`).
    pub name: String,
    /// PCI vendor id (`0x8086` Intel, `0x1002` AMD, `0x10de` NVIDIA, `0x13b5` ARM, `0x10005` Mesa), hex.
    pub vendor: String,
    /// PCI device id, hex.
    pub device: String,
    /// `IntegratedGpu`, `DiscreteGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    /// `Vulkan`, `Metal`, `Dx12` or `Gl`.
    pub backend: String,
    /// Driver name (e.g. `llvmpipe`).
    pub driver: String,
    /// Driver version string.
    pub driver_info: String,
}

impl AdapterFacts {
    /// `name (backend, device type)`.
    pub fn label(&self) -> String {
        format!("{} ({}, {})", self.name, self.backend, self.device_type)
    }
}

/// The machine: CPU, cores, frequency, memory, OS, and the SIMD features the kernels use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceFacts {
    /// CPU brand string (e.g. `AMD EPYC 7B13`), `unknown` when the OS does not tell.
    pub cpu_brand: String,
    /// CPU vendor id (e.g. `AuthenticAMD`).
    pub cpu_vendor: String,
    /// Physical cores, when the OS tells.
    pub physical_cores: Option<usize>,
    /// Logical CPUs.
    pub logical_cpus: usize,
    /// Current frequency of the first CPU, MHz (0 when unknown; virtual machines often report the nominal one).
    pub cpu_mhz: u64,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// OS name (e.g. `Debian GNU/Linux`).
    pub os: String,
    /// OS version.
    pub os_version: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// SIMD features the kernels use that this CPU has (`avx2`, `fma`, `f16c`).
    pub cpu_features: Vec<String>,
    /// The wgpu adapter (name, vendor, device type, backend, driver) of a wgpu profile; `None` on the CPU
    /// backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterFacts>,
}

impl DeviceFacts {
    /// Read the facts of this machine.
    pub fn detect() -> DeviceFacts {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_frequency())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let cpu = sys.cpus().first();
        let unknown = || "unknown".to_string();
        let mut features = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                features.push("avx2".to_string());
            }
            if std::is_x86_feature_detected!("fma") {
                features.push("fma".to_string());
            }
            if std::is_x86_feature_detected!("f16c") {
                features.push("f16c".to_string());
            }
        }
        DeviceFacts {
            cpu_brand: cpu.map(|c| c.brand().trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(unknown),
            cpu_vendor: cpu.map(|c| c.vendor_id().trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(unknown),
            physical_cores: System::physical_core_count(),
            logical_cpus: sys.cpus().len().max(std::thread::available_parallelism().map_or(1, |n| n.get())),
            cpu_mhz: cpu.map_or(0, |c| c.frequency()),
            memory_bytes: sys.total_memory(),
            os: System::name().unwrap_or_else(unknown),
            os_version: System::os_version().unwrap_or_else(unknown),
            kernel: System::kernel_version().unwrap_or_else(unknown),
            arch: std::env::consts::ARCH.to_string(),
            cpu_features: features,
            adapter: None,
        }
    }

    /// Whether a profile measured on `other` describes this machine: same CPU brand and vendor, logical CPUs,
    /// architecture, SIMD features and GPU adapter, and total memory within 10%. Frequency, OS and kernel
    /// versions may differ (virtual machines report them loosely).
    ///
    /// Errors: the first fact that differs, as `"<fact>: <this> here, <other> in the profile"`.
    pub fn same_device(&self, other: &DeviceFacts) -> Result<(), String> {
        let differ = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            Err(format!("{what}: {a:?} here, {b:?} in the profile"))
        };
        if self.cpu_brand != other.cpu_brand {
            return differ("CPU", &self.cpu_brand, &other.cpu_brand);
        }
        if self.cpu_vendor != other.cpu_vendor {
            return differ("CPU vendor", &self.cpu_vendor, &other.cpu_vendor);
        }
        if self.logical_cpus != other.logical_cpus {
            return differ("logical CPUs", &self.logical_cpus, &other.logical_cpus);
        }
        if self.arch != other.arch {
            return differ("architecture", &self.arch, &other.arch);
        }
        if self.cpu_features != other.cpu_features {
            return differ("CPU features", &self.cpu_features, &other.cpu_features);
        }
        if self.adapter != other.adapter {
            return differ("adapter", &self.adapter, &other.adapter);
        }
        let (a, b) = (self.memory_bytes as f64, other.memory_bytes as f64);
        if (a - b).abs() > 0.1 * a.max(b) {
            return differ("memory bytes", &self.memory_bytes, &other.memory_bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceFacts;

    fn facts() -> DeviceFacts {
        DeviceFacts {
            cpu_brand: "AMD EPYC".into(),
            cpu_vendor: "AuthenticAMD".into(),
            physical_cores: Some(2),
            logical_cpus: 2,
            cpu_mhz: 2445,
            memory_bytes: 25_276_063_744,
            os: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            cpu_features: vec!["avx2".into(), "fma".into(), "f16c".into()],
            adapter: None,
        }
    }

    #[test]
    fn same_device_ignores_frequency_and_kernel_but_not_cores_or_memory() {
        let a = facts();
        let mut b = facts();
        b.cpu_mhz = 3000;
        b.kernel = "6.18".into();
        b.memory_bytes = 24_000_000_000; // 5% less
        assert_eq!(a.same_device(&b), Ok(()));
        b.logical_cpus = 4;
        assert_eq!(a.same_device(&b).unwrap_err(), "logical CPUs: 2 here, 4 in the profile");
        let mut c = facts();
        c.memory_bytes = 16_000_000_000;
        assert!(a.same_device(&c).unwrap_err().starts_with("memory bytes"));
        let mut d = facts();
        d.cpu_features.pop();
        assert!(a.same_device(&d).unwrap_err().starts_with("CPU features"));
    }
}
