//! The configuration objects, one type per Avi object (see the crate documentation for
//! the mapping). These are the on-disk YAML shape and, later, the REST API's and CLI's.
//!
//! Every struct refuses unknown fields, so that a misspelt key (`prot:` for `port:`) is
//! an error with a line and column instead of a silently ignored setting. Defaults are
//! Avi's unless a comment says otherwise; they are applied by serde, so a parsed
//! [`Config`] holds the effective values (except the two whose default depends on another
//! field: [`NetworkProfile::session_idle_timeout`] and [`Pool::table_size`], resolved by
//! [`NetworkProfile::effective_idle_timeout`] and [`Pool::effective_table_size`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::table;

/// Name of the application profile that always exists (Avi's `System-L4-Application`).
pub const SYSTEM_L4_APPLICATION: &str = "System-L4-Application";

/// Longest object name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// What an object name may hold, as said in refusals.
pub const NAME_RULE: &str = "1 to 128 characters: ASCII letters, digits, '-', '_', '.' or ':', \
starting with a letter or a digit (as Avi's names such as System-L4-Application)";

/// The same rule as a regular expression, for the OpenAPI document.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";

/// Whether `name` is a valid object name ([`NAME_RULE`]). Names go into URLs, event
/// subjects and terminals, so the set is small: no spaces, slashes or control characters.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Smallest server ratio (Avi's `Server.ratio`).
pub const MIN_RATIO: u32 = 1;
/// Largest server ratio (Avi's `Server.ratio`).
pub const MAX_RATIO: u32 = 20;

/// A whole configuration: Avi's objects of the kinds Ricochet implements.
///
/// Objects refer to each other by name, as in Avi's UI (the API's `*_ref` fields).
/// Every list may be omitted, and an empty document is an empty configuration.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Avi `NetworkProfile` objects (Templates > Profiles > TCP/UDP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_profiles: Vec<NetworkProfile>,
    /// Avi `ApplicationProfile` objects. [`SYSTEM_L4_APPLICATION`] exists without being
    /// declared; declaring it again is allowed (it can only be an L4 profile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_profiles: Vec<ApplicationProfile>,
    /// Avi `HealthMonitor` objects, run by every engine against the servers of the pools
    /// that name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_monitors: Vec<HealthMonitor>,
    /// Avi `Pool` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<Pool>,
    /// Avi `ServiceEngineGroup` objects: which engines carry which virtual services, and
    /// how they announce the VIPs to the routers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_engine_groups: Vec<ServiceEngineGroup>,
    /// Avi `VirtualService` objects, each with its VIP inline (Avi's `VsVip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_services: Vec<VirtualService>,
}

impl Config {
    /// The group `engine` (an engine's registered name) is a member of, if any.
    pub fn group_of(&self, engine: &str) -> Option<&ServiceEngineGroup> {
        self.service_engine_groups
            .iter()
            .find(|g| g.engines.iter().any(|e| e.name == engine))
    }

    /// This configuration as the engine named `engine` runs it: the virtual services of
    /// its group, or those of no group if it is in none. The other objects stay, so the
    /// result validates as this one does.
    pub fn carried_by(&self, engine: &str) -> Config {
        let group = self.group_of(engine).map(|g| g.name.as_str());
        let mut config = self.clone();
        config
            .virtual_services
            .retain(|vs| vs.se_group.as_deref() == group);
        config
    }
}

// ---------------------------------------------------------------------------------------
// Network profile
// ---------------------------------------------------------------------------------------

/// Avi `NetworkProfile`: the transport behaviour of a virtual service.
///
/// DSR needs a fast-path profile: the load balancer only forwards packets and never
/// terminates the connection (the server answers the client directly).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkProfile {
    /// Unique among network profiles.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub name: String,
    /// Avi's `profile.type`.
    #[serde(rename = "type")]
    pub kind: NetworkProfileType,
    /// Avi's `dsr_profile` of the fast-path profile. Absent means DSR is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsr: Option<DsrProfile>,
    /// Seconds a flow may stay idle before it is forgotten. Default 300 for
    /// `tcp_fast_path` (Avi allows 5..=14400) and 10 for `udp_fast_path` (2..=3600).
    /// Avi's special value 0 ("never") is refused: flows always expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 14400))]
    pub session_idle_timeout: Option<u32>,
}

impl NetworkProfile {
    /// The idle timeout in seconds: the configured one, or the type's default.
    pub fn effective_idle_timeout(&self) -> u32 {
        self.session_idle_timeout
            .unwrap_or_else(|| self.kind.default_idle_timeout())
    }

