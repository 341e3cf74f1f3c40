//! When the data plane consults the flow table (`ServiceFlags::CONSULT_FLOWS`), and the
//! scan that stops it.
//!
//! A recorded flow matters only when its server differs from what the service's current
//! Maglev table picks, which can only happen after the table changed. So the engine sets
//! the flag on a service's entries in the very update that switches them to a changed
//! table (an identical rewrite keeps the flag as it is), and clears it only once a scan
//! of `FLOWS` finds no live flow of the service that the current table would send
//! elsewhere: from then on its established packets take the Maglev pick without the
//! flow lookup. The scan computes the pick as the program does
//! (`ricochet_common::hash::client_hash` onto the table the engine wrote).
//!
//! A flow counts as live while its `seen` stamp is younger than the idle timeout: the
//! table is an LRU whose entries outlive their connections, and the program stamps an
//! entry whenever it looks the flow up (every packet while the flag is set).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use ricochet_common::{
    flow_clock, hash::client_hash, FlowKey, FlowValue, ServerState as SlotState, ServiceFlags,
    ServiceKey, ServiceValue,
};
use ricochet_dataplane::Dataplane;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::Engine;

/// Stamp units (`FlowValue::seen`) a flag stays set at least: a packet that read the
/// service's old entry may still record a flow of the old table for a moment after the
/// switch, so a scan must start after such packets are done.
pub const GRACE_UNITS: u32 = 2;

/// Now on the clock of the program's `seen` stamps (`CLOCK_MONOTONIC_COARSE`).
pub fn flow_clock_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    flow_clock(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Seconds as stamp units, rounded up.
pub fn secs_to_units(secs: u64) -> u32 {
    let ns = secs.saturating_mul(1_000_000_000);
    u32::try_from(ns.div_ceil(1 << ricochet_common::FLOW_CLOCK_SHIFT)).unwrap_or(u32::MAX)
}

/// Why a service's flow table is consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsultReason {
    /// Its Maglev table changed (or it is new: flows of an earlier service of the same
    /// VIP and port may be recorded).
    TableChanged,
    /// The hash seed changed: every pick did.
    SeedChanged,
    /// The pinned entry had the flag when this engine adopted it.
    Adopted,
}

impl ConsultReason {
    pub fn text(self) -> &'static str {
        match self {
            ConsultReason::TableChanged => "its Maglev table changed",
            ConsultReason::SeedChanged => "the hash seed changed",
            ConsultReason::Adopted => "the flag was set in the pinned maps",
        }
    }
}

/// A service whose flow table is consulted.
#[derive(Clone, Debug)]
pub(crate) struct Consult {
    pub since: SystemTime,
    /// `since` on the stamp clock.
    pub since_clock: u32,
    pub reason: ConsultReason,
    /// The last scan's time and its count of live flows that disagree.
    pub last_scan: Option<(SystemTime, u64)>,
}

impl Consult {
    pub fn new(reason: ConsultReason) -> Self {
        Consult {
            since: SystemTime::now(),
            since_clock: flow_clock_now(),
            reason,
            last_scan: None,
        }
    }
}

/// What one scan found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Entries read from `FLOWS`.
    pub entries: u64,
    /// Per consulted service: live flows whose recorded server the current table would
    /// not pick.
    pub disagreeing: BTreeMap<String, u64>,
    /// Services whose flag the scan cleared.
    pub cleared: Vec<String>,
}

/// What the last scan counted in `FLOWS`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCount {
    /// When (Unix seconds).
    pub counted_unix: u64,
    /// Entries the table holds: live flows and the idle ones the LRU has not yet evicted.
    pub entries: u64,
    /// Entries stamped within the idle timeout.
    pub live: u64,
    /// How long the scan took.
    pub scan_ms: u64,
    /// Live entries per virtual service.
    pub live_per_service: BTreeMap<String, u64>,
}

