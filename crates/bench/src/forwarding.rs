//! Forwarding rate through a veth: Ricochet against a trivial XDP_TX bounce in the same
//! run, and Ricochet as the number of virtual services grows.
//!
//! The bed: two namespaces, a generator (`gen`) and the devices under test (`dut`), joined
//! by three veth pairs, one per device under test: `bench_drop` (drops everything: the
//! generator's ceiling), the trivial `xdp_tx` (bounces every frame back: the floor of
//! any XDP forwarder) and Ricochet's load balancer. All three stay attached for the whole
//! run; a measurement picks its device by the veth the generator sends into, so the
//! configurations are interleaved round by round without reloading anything.
//!
//! The generator is the kernel's own: BPF_PROG_TEST_RUN in live-frames mode runs
//! `bench_gen` (crates/ebpf/src/bin/bench.rs) on a frame "received" on the generator's
//! veth, and its XDP_TX sends the frame into the device under test; `bench_sink` on the
//! generator's veth counts and drops what comes back. Every veth runs threaded NAPI. The
//! generator (and this benchmark's thread) has one CPU to itself; the DUTs' NAPI threads
//! and the sink's share the other. The sink is not with the generator because receiving
//! a frame costs about what bouncing it does: there, the generator could never outrun a
//! bounce. Its cost per frame is the same for every DUT, so the primary figure is the
//! DUT's rate per CPU-second of its own NAPI thread, measured while frames were waiting.
//!
//! Rates come from counters read before and after a fixed window: the veths' own
//! (`ethtool -S`: frames the device handled, sent back, and what the full rings refused),
//! the generator's and the sink's per-CPU counters, the NAPI threads' run time, and
//! Ricochet's reason counters, which must show the frames as forwarded.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use ricochet_common::{FlowKey, PROTO_TCP};
use ricochet_config::{Desired, DesiredPool, DesiredServer, DesiredService, HashMode, PortSpec};
use ricochet_dataplane::{
    kernel::{AttachMode, KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};
use ricochet_engine::Engine;
use ricochet_testbed::Netns;
use serde::Serialize;

use crate::plot::{self, Axes, BarGroup, Series};
use crate::report::table;
use crate::stats::Summary;
use crate::sys;
use crate::{Body, Ctx};

/// CPU of the generator (and of this section's own threads and tools).
const GEN_CPU: usize = 0;
/// CPU of the devices under test: their NAPI threads and the sink's.
const DUT_CPU: usize = 1;

/// Frame length without FCS: the 64-byte minimum Ethernet frame.
const FRAME_LEN: u16 = 60;
/// Distinct five-tuples the generator cycles through (all fit Ricochet's flow table, so
/// the measured path is that of established flows), except on the flow curve.
const FLOWS: u32 = 65_536;
/// The flow curve: Ricochet with 1 VS as the generator cycles through this many flows
/// (the 64k point is the main comparison's).
const FLOW_COUNTS: [u32; 7] = [1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304];
/// Ricochet's flow-table capacity here: every flow of the curve (written before the first
/// round) and those the 100- and 10,000-VS configurations learn fit without eviction.
const FLOW_TABLE: u32 = 1 << 23;
/// Client ports per client address in `bench_gen` (crates/ebpf/src/bin/bench.rs): flow `f`
/// is client `client_base + f / PORTS_PER_CLIENT`, source port `1024 + f % PORTS_PER_CLIENT`.
const GEN_PORTS_PER_CLIENT: u32 = 64_000;
/// Target: Ricochet (1 VS, 64k flows) over the bounce, per DUT CPU-second.
const BOUNCE_RATIO_TARGET: f64 = 0.5;
/// Numbers of virtual services measured.
const VS_COUNTS: [u32; 3] = [1, 100, 10_000];
/// Servers of the (shared) pool.
const SERVERS: u8 = 4;

const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const FIRST_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const FIRST_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 0);
const FIRST_VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
const SERVICE_PORT: u16 = 80;

/// The generator's parameters, entry 0 of `GEN_CONFIG`: the layout of `GenConfig` in
/// crates/ebpf/src/bin/bench.rs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GenConfig {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    client_base: [u8; 4],
    vip_base: [u8; 4],
    vip_count: u32,
    flow_count: u32,
    dport: [u8; 2],
    frame_len: u16,
}
const _: () = assert!(std::mem::size_of::<GenConfig>() == 32);
// SAFETY: repr(C), only integers and byte arrays, no padding (size asserted above).
unsafe impl aya::Pod for GenConfig {}

/// The devices under test, one veth pair each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Dut {
    Drop,
    Bounce,
    Ricochet,
}

impl Dut {
    const ALL: [Dut; 3] = [Dut::Drop, Dut::Bounce, Dut::Ricochet];
    fn tag(self) -> &'static str {
        match self {
            Dut::Drop => "x",
            Dut::Bounce => "b",
            Dut::Ricochet => "r",
        }
    }
}

/// One measured configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct Config {
    dut: Dut,
    /// Virtual services (and VIPs) the generator spreads its flows over.
    services: u32,
    /// Flows the generator cycles through.
    flows: u32,
}

impl Config {
    fn label(self) -> String {
        match self.dut {
            Dut::Drop => "DUT drops (generator's ceiling)".into(),
            Dut::Bounce => "XDP_TX bounce".into(),
            Dut::Ricochet if self.flows == FLOWS => format!("Ricochet, {} VS", self.services),
            Dut::Ricochet => format!(
                "Ricochet, {} VS, {} flows",
                self.services,
                short_flows(self.flows)
            ),
        }
    }
}

/// The configurations of one round, in the order they run.
fn round_configs() -> Vec<Config> {
    let mut configs = vec![
        Config {
            dut: Dut::Drop,
            services: 1,
            flows: FLOWS,
        },
        Config {
            dut: Dut::Bounce,
            services: 1,
            flows: FLOWS,
        },
    ];
    configs.extend(VS_COUNTS.iter().map(|&services| Config {
        dut: Dut::Ricochet,
        services,
        flows: FLOWS,
    }));
    configs.extend(
        FLOW_COUNTS
            .iter()
            .filter(|&&flows| flows != FLOWS)
            .map(|&flows| Config {
                dut: Dut::Ricochet,
                services: 1,
                flows,
            }),
    );
    configs
}

/// The flow count in short form: 1k, 64k, 4M.
/// A summary's "min – max" cell, in Mpps.
fn mpps_span(s: &Summary) -> String {
    format!("{} – {}", mpps(s.min), mpps(s.max))
}

fn short_flows(n: u32) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}k", n >> 10)
    } else {
        n.to_string()
    }
}

/// Flow `f` of the generator with one VIP: its client address and source port, as
/// `bench_gen` writes them.
fn gen_flow(f: u32) -> (Ipv4Addr, u16) {
    (
        nth_addr(FIRST_CLIENT, f / GEN_PORTS_PER_CLIENT),
        (1024 + f % GEN_PORTS_PER_CLIENT) as u16,
    )
}

/// One veth pair: the generator's end and the device under test's end.
struct Pair {
    dut: Dut,
    gen_if: String,
    dut_if: String,
    gen_ifindex: u32,
    gen_mac: [u8; 6],
    dut_mac: [u8; 6],
    sink_napi: u32,
    dut_napi: u32,
    /// Id of the XDP program on the DUT's end (for its run-time statistics).
    dut_prog: u32,
}

/// Busy and total clock ticks of each CPU, from `/proc/stat`'s `cpuN` lines (idle and
/// iowait are not busy; guest time is inside user).
fn per_cpu_ticks(stats: &procfs::KernelStats) -> BTreeMap<usize, (u64, u64)> {
    stats
        .cpu_time
        .iter()
        .enumerate()
        .map(|(cpu, t)| {
            let t = sys::MachineTicks::of(t);
            let busy = t.busy() + t.steal;
            (cpu, (busy, busy + t.idle + t.iowait))
        })
        .collect()
}

/// The address `index` places after `base`.
fn nth_addr(base: Ipv4Addr, index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(index))
}

/// The desired state with `count` virtual services (one VIP each, TCP port 80) sharing
/// one pool of [`SERVERS`] servers.
fn desired(count: u32) -> Desired {
    let servers = (0..SERVERS)
        .map(|i| DesiredServer {
            ip: IpAddr::V4(nth_addr(FIRST_SERVER, i.into())),
            ratio: 1,
            enabled: true,
        })
        .collect::<Vec<_>>();
    let pool = DesiredPool {
        name: "bench-pool".into(),
        table_size: ricochet_config::table::default_table_size(servers.len()),
        servers,
    };
    let services = (0..count)
        .map(|i| DesiredService {
            // Zero-padded: the engine expects services sorted by name.
            name: format!("vs{i:05}"),
            vip: IpAddr::V4(nth_addr(FIRST_VIP, i)),
            protocol: ricochet_config::Protocol::Tcp,
            ports: PortSpec::Ranges(vec![(SERVICE_PORT, SERVICE_PORT)]),
            pool: pool.name.clone(),
            hash: HashMode::SourceIpAndPort,
            idle_timeout_secs: 300,
            encapsulation: Default::default(),
        })
        .collect();
    Desired {
        services,
        pools: vec![pool],
    }
}

