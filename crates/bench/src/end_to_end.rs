//! End to end, against what users would deploy instead: wrk on the seed's client, against a
//! VIP served by Ricochet (XDP on se1, Direct Server Return from web01 and web02), and against
//! nginx's stream module as an L4 proxy on the same host se1 in front of the same servers.
//! Requests per second, latency, and the CPU time the load balancer host spends per thousand
//! requests, for responses of 1 KB, 100 KB and 1 MB.
//!
//! Everything runs in one kernel, so "the load balancer host's CPU" needs a rule: the CPU
//! time of the processes in se1's namespace, plus the kernel's receive processing on se1's
//! interface, which threaded NAPI moves into a kernel thread of its own (`napi/eth0-<id>`)
//! whose run time /proc reports. The router's port toward se1 gets a NAPI thread too, so that
//! se1's threads never do the router's work inline.

mod render;
mod wrk;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use ricochet_testbed::{self as tb, Netns, Process, Topology, HTTP_BYTES_PATHS, VIP_V4};
use serde::Serialize;

use crate::sys::{self, LinkCounters, MachineTicks, NapiThread, PerProcess};
use crate::{Body, Ctx};
use render::{draw, headlines, markdown, runs_csv};
use wrk::WrkReport;

/// Where nginx listens on se1 (on its `lo`, routed to se1 by the router like the VIP).
const PROXY_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 242);
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 32;
/// Generous, so that a slow response on this shared 2-CPU machine is measured, not dropped.
const WRK_TIMEOUT: &str = "5s";
/// How long a system gets to answer its first request after it started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two load balancers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    Ricochet,
    Nginx,
}

impl System {
    const BOTH: [System; 2] = [System::Ricochet, System::Nginx];

    fn name(self) -> &'static str {
        match self {
            System::Ricochet => "Ricochet",
            System::Nginx => "nginx",
        }
    }

    fn long_name(self) -> &'static str {
        match self {
            System::Ricochet => "Ricochet (XDP, DSR)",
            System::Nginx => "nginx stream (L4 proxy)",
        }
    }
}

/// The response sizes: label, path, bytes.
fn sizes() -> Vec<(String, &'static str, usize)> {
    HTTP_BYTES_PATHS
        .iter()
        .map(|&(path, len)| (size_label(len), path, len))
        .collect()
}

fn size_label(len: usize) -> String {
    if len >= 1 << 20 {
        format!("{} MB", len >> 20)
    } else {
        format!("{} KB", len >> 10)
    }
}

/// The order of the measured runs, as (size index, system): per size both systems back to
/// back, the one that goes first alternating from size to size; a full run measures each pair
/// twice, mirrored (A B B A), so that drift over time weighs on both alike.
pub fn schedule(sizes: usize, full: bool) -> Vec<(usize, System)> {
    let mut runs = Vec::new();
    for size in 0..sizes {
        let pair = if size % 2 == 0 {
            System::BOTH
        } else {
            [System::Nginx, System::Ricochet]
        };
        runs.extend(pair.iter().map(|&system| (size, system)));
        if full {
            runs.extend(pair.iter().rev().map(|&system| (size, system)));
        }
    }
    runs
}

/// CPU seconds used during one run, by where they were spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuUse {
    /// Processes in se1's namespace: nginx's master and workers, or Ricochet's engine daemon.
    pub lb_processes: f64,
    /// se1's NAPI thread: receiving on its interface (Ricochet's XDP program runs here).
    pub lb_napi: f64,
    /// The router's NAPI thread for its port toward se1.
    pub router_napi: f64,
    /// The processes of web01's and web02's namespaces (nginx).
    pub servers: f64,
    /// wrk, on the client.
    pub client: f64,
    /// The `ksoftirqd/<cpu>` threads: softirq work deferred from whatever task raised it
    /// (the receive backlog of interfaces without NAPI, mostly), attributable to no host.
    pub ksoftirqd: f64,
    /// The whole machine, from /proc/stat (clock ticks, so coarser).
    pub machine_busy: f64,
    pub machine_softirq: f64,
    /// Wall-clock seconds of the measuring window.
    pub wall: f64,
}

impl CpuUse {
    /// The load balancer host's CPU: se1's processes and its NAPI thread.
    pub fn lb(&self) -> f64 {
        self.lb_processes + self.lb_napi
    }

