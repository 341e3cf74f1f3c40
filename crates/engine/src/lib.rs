//! The engine: makes the data plane hold a [`Desired`] state.
//!
//! [`Engine::apply`] works in two phases. The *plan* computes everything the change
//! needs (server slots, Maglev tables and their regions in the shared array, service
//! ids, map entries) and checks every capacity; a plan that does not fit is refused
//! before a single map is written, so a refused change leaves the running
//! configuration untouched. The *commit* then writes in an order that never shows the
//! data plane a half-built state:
//!
//! 1. server slots that join a table become `ACTIVE` (a reused slot first gets a new
//!    generation, so the old server's flows re-hash instead of following the slot);
//! 2. changed Maglev tables are written to fresh regions, leaving the live ones alone;
//! 3. service entries switch to their new table in one atomic hash-map update each, and
//!    new VIPs appear only once their services exist;
//! 4. stale services and VIPs are removed;
//! 5. servers that left a table become `DRAINING` (disabled: established flows stay) or
//!    free (removed: their flows move);
//! 6. the replaced regions are quarantined until the next apply, so no packet still
//!    reading one can see it rewritten.
//!
//! On a restart over pinned maps, [`Engine::adopt`] rebuilds the bookkeeping from the
//! maps themselves, so the first apply reuses the same service ids, server slots and
//! (when unchanged) tables: established flows keep their servers.

mod regions;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::Context as _;
use regions::{Region, RegionAllocator};
use ricochet_common::{
    ServerValue, ServiceKey, ServiceValue, Settings, VipKey, VipValue, PROTO_TCP, PROTO_UDP,
    SERVER_ACTIVE, SERVER_DRAINING, SERVER_FREE, SERVICE_HASH_SRC_PORT, VIP_TCP_ALL_PORTS,
    VIP_UDP_ALL_PORTS,
};
use ricochet_config::{Desired, DesiredPool, HashMode, PortSpec, Protocol};
use ricochet_dataplane::Dataplane;
use tracing::{debug, info};

/// A change the data plane cannot hold; nothing was written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("not enough server slots: the change needs {needed} new ones, {free} are free (the data plane holds {capacity}; load it with a larger --max-servers)")]
    ServerSlots {
        needed: usize,
        free: usize,
        capacity: u32,
    },
    #[error("not enough service ids: {needed} virtual services, the data plane holds {capacity} (--max-services)")]
    ServiceIds { needed: usize, capacity: u32 },
    #[error("too many (VIP, protocol, port) entries: {needed}, the data plane holds {capacity} (--max-service-ports); port ranges take one entry per port")]
    ServicePorts { needed: usize, capacity: u32 },
    #[error("too many VIPs: {needed}, the data plane holds {capacity}")]
    Vips { needed: usize, capacity: u32 },
    #[error("the Maglev array has no room for the new table of pool {pool:?} ({size} slots; {free} free of {capacity}): raise --maglev-slots or use smaller table_size")]
    MaglevSpace {
        pool: String,
        size: u32,
        free: u64,
        capacity: u32,
    },
    #[error("pool {pool:?}: {source}")]
    Maglev {
        pool: String,
        #[source]
        source: ricochet_maglev::MaglevError,
    },
}