    /// Whether this profile enables DSR (`dsr.enabled: true`).
    pub fn dsr_enabled(&self) -> bool {
        self.dsr.as_ref().is_some_and(|dsr| dsr.enabled)
    }
}

/// Avi's `ProtocolType` of a network profile.
///
/// The proxy types are accepted by the parser only so that validation can explain why a
/// virtual service cannot use them (Ricochet forwards; it never terminates connections).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkProfileType {
    /// `PROTOCOL_TYPE_TCP_FAST_PATH`.
    TcpFastPath,
    /// `PROTOCOL_TYPE_UDP_FAST_PATH`.
    UdpFastPath,
    /// `PROTOCOL_TYPE_TCP_PROXY`: not usable by Ricochet.
    TcpProxy,
    /// `PROTOCOL_TYPE_UDP_PROXY`: not usable by Ricochet.
    UdpProxy,
}

impl NetworkProfileType {
    /// The transport protocol of virtual services using the profile.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::TcpFastPath | Self::TcpProxy => Protocol::Tcp,
            Self::UdpFastPath | Self::UdpProxy => Protocol::Udp,
        }
    }

    /// Whether the profile forwards packets without terminating connections.
    pub fn is_fast_path(self) -> bool {
        matches!(self, Self::TcpFastPath | Self::UdpFastPath)
    }

    /// Default session idle timeout in seconds (Avi's).
    pub fn default_idle_timeout(self) -> u32 {
        match self.protocol() {
            Protocol::Tcp => 300,
            Protocol::Udp => 10,
        }
    }

    /// Allowed session idle timeouts in seconds (Avi's ranges).
    pub fn idle_timeout_range(self) -> std::ops::RangeInclusive<u32> {
        match self.protocol() {
            Protocol::Tcp => crate::openapi::TCP_IDLE_TIMEOUT,
            Protocol::Udp => crate::openapi::UDP_IDLE_TIMEOUT,
        }
    }

    /// The name used in the YAML file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TcpFastPath => "tcp_fast_path",
            Self::UdpFastPath => "udp_fast_path",
            Self::TcpProxy => "tcp_proxy",
            Self::UdpProxy => "udp_proxy",
        }
    }
}

/// Avi `DsrProfile`: Direct Server Return settings of a fast-path network profile.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsrProfile {
    /// "Enable DSR" in Avi's UI. Required, so that DSR is never on or off by accident.
    pub enabled: bool,
    /// Avi's `dsr_type` (required, as in Avi).
    #[serde(rename = "type")]
    pub kind: DsrType,
    /// Avi's `dsr_encap_type` (required, as in Avi).
    pub encapsulation: DsrEncapsulation,
    /// With `encapsulation: gue`: the outer UDP destination port, where the servers'
    /// decapsulation listens ([`DEFAULT_GUE_PORT`] when absent). Refused with any other
    /// encapsulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub gue_port: Option<u16>,
}

/// The GUE destination port when a profile names none: katran's and the Linux `fou`
/// examples' 6080.
pub const DEFAULT_GUE_PORT: u16 = 6080;

impl DsrProfile {
    /// The GUE destination port in force ([`DEFAULT_GUE_PORT`] when absent).
    pub fn effective_gue_port(&self) -> u16 {
        self.gue_port.unwrap_or(DEFAULT_GUE_PORT)
    }
}

/// Avi's `DsrType`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsrType {
    /// `DSR_TYPE_L2`: the frame goes to the server's MAC address, the IP packet unchanged
    /// (servers on the engine's segment; with `encapsulation: ipinip`, which it ignores).
    L2,
    /// `DSR_TYPE_L3`: encapsulate towards the server's IP.
    L3,
}

/// Avi's `EncapType` for L3 DSR, and GUE. The outer family is always the VIP's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsrEncapsulation {
    /// `ENCAP_IPINIP`: IPv4-in-IPv4 or IPv6-in-IPv6 (RFC 2003, RFC 2473).
    Ipinip,
    /// `ENCAP_GRE`: GRE (RFC 2784) with a 4-byte header, IPv4 or IPv6 outer.
    Gre,
    /// GUE "variant 1": UDP to `gue_port`, the inner packet right after the UDP header
    /// (what katran sends and Linux `fou` decapsulates); the UDP source port varies with
    /// the flow, so that servers spread flows over their receive queues.
    Gue,
}

