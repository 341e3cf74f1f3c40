//! The real data plane: the XDP program loaded with aya, its maps, attachment and
//! pinning.
//!
//! With a pin directory, every map and the XDP link are pinned there (bpffs). A later
//! load with the same directory reuses the pinned maps (so flows, tables and counters
//! survive a daemon restart) and swaps its program into the pinned link atomically, so
//! the interface never runs without a load balancer. Only [`detach`] removes them.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{Array, HashMap, IterableMap as _, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use ricochet_common::{
    maps, vip_filter, Counters, Event, FlowKey, FlowValue, Reason, ServerValue, ServiceKey,
    ServiceValue, Settings, TokenBucket, VipKey, VipValue,
};
use tracing::{info, warn};

use crate::{netlink, offloads, Capacities, Dataplane};

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (the fast path). Fails where the driver lacks XDP support.
    Native,
    /// In the kernel's generic receive path: works everywhere, much slower.
    Generic,
    /// Native, falling back to generic with a warning.
    Auto,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(AttachMode::Native),
            "generic" => Ok(AttachMode::Generic),
            "auto" => Ok(AttachMode::Auto),
            _ => Err(format!(
                "unknown XDP mode {s:?}: expected native, generic or auto"
            )),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Directory in bpffs for the pinned maps and link; `None` pins nothing (tests).
    pub pin_dir: Option<PathBuf>,
    pub caps: Capacities,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug)]
pub struct TestRunOutput {
    pub action: u32,
    pub packet: Vec<u8>,
    pub duration: Duration,
}

pub struct KernelDataplane {
    ebpf: Ebpf,
    caps: Capacities,
    pin_dir: Option<PathBuf>,
    /// Whether the maps existed pinned before this load.
    adopted: bool,
    /// Without a pin directory: the interface whose receive merging a generic attachment
    /// turned off, and what to turn on again when this data plane (and so its link) goes.
    unpinned_offloads: Option<(String, offloads::Saved)>,
    vips: HashMap<MapData, VipKey, VipValue>,
    vip_filter: Array<MapData, u64>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    servers: Array<MapData, ServerValue>,
    maglev: Array<MapData, u32>,
    settings: Array<MapData, Settings>,
    svc_stats: PerCpuArray<MapData, Counters>,
    srv_stats: PerCpuArray<MapData, Counters>,
    reasons: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    icmp_buckets: PerCpuArray<MapData, TokenBucket>,
}

const ALL_MAPS: [&str; 12] = [
    maps::VIPS,
    maps::VIP_FILTER,
    maps::SERVICES,
    maps::FLOWS,
    maps::SERVERS,
    maps::MAGLEV,
    maps::SERVICE_STATS,
    maps::SERVER_STATS,
    maps::REASONS,
    maps::SETTINGS,
    maps::NEXT_HOPS,
    maps::EVENTS,
];

fn link_pin_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link-{iface}"))
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// The capacities of the maps pinned in `dir` (a pinned map keeps the size it was
/// created with, whatever a later load asks for).
fn pinned_capacities(dir: &Path, mut caps: Capacities) -> anyhow::Result<Capacities> {
    let size = |name: &str| -> anyhow::Result<u32> {
        let path = dir.join(name);
        let map = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        Ok(map
            .info()
            .with_context(|| format!("reading map info of {}", path.display()))?
            .max_entries())
    };
    caps.vips = size(maps::VIPS)?;
    caps.service_ports = size(maps::SERVICES)?;
    caps.flows = size(maps::FLOWS)?;
    caps.servers = size(maps::SERVERS)?;
    caps.maglev_slots = size(maps::MAGLEV)?;
    caps.services = size(maps::SERVICE_STATS)?;
    Ok(caps)
}

