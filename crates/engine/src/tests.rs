//! Reconciliation on the in-memory data plane: what each kind of change writes, and
//! that refused or repeated changes write nothing.

use std::net::IpAddr;

use ricochet_common::{
    ServiceKey, VipKey, PROTO_TCP, PROTO_UDP, SERVER_ACTIVE, SERVER_DRAINING, SERVER_FREE,
};
use ricochet_config::Config;
use ricochet_dataplane::{memory::MemoryDataplane, Capacities, Dataplane};

use super::*;

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
    assert_eq!(dp.servers[a as usize].state, SERVER_ACTIVE);
    assert_eq!(dp.servers[a as usize].ip(), Some(ip("192.168.33.10")));
    // dns-pool hashes on source IP and port.
    let dns = dp.services[&ServiceKey::new(ip("192.168.35.241"), PROTO_UDP, 53)];
    assert_eq!(dns.flags & SERVICE_HASH_SRC_PORT, SERVICE_HASH_SRC_PORT);
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
    assert_eq!(e.dataplane().servers[gone as usize].state, SERVER_FREE);
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
    assert_eq!(e.dataplane().servers[a as usize].state, SERVER_DRAINING);
    assert!(!table_of(&e, "192.168.35.241", PROTO_TCP, 80).contains(&a));
    // Re-enabling puts it back in the table, in the same slot and generation.
    let generation = e.dataplane().servers[a as usize].generation;
    e.apply(&desired(SEED)).unwrap();
    assert_eq!(e.dataplane().servers[a as usize].state, SERVER_ACTIVE);
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
            assert_eq!(v.state, SERVER_FREE);
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
        ricochet_common::VIP_TCP_ALL_PORTS
    );
    assert_eq!(dp.vips[&VipKey::new(ip("10.9.9.9"))].flags, 0);
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
        .all(|s| s.family != ricochet_common::FAMILY_V6 || s.state == SERVER_FREE));
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
