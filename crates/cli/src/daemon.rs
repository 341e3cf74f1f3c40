//! The engine daemon.
//!
//! Start-up: load the XDP object over the pinned maps (adopting their state after a
//! restart), write the settings, apply the configuration, then attach (or swap into the
//! pinned link) — so the first packet the new program sees already has its services.
//!
//! The configuration comes from one of two sources:
//! - a file (`--config`): a change (SIGHUP, or the file's content changing) is parsed,
//!   validated and applied;
//! - a controller (`--controller`, see `follow`): the engine registers, long-polls the
//!   desired configuration, applies each new revision and reports what it runs. The last
//!   applied configuration is kept in the state directory, so an engine restarted while
//!   the controller is away starts with it.
//!
//! Either way a refused change is logged (and reported) and the running configuration
//! stays. On SIGTERM/SIGINT the daemon exits and the pinned data plane keeps forwarding;
//! `ricochet detach` removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use ricochet_config::{Config, Desired};
use ricochet_controller::types::{
    EngineCounters, EngineReport, EngineRunState, ServerCounters, ServerHealth, ServiceCounters,
};
use ricochet_dataplane::kernel::{AttachMode, KernelDataplane, LoadOptions};
use ricochet_dataplane::{Capacities, Dataplane};
use ricochet_engine::Engine;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::follow::{self, FollowOptions, Follower, Persisted};
use crate::health::{self, Monitoring};
use crate::{neighbours, net};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ricochet";
pub const DEFAULT_STATE_DIR: &str = "/run/ricochet";
/// Where the controller writes its admin token by default.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/ricochet/admin-token";
/// How often a controller-following engine reports its counters.
const REPORT_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct EngineArgs {
    /// The configuration file (YAML, Avi's object model).
    #[arg(
        long,
        short,
        env = "RICOCHET_CONFIG",
        required_unless_present = "controller",
        conflicts_with = "controller"
    )]
    pub config: Option<PathBuf>,
    /// Follow a controller instead of a file: its API, e.g. http://10.0.0.5:8480.
    #[arg(long, env = "RICOCHET_CONTROLLER")]
    pub controller: Option<String>,
    /// The controller's API token (default: read from --token-file).
    #[arg(long, env = "RICOCHET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the controller's API token.
    #[arg(long, env = "RICOCHET_TOKEN_FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,
    /// This engine's name at the controller (default: the host name).
    #[arg(long, env = "RICOCHET_ENGINE_NAME")]
    pub name: Option<String>,
    /// Directory of the state file read by `ricochet status`, and of the last
    /// configuration applied from the controller.
    #[arg(long, env = "RICOCHET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// How often to check the configuration file for changes.
    #[arg(long, env = "RICOCHET_WATCH_INTERVAL_MS", default_value_t = 500)]
    pub watch_interval_ms: u64,
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
}

