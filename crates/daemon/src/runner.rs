//! The engine with what applying a configuration needs besides the maps: the outer
//! source addresses, the servers health monitoring marked down, attaching the data plane
//! after the first apply, and the state file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use ricochet_config::{Config, Desired, Encapsulation, ServiceEngineGroup};
use ricochet_dataplane::kernel::{AttachMode, KernelDataplane};
use ricochet_dataplane::memory::MemoryDataplane;
use ricochet_dataplane::xmit::{Finding, FindingKind, XmitMonitor};
use ricochet_dataplane::Dataplane;
use ricochet_engine::{ApplyReport, Engine};
use tracing::{debug, error, info, warn};

use crate::bgp::{Announcer, BgpOptions};
use crate::health::{self, without_down_servers, DownServers, Monitoring};
use crate::metrics::{EngineMetrics, Snapshot};
use crate::state::{self, Origin, StateFile};

/// What the daemon needs of a data plane besides its maps.
pub trait DaemonDataplane: Dataplane {
    /// Starts forwarding on `interface` (called once, after the first configuration is
    /// in the maps).
    fn attach(&mut self, interface: &str, mode: AttachMode) -> anyhow::Result<()>;

    /// Gets the next hops to `servers` resolved, so that packets to them are not dropped
    /// for want of a neighbour entry (called after every apply and every few seconds).
    fn resolve_next_hops(&self, servers: &[IpAddr]);

    /// A watch on the frames the data plane sends out of `interface` and a driver drops
    /// (see `ricochet_dataplane::xmit`); `None` for a data plane that sends nothing.
    fn transmit_monitor(&self, interface: &str) -> Option<anyhow::Result<XmitMonitor>>;
}

impl DaemonDataplane for KernelDataplane {
    fn attach(&mut self, interface: &str, mode: AttachMode) -> anyhow::Result<()> {
        KernelDataplane::attach(self, interface, mode)
    }

    fn resolve_next_hops(&self, servers: &[IpAddr]) {
        crate::neighbours::probe_all(servers);
    }

    fn transmit_monitor(&self, interface: &str) -> Option<anyhow::Result<XmitMonitor>> {
        Some(XmitMonitor::new(interface))
    }
}

/// The in-memory data plane forwards nothing: its maps are all there is, so there is no
/// program to attach and no neighbour table to fill.
impl DaemonDataplane for MemoryDataplane {
    fn attach(&mut self, _interface: &str, _mode: AttachMode) -> anyhow::Result<()> {
        Ok(())
    }

    fn resolve_next_hops(&self, _servers: &[IpAddr]) {}

    fn transmit_monitor(&self, _interface: &str) -> Option<anyhow::Result<XmitMonitor>> {
        None
    }
}

/// How long a rise of a transmit error counter stays among the warnings.
const TRANSMIT_ERRORS_SHOWN: Duration = Duration::from_secs(60);

/// When the flow table is scanned, to stop consulting it (`ricochet_engine::flows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowScan {
    /// Time between two scans while some service's flow table is consulted (none
    /// otherwise). A scan of a million flows reads them in about a hundred system calls.
    pub interval: Duration,
    /// A flow unseen for this long is taken for closed.
    pub idle_timeout_secs: u64,
    /// Time between two counts of the table's entries, when no scan counted them
    /// meanwhile (every scan counts).
    pub count_interval: Duration,
}

impl Default for FlowScan {
    fn default() -> Self {
        FlowScan {
            interval: Duration::from_secs(5),
            idle_timeout_secs: 300,
            count_interval: Duration::from_secs(30),
        }
    }
}

