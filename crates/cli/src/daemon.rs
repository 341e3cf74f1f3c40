//! The engine daemon.
//!
//! Start-up: load the XDP object over the pinned maps (adopting their state after a
//! restart), write the settings, apply the configuration, then attach (or swap into the
//! pinned link) — so the first packet the new program sees already has its services.
//! Then it follows the configuration: a change (SIGHUP, or the file's content changing)
//! is parsed, validated and applied; a refused change is logged and the running
//! configuration stays. On SIGTERM/SIGINT it exits and the pinned data plane keeps
//! forwarding; `ricochet detach` removes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use ricochet_config::{Config, Desired};
use ricochet_dataplane::kernel::{AttachMode, KernelDataplane, LoadOptions};
use ricochet_dataplane::{Capacities, Dataplane};
use ricochet_engine::Engine;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::{neighbours, net};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ricochet";
pub const DEFAULT_STATE_DIR: &str = "/run/ricochet";

#[derive(Args, Debug)]
pub struct EngineArgs {
    /// The configuration file (YAML, Avi's object model).
    #[arg(long, short, env = "RICOCHET_CONFIG")]
    pub config: PathBuf,
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
    /// Directory of the state file read by `ricochet status`.
    #[arg(long, env = "RICOCHET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
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
    /// How often to check the configuration file for changes.
    #[arg(long, env = "RICOCHET_WATCH_INTERVAL_MS", default_value_t = 500)]
    pub watch_interval_ms: u64,
}

/// What `ricochet status` reads besides the live counters.
#[derive(Serialize, Deserialize)]
pub struct StateFile {
    pub interface: String,
    pub pin_dir: PathBuf,
    pub config: PathBuf,
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

fn install_signals() {
    for sig in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn load_desired(path: &Path) -> anyhow::Result<(Desired, Vec<u8>)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::load(path)?;
    let desired = config
        .compile()
        .map_err(|e| anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display()))?;
    Ok((desired, text))
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

fn write_state(args: &EngineArgs, engine: &Engine<KernelDataplane>) -> anyhow::Result<()> {
    let st = StateFile {
        interface: args.interface.clone(),
        pin_dir: args.pin_dir.clone(),
        config: args.config.clone(),
        pid: std::process::id(),
        status: engine.status()?,
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let path = state_file(&args.state_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&st)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run(args: EngineArgs) -> anyhow::Result<ExitCode> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the engine loads eBPF and attaches XDP: run it as root (CAP_BPF, CAP_NET_ADMIN)");
    }
    // Before anything slow: a SIGHUP during start-up must not kill the engine (the default
    // action), and a SIGTERM must stop it cleanly once started.
    install_signals();
    let ifindex = net::ifindex(&args.interface)?;
    // Refuse a bad configuration before touching the kernel.
    let (desired, mut config_text) = load_desired(&args.config)?;

    let (v4, v6) = net::interface_addrs(&args.interface)?;
    let source_v4 = args.source_v4.or_else(|| v4.first().copied());
    let source_v6 = args.source_v6.or_else(|| v6.first().copied());
    let needs_v4 = desired.services.iter().any(|s| s.vip.is_ipv4());
    let needs_v6 = desired.services.iter().any(|s| s.vip.is_ipv6());
    if needs_v4 && source_v4.is_none() {
        bail!("IPv4 virtual services need an outer source: {} has no global IPv4 address; pass --source-v4", args.interface);
    }
    if needs_v6 && source_v6.is_none() {
        bail!("IPv6 virtual services need an outer source: {} has no global IPv6 address; pass --source-v6", args.interface);
    }
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
    neighbours::probe_all(&server_ips(&desired));
    let report = engine
        .apply(&desired)
        .context("applying the configuration")?;
    info!(
        ?report,
        services = desired.services.len(),
        pools = desired.pools.len(),
        "configuration applied"
    );
    engine
        .dataplane_mut()
        .attach(&args.interface, args.xdp_mode)?;
    info!(interface = %args.interface, ifindex, ?source_v4, ?source_v6, "engine running");
    write_state(&args, &engine)?;

    let mut current = desired;
    let mut last_probe = Instant::now();
    let mut last_state = Instant::now();
    let mut last_watch = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let changed = if RELOAD.swap(false, Ordering::SeqCst) {
            info!("SIGHUP: reloading the configuration");
            true
        } else if last_watch.elapsed() >= Duration::from_millis(args.watch_interval_ms) {
            last_watch = Instant::now();
            std::fs::read(&args.config).is_ok_and(|t| t != config_text)
        } else {
            false
        };
        if changed {
            match load_desired(&args.config) {
                Ok((desired, text)) => {
                    config_text = text;
                    neighbours::probe_all(&server_ips(&desired));
                    match engine.apply(&desired) {
                        Ok(report) => {
                            info!(
                                ?report,
                                revision = engine.revision(),
                                "configuration change applied"
                            );
                            current = desired;
                            if let Err(e) = write_state(&args, &engine) {
                                warn!("state file: {e:#}");
                            }
                        }
                        Err(e) => error!(
                            "configuration change refused, the running configuration stays: {e:#}"
                        ),
                    }
                }
                Err(e) => {
                    // Remember the text so the same bad file is reported once.
                    if let Ok(t) = std::fs::read(&args.config) {
                        config_text = t;
                    }
                    error!("configuration change refused, the running configuration stays: {e:#}");
                }
            }
        }
        if last_probe.elapsed() >= Duration::from_secs(5) {
            neighbours::probe_all(&server_ips(&current));
            last_probe = Instant::now();
        }
        if last_state.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = write_state(&args, &engine) {
                warn!("state file: {e:#}");
            }
            last_state = Instant::now();
        }
    }
    info!(
        "stopping; the pinned XDP program keeps forwarding with the last configuration \
         (`ricochet detach --interface {}` removes it)",
        args.interface
    );
    Ok(ExitCode::SUCCESS)
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
