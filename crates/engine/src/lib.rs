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
//! The plan is incremental: the engine keeps the running pools and services and a record
//! of the `SERVICES` and `VIPS` entries it wrote, so an apply compares each desired pool
//! and service with the running one (a cheap equality check) and plans only those that
//! differ: their server slots, Maglev tables, entries and VIPs. Neither the tables of
//! unchanged pools nor the maps are read or rebuilt, so the cost of a one-service change
//! is that of the change plus one comparison per object. A *full* apply plans everything
//! and diffs against the maps read back; it is the first apply of a new or adopting
//! engine, the apply after a commit that failed midway, and the apply after
//! [`Engine::resync`].
//!
//! Step 3 also sets `ServiceFlags::CONSULT_FLOWS` on every entry that switches to
//! another table (or appears), in the same atomic update: established TCP packets of
//! the service then look their flow up, so flows recorded on the old table keep their
//! servers. [`Engine::scan_flows`] clears the flag once no live flow disagrees with the
//! current table (see [`flows`]); an identical rewrite keeps the flag as it is.
//!
//! On a restart over pinned maps, [`Engine::adopt`] rebuilds the bookkeeping from the
//! maps themselves, so the first apply reuses the same service ids, server slots and
//! (when unchanged) tables: established flows keep their servers.

pub mod flows;
mod regions;
pub mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use anyhow::Context as _;
use regions::{Region, RegionAllocator};
use ricochet_common::{
    vip_filter, ServerState as SlotState, ServerValue, ServiceFlags, ServiceKey, ServiceValue,
    Settings, SettingsFlags, VipFlags, VipKey, VipValue, PROTO_TCP, PROTO_UDP,
};
use ricochet_config::{
    Desired, DesiredPool, DesiredService, Encapsulation, HashMode, PortSpec, Protocol,
};
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
    #[error("virtual services {first:?} and {second:?} both take {entry}")]
    SharedEntry {
        entry: String,
        first: String,
        second: String,
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
        s.flags |= SettingsFlags::HAVE_V4;
    }
    if let Some(v6) = source_v6 {
        s.source_v6 = v6.octets();
        s.flags |= SettingsFlags::HAVE_V6;
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
    pub encapsulation: Encapsulation,
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

/// What identifies the server held by a slot, for matching adopted slots: pool tag,
/// address bytes, address family.
type SlotKey = (u32, [u8; 16], u8);

/// The entries of `SERVICES` and `VIPS` and the words of `VIP_FILTER` as the engine
/// last wrote them, so that an apply diffs against its own record instead of reading
/// the maps back.
#[derive(Clone, Debug, Default)]
struct Written {
    services: BTreeMap<ServiceKey, ServiceValue>,
    vips: BTreeMap<VipKey, VipValue>,
    vip_filter: Vec<u64>,
}

impl Written {
    fn read(dp: &impl Dataplane) -> anyhow::Result<Self> {
        let vip_filter = dp.vip_filter().context("reading VIP_FILTER")?;
        anyhow::ensure!(
            vip_filter.len() == vip_filter::WORDS as usize,
            "VIP_FILTER has {} words, this engine writes {}",
            vip_filter.len(),
            vip_filter::WORDS
        );
        Ok(Written {
            services: dp
                .services()
                .context("reading SERVICES")?
                .into_iter()
                .collect(),
            vips: dp.vips().context("reading VIPS")?.into_iter().collect(),
            vip_filter,
        })
    }
}

/// The VIP filter of `vips`: the bit of each set, nothing else.
fn filter_of<'a>(vips: impl IntoIterator<Item = &'a VipKey>) -> Vec<u64> {
    let mut words = vec![0; vip_filter::WORDS as usize];
    for k in vips {
        vip_filter::set(&mut words, &k.addr, k.family);
    }
    words
}

