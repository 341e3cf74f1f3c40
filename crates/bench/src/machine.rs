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
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let hypervisor = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
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