/// The settings a [`Runner`] applies with.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The interface the data plane is attached to.
    pub interface: String,
    pub xdp_mode: AttachMode,
    /// Where the data plane is pinned (for the state file).
    pub pin_dir: PathBuf,
    /// Where the state file goes.
    pub state_dir: PathBuf,
    /// The outer source addresses (already defaulted from the interface).
    pub source_v4: Option<Ipv4Addr>,
    pub source_v6: Option<Ipv6Addr>,
    pub flow_scan: FlowScan,
    /// The engine's name, which decides its service engine group; `None`: it carries the
    /// virtual services of no group.
    pub name: Option<String>,
    /// The client hash seed when the engine is in no group (a group's replaces it).
    pub hash_seed: u32,
    /// Where the VIPs of a group with BGP are announced.
    pub bgp: BgpOptions,
}

/// The engine with what it needs to apply configurations and describe itself.
pub struct Runner<D: DaemonDataplane> {
    options: RunnerOptions,
    engine: Engine<D>,
    attached: bool,
    /// The desired state that runs (before removing down servers).
    current: Desired,
    /// Servers marked down by health monitoring.
    down: DownServers,
    /// The health monitors of the configuration that runs.
    monitoring: Monitoring,
    /// Where the configuration comes from, for the state file.
    pub(crate) origin: Origin,
    /// The watch on XDP frames lost on transmit, once attached.
    transmit: Option<XmitMonitor>,
    /// What the last transmit check found about the interface's veth peer.
    peer_findings: Vec<Finding>,
    /// The last rise of each interface's transmit error counters, and when.
    transmit_errors: BTreeMap<String, (Instant, Finding)>,
    /// The revision of the engine this one took over from (its state file, same pins):
    /// the revision goes on from there.
    revision_base: u64,
    /// The metrics served on `--metrics-listen`, if any.
    metrics: Option<Arc<EngineMetrics>>,
    /// When the flow table was last scanned (and so counted).
    last_flow_scan: Option<Instant>,
    /// The engine's group in the configuration that runs.
    group: Option<ServiceEngineGroup>,
    /// The announcement of the group's VIPs.
    announcer: Announcer,
    /// Why the newest configuration does not run (the controller's, refused).
    refusal: Option<String>,
    /// Stopping: the VIPs are withdrawn.
    stopping: bool,
}

impl<D: DaemonDataplane> Runner<D> {
    /// A runner of `engine` (its settings already written); nothing is applied or
    /// attached yet.
    pub fn new(engine: Engine<D>, options: RunnerOptions) -> anyhow::Result<Self> {
        let monitoring = Monitoring::new(&options.interface)?;
        let announcer = Announcer::new(options.bgp.clone());
        Ok(Runner {
            options,
            engine,
            attached: false,
            current: Desired::default(),
            down: DownServers::new(),
            monitoring,
            origin: Origin::default(),
            transmit: None,
            peer_findings: Vec::new(),
            transmit_errors: BTreeMap::new(),
            revision_base: 0,
            metrics: None,
            last_flow_scan: None,
            group: None,
            announcer,
            refusal: None,
            stopping: false,
        })
    }

    /// Records applies into `metrics` and publishes a snapshot to it with every state
    /// file write.
    pub fn set_metrics(&mut self, metrics: Arc<EngineMetrics>) {
        self.metrics = Some(metrics);
    }

    /// Continues the revisions of an engine that ran before on the same pinned data
    /// plane: the first apply here is `base + 1`.
    pub fn continue_revisions_from(&mut self, base: u64) {
        self.revision_base = base;
    }

    /// The data plane's revision: one more per change applied, continued across restarts
    /// (see [`Runner::continue_revisions_from`]).
    pub fn revision(&self) -> u64 {
        self.revision_base + self.engine.revision()
    }