/// The data plane's settings, the same whatever the configuration's source.
#[derive(Args, Debug, Clone)]
pub struct DataPlaneArgs {
    /// The interface clients' packets arrive on (and encapsulated packets leave by).
    #[arg(long, short, env = "RICOCHET_INTERFACE")]
    pub interface: String,
    /// Outer source of IPv4-in-IPv4 packets; default: the interface's first global IPv4.
    #[arg(long, env = "RICOCHET_SOURCE_V4")]
    pub source_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6-in-IPv6 packets; default: the interface's first global IPv6.
    #[arg(long, env = "RICOCHET_SOURCE_V6")]
    pub source_v6: Option<Ipv6Addr>,
    /// native (default), generic (slow path, for drivers without XDP) or auto.
    #[arg(long, env = "RICOCHET_XDP_MODE", default_value = "native")]
    pub xdp_mode: AttachMode,
    /// bpffs directory for the pinned maps and link.
    #[arg(long, env = "RICOCHET_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Flow table size (LRU entries).
    #[arg(long, env = "RICOCHET_FLOWS", default_value_t = ricochet_common::limits::DEFAULT_FLOWS)]
    pub flows: u32,
    /// Slots of the shared Maglev array (all tables, plus room to swap them).
    #[arg(long, env = "RICOCHET_MAGLEV_SLOTS", default_value_t = ricochet_common::limits::DEFAULT_MAGLEV_SLOTS)]
    pub maglev_slots: u32,
    #[arg(long, env = "RICOCHET_MAX_SERVERS", default_value_t = ricochet_common::limits::MAX_SERVERS)]
    pub max_servers: u32,
    #[arg(long, env = "RICOCHET_MAX_SERVICES", default_value_t = ricochet_common::limits::MAX_SERVICES)]
    pub max_services: u32,
    #[arg(long, env = "RICOCHET_MAX_SERVICE_PORTS", default_value_t = ricochet_common::limits::MAX_SERVICE_PORTS)]
    pub max_service_ports: u32,
    /// Distinct VIPs (IPv4 and IPv6 together).
    #[arg(long, env = "RICOCHET_MAX_VIPS", default_value_t = ricochet_common::limits::MAX_VIPS)]
    pub max_vips: u32,
    /// Seed of the client hash: engines sharing VIPs (ECMP) must use the same one.
    #[arg(long, env = "RICOCHET_HASH_SEED", default_value_t = 0)]
    pub hash_seed: u32,
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, checked every `watch_interval` and on SIGHUP.
    File {
        path: PathBuf,
        watch_interval: Duration,
    },
    /// A controller.
    Controller(FollowOptions),
}

/// What `ricochet status` reads besides the live counters.
#[derive(Serialize, Deserialize)]
pub struct StateFile {
    pub interface: String,
    pub pin_dir: PathBuf,
    /// The configuration file, when the engine follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// The controller, when the engine follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The controller's configuration revision that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_revision: Option<u64>,
    /// The health of every enabled pool server, from the engine's monitors.
    #[serde(default)]
    pub health: Vec<ServerHealth>,
    pub pid: u32,
    pub status: ricochet_engine::status::Status,
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

static RELOAD: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGHUP => RELOAD.store(true, Ordering::SeqCst),
        _ => STOP.store(true, Ordering::SeqCst),
    }
}

/// Installs the daemon's handlers: SIGHUP reloads, SIGTERM/SIGINT stop.
pub fn install_signals() {
    for sig in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether SIGTERM or SIGINT arrived.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn load_desired(path: &Path) -> anyhow::Result<(Config, Desired, Vec<u8>)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::load(path)?;
    let desired = config
        .compile()
        .map_err(|e| anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display()))?;
    Ok((config, desired, text))
}

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

/// Pool servers that health monitoring marked down, by pool name and address.
///
/// This is where server health feeds into the data plane: the engine applies the
/// desired state minus these servers (`without_down_servers`), and re-applies when the
/// set changes (see `health`).
pub type DownServers = BTreeSet<(String, IpAddr)>;

/// What the data plane runs: `desired` without the servers marked down. A down server
/// leaves its pool entirely — its slot is freed, so its flows re-hash to the servers
/// left — unlike a disabled one, which drains (keeps its established flows).
pub fn without_down_servers(desired: &Desired, down: &DownServers) -> Desired {
    if down.is_empty() {
        return desired.clone();
    }
    let mut effective = desired.clone();
    for pool in &mut effective.pools {
        pool.servers
            .retain(|s| !down.contains(&(pool.name.clone(), s.ip)));
    }
    effective
}

/// Refuses a configuration whose VIPs of a family have no outer source address.
fn check_sources(
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
    Ok(())
}