/// Writes the flows of the curve (the generator's first `max(FLOW_COUNTS)` flows to the
/// single VIP) into Ricochet's flow table, each to a server of the pool, so that every
/// point of the curve measures established flows from its first frame: a warm-up could
/// not learn four million flows (most frames are refused by the full ring). Each point
/// cycles through the first N of them; the windows' new-flow counts show any that missed.
fn fill_curve_flows(
    engine: &mut Engine<KernelDataplane>,
    consult_flows: bool,
) -> anyhow::Result<()> {
    let total = FLOW_COUNTS[FLOW_COUNTS.len() - 1];
    let start = Instant::now();
    let mut flows = Vec::with_capacity(total as usize);
    let picker = engine.flow_picker()?;
    for f in 0..total {
        let (client, sport) = gen_flow(f);
        let key = FlowKey::new(
            client.into(),
            sport,
            FIRST_VIP.into(),
            SERVICE_PORT,
            PROTO_TCP,
        );
        // Each on its Maglev pick, as traffic records them.
        let value = picker(&key).ok_or_else(|| anyhow!("flow {f} has no Maglev pick"))?;
        flows.push((key, value));
    }
    drop(picker);
    for (f, (key, value)) in flows.iter().enumerate() {
        engine
            .dataplane_mut()
            .insert_flow(key, value)
            .with_context(|| format!("writing flow {f} of the curve"))?;
    }
    // The steady state clears the flags (the engine's scan: no flow disagrees), unless
    // asked to measure with the flow table consulted.
    let scan = Instant::now();
    while !consult_flows && engine.consulting() {
        let r = engine.scan_flows(300)?;
        ensure!(
            r.disagreeing.values().all(|n| *n == 0),
            "flows disagree with their Maglev pick: {:?}",
            r.disagreeing
        );
        ensure!(
            scan.elapsed() < Duration::from_secs(20),
            "the scan did not clear the flags in 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        engine.consulting() == consult_flows,
        "the flow table's use is not the one asked for"
    );
    eprintln!(
        "    forwarding: {} flows of the curve written in {:.1} s",
        total,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Turns on threaded NAPI for `iface` (a veth: one NAPI instance) and returns its thread.
fn only_napi_thread(ns: &Netns, iface: &str) -> anyhow::Result<u32> {
    match sys::threaded_napi(ns, iface)?.as_slice() {
        [thread] => Ok(thread.pid),
        many => bail!("several NAPI threads appeared for {iface}: {many:?}"),
    }
}

/// How a thread is scheduled on its CPU.
#[derive(Clone, Copy, Debug)]
enum Priority {
    /// CFS at nice -20: about 99 % of the CPU against ordinary (nice 0) tasks, so other
    /// load on the machine disturbs the measurement little.
    NiceMinus20,
    /// SCHED_FIFO 1: runs as soon as it has work, ahead of every CFS task. For the
    /// sink's NAPI threads, which receive what the DUT sends back in short bursts: if
    /// they waited for the DUT's time slice, the DUT would find their ring full.
    Fifo,
}

/// Pins a task (a NAPI thread, or 0 for the calling thread) to `cpu` and sets its
/// priority.
fn pin_task(pid: u32, cpu: usize, priority: Priority) -> anyhow::Result<()> {
    sys::pin_task_to_cpu(pid, cpu)?;
    let pid = pid as libc::pid_t;
    // SAFETY: plain system calls on a task id; `param` outlives the call.
    let rc = unsafe {
        match priority {
            Priority::NiceMinus20 => {
                let tid = if pid == 0 { libc::gettid() } else { pid };
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20)
            }
            Priority::Fifo => {
                let param = libc::sched_param { sched_priority: 1 };
                libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param)
            }
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the priority of task {pid} to {priority:?}"));
    }
    Ok(())
}

/// The id of the XDP program attached to `iface` (from `ip -d -j link show`).
fn xdp_program_id(ns: &Netns, iface: &str) -> anyhow::Result<u32> {
    let out = ns.ip(&["-d", "-j", "link", "show", "dev", iface])?;
    parse_xdp_program_id(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| anyhow!("no XDP program on {iface} in {}", ns.name()))
}

fn parse_xdp_program_id(json: &str) -> Option<u32> {
    let links: serde_json::Value = serde_json::from_str(json).ok()?;
    let id = links.get(0)?.get("xdp")?.get("prog")?.get("id")?.as_u64()?;
    u32::try_from(id).ok()
}

/// Accumulated run time (ns) and run count of a loaded program.
fn program_run_stats(id: u32) -> anyhow::Result<(u64, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing loaded BPF programs")?;
        if info.id() == id {
            return Ok((info.run_time().as_nanos() as u64, info.run_count()));
        }
    }
    bail!("BPF program {id} is gone")
}

fn ethtool_stats(ns: &Netns, iface: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = ns.exec(&["ethtool", "-S", iface])?;
    Ok(sys::parse_ethtool_stats(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

fn ifindex(ns: &Netns, iface: &str) -> anyhow::Result<u32> {
    let out = ns.ip(&["-o", "link", "show", "dev", iface])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow!("no ifindex in {text:?}"))
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from its object"))?
        .try_into()?)
}

fn attach_in(ns: &Netns, prog: &mut Xdp, iface: &str) -> anyhow::Result<()> {
    ns.run(|| prog.attach(iface, XdpMode::Driver).map(drop))?
        .with_context(|| format!("attaching native XDP to {iface} in {}", ns.name()))
}

/// Everything the measurements need; dropping it removes the namespaces (and with them
/// the veths and XDP attachments).
struct Bed {
    // Dropped first: programs and maps before their namespaces go.
    bench: Ebpf,
    _trivial: Ebpf,
    engine: Engine<KernelDataplane>,
    gen_config: Array<MapData, GenConfig>,
    gen_count: PerCpuArray<MapData, u64>,
    sink_count: PerCpuArray<MapData, u64>,
    sink_ipip: PerCpuArray<MapData, u64>,
    pairs: Vec<Pair>,
    gen: Netns,
    dut: Netns,
}

impl Bed {
    fn build(consult_flows: bool) -> anyhow::Result<Bed> {
        let gen = Netns::new("fwdgen")?;
        let dut = Netns::new("fwddut")?;
        let pid = std::process::id();
        let mut bench = Ebpf::load(ricochet_bpf::BENCH_XDP).context("loading bench XDP")?;
        let mut trivial = Ebpf::load(ricochet_bpf::TRIVIAL).context("loading trivial XDP")?;
        for name in ["bench_gen", "bench_sink", "bench_drop"] {
            xdp_mut(&mut bench, name)?
                .load()
                .with_context(|| format!("loading {name}"))?;
        }
        xdp_mut(&mut trivial, "xdp_tx")?
            .load()
            .context("loading xdp_tx")?;
        let caps = Capacities {
            vips: 16_384,
            services: 16_384,
            flows: FLOW_TABLE,
            ..Capacities::default()
        };
        let mut dp = KernelDataplane::load(&LoadOptions {
            pin_dir: None,
            caps,
        })?;

        let mut pairs = Vec::new();
        for kind in Dut::ALL {
            let gen_if = format!("g{pid}{}", kind.tag());
            let dut_if = format!("d{pid}{}", kind.tag());
            gen.ip(&[
                "link",
                "add",
                &gen_if,
                "type",
                "veth",
                "peer",
                "name",
                &dut_if,
                "netns",
                dut.name(),
            ])?;
            gen.ip(&["link", "set", &gen_if, "up"])?;
            dut.ip(&["link", "set", &dut_if, "up"])?;
            attach_in(&gen, xdp_mut(&mut bench, "bench_sink")?, &gen_if)?;
            match kind {
                Dut::Drop => attach_in(&dut, xdp_mut(&mut bench, "bench_drop")?, &dut_if)?,
                Dut::Bounce => attach_in(&dut, xdp_mut(&mut trivial, "xdp_tx")?, &dut_if)?,
                // Attached below, once its addresses and neighbours are in place.
                Dut::Ricochet => {}
            }
            let gen_mac = gen.mac(&gen_if)?;
            let dut_mac = dut.mac(&dut_if)?;
            if kind == Dut::Ricochet {
                // Servers sit on the generator's side of the link: their next hop is the
                // generator's veth, so Ricochet sends its frames back the way they came.
                dut.ip(&["addr", "add", &format!("{DUT_ADDR}/24"), "dev", &dut_if])?;
                let mac = ricochet_testbed::format_mac(&gen_mac);
                for i in 0..SERVERS {
                    let server = nth_addr(FIRST_SERVER, i.into()).to_string();
                    dut.ip(&[
                        "neigh",
                        "replace",
                        &server,
                        "lladdr",
                        &mac,
                        "dev",
                        &dut_if,
                        "nud",
                        "permanent",
                    ])?;
                }
                dut.set_sysctls(&[
                    ("net.ipv4.conf.all.forwarding", "1"),
                    (&format!("net.ipv4.conf.{dut_if}.forwarding"), "1"),
                ])?;
                let iface = dut_if.clone();
                dut.run(|| dp.attach(&iface, AttachMode::Native))??;
            }
            let sink_napi = only_napi_thread(&gen, &gen_if)?;
            let dut_napi = only_napi_thread(&dut, &dut_if)?;
            let dut_prog = xdp_program_id(&dut, &dut_if)?;
            pin_task(sink_napi, DUT_CPU, Priority::Fifo)?;
            pin_task(dut_napi, DUT_CPU, Priority::NiceMinus20)?;
            pairs.push(Pair {
                dut: kind,
                gen_ifindex: ifindex(&gen, &gen_if)?,
                gen_if,
                dut_if,
                gen_mac,
                dut_mac,
                sink_napi,
                dut_napi,
                dut_prog,
            });
        }

        let mut engine = Engine::new(dp);
        engine.set_settings(&ricochet_engine::settings(Some(DUT_ADDR), None, 0x5eed))?;
        engine.apply(&desired(1))?;
        fill_curve_flows(&mut engine, consult_flows)?;

        let mut take = |name: &str| {
            bench
                .take_map(name)
                .ok_or_else(|| anyhow!("{name} missing from the bench object"))
        };
        let gen_config = Array::try_from(take("GEN_CONFIG")?)?;
        let gen_count = PerCpuArray::try_from(take("GEN_COUNT")?)?;
        let sink_count = PerCpuArray::try_from(take("SINK_COUNT")?)?;
        let sink_ipip = PerCpuArray::try_from(take("SINK_IPIP")?)?;
        Ok(Bed {
            bench,
            _trivial: trivial,
            engine,
            gen_config,
            gen_count,
            sink_count,
            sink_ipip,
            pairs,
            gen,
            dut,
        })
    }

    fn pair(&self, dut: Dut) -> &Pair {
        self.pairs
            .iter()
            .find(|p| p.dut == dut)
            .expect("one pair per DUT")
    }

    fn gen_program(&self) -> anyhow::Result<&Xdp> {
        Ok(self
            .bench
            .program("bench_gen")
            .ok_or_else(|| anyhow!("bench_gen missing"))?
            .try_into()?)
    }

    fn counter(map: &PerCpuArray<MapData, u64>) -> anyhow::Result<u64> {
        Ok(map.get(&0, 0)?.iter().sum())
    }

    fn sample(&self, pair: &Pair) -> anyhow::Result<Sample> {
        let timed = |f: &dyn Fn() -> anyhow::Result<BTreeMap<String, u64>>| {
            let before = Instant::now();
            let stats = f()?;
            let after = Instant::now();
            anyhow::Ok((before + (after - before) / 2, stats))
        };
        let (gen_at, gen_side) = timed(&|| ethtool_stats(&self.gen, &pair.gen_if))?;
        let (dut_at, dut_side) = timed(&|| ethtool_stats(&self.dut, &pair.dut_if))?;
        for (stats, name, iface) in [
            (&gen_side, "tx_queue_0_xdp_xmit", &pair.gen_if),
            (&dut_side, "rx_queue_0_xdp_packets", &pair.dut_if),
        ] {
            ensure!(
                stats.contains_key(name),
                "`ethtool -S {iface}` has no {name}: this kernel's veth statistics differ \
                 from what the benchmark reads"
            );
        }
        let at = Instant::now();
        let cpus = per_cpu_ticks(&sys::read_proc_stat()?);
        Ok(Sample {
            at,
            gen_at,
            dut_at,
            gen_side,
            dut_side,
            cpus,
            sink_napi_ns: sys::task_cpu_ns(pair.sink_napi)?,
            dut_napi_ns: sys::task_cpu_ns(pair.dut_napi)?,
            dut_prog_run: program_run_stats(pair.dut_prog)?,
            generated: Self::counter(&self.gen_count)?,
            sunk: Self::counter(&self.sink_count)?,
            sunk_ipip: Self::counter(&self.sink_ipip)?,
            new_flows: if pair.dut == Dut::Ricochet {
                let dp = self.engine.dataplane();
                self.engine
                    .services()
                    .map(|svc| dp.service_counters(svc.id).map(|c| c.new_flows))
                    .sum::<anyhow::Result<u64>>()?
            } else {
                0
            },
            reasons: if pair.dut == Dut::Ricochet {
                self.engine
                    .dataplane()
                    .reason_counters()?
                    .into_iter()
                    .map(|(r, n)| (r.name().to_owned(), n))
                    .collect()
            } else {
                BTreeMap::new()
            },
        })
    }
}

/// Counters at one moment.
struct Sample {
    at: Instant,
    gen_at: Instant,
    dut_at: Instant,
    gen_side: BTreeMap<String, u64>,
    dut_side: BTreeMap<String, u64>,
    cpus: BTreeMap<usize, (u64, u64)>,
    sink_napi_ns: u64,
    dut_napi_ns: u64,
    /// Run time (ns) and run count of the DUT's XDP program (kept by the kernel only
    /// while BPF run-time statistics are on).
    dut_prog_run: (u64, u64),
    generated: u64,
    sunk: u64,
    sunk_ipip: u64,
    /// New flows Ricochet recorded, summed over the configured services.
    new_flows: u64,
    reasons: BTreeMap<String, u64>,
}

/// Rates of one measurement window (per second unless named otherwise).
#[derive(Clone, Debug, Serialize)]
struct Window {
    round: usize,
    config: Config,
    seconds: f64,
    /// Frames `bench_gen` produced.
    generated_pps: f64,
    /// Frames the generator's veth put into the device's ring.
    offered_pps: f64,
    /// Frames refused because the device's ring was full.
    ring_full_pps: f64,
    /// Frames the device under test's XDP program ran on.
    dut_rx_pps: f64,
    /// Frames the device transmitted back (XDP_TX that reached the generator's ring).
    dut_tx_pps: f64,
    dut_tx_errors_pps: f64,
    dut_drops_pps: f64,
    /// Frames the generator's sink counted coming back.
    returned_pps: f64,
    /// Frames back at the sink in the window, and how many of them were IP-in-IP.
    returned: u64,
    returned_ipip: u64,
    /// Share of a CPU the DUT's NAPI thread used (1.0 = all of it).
    dut_napi_cpu: f64,
    sink_napi_cpu: f64,
    gen_cpu_busy: f64,
    dut_cpu_busy: f64,
    /// Ricochet's reason counters over the window (only for Ricochet).
    reasons: BTreeMap<String, u64>,
    /// Flows Ricochet saw for the first time in the window (0 once all are established).
    new_flows: u64,
    /// Mean run time of the DUT's XDP program per run, in ns (NaN unless BPF run-time
    /// statistics were on).
    dut_prog_ns: f64,
    gen_calls: u64,
}

impl Window {
    /// The rate of this configuration: frames the device's XDP program handled per second
    /// (the bounce and Ricochet send every one of them back with XDP_TX, as the reason
    /// counters show; whether the generator's veth then had room for it is the generator
    /// side's business and shown apart as `dut_tx_errors_pps`).
    fn rate(&self) -> f64 {
        self.dut_rx_pps
    }

    /// The rate per CPU-second of the device's NAPI thread: what the device would reach
    /// with its CPU to itself (an estimate when the thread was not saturated).
    fn rate_per_dut_cpu(&self) -> f64 {
        if self.dut_napi_cpu > 0.0 {
            self.dut_rx_pps / self.dut_napi_cpu
        } else {
            f64::NAN
        }
    }
}

fn rate_between(
    a: &BTreeMap<String, u64>,
    b: &BTreeMap<String, u64>,
    name: &str,
    secs: f64,
) -> f64 {
    let before = a.get(name).copied().unwrap_or(0);
    let after = b.get(name).copied().unwrap_or(0);
    after.saturating_sub(before) as f64 / secs
}

fn window(round: usize, config: Config, a: &Sample, b: &Sample, gen_calls: u64) -> Window {
    let secs = (b.at - a.at).as_secs_f64();
    let gen_secs = (b.gen_at - a.gen_at).as_secs_f64();
    let dut_secs = (b.dut_at - a.dut_at).as_secs_f64();
    let busy = |cpu: usize| {
        let (Some(x), Some(y)) = (a.cpus.get(&cpu), b.cpus.get(&cpu)) else {
            return f64::NAN;
        };
        let total = y.1.saturating_sub(x.1);
        if total == 0 {
            f64::NAN
        } else {
            y.0.saturating_sub(x.0) as f64 / total as f64
        }
    };
    let reasons = b
        .reasons
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(a.reasons.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Window {
        round,
        config,
        seconds: secs,
        generated_pps: b.generated.saturating_sub(a.generated) as f64 / secs,
        offered_pps: rate_between(&a.gen_side, &b.gen_side, "tx_queue_0_xdp_xmit", gen_secs),
        ring_full_pps: rate_between(
            &a.gen_side,
            &b.gen_side,
            "tx_queue_0_xdp_xmit_errors",
            gen_secs,
        ),
        dut_rx_pps: rate_between(&a.dut_side, &b.dut_side, "rx_queue_0_xdp_packets", dut_secs),
        dut_tx_pps: rate_between(&a.dut_side, &b.dut_side, "rx_queue_0_xdp_tx", dut_secs),
        dut_tx_errors_pps: rate_between(
            &a.dut_side,
            &b.dut_side,
            "rx_queue_0_xdp_tx_errors",
            dut_secs,
        ),
        dut_drops_pps: rate_between(&a.dut_side, &b.dut_side, "rx_queue_0_xdp_drops", dut_secs),
        returned_pps: b.sunk.saturating_sub(a.sunk) as f64 / secs,
        returned: b.sunk.saturating_sub(a.sunk),
        returned_ipip: b.sunk_ipip.saturating_sub(a.sunk_ipip),
        dut_napi_cpu: b.dut_napi_ns.saturating_sub(a.dut_napi_ns) as f64 / 1e9 / secs,
        sink_napi_cpu: b.sink_napi_ns.saturating_sub(a.sink_napi_ns) as f64 / 1e9 / secs,
        gen_cpu_busy: busy(GEN_CPU),
        dut_cpu_busy: busy(DUT_CPU),
        reasons,
        new_flows: b.new_flows.saturating_sub(a.new_flows),
        dut_prog_ns: {
            let runs = b.dut_prog_run.1.saturating_sub(a.dut_prog_run.1);
            if runs == 0 {
                f64::NAN
            } else {
                b.dut_prog_run.0.saturating_sub(a.dut_prog_run.0) as f64 / runs as f64
            }
        },
        gen_calls,
    }
}

/// Runs the generator into `config`'s device for `warmup + length` and returns the
/// counters' rates over the last `length`.
fn measure(
    bed: &mut Bed,
    round: usize,
    config: Config,
    warmup: Duration,
    length: Duration,
) -> anyhow::Result<Window> {
    if config.dut == Dut::Ricochet {
        let t = Instant::now();
        bed.engine
            .apply(&desired(config.services))
            .with_context(|| format!("configuring {} virtual services", config.services))?;
        tracing::debug!(services = config.services, elapsed = ?t.elapsed(), "applied");
    }
    let pair = bed.pair(config.dut);
    let cfg = GenConfig {
        dst_mac: pair.dut_mac,
        src_mac: pair.gen_mac,
        client_base: FIRST_CLIENT.octets(),
        vip_base: FIRST_VIP.octets(),
        vip_count: config.services,
        flow_count: config.flows,
        dport: SERVICE_PORT.to_be_bytes(),
        frame_len: FRAME_LEN,
    };
    bed.gen_config
        .set(0, cfg, 0)
        .context("writing the generator's configuration")?;
    let bed = &*bed;
    let pair = bed.pair(config.dut);
    let prog = bed.gen_program()?;
    let stop = AtomicBool::new(false);
    let thread = GenThread::default();
    std::thread::scope(|scope| -> anyhow::Result<Window> {
        let generator = scope.spawn(|| generate(&bed.gen, prog, pair.gen_ifindex, &stop, &thread));
        let result = (|| {
            std::thread::sleep(warmup);
            let t = Instant::now();
            let a = bed.sample(pair)?;
            tracing::debug!(elapsed = ?t.elapsed(), "sampled");
            std::thread::sleep(length);
            let b = bed.sample(pair)?;
            anyhow::Ok((a, b))
        })();
        stop_generator(&stop, &thread, || generator.is_finished());
        let calls = generator
            .join()
            .map_err(|_| anyhow!("the generator thread panicked"))??;
        let (a, b) = result?;
        Ok(window(round, config, &a, &b, calls))
    })
}

/// The signal that interrupts the generator's BPF_PROG_TEST_RUN (the kernel checks for
/// pending signals between batches and returns EINTR). A real-time signal nobody else uses.
fn stop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_stop_signal(_: libc::c_int) {}

/// Installs a handler that does nothing (the default action would end the process) and
/// without SA_RESTART, so that the signal only cuts the system call short.
fn install_stop_handler() -> anyhow::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (it does
    // nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(stop_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("installing a signal handler");
        }
    }
    Ok(())
}

/// The generator's thread while it may be in BPF_PROG_TEST_RUN: the stopper signals it
/// under the lock, and the thread clears it (under the lock) before it ends, so no signal
/// ever goes to a thread that is gone.
type GenThread = std::sync::Mutex<Option<libc::pthread_t>>;

/// The generator: one BPF_PROG_TEST_RUN call in live-frames mode that runs until `stop`
/// is set and the call is interrupted by [`stop_signal`]. One call per measurement,
/// because each call swaps the XDP dispatcher twice and waits for an RCU grace period each
/// time (milliseconds without traffic). Returns the number of calls.
fn generate(
    gen: &Netns,
    prog: &Xdp,
    gen_ifindex: u32,
    stop: &AtomicBool,
    thread: &GenThread,
) -> anyhow::Result<u64> {
    gen.run(|| -> anyhow::Result<u64> {
        // SAFETY: pthread_self has no preconditions.
        *thread.lock().unwrap() = Some(unsafe { libc::pthread_self() });
        let result = (|| {
            pin_task(0, GEN_CPU, Priority::NiceMinus20)?;
            let frame = [0u8; FRAME_LEN as usize];
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex. Live frames go out of the ingress device on XDP_TX.
            let mut md = [0u8; 24];
            md[4..8].copy_from_slice(&u32::from(FRAME_LEN).to_ne_bytes());
            md[12..16].copy_from_slice(&gen_ifindex.to_ne_bytes());
            let mut calls = 0;
            while !stop.load(Ordering::SeqCst) {
                let opts = TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&md),
                    repeat: u32::MAX,
                    attrs: TestRunAttrs::new().xdp_live_frames(0),
                    ..Default::default()
                };
                calls += 1;
                if let Err(e) = prog.test_run(opts) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    return Err(anyhow::Error::new(e).context(
                        "BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, \
                         Linux 5.18+)",
                    ));
                }
            }
            Ok(calls)
        })();
        *thread.lock().unwrap() = None;
        result
    })?
}

