//! `ricochet engine`: the command line of the service-engine daemon, which is
//! `ricochet_daemon` (see that crate for what it does).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use ricochet_daemon::source::controller::{controller_url, engine_name, hostname};
use ricochet_daemon::{Control, ControllerOptions, DataPlaneOptions, Options, Source};
use ricochet_dataplane::kernel::AttachMode;
use ricochet_dataplane::Capacities;

pub use ricochet_daemon::{
    open_pinned, state_file, StateFile, DEFAULT_PIN_DIR, DEFAULT_STATE_DIR, DEFAULT_TOKEN_FILE,
};

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
    /// PEM file of the CA that signed the controller's certificate (https://).
    #[arg(long, env = "RICOCHET_CA_FILE", conflicts_with = "fingerprint")]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the controller's certificate, pinned (https://).
    #[arg(long, env = "RICOCHET_CONTROLLER_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Directory of the state file read by `ricochet status`, and of the last
    /// configuration applied from the controller.
    #[arg(long, env = "RICOCHET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// How often to check the configuration file for changes.
    #[arg(long, env = "RICOCHET_WATCH_INTERVAL_MS", default_value_t = 500)]
    pub watch_interval_ms: u64,
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub bgp: BgpArgs,
}

/// Where the engine has its service engine group's VIPs announced over BGP (used only
/// when its group has BGP settings).
#[derive(Args, Debug, Clone)]
pub struct BgpArgs {
    /// BIRD 2's control socket.
    #[arg(long, env = "RICOCHET_BIRD_SOCKET", default_value = ricochet_daemon::bgp::DEFAULT_BIRD_SOCKET)]
    pub bird_socket: PathBuf,
    /// The file the engine writes and BIRD's configuration includes (`include "FILE";`):
    /// the VIP routes and a BGP session per peer of the group. Default: bird.conf in the
    /// state directory.
    #[arg(long, env = "RICOCHET_BGP_INCLUDE_FILE")]
    pub bgp_include_file: Option<PathBuf>,
    /// Seconds a clean stop waits after withdrawing the VIPs, so the routers have moved
    /// the traffic to the group's other engines when the stop returns.
    #[arg(long, env = "RICOCHET_BGP_DRAIN_TIME", default_value_t = 5)]
    pub bgp_drain_time: u64,
}

impl BgpArgs {
    /// The library's options; the include file defaults into `state_dir`.
    pub fn options(self, state_dir: &std::path::Path) -> ricochet_daemon::bgp::BgpOptions {
        ricochet_daemon::bgp::BgpOptions {
            bird_socket: self.bird_socket,
            include_file: self
                .bgp_include_file
                .unwrap_or_else(|| state_dir.join(ricochet_daemon::bgp::INCLUDE_FILE)),
            drain: Duration::from_secs(self.bgp_drain_time),
        }
    }
}

/// Where the engine serves its Prometheus metrics (off unless asked for).
#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Serve `GET /metrics` (Prometheus text format) on this address, e.g.
    /// 127.0.0.1:9480. Off by default. Beyond loopback --metrics-token-file is required.
    #[arg(long, env = "RICOCHET_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token scrapers must send (at least 16 characters).
    #[arg(long, env = "RICOCHET_METRICS_TOKEN_FILE", requires = "metrics_listen")]
    pub metrics_token_file: Option<PathBuf>,
}

impl MetricsArgs {
    /// The library's options; an address beyond loopback without a token is refused.
    pub fn options(self) -> anyhow::Result<Option<ricochet_daemon::metrics::MetricsOptions>> {
        self.metrics_listen
            .map(|listen| {
                ricochet_daemon::metrics::MetricsOptions::new(listen, self.metrics_token_file)
            })
            .transpose()
    }
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
    /// Seconds without a packet after which a recorded flow counts as closed: after a
    /// pool change, flows recorded on a server the new Maglev table does not pick keep it
    /// (the flow table is consulted) until each has closed or idled this long.
    #[arg(long, env = "RICOCHET_FLOW_IDLE_TIMEOUT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_idle_timeout: u64,
    /// Seconds between two scans of the flow table while some service's is consulted.
    #[arg(long, env = "RICOCHET_FLOW_SCAN_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_scan_interval: u64,
    /// Seconds between two counts of the flow table's entries (`ricochet status`, the
    /// engine's report and its metrics). A count reads every entry, 8,192 per system
    /// call; `ricochet status` shows how long the last one took.
    #[arg(long, env = "RICOCHET_FLOW_COUNT_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_count_interval: u64,
}

impl DataPlaneArgs {
    /// The library's options.
    pub fn options(self) -> DataPlaneOptions {
        DataPlaneOptions {
            interface: self.interface,
            source_v4: self.source_v4,
            source_v6: self.source_v6,
            xdp_mode: self.xdp_mode,
            pin_dir: self.pin_dir,
            capacities: Capacities {
                flows: self.flows,
                maglev_slots: self.maglev_slots,
                servers: self.max_servers,
                services: self.max_services,
                service_ports: self.max_service_ports,
                vips: self.max_vips,
            },
            hash_seed: self.hash_seed,
            flow_scan: ricochet_daemon::runner::FlowScan {
                interval: Duration::from_secs(self.flow_scan_interval),
                idle_timeout_secs: self.flow_idle_timeout,
                count_interval: Duration::from_secs(self.flow_count_interval),
            },
        }
    }
}

impl EngineArgs {
    /// The library's options; bad values of --controller and --name are refused here.
    pub fn options(self) -> anyhow::Result<Options> {
        let source = match (self.config, self.controller) {
            (Some(path), None) => Source::File {
                path,
                watch_interval: Duration::from_millis(self.watch_interval_ms),
            },
            (None, Some(url)) => Source::Controller(ControllerOptions {
                url: controller_url(&url)?,
                token: self.token,
                token_file: self.token_file,
                name: engine_name(self.name.clone().unwrap_or_else(hostname))?,
                tls: ricochet_api::tls::ClientTls {
                    ca_file: self.ca_file,
                    fingerprint: self.fingerprint,
                },
            }),
            _ => bail!("give either --config FILE or --controller URL"),
        };
        Ok(Options {
            data_plane: self.data_plane.options(),
            bgp: self.bgp.options(&self.state_dir),
            state_dir: self.state_dir,
            source,
            metrics: self.metrics.options()?,
            // A file's engine too is in the group that names it (--name, or the host name).
            name: Some(engine_name(self.name.unwrap_or_else(hostname))?),
        })
    }
}

/// Runs the engine until SIGTERM/SIGINT.
pub fn run(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let options = args.options()?;
    let control = Control::from_signals()?;
    ricochet_daemon::run(options, &control)?;
    Ok(ExitCode::SUCCESS)
}