/// The engine with what it needs to apply configurations and describe itself.
struct Runner {
    args: DataPlaneArgs,
    state_dir: PathBuf,
    engine: Engine<KernelDataplane>,
    source_v4: Option<Ipv4Addr>,
    source_v6: Option<Ipv6Addr>,
    attached: bool,
    /// The desired state that runs (before removing down servers).
    current: Desired,
    /// Servers marked down by health monitoring.
    down: DownServers,
    /// The health monitors of the configuration that runs.
    monitoring: Monitoring,
    config_file: Option<PathBuf>,
    controller: Option<String>,
    controller_revision: Option<u64>,
}

impl Runner {
    /// Applies `config` (compiled: `desired`) and runs its health monitors.
    fn apply(
        &mut self,
        config: &Config,
        desired: &Desired,
    ) -> anyhow::Result<ricochet_engine::ApplyReport> {
        let report = self.apply_desired(desired)?;
        self.monitoring.follow(config);
        Ok(report)
    }

    /// Takes in what health monitoring says: when the set of down servers changed, the
    /// running configuration is applied again without them. Whether a server changed
    /// state (the controller should hear of it now).
    fn health_turn(&mut self) -> bool {
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
    fn apply_desired(&mut self, desired: &Desired) -> anyhow::Result<ricochet_engine::ApplyReport> {
        check_sources(
            desired,
            self.source_v4,
            self.source_v6,
            &self.args.interface,
        )?;
        let effective = without_down_servers(desired, &self.down);
        neighbours::probe_all(&server_ips(&effective));
        let report = self.engine.apply(&effective)?;
        self.current = desired.clone();
        if !self.attached {
            self.engine
                .dataplane_mut()
                .attach(&self.args.interface, self.args.xdp_mode)?;
            self.attached = true;
            info!(
                interface = %self.args.interface,
                source_v4 = ?self.source_v4,
                source_v6 = ?self.source_v6,
                "engine running"
            );
        }
        self.write_state_logged();
        Ok(report)
    }

    fn write_state(&self) -> anyhow::Result<()> {
        let st = StateFile {
            interface: self.args.interface.clone(),
            pin_dir: self.args.pin_dir.clone(),
            config: self.config_file.clone(),
            controller: self.controller.clone(),
            controller_revision: self.controller_revision,
            health: self.monitoring.report(&self.current),
            pid: std::process::id(),
            status: self.engine.status()?,
        };
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("creating {}", self.state_dir.display()))?;
        let path = state_file(&self.state_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&st)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    fn write_state_logged(&self) {
        if self.attached {
            if let Err(e) = self.write_state() {
                warn!("state file: {e:#}");
            }
        }
    }

    /// The data plane's counters, in the controller's terms.
    fn counters(&self) -> EngineCounters {
        let status = match self.engine.status() {
            Ok(s) => s,
            Err(e) => {
                warn!("reading the counters: {e:#}");
                return EngineCounters::default();
            }
        };
        EngineCounters {
            services: status
                .services
                .iter()
                .map(|s| ServiceCounters {
                    name: s.name.clone(),
                    packets: s.counters.packets,
                    bytes: s.counters.bytes,
                    new_flows: s.counters.new_flows,
                })
                .collect(),
            servers: status
                .pools
                .iter()
                .flat_map(|p| {
                    p.servers.iter().map(|s| ServerCounters {
                        pool: p.name.clone(),
                        ip: s.ip,
                        packets: s.counters.packets,
                        bytes: s.counters.bytes,
                        new_flows: s.counters.new_flows,
                    })
                })
                .collect(),
            reasons: status.reasons.into_iter().collect::<BTreeMap<_, _>>(),
        }
    }
}

pub fn run(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let source = match (args.config, args.controller) {
        (Some(path), None) => Source::File {
            path,
            watch_interval: Duration::from_millis(args.watch_interval_ms),
        },
        (None, Some(url)) => Source::Controller(FollowOptions {
            url: follow::controller_url(&url)?,
            token: args.token,
            token_file: args.token_file,
            name: follow::engine_name(args.name.unwrap_or_else(follow::hostname))?,
        }),
        _ => bail!("give either --config FILE or --controller URL"),
    };
    run_engine(args.data_plane, args.state_dir, source)
}

/// Runs the engine until SIGTERM/SIGINT (see `install_signals`).
pub fn run_engine(
    args: DataPlaneArgs,
    state_dir: PathBuf,
    source: Source,
) -> anyhow::Result<ExitCode> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the engine loads eBPF and attaches XDP: run it as root (CAP_BPF, CAP_NET_ADMIN)");
    }
    // Before anything slow: a SIGHUP during start-up must not kill the engine (the default
    // action), and a SIGTERM must stop it cleanly once started.
    install_signals();
    let ifindex = net::ifindex(&args.interface)?;
    let (v4, v6) = net::interface_addrs(&args.interface)?;
    let source_v4 = args.source_v4.or_else(|| v4.first().copied());
    let source_v6 = args.source_v6.or_else(|| v6.first().copied());

    // The first configuration: the file's (refused before touching the kernel), or the
    // one last applied from the controller, if any.
    let (first, file_text, follower, persisted) = match &source {
        Source::File { path, .. } => {
            let (config, desired, text) = load_desired(path)?;
            check_sources(&desired, source_v4, source_v6, &args.interface)?;
            (Some((config, desired)), Some(text), None, None)
        }
        Source::Controller(options) => {
            let mut addresses: Vec<IpAddr> = v4.iter().copied().map(IpAddr::V4).collect();
            addresses.extend(v6.iter().copied().map(IpAddr::V6));
            let follower = Follower::start(options, addresses);
            let persisted = follow::load_persisted(&state_dir);
            let first = match &persisted {
                Some(p) => match p.config.compile() {
                    Ok(desired) => {
                        let desired = (p.config.clone(), desired);
                        info!(
                            revision = p.revision,
                            "starting with the configuration last applied from the controller \
                             (revision {}, kept in {}); newer revisions follow when {} answers",
                            p.revision,
                            follow::persisted_path(&state_dir).display(),
                            options.url
                        );
                        Some(desired)
                    }
                    Err(e) => {
                        warn!("the persisted configuration does not validate any more, ignoring it:\n{e}");
                        None
                    }
                },
                None => {
                    info!(
                        "no configuration applied from a controller yet: waiting for {}",
                        options.url
                    );
                    None
                }
            };
            (first, None, Some(follower), persisted)
        }
    };
    net::enable_forwarding(&args.interface, true, true)?;

    let caps = Capacities {
        flows: args.flows,
        maglev_slots: args.maglev_slots,
        servers: args.max_servers,
        services: args.max_services,
        service_ports: args.max_service_ports,
        vips: args.max_vips,
    };
    let dp = KernelDataplane::load(&LoadOptions {
        pin_dir: Some(args.pin_dir.clone()),
        caps,
    })?;
    let mut engine = if dp.adopted() {
        info!(pin_dir = %args.pin_dir.display(), "found a pinned data plane: adopting it (established flows keep their servers)");
        Engine::adopt(dp)?
    } else {
        Engine::new(dp)
    };
    engine.set_settings(&ricochet_engine::settings(
        source_v4,
        source_v6,
        args.hash_seed,
    ))?;
    info!(interface = %args.interface, ifindex, "data plane loaded");
    let monitoring = Monitoring::new(&args.interface)?;
    let mut runner = Runner {
        args,
        state_dir,
        engine,
        source_v4,
        source_v6,
        attached: false,
        current: Desired::default(),
        down: DownServers::new(),
        monitoring,
        config_file: None,
        controller: None,
        controller_revision: None,
    };

    match source {
        Source::File {
            path,
            watch_interval,
        } => {
            runner.config_file = Some(path.clone());
            let (config, first) = first.expect("a file source has a first configuration");
            let report = runner
                .apply(&config, &first)
                .context("applying the configuration")?;
            info!(
                ?report,
                services = first.services.len(),
                pools = first.pools.len(),
                "configuration applied"
            );
            follow_file(
                &mut runner,
                &path,
                watch_interval,
                file_text.expect("read with the file"),
            );
        }
        Source::Controller(options) => {
            runner.controller = Some(options.url.clone());
            let follower = follower.expect("started for a controller source");
            let mut running = None;
            if let (Some((config, first)), Some(p)) = (first, persisted) {
                match runner.apply(&config, &first) {
                    Ok(report) => {
                        info!(
                            ?report,
                            revision = p.revision,
                            "persisted configuration applied"
                        );
                        runner.controller_revision = Some(p.revision);
                        running = Some((p.revision, p.config));
                    }
                    Err(e) => error!(
                        "the persisted configuration (revision {}) could not be applied, \
                         waiting for the controller: {e:#}",
                        p.revision
                    ),
                }
            }
            follow_controller(&mut runner, &options, &follower, running);
        }
    }
    info!(
        "stopping; the pinned XDP program keeps forwarding with the last configuration \
         (`ricochet detach --interface {}` removes it)",
        runner.args.interface
    );
    Ok(ExitCode::SUCCESS)
}

