//! Compilation: a validated [`Config`] flattened into the state the engine programs.
//!
//! The result has no names to resolve and no defaults left to apply: every service
//! carries its protocol, merged port ranges, hash mode and idle timeout, and every pool
//! its table size and servers. Everything is in a deterministic order, so that compiling
//! the same configuration twice gives equal values and the engine's diffs stay minimal.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    Config, ConsistentHash, DsrEncapsulation, DsrProfile, DsrType, NetworkProfile, Pool, Protocol,
};
use crate::validate::{validate, ValidationErrors};

/// The desired data-plane state: what the engine makes the data plane hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Enabled virtual services, sorted by name.
    pub services: Vec<DesiredService>,
    /// Pools used by at least one enabled virtual service, sorted by name.
    pub pools: Vec<DesiredPool>,
}

impl Desired {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&DesiredService> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&DesiredPool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// One enabled virtual service: which packets it takes and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredService {
    /// The virtual service's name.
    pub name: String,
    /// The VIP.
    pub vip: IpAddr,
    /// From the network profile's type.
    pub protocol: Protocol,
    /// Destination ports taken.
    pub ports: PortSpec,
    /// Name of a pool in [`Desired::pools`].
    pub pool: String,
    /// The pool's consistent-hash key, copied here because the data plane keys the
    /// Maglev lookup per service.
    pub hash: HashMode,
    /// The network profile's session idle timeout (default applied).
    pub idle_timeout_secs: u32,
    /// The network profile's DSR encapsulation (absent in records written before GRE and
    /// GUE existed: IP-in-IP).
    #[serde(default)]
    pub encapsulation: Encapsulation,
}

/// How a service's packets travel to its servers, outer family the VIP's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encapsulation {
    /// IPv4-in-IPv4 or IPv6-in-IPv6.
    #[default]
    Ipinip,
    /// GRE with a 4-byte header.
    Gre,
    /// GUE variant 1: UDP, then the inner packet.
    Gue {
        /// The UDP destination port.
        port: u16,
    },
    /// L2 DSR: no encapsulation, the frame to the server's MAC address (the server on a
    /// segment of the engine).
    L2,
}

impl Encapsulation {
    /// The encapsulation of a profile's DSR settings.
    fn of(dsr: &DsrProfile) -> Self {
        if dsr.kind == DsrType::L2 {
            return Self::L2;
        }
        match dsr.encapsulation {
            DsrEncapsulation::Ipinip => Self::Ipinip,
            DsrEncapsulation::Gre => Self::Gre,
            DsrEncapsulation::Gue => Self::Gue {
                port: dsr.effective_gue_port(),
            },
        }
    }

    /// Bytes it adds in front of the client's packet: the outer IP header of `vip`'s
    /// family and the tunnel header.
    pub fn overhead(self, vip: IpAddr) -> u16 {
        let ip = if vip.is_ipv4() { 20 } else { 40 };
        match self {
            Self::L2 => 0,
            Self::Ipinip => ip,
            Self::Gre => ip + 4,
            Self::Gue { .. } => ip + 8,
        }
    }
}

impl std::fmt::Display for Encapsulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ipinip => f.write_str("ipinip"),
            Self::Gre => f.write_str("gre"),
            Self::Gue { port } => write!(f, "gue (udp port {port})"),
            Self::L2 => f.write_str("l2 (server's mac)"),
        }
    }
}

/// Destination ports of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSpec {
    /// Every port (1..=65535): the data plane's per-VIP wildcard.
    All,
    /// Inclusive ranges, sorted, neither overlapping nor adjacent (merged), and never
    /// the whole 1..=65535 (that is [`PortSpec::All`]).
    Ranges(Vec<(u16, u16)>),
}

impl PortSpec {
    /// Normalises inclusive ranges: sorts and merges overlapping or adjacent ones, and
    /// turns 1..=65535 into [`PortSpec::All`]. Ranges with `lo > hi` are ignored; port 0
    /// is not a port and is dropped.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let mut ranges: Vec<(u16, u16)> = ranges
            .into_iter()
            .map(|(lo, hi)| (lo.max(1), hi))
            .filter(|(lo, hi)| lo <= hi)
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        if merged == [(1, u16::MAX)] {
            Self::All
        } else {
            Self::Ranges(merged)
        }
    }

    /// Whether `port` is taken.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::All => port != 0,
            Self::Ranges(ranges) => ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)),
        }
    }

    /// How many ports are taken.
    pub fn port_count(&self) -> u32 {
        match self {
            Self::All => u32::from(u16::MAX),
            Self::Ranges(ranges) => ranges
                .iter()
                .map(|&(lo, hi)| u32::from(hi) - u32::from(lo) + 1)
                .sum(),
        }
    }
}