    /// Checks for XDP frames lost on transmit (at start and then every few seconds):
    /// logs what is new loudly, and keeps it for the state file and the controller.
    pub fn check_transmit(&mut self) {
        let Some(monitor) = self.transmit.as_mut() else {
            return;
        };
        let findings = match monitor.check() {
            Ok(f) => f,
            Err(e) => {
                warn!("checking for XDP frames lost on transmit: {e:#}");
                return;
            }
        };
        let now = Instant::now();
        let mut peer = Vec::new();
        for f in findings {
            match f.kind {
                FindingKind::TransmitErrors => {
                    error!(
                        interface = %f.interface,
                        "XDP FRAMES LOST ON TRANSMIT: {}; to fix: {}", f.what, f.fix
                    );
                    self.transmit_errors.insert(f.interface.clone(), (now, f));
                }
                _ => peer.push(f),
            }
        }
        for f in &peer {
            if !self.peer_findings.contains(f) {
                match f.kind {
                    FindingKind::VethPeerUnchecked => warn!(
                        interface = %f.interface,
                        "XDP_TX delivery cannot be checked: {}; to fix: {}", f.what, f.fix
                    ),
                    _ => error!(
                        interface = %f.interface,
                        "XDP FRAMES WILL BE LOST: {}; to fix: {}", f.what, f.fix
                    ),
                }
            }
        }
        for f in &self.peer_findings {
            if !peer
                .iter()
                .any(|p| p.kind == f.kind && p.interface == f.interface)
            {
                info!(interface = %f.interface, "resolved: {}", f.what);
            }
        }
        self.peer_findings = peer;
        self.transmit_errors
            .retain(|_, (at, _)| now.duration_since(*at) < TRANSMIT_ERRORS_SHOWN);
    }

    /// What the transmit checks found: the veth peer's state, and the counters that rose
    /// in the last minute.
    pub fn transmit_warnings(&self) -> Vec<Finding> {
        self.peer_findings
            .iter()
            .chain(self.transmit_errors.values().map(|(_, f)| f))
            .cloned()
            .collect()
    }

    /// [`Runner::transmit_warnings`] in the controller's terms.
    pub fn warnings(&self) -> Vec<ricochet_api::types::EngineWarning> {
        self.transmit_warnings()
            .into_iter()
            .map(|f| ricochet_api::types::EngineWarning {
                kind: f.kind.name().to_owned(),
                interface: f.interface,
                what: f.what,
                fix: f.fix,
            })
            .collect()
    }

    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    pub fn engine(&self) -> &Engine<D> {
        &self.engine
    }

    /// Whether the data plane is attached (after the first successful apply).
    pub fn attached(&self) -> bool {
        self.attached
    }

    /// The desired state that runs, servers marked down included.
    pub fn current(&self) -> &Desired {
        &self.current
    }

    pub fn monitoring(&self) -> &Monitoring {
        &self.monitoring
    }

    /// Where the configuration comes from, as the state file says.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Refuses a configuration whose VIPs of a family have no outer source address, or
    /// whose L2 DSR services have servers off the interface's segments.
    pub fn check_sources(&self, desired: &Desired) -> anyhow::Result<()> {
        check_sources(
            desired,
            self.options.source_v4,
            self.options.source_v6,
            &self.options.interface,
        )
    }

    /// Applies `config` (compiled: `desired`) and runs its health monitors: the virtual
    /// services of the engine's service engine group, or of no group (see
    /// [`Config::carried_by`]), with the group's hash seed.
    pub fn apply(&mut self, config: &Config, desired: &Desired) -> anyhow::Result<ApplyReport> {
        let group = self
            .options
            .name
            .as_deref()
            .and_then(|n| config.group_of(n))
            .cloned();
        let grouped = config
            .virtual_services
            .iter()
            .any(|vs| vs.se_group.is_some());
        let carried;
        let (config, desired) = if grouped || group.is_some() {
            // An engine without a name is in no group: it carries the ungrouped services.
            carried = config.carried_by(self.options.name.as_deref().unwrap_or(""));
            let desired = carried
                .compile()
                .map_err(|e| anyhow::anyhow!("this engine's part does not validate:\n{e}"))?;
            (&carried, std::borrow::Cow::Owned(desired))
        } else {
            (config, std::borrow::Cow::Borrowed(desired))
        };
        let report = self.apply_desired(&desired)?;
        // After the apply: a refused configuration leaves the seed as it was. The tables
        // do not depend on the seed, only the hash of new flows does.
        let seed = group
            .as_ref()
            .map_or(self.options.hash_seed, |g| g.hash_seed);
        self.set_hash_seed(seed)?;
        self.monitoring.follow(config);
        if self.group != group {
            match &group {
                Some(g) => info!(
                    group = %g.name,
                    "this engine is a member of service engine group {:?}: it carries the group's {} virtual services",
                    g.name,
                    config.virtual_services.len()
                ),
                None if self.group.is_some() => {
                    info!("this engine is in no service engine group any more")
                }
                None => {}
            }
        }
        self.group = group;
        self.bgp_turn();
        Ok(report)
    }