impl DsrEncapsulation {
    /// The name used in the YAML file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipinip => "ipinip",
            Self::Gre => "gre",
            Self::Gue => "gue",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Application profile
// ---------------------------------------------------------------------------------------

/// Avi `ApplicationProfile`. Only L4 profiles exist in Ricochet, and they carry no
/// settings yet; the object exists so that configurations read like Avi's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationProfile {
    /// Unique among application profiles.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub name: String,
    /// Avi's `type`.
    #[serde(rename = "type")]
    pub kind: ApplicationProfileType,
}

/// Avi's `ApplicationProfileType`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationProfileType {
    /// `APPLICATION_PROFILE_TYPE_L4`.
    L4,
}

// ---------------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------------

/// Avi `Pool`: the servers a virtual service balances over, and how.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Unique among pools.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub name: String,
    /// The servers, addressed by their own IP (never the VIP, which lives on their
    /// loopback). A pool may be empty, as in Avi: its services then drop new flows. At
    /// most 10485 (100 Maglev slots each in the largest table).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 10485))]
    pub servers: Vec<Server>,
    /// Avi's `lb_algorithm`; fast path supports consistent hashing only.
    #[serde(default)]
    pub lb_algorithm: LbAlgorithm,
    /// Avi's `lb_algorithm_hash`: what the consistent hash is computed over.
    #[serde(default)]
    pub consistent_hash: ConsistentHash,
    /// Maglev lookup-table size: a prime of at least 100 × the number of servers.
    /// Default: [`table::DEFAULT_TABLE_SIZE`], or the first prime at or above
    /// 100 × servers if that is larger; at most 1048573. Not an Avi field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 1048573))]
    pub table_size: Option<u32>,
    /// Names of health monitors, run against every enabled server by each engine (a server
    /// is down while any of them is down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::openapi::ObjectName>, inline))]
    pub health_monitors: Vec<String>,
}

impl Pool {
    /// The Maglev table size: the configured one, or the default for the pool's size.
    pub fn effective_table_size(&self) -> u32 {
        self.table_size
            .unwrap_or_else(|| table::default_table_size(self.servers.len()))
    }
}

/// Avi `Server` inside a pool.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The server's own address: the destination of the encapsulated packet.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::IpAddress))]
    pub ip: IpAddr,
    /// Optional, and only as documentation: with DSR the server receives each packet on
    /// the port the client sent it to (the VIP's port). If given, every virtual service
    /// using the pool must listen on exactly this one port; otherwise omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u16>,
    /// Relative weight, 1..=20 (Avi's range), default 1.
    #[serde(default = "default_ratio")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20))]
    pub ratio: u32,
    /// A disabled server gets no new flows. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Avi's `LbAlgorithm`, restricted to what fast path supports.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// `LB_ALGORITHM_CONSISTENT_HASH` (Maglev).
    #[default]
    ConsistentHash,
}

/// Avi's `LbAlgorithmConsistentHashHdr` values Ricochet implements.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistentHash {
    /// `LB_ALGORITHM_CONSISTENT_HASH_SOURCE_IP_ADDRESS`.
    #[default]
    SourceIp,
    /// `LB_ALGORITHM_CONSISTENT_HASH_SOURCE_IP_ADDRESS_AND_PORT`.
    SourceIpAndPort,
}

// ---------------------------------------------------------------------------------------
// Virtual service
// ---------------------------------------------------------------------------------------

/// Avi `VirtualService`, with its `VsVip` inline as [`VirtualService::vip`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualService {
    /// Unique among virtual services.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub name: String,
    /// The virtual IP, IPv4 or IPv6 (Avi's `vsvip`). The servers must be in its family.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::IpAddress))]
    pub vip: IpAddr,
    /// Avi's `services`: the ports served. At least one is required.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub services: Vec<Service>,
    /// Name of an application profile, default [`SYSTEM_L4_APPLICATION`].
    #[serde(default = "default_application_profile")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub application_profile: String,
    /// Name of the network profile: it gives the protocol and must enable DSR.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub network_profile: String,
    /// Name of the pool.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub pool: String,
    /// A disabled virtual service is validated but not programmed. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name of the service engine group that carries it (Avi's `se_group_ref`). Absent:
    /// every engine that is in no group carries it (Avi's `Default-Group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::ObjectName>, inline))]
    pub se_group: Option<String>,
}

/// Avi `Service`: one port, or an inclusive range of ports.
///
/// `{ port: 1, port_range_end: 65535 }` means every port and compiles to
/// [`crate::PortSpec::All`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// First (or only) port, 1..=65535.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    /// Last port of the range, inclusive, not below `port`; absent means just `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port_range_end: Option<u16>,
}

