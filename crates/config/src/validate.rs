//! Validation: every rule a configuration must satisfy before it is compiled.
//!
//! All errors are collected, in declaration order, so that one run shows the operator
//! everything to fix. Each error names the object and field with a path such as
//! `virtual_services["web-vs"].pool` (or `pools[2].name` when the object has no usable
//! name) and says what is wrong in a sentence.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use serde::Serialize;

use crate::model::{
    Config, DsrEncapsulation, DsrType, GroupEngine, HealthMonitor, HealthMonitorType,
    NetworkProfile, Pool, Protocol, ServiceEngineGroup, VirtualService, MAX_RATIO, MIN_RATIO,
    SYSTEM_L4_APPLICATION,
};
use crate::openapi;
use crate::table::{
    is_prime, min_table_size, next_prime, MAX_SERVERS_PER_POOL, MAX_TABLE_SIZE, SLOTS_PER_SERVER,
};

/// Longest engine name, in bytes (a host name's).
pub const MAX_ENGINE_NAME_LEN: usize = 253;

/// What an engine name may hold, as said in refusals: the name an engine registers with
/// the controller, and a member of a service engine group.
pub const ENGINE_NAME_RULE: &str = "1 to 253 letters, digits, '-', '.' or '_' (a host name)";

/// Whether `name` is a valid engine name ([`ENGINE_NAME_RULE`]): engine names go into
/// URLs and event subjects, so host-name characters only.
pub fn is_valid_engine_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENGINE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// The object and field, e.g. `virtual_services["web-vs"].pool`.
    pub path: String,
    /// What is wrong, as a sentence for a person.
    pub message: String,
}

/// Every problem found in a configuration (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    /// The errors, in declaration order of the objects concerned.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no errors (never true for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors at `path`.
    pub fn at<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a ValidationError> + 'a {
        self.0.iter().filter(move |e| e.path == path)
    }

    /// The errors, by value.
    pub fn into_vec(self) -> Vec<ValidationError> {
        self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            all => {
                write!(f, "invalid configuration ({} errors):", all.len())?;
                for e in all {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl IntoIterator for ValidationErrors {
    type Item = ValidationError;
    type IntoIter = std::vec::IntoIter<ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Validates `config`; see [`Config::validate`]. `names`: the names the hints of a
/// missing reference list, when `config` is part of a larger configuration (see
/// [`Config::validate_part`]); `None` lists `config`'s own.
pub(crate) fn validate(
    config: &Config,
    names: Option<&KnownNames>,
) -> Result<(), ValidationErrors> {
    let mut v = Validator::new(config, names);
    v.network_profiles();
    // Application profiles have nothing to check beyond their names (checked when
    // indexing): their type can only be l4.
    v.health_monitors();
    v.pools();
    v.service_engine_groups();
    v.virtual_services();
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(v.errors))
    }
}

/// The valid services of a virtual service: (index in `services`, inclusive range).
type IndexedRanges = Vec<(usize, (u16, u16))>;

/// Path of object `index` of list `kind`: by name when it has one, else by index.
fn object_path(kind: &str, index: usize, name: &str) -> String {
    if !crate::is_valid_name(name) {
        format!("{kind}[{index}]")
    } else {
        format!("{kind}[{name:?}]")
    }
}

/// `80` or `80-90`.
fn fmt_range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// `port 80 overlaps` or `ports 80-90 overlap`.
fn ports_overlap(range: (u16, u16)) -> String {
    if range.0 == range.1 {
        format!("port {} overlaps", range.0)
    } else {
        format!("ports {} overlap", fmt_range(range))
    }
}

fn overlaps(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Why `ip` cannot be a VIP or a server address, if it cannot.
fn unusable_address(ip: IpAddr) -> Option<String> {
    let why = match ip {
        IpAddr::V4(a) if a.is_unspecified() => "the unspecified address",
        IpAddr::V4(a) if a.is_loopback() => "a loopback address",
        IpAddr::V4(a) if a.is_multicast() => "a multicast address",
        IpAddr::V4(a) if a.is_broadcast() => "the broadcast address",
        IpAddr::V6(a) if a.is_unspecified() => "the unspecified address",
        IpAddr::V6(a) if a.is_loopback() => "the loopback address",
        IpAddr::V6(a) if a.is_multicast() => "a multicast address",
        IpAddr::V6(a) => {
            let v4 = a.to_ipv4_mapped()?;
            return Some(format!(
                "an IPv4-mapped IPv6 address (write it as the IPv4 address {v4})"
            ));
        }
        IpAddr::V4(_) => return None,
    };
    Some(why.to_owned())
}

/// Names listed in a hint at most: a configuration of thousands of pools must not make an
/// error message of thousands of names.
pub const HINT_NAMES: usize = 20;

/// The names of one kind that a "does not exist" hint lists: the first [`HINT_NAMES`] and
/// how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The first names (in declaration or name order), at most [`HINT_NAMES`].
    pub first: Vec<String>,
    /// How many objects of the kind there are.
    pub total: usize,
}

impl Known {
    /// From every name of a kind (only the first [`HINT_NAMES`] are kept).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>, total: usize) -> Self {
        Known {
            first: names
                .into_iter()
                .take(HINT_NAMES)
                .map(str::to_owned)
                .collect(),
            total,
        }
    }

    /// `known pools: a, b` (with `and N more` past [`HINT_NAMES`]) or `no pools are
    /// declared`.
    fn hint(&self, plural: &str) -> String {
        if self.first.is_empty() {
            return format!("no {plural} are declared");
        }
        let more = self.total.saturating_sub(self.first.len());
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("known {plural}: {}{tail}", self.first.join(", "))
    }
}

/// For each kind that objects refer to, the names its hints list; see
/// [`Config::validate_part`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownNames {
    /// Network profiles.
    pub network_profiles: Known,
    /// Application profiles (the built-in one among them).
    pub application_profiles: Known,
    /// Health monitors.
    pub health_monitors: Known,
    /// Pools.
    pub pools: Known,
    /// Service engine groups.
    pub service_engine_groups: Known,
}