/// Writes the words of `VIP_FILTER` that differ from `want`, recording them in
/// `written`. Each word is one atomic array update.
fn write_filter(dp: &mut impl Dataplane, written: &mut [u64], want: &[u64]) -> anyhow::Result<()> {
    for (i, (have, want)) in written.iter_mut().zip(want).enumerate() {
        if have != want {
            dp.put_vip_filter_word(i as u32, *want)?;
            *have = *want;
        }
    }
    Ok(())
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
    /// What the maps hold. `None` when the engine cannot vouch for its bookkeeping (a new
    /// or adopting engine, or a commit that failed midway): the next apply then reads the
    /// maps and plans every pool and service again (a *full* apply). Otherwise an apply is
    /// *incremental*: it plans only the pools and services that differ from the running
    /// state, and diffs the entries they touch against this record.
    written: Option<Written>,
    revision: u64,
    /// Services whose entries carry `CONSULT_FLOWS`, by name.
    consult: BTreeMap<String, flows::Consult>,
    /// What the last scan of `FLOWS` counted.
    flow_count: Option<flows::FlowCount>,
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
    /// Pools whose servers and Maglev table were planned again (every pool in a full
    /// apply; in an incremental one, only those that differ from the running state).
    pub pools_planned: usize,
    /// Virtual services whose entries were planned again (as for pools).
    pub services_planned: usize,
}

impl ApplyReport {
    /// True when the apply wrote nothing (whatever it had to plan to find that out).
    pub fn is_noop(&self) -> bool {
        ApplyReport {
            pools_planned: 0,
            services_planned: 0,
            ..self.clone()
        } == ApplyReport::default()
    }
}

/// The planned state of one pool.
struct PoolPlan<'d> {
    name: &'d str,
    table_size: u32,
    servers: Vec<ServerState>,
    table: Vec<u32>,
    /// Reuse the current region (table unchanged) or write a new one.
    reuse: Option<Region>,
    /// The region its services point to once committed (set when regions are allocated).
    region: Option<Region>,
}

impl PoolPlan<'_> {
    /// The table goes to a fresh region.
    fn fresh(&self) -> bool {
        self.reuse.is_none() && self.table_size > 0
    }
}

/// The planned state of one virtual service.
struct ServicePlan<'d> {
    desired: &'d DesiredService,
    id: u32,
    keys: BTreeSet<ServiceKey>,
}