    /// Machine CPU not attributed above: other kernel threads, this program, and anything
    /// else running on the machine. Can be slightly negative: /proc/stat counts in clock
    /// ticks.
    pub fn other(&self) -> f64 {
        self.machine_busy
            - self.lb()
            - self.router_napi
            - self.servers
            - self.client
            - self.ksoftirqd
    }

    fn add(&mut self, o: &CpuUse) {
        self.lb_processes += o.lb_processes;
        self.lb_napi += o.lb_napi;
        self.router_napi += o.router_napi;
        self.servers += o.servers;
        self.client += o.client;
        self.ksoftirqd += o.ksoftirqd;
        self.machine_busy += o.machine_busy;
        self.machine_softirq += o.machine_softirq;
        self.wall += o.wall;
    }
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub size: String,
    pub path: String,
    pub size_bytes: usize,
    pub system: System,
    /// Position in the schedule (0-based).
    pub order: usize,
    pub wrk: WrkReport,
    pub cpu: CpuUse,
    /// se1's interface counters over the run.
    pub lb_iface: LinkCounters,
    /// The counters of the router's port toward se1 (its rx is everything se1 sent, XDP_TX
    /// included).
    pub router_port_to_lb: LinkCounters,
    /// Packets se1's interface received through its NAPI poll (veth's per-queue
    /// `xdp_packets`), to compare with `lb_iface.rx_packets`: the attribution holds when
    /// they are equal.
    pub lb_napi_rx_packets: u64,
    /// XDP_TX frames from se1's interface, and those the veth driver failed to send.
    pub lb_xdp_tx: u64,
    pub lb_xdp_tx_errors: u64,
    /// Why the run's figures are doubtful, if they are.
    pub problems: Vec<String>,
    pub wrk_output: String,
}

/// The runs of one system at one size, taken together.
#[derive(Clone, Debug, Serialize)]
pub struct Aggregate {
    pub size: String,
    pub size_bytes: usize,
    pub system: System,
    pub runs: usize,
    pub requests: u64,
    pub seconds: f64,
    pub bytes_read: f64,
    pub requests_per_s: f64,
    pub requests_per_s_min: f64,
    pub requests_per_s_max: f64,
    pub bytes_per_s: f64,
    /// Means over the runs of wrk's percentiles.
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub cpu: CpuUse,
    /// The load balancer host's CPU seconds per 1000 requests.
    pub lb_cpu_s_per_1k: f64,
    /// Bytes the load balancer host received and sent, per request.
    pub lb_rx_bytes_per_request: f64,
    pub lb_tx_bytes_per_request: f64,
    /// The share of se1's received packets that went through its NAPI thread.
    pub lb_napi_share: f64,
    /// Packets se1's interface dropped on the way out, per 1000 requests (a veth's ring
    /// toward the router holds 256 frames; XDP_TX and the stack both meet it).
    pub lb_tx_dropped_per_1k: f64,
    pub problems: Vec<String>,
}

impl Aggregate {
    /// CPU seconds per 1000 requests.
    fn per_1k(&self, seconds: f64) -> f64 {
        if self.requests == 0 {
            f64::NAN
        } else {
            seconds / self.requests as f64 * 1000.0
        }
    }
}