/// Stops the generator: sets `stop`, then signals its thread until it has left the
/// system call (a signal that arrives just before the call is entered is not lost: the
/// next one comes 5 ms later).
fn stop_generator(stop: &AtomicBool, thread: &GenThread, finished: impl Fn() -> bool) {
    stop.store(true, Ordering::SeqCst);
    while !finished() {
        if let Some(t) = *thread.lock().unwrap() {
            // SAFETY: the thread is alive while it is recorded (it clears the record
            // under this lock before ending).
            unsafe { libc::pthread_kill(t, stop_signal()) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a generated frame must look like: Ethernet to the device, IPv4 with a valid
/// header checksum from a client to one of the first `vip_count` VIPs, TCP to the service
/// port. Checked once on a frame from a plain (not live) test run, before measuring.
fn check_generated_frame(frame: &[u8], cfg: &GenConfig) -> anyhow::Result<()> {
    ensure!(
        frame.len() == usize::from(cfg.frame_len),
        "frame of {} bytes, expected {}",
        frame.len(),
        cfg.frame_len
    );
    ensure!(
        frame[..6] == cfg.dst_mac,
        "destination MAC {:02x?}",
        &frame[..6]
    );
    ensure!(
        frame[6..12] == cfg.src_mac,
        "source MAC {:02x?}",
        &frame[6..12]
    );
    ensure!(
        frame[12..14] == [0x08, 0x00],
        "EtherType {:02x?}",
        &frame[12..14]
    );
    let ip = &frame[14..34];
    ensure!(
        ip[0] == 0x45 && ip[9] == 6,
        "not IPv4/TCP without options: {ip:02x?}"
    );
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    ensure!(
        (folded & 0xffff) + (folded >> 16) == 0xffff,
        "bad IPv4 header checksum: {ip:02x?}"
    );
    let ip_len = u16::from_be_bytes([ip[2], ip[3]]);
    ensure!(
        usize::from(ip_len) + 14 == frame.len(),
        "IPv4 total length {ip_len} for a {}-byte frame",
        frame.len()
    );
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let first_vip = u32::from_be_bytes(cfg.vip_base);
    ensure!(
        dst.wrapping_sub(first_vip) < cfg.vip_count,
        "destination {} is not one of the VIPs",
        Ipv4Addr::from(dst)
    );
    let first_client = u32::from_be_bytes(cfg.client_base);
    ensure!(
        src.wrapping_sub(first_client) <= cfg.flow_count / 64_000,
        "source {} is not a client address",
        Ipv4Addr::from(src)
    );
    ensure!(
        frame[36..38] == cfg.dport,
        "TCP destination port {:02x?}",
        &frame[36..38]
    );
    Ok(())
}

impl Bed {
    /// Runs the generator once (not live) and checks the frame it writes over garbage.
    fn check_generator(&mut self) -> anyhow::Result<()> {
        let pair = self.pair(Dut::Ricochet);
        let cfg = GenConfig {
            dst_mac: pair.dut_mac,
            src_mac: pair.gen_mac,
            client_base: FIRST_CLIENT.octets(),
            vip_base: FIRST_VIP.octets(),
            vip_count: 100,
            flow_count: FLOWS,
            dport: SERVICE_PORT.to_be_bytes(),
            frame_len: FRAME_LEN,
        };
        self.gen_config.set(0, cfg, 0)?;
        // Garbage in: live mode hands the program recycled pages holding old frames.
        let input = [0xa5u8; FRAME_LEN as usize];
        let mut out = [0u8; FRAME_LEN as usize + 64];
        let result = self.gen_program()?.test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        const XDP_TX: u32 = 3;
        ensure!(
            result.return_value == XDP_TX,
            "bench_gen returned {} instead of XDP_TX",
            result.return_value
        );
        check_generated_frame(&out[..result.data_size_out as usize], &cfg)
            .context("the generator's frame is not what the benchmark expects")
    }
}

/// Per-configuration summaries over the rounds.
#[derive(Clone, Debug, Serialize)]
struct ConfigSummary {
    config: Config,
    label: String,
    /// Forwarding rate (`Window::rate`), frames per second.
    rate: Summary,
    rate_per_dut_cpu: Summary,
    dut_napi_cpu: Summary,
    dut_cpu_busy: Summary,
    offered_pps: Summary,
    ring_full_pps: Summary,
    generated_pps: Summary,
    dut_tx_pps: Summary,
    dut_tx_errors_pps: Summary,
    returned_pps: Summary,
    gen_cpu_busy: Summary,
    sink_napi_cpu: Summary,
    /// New flows over all windows (0 when every window measured established flows only).
    new_flows: u64,
}

impl ConfigSummary {
    /// Whether the device under test was the bottleneck: its ring refused frames (the
    /// generator offered more than it took) while the DUT CPU went to forwarding (the DUT's
    /// and the sink's NAPI threads together had at least 90 % of it).
    fn saturated(&self) -> bool {
        self.ring_full_pps.p50 > 0.0 && self.dut_napi_cpu.p50 + self.sink_napi_cpu.p50 >= 0.9
    }
}

fn summarise(windows: &[Window]) -> Vec<ConfigSummary> {
    round_configs()
        .into_iter()
        .filter_map(|config| {
            let of = |f: fn(&Window) -> f64| {
                let v: Vec<f64> = windows
                    .iter()
                    .filter(|w| w.config == config)
                    .map(f)
                    .collect();
                (!v.is_empty()).then(|| Summary::of(&v))
            };
            Some(ConfigSummary {
                config,
                label: config.label(),
                rate: of(Window::rate)?,
                rate_per_dut_cpu: of(Window::rate_per_dut_cpu)?,
                dut_napi_cpu: of(|w| w.dut_napi_cpu)?,
                dut_cpu_busy: of(|w| w.dut_cpu_busy)?,
                offered_pps: of(|w| w.offered_pps)?,
                ring_full_pps: of(|w| w.ring_full_pps)?,
                generated_pps: of(|w| w.generated_pps)?,
                dut_tx_pps: of(|w| w.dut_tx_pps)?,
                dut_tx_errors_pps: of(|w| w.dut_tx_errors_pps)?,
                returned_pps: of(|w| w.returned_pps)?,
                gen_cpu_busy: of(|w| w.gen_cpu_busy)?,
                sink_napi_cpu: of(|w| w.sink_napi_cpu)?,
                new_flows: windows
                    .iter()
                    .filter(|w| w.config == config)
                    .map(|w| w.new_flows)
                    .sum(),
            })
        })
        .collect()
}

/// Ricochet (1 VS) over the bounce per DUT CPU-second, round by round (each pair measured
/// back to back).
fn per_round_ratios(windows: &[Window]) -> Vec<f64> {
    let rounds = windows.iter().map(|w| w.round).max().map_or(0, |r| r + 1);
    (0..rounds)
        .filter_map(|round| {
            let rate = |dut: Dut| {
                windows
                    .iter()
                    .find(|w| {
                        w.round == round
                            && w.config.dut == dut
                            && w.config.services == 1
                            && w.config.flows == FLOWS
                    })
                    .map(Window::rate_per_dut_cpu)
            };
            let (r, b) = (rate(Dut::Ricochet)?, rate(Dut::Bounce)?);
            (b > 0.0).then_some(r / b)
        })
        .collect()
}

fn mpps(pps: f64) -> String {
    format!("{:.2}", pps / 1e6)
}

fn percent(share: f64) -> String {
    if share.is_finite() {
        format!("{:.0} %", share * 100.0)
    } else {
        "n/a".into()
    }
}

fn windows_csv(windows: &[Window]) -> String {
    let mut csv = String::from(
        "round,config,services,flows,seconds,rate_pps,rate_per_dut_cpu_pps,generated_pps,offered_pps,ring_full_pps,\
         dut_rx_pps,dut_tx_pps,dut_tx_errors_pps,dut_drops_pps,returned_pps,dut_napi_cpu,\
         sink_napi_cpu,gen_cpu_busy,dut_cpu_busy,gen_calls\n",
    );
    for w in windows {
        csv.push_str(&format!(
            "{},{:?},{},{},{:.3},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.3},{:.3},{:.3},{:.3},{}\n",
            w.round,
            w.config.dut,
            w.config.services,
            w.config.flows,
            w.seconds,
            w.rate(),
            w.rate_per_dut_cpu(),
            w.generated_pps,
            w.offered_pps,
            w.ring_full_pps,
            w.dut_rx_pps,
            w.dut_tx_pps,
            w.dut_tx_errors_pps,
            w.dut_drops_pps,
            w.returned_pps,
            w.dut_napi_cpu,
            w.sink_napi_cpu,
            w.gen_cpu_busy,
            w.dut_cpu_busy,
            w.gen_calls,
        ));
    }
    csv
}

/// Sums of Ricochet's reason counters over all its windows.
fn reason_totals(windows: &[Window]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for w in windows.iter().filter(|w| w.config.dut == Dut::Ricochet) {
        for (name, n) in &w.reasons {
            *totals.entry(name.clone()).or_insert(0) += n;
        }
    }
    totals
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let cpus = per_cpu_ticks(&sys::read_proc_stat()?);
    ensure!(
        cpus.contains_key(&GEN_CPU) && cpus.contains_key(&DUT_CPU),
        "the forwarding benchmark needs two CPUs (0 for the generator, 1 for the device \
         under test); this machine shows {:?}",
        cpus.keys().collect::<Vec<_>>()
    );
    // On a thread of its own, pinned to the generator's CPU at the generator's priority
    // (else the generator starves it): the tools it starts (ethtool) inherit both, and the
    // caller's thread keeps its affinity and priority.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_task(0, GEN_CPU, Priority::NiceMinus20)?;
                run_pinned(ctx)
            })
            .join()
            .map_err(|_| anyhow!("the forwarding benchmark thread panicked"))?
    })
}

