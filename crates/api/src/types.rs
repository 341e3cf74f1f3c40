//! The API's request and response bodies (besides the model objects of
//! `ricochet_config`, which are sent and stored as they are).
//!
//! Revisions: the store counts every committed change (configuration objects, engine
//! registrations, events). Each object carries the revision that last changed it; list
//! and mutation responses carry the store's revision; the configuration and the desired
//! state carry the *configuration revision*, the revision of the last change to any
//! configuration object, which is what engines run and report.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ricochet_config::Config;
use serde::{Deserialize, Serialize};

use crate::diff::ConfigDiff;

/// An object with the revision that last changed it. Also the stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Versioned<T> {
    /// The revision of the last change to this object.
    pub revision: u64,
    /// The object.
    pub object: T,
}

/// The objects of one kind, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectList<T> {
    /// The store's revision when read.
    pub revision: u64,
    /// The objects.
    pub items: Vec<Versioned<T>>,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deleted {
    /// The revision of the change that deleted it.
    pub revision: u64,
    /// The collection, e.g. `pools`.
    pub kind: String,
    /// The deleted object's name.
    pub name: String,
}

/// The whole configuration with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Configuration {
    /// The configuration revision: the revision of the last change to any object.
    pub revision: u64,
    /// Every object, each kind sorted by name (the built-in application profile
    /// included).
    pub config: Config,
}

/// The answer to a declarative apply (`PUT /api/v1/configuration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplyResult {
    /// The configuration revision after the apply: new if something changed, the
    /// current one for a dry run or an apply that changes nothing.
    pub revision: u64,
    /// Whether this was only a preview.
    pub dry_run: bool,
    /// Whether a change was committed.
    pub committed: bool,
    /// What the apply changes (or would change).
    pub diff: ConfigDiff,
}

/// A recorded state change: of a configuration object, a service engine, a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Sequence number, increasing.
    pub id: u64,
    /// The revision of the commit that recorded it.
    pub revision: u64,
    /// When, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub time: String,
    /// What changed, e.g. `pools/web-pool`, `service-engines/se1`,
    /// `service-engines/se1/pools/web-pool/servers/192.168.33.10`.
    pub subject: String,
    /// The new state, e.g. `created`, `changed`, `deleted`, `registered`, `connected`,
    /// `disconnected`, `running`, `failed`, `up`, `down`.
    pub state: String,
    /// The state before, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Why, as a sentence.
    pub reason: String,
}

/// Events after a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventList {
    /// The store's revision when read: pass it as `since` to get only newer events.
    pub revision: u64,
    /// The events, oldest first.
    pub events: Vec<Event>,
}

/// The engine name rule (names go into URLs and event subjects: host-name characters
/// only); one definition in `ricochet-config`, where service engine groups name engines.
pub use ricochet_config::{is_valid_engine_name, ENGINE_NAME_RULE};

/// A service engine registering itself (`POST /api/v1/service-engines`). Registering
/// again with the same name updates the addresses and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EngineRegistration {
    /// Unique among engines, usually the host name ([`ENGINE_NAME_RULE`]).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 253, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub name: String,
    /// The engine's addresses (its data-plane interface's).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<ricochet_config::openapi::IpAddress>))]
    pub addresses: Vec<IpAddr>,
    /// The engine's software version.
    pub version: String,
}

/// What an engine runs, as it reports it (`POST /api/v1/service-engines/{name}/report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EngineReport {
    /// The configuration revision the data plane runs; absent before the first apply.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<ricochet_config::openapi::U64>, inline)
    )]
    pub revision: Option<u64>,
    /// The engine's state.
    pub state: EngineRunState,
    /// Why, for `degraded` and `failed` (e.g. the error that refused a configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Data-plane counters.
    #[serde(default)]
    pub counters: EngineCounters,
    /// The health of each pool server as this engine sees it.
    #[serde(default)]
    pub servers: Vec<ServerHealth>,
    /// Packets lost without an error anywhere else, found by the engine's checks (frames
    /// its XDP program sends that a driver drops), each with what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<EngineWarning>,
    /// The announcement of the VIPs over BGP, for an engine of a group that announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpReport>,
}

