//! Ricochet's declarative configuration, modelled on VMware Avi's objects.
//!
//! An operator who has set up L3 DSR on Avi (a TCP or UDP fast-path network profile
//! with DSR enabled, type L3, IP-in-IP; a virtual service using it with the
//! `System-L4-Application` profile; a pool of servers addressed by their own IPs) writes
//! the same objects here, with the same names and meanings:
//!
//! | Type | Avi object | YAML list |
//! |------|------------|-----------|
//! | [`Config`] | the tenant's objects | the whole file |
//! | [`NetworkProfile`] | `NetworkProfile` (`tcp_fast_path_profile` / `udp_fast_path_profile`) | `network_profiles` |
//! | [`DsrProfile`] | `DsrProfile` (`dsr_type`, `dsr_encap_type`) | `network_profiles[].dsr` |
//! | [`ApplicationProfile`] | `ApplicationProfile` (type L4; `System-L4-Application` is built in) | `application_profiles` |
//! | [`Pool`] | `Pool` (`lb_algorithm`, `lb_algorithm_hash`) | `pools` |
//! | [`Server`] | `Server` in a pool (`ip`, `port`, `ratio`, `enabled`) | `pools[].servers` |
//! | [`VirtualService`] | `VirtualService` with its `VsVip` | `virtual_services` |
//! | [`Service`] | `Service` (`port`, `port_range_end`) | `virtual_services[].services` |
//! | [`HealthMonitor`] | `HealthMonitor` (`tcp_monitor`, `udp_monitor`, `http_monitor`) | `health_monitors` |
//! | [`ServiceEngineGroup`] | `ServiceEngineGroup` (its members, BGP peers; a virtual service's `se_group_ref`) | `service_engine_groups` |
//! | [`GroupEngine`] | a member of the group | `service_engine_groups[].engines` |
//! | [`GroupBgp`], [`BgpPeer`] | the group's BGP announcement of the VIPs | `service_engine_groups[].bgp` |
//!
//! Objects refer to each other by name. The life of a configuration:
//!
//! 1. [`Config::from_yaml_str`] or [`Config::load`] parses it; unknown fields and wrong
//!    types are [`ConfigError::Parse`] errors with a line and column.
//! 2. [`Config::validate`] checks every rule and returns all the problems at once as
//!    [`ValidationErrors`], each with a path such as `virtual_services["web-vs"].pool`.
//! 3. [`Config::compile`] validates, then flattens the objects into [`Desired`]: the
//!    services and pools the engine programs into the data plane, with names resolved
//!    and defaults applied.
//!
//! What Ricochet does not implement is refused by validation rather than ignored: proxy
//! (non-fast-path) network profiles, virtual services without DSR, a tunnel with L2 DSR. Health monitors are run by the engines (`ricochet-health`).
//!
//! Choices where Avi leaves room:
//!
//! - A server's `port` may be omitted (the usual case): with DSR the packet reaches the
//!   server on the port the client used. It is accepted only when it says the same thing,
//!   i.e. every virtual service using the pool serves exactly that one port.
//! - Two virtual services may not share a VIP, protocol and port, even if one is
//!   disabled, so that enabling a virtual service never makes a configuration invalid.
//! - The same VIP and port over TCP and UDP is fine (DNS does it).
//! - [`Desired`] holds only enabled virtual services and the pools they use; servers are
//!   sorted by IP so that reordering them in the file cannot reshuffle flows.
//!
//! ```
//! let config = ricochet_config::Config::from_yaml_str(
//!     r#"
//! network_profiles:
//!   - name: dsr-l3-tcp
//!     type: tcp_fast_path
//!     dsr: { enabled: true, type: l3, encapsulation: ipinip }
//! pools:
//!   - name: web-pool
//!     servers: [{ ip: 192.168.33.10 }, { ip: 192.168.34.10 }]
//! virtual_services:
//!   - name: web-vs
//!     vip: 192.168.35.241
//!     services: [{ port: 80 }]
//!     network_profile: dsr-l3-tcp
//!     pool: web-pool
//! "#,
//! )?;
//! let desired = config.compile()?;
//! assert_eq!(desired.services[0].idle_timeout_secs, 300);
//! assert_eq!(desired.pools[0].table_size, 65537);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod compile;
mod model;
pub mod openapi;
pub mod table;
mod validate;

use std::path::{Path, PathBuf};