fn run_pinned(ctx: &Ctx) -> anyhow::Result<Body> {
    let (rounds, warmup, length) = if ctx.quick {
        (1, Duration::from_secs(1), Duration::from_millis(1500))
    } else {
        // The warm-up lets the flow table learn every flow: with most frames refused by
        // the full ring, the DUT sees a random subset of the sequence, and collecting all
        // 65,536 flows takes about a million frames.
        (5, Duration::from_secs(2), Duration::from_secs(3))
    };
    install_stop_handler()?;
    let mut bed = Bed::build(ctx.consult_flows)?;
    bed.check_generator()?;
    let mut windows = Vec::new();
    for round in 0..rounds {
        for config in round_configs() {
            let w = measure(&mut bed, round, config, warmup, length)
                .with_context(|| format!("round {}, {}", round + 1, config.label()))?;
            tracing::info!(
                round,
                config = %config.label(),
                mpps = w.rate() / 1e6,
                new_flows = w.new_flows,
                dut_napi_cpu = w.dut_napi_cpu,
                "forwarding window"
            );
            windows.push(w);
        }
    }
    // One more round with the kernel's BPF run-time statistics on (they cost two clock
    // reads per program run, so these windows stay out of the rates): how much of the
    // DUT's time per packet is its XDP program. Statistics go off when the descriptor
    // closes, also if this process dies.
    let mut profiled = Vec::new();
    {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics (BPF_ENABLE_STATS, Linux 5.8+)")?;
        for config in round_configs() {
            profiled.push(
                measure(&mut bed, rounds, config, warmup, length)
                    .with_context(|| format!("profiled round, {}", config.label()))?,
            );
        }
    }
    drop(bed);
    report(ctx, &windows, &profiled, rounds, warmup, length)
}