/// Totals per (size, system), in the order sizes then systems (Ricochet first).
pub fn aggregate(runs: &[Run]) -> Vec<Aggregate> {
    let mut out = Vec::new();
    let mut sizes: Vec<(&str, usize)> = Vec::new();
    for run in runs {
        if !sizes.iter().any(|(label, _)| *label == run.size) {
            sizes.push((&run.size, run.size_bytes));
        }
    }
    for (size, size_bytes) in sizes {
        for system in System::BOTH {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.size == size && r.system == system)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let requests: u64 = mine.iter().map(|r| r.wrk.requests).sum();
            let seconds: f64 = mine.iter().map(|r| r.wrk.seconds).sum();
            let bytes_read: f64 = mine.iter().map(|r| r.wrk.bytes_read).sum();
            let mut cpu = CpuUse::default();
            let (mut rx, mut tx, mut rx_packets, mut napi_packets, mut dropped) =
                (0u64, 0u64, 0u64, 0u64, 0u64);
            for r in &mine {
                cpu.add(&r.cpu);
                rx += r.lb_iface.rx_bytes;
                tx += r.router_port_to_lb.rx_bytes;
                rx_packets += r.lb_iface.rx_packets;
                napi_packets += r.lb_napi_rx_packets;
                dropped += r.lb_iface.tx_dropped;
            }
            let rates: Vec<f64> = mine.iter().map(|r| r.wrk.requests_per_s).collect();
            let mean = |f: &dyn Fn(&WrkReport) -> Option<f64>| {
                let values: Vec<f64> = mine.iter().filter_map(|r| f(&r.wrk)).collect();
                values.iter().sum::<f64>() / values.len().max(1) as f64
            };
            let per_request = |bytes: u64| {
                if requests == 0 {
                    f64::NAN
                } else {
                    bytes as f64 / requests as f64
                }
            };
            let mut problems = Vec::new();
            for r in &mine {
                for p in &r.problems {
                    problems.push(format!("run {}: {p}", r.order + 1));
                }
            }
            let mut agg = Aggregate {
                size: size.to_owned(),
                size_bytes,
                system,
                runs: mine.len(),
                requests,
                seconds,
                bytes_read,
                requests_per_s: if seconds > 0.0 {
                    requests as f64 / seconds
                } else {
                    0.0
                },
                requests_per_s_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                requests_per_s_max: rates.iter().copied().fold(0.0, f64::max),
                bytes_per_s: if seconds > 0.0 {
                    bytes_read / seconds
                } else {
                    0.0
                },
                latency_p50_s: mean(&|w| w.latency(50.0)),
                latency_p99_s: mean(&|w| w.latency(99.0)),
                cpu,
                lb_cpu_s_per_1k: 0.0,
                lb_rx_bytes_per_request: per_request(rx),
                lb_tx_bytes_per_request: per_request(tx),
                lb_napi_share: if rx_packets == 0 {
                    f64::NAN
                } else {
                    napi_packets as f64 / rx_packets as f64
                },
                lb_tx_dropped_per_1k: per_request(dropped) * 1000.0,
                problems,
            };
            agg.lb_cpu_s_per_1k = agg.per_1k(cpu.lb());
            out.push(agg);
        }
    }
    out
}

/// Fails with what to install when a program is not on the PATH.
fn require_program(name: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    ensure!(
        found,
        "`{name}` is not installed: install Debian's {package} (`cargo xtask setup` does)"
    );
    Ok(())
}