/// Names of one object kind: the first declaration of each, for reference lookups.
struct Names<'a, T> {
    /// Index in its list, and the object.
    by_name: HashMap<&'a str, (usize, &'a T)>,
    /// Distinct names in declaration order, for "known ..." hints.
    ordered: Vec<&'a str>,
}

impl<'a, T> Names<'a, T> {
    fn get(&self, name: &str) -> Option<(usize, &'a T)> {
        self.by_name.get(name).copied()
    }
}

struct Validator<'a> {
    config: &'a Config,
    errors: Vec<ValidationError>,
    network_profiles: Names<'a, NetworkProfile>,
    application_profiles: Vec<&'a str>,
    health_monitors: Names<'a, HealthMonitor>,
    pools: Names<'a, Pool>,
    service_engine_groups: Names<'a, ServiceEngineGroup>,
    /// Each VIP and the first virtual service that has it.
    vips: HashMap<IpAddr, &'a str>,
    /// What the hints of missing references list.
    hints: KnownNames,
}

impl<'a> Validator<'a> {
    fn new(config: &'a Config, names: Option<&KnownNames>) -> Self {
        let mut errors = Vec::new();
        let network_profiles = index_names(
            &mut errors,
            "network_profiles",
            "network profile",
            &config.network_profiles,
            |p| &p.name,
        );
        let declared_apps = index_names(
            &mut errors,
            "application_profiles",
            "application profile",
            &config.application_profiles,
            |p| &p.name,
        );
        let health_monitors = index_names(
            &mut errors,
            "health_monitors",
            "health monitor",
            &config.health_monitors,
            |m| &m.name,
        );
        let pools = index_names(&mut errors, "pools", "pool", &config.pools, |p| &p.name);
        let service_engine_groups = index_names(
            &mut errors,
            "service_engine_groups",
            "service engine group",
            &config.service_engine_groups,
            |g| &g.name,
        );
        // Virtual services are only looked up by VIP, but their names must be unique too.
        index_names(
            &mut errors,
            "virtual_services",
            "virtual service",
            &config.virtual_services,
            |vs| &vs.name,
        );

        let mut application_profiles = vec![SYSTEM_L4_APPLICATION];
        application_profiles.extend(
            declared_apps
                .ordered
                .iter()
                .filter(|name| **name != SYSTEM_L4_APPLICATION),
        );

        let mut vips = HashMap::new();
        for vs in &config.virtual_services {
            vips.entry(vs.vip).or_insert(vs.name.as_str());
        }

        let own = |names: &[&str]| Known::from_names(names.iter().copied(), names.len());
        let hints = match names {
            Some(names) => names.clone(),
            None => KnownNames {
                network_profiles: own(&network_profiles.ordered),
                application_profiles: own(&application_profiles),
                health_monitors: own(&health_monitors.ordered),
                pools: own(&pools.ordered),
                service_engine_groups: own(&service_engine_groups.ordered),
            },
        };

        Self {
            config,
            errors,
            network_profiles,
            application_profiles,
            health_monitors,
            pools,
            service_engine_groups,
            vips,
            hints,
        }
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    // ------------------------------------------------------------------------------
    // Network profiles
    // ------------------------------------------------------------------------------

    fn network_profiles(&mut self) {
        for (i, profile) in self.config.network_profiles.iter().enumerate() {
            let at = object_path("network_profiles", i, &profile.name);
            let kind = profile.kind.as_str();
            if let Some(dsr) = &profile.dsr {
                if !profile.kind.is_fast_path() {
                    self.error(
                        format!("{at}.dsr"),
                        format!(
                            "DSR is only available on fast-path profiles (tcp_fast_path, \
                             udp_fast_path); a {kind} profile terminates connections"
                        ),
                    );
                }
                // Refused even when DSR is disabled: an accepted value must be one the data
                // plane implements, or enabling it later would fail far from its cause.
                if dsr.kind == DsrType::L2 && dsr.encapsulation != DsrEncapsulation::Ipinip {
                    self.error(
                        format!("{at}.dsr.encapsulation"),
                        format!(
                            "DSR type l2 sends the client's frame unchanged at the IP layer to \
                             the server's MAC address, so encapsulation: {} does not apply; \
                             leave encapsulation: ipinip (Avi's default) or use type: l3",
                            dsr.encapsulation.as_str()
                        ),
                    );
                }
                match (dsr.encapsulation, dsr.gue_port) {
                    (DsrEncapsulation::Gue, Some(0)) => self.error(
                        format!("{at}.dsr.gue_port"),
                        "gue_port 0 is not a port: give the UDP port the servers' \
                         decapsulation listens on (1 to 65535; 6080 when absent)",
                    ),
                    (DsrEncapsulation::Ipinip | DsrEncapsulation::Gre, Some(port)) => self.error(
                        format!("{at}.dsr.gue_port"),
                        format!(
                            "gue_port {port} only applies to encapsulation: gue, and this \
                             profile has encapsulation: {}; remove it or set \
                             encapsulation: gue",
                            dsr.encapsulation.as_str()
                        ),
                    ),
                    _ => {}
                }
            }
            if let Some(timeout) = profile.session_idle_timeout {
                let range = profile.kind.idle_timeout_range();
                if !range.contains(&timeout) {
                    self.error(
                        format!("{at}.session_idle_timeout"),
                        format!(
                            "session_idle_timeout {timeout} is out of range: a {kind} profile \
                             allows {} to {} seconds",
                            range.start(),
                            range.end()
                        ),
                    );
                }
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Health monitors
    // ------------------------------------------------------------------------------

    fn health_monitors(&mut self) {
        for (i, monitor) in self.config.health_monitors.iter().enumerate() {
            let at = object_path("health_monitors", i, &monitor.name);
            self.health_monitor(&at, monitor);
        }
    }

    fn health_monitor(&mut self, at: &str, m: &HealthMonitor) {
        let send_ok = self.in_range(
            at,
            "send_interval",
            m.send_interval,
            openapi::SEND_INTERVAL,
            " seconds",
        );
        let receive_ok = self.in_range(
            at,
            "receive_timeout",
            m.receive_timeout,
            openapi::RECEIVE_TIMEOUT,
            " seconds",
        );
        if send_ok && receive_ok && m.receive_timeout >= m.send_interval {
            self.error(
                format!("{at}.receive_timeout"),
                format!(
                    "receive_timeout {} must be less than send_interval {}: an answer must \
                     arrive before the next check is sent",
                    m.receive_timeout, m.send_interval
                ),
            );
        }
        self.in_range(
            at,
            "successful_checks",
            m.successful_checks,
            openapi::CHECKS,
            "",
        );
        self.in_range(at, "failed_checks", m.failed_checks, openapi::CHECKS, "");

        match m.monitor_port {
            Some(_) if m.kind == HealthMonitorType::Icmp => self.error(
                format!("{at}.monitor_port"),
                "an icmp monitor has no port; remove monitor_port",
            ),
            Some(0) => self.error(
                format!("{at}.monitor_port"),
                "monitor_port 0 is not a port (1 to 65535); omit it to check the service port",
            ),
            _ => {}
        }

        let kind = m.kind.as_str();
        let settings = [
            (
                "tcp_monitor",
                m.tcp_monitor.is_some(),
                HealthMonitorType::Tcp,
            ),
            (
                "udp_monitor",
                m.udp_monitor.is_some(),
                HealthMonitorType::Udp,
            ),
            (
                "http_monitor",
                m.http_monitor.is_some(),
                HealthMonitorType::Http,
            ),
        ];
        for (field, present, applies_to) in settings {
            if present && m.kind != applies_to {
                self.error(
                    format!("{at}.{field}"),
                    format!(
                        "{field} applies to {} monitors, but this monitor is of type {kind}",
                        applies_to.as_str()
                    ),
                );
            }
        }

        if let (HealthMonitorType::Http, Some(http)) = (m.kind, &m.http_monitor) {
            if let Some(problem) = http_request_problem(&http.request_lines()) {
                self.error(
                    format!("{at}.http_monitor.http_request"),
                    format!("http_request {:?} {problem}", http.http_request),
                );
            }
            if http.http_response_code.is_empty() {
                self.error(
                    format!("{at}.http_monitor.http_response_code"),
                    "at least one response code is required, e.g. [http_2xx]",
                );
            }
        }
    }

    /// Checks that `value` is in `range`; returns whether it is.
    fn in_range(
        &mut self,
        at: &str,
        field: &str,
        value: u32,
        range: RangeInclusive<u32>,
        unit: &str,
    ) -> bool {
        let ok = range.contains(&value);
        if !ok {
            let (lo, hi) = range.into_inner();
            self.error(
                format!("{at}.{field}"),
                format!("{field} {value} is out of range ({lo} to {hi}{unit})"),
            );
        }
        ok
    }

    // ------------------------------------------------------------------------------
    // Pools
    // ------------------------------------------------------------------------------

    fn pools(&mut self) {
        for (i, pool) in self.config.pools.iter().enumerate() {
            let at = object_path("pools", i, &pool.name);
            self.pool(&at, pool);
        }
    }

    fn pool(&mut self, at: &str, pool: &Pool) {
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        for (s, server) in pool.servers.iter().enumerate() {
            let sat = format!("{at}.servers[{s}]");
            let ip = server.ip;
            if let Some(why) = unusable_address(ip) {
                self.error(
                    format!("{sat}.ip"),
                    format!("{ip} is {why}; a server needs a unicast address of its own"),
                );
            }
            if let Some(vs) = self.vips.get(&ip) {
                self.error(
                    format!("{sat}.ip"),
                    format!(
                        "{ip} is the VIP of virtual service {vs:?}; use the server's own \
                         address, not the VIP (with DSR the VIP is configured on the server's \
                         loopback)"
                    ),
                );
            }
            let first = *seen.entry(ip).or_insert(s);
            if first != s {
                self.error(
                    format!("{sat}.ip"),
                    format!("server {ip} is already in this pool (servers[{first}])"),
                );
            }
            if server.port == Some(0) {
                self.error(
                    format!("{sat}.port"),
                    "port 0 is not a port; omit port (with DSR the server receives packets \
                     on the VIP's port)",
                );
            }
            if !openapi::RATIO.contains(&server.ratio) {
                self.error(
                    format!("{sat}.ratio"),
                    format!(
                        "ratio {} is out of range ({MIN_RATIO} to {MAX_RATIO})",
                        server.ratio
                    ),
                );
            }
        }

        let n = pool.servers.len();
        if n > MAX_SERVERS_PER_POOL {
            self.error(
                format!("{at}.servers"),
                format!(
                    "{n} servers are more than a pool can hold ({MAX_SERVERS_PER_POOL}: \
                     {SLOTS_PER_SERVER} Maglev slots each within the largest table, \
                     {MAX_TABLE_SIZE})"
                ),
            );
        } else if let Some(size) = pool.table_size {
            let min = min_table_size(n);
            let message = if size > MAX_TABLE_SIZE {
                Some(format!(
                    "table_size {size} is larger than the maximum, {MAX_TABLE_SIZE}"
                ))
            } else if size < min {
                Some(format!(
                    "table_size {size} is too small for {n} servers: Maglev needs at least \
                     {SLOTS_PER_SERVER} slots per server ({min}); use a prime of at least \
                     {min}, such as {}",
                    next_prime(min).unwrap_or(MAX_TABLE_SIZE)
                ))
            } else if !is_prime(size) {
                Some(format!(
                    "table_size {size} is not prime (Maglev needs a prime table size); the \
                     next prime is {}",
                    next_prime(size).unwrap_or(MAX_TABLE_SIZE)
                ))
            } else {
                None
            };
            if let Some(message) = message {
                self.error(format!("{at}.table_size"), message);
            }
        }

        for (h, name) in pool.health_monitors.iter().enumerate() {
            if self.health_monitors.get(name).is_none() {
                let hint = self.hints.health_monitors.hint("health monitors");
                self.error(
                    format!("{at}.health_monitors[{h}]"),
                    format!("health monitor {name:?} does not exist ({hint})"),
                );
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Service engine groups
    // ------------------------------------------------------------------------------

    fn service_engine_groups(&mut self) {
        // Each engine and the first group (index, name) that has it, with its place there.
        let mut members: HashMap<&'a str, (&'a str, usize)> = HashMap::new();
        let config = self.config;
        for (i, group) in config.service_engine_groups.iter().enumerate() {
            let at = object_path("service_engine_groups", i, &group.name);
            self.service_engine_group(&at, group, &mut members);
        }
    }

    fn service_engine_group(
        &mut self,
        at: &str,
        group: &'a ServiceEngineGroup,
        members: &mut HashMap<&'a str, (&'a str, usize)>,
    ) {
        let mut in_group: HashMap<&str, usize> = HashMap::new();
        for (e, engine) in group.engines.iter().enumerate() {
            let eat = format!("{at}.engines[{e}]");
            let name = engine.name.as_str();
            if !is_valid_engine_name(name) {
                let shown: String = name.chars().take(40).collect();
                let more = if shown.len() < name.len() { "..." } else { "" };
                self.error(
                    format!("{eat}.name"),
                    format!("engine name {shown:?}{more} is not valid: use {ENGINE_NAME_RULE}"),
                );
            } else if let Some(first) = in_group.get(name) {
                self.error(
                    format!("{eat}.name"),
                    format!("engine {name:?} is already in this group (engines[{first}])"),
                );
            } else {
                in_group.insert(name, e);
                match members.get(name) {
                    Some(&(other, place)) => self.error(
                        format!("{eat}.name"),
                        format!(
                            "engine {name:?} is in service engine group {other:?} \
                             (engines[{place}]) and in {:?}; an engine is in at most one \
                             group: it carries that group's virtual services",
                            group.name
                        ),
                    ),
                    None => {
                        members.insert(name, (group.name.as_str(), e));
                    }
                }
            }
            self.engine_addresses(&eat, engine);
        }

        let Some(bgp) = &group.bgp else { return };
        let bat = format!("{at}.bgp");
        self.in_range(&bat, "local_as", bgp.local_as, openapi::AS_NUMBER, "");
        self.in_range(
            &bat,
            "hold_time",
            u32::from(bgp.hold_time),
            u32::from(*openapi::HOLD_TIME.start())..=u32::from(*openapi::HOLD_TIME.end()),
            " seconds",
        );
        self.in_range(
            &bat,
            "bfd_interval_ms",
            bgp.bfd_interval_ms,
            openapi::BFD_INTERVAL_MS,
            " milliseconds",
        );
        if bgp.peers.len() < openapi::MIN_BGP_PEERS {
            self.error(
                format!("{bat}.peers"),
                "at least one peer is required: the router the members announce the VIPs \
                 to, e.g. { ip: 192.168.33.1, remote_as: 65000 } (no announcement at all: \
                 remove bgp)",
            );
        }
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        // The first peer of each family, for the members' addresses.
        let mut families: Vec<(usize, IpAddr)> = Vec::new();
        for (p, peer) in bgp.peers.iter().enumerate() {
            let pat = format!("{bat}.peers[{p}]");
            let ip = peer.ip;
            if let Some(why) = unusable_address(ip) {
                self.error(
                    format!("{pat}.ip"),
                    format!("{ip} is {why}; a peer is a router's unicast address"),
                );
            } else if let Some(first) = seen.get(&ip) {
                self.error(
                    format!("{pat}.ip"),
                    format!("peer {ip} is already declared (peers[{first}])"),
                );
            } else {
                seen.insert(ip, p);
                if !families.iter().any(|(_, f)| f.is_ipv4() == ip.is_ipv4()) {
                    families.push((p, ip));
                }
            }
            self.in_range(&pat, "remote_as", peer.remote_as, openapi::AS_NUMBER, "");
        }
        // Every member peers with every peer, from its address of the peer's family.
        for (e, engine) in group.engines.iter().enumerate() {
            if engine.addresses.is_empty() {
                continue; // Refused above already.
            }
            for &(p, peer) in &families {
                if !engine
                    .addresses
                    .iter()
                    .any(|a| a.is_ipv4() == peer.is_ipv4())
                {
                    self.error(
                        format!("{at}.engines[{e}].addresses"),
                        format!(
                            "engine {:?} has no {} address, so it cannot peer with {peer} \
                             (bgp.peers[{p}]); give it one on its interface, or remove the \
                             group's {} peers",
                            engine.name,
                            family(peer),
                            family(peer)
                        ),
                    );
                }
            }
        }
    }

    /// Checks a group member's addresses: one or two, one per family, unicast.
    fn engine_addresses(&mut self, eat: &str, engine: &GroupEngine) {
        let n = engine.addresses.len();
        let (min, max) = openapi::ENGINE_ADDRESSES.into_inner();
        if n < min {
            self.error(
                format!("{eat}.addresses"),
                "an engine needs an address: the source of its BGP sessions and the \
                 routers' next hop (one IPv4, one IPv6, or one of each)",
            );
        } else if n > max {
            self.error(
                format!("{eat}.addresses"),
                format!(
                    "{n} addresses are too many: an engine has at most {max}, one IPv4 and \
                     one IPv6"
                ),
            );
        }
        for (a, &ip) in engine.addresses.iter().enumerate() {
            if let Some(why) = unusable_address(ip) {
                self.error(
                    format!("{eat}.addresses[{a}]"),
                    format!(
                        "{ip} is {why}; an engine's address is a unicast address of its interface"
                    ),
                );
                continue;
            }
            if n > max {
                continue;
            }
            let first = engine.addresses[..a]
                .iter()
                .position(|other| other.is_ipv4() == ip.is_ipv4());
            if let Some(first) = first {
                self.error(
                    format!("{eat}.addresses[{a}]"),
                    format!(
                        "a second {} address (addresses[{first}] is {}); an engine has at most \
                         one address per family",
                        family(ip),
                        engine.addresses[first]
                    ),
                );
            }
        }
    }

    // ------------------------------------------------------------------------------
    // Virtual services
    // ------------------------------------------------------------------------------

    fn virtual_services(&mut self) {
        // The valid services (index, range) and protocol of each virtual service checked so
        // far, by VIP: the checks between virtual services compare only those on one VIP.
        let mut checked: HashMap<IpAddr, Vec<(usize, IndexedRanges, Protocol)>> = HashMap::new();
        // The first virtual service on each VIP whose group exists (or that has none).
        let mut vip_groups: HashMap<IpAddr, &VirtualService> = HashMap::new();
        let config = self.config;
        for (i, vs) in config.virtual_services.iter().enumerate() {
            let at = object_path("virtual_services", i, &vs.name);
            let ranges = self.services(&at, vs);
            let protocol = self.profiles_of(&at, vs);
            self.pool_of(&at, vs, &ranges);
            if self.se_group_of(&at, vs) {
                self.same_group_on_vip(&at, vs, &mut vip_groups);
            }

            // Another virtual service on the same VIP and protocol must not serve any of
            // these ports: the data plane could not tell them apart. Reported on the later
            // declaration; disabled virtual services count too, so that enabling one never
            // turns a valid configuration into an invalid one.
            let Some(protocol) = protocol else { continue };
            let on_vip = checked.entry(vs.vip).or_default();
            for (j, other_ranges, other_protocol) in on_vip.iter() {
                if *other_protocol != protocol {
                    continue;
                }
                let other = &self.config.virtual_services[*j];
                for &(s, range) in &ranges {
                    let clash = other_ranges.iter().find(|(_, r)| overlaps(*r, range));
                    if let Some(&(os, orange)) = clash {
                        self.error(
                            format!("{at}.services[{s}]"),
                            format!(
                                "{} services[{os}] ({}) of virtual service {:?}, on the same \
                                 VIP {} and protocol {protocol}; a packet must belong to one \
                                 virtual service",
                                ports_overlap(range),
                                fmt_range(orange),
                                other.name,
                                vs.vip,
                            ),
                        );
                    }
                }
            }
            on_vip.push((i, ranges, protocol));
        }
    }

    /// Checks the group reference; returns whether the group exists (or there is none).
    fn se_group_of(&mut self, at: &str, vs: &VirtualService) -> bool {
        let Some(name) = &vs.se_group else {
            return true;
        };
        if self.service_engine_groups.get(name).is_some() {
            return true;
        }
        let hint = self
            .hints
            .service_engine_groups
            .hint("service engine groups");
        self.error(
            format!("{at}.se_group"),
            format!("service engine group {name:?} does not exist ({hint})"),
        );
        false
    }

    /// Checks that the virtual services of a VIP are in one group (or all in none): the
    /// routers send the whole VIP to one group's engines. Reported on the later
    /// declaration, disabled virtual services included (as for overlapping ports).
    fn same_group_on_vip(
        &mut self,
        at: &str,
        vs: &'a VirtualService,
        first: &mut HashMap<IpAddr, &'a VirtualService>,
    ) {
        let other = *first.entry(vs.vip).or_insert(vs);
        if other.se_group == vs.se_group {
            return;
        }
        let carried = |vs: &VirtualService| match &vs.se_group {
            Some(group) => format!("service engine group {group:?}"),
            None => "the engines of no group".to_owned(),
        };
        self.error(
            format!("{at}.se_group"),
            format!(
                "virtual service {:?}, on the same VIP {}, is carried by {}, and this one by \
                 {}; every virtual service of a VIP must be in the same group (or all in \
                 none): the routers send the whole VIP to one group's engines",
                other.name,
                vs.vip,
                carried(other),
                carried(vs)
            ),
        );
    }

    /// Checks the VIP and services; returns the valid services as (index, range).
    fn services(&mut self, at: &str, vs: &VirtualService) -> IndexedRanges {
        if let Some(why) = unusable_address(vs.vip) {
            self.error(
                format!("{at}.vip"),
                format!(
                    "{} is {why}; a VIP must be a unicast address clients can reach",
                    vs.vip
                ),
            );
        }
        if vs.services.is_empty() {
            self.error(
                format!("{at}.services"),
                "at least one service is required, e.g. { port: 80 } (all ports: \
                 { port: 1, port_range_end: 65535 })",
            );
        }
        let mut ranges = IndexedRanges::new();
        for (s, service) in vs.services.iter().enumerate() {
            let sat = format!("{at}.services[{s}]");
            let (lo, hi) = service.range();
            if lo == 0 {
                self.error(
                    format!("{sat}.port"),
                    "port 0 is not a valid port (1 to 65535; all ports is \
                     { port: 1, port_range_end: 65535 })",
                );
                continue;
            }
            if hi < lo {
                self.error(
                    format!("{sat}.port_range_end"),
                    format!("port_range_end {hi} is below port {lo}"),
                );
                continue;
            }
            if let Some(&(first, range)) = ranges.iter().find(|(_, r)| overlaps(*r, (lo, hi))) {
                self.error(
                    sat,
                    format!(
                        "{} services[{first}] ({}) of this virtual service",
                        ports_overlap((lo, hi)),
                        fmt_range(range)
                    ),
                );
                continue;
            }
            ranges.push((s, (lo, hi)));
        }
        ranges
    }

    /// Checks the profile references; returns the protocol if the network profile exists.
    fn profiles_of(&mut self, at: &str, vs: &VirtualService) -> Option<Protocol> {
        if !self
            .application_profiles
            .contains(&vs.application_profile.as_str())
        {
            let hint = self.hints.application_profiles.hint("application profiles");
            self.error(
                format!("{at}.application_profile"),
                format!(
                    "application profile {:?} does not exist ({hint})",
                    vs.application_profile
                ),
            );
        }

        let name = &vs.network_profile;
        let Some((_, profile)) = self.network_profiles.get(name) else {
            let hint = self.hints.network_profiles.hint("network profiles");
            self.error(
                format!("{at}.network_profile"),
                format!("network profile {name:?} does not exist ({hint})"),
            );
            return None;
        };
        let kind = profile.kind;
        if !kind.is_fast_path() {
            let wanted = match kind.protocol() {
                Protocol::Tcp => "tcp_fast_path",
                Protocol::Udp => "udp_fast_path",
            };
            self.error(
                format!("{at}.network_profile"),
                format!(
                    "network profile {name:?} is a {} profile, not a fast-path one; Ricochet \
                     only forwards packets, so use a {wanted} profile with DSR enabled",
                    kind.as_str()
                ),
            );
        } else if !profile.dsr_enabled() {
            let state = if profile.dsr.is_some() {
                "has dsr.enabled: false"
            } else {
                "has no dsr section"
            };
            self.error(
                format!("{at}.network_profile"),
                format!(
                    "DSR requires a network profile with DSR enabled, and network profile \
                     {name:?} {state}; set dsr: {{ enabled: true, type: l3, encapsulation: \
                     ipinip }}"
                ),
            );
        }
        Some(kind.protocol())
    }

    /// Checks the pool reference, the servers' family against the VIP's, and any server
    /// port against the services.
    fn pool_of(&mut self, at: &str, vs: &VirtualService, ranges: &[(usize, (u16, u16))]) {
        let name = &vs.pool;
        let Some((pool_index, pool)) = self.pools.get(name) else {
            let hint = self.hints.pools.hint("pools");
            self.error(
                format!("{at}.pool"),
                format!("pool {name:?} does not exist ({hint})"),
            );
            return;
        };
        let pool_at = object_path("pools", pool_index, &pool.name);

        for (s, server) in pool.servers.iter().enumerate() {
            if server.ip.is_ipv4() != vs.vip.is_ipv4() {
                self.error(
                    format!("{at}.pool"),
                    format!(
                        "pool {name:?} has {} server {} (servers[{s}]) but the VIP {} is {}; \
                         DSR encapsulates IPv4 in IPv4 and IPv6 in IPv6, so every server must \
                         be in the VIP's family",
                        family(server.ip),
                        server.ip,
                        vs.vip,
                        family(vs.vip)
                    ),
                );
            }

            // A server port is documentation only: DSR delivers to the VIP's port. Accept it
            // only where it is true, i.e. every virtual service using the pool serves that
            // single port.
            let Some(port) = server.port.filter(|&p| p != 0) else {
                continue;
            };
            if ranges.is_empty() {
                continue; // The services themselves are invalid and reported already.
            }
            let message = match ranges {
                [(_, (lo, hi))] if lo == hi && *lo == port => None,
                [(_, (lo, hi))] if lo == hi => Some(format!(
                    "port {port} differs from port {lo} of virtual service {:?}, which uses \
                     this pool; with DSR the server receives packets on the VIP's port, so \
                     omit port or set it to {lo}",
                    vs.name
                )),
                _ => {
                    let all: Vec<String> = ranges.iter().map(|(_, r)| fmt_range(*r)).collect();
                    Some(format!(
                        "port {port} cannot hold for virtual service {:?}, which uses this \
                         pool and serves ports {}; with DSR the server receives packets on \
                         the port the client used, so omit port",
                        vs.name,
                        all.join(", ")
                    ))
                }
            };
            if let Some(message) = message {
                self.error(format!("{pool_at}.servers[{s}].port"), message);
            }
        }
    }
}

/// Checks the names of one object kind (non-empty, unique) and indexes them.
fn index_names<'a, T>(
    errors: &mut Vec<ValidationError>,
    kind: &str,
    noun: &str,
    items: &'a [T],
    name_of: impl Fn(&'a T) -> &'a String,
) -> Names<'a, T> {
    let mut by_name: HashMap<&'a str, (usize, &'a T)> = HashMap::new();
    let mut ordered = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = name_of(item).as_str();
        if name.trim().is_empty() {
            errors.push(ValidationError {
                path: format!("{kind}[{i}].name"),
                message: format!("a {noun} needs a name"),
            });
            continue;
        }
        if !crate::is_valid_name(name) {
            // By index: the name itself may be huge or hold control characters.
            let shown: String = name.chars().take(40).collect();
            let more = if shown.len() < name.len() { "..." } else { "" };
            errors.push(ValidationError {
                path: format!("{kind}[{i}].name"),
                message: format!(
                    "{noun} name {shown:?}{more} is not valid: use {}",
                    crate::NAME_RULE
                ),
            });
            continue;
        }
        if let Some((first, _)) = by_name.get(name) {
            errors.push(ValidationError {
                path: format!("{kind}[{i}].name"),
                message: format!(
                    "{noun} {name:?} is already declared ({kind}[{first}]); names must be unique"
                ),
            });
            continue;
        }
        by_name.insert(name, (i, item));
        ordered.push(name);
    }
    Names { by_name, ordered }
}

/// What is wrong with an HTTP monitor's request (its lines: request line, then headers),
/// phrased to follow the quoted request.
fn http_request_problem(lines: &[String]) -> Option<String> {
    let Some((request_line, headers)) = lines.split_first() else {
        return Some("is not a request line such as \"GET /health HTTP/1.0\"".to_owned());
    };
    let words: Vec<&str> = request_line.split_whitespace().collect();
    let method_ok = words
        .first()
        .is_some_and(|w| w.bytes().all(|b| b.is_ascii_uppercase()));
    let target_ok = words.get(1).is_some_and(|w| w.starts_with('/'));
    if !(method_ok && target_ok) || words.len() > 3 {
        return Some("is not a request line such as \"GET /health HTTP/1.0\"".to_owned());
    }
    if let Some(version) = words.get(2) {
        if !matches!(*version, "HTTP/1.0" | "HTTP/1.1") {
            return Some(format!(
                "asks for {version}: the monitor speaks HTTP/1.0 or HTTP/1.1 (or omit the \
                 version for HTTP/1.0)"
            ));
        }
    }
    headers.iter().find_map(|header| {
        let name_ok = header.split_once(':').is_some_and(|(name, _)| {
            !name.is_empty()
                && !name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
        (!name_ok).then(|| format!("has a header line {header:?} that is not \"Name: value\""))
    })
}