impl Service {
    /// The inclusive range `(first, last)`.
    pub fn range(&self) -> (u16, u16) {
        (self.port, self.port_range_end.unwrap_or(self.port))
    }
}

// ---------------------------------------------------------------------------------------
// Service engine group
// ---------------------------------------------------------------------------------------

/// Avi `ServiceEngineGroup`: engines that carry the same virtual services side by side
/// (the routers spread each VIP's traffic over them by ECMP). Every member programs the
/// same Maglev tables with the same hash seed, so any of them picks the same server for a
/// flow, and a flow that moves between them keeps its server while its pool is unchanged.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEngineGroup {
    /// Unique among service engine groups.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub name: String,
    /// The members. An engine is in at most one group.
    #[serde(default)]
    pub engines: Vec<GroupEngine>,
    /// Seed of the client hash every member uses (it replaces the engine's
    /// `--hash-seed`). Default 0.
    #[serde(default)]
    pub hash_seed: u32,
    /// How the members announce the VIPs of the group's virtual services; absent: they
    /// announce nothing (the routers have static routes to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<GroupBgp>,
}

/// One engine of a [`ServiceEngineGroup`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEngine {
    /// The name the engine registers with (`ricochet engine --name`, default its host
    /// name).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 253, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub name: String,
    /// The engine's addresses, at most one per family: the sources of its BGP sessions
    /// (to the peers of the same family). Each must be on the engine's interface, or the
    /// engine refuses to announce.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::openapi::IpAddress>, min_items = 1, max_items = 2))]
    pub addresses: Vec<IpAddr>,
}

/// BGP announcement of a group's VIPs, through a BGP daemon beside each engine (BIRD 2):
/// an engine announces a VIP, as a host route, while it forwards the current revision of
/// a virtual service of the VIP that has a healthy server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBgp {
    /// The engines' autonomous system number.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295u32))]
    pub local_as: u32,
    /// The routers every member peers with.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub peers: Vec<BgpPeer>,
    /// BGP hold time in seconds (keepalives every third of it): how long a router keeps
    /// the routes of an engine that stopped answering. Default 9.
    #[serde(default = "default_hold_time")]
    #[cfg_attr(feature = "openapi", schema(minimum = 3, maximum = 65535))]
    pub hold_time: u16,
    /// Run BFD on the sessions (the router must too): a dead engine is noticed in about
    /// `bfd_interval_ms` × 3 instead of the hold time. Default false.
    #[serde(default)]
    pub bfd: bool,
    /// BFD transmit and receive interval, milliseconds. Default 100.
    #[serde(default = "default_bfd_interval")]
    #[cfg_attr(feature = "openapi", schema(minimum = 10, maximum = 10000))]
    pub bfd_interval_ms: u32,
}

/// A router a [`GroupBgp`] peers with.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    /// The router's address (on the engines' segment).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::IpAddress))]
    pub ip: IpAddr,
    /// Its autonomous system number.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295u32))]
    pub remote_as: u32,
}

// ---------------------------------------------------------------------------------------
// Health monitor
// ---------------------------------------------------------------------------------------

/// Avi `HealthMonitor`: every engine runs it against each enabled server of each pool that
/// names it; a server is down (out of its pool's Maglev table) while any of its monitors
/// is down.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthMonitor {
    /// Unique among health monitors.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::ObjectName, inline))]
    pub name: String,
    /// Avi's `type`.
    #[serde(rename = "type")]
    pub kind: HealthMonitorType,
    /// Seconds between checks, 2..=3600 (above `receive_timeout`, which is at least 1),
    /// default 10.
    #[serde(default = "default_send_interval")]
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 3600))]
    pub send_interval: u32,
    /// Seconds to wait for an answer, 1..=2400 and less than `send_interval`, default 4.
    #[serde(default = "default_receive_timeout")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2400))]
    pub receive_timeout: u32,
    /// Consecutive successes that mark a server up ("rise"), 1..=50, default 2.
    #[serde(default = "default_checks")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 50))]
    pub successful_checks: u32,
    /// Consecutive failures that mark a server down ("fall"), 1..=50, default 2.
    #[serde(default = "default_checks")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 50))]
    pub failed_checks: u32,
    /// Port to check; absent means the service port. Not allowed for `icmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub monitor_port: Option<u16>,
    /// Settings of a `tcp` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_monitor: Option<TcpMonitor>,
    /// Settings of a `udp` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_monitor: Option<UdpMonitor>,
    /// Settings of an `http` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_monitor: Option<HttpMonitor>,
    /// Check through the VIP path (Ricochet's DSR-aware check; Avi has no such field):
    /// the engine sends the check to VIP:port (an `icmp` monitor: an echo request to the
    /// VIP) encapsulated to the server, the way client traffic goes, so a server that answers on its own address but lacks the VIP on
    /// `lo` or decapsulation is marked down with that reason (`DSR_PATH_BROKEN`).
    /// Default false: the check goes to the server's own address. A pool that no enabled
    /// virtual service uses has no VIP to go through and is checked directly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dsr_path: bool,
}