    /// Writes the client hash seed if it changed (the engine flags every service's flow
    /// table first, so established flows keep their servers).
    fn set_hash_seed(&mut self, seed: u32) -> anyhow::Result<()> {
        let current = self.engine.dataplane().settings()?;
        if current.hash_seed == seed {
            return Ok(());
        }
        info!(
            from = current.hash_seed,
            to = seed,
            "client hash seed changes (the service engine group's)"
        );
        let mut settings = current;
        settings.hash_seed = seed;
        self.engine.set_settings(&settings)
    }

    /// Records why the newest configuration does not run (`None`: it runs): no VIP is
    /// announced meanwhile.
    pub fn set_refusal(&mut self, refusal: Option<&str>) {
        if self.refusal.as_deref() != refusal {
            self.refusal = refusal.map(str::to_owned);
            self.bgp_turn();
        }
    }

    /// Brings the BGP announcement in line with the engine's state (at once when it
    /// changed, else every second). Whether the report changed.
    pub fn bgp_turn(&mut self) -> bool {
        let announces = self.group.as_ref().is_some_and(|g| g.bgp.is_some());
        // An engine that announces nothing reads no addresses on every turn.
        let read = if announces {
            crate::net::interface_addrs(&self.options.interface)
        } else {
            Ok((Vec::new(), Vec::new()))
        };
        let addrs: Vec<IpAddr> = match read {
            Ok((v4, v6)) => v4
                .into_iter()
                .map(IpAddr::V4)
                .chain(v6.into_iter().map(IpAddr::V6))
                .collect(),
            Err(e) => {
                warn!("reading the interface's addresses for BGP: {e:#}");
                Vec::new()
            }
        };
        self.announcer.turn(&crate::bgp::Inputs {
            engine: self.options.name.as_deref().unwrap_or(""),
            group: self.group.as_ref(),
            attached: self.attached,
            refusal: self.refusal.as_deref(),
            stopping: self.stopping,
            desired: &self.current,
            down: &self.down,
            interface_addrs: &addrs,
        })
    }

    /// The BGP announcement as last checked; `None` when the engine announces nothing.
    pub fn bgp_report(&self) -> Option<&ricochet_api::types::BgpReport> {
        self.announcer.report()
    }

    /// A clean stop: withdraws every VIP, then waits the drain time (the data plane
    /// forwards meanwhile), so the routers have moved the traffic when the stop returns.
    pub fn stop_announcing(&mut self) {
        let announcing = self
            .bgp_report()
            .is_some_and(|r| r.vips.iter().any(|v| v.announced));
        self.stopping = true;
        self.bgp_turn();
        if let Err(e) = self.announcer.withdraw_all("the engine stopped") {
            error!("BGP: withdrawing on stop: {e:#}");
        }
        let drain = self.announcer.options().drain;
        if announcing && !drain.is_zero() {
            info!(
                "BGP: VIPs withdrawn; draining for {} s before stopping",
                drain.as_secs_f64()
            );
            std::thread::sleep(drain);
        }
    }