/// Removes the pins whose shape this program would misread, so that the load creates
/// them afresh:
/// - counter maps indexed by a counted enum that has more variants than the pinned map
///   has entries (pinned by an older program): reusing one would leave the new variants
///   uncounted and unreadable. Their counts start again from zero.
/// - a `VIP_FILTER` of another size than [`vip_filter::WORDS`] words (bits are taken
///   modulo the filter's size, so another size means other bits). The filter holds
///   nothing of its own: the engine's first apply, a full one, writes it from `VIPS`
///   before the program is attached.
fn drop_outgrown_pins(dir: &Path) -> anyhow::Result<()> {
    /// A map's name, whether a pinned size is outgrown, and the size this program needs.
    type Shape = (&'static str, fn(u32) -> bool, u32);
    let checks: [Shape; 3] = [
        (
            maps::REASONS,
            |pinned| pinned < Reason::COUNT,
            Reason::COUNT,
        ),
        (maps::EVENTS, |pinned| pinned < Event::COUNT, Event::COUNT),
        (
            maps::VIP_FILTER,
            |pinned| pinned != vip_filter::WORDS,
            vip_filter::WORDS,
        ),
    ];
    for (name, outgrown, needed) in checks {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let pinned = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?
            .info()
            .with_context(|| format!("reading map info of {}", path.display()))?
            .max_entries();
        if outgrown(pinned) {
            warn!(
                map = name,
                pinned,
                needed,
                "a pinned map has another shape than this program's; it is created afresh"
            );
            std::fs::remove_file(&path)
                .with_context(|| format!("removing outgrown pin {}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes the pin of a flow table whose value size is not this program's (pinned by an
/// older program, before `FlowValue` had its `seen` stamp): the program cannot load over
/// it. Its flows are lost; their next packets take their Maglev pick, the server they
/// had while the tables did not change.
fn drop_incompatible_flows(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(maps::FLOWS);
    if !path.exists() {
        return Ok(());
    }
    let pinned = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?
        .info()
        .with_context(|| format!("reading map info of {}", path.display()))?
        .value_size();
    let want = std::mem::size_of::<FlowValue>() as u32;
    if pinned != want {
        warn!(
            map = maps::FLOWS,
            pinned_value_size = pinned,
            value_size = want,
            "the pinned flow table predates this program's flow entries; it starts empty"
        );
        std::fs::remove_file(&path)
            .with_context(|| format!("removing incompatible pin {}", path.display()))?;
    }
    Ok(())
}

/// The capacities of the maps pinned in `dir`: what a reader of a running data plane
/// (`ricochet status`) loads with, so that it asks for nothing the pins do not have.
pub fn pinned_caps(dir: &Path) -> anyhow::Result<Capacities> {
    pinned_capacities(dir, Capacities::default())
}

fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        // As bpftool and systemd do: pins need a bpf filesystem at the usual place.
        let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        // SAFETY: valid C strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!(
                "/sys/fs/bpf is not a bpf filesystem and mounting one failed ({}): \
                 mount it with `mount -t bpf bpf /sys/fs/bpf`",
                std::io::Error::last_os_error()
            );
        }
        info!("mounted a bpf filesystem at /sys/fs/bpf");
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

impl KernelDataplane {
    /// Loads the program and creates (or, with a pin directory that holds them, reuses)
    /// its maps. The program is not attached anywhere yet.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let mut caps = opts.caps;
        let mut loader = EbpfLoader::new();
        let mut adopted = false;
        let pin_paths: Vec<(&str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                ensure_bpffs(dir)?;
                drop_outgrown_pins(dir)?;
                drop_incompatible_flows(dir)?;
                adopted = dir.join(maps::SERVICES).exists();
                if adopted {
                    let wanted = caps;
                    caps = pinned_capacities(dir, caps)?;
                    if wanted != caps {
                        warn!(
                            ?wanted, pinned = ?caps,
                            "the pinned maps keep their capacities; run `ricochet detach` first to change them"
                        );
                    }
                }
                ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(maps::VIPS, caps.vips)
            .map_max_entries(maps::SERVICES, caps.service_ports)
            .map_max_entries(maps::FLOWS, caps.flows)
            .map_max_entries(maps::SERVERS, caps.servers)
            .map_max_entries(maps::MAGLEV, caps.maglev_slots)
            .map_max_entries(maps::SERVICE_STATS, caps.services)
            .map_max_entries(maps::SERVER_STATS, caps.servers)
            .map_max_entries(maps::NEXT_HOPS, caps.servers);
        let mut ebpf = loader.load(ricochet_bpf::LB).map_err(|e| {
            let hint = if unsafe { libc::geteuid() } != 0 {
                " (loading eBPF needs root: CAP_BPF and CAP_NET_ADMIN)"
            } else {
                ""
            };
            anyhow!("loading the XDP object: {e}{hint}")
        })?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut(ricochet_bpf::LB_PROGRAM)
                .ok_or_else(|| anyhow!("program {} missing", ricochet_bpf::LB_PROGRAM))?
                .try_into()?;
            prog.load()
                .context("the kernel verifier rejected the XDP program")?;
        }
        let dp = KernelDataplane {
            vips: take(&mut ebpf, maps::VIPS)?,
            vip_filter: take(&mut ebpf, maps::VIP_FILTER)?,
            services: take(&mut ebpf, maps::SERVICES)?,
            flows: take(&mut ebpf, maps::FLOWS)?,
            servers: take(&mut ebpf, maps::SERVERS)?,
            maglev: take(&mut ebpf, maps::MAGLEV)?,
            settings: take(&mut ebpf, maps::SETTINGS)?,
            svc_stats: take(&mut ebpf, maps::SERVICE_STATS)?,
            srv_stats: take(&mut ebpf, maps::SERVER_STATS)?,
            reasons: take(&mut ebpf, maps::REASONS)?,
            events: take(&mut ebpf, maps::EVENTS)?,
            icmp_buckets: take(&mut ebpf, maps::ICMP_BUCKETS)?,
            ebpf,
            caps,
            pin_dir: opts.pin_dir.clone(),
            adopted,
            unpinned_offloads: None,
        };
        Ok(dp)
    }

    /// True when the maps were found pinned (a restart): the engine adopts their state.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(ricochet_bpf::LB_PROGRAM)
            .ok_or_else(|| anyhow!("program missing"))?
            .try_into()?)
    }

    /// Attaches to `iface`, or swaps this program into the link pinned for `iface` by
    /// an earlier run (no moment without a program). With a pin directory the link is
    /// pinned so the program keeps running after this process exits.
    ///
    /// A pinned link keeps the mode it was attached in: asking for the other mode
    /// (native over a generic attachment or the reverse) is refused, saying how to
    /// switch; `Auto` adopts either. In generic mode receive merging (GRO, LRO) is turned
    /// off first and restored by [`detach`] (see [`offloads`]).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> anyhow::Result<()> {
        let pin = self.pin_dir.as_ref().map(|d| link_pin_path(d, iface));
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            return self.adopt_pinned_link(iface, mode, path);
        }
        let try_attach = |prog: &mut Xdp, m: XdpMode| prog.attach(iface, m);
        let id = match mode {
            AttachMode::Native => try_attach(self.program()?, XdpMode::Driver).map_err(|e| {
                anyhow!(
                    "attaching native XDP to {iface}: {e}; if the driver lacks native XDP, \
                     use --xdp-mode generic (slow) or auto"
                )
            })?,
            AttachMode::Generic => {
                warn!(
                    iface,
                    "GENERIC XDP: packets take the slow path through the kernel stack"
                );
                self.attach_generic(iface)?
            }
            AttachMode::Auto => match try_attach(self.program()?, XdpMode::Driver) {
                Ok(id) => id,
                Err(e) => {
                    warn!(iface, error = %e, "native XDP failed; FALLING BACK TO GENERIC XDP (slow path)");
                    self.attach_generic(iface)?
                }
            },
        };
        if let Some(path) = pin {
            let link = self.program()?.take_link(id)?;
            let link = FdLink::try_from(link).map_err(|e| {
                anyhow!(
                    "the kernel attached XDP without a bpf_link ({e}); pinning needs Linux 5.9+"
                )
            })?;
            link.pin(&path)
                .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
        }
        info!(iface, ?mode, "XDP program attached");
        Ok(())
    }

    /// Attaches in generic mode with receive merging off (recorded in the pin directory,
    /// or kept here without one), restoring it if the attachment fails.
    fn attach_generic(&mut self, iface: &str) -> anyhow::Result<aya::programs::xdp::XdpLinkId> {
        let saved = offloads::disable_merging(iface)?;
        if let Some(dir) = &self.pin_dir {
            if let Err(e) = offloads::write_record(dir, iface, &saved) {
                let _ = offloads::restore(iface, &saved);
                return Err(e);
            }
        }
        match self.program()?.attach(iface, XdpMode::Skb) {
            Ok(id) => {
                if self.pin_dir.is_none() {
                    self.unpinned_offloads = Some((iface.to_owned(), saved));
                }
                Ok(id)
            }
            Err(e) => {
                let _ = offloads::restore(iface, &saved);
                if let Some(dir) = &self.pin_dir {
                    let _ = std::fs::remove_file(offloads::record_path(dir, iface));
                }
                Err(anyhow!(e)).with_context(|| format!("attaching generic XDP to {iface}"))
            }
        }
    }

    /// Swaps this program into the link an earlier run pinned at `path`, after checking
    /// that the link is still on `iface` and in a mode `mode` accepts.
    fn adopt_pinned_link(
        &mut self,
        iface: &str,
        mode: AttachMode,
        path: &Path,
    ) -> anyhow::Result<()> {
        let link = PinnedLink::from_pin(path)
            .with_context(|| format!("opening pinned link {}", path.display()))?;
        let link = FdLink::from(link);
        let prog_id = link
            .info()
            .with_context(|| format!("reading the pinned link {}", path.display()))?
            .program_id();
        let xdp = netlink::link_by_name(iface)?.xdp;
        let pinned = if xdp.native == Some(prog_id) {
            AttachMode::Native
        } else if xdp.generic == Some(prog_id) {
            AttachMode::Generic
        } else {
            bail!(
                "the XDP link pinned at {} is no longer attached to {iface} (its interface \
                 was removed or it was detached): run `ricochet detach --interface {iface}` \
                 and start again",
                path.display()
            );
        };
        let name = |m: AttachMode| match m {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Auto => "auto",
        };
        if mode != AttachMode::Auto && mode != pinned {
            let message = format!(
                "refusing --xdp-mode {}: an earlier run left the load balancer attached to \
                 {iface} in {} mode (pinned at {}), and a pinned attachment keeps its mode. \
                 Start with --xdp-mode {} (or auto) to take it over, or run `ricochet detach \
                 --interface {iface}` first (the flow table is then forgotten) to attach in \
                 {} mode",
                name(mode),
                name(pinned),
                path.display(),
                name(pinned),
                name(mode)
            );
            tracing::error!(
                iface,
                requested = name(mode),
                pinned = name(pinned),
                "{message}"
            );
            bail!(message);
        }
        let link = XdpLink::try_from(link).context("pinned link is not an XDP link")?;
        self.program()?
            .attach_to_link(link)
            .with_context(|| format!("replacing the program in the pinned link on {iface}"))?;
        if pinned == AttachMode::Generic {
            // Written by the run that attached; an attachment made before Ricochet turned
            // merging off gets it turned off now.
            let dir = self
                .pin_dir
                .as_deref()
                .expect("a pinned link has a pin directory");
            if offloads::read_record(&offloads::record_path(dir, iface))?.is_none() {
                let saved = offloads::disable_merging(iface)?;
                offloads::write_record(dir, iface, &saved)?;
            }
        }
        info!(
            iface,
            mode = name(pinned),
            "adopted the pinned XDP link and swapped in the new program"
        );
        Ok(())
    }

    /// Runs the program once on `input` with BPF_PROG_TEST_RUN, as if received on
    /// interface `ifindex` (0: the kernel's default, loopback).
    pub fn test_run(&mut self, input: &[u8], ifindex: u32) -> anyhow::Result<TestRunOutput> {
        self.test_run_repeated(input, ifindex, 1)
    }

    /// [`test_run`](Self::test_run) with the kernel running the program `repeat` times
    /// on the same buffer; the duration is the kernel's mean per run. Only meaningful
    /// for inputs the program does not rewrite: later runs see the earlier runs' output.
    pub fn test_run_repeated(
        &mut self,
        input: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> anyhow::Result<TestRunOutput> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; input.len() + 256];
        ctx[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: (ifindex != 0).then_some(&ctx[..]),
            repeat,
            ..Default::default()
        };
        let res = self
            .program()?
            .test_run(opts)
            .context("BPF_PROG_TEST_RUN")?;
        out.truncate(res.data_size_out as usize);
        Ok(TestRunOutput {
            action: res.return_value,
            packet: out,
            duration: res.duration,
        })
    }

    /// Number of entries in the flow table (walks it: for status and tests).
    pub fn flow_count(&self) -> usize {
        self.flows.keys().filter(|k| k.is_ok()).count()
    }

    /// The flow table's entries.
    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// Records a flow as the program does for a new one; fails if the key is present
    /// already (BPF_NOEXIST), so that a caller filling the table learns of duplicates.
    /// For benchmarks and tests: the engine never writes flows.
    pub fn insert_flow(&mut self, key: &FlowKey, value: &FlowValue) -> anyhow::Result<()> {
        const BPF_NOEXIST: u64 = 1;
        self.flows
            .insert(key, value, BPF_NOEXIST)
            .context("inserting into FLOWS")
    }

    /// The flow recorded for `key`, if any (a lookup from userspace does not refresh
    /// the entry's LRU state).
    pub fn lookup_flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowValue>> {
        match self.flows.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS"),
        }
    }

    /// Removes a flow; fails if it is absent (which tells a caller whether the program
    /// recorded it).
    pub fn remove_flow(&mut self, key: &FlowKey) -> anyhow::Result<()> {
        self.flows.remove(key).context("removing from FLOWS")
    }

    /// Every CPU's budget of ICMP "too big" errors (`ICMP_BUCKETS`), in CPU order.
    /// Not pinned: a new program starts with full buckets. For tests and diagnostics.
    pub fn icmp_buckets(&self) -> anyhow::Result<Vec<TokenBucket>> {
        let v = self
            .icmp_buckets
            .get(&0, 0)
            .context("reading ICMP_BUCKETS")?;
        Ok(v.iter().copied().collect())
    }

    /// Sets every CPU's ICMP budget to `bucket`. For tests: the program keeps it.
    pub fn set_icmp_buckets(&mut self, bucket: &TokenBucket) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting possible CPUs")?;
        let values = aya::maps::PerCpuValues::try_from(vec![*bucket; cpus])
            .context("building per-CPU ICMP_BUCKETS values")?;
        self.icmp_buckets
            .set(0, values, 0)
            .context("writing ICMP_BUCKETS")
    }

    /// The length of the Maglev region `offset`, `len` slots, once checked to lie in the
    /// array.
    fn table_region(&self, offset: u32, len: usize) -> anyhow::Result<u32> {
        u32::try_from(len)
            .ok()
            .filter(|&l| {
                offset
                    .checked_add(l)
                    .is_some_and(|end| end <= self.caps.maglev_slots)
            })
            .ok_or_else(|| {
                anyhow!(
                    "Maglev region of {len} slots at {offset} does not fit the array of {} slots",
                    self.caps.maglev_slots
                )
            })
    }
}

