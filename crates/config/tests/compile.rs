//! Compilation to the desired data-plane state.

mod common;

use std::net::IpAddr;

use common::{base, yaml};
use ricochet_config::{
    Config, ConsistentHash, Desired, DesiredPool, DesiredServer, DesiredService, Encapsulation,
    HashMode, PortSpec, Protocol, Service,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn servers(ips: &[&str]) -> Vec<DesiredServer> {
    ips.iter()
        .map(|s| DesiredServer {
            ip: ip(s),
            ratio: 1,
            enabled: true,
        })
        .collect()
}

#[test]
fn seed_compiles() {
    let desired = Config::load(common::SEED_PATH)
        .unwrap()
        .compile()
        .expect("seed.yaml compiles");
    let expected = Desired {
        services: vec![
            DesiredService {
                name: "dns-vs".into(),
                vip: ip("192.168.35.241"),
                protocol: Protocol::Udp,
                ports: PortSpec::Ranges(vec![(53, 53)]),
                pool: "dns-pool".into(),
                hash: HashMode::SourceIpAndPort,
                idle_timeout_secs: 10,
                encapsulation: Encapsulation::Ipinip,
            },
            DesiredService {
                name: "web-vs".into(),
                vip: ip("192.168.35.241"),
                protocol: Protocol::Tcp,
                ports: PortSpec::Ranges(vec![(80, 80)]),
                pool: "web-pool".into(),
                hash: HashMode::SourceIp,
                idle_timeout_secs: 300,
                encapsulation: Encapsulation::Ipinip,
            },
            DesiredService {
                name: "web-vs-v6".into(),
                vip: ip("fc00:3::24a"),
                protocol: Protocol::Tcp,
                ports: PortSpec::Ranges(vec![(80, 80)]),
                pool: "web-pool-v6".into(),
                hash: HashMode::SourceIp,
                idle_timeout_secs: 300,
                encapsulation: Encapsulation::Ipinip,
            },
        ],
        pools: vec![
            DesiredPool {
                name: "dns-pool".into(),
                table_size: 65537,
                servers: servers(&["192.168.33.10", "192.168.34.10"]),
            },
            DesiredPool {
                name: "web-pool".into(),
                table_size: 65537,
                servers: servers(&["192.168.33.10", "192.168.34.10"]),
            },
            DesiredPool {
                name: "web-pool-v6".into(),
                table_size: 65537,
                servers: servers(&["fc00::10", "fc00:34::10"]),
            },
        ],
    };
    assert_eq!(desired, expected);
}

#[test]
fn compile_refuses_an_invalid_configuration_with_the_validation_errors() {
    let mut config = base();
    config.virtual_services[0].pool = "web-pol".into();
    assert_eq!(config.compile(), Err(config.validate().unwrap_err()));
}

#[test]
fn disabled_virtual_services_and_their_pools_are_left_out() {
    let mut config = base();
    config.virtual_services[1].enabled = false;
    let desired = config.compile().unwrap();
    let names: Vec<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web-vs"]);
    let pools: Vec<&str> = desired.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools, ["web-pool"], "v6-pool is used by no enabled service");
}

#[test]
fn all_ports_compile_to_the_wildcard() {
    let mut config = base();
    config.virtual_services[0].services = vec![Service {
        port: 1,
        port_range_end: Some(65535),
    }];
    assert_eq!(
        config.compile().unwrap().service("web-vs").unwrap().ports,
        PortSpec::All
    );

    // Adjacent ranges covering every port are the wildcard too.
    config.virtual_services[0].services = vec![
        Service {
            port: 1024,
            port_range_end: Some(65535),
        },
        Service {
            port: 1,
            port_range_end: Some(1023),
        },
    ];
    assert_eq!(
        config.compile().unwrap().service("web-vs").unwrap().ports,
        PortSpec::All
    );
}

#[test]
fn port_ranges_are_sorted_and_merged() {
    let mut config = base();
    config.virtual_services[0].services = vec![
        Service {
            port: 8443,
            port_range_end: None,
        },
        Service {
            port: 443,
            port_range_end: None,
        },
        Service {
            port: 81,
            port_range_end: Some(90),
        },
        Service {
            port: 80,
            port_range_end: None,
        },
    ];
    assert_eq!(
        config.compile().unwrap().service("web-vs").unwrap().ports,
        PortSpec::Ranges(vec![(80, 90), (443, 443), (8443, 8443)])
    );
}