/// Everything a commit writes, computed without writing.
struct Plan<'d> {
    /// Pools that are new or changed (every pool in a full apply).
    pools: Vec<PoolPlan<'d>>,
    /// Running pools that the desired state lacks.
    removed_pools: Vec<String>,
    /// Server slots claimed fresh (they get a new generation).
    new_slots: BTreeSet<u32>,
    regions: RegionAllocator,
    /// Services that are new or changed, or whose pool's table moves.
    services: Vec<ServicePlan<'d>>,
    removed_services: Vec<String>,
    /// The entries of the planned services, with the name of the service owning each.
    service_entries: BTreeMap<ServiceKey, (ServiceValue, &'d str)>,
    /// Written entries that go unless `service_entries` holds them.
    stale_services: BTreeSet<ServiceKey>,
    /// The values of the VIPs the change touches.
    vip_entries: BTreeMap<VipKey, VipValue>,
    /// Written VIPs that go unless `vip_entries` holds them.
    stale_vips: BTreeSet<VipKey>,
    full: bool,
    /// Services some entry of which switches table (or appears): flagged CONSULT_FLOWS.
    table_changed: BTreeSet<&'d str>,
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

impl PoolState {
    /// The running pool is exactly `pool` (same table size, same servers in the same
    /// order with the same ratios and states): its table and slots stay as they are.
    fn holds(&self, pool: &DesiredPool) -> bool {
        self.table_size == pool.table_size
            && self.servers.len() == pool.servers.len()
            && self
                .servers
                .iter()
                .zip(&pool.servers)
                .all(|(a, b)| a.ip == b.ip && a.ratio == b.ratio && a.enabled == b.enabled)
    }
}

/// The flags a service's entries carry, but for `CONSULT_FLOWS` (the flow scan's).
fn service_flags(s: &DesiredService) -> ServiceFlags {
    let hash = if s.hash == HashMode::SourceIpAndPort {
        ServiceFlags::HASH_SRC_PORT
    } else {
        ServiceFlags::EMPTY
    };
    let encap = match s.encapsulation {
        Encapsulation::Ipinip => ServiceFlags::EMPTY,
        Encapsulation::Gre => ServiceFlags::ENCAP_GRE,
        Encapsulation::Gue { .. } => ServiceFlags::ENCAP_GUE,
        Encapsulation::L2 => ServiceFlags::L2_DSR,
    };
    hash | encap
}

impl ServiceState {
    /// The running service takes the same packets to the same pool as `s`.
    fn holds(&self, s: &DesiredService) -> bool {
        self.vip == s.vip
            && self.protocol == s.protocol
            && self.ports == s.ports
            && self.pool == s.pool
            && self.hash == s.hash
            && self.encapsulation == s.encapsulation
    }
}

/// Pairs each of `wanted` with the running entry of the same name (`None`: new), and
/// lists the running names that `wanted` lacks. `Desired` lists are sorted by name, so
/// this walks both in step (two string comparisons per object, no tree search); on a list
/// that turns out not to be strictly sorted it falls back to lookups.
fn pair<'r, T, V>(
    running: &'r BTreeMap<String, V>,
    wanted: &[T],
    name: impl Fn(&T) -> &str,
) -> (Vec<Option<&'r V>>, Vec<String>) {
    let mut paired = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    let mut run = running.iter().peekable();
    let mut previous: Option<&str> = None;
    let mut sorted = true;
    'walk: for w in wanted {
        let n = name(w);
        if previous.is_some_and(|p| p >= n) {
            sorted = false;
            break;
        }
        previous = Some(n);
        while let Some((k, v)) = run.peek() {
            match k.as_str().cmp(n) {
                std::cmp::Ordering::Less => missing.push((*k).clone()),
                std::cmp::Ordering::Equal => {
                    paired.push(Some(*v));
                    run.next();
                    continue 'walk;
                }
                std::cmp::Ordering::Greater => break,
            }
            run.next();
        }
        paired.push(None);
    }
    if sorted {
        missing.extend(run.map(|(k, _)| k.clone()));
    } else {
        let names: BTreeSet<&str> = wanted.iter().map(&name).collect();
        paired = wanted.iter().map(|w| running.get(name(w))).collect();
        missing = running
            .keys()
            .filter(|k| !names.contains(k.as_str()))
            .cloned()
            .collect();
    }
    (paired, missing)
}

