//! Reconciliation on the in-memory data plane: what each kind of change writes, and
//! that refused or repeated changes write nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ricochet_common::{
    ServerState as SlotState, ServiceFlags, ServiceKey, VipFlags, VipKey, PROTO_TCP, PROTO_UDP,
};
use ricochet_config::Config;
use ricochet_dataplane::{memory::MemoryDataplane, Capacities, Dataplane};

use super::*;
use ricochet_common::vip_filter;

const SEED: &str = include_str!("../../config/examples/seed.yaml");

fn desired(yaml: &str) -> Desired {
    Config::from_yaml_str(yaml).unwrap().compile().unwrap()
}

fn small_caps() -> Capacities {
    Capacities {
        maglev_slots: 8 * 65537,
        servers: 64,
        services: 16,
        ..Capacities::default()
    }
}

fn engine() -> Engine<MemoryDataplane> {
    Engine::new(MemoryDataplane::new(small_caps()))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The server slot that the live table of `vip:port/proto` gives `slot_index`.
fn table_of(e: &Engine<MemoryDataplane>, vip: &str, proto: u8, port: u16) -> Vec<u32> {
    let v = e.dataplane().services[&ServiceKey::new(ip(vip), proto, port)];
    e.dataplane()
        .read_table(v.table_offset, v.table_size)
        .unwrap()
}

fn slot_of(e: &Engine<MemoryDataplane>, pool: &str, server: &str) -> u32 {
    e.pools()
        .find(|p| p.name == pool)
        .unwrap()
        .servers
        .iter()
        .find(|s| s.ip == ip(server))
        .unwrap()
        .slot
}

#[test]
fn seed_is_programmed() {
    let mut e = engine();
    let r = e.apply(&desired(SEED)).unwrap();
    let dp = e.dataplane();
    assert_eq!(dp.vips.len(), 2, "one IPv4 and one IPv6 VIP");
    assert!(dp.vips.contains_key(&VipKey::new(ip("192.168.35.241"))));
    assert_eq!(dp.services.len(), 3);
    assert_eq!(r.tables_written, 3);
    let web = table_of(&e, "192.168.35.241", PROTO_TCP, 80);
    assert_eq!(web.len(), 65537);
    let a = slot_of(&e, "web-pool", "192.168.33.10");
    let b = slot_of(&e, "web-pool", "192.168.34.10");
    let share_a = web.iter().filter(|&&s| s == a).count();
    assert_eq!(
        share_a + web.iter().filter(|&&s| s == b).count(),
        65537,
        "only the pool's servers"
    );
    assert!(
        (32000..33600).contains(&share_a),
        "ratio 1:1 gives half the slots, got {share_a}"
    );
    assert_eq!(dp.servers[a as usize].state, SlotState::ACTIVE);
    assert_eq!(dp.servers[a as usize].ip(), Some(ip("192.168.33.10")));
    // dns-pool hashes on source IP and port.
    let dns = dp.services[&ServiceKey::new(ip("192.168.35.241"), PROTO_UDP, 53)];
    assert!(dns.flags.contains(ServiceFlags::HASH_SRC_PORT));
}

#[test]
fn same_config_twice_writes_nothing() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let writes = e.dataplane().writes;
    let r = e.apply(&desired(SEED)).unwrap();
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(e.dataplane().writes, writes);
}

#[test]
fn removing_a_server_frees_its_slot_and_rewrites_only_its_pool() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let gone = slot_of(&e, "web-pool", "192.168.34.10");
    let kept = slot_of(&e, "web-pool", "192.168.33.10");
    let v6_before = table_of(&e, "fc00:3::24a", PROTO_TCP, 80);
    let cfg = SEED.replacen(
        "      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]",
        "    health_monitors: [web-tcp]",
        1,
    );
    let r = e.apply(&desired(&cfg)).unwrap();
    assert_eq!(r.tables_written, 1, "only web-pool's table changes: {r:?}");
    assert_eq!(r.servers_freed, 1);
    assert_eq!(e.dataplane().servers[gone as usize].state, SlotState::FREE);
    assert!(table_of(&e, "192.168.35.241", PROTO_TCP, 80)
        .iter()
        .all(|&s| s == kept));
    assert_eq!(table_of(&e, "fc00:3::24a", PROTO_TCP, 80), v6_before);
    assert_eq!(
        slot_of(&e, "web-pool", "192.168.33.10"),
        kept,
        "the remaining server keeps its slot"
    );
}