/// The duties of every loop turn besides the configuration: neighbour probes every 5 s,
/// the state file every second.
struct Chores {
    last_probe: Instant,
    last_state: Instant,
}

impl Chores {
    fn new() -> Self {
        Chores {
            last_probe: Instant::now(),
            last_state: Instant::now(),
        }
    }

    fn run(&mut self, runner: &Runner) {
        if runner.attached && self.last_probe.elapsed() >= Duration::from_secs(5) {
            neighbours::probe_all(&server_ips(&runner.current));
            self.last_probe = Instant::now();
        }
        if self.last_state.elapsed() >= Duration::from_secs(1) {
            runner.write_state_logged();
            self.last_state = Instant::now();
        }
    }
}

fn follow_file(runner: &mut Runner, path: &Path, watch_interval: Duration, mut text: Vec<u8>) {
    let mut chores = Chores::new();
    let mut last_watch = Instant::now();
    while !stopping() {
        std::thread::sleep(Duration::from_millis(50));
        let changed = if RELOAD.swap(false, Ordering::SeqCst) {
            info!("SIGHUP: reloading the configuration");
            true
        } else if last_watch.elapsed() >= watch_interval {
            last_watch = Instant::now();
            std::fs::read(path).is_ok_and(|t| t != text)
        } else {
            false
        };
        if changed {
            match load_desired(path) {
                Ok((config, desired, new_text)) => {
                    text = new_text;
                    match runner.apply(&config, &desired) {
                        Ok(report) => info!(
                            ?report,
                            revision = runner.engine.revision(),
                            "configuration change applied"
                        ),
                        Err(e) => error!(
                            "configuration change refused, the running configuration stays: {e:#}"
                        ),
                    }
                }
                Err(e) => {
                    // Remember the text so the same bad file is reported once.
                    if let Ok(t) = std::fs::read(path) {
                        text = t;
                    }
                    error!("configuration change refused, the running configuration stays: {e:#}");
                }
            }
        }
        runner.health_turn();
        chores.run(runner);
    }
}

