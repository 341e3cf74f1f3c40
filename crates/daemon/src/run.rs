//! Start-up and the run loops.
//!
//! Start-up ([`run`]): load the XDP object over the pinned maps (adopting their state
//! after a restart), write the settings, apply the configuration, then attach (or swap
//! into the pinned link) — so the first packet the new program sees already has its
//! services.
//!
//! Then one loop per source, until [`Control::stopping`]: [`follow_file`] and
//! [`follow_controller`]. Each turn also takes in health verdicts, probes the servers'
//! next hops every 5 s and writes the state file every second. On SIGTERM/SIGINT the
//! daemon exits and the pinned data plane keeps forwarding; `ricochet detach` removes it.

use std::net::IpAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ricochet_config::Config;
use ricochet_dataplane::kernel::{KernelDataplane, LoadOptions};
use ricochet_engine::Engine;
use tracing::{error, info, warn};

use crate::report::{self, Reporter, REPORT_INTERVAL};
use crate::runner::{check_sources, DaemonDataplane, Runner, RunnerOptions};
use crate::source::controller::{self, Follower, Persisted};
use crate::source::file::FileSource;
use crate::{net, Control, Options, Source};

/// How long a loop turn waits for something to do.
const TURN: Duration = Duration::from_millis(50);

/// Runs the engine on the kernel's data plane until `control` says stop (see
/// [`Control::from_signals`]).
pub fn run(options: Options, control: &Control) -> anyhow::Result<()> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the engine loads eBPF and attaches XDP: run it as root (CAP_BPF, CAP_NET_ADMIN)");
    }
    let Options {
        data_plane: args,
        state_dir,
        source,
        metrics: metrics_options,
        name,
        bgp,
    } = options;
    let name = match &source {
        Source::Controller(o) => Some(o.name.clone()),
        Source::File { .. } => name,
    };
    // Bound first: a bad address or token file stops the start-up before the kernel is
    // touched.
    let metrics = match &metrics_options {
        Some(o) => {
            let m = std::sync::Arc::new(crate::metrics::EngineMetrics::default());
            crate::metrics::serve(o, m.clone())?;
            Some(m)
        }
        None => None,
    };
    let ifindex = net::ifindex(&args.interface)?;
    let (v4, v6) = net::interface_addrs(&args.interface)?;
    let source_v4 = args.source_v4.or_else(|| v4.first().copied());
    let source_v6 = args.source_v6.or_else(|| v6.first().copied());

    // The first configuration: the file's (refused before touching the kernel), or the
    // one last applied from the controller, if any.
    enum Started {
        File(FileSource, Config, ricochet_config::Desired),
        Controller {
            follower: Follower,
            reporter: Reporter,
            url: String,
            persisted: Option<(Persisted, ricochet_config::Desired)>,
        },
    }
    let started = match &source {
        Source::File {
            path,
            watch_interval,
        } => {
            let (file, config, desired) = FileSource::open(path, *watch_interval)?;
            // Only what this engine carries needs its sources (another group's IPv6
            // services do not).
            let carried = match &name {
                Some(n) => config.carried_by(n).compile().map_err(|e| {
                    anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display())
                })?,
                None => desired.clone(),
            };
            check_sources(&carried, source_v4, source_v6, &args.interface)?;
            Started::File(file, config, desired)
        }
        Source::Controller(options) => {
            let mut addresses: Vec<IpAddr> = v4.iter().copied().map(IpAddr::V4).collect();
            addresses.extend(v6.iter().copied().map(IpAddr::V6));
            let (follower, reporter) = controller::connect(options, addresses);
            if let Some(m) = &metrics {
                m.follow_controller(follower.connected_watch());
            }
            let persisted = match controller::load_persisted(&state_dir) {
                Some(p) => match p.config.compile() {
                    Ok(desired) => {
                        info!(
                            revision = p.revision,
                            "starting with the configuration last applied from the controller \
                             (revision {}, kept in {}); newer revisions follow when {} answers",
                            p.revision,
                            controller::persisted_path(&state_dir).display(),
                            options.url
                        );
                        Some((p, desired))
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
            Started::Controller {
                follower,
                reporter,
                url: options.url.clone(),
                persisted,
            }
        }
    };
    net::enable_forwarding(&args.interface, true, true)?;

    let dp = KernelDataplane::load(&LoadOptions {
        pin_dir: Some(args.pin_dir.clone()),
        caps: args.capacities,
    })?;
    let adopted = dp.adopted();
    let mut engine = if adopted {
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
    let mut runner = Runner::new(
        engine,
        RunnerOptions {
            interface: args.interface.clone(),
            xdp_mode: args.xdp_mode,
            pin_dir: args.pin_dir.clone(),
            state_dir: state_dir.clone(),
            source_v4,
            source_v6,
            flow_scan: args.flow_scan,
            name,
            hash_seed: args.hash_seed,
            bgp,
        },
    )?;
    if let Some(m) = metrics {
        runner.set_metrics(m);
    }
    if adopted {
        // The revisions go on from those of the engine that left this data plane.
        if let Ok(previous) = crate::state::read(&state_dir) {
            if previous.pin_dir == args.pin_dir {
                runner.continue_revisions_from(previous.status.revision);
            }
        }
    }

    match started {
        Started::File(file, config, first) => {
            let report = start_file(&mut runner, &file, &config, &first)?;
            info!(
                ?report,
                services = first.services.len(),
                pools = first.pools.len(),
                "configuration applied"
            );
            follow_file(&mut runner, file, control);
        }
        Started::Controller {
            follower,
            reporter,
            url,
            persisted,
        } => {
            let running = start_controller(&mut runner, &url, persisted);
            follow_controller(&mut runner, &follower, &reporter, running, control);
        }
    }
    runner.stop_announcing();
    info!(
        "stopping; the pinned XDP program keeps forwarding with the last configuration \
         (`ricochet detach --interface {}` removes it)",
        args.interface
    );
    Ok(())
}

/// Applies a file's first configuration (a failure stops the daemon).
pub fn start_file<D: DaemonDataplane>(
    runner: &mut Runner<D>,
    file: &FileSource,
    config: &Config,
    first: &ricochet_config::Desired,
) -> anyhow::Result<ricochet_engine::ApplyReport> {
    runner.origin.config = Some(file.path().to_owned());
    runner
        .apply(config, first)
        .context("applying the configuration")
}

/// Applies the configuration last applied from the controller at `url`, if any (a
/// failure is logged: the engine then waits for the controller). The revision and
/// configuration that run.
pub fn start_controller<D: DaemonDataplane>(
    runner: &mut Runner<D>,
    url: &str,
    persisted: Option<(Persisted, ricochet_config::Desired)>,
) -> Option<(u64, Config)> {
    runner.origin.controller = Some(url.to_owned());
    let (p, first) = persisted?;
    match runner.apply(&p.config, &first) {
        Ok(report) => {
            info!(
                ?report,
                revision = p.revision,
                "persisted configuration applied"
            );
            runner.origin.controller_revision = Some(p.revision);
            Some((p.revision, p.config))
        }
        Err(e) => {
            error!(
                "the persisted configuration (revision {}) could not be applied, \
                 waiting for the controller: {e:#}",
                p.revision
            );
            None
        }
    }
}

/// The duties of every loop turn besides the configuration: neighbour probes and the
/// check for XDP frames lost on transmit every 5 s, the flow-table scan at its interval
/// (while some flag is set), the state file every second.
struct Chores {
    last_probe: Instant,
    last_state: Instant,
    /// The BGP announcement changed: the controller should hear of it now.
    report_now: bool,
}

impl Chores {
    fn new() -> Self {
        Chores {
            last_probe: Instant::now(),
            last_state: Instant::now(),
            report_now: false,
        }
    }

    fn run<D: DaemonDataplane>(&mut self, runner: &mut Runner<D>) {
        if runner.attached() && self.last_probe.elapsed() >= Duration::from_secs(5) {
            runner.resolve_next_hops();
            runner.check_transmit();
            self.last_probe = Instant::now();
        }
        // The runner knows when a scan is due.
        runner.scan_flows();
        if runner.bgp_turn() {
            self.report_now = true;
        }
        if self.last_state.elapsed() >= Duration::from_secs(1) {
            runner.write_state_logged();
            self.last_state = Instant::now();
        }
    }
}

/// Applies each change of `file` (on a reload, or when its content changed) until
/// `control` says stop; a refused change is logged and the running configuration stays.
pub fn follow_file<D: DaemonDataplane>(
    runner: &mut Runner<D>,
    mut file: FileSource,
    control: &Control,
) {
    let mut chores = Chores::new();
    while !control.stopping() {
        std::thread::sleep(TURN);
        if file.changed(control.take_reload()) {
            match file.load() {
                Ok((config, desired)) => match runner.apply(&config, &desired) {
                    Ok(report) => info!(
                        ?report,
                        revision = runner.revision(),
                        "configuration change applied"
                    ),
                    Err(e) => error!(
                        "configuration change refused, the running configuration stays: {e:#}"
                    ),
                },
                Err(e) => {
                    error!("configuration change refused, the running configuration stays: {e:#}");
                }
            }
        }
        runner.health_turn();
        chores.run(runner);
    }
}

/// Applies each configuration the controller sends, reports after each and every
/// `REPORT_INTERVAL`, until `control` says stop. `running` is the controller revision
/// and configuration that run.
pub fn follow_controller<D: DaemonDataplane>(
    runner: &mut Runner<D>,
    follower: &Follower,
    reporter: &Reporter,
    mut running: Option<(u64, Config)>,
    control: &Control,
) {
    let mut refusal: Option<String> = None;
    let mut chores = Chores::new();
    let mut last_report: Option<Instant> = None;
    while !control.stopping() {
        // Waiting on the channel rather than sleeping: a new revision is applied the
        // moment it arrives.
        match follower.updates.recv_timeout(TURN) {
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
                            runner.origin.controller_revision = Some(revision);
                            persist(runner, follower.url(), revision, &received.config);
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
        runner.set_refusal(refusal.as_deref());
        if runner.health_turn() | std::mem::take(&mut chores.report_now) {
            last_report = None; // the controller hears of it now
        }
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_INTERVAL) {
            reporter.report(report::engine_report(
                runner,
                running.as_ref().map(|(r, _)| *r),
                refusal.as_deref(),
            ));
            last_report = Some(Instant::now());
        }
        chores.run(runner);
    }
}

/// Keeps the applied configuration for a restart without the controller.
fn persist<D: DaemonDataplane>(runner: &Runner<D>, url: &str, revision: u64, config: &Config) {
    let persisted = Persisted {
        revision,
        controller: url.to_owned(),
        config: config.clone(),
    };
    if let Err(e) = controller::save_persisted(&runner.options().state_dir, &persisted) {
        warn!("keeping the configuration for a restart: {e:#}");
    }
}