/// Detaches the program from `iface` and removes the pins under `pin_dir` (maps and
/// links). Existing flows are forgotten; the interface goes back to the kernel's stack.
pub fn detach(pin_dir: &Path, iface: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut records = Vec::new();
    if !pin_dir.exists() {
        bail!(
            "nothing is pinned at {}: Ricochet is not attached with this pin directory",
            pin_dir.display()
        );
    }
    for entry in
        std::fs::read_dir(pin_dir).with_context(|| format!("reading {}", pin_dir.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let is_link = name.starts_with("link-");
        if is_link && iface.is_some_and(|i| name != format!("link-{i}")) {
            continue;
        }
        if let Some(of) = name.strip_prefix("offloads-") {
            if iface.is_none_or(|i| i == of) {
                records.push((path, of.to_owned()));
            }
            continue;
        }
        if is_link {
            // Removing the pin alone releases the link only once the kernel frees the bpffs
            // inode (after an RCU grace period and a work item): under load the program kept
            // forwarding for a while after `detach` returned. BPF_LINK_DETACH takes the
            // program off the interface before we return, whoever still holds the link.
            force_detach_link(&path)?;
        }
        if is_link || ALL_MAPS.contains(&name.as_str()) {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing pin {}", path.display()))?;
            removed.push(path);
        }
    }
    // Merging comes back only once the generic program is off the interface.
    for (path, of) in records {
        restore_offloads(&path, &of);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        removed.push(path);
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(removed)
}

/// Turns on again the receive merging a generic attachment to `iface` turned off, as
/// recorded at `record`; a failure is logged (the detach goes on: the program must go).
fn restore_offloads(record: &Path, iface: &str) {
    let restored = offloads::read_record(record)
        .and_then(|saved| saved.map_or(Ok(()), |saved| offloads::restore(iface, &saved)));
    if let Err(e) = restored {
        warn!(
            iface,
            error = format!("{e:#}"),
            "could not restore receive offloads: check them with `ethtool -k {iface}`"
        );
    }
}

impl Drop for KernelDataplane {
    fn drop(&mut self) {
        // Without a pin directory the link goes with this object: merging comes back.
        if let Some((iface, saved)) = self.unpinned_offloads.take() {
            if let Err(e) = offloads::restore(&iface, &saved) {
                warn!(
                    iface,
                    error = format!("{e:#}"),
                    "could not restore receive offloads"
                );
            }
        }
    }
}

/// The `bpf(2)` system call with `attr`, a prefix of `union bpf_attr` for `cmd`.
fn bpf_syscall(cmd: libc::c_long, attr: &mut [u64]) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, correctly sized bpf_attr prefix that outlives the call; any
    // pointer it holds is the caller's to keep valid for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` (the BPF_MAP_*_BATCH commands) as 64-bit words:
/// in_batch, out_batch, keys, values (pointers), count and map_fd (two u32 in one word),
/// elem_flags, flags.
fn batch_attr(
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    fd: u32,
) -> [u64; 7] {
    let mut count_fd = [0u8; 8];
    count_fd[..4].copy_from_slice(&count.to_ne_bytes());
    count_fd[4..].copy_from_slice(&fd.to_ne_bytes());
    [
        in_batch,
        out_batch,
        keys,
        values,
        u64::from_ne_bytes(count_fd),
        0,
        0,
    ]
}

/// The `count` a batch command left in its attribute (elements processed).
fn batch_count(attr: &[u64; 7]) -> u32 {
    let bytes = attr[4].to_ne_bytes();
    u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// BPF_MAP_UPDATE_BATCH: `keys[i]` gets `values[i]` in the map `fd` (whose key and value
/// types these are), in order, in one system call. On failure, the number of elements
/// the kernel had written and the error.
fn map_update_batch<K: aya::Pod, V: aya::Pod>(
    fd: std::os::fd::BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), (u32, std::io::Error)> {
    use std::os::fd::AsRawFd as _;
    assert_eq!(keys.len(), values.len(), "one value per key");
    let count = u32::try_from(keys.len()).map_err(|_| {
        (
            0,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "more than 2^32 elements"),
        )
    })?;
    // keys and values outlive the call; the kernel reads `count` elements of each.
    let mut attr = batch_attr(
        0,
        0,
        keys.as_ptr() as u64,
        values.as_ptr() as u64,
        count,
        fd.as_raw_fd() as u32,
    );
    match bpf_syscall(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(_) if batch_count(&attr) == count => Ok(()),
        Ok(_) => Err((
            batch_count(&attr),
            std::io::Error::other("the kernel stopped early without an error"),
        )),
        Err(e) => Err((batch_count(&attr), e)),
    }
}

/// BPF_MAP_LOOKUP_BATCH on the array map `fd` of `V` values: slots `offset..offset +
/// len`, returned as (keys, values) in the kernel's order.
fn map_lookup_batch_array<V: aya::Pod + Default + Clone>(
    fd: std::os::fd::BorrowedFd<'_>,
    offset: u32,
    len: u32,
) -> std::io::Result<(Vec<u32>, Vec<V>)> {
    use std::os::fd::AsRawFd as _;
    let mut keys = vec![0u32; len as usize];
    let mut values = vec![V::default(); len as usize];
    // The kernel starts after the key in in_batch (an array's first slot without one) and
    // stores the last key it read in out_batch.
    let start = offset.wrapping_sub(1);
    let mut last = 0u32;
    let in_batch = if offset == 0 {
        0
    } else {
        std::ptr::addr_of!(start) as u64
    };
    // keys, values, start and last outlive the call; the kernel writes at most `len`
    // elements into keys and values.
    let mut attr = batch_attr(
        in_batch,
        std::ptr::addr_of_mut!(last) as u64,
        keys.as_mut_ptr() as u64,
        values.as_mut_ptr() as u64,
        len,
        fd.as_raw_fd() as u32,
    );
    let result = bpf_syscall(BPF_MAP_LOOKUP_BATCH, &mut attr);
    let got = batch_count(&attr);
    match result {
        Ok(_) if got == len => Ok((keys, values)),
        Ok(_) => Err(std::io::Error::other(format!(
            "the kernel returned {got} of {len} slots"
        ))),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{e} (after {got} of {len} slots)"),
        )),
    }
}