/// An engine's announcement of its group's VIPs over BGP, through the BGP daemon beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BgpReport {
    /// The engine's service engine group.
    pub group: String,
    /// The BGP daemon, as it names itself (`BIRD 2.0.12`); absent while it does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// Why the engine cannot announce, or cannot read its sessions (the daemon is not
    /// running, refused the configuration, an address is not on the interface), with what
    /// to do. The data plane forwards on whatever the routers still send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One session per peer of the group.
    #[serde(default)]
    pub sessions: Vec<BgpSession>,
    /// Each VIP of the group's virtual services: announced or not, and why.
    #[serde(default)]
    pub vips: Vec<VipAnnouncement>,
}

/// One BGP session of an engine, as its BGP daemon shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BgpSession {
    /// The router.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::IpAddress))]
    pub peer: IpAddr,
    /// The session's state.
    pub state: BgpSessionState,
    /// The daemon's own words (BIRD's protocol info: `Established`, `Active`, `Connect
    /// Socket: Connection refused`, ...).
    pub info: String,
    /// Since when it is in this state, as the daemon says (its local time format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Whether a BGP session carries routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BgpSessionState {
    /// Up: the router has the announced routes.
    Established,
    /// Trying to reach the router, or negotiating.
    Connecting,
    /// Not configured in the daemon, or the daemon does not answer.
    Down,
}

impl BgpSessionState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Connecting => "connecting",
            Self::Down => "down",
        }
    }
}

/// Whether an engine announces a VIP, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VipAnnouncement {
    /// The VIP (announced as a host route).
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::IpAddress))]
    pub vip: IpAddr,
    /// Whether the engine gives it to its BGP daemon to announce.
    pub announced: bool,
    /// Why (e.g. `virtual service web-vs has 2 healthy servers`, `every server of its
    /// virtual services is down`, `the engine is stopping`).
    pub reason: String,
}

/// A problem an engine found on its host, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EngineWarning {
    /// What kind of problem: `veth_peer_drops_xdp`, `veth_peer_unchecked`,
    /// `xdp_transmit_errors`.
    pub kind: String,
    /// The interface the packets are lost on.
    pub interface: String,
    /// What was found.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

/// An engine's own view of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EngineRunState {
    /// Started, no configuration applied yet.
    Starting,
    /// Forwarding with the reported revision.
    Running,
    /// Forwarding, but the last configuration could not be applied (the reported
    /// revision is the one still running).
    Degraded,
    /// Not forwarding.
    Failed,
}

impl EngineRunState {
    /// The name used in JSON and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
        }
    }
}

/// Data-plane counters of one engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EngineCounters {
    /// Per virtual service.
    #[serde(default)]
    pub services: Vec<ServiceCounters>,
    /// Per pool server.
    #[serde(default)]
    pub servers: Vec<ServerCounters>,
    /// Packets per verdict reason (`forwarded`, `drop_no_service`, ...).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, ricochet_config::openapi::U64>))]
    pub reasons: BTreeMap<String, u64>,
}

/// Counters of one virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceCounters {
    /// The virtual service.
    pub name: String,
    /// Packets forwarded.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::U64, inline))]
    pub packets: u64,
    /// Bytes forwarded.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::U64, inline))]
    pub bytes: u64,
    /// Flows started.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::U64, inline))]
    pub new_flows: u64,
}

/// Counters of one pool server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServerCounters {
    /// The pool.
    pub pool: String,
    /// The server's address.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::IpAddress))]
    pub ip: IpAddr,
    /// Packets sent to it.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::U64, inline))]
    pub packets: u64,
    /// Bytes sent to it.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::U64, inline))]
    pub bytes: u64,
    /// Flows started towards it.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::U64, inline))]
    pub new_flows: u64,
}