/// What the consistent hash of a service is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashMode {
    /// The client's IP: a client sticks to one server.
    SourceIp,
    /// The client's IP and port: a client's connections spread over servers.
    SourceIpAndPort,
}

impl From<ConsistentHash> for HashMode {
    fn from(hash: ConsistentHash) -> Self {
        match hash {
            ConsistentHash::SourceIp => Self::SourceIp,
            ConsistentHash::SourceIpAndPort => Self::SourceIpAndPort,
        }
    }
}

/// One pool, ready for a Maglev table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPool {
    /// The pool's name.
    pub name: String,
    /// Maglev table size (prime, at least 100 × servers; default applied).
    pub table_size: u32,
    /// Servers sorted by IP, so that reordering them in the file changes nothing.
    /// Disabled servers are kept (with `enabled: false`) so that the engine can drain them.
    pub servers: Vec<DesiredServer>,
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredServer {
    /// Encapsulation destination.
    pub ip: IpAddr,
    /// Weight, 1..=20.
    pub ratio: u32,
    /// Whether the server takes new flows.
    pub enabled: bool,
}

/// Compiles `config`; see [`Config::compile`].
pub(crate) fn compile(config: &Config) -> Result<Desired, ValidationErrors> {
    validate(config, None)?;

    // After validation every name is unique and every reference resolves.
    let profiles: HashMap<&str, &NetworkProfile> = config
        .network_profiles
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    let pools: HashMap<&str, &Pool> = config.pools.iter().map(|p| (p.name.as_str(), p)).collect();

    let mut used_pools = BTreeSet::new();
    let mut services = Vec::new();
    for vs in config.virtual_services.iter().filter(|vs| vs.enabled) {
        let profile = profiles[vs.network_profile.as_str()];
        let pool = pools[vs.pool.as_str()];
        used_pools.insert(pool.name.as_str());
        services.push(DesiredService {
            name: vs.name.clone(),
            vip: vs.vip,
            protocol: profile.kind.protocol(),
            ports: PortSpec::from_ranges(vs.services.iter().map(|s| s.range())),
            pool: pool.name.clone(),
            hash: pool.consistent_hash.into(),
            idle_timeout_secs: profile.effective_idle_timeout(),
            // Validation admits only profiles with DSR enabled.
            encapsulation: profile
                .dsr
                .as_ref()
                .map_or_else(Default::default, Encapsulation::of),
        });
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));

    let pools = used_pools
        .into_iter()
        .map(|name| {
            let pool = pools[name];
            let mut servers: Vec<DesiredServer> = pool
                .servers
                .iter()
                .map(|s| DesiredServer {
                    ip: s.ip,
                    ratio: s.ratio,
                    enabled: s.enabled,
                })
                .collect();
            servers.sort_by_key(|s| s.ip);
            DesiredPool {
                name: pool.name.clone(),
                table_size: pool.effective_table_size(),
                servers,
            }
        })
        .collect();

    Ok(Desired { services, pools })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_merge_sorted_and_adjacent() {
        assert_eq!(
            PortSpec::from_ranges([(443, 443), (80, 80), (81, 90), (85, 100)]),
            PortSpec::Ranges(vec![(80, 100), (443, 443)])
        );
        assert_eq!(
            PortSpec::from_ranges([(1, 1000), (1001, 65535)]),
            PortSpec::All
        );
        assert_eq!(PortSpec::from_ranges([(1, 65535)]), PortSpec::All);
        assert_eq!(
            PortSpec::from_ranges([(2, 65535)]),
            PortSpec::Ranges(vec![(2, 65535)])
        );
        assert_eq!(
            PortSpec::from_ranges([(65535, 65535), (65534, 65535)]),
            PortSpec::Ranges(vec![(65534, 65535)])
        );
    }

    #[test]
    fn ports_contains_and_count() {
        let ports = PortSpec::Ranges(vec![(80, 80), (8000, 8009)]);
        assert!(ports.contains(80) && ports.contains(8009));
        assert!(!ports.contains(81) && !ports.contains(0));
        assert_eq!(ports.port_count(), 11);
        assert!(PortSpec::All.contains(65535) && !PortSpec::All.contains(0));
        assert_eq!(PortSpec::All.port_count(), 65535);
    }
}