/// The seed's network with web01 and web02 DSR-ready and serving, se1 ready for either
/// load balancer, and threaded NAPI where the attribution needs it. Drop undoes
/// `ricochet server setup` (its record lives in /run, outside the namespaces), detaches any
/// data plane left on se1, and removes the pins and files, before the topology goes.
struct Bed {
    topo: Topology,
    ricochet: PathBuf,
    dir: PathBuf,
    se_pins: PathBuf,
    /// Pin directories of the servers set up so far (undone on drop).
    server_pins: Vec<(usize, PathBuf)>,
    web: Vec<Process>,
    lb_napi: Vec<NapiThread>,
    router_napi: Vec<NapiThread>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        // Stop the servers before undoing their setup.
        self.web.clear();
        let _ = self.detach();
        for (i, pin) in &self.server_pins {
            let host = self.servers()[*i];
            let out = host.ns.output(&[
                self.ricochet_str(),
                "server",
                "undo",
                "--interface",
                host.iface,
                "--pin-dir",
                &pin.to_string_lossy(),
            ]);
            match out {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "end-to-end: `ricochet server undo` on {} failed: {}",
                    host.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(error) => eprintln!("end-to-end: undoing server setup: {error:#}"),
            }
            let _ = std::fs::remove_dir_all(pin);
        }
        let _ = std::fs::remove_dir_all(&self.se_pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bed {
    fn new(ricochet: PathBuf) -> anyhow::Result<Bed> {
        let topo = Topology::seed()?;
        // Named after the topology (`rc<pid>-<n>-...`), so that a killed run's leftovers are
        // swept by the next one.
        let dir = std::env::temp_dir().join(format!("{}e2e-bench", topo.prefix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let se_pins = PathBuf::from(format!("/sys/fs/bpf/{}se1", topo.prefix()));
        let mut bed = Bed {
            topo,
            ricochet,
            dir,
            se_pins,
            server_pins: Vec::new(),
            web: Vec::new(),
            lb_napi: Vec::new(),
            router_napi: Vec::new(),
        };
        bed.set_up()?;
        Ok(bed)
    }

    fn ricochet_str(&self) -> &str {
        self.ricochet.to_str().unwrap_or("ricochet")
    }

    fn servers(&self) -> [&tb::Host; 2] {
        [&self.topo.web01, &self.topo.web02]
    }

    fn set_up(&mut self) -> anyhow::Result<()> {
        let vip = VIP_V4.to_string();
        for i in 0..2 {
            let name = self.servers()[i].name;
            let pin = PathBuf::from(format!("/sys/fs/bpf/{}{name}", self.topo.prefix()));
            self.server_pins.push((i, pin.clone()));
            let host = self.servers()[i];
            run_checked(
                &host.ns,
                &[
                    self.ricochet_str(),
                    "server",
                    "setup",
                    "--vip",
                    &vip,
                    "--interface",
                    host.iface,
                    "--pin-dir",
                    &pin.to_string_lossy(),
                ],
            )?;
            let nginx = tb::start_nginx(&host.ns, host.name)?;
            self.web.push(nginx);
        }
        // Offloads as on real NICs, where the veth defaults differ: checksums offloaded on
        // every host whose packets nobody re-encapsulates (the client's stay complete because
        // Ricochet encapsulates them), TSO off so that the veth "wire" carries MTU-sized
        // frames as a real one does; GRO on se1, as on a real NIC, which also gives its veth
        // the NAPI instance that threaded NAPI needs.
        for host in [&self.topo.se1, &self.topo.web01, &self.topo.web02] {
            host.ns
                .exec(&["ethtool", "-K", host.iface, "tx", "on", "tso", "off"])?;
        }
        let se1 = &self.topo.se1;
        se1.ns.ethtool_feature(se1.iface, "gro", true)?;
        // A queueing discipline, as a real NIC has (veth gets none): when the veth's ring
        // toward the router is full, the kernel then holds nginx's TCP back instead of
        // dropping its packets. XDP_TX does not go through it.
        se1.ns.exec(&[
            "tc",
            "qdisc",
            "replace",
            "dev",
            se1.iface,
            "root",
            "pfifo_fast",
        ])?;
        se1.ns
            .ip(&["addr", "add", &format!("{PROXY_V4}/32"), "dev", "lo"])?;
        self.topo.route_vip(PROXY_V4.into(), se1.ipv4.into())?;
        self.lb_napi = sys::threaded_napi(&se1.ns, se1.iface)?;
        self.router_napi = sys::threaded_napi(&self.topo.router.ns, se1.router_port)?;
        std::fs::write(
            self.dir.join("ricochet.yaml"),
            ricochet_testbed::web_vs_config(VIP_V4, &[self.topo.web01.ipv4, self.topo.web02.ipv4]),
        )?;
        Ok(())
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn start_engine(&self) -> anyhow::Result<Process> {
        let config = self.dir.join("ricochet.yaml");
        let mut engine = self.topo.se1.ns.spawn(&[
            self.ricochet_str(),
            "engine",
            "--config",
            &config.to_string_lossy(),
            "--interface",
            self.topo.se1.iface,
            "--pin-dir",
            &self.se_pins.to_string_lossy(),
            "--state-dir",
            &self.state_dir().to_string_lossy(),
        ])?;
        engine
            .wait_for_output("engine running")
            .with_context(|| format!("starting the Ricochet engine: {}", engine.report()))?;
        Ok(engine)
    }

    /// Removes Ricochet's data plane from se1 (stopping the daemon leaves it forwarding).
    fn detach(&self) -> anyhow::Result<()> {
        if !self.se_pins.exists() {
            return Ok(());
        }
        run_checked(
            &self.topo.se1.ns,
            &[
                self.ricochet_str(),
                "detach",
                "--interface",
                self.topo.se1.iface,
                "--pin-dir",
                &self.se_pins.to_string_lossy(),
                "--state-dir",
                &self.state_dir().to_string_lossy(),
            ],
        )?;
        let _ = std::fs::remove_dir_all(&self.se_pins);
        Ok(())
    }

    fn start_proxy(&self) -> anyhow::Result<Process> {
        let upstreams: Vec<SocketAddr> = self
            .servers()
            .iter()
            .map(|h| SocketAddr::new(h.ipv4.into(), 80))
            .collect();
        tb::start_nginx_stream_proxy(
            &self.topo.se1.ns,
            SocketAddr::new(PROXY_V4.into(), 80),
            &upstreams,
        )
    }

    /// Waits until a GET from the client through the load balancer succeeds (Ricochet's
    /// engine resolves the servers' next hops when it starts).
    fn wait_ready(&self, addr: Ipv4Addr) -> anyhow::Result<()> {
        let url = tb::http_url(IpAddr::V4(addr), "/");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match tb::http_get(&self.topo.client.ns, &url) {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(error)
                        .with_context(|| format!("{url} did not answer within {READY_TIMEOUT:?}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn napi_ns(threads: &[NapiThread]) -> anyhow::Result<u64> {
        let mut total = 0;
        for t in threads {
            ensure!(
                sys::thread_is(t.pid, &t.name),
                "the NAPI thread {} (pid {}) is gone: the kernel re-created the device's NAPI \
                 instance, so the attribution would be wrong",
                t.name,
                t.pid
            );
            total += sys::task_cpu_ns(t.pid)?;
        }
        Ok(total)
    }

    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut servers = Vec::new();
        for host in self.servers() {
            servers.extend(host.ns.pids()?);
        }
        Ok(Snapshot {
            lb_processes: sys::processes_cpu_ns(&self.topo.se1.ns.pids()?),
            servers: sys::processes_cpu_ns(&servers),
            lb_napi_ns: Self::napi_ns(&self.lb_napi)?,
            router_napi_ns: Self::napi_ns(&self.router_napi)?,
            ksoftirqd: sys::processes_cpu_ns(&sys::ksoftirqd_threads()),
            machine: MachineTicks::read()?,
            children_s: sys::reaped_children_seconds(),
            at: Instant::now(),
        })
    }

    /// se1's veth statistics (`ethtool -S`).
    fn lb_veth_stats(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let out = self
            .topo
            .se1
            .ns
            .exec(&["ethtool", "-S", self.topo.se1.iface])?;
        Ok(sys::parse_ethtool_stats(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }

    fn link_counters(&self) -> anyhow::Result<(LinkCounters, LinkCounters)> {
        let read = |ns: &Netns, dev: &str| -> anyhow::Result<LinkCounters> {
            let out = ns.ip(&["-s", "-j", "link", "show", "dev", dev])?;
            LinkCounters::parse_ip_json(&String::from_utf8_lossy(&out.stdout))
        };
        Ok((
            read(&self.topo.se1.ns, self.topo.se1.iface)?,
            read(&self.topo.router.ns, self.topo.se1.router_port)?,
        ))
    }

    /// Runs wrk from the client against `url` for `seconds`, measuring CPU and counters
    /// around it.
    fn measure(&self, url: &str, seconds: u32) -> anyhow::Result<Measured> {
        // The NAPI counter's window lies inside the interface counters' window, so that
        // "all received packets went through NAPI" reads as at most 100%.
        let links_before = self.link_counters()?;
        let veth_before = self.lb_veth_stats()?;
        let before = self.snapshot()?;
        let output = self
            .topo
            .client
            .ns
            .command("wrk")
            .args([
                format!("-t{WRK_THREADS}"),
                format!("-c{WRK_CONNECTIONS}"),
                format!("-d{seconds}s"),
                format!("--timeout={WRK_TIMEOUT}"),
                "--latency".to_owned(),
                url.to_owned(),
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .context("running wrk in the client namespace")?;
        let after = self.snapshot()?;
        let veth_after = self.lb_veth_stats()?;
        let links_after = self.link_counters()?;
        let veth = |what: &str| {
            sys::veth_rx_queue_sum(&veth_after, what)
                .saturating_sub(sys::veth_rx_queue_sum(&veth_before, what))
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            bail!("wrk against {url} failed ({}):\n{text}", output.status);
        }
        let report = wrk::parse(&text)?;
        let cpu = before.until(&after);
        Ok(Measured {
            report,
            text,
            cpu,
            lb_iface: links_after.0.since(&links_before.0),
            router_port_to_lb: links_after.1.since(&links_before.1),
            lb_napi_rx_packets: veth("xdp_packets"),
            lb_xdp_tx: veth("xdp_tx"),
            lb_xdp_tx_errors: veth("xdp_tx_errors"),
        })
    }

    /// CPU used with no traffic at all, to check that the attributed threads are quiet.
    fn idle(&self, duration: Duration) -> anyhow::Result<CpuUse> {
        let before = self.snapshot()?;
        std::thread::sleep(duration);
        let after = self.snapshot()?;
        Ok(before.until(&after))
    }

    /// Starts `system`, waits until it answers, measures (after a warm-up run if asked), and
    /// stops it again, leaving se1 bare.
    fn run_system(
        &self,
        system: System,
        path: &str,
        seconds: u32,
        warmup: Option<u32>,
    ) -> anyhow::Result<Measured> {
        match system {
            System::Ricochet => {
                let mut engine = self.start_engine()?;
                let measured = self
                    .wait_ready(VIP_V4)
                    .and_then(|()| self.warm_and_measure(VIP_V4, path, seconds, warmup));
                let stopped = engine.stop();
                let detached = self.detach();
                let measured = measured.with_context(|| engine.report())?;
                stopped?;
                detached?;
                Ok(measured)
            }
            System::Nginx => {
                let mut proxy = self.start_proxy()?;
                let measured = self
                    .wait_ready(PROXY_V4)
                    .and_then(|()| self.warm_and_measure(PROXY_V4, path, seconds, warmup))
                    .with_context(|| proxy.report())?;
                proxy.stop()?;
                Ok(measured)
            }
        }
    }

    fn warm_and_measure(
        &self,
        addr: Ipv4Addr,
        path: &str,
        seconds: u32,
        warmup: Option<u32>,
    ) -> anyhow::Result<Measured> {
        let url = tb::http_url(IpAddr::V4(addr), path);
        if let Some(warmup) = warmup {
            self.measure(&url, warmup)?;
        }
        self.measure(&url, seconds)
    }
}

struct Snapshot {
    lb_processes: PerProcess,
    servers: PerProcess,
    lb_napi_ns: u64,
    router_napi_ns: u64,
    ksoftirqd: PerProcess,
    machine: MachineTicks,
    children_s: f64,
    at: Instant,
}

impl Snapshot {
    /// CPU used from this snapshot to `later`.
    fn until(&self, later: &Snapshot) -> CpuUse {
        let (busy, softirq) = self.machine.busy_and_softirq_seconds(&later.machine);
        let ns = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
        CpuUse {
            lb_processes: sys::delta_seconds(&self.lb_processes, &later.lb_processes),
            lb_napi: ns(self.lb_napi_ns, later.lb_napi_ns),
            router_napi: ns(self.router_napi_ns, later.router_napi_ns),
            servers: sys::delta_seconds(&self.servers, &later.servers),
            client: later.children_s - self.children_s,
            ksoftirqd: sys::delta_seconds(&self.ksoftirqd, &later.ksoftirqd),
            machine_busy: busy,
            machine_softirq: softirq,
            wall: (later.at - self.at).as_secs_f64(),
        }
    }
}

struct Measured {
    report: WrkReport,
    text: String,
    cpu: CpuUse,
    lb_iface: LinkCounters,
    router_port_to_lb: LinkCounters,
    lb_napi_rx_packets: u64,
    lb_xdp_tx: u64,
    lb_xdp_tx_errors: u64,
}

/// What makes a run's CPU attribution or forwarding doubtful.
fn attribution_problems(m: &Measured) -> Vec<String> {
    let mut problems = Vec::new();
    let rx = m.lb_iface.rx_packets;
    if m.report.requests > 0 && m.cpu.lb_napi <= 0.0 {
        problems.push("se1's NAPI thread used no CPU: the receive work went elsewhere".to_owned());
    }
    // Packets that arrive between the readings of the two counters (separate commands, a
    // few milliseconds apart) are missing from the NAPI count; a bypass of NAPI would miss
    // whole classes of packets (e.g. everything from the router), far more than that.
    if rx > 0 && (m.lb_napi_rx_packets as f64) < 0.95 * rx as f64 {
        problems.push(format!(
            "only {} of the {rx} packets se1 received went through its NAPI thread",
            m.lb_napi_rx_packets
        ));
    }
    problems
}

fn run_checked(ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let out = ns.output(args)?;
    if !out.status.success() {
        bail!(
            "`{}` in {} failed: {}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let ricochet = ctx.ricochet_binary()?;
    require_program("wrk", "wrk")?;
    require_program("nginx", "nginx")?;
    ensure!(
        Path::new(tb::NGINX_STREAM_MODULE).exists(),
        "nginx's stream module {} is missing: install Debian's libnginx-mod-stream (`cargo \
         xtask setup` does)",
        tb::NGINX_STREAM_MODULE
    );
    let (seconds, warmup) = if ctx.quick { (2, None) } else { (8, Some(1)) };
    let started = Instant::now();
    let bed = Bed::new(ricochet)?;
    let setup_s = started.elapsed().as_secs_f64();
    let idle = bed.idle(Duration::from_millis(if ctx.quick { 500 } else { 2000 }))?;

    let sizes = sizes();
    let mut runs = Vec::new();
    for (order, (size_i, system)) in schedule(sizes.len(), !ctx.quick).into_iter().enumerate() {
        let (label, path, len) = &sizes[size_i];
        eprintln!("end-to-end: {} {label}...", system.name());
        let m = bed
            .run_system(system, path, seconds, warmup)
            .with_context(|| format!("{} with {label} responses", system.long_name()))?;
        let mut problems = m.report.problems();
        problems.extend(attribution_problems(&m));
        runs.push(Run {
            size: label.clone(),
            path: path.to_string(),
            size_bytes: *len,
            system,
            order,
            wrk: m.report,
            cpu: m.cpu,
            lb_iface: m.lb_iface,
            router_port_to_lb: m.router_port_to_lb,
            lb_napi_rx_packets: m.lb_napi_rx_packets,
            lb_xdp_tx: m.lb_xdp_tx,
            lb_xdp_tx_errors: m.lb_xdp_tx_errors,
            problems,
            wrk_output: m.text,
        });
    }
    let lb_napi = bed.lb_napi.clone();
    let router_napi = bed.router_napi.clone();
    drop(bed);

    let aggregates = aggregate(&runs);
    let raw = ctx.write_raw_json(
        "end_to_end.json",
        &serde_json::json!({
            "wrk": {
                "threads": WRK_THREADS,
                "connections": WRK_CONNECTIONS,
                "seconds": seconds,
                "warmup_seconds": warmup,
                "timeout": WRK_TIMEOUT,
            },
            "setup_seconds": setup_s,
            "lb_napi_threads": lb_napi,
            "router_napi_threads": router_napi,
            "idle": idle,
            "aggregates": aggregates,
            "runs": runs,
        }),
    )?;
    let csv = ctx.write_raw_text("end_to_end_runs.csv", &runs_csv(&runs))?;
    let plots = draw(ctx, &aggregates)?;
    let markdown = markdown(
        ctx,
        &aggregates,
        &runs,
        &idle,
        seconds,
        warmup,
        &raw,
        &csv,
        &plots,
    );
    Ok(Body {
        markdown,
        headlines: headlines(&aggregates),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_alternates_and_mirrors() {
        use System::{Nginx as N, Ricochet as R};
        assert_eq!(
            schedule(3, false),
            [(0, R), (0, N), (1, N), (1, R), (2, R), (2, N)]
        );
        let full = schedule(2, true);
        assert_eq!(
            full,
            [
                (0, R),
                (0, N),
                (0, N),
                (0, R),
                (1, N),
                (1, R),
                (1, R),
                (1, N)
            ]
        );
        for size in 0..2 {
            for system in System::BOTH {
                assert_eq!(full.iter().filter(|&&r| r == (size, system)).count(), 2);
            }
        }
    }

    #[test]
    fn ricochet_config_is_valid() {
        let text = ricochet_testbed::web_vs_config(
            VIP_V4,
            &[
                Ipv4Addr::new(192, 168, 33, 10),
                Ipv4Addr::new(192, 168, 34, 10),
            ],
        );
        let config = ricochet_config::Config::from_yaml_str(&text).unwrap();
        config.validate().unwrap();
        assert!(text.contains("      - { ip: 192.168.34.10 }\n"));
        assert!(text.contains("vip: 192.168.35.241"));
    }

    #[test]
    fn size_labels() {
        let labels: Vec<String> = sizes().into_iter().map(|(l, _, _)| l).collect();
        assert_eq!(labels, ["1 KB", "100 KB", "1 MB"]);
    }

    fn run(size: &str, system: System, order: usize, requests: u64, lb_s: f64) -> Run {
        let text = include_str!("end_to_end/testdata/wrk_ok_1k.txt");
        let mut wrk = wrk::parse(text).unwrap();
        wrk.requests = requests;
        wrk.seconds = 2.0;
        wrk.requests_per_s = requests as f64 / 2.0;
        Run {
            size: size.to_owned(),
            path: "/bytes/1k".to_owned(),
            size_bytes: 1024,
            system,
            order,
            problems: wrk.problems(),
            wrk,
            cpu: CpuUse {
                lb_processes: lb_s / 2.0,
                lb_napi: lb_s / 2.0,
                machine_busy: 4.0,
                ..CpuUse::default()
            },
            lb_iface: LinkCounters {
                rx_bytes: requests * 100,
                rx_packets: requests * 2,
                ..LinkCounters::default()
            },
            router_port_to_lb: LinkCounters::default(),
            lb_napi_rx_packets: requests,
            lb_xdp_tx: 0,
            lb_xdp_tx_errors: 0,
            wrk_output: String::new(),
        }
    }

    #[test]
    fn aggregates_sum_runs_then_divide() {
        let runs = [
            run("1 KB", System::Ricochet, 0, 2000, 0.1),
            run("1 KB", System::Nginx, 1, 1000, 0.5),
            run("1 KB", System::Nginx, 2, 3000, 1.5),
            run("1 KB", System::Ricochet, 3, 6000, 0.3),
        ];
        let aggs = aggregate(&runs);
        assert_eq!(aggs.len(), 2);
        let r = &aggs[0];
        assert_eq!((r.system, r.runs, r.requests), (System::Ricochet, 2, 8000));
        assert!((r.requests_per_s - 2000.0).abs() < 1e-9);
        assert!((r.requests_per_s_min - 1000.0).abs() < 1e-9);
        assert!((r.requests_per_s_max - 3000.0).abs() < 1e-9);
        assert!((r.lb_cpu_s_per_1k - 0.05).abs() < 1e-12);
        assert!((r.lb_rx_bytes_per_request - 100.0).abs() < 1e-9);
        assert!((r.lb_napi_share - 0.5).abs() < 1e-12);
        let n = &aggs[1];
        assert!((n.lb_cpu_s_per_1k - 0.5).abs() < 1e-12);
        assert!((render::ratio(r.lb_cpu_s_per_1k, n.lb_cpu_s_per_1k).unwrap() - 0.1).abs() < 1e-12);
        assert!(r.problems.is_empty());
        let lines = headlines(&aggs);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("1 KB responses: Ricochet 2000 req/s"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn csv_rows_have_as_many_fields_as_the_header() {
        let csv = runs_csv(&[run("1 KB", System::Ricochet, 0, 2000, 0.1)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(
            lines[1].starts_with("1,1 KB,Ricochet,2000,2.0000,1000.00,"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn problems_are_carried_with_the_run_number() {
        let mut bad = run("1 MB", System::Nginx, 4, 10, 0.1);
        bad.problems = vec!["socket errors: connect 0, read 3, write 0, timeout 0".into()];
        let aggs = aggregate(&[run("1 MB", System::Ricochet, 3, 10, 0.1), bad]);
        assert_eq!(
            aggs[1].problems,
            ["run 5: socket errors: connect 0, read 3, write 0, timeout 0"]
        );
        assert!(headlines(&aggs)[0].ends_with("(runs with errors: see the section)"));
    }

    #[test]
    fn attribution_is_doubted_when_receive_work_bypasses_napi() {
        let report = wrk::parse(include_str!("end_to_end/testdata/wrk_ok_1k.txt")).unwrap();
        let measured = |napi_s: f64, rx: u64, napi_rx: u64| Measured {
            report: report.clone(),
            text: String::new(),
            cpu: CpuUse {
                lb_napi: napi_s,
                ..CpuUse::default()
            },
            lb_iface: LinkCounters {
                rx_packets: rx,
                ..LinkCounters::default()
            },
            router_port_to_lb: LinkCounters::default(),
            lb_napi_rx_packets: napi_rx,
            lb_xdp_tx: 0,
            lb_xdp_tx_errors: 0,
        };
        assert!(attribution_problems(&measured(1.0, 1000, 985)).is_empty());
        assert_eq!(
            attribution_problems(&measured(1.0, 1000, 500)),
            ["only 500 of the 1000 packets se1 received went through its NAPI thread"]
        );
        assert_eq!(
            attribution_problems(&measured(0.0, 1000, 1000)),
            ["se1's NAPI thread used no CPU: the receive work went elsewhere"]
        );
    }
}