/// The health of one pool server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServerHealth {
    /// The pool.
    pub pool: String,
    /// The server's address.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::IpAddress))]
    pub ip: IpAddr,
    /// Its state.
    pub state: HealthState,
    /// Why, e.g. `monitor web-tcp: connection refused (connecting to 192.168.33.10:80)
    /// (2 consecutive failed checks, failed_checks 2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when it is in this state, RFC 3339 UTC, by the engine's clock (absent while
    /// unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// A server's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Not checked yet, or no monitor.
    Unknown,
    /// Passing its monitors.
    Up,
    /// Failing its monitors.
    Down,
}

impl HealthState {
    /// The name used in JSON and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Whether the controller hears from an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// Seen (a registration, report or desired-state poll) within the engine timeout,
    /// or waiting in a desired-state poll now.
    Connected,
    /// Not seen for longer than the engine timeout, or not since the controller started.
    Disconnected,
}

impl Connection {
    /// The name used in JSON and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// A registered service engine, as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceEngine {
    /// The engine's name.
    pub name: String,
    /// Its addresses, as registered.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<ricochet_config::openapi::IpAddress>))]
    pub addresses: Vec<IpAddr>,
    /// Its software version, as registered.
    pub version: String,
    /// When it first registered, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub registered_at: String,
    /// The revision of its last registration change.
    pub revision: u64,
    /// Whether the controller hears from it.
    pub connection: Connection,
    /// When it was last seen, RFC 3339 UTC; absent if not since the controller started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_seen: Option<String>,
    /// Its last report (kept in memory: absent after a controller restart until the engine
    /// reports again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReceivedReport>,
}

/// A report and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceivedReport {
    /// When it arrived, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub received_at: String,
    /// The report.
    pub report: EngineReport,
}

/// Registered service engines, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceEngineList {
    /// The store's revision when read.
    pub revision: u64,
    /// The engines.
    pub items: Vec<ServiceEngine>,
}