fn report(
    ctx: &Ctx,
    windows: &[Window],
    profiled: &[Window],
    rounds: usize,
    warmup: Duration,
    length: Duration,
) -> anyhow::Result<Body> {
    let raw_json = ctx.write_raw_json("forwarding-windows.json", &windows)?;
    let raw_csv = ctx.write_raw_text("forwarding-windows.csv", &windows_csv(windows))?;
    let raw_profiled = ctx.write_raw_json("forwarding-profiled-windows.json", &profiled)?;
    let summaries = summarise(windows);
    ctx.write_raw_json("forwarding-summary.json", &summaries)?;
    let find = |dut: Dut, services: u32| {
        summaries
            .iter()
            .find(|s| {
                s.config.dut == dut && s.config.services == services && s.config.flows == FLOWS
            })
            .ok_or_else(|| anyhow!("no measurement of {dut:?} with {services} VS"))
    };
    let ceiling = find(Dut::Drop, 1)?;
    let bounce = find(Dut::Bounce, 1)?;
    let ricochet = find(Dut::Ricochet, 1)?;
    let by_services: Vec<&ConfigSummary> = summaries
        .iter()
        .filter(|s| s.config.dut == Dut::Ricochet && s.config.flows == FLOWS)
        .collect();
    let mut by_flows: Vec<&ConfigSummary> = summaries
        .iter()
        .filter(|s| s.config.dut == Dut::Ricochet && s.config.services == 1)
        .collect();
    by_flows.sort_by_key(|s| s.config.flows);
    let ratio = ricochet.rate_per_dut_cpu.p50 / bounce.rate_per_dut_cpu.p50;
    let raw_ratio = ricochet.rate.p50 / bounce.rate.p50;
    let round_ratios = per_round_ratios(windows);
    let target_met = ratio >= BOUNCE_RATIO_TARGET;
    let verdict = if target_met { "met" } else { "NOT met" };
    let reasons = reason_totals(windows);
    let forwarded = reasons.get("forwarded").copied().unwrap_or(0);
    let not_forwarded: u64 = reasons
        .iter()
        .filter(|(name, _)| name.as_str() != "forwarded")
        .map(|(_, n)| n)
        .sum();
    let yes_no = |b: bool| if b { "yes" } else { "**no**" };
    // The dropping DUT measures the generator: it is meant to keep up.
    let (back, back_ipip) = windows
        .iter()
        .filter(|w| w.config.dut == Dut::Ricochet)
        .fold((0, 0), |(n, ipip), w| {
            (n + w.returned, ipip + w.returned_ipip)
        });
    let all_saturated = summaries
        .iter()
        .filter(|s| s.config.dut != Dut::Drop)
        .all(ConfigSummary::saturated);
    let saturated_cell = |s: &ConfigSummary| {
        if s.config.dut == Dut::Drop {
            "n/a (measures the generator)".to_string()
        } else {
            yes_no(s.saturated()).to_string()
        }
    };

    // Plots.
    let bars = "forwarding.png";
    plot::bar_chart(
        &ctx.plot_path(bars),
        &format!(
            "Forwarding through a veth, {FRAME_LEN}-byte frames (median of {rounds} round{})",
            if rounds == 1 { "" } else { "s" }
        ),
        "Mpps",
        &[
            "per DUT CPU-second",
            "measured (DUT CPU shared with the sink)",
            "offered by the generator",
        ],
        &[ceiling, bounce, ricochet]
            .iter()
            .map(|s| BarGroup {
                label: s.label.clone(),
                values: vec![
                    Some(s.rate_per_dut_cpu.p50 / 1e6),
                    Some(s.rate.p50 / 1e6),
                    Some(s.generated_pps.p50 / 1e6),
                ],
            })
            .collect::<Vec<_>>(),
    )?;
    let line = "forwarding-services.png";
    let first = f64::from(VS_COUNTS[0]);
    let last = f64::from(VS_COUNTS[VS_COUNTS.len() - 1]);
    let points = |f: fn(&ConfigSummary) -> f64| {
        by_services
            .iter()
            .map(|s| (f64::from(s.config.services), f(s) / 1e6))
            .collect::<Vec<_>>()
    };
    plot::line_chart(
        &ctx.plot_path(line),
        "Ricochet's rate vs number of virtual services (medians)",
        "virtual services (one VIP each)",
        "Mpps",
        &[
            Series {
                name: "Ricochet, per DUT CPU-second".into(),
                points: points(|s| s.rate_per_dut_cpu.p50),
            },
            Series {
                name: "Ricochet, measured".into(),
                points: points(|s| s.rate.p50),
            },
            Series {
                name: "XDP_TX bounce, per DUT CPU-second".into(),
                points: vec![
                    (first, bounce.rate_per_dut_cpu.p50 / 1e6),
                    (last, bounce.rate_per_dut_cpu.p50 / 1e6),
                ],
            },
        ],
        Axes {
            log_x: true,
            log_y: false,
        },
    )?;

    let curve = "forwarding-flows.png";
    let curve_points = |f: fn(&ConfigSummary) -> f64| {
        by_flows
            .iter()
            .map(|s| (f64::from(s.config.flows), f(s) / 1e6))
            .collect::<Vec<_>>()
    };
    plot::line_chart(
        &ctx.plot_path(curve),
        "Ricochet's rate vs flows cycled through, 1 VS (medians)",
        "flows (the generator cycles through them in turn)",
        "Mpps",
        &[
            Series {
                name: "Ricochet, per DUT CPU-second".into(),
                points: curve_points(|s| s.rate_per_dut_cpu.p50),
            },
            Series {
                name: "XDP_TX bounce, per DUT CPU-second".into(),
                points: vec![
                    (f64::from(FLOW_COUNTS[0]), bounce.rate_per_dut_cpu.p50 / 1e6),
                    (
                        f64::from(FLOW_COUNTS[FLOW_COUNTS.len() - 1]),
                        bounce.rate_per_dut_cpu.p50 / 1e6,
                    ),
                ],
            },
        ],
        Axes {
            log_x: true,
            log_y: false,
        },
    )?;
    let flow_rows: Vec<Vec<String>> = by_flows
        .iter()
        .map(|s| {
            vec![
                short_flows(s.config.flows),
                mpps(s.rate_per_dut_cpu.p50),
                mpps_span(&s.rate_per_dut_cpu),
                format!(
                    "{:.2}",
                    s.rate_per_dut_cpu.p50 / bounce.rate_per_dut_cpu.p50
                ),
                yes_no(s.saturated()).into(),
                s.new_flows.to_string(),
            ]
        })
        .collect();

    // Tables.
    let ns = |v: f64| {
        if v.is_finite() {
            format!("{v:.0}")
        } else {
            "n/a".into()
        }
    };
    let main_rows: Vec<Vec<String>> = [ceiling, bounce, ricochet]
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                format!("**{}**", mpps(s.rate_per_dut_cpu.p50)),
                mpps_span(&s.rate_per_dut_cpu),
                ns(1e9 / s.rate_per_dut_cpu.p50),
                mpps(s.rate.p50),
                mpps_span(&s.rate),
                saturated_cell(s),
            ]
        })
        .collect();
    let side_rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                mpps(s.generated_pps.p50),
                mpps(s.offered_pps.p50),
                mpps(s.ring_full_pps.p50),
                mpps(s.rate.p50),
                mpps(s.dut_tx_pps.p50),
                mpps(s.dut_tx_errors_pps.p50),
                mpps(s.returned_pps.p50),
                percent(s.dut_napi_cpu.p50),
                percent(s.sink_napi_cpu.p50),
                percent(s.dut_cpu_busy.p50),
                percent(s.gen_cpu_busy.p50),
            ]
        })
        .collect();
    let vs_rows: Vec<Vec<String>> = by_services
        .iter()
        .map(|s| {
            vec![
                short_services(s.config.services),
                mpps(s.rate_per_dut_cpu.p50),
                mpps_span(&s.rate_per_dut_cpu),
                format!(
                    "{:.2}",
                    s.rate_per_dut_cpu.p50 / ricochet.rate_per_dut_cpu.p50
                ),
                format!(
                    "{:.2}",
                    s.rate_per_dut_cpu.p50 / bounce.rate_per_dut_cpu.p50
                ),
                mpps(s.rate.p50),
                yes_no(s.saturated()).into(),
                s.new_flows.to_string(),
            ]
        })
        .collect();
    let profile_rows: Vec<Vec<String>> = profiled
        .iter()
        .map(|w| {
            let per_frame = 1e9 / w.rate_per_dut_cpu();
            vec![
                w.config.label(),
                ns(per_frame),
                ns(w.dut_prog_ns),
                ns(per_frame - w.dut_prog_ns),
            ]
        })
        .collect();
    let reason_rows: Vec<Vec<String>> = reasons
        .iter()
        .map(|(name, n)| vec![format!("`{name}`"), n.to_string()])
        .collect();
    let quick_note = if ctx.quick {
        "\n**Quick run**: one round with short windows; figures are indicative only.\n"
    } else {
        ""
    };
    let flows_note = if ctx.consult_flows {
        "\n**Flow table consulted** (`--consult-flows`): every established packet looks its \
         flow up, as right after a pool change.\n"
            .to_owned()
    } else {
        format!(
            "\n**Flow table not consulted** (the steady state: the engine's scan found every \
             flow on its Maglev pick): established packets take the Maglev pick and 1 in {} \
             looks its flow up; `--consult-flows` measures the other state.\n",
            ricochet_common::limits::FLOW_SAMPLE
        )
    };
    let quick_note = format!("{quick_note}{flows_note}");
    let saturation_note = if all_saturated {
        "Every device was saturated in the median window: its ring refused frames (the \
         generator offered more than it took) while its CPU went to forwarding (the DUT's and \
         the sink's NAPI threads together had at least 90 % of it)."
            .to_string()
    } else {
        "**Not every device was saturated** (see the last column; saturated means the ring \
         refused frames and the DUT's and the sink's NAPI threads together had at least 90 % \
         of the DUT CPU). Other load on the DUT CPU takes its share; the rate per DUT \
         CPU-second is measured on frames that were waiting all the same, so it holds, while \
         the measured rates understate what the devices can do."
            .to_string()
    };
    let forwarded_note = if not_forwarded == 0 && forwarded > 0 {
        "Every packet Ricochet saw in the windows was forwarded.".to_string()
    } else {
        format!(
            "**{not_forwarded} packets were not forwarded** (see the reasons above): the \
             rates include them."
        )
    };
    let path_note = format!(
        "{forwarded_note} Of the {back} frames that came back from Ricochet to the sink, \
         {back_ipip} ({}) were IPv4 IP-in-IP (protocol 4), i.e. encapsulated to a server.",
        percent(back_ipip as f64 / back as f64)
    );
    let markdown = format!(
        "{quick_note}
### Method

Two network namespaces, a generator and the devices under test (DUT), joined by three veth
pairs, one per DUT, all attached for the whole run: `bench_drop` drops every frame, the
trivial `xdp_tx` bounces every frame back out (the floor of any XDP forwarder), and
Ricochet's load balancer (loaded and configured through `KernelDataplane` and `Engine`,
native XDP). Ricochet's pool has {SERVERS} servers on the generator's side of the link
(permanent neighbour entries, forwarding on), so it encapsulates every frame in IP-in-IP
and sends it back out with XDP_TX, like the bounce.

