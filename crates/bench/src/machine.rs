//! What the report was measured on.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub hostname: String,
    /// `virtualization` as systemd-detect-virt would say, from /proc/cpuinfo's hypervisor flag.
    pub hypervisor: bool,
    pub rustc: String,
    pub date_utc: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    pub fn probe() -> Machine {
        use procfs::Current as _;
        let cpuinfo = procfs::CpuInfo::current().ok();
        let cpu_model = cpuinfo
            .as_ref()
            .and_then(|c| c.model_name(0))
            .unwrap_or("unknown")
            .to_owned();
        let hypervisor = cpuinfo
            .as_ref()
            .and_then(|c| c.flags(0))
            .is_some_and(|flags| flags.contains(&"hypervisor"));
        let memory_bytes = procfs::Meminfo::current().map_or(0, |m| m.mem_total) as f64;
        Machine {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: memory_bytes / (1024.0 * 1024.0 * 1024.0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            hypervisor,
            rustc: command_line("rustc", &["--version"]),
            date_utc: command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "| | |\n|---|---|\n| CPU | {} ({} CPUs{}) |\n| Memory | {:.1} GiB |\n| Kernel | Linux {} |\n| Rust | {} |\n| Date | {} |\n",
            self.cpu_model,
            self.cpus,
            if self.hypervisor { ", virtual machine" } else { "" },
            self.memory_gib,
            self.kernel,
            self.rustc,
            self.date_utc,
        )
    }
}