/// What engines run: the configuration at a revision (`GET /api/v1/desired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Desired {
    /// The configuration revision.
    pub revision: u64,
    /// The whole configuration; each engine compiles it for its data plane.
    pub config: Config,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok` when the controller answers.
    pub status: String,
    /// The store's revision.
    pub revision: u64,
}

/// The status of every virtual service and its servers (`GET /api/v1/status`), from the
/// configuration and the health that connected engines report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusView {
    /// The configuration revision the view is computed from.
    pub revision: u64,
    /// Virtual services, sorted by name.
    pub virtual_services: Vec<VirtualServiceStatus>,
    /// The BGP announcement of each connected engine of a group with BGP, by engine name.
    #[serde(default)]
    pub bgp: Vec<EngineBgpStatus>,
}

/// One engine's BGP announcement in the status view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EngineBgpStatus {
    /// The engine.
    pub engine: String,
    /// Its report's BGP section: group, daemon, error, sessions, VIPs and why.
    pub announcement: BgpReport,
}

/// One virtual service's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VirtualServiceStatus {
    /// The virtual service.
    pub name: String,
    /// Its VIP.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::IpAddress))]
    pub vip: IpAddr,
    /// Its pool.
    pub pool: String,
    /// Up, degraded, down, unknown or disabled.
    pub state: ServiceState,
    /// Why, e.g. `1 of 2 servers down: 192.168.33.10 connection refused (...)`.
    pub reason: String,
    /// Its pool's servers.
    pub servers: Vec<ServerStatus>,
    /// Its service engine group, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se_group: Option<String>,
    /// The connected engines that announce its VIP over BGP, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announced_by: Vec<String>,
}

/// A virtual service's state from its servers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Every enabled server is up (or unmonitored).
    Up,
    /// Some enabled servers are down, at least one is up.
    Degraded,
    /// No enabled server is up: every one is down, or none is enabled. The data plane
    /// drops its new flows (`drop_no_server`).
    Down,
    /// No connected engine reports its servers yet.
    Unknown,
    /// The virtual service is disabled.
    Disabled,
}

impl ServiceState {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
            Self::Unknown => "unknown",
            Self::Disabled => "disabled",
        }
    }
}

/// One server of a virtual service's pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStatus {
    /// The server's own address.
    #[cfg_attr(feature = "openapi", schema(value_type = ricochet_config::openapi::IpAddress))]
    pub ip: IpAddr,
    /// Whether the pool enables it (a disabled server is neither checked nor sent
    /// new flows).
    pub enabled: bool,
    /// Its health: down if any connected engine reports it down, else up if one
    /// reports it up, else unknown.
    pub state: HealthState,
    /// Why, as the engine reporting it says (prefixed by the engine's name when several
    /// engines disagree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when, by the reporting engine's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is written out by hand next to serde's `snake_case`: the two must agree,
    /// or events and tables would name a state differently from the JSON.
    #[test]
    fn state_names_are_their_json_names() {
        fn json(value: impl Serialize) -> String {
            serde_json::to_value(value)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
        for s in [HealthState::Unknown, HealthState::Up, HealthState::Down] {
            assert_eq!(s.as_str(), json(s));
        }
        for s in [Connection::Connected, Connection::Disconnected] {
            assert_eq!(s.as_str(), json(s));
        }
        for s in [
            EngineRunState::Starting,
            EngineRunState::Running,
            EngineRunState::Degraded,
            EngineRunState::Failed,
        ] {
            assert_eq!(s.as_str(), json(s));
        }
        for s in [
            ServiceState::Up,
            ServiceState::Degraded,
            ServiceState::Down,
            ServiceState::Unknown,
            ServiceState::Disabled,
        ] {
            assert_eq!(s.as_str(), json(s));
        }
    }

    #[test]
    fn engine_names_are_host_names() {
        for good in ["se1", "se-1.lab_a", &"a".repeat(253)] {
            assert!(is_valid_engine_name(good), "{good}");
        }
        for bad in ["", "se 1", "se/1", "se?x", "é", &"a".repeat(254)] {
            assert!(!is_valid_engine_name(bad), "{bad}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tokens and roles
// ---------------------------------------------------------------------------------------

/// What a token may do. Each route of the API requires one level; `admin` may do
/// everything, `operator` everything but token management, `read_only` only reads, and
/// `engine` only what a service engine does (register, fetch the desired configuration,
/// report), and only under its own engine name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, tokens included.
    Admin,
    /// Configuration objects and engines, not tokens.
    Operator,
    /// Reads only (configuration, engines, events, status), no tokens.
    ReadOnly,
    /// One service engine: register, fetch the desired configuration and report, for the
    /// engine name of the token only.
    Engine,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::ReadOnly, Role::Engine];

    /// The name used in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "read_only",
            Role::Engine => "engine",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.as_str().replace('_', "-") == s)
            .ok_or_else(|| format!("unknown role {s:?}: use admin, operator, read_only or engine"))
    }
}

/// What a token name may hold, as said in refusals.
pub const TOKEN_NAME_RULE: &str = "1 to 64 letters, digits, '-', '.' or '_'";

/// Whether `name` is a valid token name ([`TOKEN_NAME_RULE`]): names appear in URLs and
/// as the actor of events.
pub fn is_valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// A token to create (`POST /api/v1/tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Unique among tokens; events name it as the actor.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For the `engine` role (and only for it): the engine name it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 253, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub engine: Option<String>,
}

/// A token as listed: never the token itself, which only its creator saw once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For an engine token: the engine it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// When it was created (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// Every token, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    /// The store's revision when read.
    pub revision: u64,
    /// The tokens.
    pub items: Vec<TokenInfo>,
}

/// A session started from a token (the console's sign-in): a bearer token of its own that
/// works like the token it came from until it is ended (sign-out), the token is revoked,
/// `expires_at` passes or the controller restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedSession {
    /// The session's secret, shown this once: send it as `Authorization: Bearer <session>`.
    pub session: String,
    /// The name of the token it came from (what events record as the actor).
    pub name: String,
    /// That token's role.
    pub role: Role,
    /// When it ends at the latest (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
}

/// The answer to a token creation: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The revision of the creation.
    pub revision: u64,
    /// The token's description.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret to send as `Authorization: Bearer <token>`; the controller keeps only
    /// its hash, so it cannot be shown again.
    pub token: String,
}