#[test]
fn disabling_a_server_drains_it() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let a = slot_of(&e, "web-pool", "192.168.33.10");
    let cfg = SEED.replacen("      - { ip: 192.168.33.10 }\n      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]", "      - { ip: 192.168.33.10, enabled: false }\n      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]", 1);
    let r = e.apply(&desired(&cfg)).unwrap();
    assert_eq!(r.servers_drained, 1);
    assert_eq!(e.dataplane().servers[a as usize].state, SlotState::DRAINING);
    assert!(!table_of(&e, "192.168.35.241", PROTO_TCP, 80).contains(&a));
    // Re-enabling puts it back in the table, in the same slot and generation.
    let generation = e.dataplane().servers[a as usize].generation;
    e.apply(&desired(SEED)).unwrap();
    assert_eq!(e.dataplane().servers[a as usize].state, SlotState::ACTIVE);
    assert_eq!(e.dataplane().servers[a as usize].generation, generation);
    assert!(table_of(&e, "192.168.35.241", PROTO_TCP, 80).contains(&a));
}

#[test]
fn a_reused_slot_gets_a_new_generation() {
    let mut e = engine();
    let one = "network_profiles: [{name: p, type: tcp_fast_path, dsr: {enabled: true, type: l3, encapsulation: ipinip}}]
pools: [{name: pl, servers: [{ip: 10.0.0.1}]}]
virtual_services: [{name: vs, vip: 10.9.9.9, services: [{port: 80}], network_profile: p, pool: pl}]";
    e.apply(&desired(one)).unwrap();
    let slot = slot_of(&e, "pl", "10.0.0.1");
    let g0 = e.dataplane().servers[slot as usize].generation;
    e.apply(&desired(&one.replace("10.0.0.1", "10.0.0.2")))
        .unwrap();
    let slot2 = slot_of(&e, "pl", "10.0.0.2");
    assert_ne!(
        slot, slot2,
        "the freed slot is not reused in the same apply"
    );
    e.apply(&desired(&one.replace("10.0.0.1", "10.0.0.3")))
        .unwrap();
    let slot3 = slot_of(&e, "pl", "10.0.0.3");
    if slot3 == slot {
        assert!(e.dataplane().servers[slot as usize].generation > g0);
    }
    for s in [slot, slot2, slot3] {
        let v = e.dataplane().servers[s as usize];
        if v.ip() != Some(ip("10.0.0.3")) {
            assert_eq!(v.state, SlotState::FREE);
        }
    }
}

#[test]
fn refused_change_writes_nothing() {
    let caps = Capacities {
        servers: 3,
        ..small_caps()
    };
    let mut e = Engine::new(MemoryDataplane::new(caps));
    let two = "network_profiles: [{name: p, type: tcp_fast_path, dsr: {enabled: true, type: l3, encapsulation: ipinip}}]
pools: [{name: pl, servers: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]}]
virtual_services: [{name: vs, vip: 10.9.9.9, services: [{port: 80}], network_profile: p, pool: pl}]";
    e.apply(&desired(two)).unwrap();
    let before = e.dataplane().clone();
    let four = two.replace(
        "{ip: 10.0.0.2}",
        "{ip: 10.0.0.2}, {ip: 10.0.0.3}, {ip: 10.0.0.4}",
    );
    let err = e.apply(&desired(&four)).unwrap_err().to_string();
    assert!(
        err.contains("not enough server slots: the change needs 2 new ones, 1 are free"),
        "{err}"
    );
    assert_eq!(e.dataplane().writes, before.writes, "nothing written");
    assert_eq!(e.dataplane().services, before.services);
    assert_eq!(e.revision(), 1);
    // The engine still works for a change that fits.
    e.apply(&desired(&two.replace("10.0.0.2", "10.0.0.5")))
        .unwrap();
}

#[test]
fn maglev_space_is_checked_before_writing() {
    let caps = Capacities {
        maglev_slots: 65537 + 100,
        ..small_caps()
    };
    let mut e = Engine::new(MemoryDataplane::new(caps));
    e.apply(&desired(
        "network_profiles: [{name: p, type: tcp_fast_path, dsr: {enabled: true, type: l3, encapsulation: ipinip}}]
pools: [{name: pl, servers: [{ip: 10.0.0.1}]}]
virtual_services: [{name: vs, vip: 10.9.9.9, services: [{port: 80}], network_profile: p, pool: pl}]",
    ))
    .unwrap();
    let writes = e.dataplane().writes;
    let err = e.apply(&desired(SEED)).unwrap_err().to_string();
    assert!(err.contains("Maglev array has no room"), "{err}");
    assert_eq!(e.dataplane().writes, writes);
}

