//! Facts about the machine a profile was measured on, from the `sysinfo` crate (CPU and memory only).

use serde::{Deserialize, Serialize};

/// The machine: CPU, cores, frequency, memory, OS, and the SIMD features the kernels use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
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
    /// GPU adapter (name, vendor, driver) for the wgpu backend; `None` on the CPU backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
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
}