/// BPF_MAP_LOOKUP_BATCH over the whole hash map `fd` of `K` → `V`, `batch` elements per
/// system call, each visited in the kernel's order. Answers the number visited.
fn map_lookup_batch_hash<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: std::os::fd::BorrowedFd<'_>,
    batch: u32,
    visit: &mut dyn FnMut(&K, &V),
) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd as _;
    let mut keys = vec![K::default(); batch as usize];
    let mut values = vec![V::default(); batch as usize];
    // The hash map's batch token is its next bucket (a u32): none to start from.
    let (mut token_in, mut token_out) = (0u32, 0u32);
    let mut first = true;
    let mut total = 0u64;
    loop {
        // keys, values and both tokens outlive the call; the kernel writes at most
        // `batch` elements into keys and values.
        let mut attr = batch_attr(
            if first {
                0
            } else {
                std::ptr::addr_of!(token_in) as u64
            },
            std::ptr::addr_of_mut!(token_out) as u64,
            keys.as_mut_ptr() as u64,
            values.as_mut_ptr() as u64,
            batch,
            fd.as_raw_fd() as u32,
        );
        let result = bpf_syscall(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = batch_count(&attr) as usize;
        for (k, v) in keys.iter().zip(&values).take(got) {
            visit(k, v);
        }
        total += got as u64;
        match result {
            Ok(_) => {}
            // The end of the map (with the last elements, if any).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(total),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{e} (after {total} elements)"),
                ))
            }
        }
        token_in = token_out;
        first = false;
    }
}