#[test]
fn port_ranges_and_all_ports() {
    let mut e = engine();
    e.apply(&desired(
        "network_profiles: [{name: p, type: tcp_fast_path, dsr: {enabled: true, type: l3, encapsulation: ipinip}}]
pools: [{name: pl, servers: [{ip: 10.0.0.1}]}]
virtual_services:
  - {name: r, vip: 10.9.9.9, services: [{port: 8000, port_range_end: 8009}, {port: 443}], network_profile: p, pool: pl}
  - {name: all, vip: 10.9.9.8, services: [{port: 1, port_range_end: 65535}], network_profile: p, pool: pl}",
    ))
    .unwrap();
    let dp = e.dataplane();
    assert_eq!(dp.services.len(), 11 + 1);
    assert!(dp
        .services
        .contains_key(&ServiceKey::new(ip("10.9.9.8"), PROTO_TCP, 0)));
    assert_eq!(
        dp.vips[&VipKey::new(ip("10.9.9.8"))].flags,
        ricochet_common::VipFlags::TCP_ALL_PORTS
    );
    assert_eq!(dp.vips[&VipKey::new(ip("10.9.9.9"))].flags, VipFlags::EMPTY);
    // Both services share the pool's single table.
    let a = dp.services[&ServiceKey::new(ip("10.9.9.9"), PROTO_TCP, 8005)];
    let b = dp.services[&ServiceKey::new(ip("10.9.9.8"), PROTO_TCP, 0)];
    assert_eq!(
        (a.table_offset, a.table_size),
        (b.table_offset, b.table_size)
    );
    assert_ne!(a.service_id, b.service_id);
}

#[test]
fn removing_a_service_removes_its_entries_and_vip() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let cfg = SEED.split("  - name: web-vs-v6").next().unwrap().to_owned()
        + "  - name: dns-vs\n    vip: 192.168.35.241\n    services: [{ port: 53 }]\n    network_profile: dsr-l3-udp\n    pool: dns-pool\n";
    let r = e.apply(&desired(&cfg)).unwrap();
    assert_eq!(r.service_entries_removed, 1);
    assert_eq!(e.dataplane().vips.len(), 1, "the IPv6 VIP is gone");
    assert!(e
        .dataplane()
        .servers
        .iter()
        .all(|s| s.family != ricochet_common::FAMILY_V6 || s.state == SlotState::FREE));
}

#[test]
fn adoption_after_restart_reuses_everything() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let before = e.dataplane().clone();
    let ids: Vec<(String, u32)> = e.services().map(|s| (s.name.clone(), s.id)).collect();
    // A new engine over the same maps (a daemon restart over pinned maps).
    let mut e2 = Engine::adopt(before.clone()).unwrap();
    let r = e2.apply(&desired(SEED)).unwrap();
    assert!(
        r.is_noop(),
        "a restart with the same config writes nothing: {r:?}"
    );
    assert_eq!(e2.dataplane().services, before.services);
    assert_eq!(e2.dataplane().servers, before.servers);
    let ids2: Vec<(String, u32)> = e2.services().map(|s| (s.name.clone(), s.id)).collect();
    assert_eq!(ids, ids2);
    // And it keeps working: a later change frees the replaced regions for reuse.
    let cfg = SEED.replacen(
        "      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]",
        "    health_monitors: [web-tcp]",
        1,
    );
    e2.apply(&desired(&cfg)).unwrap();
    e2.apply(&desired(SEED)).unwrap();
}

#[test]
fn adoption_writes_the_vip_filter_the_pins_lack_or_got_wrong() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let want = e.dataplane().vip_filter.clone();
    assert_ne!(want, vec![0; want.len()]);
    // Maps pinned before the filter existed: the new program's filter starts empty, and
    // one word has a bit no VIP owns (a filter written for other VIPs).
    let mut pinned = e.dataplane().clone();
    pinned.vip_filter = vec![0; want.len()];
    let stray = want.iter().position(|w| *w == 0).unwrap();
    pinned.vip_filter[stray] = 1;
    let mut e2 = Engine::adopt(pinned).unwrap();
    e2.dataplane_mut().journal = Some(Vec::new());
    e2.apply(&desired(SEED)).unwrap();
    assert_eq!(e2.dataplane().vip_filter, want);
    let journal = e2.dataplane_mut().journal.take().unwrap();
    use ricochet_dataplane::memory::Write;
    let words = journal
        .iter()
        .filter(|w| matches!(w, Write::VipFilterWord(_)))
        .count();
    let vip_words = want.iter().filter(|w| **w != 0).count();
    assert_eq!(
        words,
        vip_words + 1,
        "the VIPs' words and the stray one: {journal:?}"
    );
}

