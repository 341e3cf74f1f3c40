//! What the sections read from the system, in one place: CPU time from /proc through the
//! `procfs` crate (per task from `schedstat`, in nanoseconds; per namespace; kernel NAPI
//! threads; the whole machine from `/proc/stat`), interface counters (`ip -s -j link`, `ethtool -S`), threaded NAPI, and CPU
//! pinning.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{ensure, Context as _};
use procfs::{process::Process, CpuTime, KernelStats};
use ricochet_testbed::Netns;
use serde::{Deserialize, Serialize};

/// Nanoseconds every thread of process `pid` ran (0 if it is gone), from each task's
/// `schedstat`. A thread that exited before the call is not counted, so callers compare the
/// same long-lived processes.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = Process::new(pid as i32).and_then(|p| p.tasks()) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| task.schedstat().ok())
        .map(|s| s.sum_exec_runtime)
        .sum()
}

/// Nanoseconds a single task (e.g. a kernel thread) ran.
pub fn task_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    Ok(Process::new(pid as i32)
        .and_then(|p| p.schedstat())
        .with_context(|| format!("reading /proc/{pid}/schedstat"))?
        .sum_exec_runtime)
}

/// Every process of the machine with its command name (`comm`), as (pid, name).
fn processes_by_name() -> Vec<(u32, String)> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| Some((p.pid as u32, p.stat().ok()?.comm)))
        .collect()
}

/// CPU nanoseconds per process id.
pub type PerProcess = BTreeMap<u32, u64>;

pub fn processes_cpu_ns(pids: &[u32]) -> PerProcess {
    pids.iter().map(|&pid| (pid, process_cpu_ns(pid))).collect()
}

/// Seconds used between two snapshots of the same processes; a process that appeared in
/// between counts from zero, one that vanished counts nothing.
pub fn delta_seconds(before: &PerProcess, after: &PerProcess) -> f64 {
    after
        .iter()
        .map(|(pid, &ns)| ns.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 1e9
}

/// The kernel threads whose name starts with `napi/<dev>-` (threaded NAPI names its threads
/// `napi/<device>-<napi id>`), as (pid, name).
pub fn napi_threads(dev: &str) -> Vec<(u32, String)> {
    processes_by_name()
        .into_iter()
        .filter(|(_, comm)| is_napi_thread_of(comm, dev))
        .collect()
}

/// A kernel NAPI thread (`napi/<dev>-<id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NapiThread {
    pub pid: u32,
    pub name: String,
}