/// The outcome of one flow for the scan: which service it belongs to and whether the
/// program, with the flag clear, would send it elsewhere than its entry does.
fn disagrees(
    f: &FlowValue,
    k: &FlowKey,
    svc: &ServiceValue,
    table: &[u32],
    slots: &[crate::Slot],
    seed: u32,
) -> bool {
    // An entry whose slot no longer holds its server is re-hashed with the flag set too.
    let usable = slots
        .get(f.server_id as usize)
        .is_some_and(|s| s.value.generation == f.generation && s.value.state != SlotState::FREE);
    if !usable {
        return false;
    }
    let pick = (svc.table_size > 0 && table.len() == svc.table_size as usize).then(|| {
        let with_port = svc.flags.contains(ServiceFlags::HASH_SRC_PORT);
        table[(client_hash(&k.src, k.sport, with_port, seed) % svc.table_size) as usize]
    });
    pick != Some(f.server_id)
}

impl<D: Dataplane> Engine<D> {
    /// Whether some service's flow table is consulted (a scan has work to do).
    pub fn consulting(&self) -> bool {
        !self.consult.is_empty()
    }

    /// Scans `FLOWS` now (see [`Engine::scan_flows_at`]).
    pub fn scan_flows(&mut self, idle_timeout_secs: u64) -> anyhow::Result<ScanReport> {
        self.scan_flows_at(flow_clock_now(), secs_to_units(idle_timeout_secs))
    }

    /// The last scan's count of the flow table, if one ran.
    pub fn flow_count(&self) -> Option<&FlowCount> {
        self.flow_count.as_ref()
    }

    /// Reads every entry of `FLOWS`: counts them, the live ones (stamped within
    /// `idle_units` of `now`) and the live ones of each service (the [`FlowCount`] that
    /// status and metrics show); and, per service whose flow table is consulted, counts
    /// the live flows whose recorded server the current Maglev table would not pick,
    /// clearing the flag of each service that has none if it was set at least
    /// [`GRACE_UNITS`] before `now`. Clears nothing while the engine cannot vouch for its
    /// record of the entries (after a failed commit: the next apply re-reads them).
    pub fn scan_flows_at(&mut self, now: u32, idle_units: u32) -> anyhow::Result<ScanReport> {
        let started = std::time::Instant::now();
        let mut report = ScanReport::default();
        let clearing = !self.consult.is_empty() && self.written.is_some();
        let seed = if clearing {
            self.dp.settings()?.hash_seed
        } else {
            0
        };
        // Every service by its keys; for a consulted one, its entry as written and table.
        let names: Vec<String> = self.services.keys().cloned().collect();
        let mut by_key: HashMap<ServiceKey, usize> = HashMap::new();
        let mut consulted: Vec<Option<(ServiceValue, &[u32])>> = vec![None; names.len()];
        for (i, (name, s)) in self.services.iter().enumerate() {
            let table = self
                .pools
                .get(&s.pool)
                .map_or(&[][..], |p| p.table.as_slice());
            for k in &s.keys {
                by_key.insert(*k, i);
                if !clearing || !self.consult.contains_key(name) {
                    continue;
                }
                let written = self.written.as_ref().expect("checked by `clearing`");
                if let Some(v) = written.services.get(k) {
                    // A service's keys share one entry value (flags, table).
                    consulted[i] = Some((*v, table));
                }
            }
        }
        let mut live_per_service = vec![0u64; names.len()];
        let mut disagreeing = vec![0u64; names.len()];
        let mut live = 0u64;
        let slots = &self.slots;
        report.entries = self.dp.scan_flows(&mut |k, f| {
            // Signed age: a stamp ahead of `now` (another CPU's clock tick) is live.
            if now.wrapping_sub(f.seen) as i32 > idle_units as i32 {
                return;
            }
            live += 1;
            let exact = ServiceKey::from_raw(k.dst, k.dport, k.proto, k.family);
            let every = ServiceKey::from_raw(k.dst, [0, 0], k.proto, k.family);
            let Some(&i) = by_key.get(&exact).or_else(|| by_key.get(&every)) else {
                return;
            };
            live_per_service[i] += 1;
            if let Some((svc, table)) = &consulted[i] {
                if disagrees(f, k, svc, table, slots, seed) {
                    disagreeing[i] += 1;
                }
            }
        })?;
        let scanned = SystemTime::now();
        self.flow_count = Some(FlowCount {
            counted_unix: unix(scanned),
            entries: report.entries,
            live,
            scan_ms: started.elapsed().as_millis() as u64,
            live_per_service: names.iter().cloned().zip(live_per_service).collect(),
        });
        if !clearing {
            return Ok(report);
        }
        let mut clear = Vec::new();
        for (name, n) in names.iter().zip(&disagreeing) {
            let Some(c) = self.consult.get_mut(name) else {
                continue;
            };
            report.disagreeing.insert(name.clone(), *n);
            c.last_scan = Some((scanned, *n));
            if *n == 0 && now.wrapping_sub(c.since_clock) as i32 >= GRACE_UNITS as i32 {
                clear.push(name.clone());
            }
        }
        for name in clear {
            self.stop_consulting(&name)?;
            info!(
                service = %name,
                flows_scanned = report.entries,
                "flow table no longer consulted: no live flow disagrees with the Maglev table"
            );
            report.cleared.push(name);
        }
        Ok(report)
    }