The generator is the kernel's `BPF_PROG_TEST_RUN` in live-frames mode
(`BPF_F_TEST_XDP_LIVE_FRAMES`) running `bench_gen` on the generator's veth, one call per
measurement (stopped by a signal): each run of the program writes a whole {FRAME_LEN}-byte
Ethernet/IPv4/TCP frame (live mode recycles pages that the DUT rewrote) and XDP_TXes it
into the DUT. It cycles through {FLOWS} flows (client address and port), each flow to VIP
`flow mod N` for N virtual services, so Ricochet's flow table holds every flow after the
warm-up and the measured path is that of established flows (the new-flow counts show how
many were not). A sink (`bench_sink`) on the generator's veth counts and drops what comes
back: a veth delivers XDP_TX frames only to a peer with an XDP program.

CPUs: every veth runs threaded NAPI. The generator and this benchmark have CPU {GEN_CPU}
to themselves (nice -20); the DUTs' NAPI threads (nice -20) and the sink's (SCHED_FIFO, so
that what comes back never waits) run on CPU {DUT_CPU}. The sink is not on the generator's
CPU because receiving a frame costs about as much as bouncing it: there, the generator
could never offer more than a bounce takes. On the DUT CPU the sink takes its share of the
CPU for every frame sent back, the same for every DUT, so the **primary figure is the
DUT's rate per CPU-second of its own NAPI thread** (frames handled / the thread's run time
from `/proc/<pid>/schedstat`), measured while frames were waiting (the DUT's ring refused
some); the rate measured on the shared CPU is shown beside it.