/// Detaches the link pinned at `path` from its hook now (BPF_LINK_DETACH); the pin stays.
fn force_detach_link(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .with_context(|| format!("pin path {} contains a NUL byte", path.display()))?;
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32);
    // c_path outlives the call.
    let fd = bpf_syscall(BPF_OBJ_GET, &mut [c_path.as_ptr() as u64, 0])
        .with_context(|| format!("opening the pinned link {}", path.display()))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // union bpf_attr for BPF_LINK_DETACH: link_fd (u32).
    match bpf_syscall(BPF_LINK_DETACH, &mut [u64::from(link.as_raw_fd() as u32)]) {
        Ok(_) => Ok(()),
        // ENOLINK: already detached (its interface went away).
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("detaching the link {}", path.display())),
    }
}

fn sum<T: aya::Pod + Copy + Default>(
    vals: aya::maps::PerCpuValues<T>,
    add: impl Fn(&mut T, T),
) -> T {
    let mut total = T::default();
    for v in vals.iter() {
        add(&mut total, *v);
    }
    total
}

impl Dataplane for KernelDataplane {
    fn capacities(&self) -> Capacities {
        self.caps
    }
    fn set_settings(&mut self, settings: &Settings) -> anyhow::Result<()> {
        self.settings
            .set(0, settings, 0)
            .context("writing SETTINGS")
    }
    fn settings(&self) -> anyhow::Result<Settings> {
        self.settings.get(&0, 0).context("reading SETTINGS")
    }
    fn vips(&self) -> anyhow::Result<Vec<(VipKey, VipValue)>> {
        self.vips
            .iter()
            .map(|r| r.context("reading VIPS"))
            .collect()
    }
    fn put_vip(&mut self, key: &VipKey, value: &VipValue) -> anyhow::Result<()> {
        self.vips
            .insert(key, value, 0)
            .with_context(|| format!("writing VIP {:?}", key.ip()))
    }
    fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()> {
        self.vips
            .remove(key)
            .with_context(|| format!("removing VIP {:?}", key.ip()))
    }
    /// One BPF_MAP_LOOKUP_BATCH for the whole filter.
    fn vip_filter(&self) -> anyhow::Result<Vec<u64>> {
        use std::os::fd::AsFd as _;
        let (keys, words) =
            map_lookup_batch_array(self.vip_filter.map().fd().as_fd(), 0, vip_filter::WORDS)
                .context("reading VIP_FILTER (BPF_MAP_LOOKUP_BATCH)")?;
        if keys.iter().enumerate().any(|(i, k)| *k != i as u32) {
            bail!("reading VIP_FILTER: the kernel returned its words out of order");
        }
        Ok(words)
    }
    fn put_vip_filter_word(&mut self, index: u32, word: u64) -> anyhow::Result<()> {
        self.vip_filter
            .set(index, word, 0)
            .with_context(|| format!("writing word {index} of VIP_FILTER"))
    }
    fn services(&self) -> anyhow::Result<Vec<(ServiceKey, ServiceValue)>> {
        self.services
            .iter()
            .map(|r| r.context("reading SERVICES"))
            .collect()
    }
    fn put_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> anyhow::Result<()> {
        self.services
            .insert(key, value, 0)
            .with_context(|| format!("writing service {:?}:{}", key.ip(), key.port()))
    }
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.services
            .remove(key)
            .with_context(|| format!("removing service {:?}:{}", key.ip(), key.port()))
    }
    fn servers(&self) -> anyhow::Result<Vec<ServerValue>> {
        self.servers
            .iter()
            .map(|r| r.context("reading SERVERS"))
            .collect()
    }
    fn put_server(&mut self, id: u32, value: &ServerValue) -> anyhow::Result<()> {
        self.servers
            .set(id, value, 0)
            .with_context(|| format!("writing server slot {id}"))
    }
    /// One BPF_MAP_UPDATE_BATCH for the whole table (the kernel writes the slots in
    /// order; no reader sees the region until a service entry points at it).
    fn write_table(&mut self, offset: u32, slots: &[u32]) -> anyhow::Result<()> {
        let len = self.table_region(offset, slots.len())?;
        if len == 0 {
            return Ok(());
        }
        let keys: Vec<u32> = (offset..offset + len).collect();
        use std::os::fd::AsFd as _;
        map_update_batch(self.maglev.map().fd().as_fd(), &keys, slots).map_err(|(done, e)| {
            anyhow!(
                "writing the Maglev table at slots {offset}..{} (BPF_MAP_UPDATE_BATCH, \
                 {done} of {len} slots written): {e}",
                offset + len
            )
        })
    }
    /// One BPF_MAP_LOOKUP_BATCH for the whole region.
    fn scan_flows(&self, visit: &mut dyn FnMut(&FlowKey, &FlowValue)) -> anyhow::Result<u64> {
        use std::os::fd::AsFd as _;
        map_lookup_batch_hash(self.flows.map().fd().as_fd(), crate::FLOW_SCAN_BATCH, visit)
            .context("reading FLOWS (BPF_MAP_LOOKUP_BATCH)")
    }
    fn read_table(&self, offset: u32, len: u32) -> anyhow::Result<Vec<u32>> {
        let len = self.table_region(offset, len as usize)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        use std::os::fd::AsFd as _;
        let (keys, values) = map_lookup_batch_array(self.maglev.map().fd().as_fd(), offset, len)
            .with_context(|| {
                format!(
                    "reading the Maglev table at slots {offset}..{} (BPF_MAP_LOOKUP_BATCH)",
                    offset + len
                )
            })?;
        if let Some((i, k)) = keys
            .iter()
            .enumerate()
            .find(|(i, k)| **k != offset + *i as u32)
        {
            bail!(
                "reading the Maglev table at slots {offset}..{}: the kernel returned slot {k} \
                 in place {i}",
                offset + len
            );
        }
        Ok(values)
    }
    fn service_counters(&self, id: u32) -> anyhow::Result<Counters> {
        let v = self
            .svc_stats
            .get(&id, 0)
            .with_context(|| format!("reading service counters {id}"))?;
        Ok(sum(v, |a, b| *a += b))
    }
    fn server_counters(&self, id: u32) -> anyhow::Result<Counters> {
        let v = self
            .srv_stats
            .get(&id, 0)
            .with_context(|| format!("reading server counters {id}"))?;
        Ok(sum(v, |a, b| *a += b))
    }
    fn reason_counters(&self) -> anyhow::Result<Vec<(Reason, u64)>> {
        Reason::ALL
            .iter()
            .map(|r| {
                let v = self
                    .reasons
                    .get(&(*r as u32), 0)
                    .context("reading REASONS")?;
                Ok((*r, sum(v, |a, b| *a += b)))
            })
            .collect()
    }
    fn event_counters(&self) -> anyhow::Result<Vec<(Event, u64)>> {
        Event::ALL
            .iter()
            .map(|e| {
                let v = self
                    .events
                    .get(&(*e as u32), 0)
                    .with_context(|| format!("reading EVENTS ({})", e.name()))?;
                Ok((*e, sum(v, |a, b| *a += b)))
            })
            .collect()
    }
}