    /// Takes in what health monitoring says: when the set of down servers changed, the
    /// running configuration is applied again without them. Whether a server changed
    /// state (the controller should hear of it now).
    pub fn health_turn(&mut self) -> bool {
        let changed = self.monitoring.drain();
        let down = self.monitoring.down();
        if down == self.down {
            return changed;
        }
        health::log_down_change(&self.down, &down, &self.current, &self.monitoring);
        let before = std::mem::replace(&mut self.down, down);
        let current = self.current.clone();
        match self.apply_desired(&current) {
            Ok(report) => info!(?report, "data plane updated for server health"),
            Err(e) => {
                error!("server health could not be applied to the data plane (retrying): {e:#}");
                self.down = before;
            }
        }
        true
    }

    /// Applies `desired` (minus the down servers); attaches the program after the first
    /// apply, so that its first packet already finds the services.
    fn apply_desired(&mut self, desired: &Desired) -> anyhow::Result<ApplyReport> {
        self.check_sources(desired)?;
        let effective = without_down_servers(desired, &self.down);
        self.engine
            .dataplane()
            .resolve_next_hops(&server_ips(&effective));
        let started = Instant::now();
        let applied = self.engine.apply(&effective);
        if let Some(m) = &self.metrics {
            m.observe_apply(started.elapsed(), applied.is_ok());
        }
        let report = applied?;
        self.current = desired.clone();
        if !self.attached {
            self.engine
                .dataplane_mut()
                .attach(&self.options.interface, self.options.xdp_mode)?;
            self.attached = true;
            self.transmit = match self
                .engine
                .dataplane()
                .transmit_monitor(&self.options.interface)
            {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    warn!("XDP frames lost on transmit will not be detected: {e:#}");
                    None
                }
                None => None,
            };
            self.check_transmit();
            info!(
                interface = %self.options.interface,
                source_v4 = ?self.options.source_v4,
                source_v6 = ?self.options.source_v6,
                "engine running"
            );
        }
        self.write_state_logged();
        Ok(report)
    }

    /// Scans the flow table when due: every `flow_scan.interval` while some service's is
    /// consulted, every `flow_scan.count_interval` otherwise (the count);
    /// clears the flags it can (logged by the engine) and rewrites the state file when
    /// it did. A failed scan is logged and tried again at the next interval: the flags
    /// stay set, which is safe, and the count shown keeps its time.
    pub fn scan_flows(&mut self) {
        let every = if self.engine.consulting() {
            self.options.flow_scan.interval
        } else {
            self.options.flow_scan.count_interval
        };
        if self.last_flow_scan.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        let start = Instant::now();
        self.last_flow_scan = Some(start);
        match self
            .engine
            .scan_flows(self.options.flow_scan.idle_timeout_secs)
        {
            Ok(r) => {
                debug!(
                    entries = r.entries,
                    live = self.engine.flow_count().map(|c| c.live),
                    ms = start.elapsed().as_millis() as u64,
                    disagreeing = ?r.disagreeing,
                    "flow table scanned"
                );
                if !r.cleared.is_empty() {
                    self.write_state_logged();
                }
            }
            Err(e) => warn!("flow table scan failed (the flags stay set): {e:#}"),
        }
    }

    /// Probes the next hops of every server that runs.
    pub fn resolve_next_hops(&self) {
        self.engine
            .dataplane()
            .resolve_next_hops(&server_ips(&self.current));
    }

    /// The state file's content now.
    pub fn state(&self) -> anyhow::Result<StateFile> {
        Ok(StateFile {
            interface: self.options.interface.clone(),
            pin_dir: self.options.pin_dir.clone(),
            config: self.origin.config.clone(),
            controller: self.origin.controller.clone(),
            controller_revision: self.origin.controller_revision,
            health: self.monitoring.report(&self.current),
            pid: std::process::id(),
            status: {
                let mut status = self.engine.status()?;
                status.revision = self.revision();
                status
            },
            warnings: self.warnings(),
            bgp: self.bgp_report().cloned(),
            bgp_include: self
                .bgp_report()
                .map(|_| self.announcer.options().clone().into()),
        })
    }

    /// Writes the state file once the data plane is attached, and publishes the same
    /// reading to the metrics; a failure is logged.
    pub fn write_state_logged(&self) {
        if !self.attached {
            return;
        }
        let st = match self.state() {
            Ok(st) => st,
            Err(e) => return warn!("state file: {e:#}"),
        };
        if let Err(e) = state::write(&self.options.state_dir, &st) {
            warn!("state file: {e:#}");
        }
        if let Some(m) = &self.metrics {
            m.publish(self.metrics_snapshot(st));
        }
    }

    /// The metrics' snapshot around `state` (this moment's state file).
    pub fn metrics_snapshot(&self, state: StateFile) -> Snapshot {
        let dp = self.engine.dataplane();
        let events = dp.event_counters().unwrap_or_else(|e| {
            warn!("reading the event counters: {e:#}");
            Vec::new()
        });
        Snapshot {
            state,
            servers: self
                .current
                .pools
                .iter()
                .flat_map(|p| {
                    p.servers
                        .iter()
                        .map(|s| (p.name.clone(), s.ip, s.ratio, s.enabled))
                })
                .collect(),
            events,
            transmit_counters: self
                .transmit
                .as_ref()
                .map(|t| t.counters().clone())
                .unwrap_or_default(),
            flow_capacity: dp.capacities().flows,
        }
    }
}