Each round measures, back to back: the dropping DUT, the bounce, Ricochet with 1, 100 and
10,000 virtual services (one VIP each, TCP port {SERVICE_PORT}, one shared pool; the data
plane is loaded once with room for 16,384 VIPs and services). {rounds} round(s); per
measurement {warmup:?} of warm-up, then a {length:?} window over which counters are read:
the veths' own (`ethtool -S`), the generator's and the sink's, the NAPI threads' run time,
the CPUs' (`/proc/stat`), and Ricochet's reason and service counters. A DUT's rate counts
the frames its XDP program handled (veth `xdp_packets`); the bounce and Ricochet send every
one back with XDP_TX. Medians over rounds; raw windows: [{raw_json}]({raw_json}),
[{raw_csv}]({raw_csv}).

### Ricochet against an XDP_TX bounce

![forwarding rate]({bars})

{main_table}
Ricochet / bounce per DUT CPU-second = **{ratio:.3}** (ratio of medians; per round, each
pair measured back to back: {round_ratios}). Target at least {BOUNCE_RATIO_TARGET} (1 VS,
{FLOWS} flows): **{verdict}**. Measured
rates on the shared DUT CPU: ratio {raw_ratio:.3} (closer to 1 because the sink's cost per
frame is the same for both).

{saturation_note}

Where the frames went (medians, Mpps) and where the CPUs went:

{side_table}
### Where the DUT's time goes