    /// Rewrites the service's entries without the flag.
    fn stop_consulting(&mut self, name: &str) -> anyhow::Result<()> {
        let keys: Vec<ServiceKey> = self
            .services
            .get(name)
            .map(|s| s.keys.iter().copied().collect())
            .unwrap_or_default();
        let written = self.written.as_mut().expect("checked by the scan");
        for k in keys {
            if let Some(v) = written.services.get(&k).copied() {
                if v.flags.contains(ServiceFlags::CONSULT_FLOWS) {
                    let mut cleared = v;
                    cleared.flags.remove(ServiceFlags::CONSULT_FLOWS);
                    if let Err(e) = self.dp.put_service(&k, &cleared) {
                        // Some entries may be cleared, others not: re-read them.
                        self.written = None;
                        return Err(e.context(format!("clearing the flow-table flag of {name}")));
                    }
                    written.services.insert(k, cleared);
                }
            }
        }
        self.consult.remove(name);
        Ok(())
    }

    /// Sets the flag on every written entry (the hash seed is about to change).
    pub(crate) fn consult_all(&mut self, reason: ConsultReason) -> anyhow::Result<()> {
        let entries = self.dp.services()?;
        for (k, v) in entries {
            if !v.flags.contains(ServiceFlags::CONSULT_FLOWS) {
                let mut set = v;
                set.flags |= ServiceFlags::CONSULT_FLOWS;
                self.dp.put_service(&k, &set)?;
            }
        }
        // The record is re-read by the next apply.
        self.written = None;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            info!(service = %name, reason = reason.text(), "flow table consulted");
            self.consult.insert(name, Consult::new(reason));
        }
        Ok(())
    }

    /// What the program records for a new flow `k` now: its Maglev pick (server slot and
    /// generation, stamped now), or `None` if no service takes it or its table is empty.
    /// For benchmarks and tests that fill the flow table as traffic would.
    pub fn flow_picker(&self) -> anyhow::Result<impl Fn(&FlowKey) -> Option<FlowValue> + '_> {
        let seed = self.dp.settings()?.hash_seed;
        let entries: HashMap<ServiceKey, (ServiceValue, &[u32])> = self
            .services
            .values()
            .flat_map(|s| {
                let table = self
                    .pools
                    .get(&s.pool)
                    .map_or(&[][..], |p| p.table.as_slice());
                let written = self.written.as_ref();
                s.keys.iter().filter_map(move |k| {
                    written
                        .and_then(|w| w.services.get(k))
                        .map(|v| (*k, (*v, table)))
                })
            })
            .collect();
        let now = flow_clock_now();
        Ok(move |k: &FlowKey| {
            let exact = ServiceKey::from_raw(k.dst, k.dport, k.proto, k.family);
            let every = ServiceKey::from_raw(k.dst, [0, 0], k.proto, k.family);
            let (svc, table) = entries.get(&exact).or_else(|| entries.get(&every))?;
            if svc.table_size == 0 || table.len() != svc.table_size as usize {
                return None;
            }
            let with_port = svc.flags.contains(ServiceFlags::HASH_SRC_PORT);
            let id =
                table[(client_hash(&k.src, k.sport, with_port, seed) % svc.table_size) as usize];
            let generation = self.slots.get(id as usize)?.value.generation;
            Some(FlowValue {
                server_id: id,
                generation,
                seen: now,
            })
        })
    }

    /// The flow-table state of service `name`, for status.
    pub(crate) fn flow_table_status(&self, name: &str) -> FlowTableStatus {
        match self.consult.get(name) {
            None => FlowTableStatus::default(),
            Some(c) => FlowTableStatus {
                consulted: true,
                reason: Some(c.reason),
                since_unix: Some(unix(c.since)),
                scanned_unix: c.last_scan.map(|(t, _)| unix(t)),
                disagreeing: c.last_scan.map(|(_, n)| n),
            },
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a service's established TCP packets look their flow up, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableStatus {
    pub consulted: bool,
    pub reason: Option<ConsultReason>,
    /// When the flag was set (Unix seconds).
    pub since_unix: Option<u64>,
    /// When the last scan ran (Unix seconds).
    pub scanned_unix: Option<u64>,
    /// Live flows the last scan found recorded on another server than the current table
    /// picks (the flag stays while there are any).
    pub disagreeing: Option<u64>,
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ricochet_common::{ServerState as SlotState, PROTO_TCP, PROTO_UDP};
    use ricochet_config::Config;
    use ricochet_dataplane::{
        memory::{MemoryDataplane, Write},
        Capacities, Dataplane,
    };

    use super::*;

    const SEED: &str = include_str!("../../config/examples/seed.yaml");
    const IDLE: u32 = 100;
    const WEB: (&str, u8, u16) = ("192.168.35.241", PROTO_TCP, 80);

    fn desired(yaml: &str) -> ricochet_config::Desired {
        Config::from_yaml_str(yaml).unwrap().compile().unwrap()
    }

    fn engine() -> Engine<MemoryDataplane> {
        let mut e = Engine::new(MemoryDataplane::new(Capacities {
            maglev_slots: 8 * 65537,
            servers: 64,
            services: 16,
            ..Capacities::default()
        }));
        e.set_settings(&crate::settings(None, None, 7)).unwrap();
        e
    }

    fn key((vip, proto, port): (&str, u8, u16)) -> ServiceKey {
        ServiceKey::new(vip.parse().unwrap(), proto, port)
    }

    fn flagged(e: &Engine<MemoryDataplane>, k: (&str, u8, u16)) -> bool {
        e.dataplane().services[&key(k)]
            .flags
            .contains(ServiceFlags::CONSULT_FLOWS)
    }

    /// The seed with web-pool's first server disabled (drained: out of the table).
    fn drained() -> String {
        SEED.replacen(
            "      - { ip: 192.168.33.10 }\n      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]",
            "      - { ip: 192.168.33.10, enabled: false }\n      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]",
            1,
        )
    }

    /// A scan late enough for the grace to be over.
    fn scan(e: &mut Engine<MemoryDataplane>) -> ScanReport {
        e.scan_flows_at(flow_clock_now() + GRACE_UNITS, IDLE)
            .unwrap()
    }

    /// Client `i`'s web flow and the server the live web table picks for it.
    fn web_flow(e: &Engine<MemoryDataplane>, i: u8) -> (FlowKey, u32) {
        let src: IpAddr = format!("192.168.11.{i}").parse().unwrap();
        let k = FlowKey::new(src, 40000, WEB.0.parse().unwrap(), 80, PROTO_TCP);
        let v = e.dataplane().services[&key(WEB)];
        let table = e
            .dataplane()
            .read_table(v.table_offset, v.table_size)
            .unwrap();
        let h = client_hash(&k.src, k.sport, false, 7);
        (k, table[(h % v.table_size) as usize])
    }

    fn record(e: &mut Engine<MemoryDataplane>, k: FlowKey, server_id: u32, seen: u32) {
        let generation = e.dataplane().servers[server_id as usize].generation;
        e.dataplane_mut().flows.push((
            k,
            FlowValue {
                server_id,
                generation,
                seen,
            },
        ));
    }

    #[test]
    fn a_changed_table_is_flagged_in_its_switch_and_an_identical_rewrite_keeps_the_flag() {
        let mut e = engine();
        e.apply(&desired(SEED)).unwrap();
        // New entries: flows of an earlier service of the same VIP and port may exist.
        assert!(flagged(&e, WEB) && e.consulting());
        // No flow at all: the first late-enough scan clears every flag.
        let r = scan(&mut e);
        assert_eq!(r.cleared.len(), 3, "{r:?}");
        assert!(!flagged(&e, WEB) && !e.consulting());
        // The same configuration again writes nothing and sets nothing.
        e.dataplane_mut().journal = Some(Vec::new());
        assert!(e.apply(&desired(SEED)).unwrap().is_noop());
        assert!(!flagged(&e, WEB));
        // A drained server changes web-pool's table: the entry switches to the new table
        // and takes the flag in the same (atomic) write, after the table is written.
        e.apply(&desired(&drained())).unwrap();
        assert!(flagged(&e, WEB));
        assert!(
            !flagged(&e, ("192.168.35.241", PROTO_UDP, 53)),
            "dns unchanged"
        );
        let journal = e.dataplane_mut().journal.take().unwrap();
        let table = journal
            .iter()
            .position(|w| matches!(w, Write::Table { .. }))
            .unwrap();
        let switch = journal
            .iter()
            .position(|w| *w == Write::PutService(key(WEB)))
            .unwrap();
        assert!(table < switch, "{journal:?}");
        assert_eq!(
            journal
                .iter()
                .filter(|w| **w == Write::PutService(key(WEB)))
                .count(),
            1,
            "no separate flag write: {journal:?}"
        );
        let st = e.status().unwrap();
        let web = st.services.iter().find(|s| s.name == "web-vs").unwrap();
        assert!(web.flow_table.consulted);
        assert_eq!(web.flow_table.reason, Some(ConsultReason::TableChanged));
        // Rewriting the drained configuration (identical) keeps the flag.
        e.resync();
        e.apply(&desired(&drained())).unwrap();
        assert!(flagged(&e, WEB));
    }

    #[test]
    fn every_scan_counts_entries_live_ones_and_each_services_live_ones() {
        let mut e = engine();
        e.apply(&desired(SEED)).unwrap();
        assert_eq!(e.status().unwrap().flows, None, "no count before a scan");
        scan(&mut e);
        assert!(
            !e.consulting(),
            "flags cleared: the count goes on without them"
        );
        let now = flow_clock_now();
        for i in 1..=3 {
            let (k, pick) = web_flow(&e, i);
            record(&mut e, k, pick, now);
        }
        // One idle web flow, and a live one of no service (another port).
        let (k, pick) = web_flow(&e, 4);
        record(&mut e, k, pick, now.wrapping_sub(IDLE + 1));
        let (mut other, pick) = web_flow(&e, 5);
        other.dport = 9999u16.to_be_bytes();
        record(&mut e, other, pick, now);
        let r = scan(&mut e);
        assert_eq!(r.entries, 5);
        let c = e.flow_count().unwrap();
        assert_eq!((c.entries, c.live), (5, 4));
        assert_eq!(c.live_per_service["web-vs"], 3);
        let st = e.status().unwrap();
        let flows = st.flows.as_ref().unwrap();
        assert_eq!((flows.entries, flows.live), (5, 4));
        let live = |name: &str| {
            st.services
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .live_flows
        };
        assert_eq!(live("web-vs"), Some(3));
        assert_eq!(live("dns-vs"), Some(0));
    }

    #[test]
    fn a_live_disagreeing_flow_keeps_the_flag_until_it_goes_idle() {
        let mut e = engine();
        e.apply(&desired(SEED)).unwrap();
        scan(&mut e);
        let drained_slot = e.pools().find(|p| p.name == "web-pool").unwrap().servers[0].slot;
        // Flows on the server about to be drained, and one elsewhere.
        let now = flow_clock_now();
        let mut on_drained = Vec::new();
        let mut i = 1;
        while on_drained.len() < 3 {
            let (k, pick) = web_flow(&e, i);
            if pick == drained_slot {
                record(&mut e, k, pick, now);
                on_drained.push(k);
            }
            i += 1;
        }
        e.apply(&desired(&drained())).unwrap();
        // Within the grace nothing is cleared, even a service without flows.
        let r = e.scan_flows_at(flow_clock_now(), IDLE).unwrap();
        assert!(r.cleared.is_empty(), "{r:?}");
        // The drained server still holds its slot: its flows follow their entries and
        // disagree with the new table, which no longer names it.
        let r = scan(&mut e);
        assert_eq!(r.disagreeing["web-vs"], 3, "{r:?}");
        assert!(flagged(&e, WEB));
        let st = e.status().unwrap();
        let web = st.services.iter().find(|s| s.name == "web-vs").unwrap();
        assert_eq!(web.flow_table.disagreeing, Some(3));
        // A flow recorded on its current pick agrees.
        let (k, pick) = web_flow(&e, 200);
        record(&mut e, k, pick, now);
        assert_eq!(scan(&mut e).disagreeing["web-vs"], 3);
        // Two close (their stamps age past the idle timeout); the third keeps the flag.
        for f in e.dataplane_mut().flows.iter_mut().take(2) {
            f.1.seen = now.wrapping_sub(IDLE + 1);
        }
        assert_eq!(scan(&mut e).disagreeing["web-vs"], 1);
        assert!(flagged(&e, WEB));
        e.dataplane_mut().flows[2].1.seen = now.wrapping_sub(IDLE + 1);
        let r = scan(&mut e);
        assert_eq!(r.cleared, ["web-vs"]);
        assert!(!flagged(&e, WEB) && !e.consulting());
    }

    #[test]
    fn flows_of_a_freed_slot_agree_they_are_re_hashed_anyway() {
        let mut e = engine();
        e.apply(&desired(SEED)).unwrap();
        let (k, pick) = web_flow(&e, 1);
        record(&mut e, k, pick, flow_clock_now());
        // A new generation of the slot: the entry is unusable, with the flag or not.
        e.dataplane_mut().flows[0].1.generation += 1;
        assert_eq!(scan(&mut e).disagreeing["web-vs"], 0);
        assert!(!flagged(&e, WEB));
        assert_eq!(
            e.dataplane().servers[pick as usize].state,
            SlotState::ACTIVE
        );
    }

    #[test]
    fn a_new_hash_seed_flags_every_service_before_it_is_written() {
        let mut e = engine();
        e.apply(&desired(SEED)).unwrap();
        scan(&mut e);
        assert!(!e.consulting());
        e.dataplane_mut().journal = Some(Vec::new());
        e.set_settings(&crate::settings(None, None, 8)).unwrap();
        let journal = e.dataplane_mut().journal.take().unwrap();
        assert_eq!(journal.last(), Some(&Write::Settings), "{journal:?}");
        assert!(e
            .dataplane()
            .services
            .values()
            .all(|v| v.flags.contains(ServiceFlags::CONSULT_FLOWS)));
        // The next apply re-reads the entries and keeps the flags.
        e.apply(&desired(SEED)).unwrap();
        assert!(flagged(&e, WEB) && e.consulting());
    }

    #[test]
    fn a_restarted_engine_keeps_a_pinned_flag_and_scans_for_it() {
        let mut e = engine();
        e.apply(&desired(SEED)).unwrap();
        scan(&mut e);
        e.apply(&desired(&drained())).unwrap();
        let dp = e.dataplane().clone();
        let mut e2 = Engine::adopt(dp).unwrap();
        assert!(e2.apply(&desired(&drained())).unwrap().is_noop());
        assert!(flagged(&e2, WEB) && e2.consulting());
        let st = e2.status().unwrap();
        let web = st.services.iter().find(|s| s.name == "web-vs").unwrap();
        assert_eq!(web.flow_table.reason, Some(ConsultReason::Adopted));
        assert_eq!(scan(&mut e2).cleared, ["web-vs"]);
    }
}