#[test]
fn adoption_with_a_changed_config_moves_only_the_change() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let kept = slot_of(&e, "web-pool", "192.168.33.10");
    let mut e2 = Engine::adopt(e.dataplane().clone()).unwrap();
    let cfg = SEED.replacen(
        "      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]",
        "    health_monitors: [web-tcp]",
        1,
    );
    let r = e2.apply(&desired(&cfg)).unwrap();
    assert_eq!(r.tables_written, 1, "{r:?}");
    assert_eq!(slot_of(&e2, "web-pool", "192.168.33.10"), kept);
}

#[test]
fn status_lists_services_and_servers() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let st = e.status().unwrap();
    assert_eq!(st.services.len(), 3);
    let web = st.pools.iter().find(|p| p.name == "web-pool").unwrap();
    assert_eq!(web.servers.len(), 2);
    assert!(web.servers.iter().all(|s| s.state == "active"));
    assert_eq!(st.reasons.len(), ricochet_common::Reason::COUNT as usize);
}

#[test]
fn pool_tag_is_stable() {
    // Pinned slots carry this tag across versions: it must never change.
    assert_eq!(pool_tag(""), 0x811c_9dc5);
    assert_eq!(pool_tag("web-pool"), pool_tag("web-pool"));
    assert_eq!(pool_tag("a"), 0xe40c_292c);
}

// ---- Incremental applies ----

/// A generated configuration: virtual services and their pools.
#[derive(Clone)]
struct Gen {
    services: Vec<GenService>,
    pools: BTreeMap<String, GenPool>,
}

#[derive(Clone)]
struct GenService {
    name: String,
    vip: String,
    /// The `services:` list, in YAML.
    ports: String,
    pool: String,
    udp: bool,
}

#[derive(Clone)]
struct GenPool {
    /// Addresses and `enabled`.
    servers: Vec<(String, bool)>,
    /// `consistent_hash`.
    hash: &'static str,
    table: u32,
}

impl Gen {
    /// `n` virtual services `vs-i` on VIPs 10.100.x.y, port 80, each with a pool of two
    /// servers of its own and a 211-slot table.
    fn many(n: usize) -> Gen {
        let mut g = Gen {
            services: Vec::new(),
            pools: BTreeMap::new(),
        };
        for i in 0..n {
            g.add(i, &[&gen_server(2 * i), &gen_server(2 * i + 1)]);
        }
        g
    }

    /// Adds `vs-i` on VIP `i` with a pool `pool-i` of `servers`.
    fn add(&mut self, i: usize, servers: &[&str]) {
        let pool = format!("pool-{i:04}");
        self.services.push(GenService {
            name: format!("vs-{i:04}"),
            vip: gen_vip(i),
            ports: "[{port: 80}]".into(),
            pool: pool.clone(),
            udp: false,
        });
        self.pools.insert(
            pool,
            GenPool {
                servers: servers.iter().map(|s| (s.to_string(), true)).collect(),
                hash: "source_ip",
                table: 211,
            },
        );
    }

    fn service(&mut self, name: &str) -> &mut GenService {
        self.services.iter_mut().find(|s| s.name == name).unwrap()
    }

    fn yaml(&self) -> String {
        let mut y = String::from(
            "network_profiles:\n  - {name: t, type: tcp_fast_path, dsr: {enabled: true, type: l3, encapsulation: ipinip}}\n  - {name: u, type: udp_fast_path, dsr: {enabled: true, type: l3, encapsulation: ipinip}}\npools:\n",
        );
        for (
            name,
            GenPool {
                servers,
                hash,
                table,
            },
        ) in &self.pools
        {
            let servers: Vec<String> = servers
                .iter()
                .map(|(ip, on)| format!("{{ip: {ip}, enabled: {on}}}"))
                .collect();
            y += &format!(
                "  - {{name: {name}, consistent_hash: {hash}, table_size: {table}, servers: [{}]}}\n",
                servers.join(", ")
            );
        }
        y += "virtual_services:\n";
        for GenService {
            name,
            vip,
            ports,
            pool,
            udp,
        } in &self.services
        {
            let profile = if *udp { "u" } else { "t" };
            y += &format!(
                "  - {{name: {name}, vip: {vip}, services: {ports}, network_profile: {profile}, pool: {pool}}}\n"
            );
        }
        y
    }

    fn desired(&self) -> Desired {
        desired(&self.yaml())
    }
}

fn gen_vip(i: usize) -> String {
    format!("10.100.{}.{}", i / 250, i % 250 + 1)
}

fn gen_server(j: usize) -> String {
    format!("10.201.{}.{}", j / 250, j % 250 + 1)
}