/// Avi's `HealthMonitorType` values Ricochet models.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthMonitorType {
    /// `HEALTH_MONITOR_TCP`.
    Tcp,
    /// `HEALTH_MONITOR_HTTP`.
    Http,
    /// `HEALTH_MONITOR_UDP`.
    Udp,
    /// `HEALTH_MONITOR_PING`.
    Icmp,
}

impl HealthMonitorType {
    /// The name used in the YAML file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }
}

/// Avi `HealthMonitorTcp`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpMonitor {
    /// Payload to send once connected; absent means connect only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_request: Option<String>,
    /// Text the answer must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_response: Option<String>,
    /// Check with a SYN / SYN-ACK / RST exchange instead of a full connection.
    #[serde(default)]
    pub tcp_half_open: bool,
}

/// Avi `HealthMonitorUdp`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpMonitor {
    /// Datagram payload to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_request: Option<String>,
    /// Text the answer must contain; absent means "no ICMP unreachable" is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_response: Option<String>,
}

/// Avi `HealthMonitorHttp`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMonitor {
    /// Request line, default `GET / HTTP/1.0`, optionally followed by headers (see
    /// [`HttpMonitor::request_lines`]). The version, when given, is `HTTP/1.0` or
    /// `HTTP/1.1`; each header is `Name: value`.
    #[serde(default = "default_http_request")]
    pub http_request: String,
    /// Acceptable status classes, default `[http_2xx, http_3xx]`; must not be empty.
    #[serde(default = "default_http_response_codes")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub http_response_code: Vec<HttpResponseCode>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_response: Option<String>,
}

impl HttpMonitor {
    /// The lines of `http_request`: the request line, then headers. Avi lets the field
    /// carry headers after the request line; both a real CR LF (or LF) and the four
    /// characters `\r\n` (as typed in a UI or a single-quoted YAML string) separate
    /// lines. Lines are trimmed; empty ones are dropped.
    pub fn request_lines(&self) -> Vec<String> {
        http_request_lines(&self.http_request)
    }
}

/// [`HttpMonitor::request_lines`] of a raw `http_request` (the health checker's copy).
pub fn http_request_lines(http_request: &str) -> Vec<String> {
    http_request
        .replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .split('\n')
        .map(|line| line.trim_end_matches('\r').trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Default for HttpMonitor {
    fn default() -> Self {
        Self {
            http_request: default_http_request(),
            http_response_code: default_http_response_codes(),
            http_response: None,
        }
    }
}

/// Avi's `HttpResponseCode` classes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpResponseCode {
    /// Any status.
    HttpAny,
    /// 100..=199.
    #[serde(rename = "http_1xx")]
    Http1xx,
    /// 200..=299.
    #[serde(rename = "http_2xx")]
    Http2xx,
    /// 300..=399.
    #[serde(rename = "http_3xx")]
    Http3xx,
    /// 400..=499.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// 500..=599.
    #[serde(rename = "http_5xx")]
    Http5xx,
}

// ---------------------------------------------------------------------------------------
// Shared enums and serde defaults
// ---------------------------------------------------------------------------------------

/// Transport protocol of a virtual service, from its network profile's type.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

fn default_true() -> bool {
    true
}

fn default_hold_time() -> u16 {
    9
}

fn default_bfd_interval() -> u32 {
    100
}

fn default_ratio() -> u32 {
    1
}

fn default_application_profile() -> String {
    SYSTEM_L4_APPLICATION.to_owned()
}

fn default_send_interval() -> u32 {
    10
}

fn default_receive_timeout() -> u32 {
    4
}

fn default_checks() -> u32 {
    2
}

fn default_http_request() -> String {
    "GET / HTTP/1.0".to_owned()
}

fn default_http_response_codes() -> Vec<HttpResponseCode> {
    vec![HttpResponseCode::Http2xx, HttpResponseCode::Http3xx]
}