/// Every pool server's address, once.
fn server_ips(desired: &Desired) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = desired
        .pools
        .iter()
        .flat_map(|p| p.servers.iter().map(|s| s.ip))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Refuses a configuration whose VIPs of a family have no outer source address.
pub fn check_sources(
    desired: &Desired,
    source_v4: Option<Ipv4Addr>,
    source_v6: Option<Ipv6Addr>,
    interface: &str,
) -> anyhow::Result<()> {
    let needs_v4 = desired.services.iter().any(|s| s.vip.is_ipv4());
    let needs_v6 = desired.services.iter().any(|s| s.vip.is_ipv6());
    if needs_v4 && source_v4.is_none() {
        bail!("IPv4 virtual services need an outer source: {interface} has no global IPv4 address; pass --source-v4");
    }
    if needs_v6 && source_v6.is_none() {
        bail!("IPv6 virtual services need an outer source: {interface} has no global IPv6 address; pass --source-v6");
    }
    check_l2_servers(desired, interface)
}

/// Refuses L2 DSR services with a server that is not on a segment of `interface`: their
/// frames go to the server's MAC address, which only a host on the segment has.
pub fn check_l2_servers(desired: &Desired, interface: &str) -> anyhow::Result<()> {
    let l2: Vec<_> = desired
        .services
        .iter()
        .filter(|s| s.encapsulation == Encapsulation::L2)
        .collect();
    if l2.is_empty() {
        return Ok(());
    }
    let networks = crate::net::interface_networks(interface)?;
    for s in l2 {
        let Some(pool) = desired.pool(&s.pool) else {
            continue;
        };
        if let Some(off) = pool.servers.iter().find(|srv| {
            !networks
                .iter()
                .any(|&(net, prefix)| crate::net::in_network(srv.ip, net, prefix))
        }) {
            let segments: Vec<String> = networks.iter().map(|(n, p)| format!("{n}/{p}")).collect();
            bail!(
                "virtual service {:?} uses L2 DSR, but server {} of pool {:?} is not on a \
                 segment of {interface} ({}): L2 DSR reaches a server by its MAC address on \
                 the engine's own segment; use dsr type: l3 for servers behind a router",
                s.name,
                off.ip,
                s.pool,
                if segments.is_empty() {
                    "no address".to_owned()
                } else {
                    segments.join(", ")
                }
            );
        }
    }
    Ok(())
}