fn many_caps() -> Capacities {
    Capacities {
        vips: 1024,
        service_ports: 4096,
        services: 1024,
        servers: 2048,
        maglev_slots: 2 * 1024 * 211 + 65537,
        flows: 1024,
    }
}

/// What the data plane does with packets, whatever slots, regions and ids the engine
/// chose: per service entry its flags and its table as server addresses, per VIP its
/// flags, and the state of every used server slot.
type View = (
    BTreeMap<ServiceKey, (u16, Vec<IpAddr>)>,
    BTreeMap<VipKey, VipValue>,
    Vec<(IpAddr, u8)>,
);

fn view(dp: &MemoryDataplane) -> View {
    let services = dp
        .services
        .iter()
        .map(|(k, v)| {
            let region = v.table_offset as usize..(v.table_offset + v.table_size) as usize;
            let table = dp.maglev[region]
                .iter()
                .map(|&slot| {
                    let s = dp.servers[slot as usize];
                    assert_eq!(
                        s.state,
                        SlotState::ACTIVE,
                        "a table holds only active servers"
                    );
                    s.ip().unwrap()
                })
                .collect();
            (*k, (v.flags.bits(), table))
        })
        .collect();
    let ids: BTreeSet<u32> = dp.services.values().map(|v| v.service_id).collect();
    let distinct_services: BTreeSet<(u32, u32, u32)> = dp
        .services
        .values()
        .map(|v| (v.service_id, v.table_offset, v.table_size))
        .collect();
    assert_eq!(
        ids.len(),
        distinct_services.len(),
        "one id per service (entries of one service share theirs)"
    );
    let mut servers: Vec<(IpAddr, u8)> = dp
        .servers
        .iter()
        .filter(|s| s.state != SlotState::FREE)
        .map(|s| (s.ip().unwrap(), s.state.raw()))
        .collect();
    servers.sort();
    assert!(
        dp.vip_filter == filter_of(dp.vips.keys()),
        "the VIP filter holds the bits of the VIPs and no other"
    );
    (services, dp.vips.clone(), servers)
}

/// Applies `g` incrementally to `e` and checks that the data plane then behaves as a
/// fresh engine's after a full apply of the same configuration.
fn apply_and_compare(e: &mut Engine<MemoryDataplane>, g: &Gen) -> ApplyReport {
    let d = g.desired();
    let r = e.apply(&d).unwrap();
    let mut fresh = Engine::new(MemoryDataplane::new(many_caps()));
    fresh.apply(&d).unwrap();
    assert!(
        view(e.dataplane()) == view(fresh.dataplane()),
        "the incremental apply differs from a full one"
    );
    r
}