One more round with the kernel's BPF run-time statistics on (`BPF_ENABLE_STATS`; they add
two clock reads to every program run, so this round is not part of the rates above): the
DUT's NAPI thread run time per frame, split into the time inside its XDP program and the
rest (veth receive, XDP_TX into the sink's ring, page recycling). Raw:
[{raw_profiled}]({raw_profiled}).

{profile_table}
### Rate as the number of virtual services grows

![rate vs virtual services]({line})

{vs_table}
### Rate as the number of flows grows

Ricochet with 1 VS while the generator cycles through N flows in turn, so that each flow's
table entry was last touched N frames ago (1 VS and 64k flows is the configuration above).
Before the first round the benchmark writes the generator's first {curve_max} flows into
Ricochet's flow table ({table} entries; nothing is evicted), so every point measures
established flows from its first frame (new flows in the windows: last column); a point
with N flows reads N of them.

![rate vs flows]({curve})

{flow_table}
### Path check: Ricochet's reason counters over all its windows

{reason_table}
{path_note}

### Caveats

- veth, not a NIC: no DMA, no interrupts, and the receiving end's work is software too; the
  absolute rates say little about hardware, the ratio to the bounce is the figure to read.
- Two CPUs: the generator has one, the DUT and the sink share the other; caches and memory
  bandwidth are shared by all.
- No hardware performance counters are read: the split of the DUT's time comes from the
  kernel's BPF run-time statistics, which themselves cost a little per run.
- Established flows only; the rate of new flows (a Maglev pick and a flow-table insertion
  per packet) is not measured here.
",
        main_table = table(
            &[
                "configuration",
                "Mpps per DUT CPU-second",
                "min – max",
                "ns per frame",
                "measured Mpps",
                "min – max",
                "saturated",
            ],
            &main_rows
        ),
        side_table = table(
            &[
                "configuration",
                "generated",
                "into the DUT's ring",
                "refused (ring full)",
                "handled by the DUT",
                "sent back",
                "refused by the sink's ring",
                "counted by the sink",
                "DUT NAPI thread",
                "sink NAPI thread",
                "DUT CPU busy",
                "generator CPU busy",
            ],
            &side_rows
        ),
        profile_table = table(
            &[
                "configuration",
                "ns per frame (DUT NAPI thread)",
                "in the XDP program",
                "outside it",
            ],
            &profile_rows
        ),
        vs_table = table(
            &[
                "virtual services",
                "Mpps per DUT CPU-second",
                "min – max",
                "vs 1 VS",
                "vs bounce",
                "measured Mpps",
                "saturated",
                "new flows in the windows",
            ],
            &vs_rows
        ),
        reason_table = table(&["reason", "packets"], &reason_rows),
        curve_max = short_services(FLOW_COUNTS[FLOW_COUNTS.len() - 1]),
        table = short_services(FLOW_TABLE),
        flow_table = table(
            &[
                "flows",
                "Mpps per DUT CPU-second",
                "min – max",
                "vs bounce",
                "saturated",
                "new flows in the windows",
            ],
            &flow_rows
        ),
        round_ratios = round_ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let series = by_services
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                short_services(s.config.services),
                mpps(s.rate_per_dut_cpu.p50)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let headlines = vec![
        format!(
            "Ricochet {} vs XDP_TX bounce {} Mpps per DUT CPU-second on a veth, 64k flows: ratio {ratio:.2}, target ≥ {BOUNCE_RATIO_TARGET} {verdict} (measured on the shared CPU: {} vs {} Mpps, ratio {raw_ratio:.2})",
            mpps(ricochet.rate_per_dut_cpu.p50),
            mpps(bounce.rate_per_dut_cpu.p50),
            mpps(ricochet.rate.p50),
            mpps(bounce.rate.p50),
        ),
        format!("Ricochet by number of virtual services (VS: Mpps per DUT CPU-second): {series}"),
        format!(
            "Ricochet (1 VS) by flows cycled through (flows: ratio to the bounce per DUT \
             CPU-second): {}",
            by_flows
                .iter()
                .map(|s| format!(
                    "{} {:.2}",
                    short_flows(s.config.flows),
                    s.rate_per_dut_cpu.p50 / bounce.rate_per_dut_cpu.p50
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "Generator offered {} Mpps (into a dropping DUT); devices saturated: {}",
            mpps(ceiling.generated_pps.p50),
            if all_saturated { "all" } else { "NOT all" }
        ),
    ];
    Ok(Body {
        markdown,
        headlines,
    })
}

/// A count with thousands separators: 10,000; 4,194,304.
fn short_services(n: u32) -> String {
    crate::report::grouped(u64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_gives_busy_and_total_ticks_per_cpu() {
        use procfs::FromBufReadSI as _;
        let text = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                    cpu0 1 2 3 40 5 6 7 8 9 10\n\
                    cpu1 0 0 50 50 0 0 0 0 0 0\nintr 1 2 3\nctxt 5\nbtime 1\n\
                    processes 3\nprocs_running 1\nprocs_blocked 0\n";
        let stats =
            procfs::KernelStats::from_buf_read(text.as_bytes(), procfs::current_system_info())
                .unwrap();
        let cpus = per_cpu_ticks(&stats);
        // cpu0: total = 1+2+3+40+5+6+7+8 = 72, idle+iowait = 45, busy 27 (guest is in user).
        assert_eq!(cpus.get(&0), Some(&(27, 72)));
        assert_eq!(cpus.get(&1), Some(&(50, 100)));
        assert_eq!(cpus.len(), 2);
    }

    #[test]
    fn xdp_program_id_from_ip_json() {
        let json = r#"[{"ifindex":4,"ifname":"d1r","xdp":{"mode":1,"prog":{"id":2545,"name":"ricochet_lb","tag":"614b434cd8324ecc","jited":1}}}]"#;
        assert_eq!(parse_xdp_program_id(json), Some(2545));
        assert_eq!(parse_xdp_program_id(r#"[{"ifindex":4}]"#), None);
        assert_eq!(parse_xdp_program_id("not json"), None);
    }

    #[test]
    fn desired_state_has_sorted_services_one_vip_each_and_one_pool() {
        let d = desired(10_000);
        assert_eq!(d.services.len(), 10_000);
        assert!(d.services.windows(2).all(|w| w[0].name < w[1].name));
        assert_eq!(d.services[0].vip, IpAddr::V4(FIRST_VIP));
        assert_eq!(
            d.services[9_999].vip,
            IpAddr::V4(Ipv4Addr::new(10, 100, 39, 15))
        );
        assert_eq!(d.pools.len(), 1);
        assert_eq!(d.pools[0].servers.len(), usize::from(SERVERS));
        assert!(d.services.iter().all(|s| s.pool == d.pools[0].name));
    }

    fn config() -> GenConfig {
        GenConfig {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            client_base: FIRST_CLIENT.octets(),
            vip_base: FIRST_VIP.octets(),
            vip_count: 100,
            flow_count: FLOWS,
            dport: SERVICE_PORT.to_be_bytes(),
            frame_len: FRAME_LEN,
        }
    }

    /// A frame as `bench_gen` writes it for flow 99 (client 10.1.0.0 port 1123, VIP
    /// 10.100.0.99), with its header checksum computed here.
    fn frame() -> Vec<u8> {
        frame_to(99)
    }

    fn frame_to(vip_last_octet: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = [
            0x45, 0, 0, 46, 0, 99, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 0, 10, 100, 0, 0,
        ];
        ip[19] = vip_last_octet;
        f[14..34].copy_from_slice(&ip);
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let check = !(((sum & 0xffff) + (sum >> 16)) as u16);
        f[24..26].copy_from_slice(&check.to_be_bytes());
        f[34..36].copy_from_slice(&1123u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f
    }

    #[test]
    fn a_well_formed_generated_frame_passes_the_check() {
        check_generated_frame(&frame(), &config()).unwrap();
    }

    #[test]
    fn broken_generated_frames_fail_the_check() {
        let cfg = config();
        let mut bad_sum = frame();
        bad_sum[25] ^= 1;
        assert!(check_generated_frame(&bad_sum, &cfg).is_err());
        // 10.100.0.100 is one past the 100 VIPs.
        assert!(check_generated_frame(&frame_to(99), &cfg).is_ok());
        assert!(check_generated_frame(&frame_to(100), &cfg).is_err());
        assert!(check_generated_frame(&frame()[..54], &cfg).is_err());
        let mut bad_port = frame();
        bad_port[37] = 81;
        assert!(check_generated_frame(&bad_port, &cfg).is_err());
    }

    fn window_of(round: usize, dut: Dut, services: u32, tx: f64, rx: f64) -> Window {
        Window {
            round,
            config: Config {
                dut,
                services,
                flows: FLOWS,
            },
            seconds: 3.0,
            generated_pps: 0.0,
            offered_pps: 0.0,
            ring_full_pps: 0.0,
            dut_rx_pps: rx,
            dut_tx_pps: tx,
            dut_tx_errors_pps: 0.0,
            dut_drops_pps: 0.0,
            returned_pps: 0.0,
            returned: 0,
            returned_ipip: 0,
            dut_napi_cpu: 1.0,
            sink_napi_cpu: 0.5,
            gen_cpu_busy: 1.0,
            dut_cpu_busy: 1.0,
            reasons: BTreeMap::new(),
            new_flows: 0,
            dut_prog_ns: f64::NAN,
            gen_calls: 1,
        }
    }

    #[test]
    fn counts_get_every_thousands_separator() {
        assert_eq!(short_services(999), "999");
        assert_eq!(short_services(10_000), "10,000");
        assert_eq!(short_services(4_194_304), "4,194,304");
        assert_eq!(short_services(8_388_608), "8,388,608");
    }

    #[test]
    fn the_flow_curve_spans_1k_to_4m_with_64k_as_the_main_point() {
        assert_eq!(short_flows(1_024), "1k");
        assert_eq!(short_flows(65_536), "64k");
        assert_eq!(short_flows(4_194_304), "4M");
        assert_eq!(short_flows(1_000), "1000");
        let curve: Vec<u32> = round_configs()
            .iter()
            .filter(|c| c.dut == Dut::Ricochet && c.services == 1)
            .map(|c| c.flows)
            .collect();
        let mut sorted = curve.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, FLOW_COUNTS);
        let labels: std::collections::HashSet<String> =
            round_configs().iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), round_configs().len(), "labels are unique");
        // Every flow of the curve, learned or written, fits the table with the others.
        assert!(FLOW_COUNTS[FLOW_COUNTS.len() - 1] + 2 * FLOWS < FLOW_TABLE);
    }

    #[test]
    fn curve_flows_are_the_generators() {
        // The generator's flow 99 is client 10.1.0.0 port 1123 (the frame of `frame()`),
        // and the 64,000th flow takes the next client address.
        assert_eq!(gen_flow(99), (Ipv4Addr::new(10, 1, 0, 0), 1123));
        assert_eq!(gen_flow(64_000), (Ipv4Addr::new(10, 1, 0, 1), 1024));
        let f = frame();
        let (client, port) = gen_flow(99);
        assert_eq!(&f[26..30], &client.octets());
        assert_eq!(&f[34..36], &port.to_be_bytes());
    }

    #[test]
    fn rates_ratios_and_summaries() {
        let windows = vec![
            window_of(0, Dut::Drop, 1, 0.0, 9e6),
            window_of(0, Dut::Bounce, 1, 3.5e6, 4e6),
            window_of(0, Dut::Ricochet, 1, 3e6, 3e6),
            window_of(0, Dut::Ricochet, 100, 2e6, 2e6),
            window_of(1, Dut::Bounce, 1, 5e6, 5e6),
            window_of(1, Dut::Ricochet, 1, 4e6, 4e6),
        ];
        // The rate is what the device's program handled, sent back or not.
        assert_eq!(windows[0].rate(), 9e6);
        assert_eq!(windows[1].rate(), 4e6);
        let mut half_busy = windows[1].clone();
        half_busy.dut_napi_cpu = 0.5;
        assert_eq!(half_busy.rate_per_dut_cpu(), 8e6);
        assert_eq!(per_round_ratios(&windows), vec![0.75, 0.8]);
        let s = summarise(&windows);
        // Configurations never measured (10,000 VS here) are left out.
        assert_eq!(s.len(), 4);
        let bounce = s.iter().find(|s| s.config.dut == Dut::Bounce).unwrap();
        assert_eq!(
            (bounce.rate.n, bounce.rate.min, bounce.rate.max),
            (2, 4e6, 5e6)
        );
    }

    #[test]
    fn window_rates_from_two_samples() {
        let start = Instant::now();
        let sample = |secs: u64, xmit: u64, tx: u64, busy: u64, napi: u64| Sample {
            at: start + Duration::from_secs(secs),
            gen_at: start + Duration::from_secs(secs),
            dut_at: start + Duration::from_secs(secs),
            gen_side: [("tx_queue_0_xdp_xmit".to_string(), xmit)].into(),
            dut_side: [("rx_queue_0_xdp_tx".to_string(), tx)].into(),
            cpus: [(DUT_CPU, (busy, secs * 100))].into(),
            sink_napi_ns: 0,
            dut_napi_ns: napi,
            dut_prog_run: (secs * 1_000_000, secs * 10_000),
            generated: xmit,
            sunk: tx,
            sunk_ipip: tx / 2,
            new_flows: 0,
            reasons: [("forwarded".to_string(), tx)].into(),
        };
        let a = sample(1, 1_000, 500, 50, 10);
        let b = sample(3, 9_001_000, 6_000_500, 230, 10 + 1_900_000_000);
        let w = window(
            0,
            Config {
                dut: Dut::Bounce,
                services: 1,
                flows: FLOWS,
            },
            &a,
            &b,
            7,
        );
        assert_eq!(w.offered_pps, 4.5e6);
        assert_eq!(w.dut_tx_pps, 3e6);
        assert_eq!(w.returned_pps, 3e6);
        assert_eq!((w.returned, w.returned_ipip), (6_000_000, 3_000_000));
        assert_eq!(w.dut_cpu_busy, 0.9);
        assert_eq!(w.dut_napi_cpu, 0.95);
        assert_eq!(w.reasons.get("forwarded"), Some(&6_000_000));
        assert_eq!(w.dut_prog_ns, 100.0);
        // A counter missing from both samples is a zero rate, not an error.
        assert_eq!(w.ring_full_pps, 0.0);
    }

    #[test]
    fn services_are_written_with_thousands_separators() {
        assert_eq!(short_services(1), "1");
        assert_eq!(short_services(10_000), "10,000");
    }
}