/// Turns on threaded NAPI for `dev` in `ns` and returns the kernel thread(s) it created
/// (threads of a same-named device in another namespace existed before, so are left out).
///
/// The `threaded` attribute is in sysfs, and a process that only joined the namespace still
/// sees the root's sysfs; `ip netns exec` mounts the namespace's own in a private mount
/// namespace. The device must already have NAPI (veth: GRO on or an XDP program).
pub fn threaded_napi(ns: &Netns, dev: &str) -> anyhow::Result<Vec<NapiThread>> {
    let before = napi_threads(dev);
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c"])
        .arg(format!("echo 1 > /sys/class/net/{dev}/threaded"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("running `ip netns exec ... sh` to write sysfs")?;
    ensure!(
        out.status.success(),
        "turning on threaded NAPI for {dev} in {}: {} (the device needs NAPI: GRO on or an \
         XDP program)",
        ns.name(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let new: Vec<NapiThread> = napi_threads(dev)
        .into_iter()
        .filter(|t| !before.contains(t))
        .map(|(pid, name)| NapiThread { pid, name })
        .collect();
    ensure!(
        !new.is_empty(),
        "threaded NAPI is on for {dev} in {} but no napi/{dev}-* kernel thread appeared \
         (threaded NAPI needs Linux 5.12+)",
        ns.name()
    );
    Ok(new)
}

/// Pins task `pid` (0: the calling thread) to one CPU.
pub fn pin_task_to_cpu(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("CPU index out of range")?;
    let pid = i32::try_from(pid).context("task id out of range")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set)
        .with_context(|| format!("pinning task {pid} to CPU {cpu}"))
}

/// The calling thread's CPU affinity, put back when dropped.
#[must_use = "the affinity is restored when this is dropped"]
pub struct RestoreAffinity(nix::sched::CpuSet);

impl Drop for RestoreAffinity {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

/// Pins the calling thread to the first CPU of `cpus` that exists here (measurements that
/// must not migrate) until the returned guard is dropped.
pub fn pin_thread(cpus: &[usize]) -> anyhow::Result<RestoreAffinity> {
    let saved = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .context("reading the CPU affinity")?;
    let restore = RestoreAffinity(saved);
    let mut last = None;
    for &cpu in cpus {
        match pin_task_to_cpu(0, cpu) {
            Ok(()) => return Ok(restore),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no CPU to pin to")))
}

/// The CPUs this process may run on (the report's machine table shows the same count).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The kernel's softirq threads (`ksoftirqd/<cpu>`), which take over softirq work that
/// interrupted tasks did not finish, as pids.
pub fn ksoftirqd_threads() -> Vec<u32> {
    processes_by_name()
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("ksoftirqd/"))
        .map(|(pid, _)| pid)
        .collect()
}

/// Whether a thread name is `napi/<dev>-<digits>`.
pub fn is_napi_thread_of(comm: &str, dev: &str) -> bool {
    comm.strip_prefix("napi/")
        .and_then(|rest| rest.strip_prefix(dev))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl MachineTicks {
    /// The ticks of one `cpu` line of `/proc/stat` (the fields older kernels lack are 0).
    pub fn of(t: &CpuTime) -> Self {
        Self {
            user: t.user,
            nice: t.nice,
            system: t.system,
            idle: t.idle,
            iowait: t.iowait.unwrap_or(0),
            irq: t.irq.unwrap_or(0),
            softirq: t.softirq.unwrap_or(0),
            steal: t.steal.unwrap_or(0),
        }
    }

    /// The whole machine's (the aggregate `cpu` line).
    pub fn read() -> anyhow::Result<Self> {
        Ok(Self::of(&read_proc_stat()?.total))
    }

    /// Ticks spent working (user, system, interrupts; guest time is inside user).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    /// Busy and softirq seconds from `self` to `later`.
    pub fn busy_and_softirq_seconds(&self, later: &Self) -> (f64, f64) {
        let tick = clock_tick_seconds();
        (
            later.busy().saturating_sub(self.busy()) as f64 * tick,
            later.softirq.saturating_sub(self.softirq) as f64 * tick,
        )
    }
}

/// `/proc/stat`: the CPU time lines (aggregate and per CPU), in clock ticks.
pub fn read_proc_stat() -> anyhow::Result<KernelStats> {
    use procfs::CurrentSI as _;
    KernelStats::current().context("reading /proc/stat")
}

/// The length of a `/proc/stat` clock tick (USER_HZ), in seconds.
pub fn clock_tick_seconds() -> f64 {
    let hz = procfs::ticks_per_second();
    1.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// User plus system seconds of the children this process has waited for (wrk, once it
/// has exited), from getrusage(RUSAGE_CHILDREN).
pub fn reaped_children_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// An interface's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// Packets the interface dropped: for a veth, `tx_dropped` includes failed XDP_TX and
    /// frames the peer's full ring refused.
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl LinkCounters {
    /// Parses `ip -s -j link show dev <dev>`.
    pub fn parse_ip_json(text: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("`ip -s -j link` printed no JSON")?;
        let stats = value
            .get(0)
            .and_then(|link| link.get("stats64"))
            .context("no stats64 in `ip -s -j link` output")?;
        let get = |dir: &str, what: &str| {
            stats
                .get(dir)
                .and_then(|d| d.get(what))
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("no stats64.{dir}.{what}"))
        };
        Ok(Self {
            rx_bytes: get("rx", "bytes")?,
            rx_packets: get("rx", "packets")?,
            tx_bytes: get("tx", "bytes")?,
            tx_packets: get("tx", "packets")?,
            rx_dropped: get("rx", "dropped")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(earlier.rx_dropped),
            tx_dropped: self.tx_dropped.saturating_sub(earlier.tx_dropped),
        }
    }
}

/// `ethtool -S <dev>` as name -> value (lines `     rx_queue_0_xdp_packets: 466674`).
pub fn parse_ethtool_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of veth's per-queue counters `rx_queue_<n>_<what>`. veth counts every packet
/// its NAPI poll handles in `rx_queue_<n>_xdp_packets`, with or without an XDP program;
/// packets that bypass NAPI (the per-CPU backlog) are not in it.
pub fn veth_rx_queue_sum(stats: &BTreeMap<String, u64>, what: &str) -> u64 {
    stats
        .iter()
        .filter(|(name, _)| {
            name.strip_prefix("rx_queue_")
                .and_then(|rest| rest.split_once('_'))
                .is_some_and(|(queue, rest)| {
                    queue.bytes().all(|b| b.is_ascii_digit()) && rest == what
                })
        })
        .map(|(_, value)| value)
        .sum()
}

/// Whether a pid still names the same kernel thread.
pub fn thread_is(pid: u32, name: &str) -> bool {
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|stat| stat.comm == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_has_run() {
        let pid = std::process::id();
        assert!(process_cpu_ns(pid) > 0);
        assert!(task_cpu_ns(pid).unwrap() > 0);
        assert_eq!(process_cpu_ns(u32::MAX), 0);
    }

    #[test]
    fn deltas_count_new_processes_and_ignore_vanished_ones() {
        let before = PerProcess::from([(1, 1_000_000_000), (2, 5)]);
        let after = PerProcess::from([(1, 3_500_000_000), (3, 500_000_000)]);
        assert!((delta_seconds(&before, &after) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn proc_stat_cpu_line() {
        use procfs::FromBufReadSI as _;
        let text = "cpu  10 2 30 400 5 6 7 8 9 10\ncpu0 5 1 15 200 2 3 3 4 0 0\nintr 1 2\nctxt 5\nbtime 1\nprocesses 3\nprocs_running 1\nprocs_blocked 0\n";
        let system = procfs::current_system_info();
        let stats = KernelStats::from_buf_read(text.as_bytes(), system).unwrap();
        let t = MachineTicks::of(&stats.total);
        assert_eq!(t.busy(), 10 + 2 + 30 + 6 + 7);
        assert_eq!(t.steal, 8);
        let later = MachineTicks {
            user: 110,
            softirq: 17,
            ..t
        };
        let (busy, softirq) = t.busy_and_softirq_seconds(&later);
        let tick = clock_tick_seconds();
        assert!((busy - 110.0 * tick).abs() < 1e-9);
        assert!((softirq - 10.0 * tick).abs() < 1e-9);
        // The real file parses.
        assert!(MachineTicks::read().unwrap().busy() > 0);
    }

    #[test]
    fn ip_json_link_counters() {
        let text = concat!(
            r#"[{"ifindex":2,"ifname":"eth0","stats64":{"#,
            r#""rx":{"bytes":6386,"packets":58,"errors":0,"dropped":1},"#,
            r#""tx":{"bytes":700,"packets":7,"errors":0,"dropped":2}}}]"#
        );
        let c = LinkCounters::parse_ip_json(text).unwrap();
        assert_eq!(
            c,
            LinkCounters {
                rx_bytes: 6386,
                rx_packets: 58,
                tx_bytes: 700,
                tx_packets: 7,
                rx_dropped: 1,
                tx_dropped: 2,
            }
        );
        let later = LinkCounters {
            rx_bytes: 7386,
            ..c
        };
        assert_eq!(later.since(&c).rx_bytes, 1000);
        assert_eq!(later.since(&c).tx_packets, 0);
        assert!(LinkCounters::parse_ip_json("[]").is_err());
        assert!(LinkCounters::parse_ip_json("Device not found").is_err());
    }

    #[test]
    fn veth_ethtool_stats() {
        let text = "NIC statistics:
     peer_ifindex: 4
     rx_queue_0_xdp_packets: 466674
     rx_queue_0_xdp_bytes: 633130650
     rx_queue_0_xdp_tx: 3
     rx_queue_0_xdp_tx_errors: 1
     rx_queue_1_xdp_packets: 6
     tx_queue_0_xdp_xmit: 0
";
        let stats = parse_ethtool_stats(text);
        assert_eq!(stats["peer_ifindex"], 4);
        assert_eq!(veth_rx_queue_sum(&stats, "xdp_packets"), 466680);
        assert_eq!(veth_rx_queue_sum(&stats, "xdp_tx"), 3);
        assert_eq!(veth_rx_queue_sum(&stats, "xdp_tx_errors"), 1);
        assert_eq!(veth_rx_queue_sum(&stats, "xdp_xmit"), 0);
        assert!(!stats.contains_key("NIC statistics"));
    }

    #[test]
    fn napi_thread_names() {
        assert!(is_napi_thread_of("napi/eth0-532", "eth0"));
        assert!(is_napi_thread_of("napi/vse1-8193", "vse1"));
        assert!(!is_napi_thread_of("napi/eth0-x-5", "eth0"));
        assert!(!is_napi_thread_of("napi/eth01-5", "eth0"));
        assert!(!is_napi_thread_of("napi/eth0-", "eth0"));
        assert!(!is_napi_thread_of("ksoftirqd/0", "eth0"));
        assert!(napi_threads("no-such-dev").is_empty());
        // One per CPU on every Linux machine.
        assert!(!ksoftirqd_threads().is_empty());
    }
}
