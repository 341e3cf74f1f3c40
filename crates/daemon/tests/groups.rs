//! An engine carries the virtual services of its service engine group (or of no group)
//! with the group's hash seed, over the in-memory data plane.

// Only the runner is used here.
#[allow(dead_code)]
mod common;

use ricochet_config::Config;
use ricochet_dataplane::Dataplane as _;

const CONFIG: &str = "
network_profiles:
  - { name: dsr, type: tcp_fast_path, dsr: { enabled: true, type: l3, encapsulation: ipinip } }
pools:
  - { name: p, servers: [{ ip: 192.0.2.10 }, { ip: 192.0.2.11 }] }
service_engine_groups:
  - { name: g1, hash_seed: 7, engines: [{ name: se1, addresses: [192.0.2.7] }] }
  - { name: g2, hash_seed: 9, engines: [{ name: se2, addresses: [192.0.2.8] }] }
virtual_services:
  - { name: a, vip: 198.51.100.1, services: [{ port: 80 }], network_profile: dsr, pool: p, se_group: g1 }
  - { name: b, vip: 198.51.100.2, services: [{ port: 80 }], network_profile: dsr, pool: p, se_group: g2 }
  - { name: c, vip: 198.51.100.3, services: [{ port: 80 }], network_profile: dsr, pool: p }
";

/// What the engine named `name` runs after applying [`CONFIG`]: its services and seed.
fn carried(name: Option<&str>) -> (Vec<String>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = common::runner_named(dir.path(), name);
    let config = Config::from_yaml_str(CONFIG).unwrap();
    let desired = config.compile().unwrap();
    runner.apply(&config, &desired).unwrap();
    let services = runner
        .current()
        .services
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let seed = runner.engine().dataplane().settings().unwrap().hash_seed;
    (services, seed)
}

#[test]
fn a_member_carries_its_groups_virtual_services_with_the_groups_seed() {
    assert_eq!(carried(Some("se1")), (vec!["a".to_owned()], 7));
    assert_eq!(carried(Some("se2")), (vec!["b".to_owned()], 9));
}

#[test]
fn an_engine_in_no_group_carries_the_ungrouped_virtual_services() {
    assert_eq!(carried(Some("se3")), (vec!["c".to_owned()], 0));
    assert_eq!(carried(None), (vec!["c".to_owned()], 0));
}

#[test]
fn a_refused_configuration_leaves_the_seed_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = common::runner_named(dir.path(), Some("se1"));
    let apply = |runner: &mut ricochet_daemon::Runner<_>, text: &str| {
        let config = Config::from_yaml_str(text).unwrap();
        let desired = config.compile().unwrap();
        runner.apply(&config, &desired)
    };
    apply(&mut runner, CONFIG).unwrap();
    // A new seed with an IPv6 service this engine has no IPv6 source for: refused.
    let refused = CONFIG.replace("hash_seed: 7", "hash_seed: 8").replace(
        "  - { name: c,",
        "  - { name: v6, vip: '2001:db8::1', services: [{ port: 80 }], network_profile: dsr, pool: p6, se_group: g1 }\n  - { name: c,",
    ).replace(
        "  - { name: p, servers:",
        "  - { name: p6, servers: [{ ip: '2001:db8::10' }] }\n  - { name: p, servers:",
    );
    assert!(apply(&mut runner, &refused).is_err());
    assert_eq!(runner.engine().dataplane().settings().unwrap().hash_seed, 7);
    let names: Vec<&str> = runner
        .current()
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["a"], "the running configuration stays");
}