/// Stable tag of a pool name (FNV-1a), stored in its server slots for adoption.
pub fn pool_tag(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The engine's source addresses and hash seed (entry 0 of `SETTINGS`).
pub fn settings(
    source_v4: Option<std::net::Ipv4Addr>,
    source_v6: Option<std::net::Ipv6Addr>,
    hash_seed: u32,
) -> Settings {
    let mut s = Settings {
        hash_seed,
        ..Settings::default()
    };
    if let Some(v4) = source_v4 {
        s.source_v4 = v4.octets();
        s.flags |= ricochet_common::SETTINGS_HAVE_V4;
    }
    if let Some(v6) = source_v6 {
        s.source_v6 = v6.octets();
        s.flags |= ricochet_common::SETTINGS_HAVE_V6;
    }
    s
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceState {
    pub name: String,
    pub id: u32,
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub ports: PortSpec,
    pub pool: String,
    pub hash: HashMode,
    #[serde(skip)]
    keys: BTreeSet<ServiceKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServerState {
    pub ip: IpAddr,
    pub ratio: u32,
    pub enabled: bool,
    /// Slot in `SERVERS` (index of the per-server counters).
    pub slot: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PoolState {
    pub name: String,
    pub table_size: u32,
    pub servers: Vec<ServerState>,
    /// Region of the live table; `None` when no server is enabled.
    #[serde(skip)]
    region: Option<Region>,
    /// The live table's content (server slots), to skip rewriting an unchanged table.
    #[serde(skip)]
    table: Vec<u32>,
}

/// What the engine tracks about one slot of `SERVERS`.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    value: ServerValue,
    /// Claimed by a pool in the current state (as opposed to free or merely adopted).
    owned: bool,
}

/// What an adopted (pinned) service entry told us.
#[derive(Clone, Debug)]
struct Adopted {
    id: u32,
    region: Option<Region>,
}

pub struct Engine<D: Dataplane> {
    dp: D,
    services: BTreeMap<String, ServiceState>,
    pools: BTreeMap<String, PoolState>,
    slots: Vec<Slot>,
    regions: RegionAllocator,
    quarantine: Vec<Region>,
    /// Pinned service entries not yet matched to a configured service.
    adopted: BTreeMap<ServiceKey, Adopted>,
    revision: u64,
}

/// Summary of one apply, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub tables_written: usize,
    pub service_entries_written: usize,
    pub service_entries_removed: usize,
    pub servers_activated: usize,
    pub servers_drained: usize,
    pub servers_freed: usize,
}

impl ApplyReport {
    pub fn is_noop(&self) -> bool {
        *self == ApplyReport::default()
    }
}

/// The planned state of one pool.
struct PoolPlan {
    name: String,
    table_size: u32,
    servers: Vec<ServerState>,
    table: Vec<u32>,
    /// Reuse the current region (table unchanged) or write a new one.
    reuse: Option<Region>,
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

fn service_keys(vip: IpAddr, protocol: Protocol, ports: &PortSpec) -> BTreeSet<ServiceKey> {
    let proto = proto_number(protocol);
    match ports {
        PortSpec::All => [ServiceKey::new(vip, proto, 0)].into(),
        PortSpec::Ranges(r) => r
            .iter()
            .flat_map(|&(lo, hi)| (lo..=hi).map(move |p| ServiceKey::new(vip, proto, p)))
            .collect(),
    }
}

/// The Maglev key of a server: its address bytes (the encapsulation target).
fn maglev_key(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl<D: Dataplane> Engine<D> {
    /// An engine over an empty data plane.
    pub fn new(dp: D) -> Self {
        let caps = dp.capacities();
        Engine {
            slots: vec![Slot::default(); caps.servers as usize],
            regions: RegionAllocator::new(caps.maglev_slots),
            dp,
            services: BTreeMap::new(),
            pools: BTreeMap::new(),
            quarantine: Vec::new(),
            adopted: BTreeMap::new(),
            revision: 0,
        }
    }

    /// An engine over a data plane that already holds state (pinned maps after a
    /// restart): slots, generations and table regions are read back from the maps.
    pub fn adopt(dp: D) -> anyhow::Result<Self> {
        let mut e = Engine::new(dp);
        for (i, v) in
            e.dp.servers()
                .context("reading SERVERS")?
                .into_iter()
                .enumerate()
        {
            if let Some(slot) = e.slots.get_mut(i) {
                slot.value = v;
            }
        }
        for (key, value) in e.dp.services().context("reading SERVICES")? {
            let region = (value.table_size > 0).then_some(Region {
                offset: value.table_offset,
                len: value.table_size,
            });
            if let Some(r) = region {
                // Services sharing a pool share its region: reserve it once.
                let _ = e.regions.reserve(r);
            }
            e.adopted.insert(
                key,
                Adopted {
                    id: value.service_id,
                    region,
                },
            );
        }
        info!(
            service_entries = e.adopted.len(),
            servers = e
                .slots
                .iter()
                .filter(|s| s.value.state != SERVER_FREE)
                .count(),
            "adopted the pinned data plane state"
        );
        Ok(e)
    }

    pub fn dataplane(&self) -> &D {
        &self.dp
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceState> {
        self.services.values()
    }

    pub fn pools(&self) -> impl Iterator<Item = &PoolState> {
        self.pools.values()
    }

    /// Number of successful applies.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn set_settings(&mut self, settings: &Settings) -> anyhow::Result<()> {
        self.dp.set_settings(settings)
    }

    /// Finds the slot of (pool, ip): the one it holds now, or an adopted one.
    fn find_slot(&self, tag: u32, ip: IpAddr, current: Option<&PoolState>) -> Option<u32> {
        if let Some(s) = current.and_then(|p| p.servers.iter().find(|s| s.ip == ip)) {
            return Some(s.slot);
        }
        let (addr, family) = ricochet_common::addr_bytes(ip);
        self.slots
            .iter()
            .position(|s| {
                !s.owned
                    && s.value.state != SERVER_FREE
                    && s.value.pool_tag == tag
                    && s.value.addr == addr
                    && s.value.family == family
            })
            .map(|i| i as u32)
    }

    fn plan_pool(
        &self,
        pool: &DesiredPool,
        adopted_region: Option<Region>,
        new_slots: &mut Vec<u32>,
        free: &mut impl Iterator<Item = u32>,
    ) -> Result<PoolPlan, PlanError> {
        let tag = pool_tag(&pool.name);
        let current = self.pools.get(&pool.name);
        let mut servers = Vec::with_capacity(pool.servers.len());
        for s in &pool.servers {
            let slot = match self.find_slot(tag, s.ip, current) {
                Some(slot) => slot,
                None => {
                    let slot = free.next().ok_or(PlanError::ServerSlots {
                        needed: 0,
                        free: 0,
                        capacity: self.slots.len() as u32,
                    })?;
                    new_slots.push(slot);
                    slot
                }
            };
            servers.push(ServerState {
                ip: s.ip,
                ratio: s.ratio,
                enabled: s.enabled,
                slot,
            });
        }
        let enabled: Vec<&ServerState> = servers.iter().filter(|s| s.enabled).collect();
        let (table, table_size) = if enabled.is_empty() {
            (Vec::new(), 0)
        } else {
            let keys: Vec<Vec<u8>> = enabled.iter().map(|s| maglev_key(&s.ip)).collect();
            let backends: Vec<ricochet_maglev::Backend> = enabled
                .iter()
                .zip(&keys)
                .map(|(s, k)| ricochet_maglev::Backend {
                    key: k,
                    weight: s.ratio,
                })
                .collect();
            let idx = ricochet_maglev::build(&backends, pool.table_size).map_err(|source| {
                PlanError::Maglev {
                    pool: pool.name.clone(),
                    source,
                }
            })?;
            (
                idx.into_iter().map(|i| enabled[i as usize].slot).collect(),
                pool.table_size,
            )
        };
        let reuse = match current {
            Some(c) => c.region.filter(|_| c.table == table),
            // After a restart: keep the pinned table if it is exactly the one computed.
            None => adopted_region.filter(|r| {
                r.len == table_size
                    && self
                        .dp
                        .read_table(r.offset, r.len)
                        .is_ok_and(|live| live == table)
            }),
        };
        Ok(PoolPlan {
            name: pool.name.clone(),
            table_size,
            servers,
            table,
            reuse,
        })
    }

    /// Makes the data plane hold `desired`; see the crate docs for the guarantees.
    pub fn apply(&mut self, desired: &Desired) -> anyhow::Result<ApplyReport> {
        let caps = self.dp.capacities();
        // Regions quarantined by the previous apply are safe to reuse now.
        for r in std::mem::take(&mut self.quarantine) {
            self.regions.free(r);
        }

        // ---- Plan (no writes) ----
        let mut free_slots = {
            let reserved: BTreeSet<u32> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.owned || s.value.state != SERVER_FREE)
                .map(|(i, _)| i as u32)
                .collect();
            (0..caps.servers).filter(move |i| !reserved.contains(i))
        };
        // Pinned tables of the pools, found through the services that use them.
        let mut adopted_regions: BTreeMap<&str, Region> = BTreeMap::new();
        for s in &desired.services {
            let region = service_keys(s.vip, s.protocol, &s.ports)
                .iter()
                .find_map(|k| self.adopted.get(k).and_then(|a| a.region));
            if let Some(r) = region {
                adopted_regions.entry(s.pool.as_str()).or_insert(r);
            }
        }
        let mut new_slots = Vec::new();
        let mut plans = Vec::new();
        for pool in &desired.pools {
            let adopted_region = adopted_regions.get(pool.name.as_str()).copied();
            match self.plan_pool(pool, adopted_region, &mut new_slots, &mut free_slots) {
                Ok(p) => plans.push(p),
                Err(PlanError::ServerSlots { capacity, .. }) => {
                    let needed = desired
                        .pools
                        .iter()
                        .flat_map(|p| p.servers.iter().map(move |s| (p, s.ip)))
                        .filter(|(p, ip)| {
                            self.find_slot(pool_tag(&p.name), *ip, self.pools.get(&p.name))
                                .is_none()
                        })
                        .count();
                    let free = self
                        .slots
                        .iter()
                        .filter(|s| !s.owned && s.value.state == SERVER_FREE)
                        .count();
                    return Err(PlanError::ServerSlots {
                        needed,
                        free,
                        capacity,
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Two pools naming the same (adopted) slot cannot happen: slots are matched by
        // pool tag, and fresh slots come from one iterator.

        // Regions for changed tables, allocated tentatively on a copy.
        let mut regions = self.regions.clone();
        let mut new_regions: BTreeMap<String, Region> = BTreeMap::new();
        for p in plans
            .iter()
            .filter(|p| p.reuse.is_none() && p.table_size > 0)
        {
            let r = regions
                .alloc(p.table_size)
                .ok_or_else(|| PlanError::MaglevSpace {
                    pool: p.name.clone(),
                    size: p.table_size,
                    free: regions.free_slots(),
                    capacity: caps.maglev_slots,
                })?;
            new_regions.insert(p.name.clone(), r);
        }
        let region_of = |name: &str| -> Option<Region> {
            let p = plans.iter().find(|p| p.name == name)?;
            p.reuse.or_else(|| new_regions.get(name).copied())
        };

        // Services: ids, keys and values.
        let mut used_ids: BTreeSet<u32> = BTreeSet::new();
        let mut service_plans = Vec::new();
        let mut all_keys: BTreeMap<ServiceKey, ServiceValue> = BTreeMap::new();
        let mut vips: BTreeMap<VipKey, VipValue> = BTreeMap::new();
        for s in &desired.services {
            let keys = service_keys(s.vip, s.protocol, &s.ports);
            let id = self
                .services
                .get(&s.name)
                .map(|c| c.id)
                .or_else(|| keys.iter().find_map(|k| self.adopted.get(k).map(|a| a.id)))
                .filter(|id| !used_ids.contains(id));
            service_plans.push((s, keys, id));
            if let Some(id) = id {
                used_ids.insert(id);
            }
        }
        let mut next_id = (0..caps.services).filter(|i| !used_ids.contains(i));
        let mut services = BTreeMap::new();
        for (s, keys, id) in service_plans {
            let id = match id {
                Some(id) => id,
                None => next_id.next().ok_or(PlanError::ServiceIds {
                    needed: desired.services.len(),
                    capacity: caps.services,
                })?,
            };
            let region = region_of(&s.pool);
            let value = ServiceValue {
                service_id: id,
                table_offset: region.map_or(0, |r| r.offset),
                table_size: region.map_or(0, |r| r.len),
                flags: if s.hash == HashMode::SourceIpAndPort {
                    SERVICE_HASH_SRC_PORT
                } else {
                    0
                },
            };
            for k in &keys {
                all_keys.insert(*k, value);
            }
            let vip = vips.entry(VipKey::new(s.vip)).or_default();
            if s.ports == PortSpec::All {
                vip.flags |= if s.protocol == Protocol::Tcp {
                    VIP_TCP_ALL_PORTS
                } else {
                    VIP_UDP_ALL_PORTS
                };
            }
            services.insert(
                s.name.clone(),
                ServiceState {
                    name: s.name.clone(),
                    id,
                    vip: s.vip,
                    protocol: s.protocol,
                    ports: s.ports.clone(),
                    pool: s.pool.clone(),
                    hash: s.hash,
                    keys,
                },
            );
        }
        if all_keys.len() > caps.service_ports as usize {
            return Err(PlanError::ServicePorts {
                needed: all_keys.len(),
                capacity: caps.service_ports,
            }
            .into());
        }
        if vips.len() > caps.vips as usize {
            return Err(PlanError::Vips {
                needed: vips.len(),
                capacity: caps.vips,
            }
            .into());
        }

        // ---- Commit ----
        let mut report = ApplyReport::default();
        let old_keys: BTreeMap<ServiceKey, ServiceValue> = self
            .dp
            .services()
            .context("reading SERVICES")?
            .into_iter()
            .collect();
        let old_vips: BTreeMap<VipKey, VipValue> = self
            .dp
            .vips()
            .context("reading VIPS")?
            .into_iter()
            .collect();

        // 1. Server slots joining a table (or re-enabled) become ACTIVE; every planned
        //    server slot is owned from now on.
        let new_slot_set: BTreeSet<u32> = new_slots.iter().copied().collect();
        for p in &plans {
            let tag = pool_tag(&p.name);
            for s in &p.servers {
                let (addr, family) = ricochet_common::addr_bytes(s.ip);
                let slot = &mut self.slots[s.slot as usize];
                let want_state = if s.enabled {
                    SERVER_ACTIVE
                } else {
                    SERVER_DRAINING
                };
                if new_slot_set.contains(&s.slot) {
                    // A fresh generation first, so that no torn read pairs the old
                    // generation with the new address.
                    let mut v = slot.value;
                    v.generation = v.generation.wrapping_add(1);
                    v.state = SERVER_FREE;
                    self.dp.put_server(s.slot, &v)?;
                    v = ServerValue {
                        addr,
                        family,
                        state: want_state,
                        pool_tag: tag,
                        ..v
                    };
                    self.dp.put_server(s.slot, &v)?;
                    slot.value = v;
                    report.servers_activated += usize::from(s.enabled);
                } else if s.enabled && slot.value.state != SERVER_ACTIVE {
                    slot.value.state = SERVER_ACTIVE;
                    slot.value.pool_tag = tag;
                    self.dp.put_server(s.slot, &slot.value)?;
                    report.servers_activated += 1;
                }
                slot.owned = true;
            }
        }

        // 2. New tables into fresh regions.
        for p in &plans {
            if let Some(r) = new_regions.get(&p.name) {
                self.dp
                    .write_table(r.offset, &p.table)
                    .with_context(|| format!("writing the Maglev table of pool {:?}", p.name))?;
                report.tables_written += 1;
            }
        }
        self.regions = regions;

        // 3. Services switch (atomic per entry), then VIPs appear.
        for (k, v) in &all_keys {
            if old_keys.get(k) != Some(v) {
                self.dp.put_service(k, v)?;
                report.service_entries_written += 1;
            }
        }
        for (k, v) in &vips {
            if old_vips.get(k) != Some(v) {
                self.dp.put_vip(k, v)?;
            }
        }

        // 4. Stale entries go: VIPs first, so their traffic passes to the kernel
        //    rather than hitting half-removed services.
        for k in old_vips.keys().filter(|k| !vips.contains_key(k)) {
            self.dp.remove_vip(k)?;
        }
        for k in old_keys.keys().filter(|k| !all_keys.contains_key(k)) {
            self.dp.remove_service(k)?;
            report.service_entries_removed += 1;
        }

        // 5. Servers out of their tables: drain the disabled, free the removed.
        let planned: BTreeSet<u32> = plans
            .iter()
            .flat_map(|p| p.servers.iter().map(|s| s.slot))
            .collect();
        for p in &plans {
            for s in p.servers.iter().filter(|s| !s.enabled) {
                let slot = &mut self.slots[s.slot as usize];
                if slot.value.state == SERVER_ACTIVE {
                    slot.value.state = SERVER_DRAINING;
                    self.dp.put_server(s.slot, &slot.value)?;
                    report.servers_drained += 1;
                }
            }
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !planned.contains(&(i as u32)) && (slot.owned || slot.value.state != SERVER_FREE) {
                slot.owned = false;
                if slot.value.state != SERVER_FREE {
                    slot.value.state = SERVER_FREE;
                    self.dp.put_server(i as u32, &slot.value)?;
                    report.servers_freed += 1;
                }
            }
        }

        // 6. Replaced regions wait one apply before reuse.
        let live: BTreeSet<Region> = plans
            .iter()
            .filter_map(|p| p.reuse.or_else(|| new_regions.get(&p.name).copied()))
            .collect();
        let mut retired: BTreeSet<Region> = self.pools.values().filter_map(|p| p.region).collect();
        retired.extend(self.adopted.values().filter_map(|a| a.region));
        self.quarantine
            .extend(retired.into_iter().filter(|r| !live.contains(r)));
        self.adopted.clear();

        self.pools = plans
            .into_iter()
            .map(|p| {
                let region = p.reuse.or_else(|| new_regions.get(&p.name).copied());
                (
                    p.name.clone(),
                    PoolState {
                        name: p.name,
                        table_size: p.table_size,
                        servers: p.servers,
                        region,
                        table: p.table,
                    },
                )
            })
            .collect();
        self.services = services;
        self.revision += 1;
        debug!(?report, revision = self.revision, "applied");
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
