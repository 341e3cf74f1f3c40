//! Control plane: how long a configuration change takes to reach the data plane, and how
//! long applying 10,000 virtual services takes.
//!
//! Three measurements:
//! - (a) the library: `Engine::apply` of a one-service change on a loaded engine over the
//!   real XDP program's maps, then a BPF_PROG_TEST_RUN packet that must come out
//!   encapsulated to the new servers (in a namespace of its own with a route and a permanent
//!   neighbour, so that `bpf_fib_lookup` succeeds);
//! - (b) the daemon: `ricochet engine` on the seed's topology; a virtual service with a new
//!   VIP is added to its file (then SIGHUP, or nothing: its file watch), and a client polls
//!   the VIP with TCP connections until one succeeds through the engine to nginx;
//! - (c) scale: applying 10 to 10,000 virtual services, over the kernel maps and over the
//!   in-memory data plane (the engine's own computation), and a one-service change on top.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _};
use ricochet_config::{Config, Desired};
use ricochet_dataplane::kernel::{KernelDataplane, LoadOptions};
use ricochet_dataplane::memory::MemoryDataplane;
use ricochet_dataplane::{Capacities, Dataplane};
use ricochet_engine::{ApplyReport, Engine};
use ricochet_testbed::{self as tb, Process, Topology};
use serde::Serialize;

use crate::plot::{self, Axes, BarGroup, Series};
use crate::report::table;
use crate::stats::Summary;
use crate::{Body, Ctx};

// ---------------------------------------------------------------------------------------
// Configurations

/// The Maglev table size of the generated small pools: the smallest prime of at least 100
/// slots per server for two servers.
pub const SMALL_TABLE: u32 = 211;

/// One virtual service and its pool, for the generated configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vs {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub pool: String,
    pub servers: Vec<Ipv4Addr>,
    /// `None`: the default (65537 for small pools).
    pub table_size: Option<u32>,
}

/// The `i`-th generated VIP: 10.100.0.1, ..., 250 per /24, never .0 or .255.
pub fn vip_addr(i: usize) -> Ipv4Addr {
    host_in(100, i)
}

/// The `j`-th generated server: 10.201.0.1, ...
pub fn server_addr(j: usize) -> Ipv4Addr {
    host_in(201, j)
}

fn host_in(second: u8, i: usize) -> Ipv4Addr {
    let third = u8::try_from(i / 250).expect("fewer than 64000 generated addresses");
    Ipv4Addr::new(10, second, third, (i % 250) as u8 + 1)
}

/// `n` virtual services, each with a pool of its own: two servers, table size
/// [`SMALL_TABLE`]; port 80.
pub fn generated(n: usize) -> Vec<Vs> {
    (0..n).map(|i| generated_one(i, i)).collect()
}

/// The generated virtual service `i` (VIP `i`), whose pool holds servers `2s` and `2s + 1`.
fn generated_one(i: usize, s: usize) -> Vs {
    Vs {
        name: format!("vs-{i:05}"),
        vip: vip_addr(i),
        port: 80,
        pool: format!("pool-{i:05}"),
        servers: vec![server_addr(2 * s), server_addr(2 * s + 1)],
        table_size: Some(SMALL_TABLE),
    }
}

/// The YAML configuration of `services` (pools named twice are written once, from their
/// first use): one TCP fast-path network profile with L3 DSR over IP-in-IP.
pub fn config_yaml(services: &[Vs]) -> String {
    let mut y = String::from(
        "network_profiles:\n  - name: dsr-l3-tcp\n    type: tcp_fast_path\n    \
         dsr: { enabled: true, type: l3, encapsulation: ipinip }\npools:\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for vs in services {
        if !seen.insert(vs.pool.as_str()) {
            continue;
        }
        let servers: Vec<String> = vs
            .servers
            .iter()
            .map(|s| format!("{{ ip: {s} }}"))
            .collect();
        let _ = writeln!(y, "  - name: {}", vs.pool);
        if let Some(t) = vs.table_size {
            let _ = writeln!(y, "    table_size: {t}");
        }
        let _ = writeln!(y, "    servers: [{}]", servers.join(", "));
    }
    y.push_str("virtual_services:\n");
    for vs in services {
        let _ = write!(
            y,
            "  - name: {}\n    vip: {}\n    services: [{{ port: {} }}]\n    \
             network_profile: dsr-l3-tcp\n    pool: {}\n",
            vs.name, vs.vip, vs.port, vs.pool
        );
    }
    y
}

/// Parses, validates and compiles a configuration, as the daemon does with its file.
pub fn compile(yaml: &str) -> anyhow::Result<Desired> {
    let config = Config::from_yaml_str(yaml).context("parsing a generated configuration")?;
    config
        .compile()
        .map_err(|e| anyhow::anyhow!("a generated configuration does not validate: {e}"))
}

// ---------------------------------------------------------------------------------------
// Packets (for BPF_PROG_TEST_RUN)

const ETH_LEN: usize = 14;
const XDP_TX: u32 = 3;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 2);

use ricochet_testkit::checksum::internet_checksum_from as internet_checksum;

/// An Ethernet frame with a TCP SYN from `src:sport` to `dst:dport`, checksums right.
pub fn tcp_syn_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let pseudo_sum = u32::from(!internet_checksum(&pseudo, 0));
    let c = internet_checksum(&tcp, pseudo_sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = internet_checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut frame = vec![0x02, 0, 0, 0, 0, 0x07, 0x02, 0, 0, 0, 0, 0xc1, 0x08, 0x00];
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

/// The outer destination of an IPv4-in-IPv4 frame, or `None` for anything else.
pub fn ipip_destination(frame: &[u8]) -> Option<Ipv4Addr> {
    let ip = frame.get(ETH_LEN..ETH_LEN + 20)?;
    (frame[12..14] == [0x08, 0x00] && ip[0] >> 4 == 4 && ip[9] == 4)
        .then(|| Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]))
}

// ---------------------------------------------------------------------------------------
// The library lab: a namespace where the program's FIB lookups succeed

use ricochet_testkit::lab::{ip_batch, LB_IF, LB_V4 as LAB_ADDR, ROUTER as LAB_ROUTER};

/// Capacities for up to about 10,000 services with small pools (the defaults hold 4096).
fn lab_caps() -> Capacities {
    Capacities {
        vips: 16_384,
        service_ports: 65_536,
        services: 16_384,
        servers: 32_768,
        // 10,000 tables of 211 slots, plus room for 65537-slot tables and their replacements.
        maglev_slots: 2_700_000,
        flows: 4096,
        // The flow table is not under test: small, so that loading is quick.
    }
}

/// The fixture lab's network (`ricochet_testkit::lab`) in the calling thread's fresh
/// namespace, with the generated servers' 10.201.0.0/16 routed through its router; the
/// ifindex of the load balancer's interface.
fn build_lab() -> u32 {
    let ifindex = ricochet_testkit::lab::build_lab_network();
    ip_batch(&[format!(
        "route add 10.201.0.0/16 via {} dev {LB_IF}",
        LAB_ROUTER.v4
    )]);
    ifindex
}