pub use compile::{
    Desired, DesiredPool, DesiredServer, DesiredService, Encapsulation, HashMode, PortSpec,
};
pub use model::{
    http_request_lines, is_valid_name, ApplicationProfile, ApplicationProfileType, BgpPeer, Config,
    ConsistentHash, DsrEncapsulation, DsrProfile, DsrType, GroupBgp, GroupEngine, HealthMonitor,
    HealthMonitorType, HttpMonitor, HttpResponseCode, LbAlgorithm, NetworkProfile,
    NetworkProfileType, Pool, Protocol, Server, Service, ServiceEngineGroup, TcpMonitor,
    UdpMonitor, VirtualService, MAX_NAME_LEN, MAX_RATIO, MIN_RATIO, NAME_PATTERN, NAME_RULE,
    SYSTEM_L4_APPLICATION,
};
pub use validate::{
    is_valid_engine_name, Known, KnownNames, ValidationError, ValidationErrors, ENGINE_NAME_RULE,
    HINT_NAMES, MAX_ENGINE_NAME_LEN,
};

/// A configuration that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not YAML, or not the shape of a [`Config`].
    #[error("{}{message}", location(file.as_deref(), *line, *column))]
    Parse {
        /// The file, when parsed by [`Config::load`].
        file: Option<PathBuf>,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// What is wrong, starting with the field's path when serde knows it, e.g.
        /// ``virtual_services[0]: unknown field `prot`, expected one of ...``.
        message: String,
    },
}

/// `file:line:column: `, with whatever parts are known.
fn location(file: Option<&Path>, line: Option<usize>, column: Option<usize>) -> String {
    let mut out = String::new();
    if let Some(file) = file {
        out.push_str(&format!("{}:", file.display()));
    }
    match (line, column) {
        (Some(line), Some(column)) if file.is_some() => out.push_str(&format!("{line}:{column}:")),
        (Some(line), Some(column)) => out.push_str(&format!("line {line}, column {column}:")),
        _ => {}
    }
    if !out.is_empty() {
        out.push(' ');
    }
    out
}

impl ConfigError {
    fn parse(file: Option<&Path>, err: &serde_yaml::Error) -> Self {
        let (line, column) = match err.location() {
            Some(at) => (Some(at.line()), Some(at.column())),
            None => (None, None),
        };
        // serde_yaml ends its message with " at line L column C"; the location is kept in
        // its own fields instead, and shown first like a compiler's.
        let mut message = err.to_string();
        if let (Some(l), Some(c)) = (line, column) {
            let suffix = format!(" at line {l} column {c}");
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        Self::Parse {
            file: file.map(Path::to_path_buf),
            line,
            column,
            message,
        }
    }
}

impl Config {
    /// Parses a configuration from YAML text. Does not validate: see [`Config::validate`]
    /// and [`Config::compile`]. An empty document is an empty configuration.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::parse(None, &e))
    }

    /// Reads and parses a YAML configuration file. Does not validate.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|e| ConfigError::parse(Some(path), &e))
    }

    /// Checks every rule and returns all problems found, in declaration order.
    ///
    /// Refused, among others: duplicate or empty names; references to undeclared
    /// objects; virtual services whose network profile is not fast path or does not
    /// enable DSR; L2 DSR with GRE or GUE; `gue_port` without GUE; servers addressed by a VIP;
    /// virtual services sharing a VIP, protocol and port; invalid ports and ranges;
    /// VIPs and servers of different families; ratios outside 1..=20; table sizes that
    /// are not prime or below 100 × servers; unusable addresses (unspecified, loopback,
    /// multicast, broadcast); out-of-range monitor parameters; an engine in two service
    /// engine groups, a group member without an address of a BGP peer's family, virtual
    /// services of one VIP in different groups.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate::validate(self, None)
    }

    /// [`Config::validate`] of a part of a larger configuration, whose other objects are
    /// not at hand (the controller's store validates the objects a change touches and
    /// those they depend on, not every object). `names` gives the hints of a missing
    /// reference the names of the whole configuration.
    pub fn validate_part(&self, names: &KnownNames) -> Result<(), ValidationErrors> {
        validate::validate(self, Some(names))
    }

    /// Validates, then compiles the configuration into the desired data-plane state.
    pub fn compile(&self) -> Result<Desired, ValidationErrors> {
        compile::compile(self)
    }
}