#[test]
fn hash_mode_comes_from_the_pool_and_a_pool_may_serve_two_services() {
    let mut config = base();
    config.pools[0].consistent_hash = ConsistentHash::SourceIpAndPort;
    let mut udp = config.virtual_services[0].clone();
    udp.name = "web-udp".into();
    udp.network_profile = "dsr-udp".into();
    config.virtual_services.push(udp);

    let desired = config.compile().unwrap();
    for name in ["web-vs", "web-udp"] {
        let service = desired.service(name).unwrap();
        assert_eq!(service.pool, "web-pool");
        assert_eq!(service.hash, HashMode::SourceIpAndPort);
    }
    assert_eq!(desired.service("web-udp").unwrap().protocol, Protocol::Udp);
    assert_eq!(desired.service("web-udp").unwrap().idle_timeout_secs, 10);
    assert_eq!(desired.service("v6-vs").unwrap().hash, HashMode::SourceIp);
    assert_eq!(
        desired
            .pools
            .iter()
            .filter(|p| p.name == "web-pool")
            .count(),
        1
    );
}

#[test]
fn idle_timeout_is_the_profile_s() {
    let mut config = base();
    config.network_profiles[0].session_idle_timeout = Some(3600);
    let desired = config.compile().unwrap();
    assert!(desired.services.iter().all(|s| s.idle_timeout_secs == 3600));
}

#[test]
fn table_size_explicit_and_default_for_large_pools() {
    let mut config = base();
    config.pools[0].table_size = Some(251);
    config.pools[1].servers = (0..700u32)
        .map(|i| ricochet_config::Server {
            ip: ip(&format!("fc00::{:x}", i + 1)),
            port: None,
            ratio: 1,
            enabled: true,
        })
        .collect();
    let desired = config.compile().unwrap();
    assert_eq!(desired.pool("web-pool").unwrap().table_size, 251);
    assert_eq!(desired.pool("v6-pool").unwrap().table_size, 70001);
}

#[test]
fn servers_are_sorted_and_disabled_ones_kept() {
    let config = yaml(
        r#"
network_profiles:
  - { name: t, type: tcp_fast_path, dsr: { enabled: true, type: l3, encapsulation: ipinip } }
pools:
  - name: p
    servers:
      - { ip: 10.0.0.3, ratio: 5 }
      - { ip: 10.0.0.1, enabled: false }
      - { ip: 10.0.0.2 }
virtual_services:
  - { name: v, vip: 10.0.1.1, services: [{ port: 80 }], network_profile: t, pool: p }
"#,
    );
    let pool = config.compile().unwrap().pools.remove(0);
    assert_eq!(
        pool.servers,
        [
            DesiredServer {
                ip: ip("10.0.0.1"),
                ratio: 1,
                enabled: false
            },
            DesiredServer {
                ip: ip("10.0.0.2"),
                ratio: 1,
                enabled: true
            },
            DesiredServer {
                ip: ip("10.0.0.3"),
                ratio: 5,
                enabled: true
            },
        ]
    );
}

#[test]
fn output_is_independent_of_declaration_order() {
    let config = Config::load(common::SEED_PATH).unwrap();
    let mut shuffled = config.clone();
    shuffled.virtual_services.reverse();
    shuffled.pools.reverse();
    shuffled.network_profiles.reverse();
    for pool in &mut shuffled.pools {
        pool.servers.reverse();
    }
    assert_eq!(shuffled.compile().unwrap(), config.compile().unwrap());
}

#[test]
fn empty_pool_compiles_with_no_servers() {
    let mut config = base();
    config.pools[0].servers.clear();
    let desired = config.compile().unwrap();
    let pool = desired.pool("web-pool").unwrap();
    assert!(pool.servers.is_empty());
    assert_eq!(pool.table_size, 65537);
}

#[test]
fn desired_state_serializes() {
    let desired = base().compile().unwrap();
    let json = serde_json::to_value(&desired).unwrap();
    assert_eq!(json["services"][0]["name"], "v6-vs");
    assert_eq!(json["services"][0]["protocol"], "tcp");
    assert_eq!(json["services"][0]["hash"], "source_ip");
    assert_eq!(
        json["services"][0]["ports"],
        serde_json::json!({ "ranges": [[80, 80]] })
    );
    let back: Desired = serde_json::from_value(json).unwrap();
    assert_eq!(back, desired);
}