fn load(caps: Capacities) -> anyhow::Result<(Engine<KernelDataplane>, f64)> {
    let start = Instant::now();
    let dp = KernelDataplane::load(&LoadOptions {
        pin_dir: None,
        caps,
    })
    .context("loading the XDP program")?;
    let load_ms = ms_since(start);
    let mut engine = Engine::new(dp);
    engine.set_settings(&ricochet_engine::settings(Some(LAB_ADDR), None, 0))?;
    Ok((engine, load_ms))
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// CPU time of the calling thread (user and system, so also the kernel's work in its
/// system calls), ms: what the engine itself spends, whatever else the machine runs. Wall
/// time also counts the time the thread waits for a core.
fn thread_cpu_ms() -> anyhow::Result<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ensure!(
        rc == 0,
        "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}",
        std::io::Error::last_os_error()
    );
    Ok(ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6)
}

/// Sends one SYN to `vip:80` through the program and returns where it went: the outer
/// destination if it came out encapsulated with XDP_TX.
struct Prober {
    ifindex: u32,
    sport: u16,
}

impl Prober {
    fn send(
        &mut self,
        engine: &mut Engine<KernelDataplane>,
        vip: Ipv4Addr,
    ) -> anyhow::Result<Option<Ipv4Addr>> {
        // A new source port each time: a new flow, hashed into the current table.
        self.sport = self.sport.wrapping_add(1).max(1024);
        let frame = tcp_syn_frame(CLIENT, self.sport, vip, 80);
        let out = engine.dataplane_mut().test_run(&frame, self.ifindex)?;
        Ok((out.action == XDP_TX)
            .then(|| ipip_destination(&out.packet))
            .flatten())
    }