#[test]
fn one_service_change_among_many_writes_only_that_service() {
    let mut e = Engine::new(MemoryDataplane::new(many_caps()));
    let base = Gen::many(300);
    let r = e.apply(&base.desired()).unwrap();
    assert_eq!((r.pools_planned, r.services_planned), (300, 300), "{r:?}");
    let live: Vec<(u32, u32)> = e
        .dataplane()
        .services
        .values()
        .map(|v| (v.table_offset, v.table_size))
        .collect();
    e.dataplane_mut().journal = Some(Vec::new());
    let reads = e.dataplane().reads.get();

    // Add one.
    let mut plus = base.clone();
    plus.add(300, &[&gen_server(900), &gen_server(901)]);
    let new_vip = VipKey::new(ip(&gen_vip(300)));
    let (word, mask) = vip_filter::word_and_mask(vip_filter::bit(&new_vip.addr, new_vip.family));
    assert_eq!(
        e.dataplane().vip_filter[word as usize] & mask,
        0,
        "the new VIP's filter bit is not one of the others'"
    );
    let r = apply_and_compare(&mut e, &plus);
    assert_eq!((r.pools_planned, r.services_planned), (1, 1), "{r:?}");
    let new_key = ServiceKey::new(ip(&gen_vip(300)), PROTO_TCP, 80);
    let new_value = e.dataplane().services[&new_key];
    let new_slots: BTreeSet<u32> = ["10.201.3.151", "10.201.3.152"]
        .iter()
        .map(|s| slot_of(&e, "pool-0300", s))
        .collect();
    let journal = e.dataplane_mut().journal.replace(Vec::new()).unwrap();
    use ricochet_dataplane::memory::Write;
    for w in &journal {
        match w {
            Write::PutServer(s) => assert!(new_slots.contains(s), "{w:?}"),
            Write::Table { offset, len } => {
                assert_eq!((*offset, *len), (new_value.table_offset, 211));
                assert!(
                    live.iter()
                        .all(|(o, l)| offset + len <= *o || o + l <= *offset),
                    "the new table goes to a region no service uses"
                );
            }
            Write::PutService(k) => assert_eq!(*k, new_key),
            Write::PutVip(k) => assert_eq!(*k, new_vip),
            Write::VipFilterWord(i) => assert_eq!(*i, word),
            _ => panic!("unexpected write {w:?}"),
        }
    }
    // Two writes per fresh slot (generation, then server), the table, the entry, the VIP,
    // its filter word, in that order from the entry on.
    assert_eq!(journal.len(), 2 * 2 + 4, "{journal:?}");
    assert_eq!(
        journal[journal.len() - 3..],
        [
            Write::PutService(new_key),
            Write::PutVip(new_vip),
            Write::VipFilterWord(word)
        ]
    );
    assert_eq!(
        e.dataplane().reads.get(),
        reads,
        "an incremental apply reads no map back"
    );

    // Remove it again.
    let r = apply_and_compare(&mut e, &base);
    assert_eq!((r.pools_planned, r.services_planned), (0, 0), "{r:?}");
    let journal = e.dataplane_mut().journal.replace(Vec::new()).unwrap();
    assert_eq!(
        journal,
        [
            Write::VipFilterWord(word),
            Write::RemoveVip(new_vip),
            Write::RemoveService(new_key),
            Write::PutServer(*new_slots.first().unwrap()),
            Write::PutServer(*new_slots.last().unwrap()),
        ]
    );

    // Change one pool's servers: its table moves; only its service follows.
    let mut changed = base.clone();
    changed.pools.get_mut("pool-0007").unwrap().servers[1].0 = gen_server(902);
    let r = apply_and_compare(&mut e, &changed);
    assert_eq!((r.pools_planned, r.services_planned), (1, 1), "{r:?}");
    let key7 = ServiceKey::new(ip(&gen_vip(7)), PROTO_TCP, 80);
    let journal = e.dataplane_mut().journal.replace(Vec::new()).unwrap();
    let services: Vec<&Write> = journal
        .iter()
        .filter(|w| !matches!(w, Write::PutServer(_) | Write::Table { .. }))
        .collect();
    assert_eq!(services, [&Write::PutService(key7)], "{journal:?}");
    assert_eq!(
        journal
            .iter()
            .filter(|w| matches!(w, Write::Table { .. }))
            .count(),
        1
    );
    assert_eq!(e.dataplane().reads.get(), reads);
}

#[test]
fn incremental_applies_end_where_a_full_apply_would() {
    let mut e = Engine::new(MemoryDataplane::new(many_caps()));
    let mut g = Gen::many(40);
    apply_and_compare(&mut e, &g);
    // Each step changes something else; each is checked against a fresh engine.
    g.pools.get_mut("pool-0003").unwrap().servers[0].1 = false; // disable a server
    apply_and_compare(&mut e, &g);
    g.pools.get_mut("pool-0003").unwrap().servers[0].1 = true; // and enable it again
    apply_and_compare(&mut e, &g);
    g.service("vs-0005").ports = "[{port: 443}, {port: 8000, port_range_end: 8003}]".into();
    apply_and_compare(&mut e, &g);
    g.service("vs-0006").vip = gen_vip(5); // onto another service's VIP
    apply_and_compare(&mut e, &g);
    g.service("vs-0007").ports = "[{port: 1, port_range_end: 65535}]".into(); // every port
    apply_and_compare(&mut e, &g);
    g.service("vs-0008").pool = "pool-0009".into(); // to another pool; pool-0008 goes
    g.pools.remove("pool-0008");
    apply_and_compare(&mut e, &g);
    g.pools.get_mut("pool-0009").unwrap().hash = "source_ip_and_port"; // the hash changes
    apply_and_compare(&mut e, &g);
    g.pools.get_mut("pool-0010").unwrap().table = 307; // a larger table
    apply_and_compare(&mut e, &g);
    let p11 = g.pools.get_mut("pool-0011").unwrap();
    p11.servers.push((gen_server(500), true)); // a third server (and a table to fit it)
    p11.table = 307;
    apply_and_compare(&mut e, &g);
    g.pools.get_mut("pool-0012").unwrap().servers = vec![(gen_server(501), false)]; // none enabled
    apply_and_compare(&mut e, &g);
    let mut renamed = g.service("vs-0013").clone();
    g.services.retain(|s| s.name != renamed.name);
    renamed.name = "renamed".into(); // the same packets, a new name
    g.services.push(renamed);
    apply_and_compare(&mut e, &g);
    g.service("vs-0014").udp = true; // UDP
    apply_and_compare(&mut e, &g);
    g.services
        .retain(|s| s.name != "vs-0015" && s.name != "vs-0016");
    g.pools.remove("pool-0015");
    apply_and_compare(&mut e, &g);
    g.add(16, &[&gen_server(32), &gen_server(33)]); // back, with pool-0016's old servers
    apply_and_compare(&mut e, &g);
    // Many at once, then back to the start.
    for i in 17..30 {
        g.pools.get_mut(&format!("pool-{i:04}")).unwrap().servers[0].0 = gen_server(600 + i);
    }
    apply_and_compare(&mut e, &g);
    let r = apply_and_compare(&mut e, &Gen::many(40));
    assert!(!r.is_noop());
    let r = apply_and_compare(&mut e, &Gen::many(40));
    assert!(r.is_noop(), "{r:?}");
}