/// How many entries a map holds after a change: `before` entries, less the `stale` ones
/// not kept in `after`, plus the `after` ones it did not have.
fn count_after<K: Ord, V, W>(
    before: &BTreeMap<K, V>,
    stale: &BTreeSet<K>,
    after: &BTreeMap<K, W>,
) -> usize {
    let dropped = stale
        .iter()
        .filter(|k| before.contains_key(k) && !after.contains_key(k))
        .count();
    let added = after.keys().filter(|k| !before.contains_key(k)).count();
    before.len() - dropped + added
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
            written: None,
            revision: 0,
            consult: BTreeMap::new(),
            flow_count: None,
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
                .filter(|s| s.value.state != SlotState::FREE)
                .count(),
            "adopted the pinned data plane state"
        );
        Ok(e)
    }

    pub fn dataplane(&self) -> &D {
        &self.dp
    }

    /// The data plane, for operations outside the engine's maps (attaching, test runs).
    /// Writing the maps the engine programs through it makes the engine's record of
    /// them stale: call [`Engine::resync`] afterwards.
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    /// Makes the next apply a full one: it reads the maps back and plans everything
    /// again instead of trusting the record of the last apply.
    pub fn resync(&mut self) {
        self.written = None;
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

    /// Writes `SETTINGS`. A new hash seed moves every flow's pick, so every service's
    /// flow table is consulted first.
    pub fn set_settings(&mut self, settings: &Settings) -> anyhow::Result<()> {
        let old = self.dp.settings().context("reading SETTINGS")?;
        if old.hash_seed != settings.hash_seed && !self.dp.services()?.is_empty() {
            self.consult_all(flows::ConsultReason::SeedChanged)?;
        }
        self.dp.set_settings(settings)
    }

    /// Finds the slot of (pool, ip): the one it holds now (`current`: the running pool's
    /// servers by address), or an unclaimed adopted one.
    fn find_slot(
        tag: u32,
        ip: IpAddr,
        current: &HashMap<IpAddr, u32>,
        unclaimed: &HashMap<SlotKey, u32>,
    ) -> Option<u32> {
        if let Some(&slot) = current.get(&ip) {
            return Some(slot);
        }
        if unclaimed.is_empty() {
            return None;
        }
        let (addr, family) = ricochet_common::addr_bytes(ip);
        unclaimed.get(&(tag, addr, family)).copied()
    }

    /// The running pool's servers by address.
    fn current_slots(&self, pool: &str) -> HashMap<IpAddr, u32> {
        self.pools
            .get(pool)
            .map(|p| p.servers.iter().map(|s| (s.ip, s.slot)).collect())
            .unwrap_or_default()
    }

    fn plan_pool<'d>(
        &self,
        pool: &'d DesiredPool,
        adopted_region: Option<Region>,
        unclaimed: &HashMap<SlotKey, u32>,
        new_slots: &mut BTreeSet<u32>,
        free: &mut impl Iterator<Item = u32>,
    ) -> Result<PoolPlan<'d>, PlanError> {
        let tag = pool_tag(&pool.name);
        let current = self.pools.get(&pool.name);
        let current_slots = self.current_slots(&pool.name);
        let mut servers = Vec::with_capacity(pool.servers.len());
        for s in &pool.servers {
            let slot = match Self::find_slot(tag, s.ip, &current_slots, unclaimed) {
                Some(slot) => slot,
                None => {
                    let slot = free.next().ok_or(PlanError::ServerSlots {
                        needed: 0,
                        free: 0,
                        capacity: self.slots.len() as u32,
                    })?;
                    new_slots.insert(slot);
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
            name: &pool.name,
            table_size,
            servers,
            table,
            reuse,
            region: None,
        })
    }

    /// Makes the data plane hold `desired`; see the crate docs for the guarantees.
    pub fn apply(&mut self, desired: &Desired) -> anyhow::Result<ApplyReport> {
        // Regions quarantined by the previous apply are safe to reuse now.
        for r in std::mem::take(&mut self.quarantine) {
            self.regions.free(r);
        }
        let full = self.written.is_none();
        if full {
            self.written = Some(Written::read(&self.dp)?);
        }
        let plan = match self.plan(desired, full) {
            Ok(plan) => plan,
            Err(e) => {
                if full {
                    // Nothing was written, but the bookkeeping is still to be reconciled
                    // with the maps (adopted slots and tables): the next apply is full too.
                    self.written = None;
                }
                return Err(e.into());
            }
        };
        let result = self.commit(plan);
        if result.is_err() {
            // Some writes may have happened: the next apply starts from the maps.
            self.written = None;
        }
        result
    }

    /// Computes every write of the change and checks every capacity; writes nothing.
    fn plan<'d>(&self, desired: &'d Desired, full: bool) -> Result<Plan<'d>, PlanError> {
        let caps = self.dp.capacities();
        let written = self.written.as_ref().expect("read before planning");

        // ---- Pools ----
        // Slots that hold an adopted server no configured pool has claimed yet (only a
        // full apply can meet them: every other slot is owned or free).
        let mut unclaimed: HashMap<SlotKey, u32> = HashMap::new();
        if full {
            for (i, s) in self.slots.iter().enumerate() {
                if !s.owned && s.value.state != SlotState::FREE {
                    unclaimed
                        .entry((s.value.pool_tag, s.value.addr, s.value.family))
                        .or_insert(i as u32);
                }
            }
        }
        let mut free_slots = (0..caps.servers).filter(|&i| {
            self.slots
                .get(i as usize)
                .is_none_or(|s| !s.owned && s.value.state == SlotState::FREE)
        });
        // Pinned tables of the pools, found through the services that use them.
        let mut adopted_regions: BTreeMap<&str, Region> = BTreeMap::new();
        if !self.adopted.is_empty() {
            for s in &desired.services {
                let region = service_keys(s.vip, s.protocol, &s.ports)
                    .iter()
                    .find_map(|k| self.adopted.get(k).and_then(|a| a.region));
                if let Some(r) = region {
                    adopted_regions.entry(s.pool.as_str()).or_insert(r);
                }
            }
        }
        let mut new_slots = BTreeSet::new();
        let mut pools = Vec::new();
        let (current_pools, removed_pools) = pair(&self.pools, &desired.pools, |p| &p.name);
        for (pool, current) in desired.pools.iter().zip(current_pools) {
            if !full && current.is_some_and(|c| c.holds(pool)) {
                continue;
            }
            let adopted_region = adopted_regions.get(pool.name.as_str()).copied();
            match self.plan_pool(
                pool,
                adopted_region,
                &unclaimed,
                &mut new_slots,
                &mut free_slots,
            ) {
                Ok(p) => pools.push(p),
                Err(PlanError::ServerSlots { capacity, .. }) => {
                    let needed = desired
                        .pools
                        .iter()
                        .map(|p| {
                            let (tag, current) = (pool_tag(&p.name), self.current_slots(&p.name));
                            p.servers
                                .iter()
                                .filter(|s| {
                                    Self::find_slot(tag, s.ip, &current, &unclaimed).is_none()
                                })
                                .count()
                        })
                        .sum();
                    let free = self
                        .slots
                        .iter()
                        .filter(|s| !s.owned && s.value.state == SlotState::FREE)
                        .count();
                    return Err(PlanError::ServerSlots {
                        needed,
                        free,
                        capacity,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        // Two pools naming the same (adopted) slot cannot happen: slots are matched by
        // pool tag, and fresh slots come from one iterator.

        // Regions for changed tables, allocated tentatively on a copy.
        let mut regions = self.regions.clone();
        for p in &mut pools {
            p.region = if p.fresh() {
                Some(
                    regions
                        .alloc(p.table_size)
                        .ok_or_else(|| PlanError::MaglevSpace {
                            pool: p.name.to_owned(),
                            size: p.table_size,
                            free: regions.free_slots(),
                            capacity: caps.maglev_slots,
                        })?,
                )
            } else {
                p.reuse
            };
        }
        let planned_region: BTreeMap<&str, Option<Region>> =
            pools.iter().map(|p| (p.name, p.region)).collect();
        // Pools whose services must point elsewhere.
        let moved: BTreeSet<&str> = pools
            .iter()
            .filter(|p| self.pools.get(p.name).map(|c| c.region) != Some(p.region))
            .map(|p| p.name)
            .collect();
        let region_of = |pool: &str| -> Option<Region> {
            match planned_region.get(pool) {
                Some(r) => *r,
                None => self.pools.get(pool).and_then(|p| p.region),
            }
        };

        // ---- Services: ids, keys and values ----
        let mut used_ids = vec![false; caps.services as usize];
        let mut candidates = Vec::new();
        let (current_services, removed_services) =
            pair(&self.services, &desired.services, |s| &s.name);
        for (s, current) in desired.services.iter().zip(current_services) {
            if let Some(c) =
                current.filter(|c| !full && c.holds(s) && !moved.contains(s.pool.as_str()))
            {
                if let Some(u) = used_ids.get_mut(c.id as usize) {
                    *u = true;
                }
                continue;
            }
            let keys = service_keys(s.vip, s.protocol, &s.ports);
            let id = current
                .map(|c| c.id)
                .or_else(|| keys.iter().find_map(|k| self.adopted.get(k).map(|a| a.id)));
            candidates.push((s, keys, id));
        }
        let mut kept_ids = Vec::with_capacity(candidates.len());
        for (_, _, id) in &candidates {
            let keep = id.filter(|&id| used_ids.get(id as usize).is_some_and(|u| !*u));
            if let Some(id) = keep {
                used_ids[id as usize] = true;
            }
            kept_ids.push(keep);
        }
        let mut next_id = (0..caps.services).filter(|&i| !used_ids[i as usize]);
        let mut services = Vec::with_capacity(candidates.len());
        let mut service_entries: BTreeMap<ServiceKey, (ServiceValue, &str)> = BTreeMap::new();
        let mut table_changed = BTreeSet::new();
        for ((s, keys, _), id) in candidates.into_iter().zip(kept_ids) {
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
                flags: service_flags(s),
                gue_port: match s.encapsulation {
                    Encapsulation::Gue { port } => port.to_be_bytes(),
                    Encapsulation::Ipinip | Encapsulation::Gre | Encapsulation::L2 => [0, 0],
                },
            };
            for k in &keys {
                // The flag comes with a changed table (or a new entry) and stays on an
                // identical rewrite until a scan clears it.
                let mut value = value;
                let hash = |v: &ServiceValue| v.flags.contains(ServiceFlags::HASH_SRC_PORT);
                match written.services.get(k) {
                    Some(w)
                        if (w.table_offset, w.table_size, hash(w))
                            == (value.table_offset, value.table_size, hash(&value)) =>
                    {
                        if w.flags.contains(ServiceFlags::CONSULT_FLOWS) {
                            value.flags |= ServiceFlags::CONSULT_FLOWS;
                        }
                    }
                    _ => {
                        value.flags |= ServiceFlags::CONSULT_FLOWS;
                        table_changed.insert(s.name.as_str());
                    }
                }
                if let Some((_, other)) = service_entries.insert(*k, (value, &s.name)) {
                    return Err(PlanError::SharedEntry {
                        entry: entry_text(k),
                        first: other.to_owned(),
                        second: s.name.clone(),
                    });
                }
            }
            services.push(ServicePlan {
                desired: s,
                id,
                keys,
            });
        }
        let stale_services: BTreeSet<ServiceKey> = if full {
            written.services.keys().copied().collect()
        } else {
            removed_services
                .iter()
                .chain(services.iter().map(|p| &p.desired.name))
                .filter_map(|name| self.services.get(name))
                .flat_map(|c| c.keys.iter().copied())
                .collect()
        };
        if !full {
            // An entry written for a service that is not planned again stays: a planned
            // service cannot take it too.
            if let Some((k, (_, second))) = service_entries
                .iter()
                .find(|(k, _)| written.services.contains_key(k) && !stale_services.contains(k))
            {
                let first = self
                    .services
                    .values()
                    .find(|c| c.keys.contains(k))
                    .map_or_else(|| "(unknown)".to_owned(), |c| c.name.clone());
                return Err(PlanError::SharedEntry {
                    entry: entry_text(k),
                    first,
                    second: (*second).to_owned(),
                });
            }
        }
        let needed = count_after(&written.services, &stale_services, &service_entries);
        if needed > caps.service_ports as usize {
            return Err(PlanError::ServicePorts {
                needed,
                capacity: caps.service_ports,
            });
        }

        // ---- VIPs: those of the services that come, go or change ----
        let touched: BTreeSet<IpAddr> = removed_services
            .iter()
            .chain(services.iter().map(|p| &p.desired.name))
            .filter_map(|name| self.services.get(name).map(|c| c.vip))
            .chain(services.iter().map(|p| p.desired.vip))
            .collect();
        let mut vip_entries: BTreeMap<VipKey, VipValue> = BTreeMap::new();
        if full || !touched.is_empty() {
            for s in desired
                .services
                .iter()
                .filter(|s| full || touched.contains(&s.vip))
            {
                let vip = vip_entries.entry(VipKey::new(s.vip)).or_default();
                if s.ports == PortSpec::All {
                    vip.flags |= if s.protocol == Protocol::Tcp {
                        VipFlags::TCP_ALL_PORTS
                    } else {
                        VipFlags::UDP_ALL_PORTS
                    };
                }
            }
        }
        let stale_vips: BTreeSet<VipKey> = if full {
            written.vips.keys().copied().collect()
        } else {
            touched.iter().map(|ip| VipKey::new(*ip)).collect()
        };
        let needed = count_after(&written.vips, &stale_vips, &vip_entries);
        if needed > caps.vips as usize {
            return Err(PlanError::Vips {
                needed,
                capacity: caps.vips,
            });
        }

        Ok(Plan {
            pools,
            removed_pools,
            new_slots,
            regions,
            services,
            removed_services,
            service_entries,
            stale_services,
            vip_entries,
            stale_vips,
            full,
            table_changed,
        })
    }

    /// Writes a plan in the order described in the crate docs.
    fn commit(&mut self, plan: Plan<'_>) -> anyhow::Result<ApplyReport> {
        let mut report = ApplyReport {
            pools_planned: plan.pools.len(),
            services_planned: plan.services.len(),
            ..ApplyReport::default()
        };
        let written = self.written.as_mut().expect("read before planning");

        // 1. Server slots joining a table (or re-enabled) become ACTIVE; every planned
        //    server slot is owned from now on.
        for p in &plan.pools {
            let tag = pool_tag(p.name);
            for s in &p.servers {
                let (addr, family) = ricochet_common::addr_bytes(s.ip);
                let slot = &mut self.slots[s.slot as usize];
                let want_state = if s.enabled {
                    SlotState::ACTIVE
                } else {
                    SlotState::DRAINING
                };
                if plan.new_slots.contains(&s.slot) {
                    // A fresh generation first, so that no torn read pairs the old
                    // generation with the new address.
                    let mut v = slot.value;
                    v.generation = v.generation.wrapping_add(1);
                    v.state = SlotState::FREE;
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
                } else if s.enabled && slot.value.state != SlotState::ACTIVE {
                    slot.value.state = SlotState::ACTIVE;
                    slot.value.pool_tag = tag;
                    self.dp.put_server(s.slot, &slot.value)?;
                    report.servers_activated += 1;
                }
                slot.owned = true;
            }
        }

        // 2. New tables into fresh regions.
        for p in plan.pools.iter().filter(|p| p.fresh()) {
            let r = p.region.expect("a fresh table has a region");
            self.dp
                .write_table(r.offset, &p.table)
                .with_context(|| format!("writing the Maglev table of pool {:?}", p.name))?;
            report.tables_written += 1;
        }
        self.regions = plan.regions;

        // 3. Services switch (atomic per entry), then VIPs appear.
        for (k, (v, _)) in &plan.service_entries {
            if written.services.get(k) != Some(v) {
                self.dp.put_service(k, v)?;
                written.services.insert(*k, *v);
                report.service_entries_written += 1;
            }
        }
        for (k, v) in &plan.vip_entries {
            if written.vips.get(k) != Some(v) {
                self.dp.put_vip(k, v)?;
                written.vips.insert(*k, *v);
            }
        }
        //    The filter lets the new VIPs' traffic in last; bits only get set here (the
        //    VIPs about to go keep theirs), so no VIP is ever missing from it.
        let mut grown = written.vip_filter.clone();
        for (g, w) in grown.iter_mut().zip(filter_of(written.vips.keys())) {
            *g |= w;
        }
        write_filter(&mut self.dp, &mut written.vip_filter, &grown)?;

        // 4. Stale entries go: the filter bits and VIPs first, so their traffic passes
        //    to the kernel rather than hitting half-removed services (a bit another VIP
        //    shares stays set: that VIP's packets then find the entries of the going
        //    one still whole, or no service, until they go).
        let going = |k: &VipKey| !plan.vip_entries.contains_key(k) && plan.stale_vips.contains(k);
        let kept = filter_of(written.vips.keys().filter(|k| !going(k)));
        write_filter(&mut self.dp, &mut written.vip_filter, &kept)?;
        for k in &plan.stale_vips {
            if !plan.vip_entries.contains_key(k) && written.vips.contains_key(k) {
                self.dp.remove_vip(k)?;
                written.vips.remove(k);
            }
        }
        for k in &plan.stale_services {
            if !plan.service_entries.contains_key(k) && written.services.contains_key(k) {
                self.dp.remove_service(k)?;
                written.services.remove(k);
                report.service_entries_removed += 1;
            }
        }

        // 5. Servers out of their tables: drain the disabled, free the removed.
        for p in &plan.pools {
            for s in p.servers.iter().filter(|s| !s.enabled) {
                let slot = &mut self.slots[s.slot as usize];
                if slot.value.state == SlotState::ACTIVE {
                    slot.value.state = SlotState::DRAINING;
                    self.dp.put_server(s.slot, &slot.value)?;
                    report.servers_drained += 1;
                }
            }
        }
        let planned: BTreeSet<u32> = plan
            .pools
            .iter()
            .flat_map(|p| p.servers.iter().map(|s| s.slot))
            .collect();
        // The slots that may leave: in a full apply any slot (adopted ones, or some of a
        // commit that failed); otherwise those of the replanned and removed pools.
        let leaving: Vec<u32> = if plan.full {
            (0..self.slots.len() as u32).collect()
        } else {
            plan.pools
                .iter()
                .map(|p| p.name)
                .chain(plan.removed_pools.iter().map(String::as_str))
                .filter_map(|name| self.pools.get(name))
                .flat_map(|p| p.servers.iter().map(|s| s.slot))
                .collect()
        };
        for i in leaving.into_iter().filter(|i| !planned.contains(i)) {
            let slot = &mut self.slots[i as usize];
            if slot.owned || slot.value.state != SlotState::FREE {
                slot.owned = false;
                if slot.value.state != SlotState::FREE {
                    slot.value.state = SlotState::FREE;
                    self.dp.put_server(i, &slot.value)?;
                    report.servers_freed += 1;
                }
            }
        }

        // 6. Replaced regions wait one apply before reuse.
        let live: BTreeSet<Region> = plan.pools.iter().filter_map(|p| p.region).collect();
        let mut retired: BTreeSet<Region> = plan
            .pools
            .iter()
            .map(|p| p.name)
            .chain(plan.removed_pools.iter().map(String::as_str))
            .filter_map(|name| self.pools.get(name).and_then(|p| p.region))
            .collect();
        retired.extend(self.adopted.values().filter_map(|a| a.region));
        self.quarantine
            .extend(retired.into_iter().filter(|r| !live.contains(r)));
        self.adopted.clear();

        for name in &plan.removed_pools {
            self.pools.remove(name);
        }
        for p in plan.pools {
            self.pools.insert(
                p.name.to_owned(),
                PoolState {
                    name: p.name.to_owned(),
                    table_size: p.table_size,
                    servers: p.servers,
                    region: p.region,
                    table: p.table,
                },
            );
        }
        for name in &plan.removed_services {
            self.services.remove(name);
            self.consult.remove(name);
        }
        for p in plan.services {
            let s = p.desired;
            let consulted = p.keys.iter().any(|k| {
                written
                    .services
                    .get(k)
                    .is_some_and(|v| v.flags.contains(ServiceFlags::CONSULT_FLOWS))
            });
            let reason = if plan.table_changed.contains(s.name.as_str()) {
                Some(flows::ConsultReason::TableChanged)
            } else if consulted && !self.consult.contains_key(&s.name) {
                Some(flows::ConsultReason::Adopted)
            } else {
                None
            };
            if !consulted {
                self.consult.remove(&s.name);
            } else if let Some(reason) = reason {
                // Several changes in a row: the grace and the scans start again.
                info!(service = %s.name, reason = reason.text(), "flow table consulted");
                self.consult
                    .insert(s.name.clone(), flows::Consult::new(reason));
            }
            self.services.insert(
                s.name.clone(),
                ServiceState {
                    name: s.name.clone(),
                    id: p.id,
                    vip: s.vip,
                    protocol: s.protocol,
                    ports: s.ports.clone(),
                    pool: s.pool.clone(),
                    hash: s.hash,
                    encapsulation: s.encapsulation,
                    keys: p.keys,
                },
            );
        }
        self.revision += 1;
        debug!(?report, revision = self.revision, "applied");
        Ok(report)
    }
}

/// A service entry for messages: `VIP protocol port N` (port 0: every port).
fn entry_text(k: &ServiceKey) -> String {
    let ip = k.ip().map_or_else(|| "?".to_owned(), |ip| ip.to_string());
    let proto = match k.proto {
        PROTO_TCP => "tcp".to_owned(),
        PROTO_UDP => "udp".to_owned(),
        p => format!("protocol {p}"),
    };
    match k.port() {
        0 => format!("{ip} {proto} (every port)"),
        port => format!("{ip} {proto} port {port}"),
    }
}

#[cfg(test)]
mod tests;
