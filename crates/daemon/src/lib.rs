//! The service-engine daemon as a library: what `ricochet engine` and `ricochet
//! all-in-one` run, without their command line.
//!
//! `ricochet-engine` reconciles one desired state into a data plane's maps; this crate
//! is the process around it, one module per duty:
//! - [`source`]: where configurations come from: a file ([`source::file`], re-read on
//!   SIGHUP or when its content changes) or a controller ([`source::controller`]: register,
//!   long-poll the desired configuration, keep the last one applied on disk);
//! - [`runner`]: the engine with what applying needs: refusing configurations without an
//!   outer source address, removing servers health marked down, attaching the data plane
//!   after the first apply ([`DaemonDataplane`]);
//! - [`health`]: the monitors of the pools that run, and what their verdicts change;
//! - [`state`]: the state file `ricochet status` reads;
//! - [`report`]: what the engine tells the controller, and the thread that posts it;
//! - [`bgp`]: the announcement of the group's VIPs through BIRD ([`bird`], its control
//!   socket);
//! - [`metrics`]: `GET /metrics` (Prometheus text format) on `--metrics-listen`;
//! - [`run`]: start-up and the run loops, until [`Control`] says stop.
//!
//! The run loops are generic over the data plane: tests run them in-process over the
//! in-memory data plane of `ricochet-dataplane` (see this crate's tests).

pub mod bgp;
pub mod bird;
pub mod control;
pub mod health;
pub mod metrics;
pub mod neighbours;
pub mod net;
pub mod report;
pub mod run;
pub mod runner;
pub mod source;
pub mod state;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub use control::Control;
use ricochet_dataplane::kernel::AttachMode;
use ricochet_dataplane::Capacities;
pub use run::run;
pub use runner::{DaemonDataplane, Runner, RunnerOptions};
pub use source::{ControllerOptions, Source};
pub use state::{open_pinned, state_file, StateFile};

/// Where the data plane's maps and link are pinned by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ricochet";
/// Where the state file and the last configuration from the controller are kept by
/// default.
pub const DEFAULT_STATE_DIR: &str = "/run/ricochet";
/// Where the controller writes its admin token by default.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/ricochet/admin-token";

/// The data plane's settings, the same whatever the configuration's source.
#[derive(Debug, Clone)]
pub struct DataPlaneOptions {
    /// The interface clients' packets arrive on (and encapsulated packets leave by).
    pub interface: String,
    /// Outer source of IPv4-in-IPv4 packets; `None`: the interface's first global IPv4.
    pub source_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6-in-IPv6 packets; `None`: the interface's first global IPv6.
    pub source_v6: Option<Ipv6Addr>,
    /// How the XDP program is attached.
    pub xdp_mode: AttachMode,
    /// bpffs directory of the pinned maps and link.
    pub pin_dir: PathBuf,
    /// Sizes of the maps.
    pub capacities: Capacities,
    /// Seed of the client hash: engines sharing VIPs (ECMP) must use the same one.
    pub hash_seed: u32,
    /// The flow-table scans (see [`runner::FlowScan`]).
    pub flow_scan: runner::FlowScan,
}

/// Everything the daemon needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_plane: DataPlaneOptions,
    /// Directory of the state file, and of the last configuration applied from the
    /// controller.
    pub state_dir: PathBuf,
    /// Where the configuration comes from.
    pub source: Source,
    /// Where to serve `GET /metrics`; `None`: not served.
    pub metrics: Option<metrics::MetricsOptions>,
    /// The engine's name when it follows a file (a controller's engine has its
    /// registered name): it decides the engine's service engine group.
    pub name: Option<String>,
    /// Where the VIPs of a service engine group with BGP are announced.
    pub bgp: bgp::BgpOptions,
}