/// Applies each configuration the controller sends, reports after each and every
/// `REPORT_INTERVAL`. `running` is the controller revision and configuration that run.
fn follow_controller(
    runner: &mut Runner,
    options: &FollowOptions,
    follower: &Follower,
    mut running: Option<(u64, Config)>,
) {
    let mut refusal: Option<String> = None;
    let mut chores = Chores::new();
    let mut last_report: Option<Instant> = None;
    while !stopping() {
        // Waiting on the channel rather than sleeping: a new revision is applied the
        // moment it arrives.
        match follower.updates.recv_timeout(Duration::from_millis(50)) {
            Ok(received) => {
                let received_at = Instant::now();
                let revision = received.revision;
                if running
                    .as_ref()
                    .is_some_and(|(r, c)| *r == revision && *c == received.config)
                {
                    info!(
                        revision,
                        "the controller's configuration is the one running"
                    );
                    refusal = None;
                } else {
                    match received
                        .config
                        .compile()
                        .map_err(|e| anyhow::anyhow!("it does not validate:\n{e}"))
                        .and_then(|desired| runner.apply(&received.config, &desired))
                    {
                        Ok(report) => {
                            info!(
                                ?report,
                                revision,
                                apply_ms = received_at.elapsed().as_secs_f64() * 1e3,
                                "configuration revision {revision} from the controller applied"
                            );
                            refusal = None;
                            runner.controller_revision = Some(revision);
                            let persisted = Persisted {
                                revision,
                                controller: options.url.clone(),
                                config: received.config.clone(),
                            };
                            if let Err(e) = follow::save_persisted(&runner.state_dir, &persisted) {
                                warn!("keeping the configuration for a restart: {e:#}");
                            }
                            runner.write_state_logged();
                            running = Some((revision, received.config));
                        }
                        Err(e) => {
                            let stays = match &running {
                                Some((r, _)) => format!("revision {r} keeps running"),
                                None => "nothing runs yet".to_owned(),
                            };
                            let message = format!(
                                "configuration revision {revision} refused ({stays}): {e:#}"
                            );
                            error!("{message}");
                            refusal = Some(message);
                        }
                    }
                }
                last_report = None; // report now
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                error!("the controller watcher stopped; the engine stops following the controller");
                return;
            }
        }
        if runner.health_turn() {
            last_report = None; // the controller hears of it now
        }
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_INTERVAL) {
            let state = match (&refusal, &running) {
                (Some(_), _) => EngineRunState::Degraded,
                (None, Some(_)) => EngineRunState::Running,
                (None, None) => EngineRunState::Starting,
            };
            follower.report(EngineReport {
                revision: running.as_ref().map(|(r, _)| *r),
                state,
                message: refusal.clone(),
                counters: if runner.attached {
                    runner.counters()
                } else {
                    EngineCounters::default()
                },
                servers: runner.monitoring.report(&runner.current),
            });
            last_report = Some(Instant::now());
        }
        chores.run(runner);
    }
}

