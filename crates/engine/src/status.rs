//! A snapshot of what the engine runs and what the data plane counted, for the status
//! command and the engine's state file.

use std::net::IpAddr;

use ricochet_common::{Counters, ServerState as SlotState};
use ricochet_config::{Encapsulation, HashMode, PortSpec, Protocol};
use ricochet_dataplane::Dataplane;
use serde::{Deserialize, Serialize};

use crate::{flows::FlowTableStatus, service_keys, Engine};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl From<Counters> for Count {
    fn from(c: Counters) -> Self {
        Count {
            packets: c.packets,
            bytes: c.bytes,
            new_flows: c.new_flows,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub id: u32,
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub ports: PortSpec,
    pub pool: String,
    pub hash: HashMode,
    /// How its packets travel to the servers.
    #[serde(default)]
    pub encapsulation: Encapsulation,
    #[serde(default)]
    pub counters: Count,
    /// Whether established TCP packets look their flow up (the live flag of its entries)
    /// and why.
    #[serde(default)]
    pub flow_table: FlowTableStatus,
    /// Its live flows in the flow table at the last count (`Status::flows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_flows: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub ip: IpAddr,
    pub ratio: u32,
    pub enabled: bool,
    pub slot: u32,
    /// "active" (takes new flows), "draining" (keeps established flows), or "free".
    pub state: String,
    #[serde(default)]
    pub counters: Count,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub table_size: u32,
    pub servers: Vec<ServerStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub revision: u64,
    pub services: Vec<ServiceStatus>,
    pub pools: Vec<PoolStatus>,
    /// Packets per verdict reason, summed over CPUs.
    #[serde(default)]
    pub reasons: Vec<(String, u64)>,
    /// The flow table at its last count (none before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<FlowTableCount>,
}

/// The flow table as the engine's last scan counted it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableCount {
    /// When (Unix seconds).
    pub counted_unix: u64,
    /// Entries held: live flows and idle ones the LRU has not evicted yet.
    pub entries: u64,
    /// Entries seen within the idle timeout.
    pub live: u64,
    /// How long the count took.
    pub scan_ms: u64,
}

fn state_name(s: SlotState) -> &'static str {
    match s {
        SlotState::ACTIVE => "active",
        SlotState::DRAINING => "draining",
        _ => "free",
    }
}

impl Status {
    /// Refreshes every counter from `dp` (the structure stays as recorded).
    pub fn refresh_counters(&mut self, dp: &impl Dataplane) -> anyhow::Result<()> {
        let servers = dp.servers()?;
        let entries: std::collections::HashMap<_, _> = dp.services()?.into_iter().collect();
        for s in &mut self.services {
            s.counters = dp.service_counters(s.id)?.into();
            // The live flag: the record may predate a scan's clearing.
            let live = service_keys(s.vip, s.protocol, &s.ports).iter().any(|k| {
                entries.get(k).is_some_and(|v| {
                    v.flags
                        .contains(ricochet_common::ServiceFlags::CONSULT_FLOWS)
                })
            });
            if live != s.flow_table.consulted {
                s.flow_table = FlowTableStatus {
                    consulted: live,
                    ..FlowTableStatus::default()
                };
            }
        }
        for p in &mut self.pools {
            for s in &mut p.servers {
                s.counters = dp.server_counters(s.slot)?.into();
                if let Some(v) = servers.get(s.slot as usize) {
                    s.state = state_name(v.state).to_owned();
                }
            }
        }
        self.reasons = dp
            .reason_counters()?
            .into_iter()
            .map(|(r, n)| (r.name().to_owned(), n))
            .collect();
        Ok(())
    }
}

impl<D: Dataplane> Engine<D> {
    /// The structure the engine runs, with live counters.
    pub fn status(&self) -> anyhow::Result<Status> {
        let mut st = Status {
            revision: self.revision,
            services: self
                .services
                .values()
                .map(|s| ServiceStatus {
                    name: s.name.clone(),
                    id: s.id,
                    vip: s.vip,
                    protocol: s.protocol,
                    ports: s.ports.clone(),
                    pool: s.pool.clone(),
                    hash: s.hash,
                    encapsulation: s.encapsulation,
                    counters: Count::default(),
                    flow_table: self.flow_table_status(&s.name),
                    live_flows: self
                        .flow_count()
                        .map(|c| c.live_per_service.get(&s.name).copied().unwrap_or(0)),
                })
                .collect(),
            pools: self
                .pools
                .values()
                .map(|p| PoolStatus {
                    name: p.name.clone(),
                    table_size: p.table_size,
                    servers: p
                        .servers
                        .iter()
                        .map(|s| ServerStatus {
                            ip: s.ip,
                            ratio: s.ratio,
                            enabled: s.enabled,
                            slot: s.slot,
                            state: String::new(),
                            counters: Count::default(),
                        })
                        .collect(),
                })
                .collect(),
            reasons: Vec::new(),
            flows: self.flow_count().map(|c| FlowTableCount {
                counted_unix: c.counted_unix,
                entries: c.entries,
                live: c.live,
                scan_ms: c.scan_ms,
            }),
        };
        st.refresh_counters(&self.dp)?;
        Ok(st)
    }
}