#[test]
fn an_entry_two_services_take_is_refused() {
    // The configuration's validation refuses overlapping ports; the engine checks again
    // for a Desired built otherwise, in a full apply and in an incremental one.
    let g = Gen::many(3);
    let mut d = g.desired();
    let mut twin = d.services[1].clone();
    twin.name = "twin".into();
    d.services.push(twin);
    let mut e = Engine::new(MemoryDataplane::new(many_caps()));
    let err = e.apply(&d).unwrap_err().to_string();
    assert_eq!(
        err,
        "virtual services \"vs-0001\" and \"twin\" both take 10.100.0.2 tcp port 80"
    );
    assert_eq!(e.dataplane().writes, 0);
    e.apply(&g.desired()).unwrap();
    let writes = e.dataplane().writes;
    let err = e.apply(&d).unwrap_err().to_string();
    assert_eq!(
        err,
        "virtual services \"vs-0001\" and \"twin\" both take 10.100.0.2 tcp port 80"
    );
    assert_eq!(e.dataplane().writes, writes, "nothing written");
}

#[test]
fn after_a_failed_commit_the_next_apply_starts_from_the_maps() {
    let mut e = Engine::new(MemoryDataplane::new(many_caps()));
    let base = Gen::many(20);
    e.apply(&base.desired()).unwrap();
    let mut changed = base.clone();
    for i in 0..10 {
        changed
            .pools
            .get_mut(&format!("pool-{i:04}"))
            .unwrap()
            .servers[0]
            .0 = gen_server(700 + i);
    }
    changed.add(20, &[&gen_server(800), &gen_server(801)]);
    // The commit fails after some of its writes.
    let writes = e.dataplane().writes;
    e.dataplane_mut().fail_writes_from = Some(writes + 25);
    let err = e.apply(&changed.desired()).unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    assert_eq!(e.dataplane().writes, writes + 25, "the commit had begun");
    assert_eq!(e.revision(), 1);
    e.dataplane_mut().fail_writes_from = None;
    let reads = e.dataplane().reads.get();
    let r = apply_and_compare(&mut e, &changed);
    assert_eq!(r.pools_planned, 21, "a full apply: {r:?}");
    assert!(e.dataplane().reads.get() > reads, "it read the maps back");
    // And the engine is incremental again.
    let r = apply_and_compare(&mut e, &base);
    assert_eq!(r.pools_planned, 10, "{r:?}");
}

#[test]
fn resync_makes_the_next_apply_full() {
    let mut e = Engine::new(MemoryDataplane::new(many_caps()));
    let g = Gen::many(5);
    e.apply(&g.desired()).unwrap();
    // Someone else removes an entry behind the engine's back.
    let key = ServiceKey::new(ip(&gen_vip(2)), PROTO_TCP, 80);
    e.dataplane_mut().remove_service(&key).unwrap();
    assert!(
        e.apply(&g.desired()).unwrap().is_noop(),
        "trusts its record"
    );
    e.resync();
    let r = e.apply(&g.desired()).unwrap();
    assert_eq!(r.service_entries_written, 1, "{r:?}");
    assert!(e.dataplane().services.contains_key(&key));
}

#[test]
fn replaced_regions_return_to_the_allocator() {
    // Adopted tables and replaced ones are quarantined for one apply, then freed: once
    // every service is gone, the whole array is free again.
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let mut e2 = Engine::adopt(e.dataplane().clone()).unwrap();
    let cfg = SEED.replacen(
        "      - { ip: 192.168.34.10 }\n    health_monitors: [web-tcp]",
        "    health_monitors: [web-tcp]",
        1,
    );
    e2.apply(&desired(&cfg)).unwrap();
    e2.apply(&desired(SEED)).unwrap();
    e2.apply(&Desired::default()).unwrap();
    e2.apply(&Desired::default()).unwrap();
    assert_eq!(
        e2.regions.free_slots(),
        u64::from(small_caps().maglev_slots)
    );
    assert!(e2.dataplane().services.is_empty());
}