    /// Probes until the packet goes to one of `servers` (at most `tries` packets); returns
    /// the number of packets it took.
    fn until_in(
        &mut self,
        engine: &mut Engine<KernelDataplane>,
        vip: Ipv4Addr,
        servers: &[Ipv4Addr],
        tries: u32,
    ) -> anyhow::Result<Option<u32>> {
        for n in 1..=tries {
            if self
                .send(engine, vip)?
                .is_some_and(|d| servers.contains(&d))
            {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// (a) one change on a loaded engine

#[derive(Serialize)]
struct ChangeResult {
    name: String,
    /// For the chart's axis.
    short: String,
    /// `Engine::apply` alone, ms.
    apply_ms: Vec<f64>,
    /// From the start of apply to the first packet seen encapsulated to the new servers, ms.
    live_ms: Vec<f64>,
    /// Packets it took after apply returned (1: the first packet already used the change).
    packets: Vec<u32>,
    /// What the engine wrote, from its report of the last repeat.
    last_report: String,
}

impl ChangeResult {
    fn new(name: &str, short: &str) -> Self {
        ChangeResult {
            name: name.to_owned(),
            short: short.to_owned(),
            apply_ms: Vec::new(),
            live_ms: Vec::new(),
            packets: Vec::new(),
            last_report: String::new(),
        }
    }
}

#[derive(Serialize)]
struct LibraryResult {
    base_services: usize,
    load_ms: f64,
    initial_apply_ms: f64,
    changes: Vec<ChangeResult>,
}

fn report_text(r: &ApplyReport) -> String {
    format!(
        "{} table(s), {} service entries written, {} removed, {} server(s) activated, {} freed \
         ({} pool(s) and {} VS(s) planned)",
        r.tables_written,
        r.service_entries_written,
        r.service_entries_removed,
        r.servers_activated,
        r.servers_freed,
        r.pools_planned,
        r.services_planned
    )
}

/// Applies `to` and checks with packets that `vip` now goes to one of `servers` (or, with
/// no servers, is no longer encapsulated).
fn timed_change(
    engine: &mut Engine<KernelDataplane>,
    prober: &mut Prober,
    to: &Desired,
    vip: Ipv4Addr,
    servers: &[Ipv4Addr],
    result: &mut ChangeResult,
) -> anyhow::Result<()> {
    // The check must tell the states apart: before the change, the packet goes elsewhere.
    let before = prober.send(engine, vip)?;
    ensure!(
        !before.is_some_and(|d| servers.contains(&d)) && (before.is_some() || !servers.is_empty()),
        "{}: before the change the probe already shows its effect ({before:?})",
        result.name
    );
    let start = Instant::now();
    let report = engine
        .apply(to)
        .with_context(|| format!("{}: apply", result.name))?;
    let apply_ms = ms_since(start);
    let packets = if servers.is_empty() {
        let mut n = 0;
        loop {
            n += 1;
            if prober.send(engine, vip)?.is_none() {
                break Some(n);
            }
            if n >= 1000 {
                break None;
            }
        }
    } else {
        prober.until_in(engine, vip, servers, 1000)?
    };
    let live_ms = ms_since(start);
    let packets = packets.with_context(|| {
        format!(
            "{}: 1000 packets after apply still do not show the change",
            result.name
        )
    })?;
    result.apply_ms.push(apply_ms);
    result.live_ms.push(live_ms);
    result.packets.push(packets);
    result.last_report = report_text(&report);
    Ok(())
}

fn library_changes(
    ifindex: u32,
    base_services: usize,
    reps: usize,
) -> anyhow::Result<LibraryResult> {
    let (mut engine, load_ms) = load(lab_caps())?;
    let mut prober = Prober {
        ifindex,
        sport: 1024,
    };

    // The loaded engine: generated services with small pools, plus one with a default-size
    // (65537-slot) pool.
    let mut base = generated(base_services);
    let big = Vs {
        name: "vs-big".into(),
        pool: "pool-big".into(),
        table_size: None,
        ..generated_one(60_000, 30_000)
    };
    base.push(big.clone());
    let base_desired = compile(&config_yaml(&base))?;
    let start = Instant::now();
    engine
        .apply(&base_desired)
        .context("applying the base configuration")?;
    let initial_apply_ms = ms_since(start);

    // Variants, compiled beforehand: only apply is timed.
    let new_small = generated_one(60_001, 30_001);
    let new_big = Vs {
        table_size: None,
        ..generated_one(60_002, 30_002)
    };
    let with = |extra: &Vs| -> anyhow::Result<Desired> {
        let mut v = base.clone();
        v.push(extra.clone());
        compile(&config_yaml(&v))
    };
    let add_small = with(&new_small)?;
    let add_big = with(&new_big)?;
    // Pool changes replace both servers, so that any encapsulated packet to a new one proves
    // the new table is live.
    let replace = |target: &str, servers: Vec<Ipv4Addr>| -> anyhow::Result<Desired> {
        let v: Vec<Vs> = base
            .iter()
            .map(|vs| {
                if vs.name == target {
                    Vs {
                        servers: servers.clone(),
                        ..vs.clone()
                    }
                } else {
                    vs.clone()
                }
            })
            .collect();
        compile(&config_yaml(&v))
    };
    let small_target = base[0].clone();
    let small_new_servers = vec![server_addr(62_000), server_addr(62_001)];
    let small_changed = replace(&small_target.name, small_new_servers.clone())?;
    let big_new_servers = vec![server_addr(62_002), server_addr(62_003)];
    let big_changed = replace(&big.name, big_new_servers.clone())?;

    let mut add_s = ChangeResult::new("add a VS (new pool, 211 slots)", "add VS 211");
    let mut rm_s = ChangeResult::new("remove that VS", "rm VS 211");
    let mut add_b = ChangeResult::new("add a VS (new pool, 65537 slots)", "add VS 65537");
    let mut rm_b = ChangeResult::new("remove that VS (65537)", "rm VS 65537");
    let mut pool_s = ChangeResult::new("change a pool's servers (211 slots)", "pool 211");
    let mut pool_b = ChangeResult::new("change a pool's servers (65537 slots)", "pool 65537");
    for _ in 0..reps {
        let e = &mut engine;
        let p = &mut prober;
        timed_change(
            e,
            p,
            &add_small,
            new_small.vip,
            &new_small.servers,
            &mut add_s,
        )?;
        timed_change(e, p, &base_desired, new_small.vip, &[], &mut rm_s)?;
        timed_change(e, p, &add_big, new_big.vip, &new_big.servers, &mut add_b)?;
        timed_change(e, p, &base_desired, new_big.vip, &[], &mut rm_b)?;
        // There and back: both directions are a change of the pool's servers.
        timed_change(
            e,
            p,
            &small_changed,
            small_target.vip,
            &small_new_servers,
            &mut pool_s,
        )?;
        timed_change(
            e,
            p,
            &base_desired,
            small_target.vip,
            &small_target.servers,
            &mut pool_s,
        )?;
        timed_change(e, p, &big_changed, big.vip, &big_new_servers, &mut pool_b)?;
        timed_change(e, p, &base_desired, big.vip, &big.servers, &mut pool_b)?;
    }
    Ok(LibraryResult {
        base_services: base.len(),
        load_ms,
        initial_apply_ms,
        changes: vec![add_s, rm_s, add_b, rm_b, pool_s, pool_b],
    })
}

// ---------------------------------------------------------------------------------------
// (c) scale

#[derive(Serialize)]
struct ScalePoint {
    services: usize,
    yaml_bytes: usize,
    /// YAML parse + validation + compilation to `Desired`, ms.
    compile_ms: Vec<f64>,
    /// Loading the XDP program with the lab's capacities, ms.
    load_ms: f64,
    /// `Engine::apply` of the whole configuration on an empty data plane, ms.
    kernel_initial_ms: Vec<f64>,
    /// The same, the engine thread's CPU time ([`thread_cpu_ms`]), ms.
    kernel_initial_cpu_ms: Vec<f64>,
    memory_initial_ms: Vec<f64>,
    /// Applying the same configuration again (nothing changes), ms.
    kernel_noop_ms: Vec<f64>,
    memory_noop_ms: Vec<f64>,
    /// `Engine::apply` (the engine's time: planning and map writes; the configuration is
    /// compiled beforehand) of adding one service with its own small pool, and of removing
    /// it again, [`CHANGES_PER_REP`] times per repeat, ms.
    kernel_change_ms: Vec<f64>,
    /// The same, the engine thread's CPU time ([`thread_cpu_ms`]), ms.
    kernel_change_cpu_ms: Vec<f64>,
    memory_change_ms: Vec<f64>,
    /// `Engine::status` over the kernel maps after the initial apply: every counter, the
    /// reading the engine's run loop takes each second for its state file and metrics, ms.
    status_read_ms: Vec<f64>,
    /// Encoding `/metrics` from that reading (what a scrape costs the engine), ms.
    scrape_encode_ms: Vec<f64>,
    /// The size of that `/metrics` answer.
    scrape_bytes: usize,
    /// Map element updates of the initial apply (Maglev slots, service entries, VIPs,
    /// server slot writes), from the in-memory data plane's count.
    initial_writes: u64,
    /// Map element updates of adding one service.
    change_writes: u64,
    change_report: String,
}

/// Map element updates of an apply, from the in-memory data plane's counts before and
/// after it: write calls, of which each table write counts once, plus the slots of the
/// tables written (the kernel data plane writes a table in one batch system call).
fn element_writes(before: (u64, u64), after: &MemoryDataplane, report: &ApplyReport) -> u64 {
    let calls = after.writes - before.0;
    let slots = after.table_slots_written - before.1;
    calls - report.tables_written as u64 + slots
}

/// The in-memory data plane's counts of write calls and table slots written.
fn write_counts(dp: &MemoryDataplane) -> (u64, u64) {
    (dp.writes, dp.table_slots_written)
}

/// One-VS changes (an add and its removal) measured on top of each initial apply.
const CHANGES_PER_REP: usize = 5;

fn scale_point(n: usize, reps: usize) -> anyhow::Result<ScalePoint> {
    let services = generated(n);
    let yaml = config_yaml(&services);
    let mut compile_ms = Vec::new();
    let mut desired = None;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        desired = Some(compile(&yaml)?);
        compile_ms.push(ms_since(start));
    }
    let desired = desired.expect("compiled at least once");
    let mut plus_one = services.clone();
    plus_one.push(generated_one(60_010, 30_010));
    let plus_one = compile(&config_yaml(&plus_one))?;
    let empty = Desired::default();

    let (mut kernel, load_ms) = load(lab_caps())?;
    let mut mem = Engine::new(MemoryDataplane::new(lab_caps()));
    let mut p = ScalePoint {
        services: n,
        yaml_bytes: yaml.len(),
        compile_ms,
        load_ms,
        kernel_initial_ms: Vec::new(),
        kernel_initial_cpu_ms: Vec::new(),
        memory_initial_ms: Vec::new(),
        kernel_noop_ms: Vec::new(),
        memory_noop_ms: Vec::new(),
        kernel_change_ms: Vec::new(),
        kernel_change_cpu_ms: Vec::new(),
        memory_change_ms: Vec::new(),
        initial_writes: 0,
        change_writes: 0,
        change_report: String::new(),
        status_read_ms: Vec::new(),
        scrape_encode_ms: Vec::new(),
        scrape_bytes: 0,
    };
    let metrics = ricochet_daemon::metrics::EngineMetrics::default();
    fn time<D: Dataplane>(e: &mut Engine<D>, d: &Desired) -> anyhow::Result<(f64, ApplyReport)> {
        let start = Instant::now();
        let r = e.apply(d)?;
        Ok((ms_since(start), r))
    }
    /// [`time`], also pushing the engine thread's CPU time to `cpu`.
    fn time_cpu<D: Dataplane>(
        e: &mut Engine<D>,
        d: &Desired,
        cpu: &mut Vec<f64>,
    ) -> anyhow::Result<(f64, ApplyReport)> {
        let start = thread_cpu_ms()?;
        let timed = time(e, d)?;
        cpu.push(thread_cpu_ms()? - start);
        Ok(timed)
    }
    for rep in 0..reps.max(1) {
        if rep > 0 {
            // Back to an empty data plane, so that the next initial apply starts from nothing.
            time(&mut kernel, &empty)?;
            time(&mut mem, &empty)?;
        }
        // Interleaved: the kernel and the in-memory engine, the same change each.
        let before = write_counts(mem.dataplane());
        let (t, r) = time(&mut mem, &desired)?;
        p.memory_initial_ms.push(t);
        p.initial_writes = element_writes(before, mem.dataplane(), &r);
        p.kernel_initial_ms.push(
            time_cpu(&mut kernel, &desired, &mut p.kernel_initial_cpu_ms)
                .with_context(|| format!("applying {n} virtual services"))?
                .0,
        );
        let (read, encode, bytes) = time_scrape(&kernel, &desired, &metrics)?;
        p.status_read_ms.push(read);
        p.scrape_encode_ms.push(encode);
        p.scrape_bytes = bytes;
        p.memory_noop_ms.push(time(&mut mem, &desired)?.0);
        p.kernel_noop_ms.push(time(&mut kernel, &desired)?.0);
        for _ in 0..CHANGES_PER_REP {
            let before = write_counts(mem.dataplane());
            let (t, r) = time(&mut mem, &plus_one)?;
            p.change_writes = element_writes(before, mem.dataplane(), &r);
            p.memory_change_ms.push(t);
            let (t, r) = time_cpu(&mut kernel, &plus_one, &mut p.kernel_change_cpu_ms)?;
            p.kernel_change_ms.push(t);
            p.change_report = report_text(&r);
            p.memory_change_ms.push(time(&mut mem, &desired)?.0);
            p.kernel_change_ms
                .push(time_cpu(&mut kernel, &desired, &mut p.kernel_change_cpu_ms)?.0);
        }
    }
    Ok(p)
}

/// The engine's metrics at `engine`'s size: the counter reading (ms), the encoding of
/// `/metrics` from it (ms) and the answer's size in bytes.
fn time_scrape(
    engine: &Engine<KernelDataplane>,
    desired: &Desired,
    metrics: &ricochet_daemon::metrics::EngineMetrics,
) -> anyhow::Result<(f64, f64, usize)> {
    let start = Instant::now();
    let status = engine.status()?;
    let events = engine.dataplane().event_counters()?;
    let read = ms_since(start);
    let services = status.services.len();
    let snapshot = ricochet_daemon::metrics::Snapshot {
        state: ricochet_daemon::StateFile {
            interface: LB_IF.to_owned(),
            pin_dir: "/nonexistent".into(),
            config: None,
            controller: None,
            controller_revision: None,
            health: Vec::new(),
            pid: std::process::id(),
            status,
            warnings: Vec::new(),
            bgp: None,
            bgp_include: None,
        },
        servers: desired
            .pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(|s| (p.name.clone(), s.ip, s.ratio, s.enabled))
            })
            .collect(),
        events,
        transmit_counters: Default::default(),
        flow_capacity: engine.dataplane().capacities().flows,
    };
    let start = Instant::now();
    metrics.publish(snapshot);
    let text = metrics.encode();
    let encode = ms_since(start);
    let series = text
        .lines()
        .filter(|l| l.starts_with("ricochet_virtual_service_packets_total{"))
        .count();
    anyhow::ensure!(
        series == services,
        "/metrics has {series} virtual services, the engine runs {services}"
    );
    Ok((read, encode, text.len()))
}

/// `ricochet check-config` of a file, wall time (ms) of each of `reps` runs.
fn check_config_ms(bin: &Path, file: &Path, reps: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let o = std::process::Command::new(bin)
            .arg("check-config")
            .arg(file)
            .stdout(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {} check-config", bin.display()))?;
        out.push(ms_since(start));
        ensure!(
            o.status.success(),
            "check-config refused the generated file: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// (b) the daemon, end to end

/// Removes a directory tree when dropped.
struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The seed's topology with nginx and `ricochet server setup` on web01 and web02, and a
/// directory for the engine's configuration and state. Undone on drop.
struct Bed {
    bin: PathBuf,
    config: PathBuf,
    state_dir: PathBuf,
    se_pins: PathBuf,
    engine: Option<Process>,
    // Dropped in this order, after `drop` below undid the servers' setup.
    _servers: Vec<Process>,
    _pins: Vec<RemoveDir>,
    _dir: RemoveDir,
    topo: Topology,
}

const SEED_VIP: Ipv4Addr = tb::VIP_V4;

/// The seed's web service and `added` more on new VIPs 192.168.35.10, ..., all on the
/// seed's pool (web01 and web02).
fn daemon_services(added: usize) -> Vec<Vs> {
    let pool = |name: String, vip: Ipv4Addr| Vs {
        name,
        vip,
        port: 80,
        pool: "web-pool".into(),
        servers: vec![
            Ipv4Addr::new(192, 168, 33, 10),
            Ipv4Addr::new(192, 168, 34, 10),
        ],
        table_size: None,
    };
    std::iter::once(pool("web-vs".into(), SEED_VIP))
        .chain((0..added).map(|k| pool(format!("new-vs-{k:02}"), daemon_vip(k))))
        .collect()
}

fn daemon_vip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        192,
        168,
        35,
        10 + u8::try_from(k).expect("fewer than 200 new VIPs"),
    )
}

impl Bed {
    fn new(bin: PathBuf, new_vips: usize) -> anyhow::Result<Bed> {
        let topo = Topology::seed()?;
        let dir = std::env::temp_dir().join(format!("{}cp-daemon", topo.prefix()));
        std::fs::create_dir_all(&dir)?;
        let se_pins = PathBuf::from(format!("/sys/fs/bpf/{}se1", topo.prefix()));
        let mut bed = Bed {
            config: dir.join("ricochet.yaml"),
            state_dir: dir.join("state"),
            _dir: RemoveDir(dir),
            _pins: vec![RemoveDir(se_pins.clone())],
            se_pins,
            engine: None,
            _servers: Vec::new(),
            bin,
            topo,
        };
        let vips: Vec<String> = std::iter::once(SEED_VIP)
            .chain((0..new_vips).map(daemon_vip))
            .map(|v| v.to_string())
            .collect();
        for k in 0..new_vips {
            bed.topo
                .route_vip(daemon_vip(k).into(), bed.topo.se1.ipv4.into())?;
        }
        for host in [&bed.topo.web01, &bed.topo.web02] {
            let pin = bed.server_pins(host.name);
            bed._pins.push(RemoveDir(pin.clone()));
            let mut args = vec![
                bed.bin.to_str().context("binary path")?,
                "server",
                "setup",
                "--interface",
                host.iface,
                "--pin-dir",
                pin.to_str().context("pin path")?,
            ];
            for v in &vips {
                args.extend(["--vip", v.as_str()]);
            }
            let out = host.ns.output(&args)?;
            ensure!(
                out.status.success(),
                "ricochet server setup on {}: {}",
                host.name,
                String::from_utf8_lossy(&out.stderr)
            );
            bed._servers.push(tb::start_nginx(&host.ns, host.name)?);
        }
        Ok(bed)
    }

    fn server_pins(&self, host: &str) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}{host}", self.topo.prefix()))
    }