/// The engine's data plane as the status command sees it: the pinned maps.
pub fn open_pinned(pin_dir: &Path) -> anyhow::Result<KernelDataplane> {
    if !pin_dir.join(ricochet_common::maps::SERVICES).exists() {
        bail!(
            "no data plane is pinned at {}: is the engine running (or was it detached)?",
            pin_dir.display()
        );
    }
    let dp = KernelDataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir.to_owned()),
        caps: Capacities::default(),
    })?;
    let _ = dp.capacities();
    Ok(dp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_servers_leave_their_pool_only() {
        let config =
            Config::from_yaml_str(include_str!("../../config/examples/seed.yaml")).unwrap();
        let desired = config.compile().unwrap();
        assert_eq!(without_down_servers(&desired, &DownServers::new()), desired);
        let web01: IpAddr = "192.168.33.10".parse().unwrap();
        let down = DownServers::from([("web-pool".to_owned(), web01)]);
        let effective = without_down_servers(&desired, &down);
        let ips = |d: &Desired, pool: &str| -> Vec<IpAddr> {
            d.pool(pool).unwrap().servers.iter().map(|s| s.ip).collect()
        };
        assert_eq!(
            ips(&effective, "web-pool"),
            ["192.168.34.10".parse::<IpAddr>().unwrap()]
        );
        // The same server in another pool is another monitor's business.
        assert_eq!(ips(&effective, "dns-pool"), ips(&desired, "dns-pool"));
        assert_eq!(effective.services, desired.services);
    }
}