#[test]
fn an_unsorted_desired_state_is_paired_by_name_too() {
    // Compiled configurations list services and pools by name; one built otherwise is
    // matched by lookups, with the same result.
    let mut e = Engine::new(MemoryDataplane::new(many_caps()));
    let base = Gen::many(30);
    e.apply(&base.desired()).unwrap();
    let mut g = base.clone();
    g.services.retain(|s| s.name != "vs-0004");
    g.pools.remove("pool-0004");
    g.pools.get_mut("pool-0020").unwrap().servers[0].0 = gen_server(900);
    g.add(30, &[&gen_server(901), &gen_server(902)]);
    let mut d = g.desired();
    d.services.reverse();
    d.pools.reverse();
    let r = e.apply(&d).unwrap();
    assert_eq!((r.pools_planned, r.services_planned), (2, 2), "{r:?}");
    assert_eq!(r.service_entries_removed, 1, "{r:?}");
    let mut fresh = Engine::new(MemoryDataplane::new(many_caps()));
    fresh.apply(&g.desired()).unwrap();
    assert!(view(e.dataplane()) == view(fresh.dataplane()));
    assert!(e.apply(&g.desired()).unwrap().is_noop());
}

#[test]
fn a_refused_first_apply_after_adoption_leaves_the_next_one_full() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let before = e.dataplane().clone();
    let mut e2 = Engine::adopt(before.clone()).unwrap();
    // More servers than the data plane's 64 slots: refused before any write.
    let mut many = Gen::many(40).desired();
    many.services.extend(desired(SEED).services);
    many.pools.extend(desired(SEED).pools);
    let err = e2.apply(&many).unwrap_err().to_string();
    assert!(err.contains("not enough server slots"), "{err}");
    assert_eq!(e2.dataplane().writes, before.writes);
    // The next apply still adopts the pinned slots and tables: nothing moves.
    let r = e2.apply(&desired(SEED)).unwrap();
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(e2.dataplane().servers, before.servers);
}

#[test]
fn a_profiles_encapsulation_is_in_its_entries_and_a_change_rewrites_only_them() {
    let mut e = engine();
    e.apply(&desired(SEED)).unwrap();
    let web = ServiceKey::new(ip("192.168.35.241"), PROTO_TCP, 80);
    let dns = ServiceKey::new(ip("192.168.35.241"), PROTO_UDP, 53);
    let encap = ServiceFlags::ENCAP_GRE | ServiceFlags::ENCAP_GUE;
    assert!(!e.dataplane().services[&web].flags.intersects(encap));
    let before = e.dataplane().services[&web];

    // The seed's TCP profile in GUE on port 7000: web-vs's entries change, not their
    // table, and dns-vs (the UDP profile) stays as it was.
    let gue = SEED.replacen(
        "encapsulation: ipinip",
        "encapsulation: gue, gue_port: 7000",
        1,
    );
    assert_ne!(gue, SEED, "the seed names ipinip");
    let dns_before = e.dataplane().services[&dns];
    let r = e.apply(&desired(&gue)).unwrap();
    assert_eq!(r.tables_written, 0, "{r:?}");
    let v = e.dataplane().services[&web];
    assert!(v.flags.contains(ServiceFlags::ENCAP_GUE), "{v:?}");
    assert!(!v.flags.contains(ServiceFlags::ENCAP_GRE));
    assert_eq!(u16::from_be_bytes(v.gue_port), 7000);
    assert_eq!(
        (v.table_offset, v.table_size, v.service_id),
        (before.table_offset, before.table_size, before.service_id)
    );
    assert_eq!(e.dataplane().services[&dns], dns_before);
    assert!(e
        .status()
        .unwrap()
        .services
        .iter()
        .any(|s| s.name == "web-vs" && s.encapsulation == Encapsulation::Gue { port: 7000 }));

    let gre = SEED.replacen("encapsulation: ipinip", "encapsulation: gre", 1);
    e.apply(&desired(&gre)).unwrap();
    let v = e.dataplane().services[&web];
    assert!(v.flags.contains(ServiceFlags::ENCAP_GRE), "{v:?}");
    assert_eq!(v.gue_port, [0, 0]);
    // And back: the entry is the seed's again.
    e.apply(&desired(SEED)).unwrap();
    assert_eq!(
        e.dataplane().services[&web]
            .flags
            .difference(ServiceFlags::CONSULT_FLOWS),
        before.flags.difference(ServiceFlags::CONSULT_FLOWS)
    );
}