    /// Replaces the configuration file atomically (a rename), so the daemon never reads a
    /// half-written file.
    fn write_config(&self, text: &str) -> anyhow::Result<()> {
        let tmp = self.config.with_extension("yaml.new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config)?;
        Ok(())
    }

    fn start_engine(&mut self, watch_interval_ms: u64) -> anyhow::Result<&mut Process> {
        self.stop_engine()?;
        let interval = watch_interval_ms.to_string();
        let mut p = self.topo.se1.ns.spawn(&[
            self.bin.to_str().context("binary path")?,
            "engine",
            "--config",
            self.config.to_str().context("config path")?,
            "--interface",
            self.topo.se1.iface,
            "--pin-dir",
            self.se_pins.to_str().context("pin path")?,
            "--state-dir",
            self.state_dir.to_str().context("state path")?,
            "--flows",
            "65536",
            "--watch-interval-ms",
            &interval,
        ])?;
        p.wait_for_output("engine running")
            .with_context(|| format!("the engine did not start: {}", p.report()))?;
        // The daemon installs its signal handlers only after logging "engine running"; a
        // SIGHUP before that would end it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !catches_signal(p.pid(), libc::SIGHUP) {
            ensure!(
                Instant::now() < deadline && p.try_wait()?.is_none(),
                "the engine never installed its SIGHUP handler: {}",
                p.report()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(self.engine.insert(p))
    }

    fn stop_engine(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.engine.take() {
            p.stop()?;
        }
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.stop_engine();
        for host in [&self.topo.web01, &self.topo.web02] {
            let pin = self.server_pins(host.name);
            let _ = host.ns.output(&[
                self.bin.to_str().unwrap_or("ricochet"),
                "server",
                "undo",
                "--interface",
                host.iface,
                "--pin-dir",
                pin.to_str().unwrap_or_default(),
            ]);
        }
    }
}

/// Whether process `pid` has a handler for `signal` (its `SigCgt` mask in /proc).
fn catches_signal(pid: u32, signal: i32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .is_ok_and(|s| s.sigcgt & (1 << (signal - 1)) != 0)
}

/// Tries TCP connections to `addr` (each waiting at most `attempt`) until one succeeds or
/// `deadline` passes; returns when it succeeded and how many attempts it took.
fn connect_until(addr: SocketAddr, deadline: Instant, attempt: Duration) -> Option<(Instant, u32)> {
    let mut n = 0;
    loop {
        n += 1;
        if TcpStream::connect_timeout(&addr, attempt).is_ok() {
            return Some((Instant::now(), n));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(PROBE_PAUSE);
    }
}

/// How long one connection attempt of the client waits (a SYN-ACK here takes well under a
/// millisecond; a SYN the engine does not forward gets no answer at all).
const PROBE_ATTEMPT: Duration = Duration::from_millis(3);
const PROBE_PAUSE: Duration = Duration::from_micros(200);

/// Strips ANSI escape sequences (tracing colours its output even into files).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since midnight UTC of the RFC 3339 timestamp that starts a tracing log line
/// (`2026-11-26T10:53:25.123456Z  INFO ...`).
pub fn log_time_of_day(line: &str) -> Option<f64> {
    let clean = strip_ansi(line);
    let stamp = clean.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn time_of_day(t: SystemTime) -> f64 {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (since.as_secs() % 86_400) as f64 + f64::from(since.subsec_nanos()) * 1e-9
}

/// `later - earlier` in seconds for times of day, across midnight.
pub fn day_diff(later: f64, earlier: f64) -> f64 {
    let d = later - earlier;
    if d < -43_200.0 {
        d + 86_400.0
    } else if d > 43_200.0 {
        d - 86_400.0
    } else {
        d
    }
}

/// The time of day of the `index`-th (0-based) log line containing `needle`.
fn nth_log_time(log: &str, needle: &str, index: usize) -> Option<f64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .nth(index)
        .and_then(log_time_of_day)
}

/// Delay before the `k`-th of `n` changes: the offsets `0, period/n, 2 period/n, ...` in a
/// shuffled order, so that changes land at every phase of the daemon's polling.
pub fn phase_delay(k: usize, n: usize, period: Duration) -> Duration {
    let n = n.max(1);
    period * ((k * 7) % n) as u32 / n as u32
}

#[derive(Serialize)]
struct DaemonMode {
    name: String,
    short: String,
    watch_interval_ms: u64,
    /// From writing the file to the first successful connection, ms.
    live_ms: Vec<f64>,
    /// Connection attempts in each repeat (the first fails: it runs before the change).
    attempts: Vec<u32>,
    /// From writing the file to the daemon's "SIGHUP: reloading" log line, ms.
    noticed_ms: Vec<Option<f64>>,
    /// From writing the file to its "configuration change applied" log line, ms.
    applied_ms: Vec<Option<f64>>,
}

fn daemon_mode(
    bed: &mut Bed,
    sighup: bool,
    watch_interval_ms: u64,
    first_vip: usize,
    reps: usize,
) -> anyhow::Result<DaemonMode> {
    let name = if sighup {
        "daemon: file + SIGHUP".to_owned()
    } else {
        format!("daemon: file watch ({watch_interval_ms} ms)")
    };
    let mut mode = DaemonMode {
        name,
        short: if sighup { "SIGHUP" } else { "file watch" }.to_owned(),
        watch_interval_ms,
        live_ms: Vec::new(),
        attempts: Vec::new(),
        noticed_ms: Vec::new(),
        applied_ms: Vec::new(),
    };
    // The configuration as it stands, so the (re)started daemon changes nothing.
    bed.write_config(&config_yaml(&daemon_services(first_vip)))?;
    bed.start_engine(watch_interval_ms)?;
    let period = Duration::from_millis(if sighup { 50 } else { watch_interval_ms });
    for k in 0..reps {
        let added = first_vip + k;
        let vip = SocketAddr::new(IpAddr::V4(daemon_vip(added)), 80);
        // The new VIP does not answer yet (this also checks the probe can fail).
        let ok = bed
            .topo
            .client
            .ns
            .run(|| TcpStream::connect_timeout(&vip, Duration::from_millis(50)).is_ok())?;
        ensure!(!ok, "{vip} answers before its virtual service exists");
        std::thread::sleep(phase_delay(k, reps, period));

        let text = config_yaml(&daemon_services(added + 1));
        let wall = SystemTime::now();
        let start = Instant::now();
        bed.write_config(&text)?;
        let engine = bed.engine.as_mut().context("engine not running")?;
        if sighup {
            engine.signal(libc::SIGHUP)?;
        }
        let deadline = start + Duration::from_secs(10);
        let live = bed
            .topo
            .client
            .ns
            .run(|| connect_until(vip, deadline, PROBE_ATTEMPT))?;
        let engine = bed.engine.as_mut().context("engine not running")?;
        let Some((at, attempts)) = live else {
            bail!(
                "{vip} did not answer within 10 s of adding its virtual service: {}",
                engine.report()
            );
        };
        mode.live_ms.push((at - start).as_secs_f64() * 1e3);
        mode.attempts.push(attempts);
        // Wait for the log line, so that the next change starts from a settled daemon.
        let log_deadline = Instant::now() + Duration::from_secs(10);
        while engine
            .stderr()
            .matches("configuration change applied")
            .count()
            < k + 1
        {
            ensure!(
                Instant::now() < log_deadline,
                "the engine did not log the change: {}",
                engine.report()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = engine.stderr();
        let t0 = time_of_day(wall);
        let since = |t: Option<f64>| t.map(|t| day_diff(t, t0) * 1e3);
        mode.noticed_ms.push(if sighup {
            since(nth_log_time(&log, "SIGHUP: reloading", k))
        } else {
            None
        });
        mode.applied_ms
            .push(since(nth_log_time(&log, "configuration change applied", k)));
    }
    Ok(mode)
}

// ---------------------------------------------------------------------------------------
// The section

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn med(v: &[f64]) -> f64 {
    Summary::of(v).p50
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let bin = ctx.ricochet_binary()?;
    let quick = ctx.quick;
    let (lib_reps, scale_reps, daemon_reps) = if quick { (3, 1, 3) } else { (20, 3, 20) };
    let scale_ns: &[usize] = &[10, 100, 1000, 10_000];
    let base_services = 1000;

    // (a) and (c): in a namespace of their own (BPF_PROG_TEST_RUN resolves the ingress
    // interface there, and bpf_fib_lookup uses its routes and neighbours).
    let (library, scale) = ricochet_testkit::netns::in_fresh_netns(|| -> anyhow::Result<_> {
        let ifindex = build_lab();
        let library = library_changes(ifindex, base_services, lib_reps)?;
        let scale = scale_ns
            .iter()
            .map(|&n| {
                scale_point(
                    n,
                    if n >= 10_000 {
                        scale_reps
                    } else {
                        scale_reps + 2
                    },
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((library, scale))
    })?;

    // check-config of the largest file.
    let biggest = *scale_ns.last().expect("sizes");
    let dir = RemoveDir(std::env::temp_dir().join(format!("{}cp-check", tb::run_prefix())));
    std::fs::create_dir_all(&dir.0)?;
    let file = dir.0.join("ricochet.yaml");
    std::fs::write(&file, config_yaml(&generated(biggest)))?;
    let check_ms = check_config_ms(&bin, &file, if quick { 1 } else { 3 })?;
    drop(dir);

    // (b)
    let mut bed = Bed::new(bin, 2 * daemon_reps)?;
    let sighup = daemon_mode(&mut bed, true, 3_600_000, 0, daemon_reps)?;
    let watch = daemon_mode(&mut bed, false, 500, daemon_reps, daemon_reps)?;
    drop(bed);

    let raw_lib = ctx.write_raw_json("control-plane-library.json", &library)?;
    let raw_scale = ctx.write_raw_json("control-plane-scale.json", &scale)?;
    let raw_daemon = ctx.write_raw_json("control-plane-daemon.json", &[&sighup, &watch])?;
    let raw_check = ctx.write_raw_json("control-plane-check-config.json", &check_ms)?;

    // Plots.
    let mut groups: Vec<BarGroup> = library
        .changes
        .iter()
        .map(|c| {
            let s = Summary::of(&c.live_ms);
            BarGroup {
                label: c.short.clone(),
                values: vec![Some(s.p50), Some(s.max)],
            }
        })
        .collect();
    for d in [&sighup, &watch] {
        let s = Summary::of(&d.live_ms);
        groups.push(BarGroup {
            label: d.short.clone(),
            values: vec![Some(s.p50), Some(s.max)],
        });
    }
    plot::bar_chart(
        &ctx.plot_path("control-plane-latency.png"),
        "Change to data plane: library (loaded engine, pool table size) and daemon",
        "milliseconds",
        &["median", "max"],
        &groups,
    )?;
    let series = |name: &str, pick: fn(&ScalePoint) -> f64| Series {
        name: name.to_owned(),
        points: scale.iter().map(|p| (p.services as f64, pick(p))).collect(),
    };
    plot::line_chart(
        &ctx.plot_path("control-plane-scale.png"),
        "Engine::apply time vs virtual services (median)",
        "virtual services (log)",
        "milliseconds (log)",
        &[
            series("initial apply, kernel maps", |p| med(&p.kernel_initial_ms)),
            series("initial apply, in memory (engine's computation)", |p| {
                med(&p.memory_initial_ms)
            }),
            series("one-VS change, kernel maps", |p| med(&p.kernel_change_ms)),
            series("one-VS change, in memory", |p| med(&p.memory_change_ms)),
            series("no-op re-apply, kernel maps", |p| med(&p.kernel_noop_ms)),
            series("YAML parse + validate + compile", |p| med(&p.compile_ms)),
        ],
        Axes {
            log_x: true,
            log_y: true,
        },
    )?;

    // Markdown.
    let mut md = String::new();
    writeln!(
        md,
        "There is no controller yet: a configuration reaches the data plane through the \
         library (`Engine::apply` over the XDP program's maps) or through the daemon \
         (`ricochet engine`, which reloads its file on SIGHUP or when the file changes).\n"
    )?;
    writeln!(md, "### (a) One change on a loaded engine (library)\n")?;
    writeln!(
        md,
        "The XDP program is loaded (not attached) in a namespace of its own with a route and \
         a permanent neighbour, so that `bpf_fib_lookup` succeeds for the servers. The engine \
         holds {} virtual services ({} with a pool of two servers and a {SMALL_TABLE}-slot \
         table each, one with a default 65537-slot table); program load took {} ms, the \
         initial apply {} ms. Each change is applied with `Engine::apply` (the new `Desired` \
         compiled beforehand), then BPF_PROG_TEST_RUN runs SYN packets from new source ports \
         to the VIP until one comes out encapsulated (XDP_TX, IP-in-IP) to a server of the \
         new state (removals: until the VIP is no longer encapsulated). Before each change \
         the same probe is checked to show the old state. Pool changes replace both servers \
         and back again (both directions counted). {lib_reps} repeats.\n",
        library.base_services,
        library.base_services - 1,
        fmt_ms(library.load_ms),
        fmt_ms(library.initial_apply_ms)
    )?;
    let rows: Vec<Vec<String>> = library
        .changes
        .iter()
        .map(|c| {
            let a = Summary::of(&c.apply_ms);
            let l = Summary::of(&c.live_ms);
            let first = c.packets.iter().filter(|&&p| p == 1).count();
            vec![
                c.name.clone(),
                fmt_ms(a.p50),
                fmt_ms(a.p90),
                fmt_ms(l.p50),
                fmt_ms(l.p90),
                fmt_ms(l.max),
                format!("{first} of {}", c.packets.len()),
                c.last_report.clone(),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "change",
            "apply median ms",
            "apply p90 ms",
            "live median ms",
            "live p90 ms",
            "live max ms",
            "first packet after apply used it",
            "what apply wrote",
        ],
        &rows,
    ));
    writeln!(
        md,
        "\n\"Live\" runs from the start of apply to the packet that shows the change. Map \
         updates are synchronous system calls, so the change is in force when apply \
         returns: the first packet after it uses it. Raw: [{raw_lib}]({raw_lib}).\n"
    )?;

    writeln!(md, "### (b) The daemon, end to end\n")?;
    writeln!(
        md,
        "The seed's topology (client, router, se1, web01, web02) with nginx and `ricochet \
         server setup` on both servers, `ricochet engine` on se1, starting \
         from the seed's virtual service. Each repeat adds a virtual service on a new VIP \
         (already routed to se1 by the router and set up on the servers) to the file, \
         replaced atomically by a rename; then either SIGHUP is sent (the file watch is off: \
         `--watch-interval-ms 3600000`), or nothing (the file watch at its default, 500 ms). \
         From the client namespace, TCP connections to VIP:80 (each waiting at most {} ms, \
         {} µs apart) are tried from the moment the file is written until one completes: the \
         SYN went through se1's XDP program to a server, which answered directly. Before \
         each change one connection is checked to fail. Changes start at spread phases of \
         the daemon's polling (its main loop sleeps 50 ms between checks). The daemon's \
         own log timestamps split the time. {daemon_reps} repeats each. Before the first \
         SIGHUP the bench waits until the daemon catches the signal (`SigCgt` in \
         /proc): it logs \"engine running\" before installing its handlers, and a SIGHUP in \
         between ends it.\n",
        PROBE_ATTEMPT.as_millis(),
        PROBE_PAUSE.as_micros()
    )?;
    let opt_med = |v: &[Option<f64>]| {
        let x: Vec<f64> = v.iter().flatten().copied().collect();
        if x.is_empty() {
            "-".to_owned()
        } else {
            fmt_ms(med(&x))
        }
    };
    let rows: Vec<Vec<String>> = [&sighup, &watch]
        .iter()
        .map(|d| {
            let s = Summary::of(&d.live_ms);
            vec![
                d.name.clone(),
                fmt_ms(s.p50),
                fmt_ms(s.max),
                fmt_ms(s.min),
                opt_med(&d.noticed_ms),
                opt_med(&d.applied_ms),
                d.live_ms.len().to_string(),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "trigger",
            "to first connection, median ms",
            "max ms",
            "min ms",
            "daemon noticed (log), median ms",
            "daemon applied (log), median ms",
            "repeats",
        ],
        &rows,
    ));
    writeln!(
        md,
        "\nThe client's resolution is one attempt and a pause, about {:.1} ms; \"noticed\" is \
         the daemon's SIGHUP log line (the file watch logs nothing when it sees a change), \
         \"applied\" its log line after `Engine::apply` returned (wall clocks of the same \
         machine). Raw: [{raw_daemon}]({raw_daemon}).\n\n![Latencies](control-plane-latency.png)\n",
        (PROBE_ATTEMPT + PROBE_PAUSE).as_secs_f64() * 1e3
    )?;

    writeln!(md, "### (c) Many virtual services\n")?;
    writeln!(
        md,
        "Generated configurations of N virtual services, each with a pool of its own (two \
         servers, `table_size: {SMALL_TABLE}`, the smallest allowed for two servers: \
         10,000 default 65537-slot tables would need 655 million slots); every VS on its own \
         VIP, port 80. The data plane is loaded with room for {} VIPs and services, {} server slots and \
         {} Maglev slots (the defaults hold 4096 \
         services and VIPs). For each N: YAML parse + validate + compile; `Engine::apply` on \
         an empty data plane, over the kernel maps and over the in-memory data plane \
         (`MemoryDataplane`: the engine's own computation, no system calls), interleaved; \
         the same configuration applied again (no-op); and adding one VS with its own pool \
         and removing it again (both counted as one-VS changes, {CHANGES_PER_REP} of each \
         per repeat). Every time is `Engine::apply` alone, the engine's time (planning and \
         map writes): each configuration is compiled beforehand. The \"engine CPU\" columns \
         are the CPU time of the engine's thread during apply (user and system, so with the \
         kernel's work in the map system calls), which, unlike the wall time beside them, \
         leaves out the time spent waiting for a core when the machine is busy. Medians of \
         {} repeats ({} for 10,000).\n",
        lab_caps().vips,
        lab_caps().servers,
        lab_caps().maglev_slots,
        scale_reps + 2,
        scale_reps
    )?;
    let rows: Vec<Vec<String>> = scale
        .iter()
        .map(|p| {
            vec![
                p.services.to_string(),
                fmt_ms(med(&p.compile_ms)),
                fmt_ms(med(&p.kernel_initial_ms)),
                fmt_ms(med(&p.kernel_initial_cpu_ms)),
                fmt_ms(med(&p.memory_initial_ms)),
                fmt_ms(med(&p.kernel_initial_ms) - med(&p.memory_initial_ms)),
                p.initial_writes.to_string(),
                fmt_ms(med(&p.kernel_noop_ms)),
                fmt_ms(med(&p.kernel_change_ms)),
                fmt_ms(med(&p.kernel_change_cpu_ms)),
                fmt_ms(med(&p.memory_change_ms)),
                p.change_writes.to_string(),
                fmt_ms(med(&p.status_read_ms)),
                fmt_ms(med(&p.scrape_encode_ms)),
                format!("{}", p.scrape_bytes / 1024),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "VSs",
            "compile ms",
            "apply (kernel) ms",
            "apply (kernel), engine CPU ms",
            "apply (in memory) ms",
            "difference: map updates ms",
            "map element updates",
            "no-op re-apply (kernel) ms",
            "one-VS change (kernel) ms",
            "one-VS change (kernel), engine CPU ms",
            "one-VS change (in memory) ms",
            "map element updates of the change",
            "counters read (kernel) ms",
            "/metrics encode ms",
            "/metrics KiB",
        ],
        &rows,
    ));
    let last = scale.last().expect("sizes");
    let check = Summary::of(&check_ms);
    writeln!(
        md,
        "\n`ricochet check-config` of the {biggest}-VS file ({} KiB): {} ms median (process \
         start, parse, validation, compilation and printing one line per object).\n\n\
         **Is apply incremental?** In what it writes: a one-VS change makes {} (at {} \
         VSs: {}). In what it computes: the engine compares each desired pool and VS with \
         the running one and plans only those that differ (their slots, Maglev tables and \
         entries); unchanged pools' tables are not rebuilt and no map is read back, so what \
         still grows with the configuration is one comparison per object (the no-op \
         re-apply is that cost alone). The difference between the kernel and in-memory \
         columns is the map system calls: one BPF_MAP_UPDATE_BATCH per Maglev table, one \
         update per service entry, VIP and server slot write.\n\n\
         **Metrics at scale.** \"counters read\" is `Engine::status` over the kernel maps: \
         every service's and server slot's per-CPU counters, the reading the engine's run loop \
         takes once a second for its state file and `/metrics`; \"/metrics encode\" is what \
         a scrape then costs (the Prometheus text of that reading, `prometheus-client`): a \
         scrape reads no map.\n\n\
         ![Apply time vs VSs](control-plane-scale.png)\n\nRaw: [{raw_scale}]({raw_scale}), \
         [{raw_check}]({raw_check}).\n",
        last.yaml_bytes / 1024,
        fmt_ms(check.p50),
        format_args!("{} map element updates", last.change_writes),
        last.services,
        last.change_report,
    )?;
    if quick {
        writeln!(md, "_Quick run: fewer repeats: noisier._\n")?;
    }

    let find = |name: &str| library.changes.iter().find(|c| c.name.starts_with(name));
    let mut headlines = Vec::new();
    if let (Some(small), Some(big)) = (
        find("add a VS (new pool, 211"),
        find("add a VS (new pool, 65537"),
    ) {
        headlines.push(format!(
            "library, one VS added to {} VSs: live in {} ms median (211-slot pool), {} ms \
             (65537-slot pool), first packet after apply",
            library.base_services,
            fmt_ms(med(&small.live_ms)),
            fmt_ms(med(&big.live_ms))
        ));
    }
    headlines.push(format!(
        "daemon, file to first connection: SIGHUP {} ms median ({} max), file watch {} ms \
         median ({} max)",
        fmt_ms(med(&sighup.live_ms)),
        fmt_ms(Summary::of(&sighup.live_ms).max),
        fmt_ms(med(&watch.live_ms)),
        fmt_ms(Summary::of(&watch.live_ms).max)
    ));
    headlines.push(format!(
        "{} VSs: apply {} ms on an empty data plane ({} ms of it the engine's computation); \
         a one-VS change on top {} ms ({} ms engine CPU; medians)",
        last.services,
        fmt_ms(med(&last.kernel_initial_ms)),
        fmt_ms(med(&last.memory_initial_ms)),
        fmt_ms(med(&last.kernel_change_ms)),
        fmt_ms(med(&last.kernel_change_cpu_ms))
    ));

    Ok(Body {
        markdown: md,
        headlines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configuration_compiles_with_the_expected_objects() {
        let mut vss = generated(300);
        vss.push(Vs {
            name: "shares".into(),
            pool: "pool-00000".into(),
            ..generated_one(500, 0)
        });
        let desired = compile(&config_yaml(&vss)).unwrap();
        assert_eq!(desired.services.len(), 301);
        assert_eq!(desired.pools.len(), 300, "a shared pool is written once");
        assert!(desired.pools.iter().all(|p| p.table_size == SMALL_TABLE));
        let vips: std::collections::BTreeSet<_> = desired.services.iter().map(|s| s.vip).collect();
        assert_eq!(vips.len(), 301);
        let default = Vs {
            table_size: None,
            ..generated_one(0, 0)
        };
        let d = compile(&config_yaml(&[default])).unwrap();
        assert_eq!(d.pools[0].table_size, 65_537);
    }

    #[test]
    fn element_writes_count_every_table_slot() {
        let mut e = Engine::new(MemoryDataplane::new(lab_caps()));
        let before = write_counts(e.dataplane());
        let r = e
            .apply(&compile(&config_yaml(&generated(3))).unwrap())
            .unwrap();
        // Per VS: two fresh server slots written twice each, the table, the entry, the VIP
        // and its word of the VIP filter (the three VIPs' bits are in three words).
        assert_eq!(
            element_writes(before, e.dataplane(), &r),
            3 * (2 * 2 + u64::from(SMALL_TABLE) + 1 + 1 + 1)
        );
    }

    #[test]
    fn addresses_are_hosts() {
        assert_eq!(vip_addr(0), Ipv4Addr::new(10, 100, 0, 1));
        assert_eq!(vip_addr(249), Ipv4Addr::new(10, 100, 0, 250));
        assert_eq!(vip_addr(250), Ipv4Addr::new(10, 100, 1, 1));
        assert_eq!(server_addr(62_003), Ipv4Addr::new(10, 201, 248, 4));
    }

    #[test]
    fn daemon_configuration_compiles() {
        let d = compile(&config_yaml(&daemon_services(3))).unwrap();
        assert_eq!(d.services.len(), 4);
        assert_eq!(d.pools.len(), 1);
        assert_eq!(daemon_vip(2), Ipv4Addr::new(192, 168, 35, 12));
    }

    #[test]
    fn syn_frame_checksums_verify() {
        let f = tcp_syn_frame(CLIENT, 40000, vip_addr(0), 80);
        assert_eq!(f.len(), 54);
        // Checked with the test kit's checksum, not with the one that filled them in: a
        // header including its checksum sums to zero, and so does the TCP segment over
        // its pseudo-header.
        use ricochet_testkit::checksum::{l4_checksum, verifies};
        assert!(verifies(&f[14..34]), "IPv4 header checksum");
        assert_eq!(
            l4_checksum(CLIENT.into(), vip_addr(0).into(), 6, &f[34..54]),
            0,
            "TCP checksum"
        );
        assert_eq!(ipip_destination(&f), None, "TCP, not IP-in-IP");
    }

    #[test]
    fn ipip_destination_reads_the_outer_header() {
        let inner = tcp_syn_frame(CLIENT, 1, vip_addr(0), 80);
        let mut outer = inner[..14].to_vec();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = 4;
        ip[16..20].copy_from_slice(&[10, 201, 0, 1]);
        outer.extend_from_slice(&ip);
        outer.extend_from_slice(&inner[14..]);
        assert_eq!(ipip_destination(&outer), Some(Ipv4Addr::new(10, 201, 0, 1)));
        assert_eq!(ipip_destination(&outer[..20]), None);
    }

    #[test]
    fn log_timestamps() {
        let line = "\u{1b}[2m2026-11-26T10:53:25.250000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    ricochet::daemon: configuration change applied";
        assert_eq!(
            log_time_of_day(line),
            Some(10.0 * 3600.0 + 53.0 * 60.0 + 25.25)
        );
        assert_eq!(log_time_of_day("no timestamp here"), None);
        assert_eq!(day_diff(0.5, 86_399.5), 1.0);
        assert_eq!(day_diff(10.0, 12.5), -2.5);
        let log = "t1 x\n2026-01-01T00:00:01Z a\n2026-01-01T00:00:02Z a\n";
        assert_eq!(nth_log_time(log, " a", 1), Some(2.0));
        assert_eq!(nth_log_time(log, " a", 2), None);
    }

    #[test]
    fn this_process_catches_what_it_handles() {
        let pid = std::process::id();
        // The test harness handles none of these; SIGHUP is caught once a handler is set.
        assert!(!catches_signal(pid, libc::SIGUSR2));
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(libc::SIGUSR2, flag).unwrap();
        assert!(catches_signal(pid, libc::SIGUSR2));
        assert!(!catches_signal(u32::MAX >> 1, libc::SIGUSR2));
    }

    #[test]
    fn phase_delays_cover_the_period_once() {
        let period = Duration::from_millis(500);
        let mut d: Vec<u128> = (0..10)
            .map(|k| phase_delay(k, 10, period).as_millis())
            .collect();
        d.sort_unstable();
        assert_eq!(d, (0..10).map(|i| i * 50).collect::<Vec<u128>>());
        assert_eq!(phase_delay(0, 1, period), Duration::ZERO);
    }
}
