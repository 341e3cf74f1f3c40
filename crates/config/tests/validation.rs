//! One test per validation rule: each asserts the path and the full message, and most
//! that the error is the only one (no cascade of follow-up errors).

mod common;

use std::net::IpAddr;

use common::{assert_only_error, base, errors, yaml};
use ricochet_config::{
    ApplicationProfile, ApplicationProfileType, Config, DsrEncapsulation, DsrType, HealthMonitor,
    HealthMonitorType, HttpMonitor, Known, KnownNames, NetworkProfileType, Server, Service,
    TcpMonitor,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn server(addr: &str) -> Server {
    Server {
        ip: ip(addr),
        port: None,
        ratio: 1,
        enabled: true,
    }
}

fn monitor(name: &str, kind: HealthMonitorType) -> HealthMonitor {
    HealthMonitor {
        name: name.to_owned(),
        kind,
        send_interval: 10,
        receive_timeout: 4,
        successful_checks: 2,
        failed_checks: 2,
        monitor_port: None,
        tcp_monitor: None,
        udp_monitor: None,
        http_monitor: None,
        dsr_path: false,
    }
}

// ---------------------------------------------------------------------------------------
// Valid configurations
// ---------------------------------------------------------------------------------------

#[test]
fn base_and_seed_are_valid() {
    base();
    let seed = Config::load(common::SEED_PATH).expect("seed.yaml parses");
    assert_eq!(seed.validate(), Ok(()));
}

#[test]
fn empty_configuration_is_valid() {
    assert_eq!(Config::default().validate(), Ok(()));
}

#[test]
fn valid_variations_pass() {
    let config = yaml(
        r#"
network_profiles:
  - name: tcp
    type: tcp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
    session_idle_timeout: 14400
  - name: udp
    type: udp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
    session_idle_timeout: 2
  # Unused proxy profiles are allowed (nothing refers to them).
  - name: proxy
    type: tcp_proxy
application_profiles:
  - name: System-L4-Application
    type: l4
  - name: my-l4
    type: l4
health_monitors:
  - name: http
    type: http
    monitor_port: 8080
    http_monitor:
      http_request: "HEAD /health HTTP/1.1"
      http_response_code: [http_2xx]
  - name: ping
    type: icmp
    send_interval: 2
    receive_timeout: 0
    successful_checks: 50
    failed_checks: 1
pools:
  - name: pool
    table_size: 211
    consistent_hash: source_ip_and_port
    health_monitors: [http, ping]
    servers:
      - { ip: 10.0.0.1, port: 53, ratio: 20 }
      - { ip: 10.0.0.2, ratio: 1, enabled: false }
  - name: empty-pool
virtual_services:
  # The same VIP and port over TCP and UDP, as DNS does.
  - name: dns-tcp
    vip: 10.1.0.1
    services: [{ port: 53 }]
    application_profile: my-l4
    network_profile: tcp
    pool: pool
  - name: dns-udp
    vip: 10.1.0.1
    services: [{ port: 53 }]
    network_profile: udp
    pool: pool
  # Same VIP and protocol, ports next to each other: no overlap.
  - name: web
    vip: 10.1.0.1
    services: [{ port: 80 }, { port: 81, port_range_end: 90 }, { port: 54, port_range_end: 79 }]
    network_profile: tcp
    pool: empty-pool
  - name: all-ports
    vip: 10.1.0.2
    services: [{ port: 1, port_range_end: 65535 }]
    network_profile: tcp
    pool: empty-pool
    enabled: false
"#,
    );
    // receive_timeout 0 is the only error: it proves the rest of this file is accepted.
    assert_only_error(
        &config,
        r#"health_monitors["ping"].receive_timeout"#,
        "receive_timeout 0 is out of range (1 to 2400 seconds)",
    );
    let mut config = config;
    config.health_monitors[1].receive_timeout = 1;
    config.health_monitors[1].send_interval = 2;
    assert_eq!(config.validate(), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

#[test]
fn duplicate_names_per_kind() {
    let mut config = base();
    config
        .network_profiles
        .push(config.network_profiles[0].clone());
    config.application_profiles = vec![
        ApplicationProfile {
            name: "l4".into(),
            kind: ApplicationProfileType::L4,
        };
        2
    ];
    config
        .health_monitors
        .push(monitor("hm-tcp", HealthMonitorType::Icmp));
    let mut pool = config.pools[0].clone();
    pool.servers = vec![server("10.0.0.1")];
    config.pools.push(pool);
    let mut vs = config.virtual_services[0].clone();
    vs.vip = ip("10.9.9.9");
    config.virtual_services.push(vs);

    assert_eq!(
        errors(&config),
        [
            (
                "network_profiles[2].name",
                r#"network profile "dsr-tcp" is already declared (network_profiles[0]); names must be unique"#
            ),
            (
                "application_profiles[1].name",
                r#"application profile "l4" is already declared (application_profiles[0]); names must be unique"#
            ),
            (
                "health_monitors[1].name",
                r#"health monitor "hm-tcp" is already declared (health_monitors[0]); names must be unique"#
            ),
            (
                "pools[2].name",
                r#"pool "web-pool" is already declared (pools[0]); names must be unique"#
            ),
            (
                "virtual_services[2].name",
                r#"virtual service "web-vs" is already declared (virtual_services[0]); names must be unique"#
            ),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

#[test]
fn empty_name() {
    let mut config = base();
    config.pools.push(ricochet_config::Pool {
        name: " ".into(),
        ..config.pools[0].clone()
    });
    config.pools[2].servers.clear();
    assert_only_error(&config, "pools[2].name", "a pool needs a name");
}

// ---------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------

#[test]
fn dangling_pool() {
    let mut config = base();
    config.virtual_services[0].pool = "web-pol".into();
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].pool"#,
        r#"pool "web-pol" does not exist (known pools: web-pool, v6-pool)"#,
    );
}

#[test]
fn a_hint_lists_at_most_twenty_names() {
    let mut config = base();
    let template = config.pools[0].clone();
    config.pools = (0..25)
        .map(|i| ricochet_config::Pool {
            name: format!("p{i:02}"),
            ..template.clone()
        })
        .collect();
    config.virtual_services.truncate(1);
    config.virtual_services[0].pool = "web-pol".into();
    let first: Vec<String> = (0..20).map(|i| format!("p{i:02}")).collect();
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].pool"#,
        &format!(
            r#"pool "web-pol" does not exist (known pools: {} and 5 more)"#,
            first.join(", ")
        ),
    );
}

#[test]
fn a_part_names_the_whole_configurations_objects_in_its_hints() {
    let mut config = base();
    config.virtual_services.truncate(1);
    config.virtual_services[0].pool = "web-pol".into();
    let names = KnownNames {
        pools: Known {
            first: vec!["a".into(), "b".into()],
            total: 9000,
        },
        ..KnownNames::default()
    };
    let errors = config.validate_part(&names).unwrap_err();
    assert_eq!(
        errors.errors()[0].message,
        r#"pool "web-pol" does not exist (known pools: a, b and 8998 more)"#
    );
    assert_eq!(errors.len(), 1, "{errors}");
}

#[test]
fn dangling_network_profile() {
    let mut config = base();
    config.virtual_services[0].network_profile = "dsr".into();
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].network_profile"#,
        r#"network profile "dsr" does not exist (known network profiles: dsr-tcp, dsr-udp)"#,
    );
}

#[test]
fn dangling_application_profile() {
    let mut config = base();
    config.virtual_services[0].application_profile = "System-L7-Application".into();
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].application_profile"#,
        r#"application profile "System-L7-Application" does not exist (known application profiles: System-L4-Application)"#,
    );
}

#[test]
fn dangling_health_monitor() {
    let mut config = base();
    config.pools[0].health_monitors = vec!["hm-tcp".into(), "hm-http".into()];
    assert_only_error(
        &config,
        r#"pools["web-pool"].health_monitors[1]"#,
        r#"health monitor "hm-http" does not exist (known health monitors: hm-tcp)"#,
    );
    config.health_monitors.clear();
    config.pools[0].health_monitors = vec!["hm-tcp".into()];
    assert_only_error(
        &config,
        r#"pools["web-pool"].health_monitors[0]"#,
        r#"health monitor "hm-tcp" does not exist (no health monitors are declared)"#,
    );
}

// ---------------------------------------------------------------------------------------
// Network profiles and DSR
// ---------------------------------------------------------------------------------------

#[test]
fn dsr_not_enabled() {
    let mut config = base();
    config.network_profiles[0].dsr.as_mut().unwrap().enabled = false;
    let message = r#"DSR requires a network profile with DSR enabled, and network profile "dsr-tcp" has dsr.enabled: false; set dsr: { enabled: true, type: l3, encapsulation: ipinip }"#;
    assert_eq!(
        errors(&config),
        [
            (r#"virtual_services["web-vs"].network_profile"#, message),
            (r#"virtual_services["v6-vs"].network_profile"#, message),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

#[test]
fn dsr_section_missing() {
    let mut config = base();
    config.network_profiles[0].dsr = None;
    config.virtual_services.truncate(1);
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].network_profile"#,
        r#"DSR requires a network profile with DSR enabled, and network profile "dsr-tcp" has no dsr section; set dsr: { enabled: true, type: l3, encapsulation: ipinip }"#,
    );
}

#[test]
fn network_profile_not_fast_path() {
    let mut config = base();
    config.network_profiles[0].kind = NetworkProfileType::TcpProxy;
    config.network_profiles[0].dsr = None;
    config.virtual_services.truncate(1);
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].network_profile"#,
        r#"network profile "dsr-tcp" is a tcp_proxy profile, not a fast-path one; Ricochet only forwards packets, so use a tcp_fast_path profile with DSR enabled"#,
    );
}

#[test]
fn dsr_on_proxy_profile() {
    let mut config = base();
    config.network_profiles[1].kind = NetworkProfileType::UdpProxy;
    assert_only_error(
        &config,
        r#"network_profiles["dsr-udp"].dsr"#,
        "DSR is only available on fast-path profiles (tcp_fast_path, udp_fast_path); a udp_proxy profile terminates connections",
    );
}

#[test]
fn dsr_l2_compiles_to_the_mac_mode_and_refuses_a_tunnel() {
    let mut config = base();
    config.network_profiles[1].dsr.as_mut().unwrap().kind = DsrType::L2;
    let desired = config
        .compile()
        .expect("L2 DSR is accepted with encapsulation: ipinip");
    assert!(desired
        .services
        .iter()
        .filter(|s| s.protocol == ricochet_config::Protocol::Udp)
        .all(|s| s.encapsulation == ricochet_config::Encapsulation::L2));
    config.network_profiles[1]
        .dsr
        .as_mut()
        .unwrap()
        .encapsulation = DsrEncapsulation::Gre;
    assert_only_error(
        &config,
        r#"network_profiles["dsr-udp"].dsr.encapsulation"#,
        "DSR type l2 sends the client's frame unchanged at the IP layer to the server's MAC \
         address, so encapsulation: gre does not apply; leave encapsulation: ipinip (Avi's \
         default) or use type: l3",
    );
    // Also when DSR is disabled: the value would fail the day it is enabled.
    config.network_profiles[1].dsr.as_mut().unwrap().enabled = false;
    assert_eq!(errors(&config).len(), 1);
}

#[test]
fn gre_and_gue_compile_into_the_service_with_the_gue_port() {
    let mut config = base();
    let dsr = config.network_profiles[0].dsr.as_mut().unwrap();
    dsr.encapsulation = DsrEncapsulation::Gre;
    let desired = config.compile().expect("GRE is accepted");
    assert!(desired
        .services
        .iter()
        .filter(|s| s.protocol == ricochet_config::Protocol::Tcp)
        .all(|s| s.encapsulation == ricochet_config::Encapsulation::Gre));

    let dsr = config.network_profiles[0].dsr.as_mut().unwrap();
    dsr.encapsulation = DsrEncapsulation::Gue;
    let tcp = |config: &Config| {
        config
            .compile()
            .unwrap()
            .services
            .into_iter()
            .find(|s| s.protocol == ricochet_config::Protocol::Tcp)
            .unwrap()
            .encapsulation
    };
    assert_eq!(
        tcp(&config),
        ricochet_config::Encapsulation::Gue { port: 6080 },
        "the default port"
    );
    config.network_profiles[0].dsr.as_mut().unwrap().gue_port = Some(7777);
    assert_eq!(
        tcp(&config),
        ricochet_config::Encapsulation::Gue { port: 7777 }
    );
}

#[test]
fn gue_port_is_refused_without_gue_or_when_zero() {
    let mut config = base();
    config.network_profiles[0].dsr.as_mut().unwrap().gue_port = Some(6080);
    assert_only_error(
        &config,
        r#"network_profiles["dsr-tcp"].dsr.gue_port"#,
        "gue_port 6080 only applies to encapsulation: gue, and this profile has encapsulation: \
         ipinip; remove it or set encapsulation: gue",
    );
    let dsr = config.network_profiles[0].dsr.as_mut().unwrap();
    dsr.encapsulation = DsrEncapsulation::Gue;
    dsr.gue_port = Some(0);
    assert_only_error(
        &config,
        r#"network_profiles["dsr-tcp"].dsr.gue_port"#,
        "gue_port 0 is not a port: give the UDP port the servers' decapsulation listens on \
         (1 to 65535; 6080 when absent)",
    );
    let parsed = yaml(
        r#"
network_profiles:
  - name: p
    type: udp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: gue, gue_port: 7000 }
"#,
    );
    let dsr = parsed.network_profiles[0].dsr.as_ref().unwrap();
    assert_eq!(
        (dsr.encapsulation, dsr.gue_port),
        (DsrEncapsulation::Gue, Some(7000))
    );
}

#[test]
fn session_idle_timeout_out_of_range() {
    let mut config = base();
    config.network_profiles[0].session_idle_timeout = Some(0);
    config.network_profiles[1].session_idle_timeout = Some(3601);
    assert_eq!(
        errors(&config),
        [
            (
                r#"network_profiles["dsr-tcp"].session_idle_timeout"#,
                "session_idle_timeout 0 is out of range: a tcp_fast_path profile allows 5 to 14400 seconds"
            ),
            (
                r#"network_profiles["dsr-udp"].session_idle_timeout"#,
                "session_idle_timeout 3601 is out of range: a udp_fast_path profile allows 2 to 3600 seconds"
            ),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

// ---------------------------------------------------------------------------------------
// Virtual services: VIPs and ports
// ---------------------------------------------------------------------------------------

#[test]
fn empty_services() {
    let mut config = base();
    config.virtual_services[0].services.clear();
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].services"#,
        "at least one service is required, e.g. { port: 80 } (all ports: { port: 1, port_range_end: 65535 })",
    );
}

#[test]
fn port_zero() {
    let mut config = base();
    config.virtual_services[0].services = vec![Service {
        port: 0,
        port_range_end: None,
    }];
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].services[0].port"#,
        "port 0 is not a valid port (1 to 65535; all ports is { port: 1, port_range_end: 65535 })",
    );
}

#[test]
fn port_range_end_below_port() {
    let mut config = base();
    config.virtual_services[0].services.push(Service {
        port: 8080,
        port_range_end: Some(8000),
    });
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].services[1].port_range_end"#,
        "port_range_end 8000 is below port 8080",
    );
}

#[test]
fn overlapping_services_in_one_virtual_service() {
    let mut config = base();
    config.virtual_services[0].services.push(Service {
        port: 70,
        port_range_end: Some(90),
    });
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].services[1]"#,
        "ports 70-90 overlap services[0] (80) of this virtual service",
    );
    config.virtual_services[0].services[1] = Service {
        port: 80,
        port_range_end: None,
    };
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].services[1]"#,
        "port 80 overlaps services[0] (80) of this virtual service",
    );
}

#[test]
fn same_vip_protocol_and_port_in_two_virtual_services() {
    let mut config = base();
    let mut other = config.virtual_services[0].clone();
    other.name = "web-vs-2".into();
    other.services = vec![
        Service {
            port: 443,
            port_range_end: None,
        },
        Service {
            port: 1,
            port_range_end: Some(65535),
        },
    ];
    other.enabled = false; // Disabled virtual services count too.
    config.virtual_services.push(other);
    config.virtual_services[2].services.remove(0);
    assert_only_error(
        &config,
        r#"virtual_services["web-vs-2"].services[0]"#,
        r#"ports 1-65535 overlap services[0] (80) of virtual service "web-vs", on the same VIP 192.168.35.241 and protocol TCP; a packet must belong to one virtual service"#,
    );

    // The same port over UDP, or on another VIP, is no conflict.
    config.virtual_services[2].network_profile = "dsr-udp".into();
    assert_eq!(config.validate(), Ok(()));
    config.virtual_services[2].network_profile = "dsr-tcp".into();
    config.virtual_services[2].vip = ip("192.168.35.242");
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn unusable_vips() {
    let cases = [
        ("0.0.0.0", "the unspecified address"),
        ("127.0.0.1", "a loopback address"),
        ("224.0.0.1", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
    ];
    for (addr, why) in cases {
        let mut config = base();
        config.virtual_services[0].vip = ip(addr);
        assert_only_error(
            &config,
            r#"virtual_services["web-vs"].vip"#,
            &format!("{addr} is {why}; a VIP must be a unicast address clients can reach"),
        );
    }
    let cases = [
        ("::", "the unspecified address".to_owned()),
        ("::1", "the loopback address".to_owned()),
        ("ff02::1", "a multicast address".to_owned()),
        (
            "::ffff:192.0.2.1",
            "an IPv4-mapped IPv6 address (write it as the IPv4 address 192.0.2.1)".to_owned(),
        ),
    ];
    for (addr, why) in cases {
        let mut config = base();
        config.virtual_services[1].vip = ip(addr);
        assert_only_error(
            &config,
            r#"virtual_services["v6-vs"].vip"#,
            &format!("{addr} is {why}; a VIP must be a unicast address clients can reach"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Pools and servers
// ---------------------------------------------------------------------------------------

#[test]
fn server_ip_is_a_vip() {
    let mut config = base();
    config.pools[0].servers[1].ip = ip("192.168.35.241");
    assert_only_error(
        &config,
        r#"pools["web-pool"].servers[1].ip"#,
        r#"192.168.35.241 is the VIP of virtual service "web-vs"; use the server's own address, not the VIP (with DSR the VIP is configured on the server's loopback)"#,
    );
}

#[test]
fn server_ip_is_the_vip_of_an_unrelated_virtual_service() {
    let mut config = base();
    config.pools[1].servers[0].ip = ip("fc00:3::24a");
    config.virtual_services.truncate(1);
    config
        .virtual_services
        .push(ricochet_config::VirtualService {
            name: "other".into(),
            vip: ip("fc00:3::24a"),
            services: vec![Service {
                port: 443,
                port_range_end: None,
            }],
            application_profile: ricochet_config::SYSTEM_L4_APPLICATION.into(),
            network_profile: "dsr-tcp".into(),
            pool: "v6-pool".into(),
            enabled: false,
            se_group: None,
        });
    let errs = errors(&config);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, r#"pools["v6-pool"].servers[0].ip"#);
    assert!(errs[0]
        .1
        .starts_with(r#"fc00:3::24a is the VIP of virtual service "other""#));
}

#[test]
fn unusable_server_ips() {
    let cases = [
        ("0.0.0.0", "the unspecified address"),
        ("127.0.0.53", "a loopback address"),
        ("239.1.1.1", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
    ];
    for (addr, why) in cases {
        let mut config = base();
        config.pools[0].servers[0].ip = ip(addr);
        assert_only_error(
            &config,
            r#"pools["web-pool"].servers[0].ip"#,
            &format!("{addr} is {why}; a server needs a unicast address of its own"),
        );
    }
    for (addr, why) in [
        ("::", "the unspecified address"),
        ("ff05::2", "a multicast address"),
    ] {
        let mut config = base();
        config.pools[1].servers[1].ip = ip(addr);
        assert_only_error(
            &config,
            r#"pools["v6-pool"].servers[1].ip"#,
            &format!("{addr} is {why}; a server needs a unicast address of its own"),
        );
    }
}

#[test]
fn duplicate_server_in_pool() {
    let mut config = base();
    config.pools[0].servers.push(server("192.168.33.10"));
    config.pools[0].servers.push(server("192.168.33.10"));
    let message = "server 192.168.33.10 is already in this pool (servers[0])";
    assert_eq!(
        errors(&config),
        [
            (r#"pools["web-pool"].servers[2].ip"#, message),
            (r#"pools["web-pool"].servers[3].ip"#, message),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

#[test]
fn ratio_out_of_range() {
    let mut config = base();
    config.pools[0].servers[0].ratio = 0;
    config.pools[0].servers[1].ratio = 21;
    assert_eq!(
        errors(&config),
        [
            (
                r#"pools["web-pool"].servers[0].ratio"#,
                "ratio 0 is out of range (1 to 20)"
            ),
            (
                r#"pools["web-pool"].servers[1].ratio"#,
                "ratio 21 is out of range (1 to 20)"
            ),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

#[test]
fn mixed_families() {
    let mut config = base();
    config.pools[0].servers.push(server("fc00::99"));
    assert_only_error(
        &config,
        r#"virtual_services["web-vs"].pool"#,
        r#"pool "web-pool" has IPv6 server fc00::99 (servers[2]) but the VIP 192.168.35.241 is IPv4; DSR encapsulates IPv4 in IPv4 and IPv6 in IPv6, so every server must be in the VIP's family"#,
    );

    let mut config = base();
    config.virtual_services[1].pool = "web-pool".into();
    let errs = errors(&config);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, r#"virtual_services["v6-vs"].pool"#);
    assert_eq!(
        errs[0].1,
        r#"pool "web-pool" has IPv4 server 192.168.33.10 (servers[0]) but the VIP fc00:3::24a is IPv6; DSR encapsulates IPv4 in IPv4 and IPv6 in IPv6, so every server must be in the VIP's family"#
    );
}

#[test]
fn table_size_not_prime() {
    let mut config = base();
    config.pools[0].table_size = Some(65536);
    assert_only_error(
        &config,
        r#"pools["web-pool"].table_size"#,
        "table_size 65536 is not prime (Maglev needs a prime table size); the next prime is 65537",
    );
}

#[test]
fn table_size_too_small() {
    let mut config = base();
    config.pools[0].table_size = Some(199);
    assert_only_error(
        &config,
        r#"pools["web-pool"].table_size"#,
        "table_size 199 is too small for 2 servers: Maglev needs at least 100 slots per server (200); use a prime of at least 200, such as 211",
    );
    config.pools[0].table_size = Some(211);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn table_size_too_large() {
    let mut config = base();
    config.pools[0].table_size = Some(4_294_967_291);
    assert_only_error(
        &config,
        r#"pools["web-pool"].table_size"#,
        "table_size 4294967291 is larger than the maximum, 1048573",
    );
}

#[test]
fn too_many_servers() {
    let mut config = base();
    config.pools[0].servers = (0..10_486u32)
        .map(|i| server(&format!("10.{}.{}.1", i / 256, i % 256)))
        .collect();
    assert_only_error(
        &config,
        r#"pools["web-pool"].servers"#,
        "10486 servers are more than a pool can hold (10485: 100 Maglev slots each within the largest table, 1048573)",
    );
    config.pools[0].servers.pop();
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn server_port_must_match_the_service_port() {
    let mut config = base();
    config.pools[0].servers[0].port = Some(80);
    assert_eq!(config.validate(), Ok(()), "the VIP's own port is accepted");

    config.pools[0].servers[1].port = Some(8080);
    assert_only_error(
        &config,
        r#"pools["web-pool"].servers[1].port"#,
        r#"port 8080 differs from port 80 of virtual service "web-vs", which uses this pool; with DSR the server receives packets on the VIP's port, so omit port or set it to 80"#,
    );
}

#[test]
fn server_port_with_a_multi_port_service() {
    let mut config = base();
    config.pools[0].servers[0].port = Some(80);
    config.virtual_services[0].services.push(Service {
        port: 8000,
        port_range_end: Some(8010),
    });
    assert_only_error(
        &config,
        r#"pools["web-pool"].servers[0].port"#,
        r#"port 80 cannot hold for virtual service "web-vs", which uses this pool and serves ports 80, 8000-8010; with DSR the server receives packets on the port the client used, so omit port"#,
    );
}

#[test]
fn server_port_zero() {
    let mut config = base();
    config.pools[0].servers[0].port = Some(0);
    assert_only_error(
        &config,
        r#"pools["web-pool"].servers[0].port"#,
        "port 0 is not a port; omit port (with DSR the server receives packets on the VIP's port)",
    );
}

// ---------------------------------------------------------------------------------------
// Health monitors
// ---------------------------------------------------------------------------------------

#[test]
fn monitor_intervals_out_of_range() {
    let mut config = base();
    let m = &mut config.health_monitors[0];
    m.send_interval = 3601;
    m.successful_checks = 0;
    m.failed_checks = 51;
    assert_eq!(
        errors(&config),
        [
            (
                r#"health_monitors["hm-tcp"].send_interval"#,
                "send_interval 3601 is out of range (2 to 3600 seconds)"
            ),
            (
                r#"health_monitors["hm-tcp"].successful_checks"#,
                "successful_checks 0 is out of range (1 to 50)"
            ),
            (
                r#"health_monitors["hm-tcp"].failed_checks"#,
                "failed_checks 51 is out of range (1 to 50)"
            ),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

/// An interval of 1 second leaves no `receive_timeout` (at least 1 and below it): refused
/// by its range, which the OpenAPI document states, not by the other field.
#[test]
fn monitor_send_interval_of_one_second() {
    let mut config = base();
    config.health_monitors[0].send_interval = 1;
    config.health_monitors[0].receive_timeout = 1;
    assert_only_error(
        &config,
        r#"health_monitors["hm-tcp"].send_interval"#,
        "send_interval 1 is out of range (2 to 3600 seconds)",
    );
}

#[test]
fn monitor_receive_timeout_not_below_send_interval() {
    let mut config = base();
    config.health_monitors[0].receive_timeout = 10;
    assert_only_error(
        &config,
        r#"health_monitors["hm-tcp"].receive_timeout"#,
        "receive_timeout 10 must be less than send_interval 10: an answer must arrive before the next check is sent",
    );
}

#[test]
fn monitor_port() {
    let mut config = base();
    config.health_monitors[0].monitor_port = Some(0);
    assert_only_error(
        &config,
        r#"health_monitors["hm-tcp"].monitor_port"#,
        "monitor_port 0 is not a port (1 to 65535); omit it to check the service port",
    );
    config.health_monitors[0].kind = HealthMonitorType::Icmp;
    config.health_monitors[0].monitor_port = Some(80);
    assert_only_error(
        &config,
        r#"health_monitors["hm-tcp"].monitor_port"#,
        "an icmp monitor has no port; remove monitor_port",
    );
}

#[test]
fn monitor_settings_of_another_type() {
    let mut config = base();
    config.health_monitors[0].http_monitor = Some(HttpMonitor::default());
    assert_only_error(
        &config,
        r#"health_monitors["hm-tcp"].http_monitor"#,
        "http_monitor applies to http monitors, but this monitor is of type tcp",
    );
    config.health_monitors[0].http_monitor = None;
    config.health_monitors[0].kind = HealthMonitorType::Udp;
    config.health_monitors[0].tcp_monitor = Some(TcpMonitor::default());
    assert_only_error(
        &config,
        r#"health_monitors["hm-tcp"].tcp_monitor"#,
        "tcp_monitor applies to tcp monitors, but this monitor is of type udp",
    );
}

#[test]
fn monitor_http_request_and_codes() {
    let mut config = base();
    let mut m = monitor("hm-http", HealthMonitorType::Http);
    m.http_monitor = Some(HttpMonitor {
        http_request: "get index.html".into(),
        http_response_code: vec![],
        http_response: None,
    });
    config.health_monitors.push(m);
    assert_eq!(
        errors(&config),
        [
            (
                r#"health_monitors["hm-http"].http_monitor.http_request"#,
                r#"http_request "get index.html" is not a request line such as "GET /health HTTP/1.0""#
            ),
            (
                r#"health_monitors["hm-http"].http_monitor.http_response_code"#,
                "at least one response code is required, e.g. [http_2xx]"
            ),
        ]
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
    );
}

#[test]
fn monitor_http_request_lines_are_checked_as_the_checker_sends_them() {
    let cases = [
        ("GET /health HTTP/1.1\\r\\nHost: www.example.com", None),
        ("GET /health\r\nHost: www.example.com\r\n", None),
        ("HEAD /", None),
        (
            "",
            Some(r#"http_request "" is not a request line such as "GET /health HTTP/1.0""#),
        ),
        (
            "GET / HTTP/1.1 extra",
            Some(
                r#"http_request "GET / HTTP/1.1 extra" is not a request line such as "GET /health HTTP/1.0""#,
            ),
        ),
        (
            "GET / HTTP/2",
            Some(
                r#"http_request "GET / HTTP/2" asks for HTTP/2: the monitor speaks HTTP/1.0 or HTTP/1.1 (or omit the version for HTTP/1.0)"#,
            ),
        ),
        (
            "GET / HTTP/1.1\\r\\nHost www.example.com",
            Some(
                r#"http_request "GET / HTTP/1.1\\r\\nHost www.example.com" has a header line "Host www.example.com" that is not "Name: value""#,
            ),
        ),
        (
            "GET /\r\n: empty-name",
            Some(
                r#"http_request "GET /\r\n: empty-name" has a header line ": empty-name" that is not "Name: value""#,
            ),
        ),
    ];
    for (request, expected) in cases {
        let mut config = base();
        let mut m = monitor("hm-http", HealthMonitorType::Http);
        m.http_monitor = Some(HttpMonitor {
            http_request: request.into(),
            ..HttpMonitor::default()
        });
        config.health_monitors.push(m);
        match expected {
            None => assert_eq!(config.validate(), Ok(()), "for {request:?}"),
            Some(message) => assert_eq!(
                errors(&config),
                [(
                    r#"health_monitors["hm-http"].http_monitor.http_request"#.to_owned(),
                    message.to_owned()
                )],
                "for {request:?}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Service engine groups
// ---------------------------------------------------------------------------------------

/// [`base`] with two groups: `g1` (two dual-stack members peering over IPv4 and IPv6) and
/// `g2` (one IPv4 member, no BGP); `web-vs` is carried by `g1`.
fn with_groups() -> Config {
    let mut config = base();
    config.service_engine_groups = yaml(
        r#"
service_engine_groups:
  - name: g1
    hash_seed: 7
    engines:
      - { name: se1, addresses: [192.168.33.7, "fc00::7"] }
      - { name: se2.lab_a, addresses: ["fc00::8", 192.168.33.8] }
    bgp:
      local_as: 65001
      peers: [{ ip: 192.168.33.1, remote_as: 65000 }, { ip: "fc00::1", remote_as: 4294967295 }]
      hold_time: 3
      bfd: true
      bfd_interval_ms: 10
  - name: g2
    engines: [{ name: se3, addresses: [192.168.34.7] }]
"#,
    )
    .service_engine_groups;
    config.virtual_services[0].se_group = Some("g1".into());
    assert_eq!(config.validate(), Ok(()));
    config
}

fn bgp(config: &mut Config, group: usize) -> &mut ricochet_config::GroupBgp {
    config.service_engine_groups[group].bgp.as_mut().unwrap()
}

#[test]
fn groups_parse_with_their_defaults() {
    let config = with_groups();
    let g2 = &config.service_engine_groups[1];
    assert_eq!(g2.hash_seed, 0);
    assert!(g2.bgp.is_none());
    let config = yaml(
        r#"
service_engine_groups:
  - name: g
    engines: [{ name: se1, addresses: [192.168.33.7] }]
    bgp: { local_as: 65001, peers: [{ ip: 192.168.33.1, remote_as: 65000 }] }
"#,
    );
    let bgp = config.service_engine_groups[0].bgp.as_ref().unwrap();
    assert_eq!(
        (bgp.hold_time, bgp.bfd, bgp.bfd_interval_ms),
        (9, false, 100)
    );
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn group_names_are_object_names_and_unique() {
    let mut config = with_groups();
    config.service_engine_groups[1].name = "g 2".into();
    assert_only_error(
        &config,
        "service_engine_groups[1].name",
        &format!(
            r#"service engine group name "g 2" is not valid: use {}"#,
            ricochet_config::NAME_RULE
        ),
    );
    config.service_engine_groups[1].name = "g1".into();
    config.service_engine_groups[1].engines[0].name = "se4".into();
    assert_only_error(
        &config,
        "service_engine_groups[1].name",
        r#"service engine group "g1" is already declared (service_engine_groups[0]); names must be unique"#,
    );
}

#[test]
fn group_engine_names_follow_the_engine_name_rule() {
    let mut config = with_groups();
    config.service_engine_groups[1].engines[0].name = "se:3".into();
    assert_only_error(
        &config,
        r#"service_engine_groups["g2"].engines[0].name"#,
        r#"engine name "se:3" is not valid: use 1 to 253 letters, digits, '-', '.' or '_' (a host name)"#,
    );
    config.service_engine_groups[1].engines[0].name = String::new();
    assert_eq!(errors(&config).len(), 1);
    config.service_engine_groups[1].engines[0].name = "a".repeat(254);
    assert_eq!(errors(&config).len(), 1);
    // The longest host name, and the characters a host name has, are fine.
    config.service_engine_groups[1].engines[0].name = "a".repeat(253);
    assert_eq!(config.validate(), Ok(()));
    config.service_engine_groups[1].engines[0].name = "-A9._-".into();
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn an_engine_is_in_a_group_once() {
    let mut config = with_groups();
    let mut twice = config.service_engine_groups[0].engines[0].clone();
    twice.addresses = vec![ip("192.168.33.9"), ip("fc00::9")];
    config.service_engine_groups[0].engines.push(twice);
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].engines[2].name"#,
        r#"engine "se1" is already in this group (engines[0])"#,
    );
}

#[test]
fn an_engine_is_in_at_most_one_group() {
    let mut config = with_groups();
    config.service_engine_groups[1].engines[0].name = "se2.lab_a".into();
    assert_only_error(
        &config,
        r#"service_engine_groups["g2"].engines[0].name"#,
        r#"engine "se2.lab_a" is in service engine group "g1" (engines[1]) and in "g2"; an engine is in at most one group: it carries that group's virtual services"#,
    );
}

#[test]
fn an_engine_has_one_or_two_addresses() {
    let mut config = with_groups();
    config.service_engine_groups[1].engines[0].addresses.clear();
    assert_only_error(
        &config,
        r#"service_engine_groups["g2"].engines[0].addresses"#,
        "an engine needs an address: the source of its BGP sessions and the routers' next hop \
         (one IPv4, one IPv6, or one of each)",
    );
    config.service_engine_groups[1].engines[0].addresses =
        vec![ip("192.168.34.7"), ip("fc00::34:7"), ip("fc00::34:8")];
    assert_only_error(
        &config,
        r#"service_engine_groups["g2"].engines[0].addresses"#,
        "3 addresses are too many: an engine has at most 2, one IPv4 and one IPv6",
    );
}

#[test]
fn an_engine_has_one_address_per_family() {
    let mut config = with_groups();
    config.service_engine_groups[1].engines[0].addresses =
        vec![ip("192.168.34.7"), ip("192.168.34.8")];
    assert_only_error(
        &config,
        r#"service_engine_groups["g2"].engines[0].addresses[1]"#,
        "a second IPv4 address (addresses[0] is 192.168.34.7); an engine has at most one \
         address per family",
    );
    config.service_engine_groups[1].engines[0].addresses = vec![ip("fc00::7"), ip("fc00::8")];
    assert_only_error(
        &config,
        r#"service_engine_groups["g2"].engines[0].addresses[1]"#,
        "a second IPv6 address (addresses[0] is fc00::7); an engine has at most one address \
         per family",
    );
}

#[test]
fn unusable_engine_addresses() {
    for (addr, why) in [
        ("0.0.0.0", "the unspecified address"),
        ("127.0.0.1", "a loopback address"),
        ("224.0.0.5", "a multicast address"),
        ("::", "the unspecified address"),
        ("::1", "the loopback address"),
        ("ff02::5", "a multicast address"),
    ] {
        let mut config = with_groups();
        config.service_engine_groups[1].engines[0].addresses = vec![ip(addr)];
        assert_only_error(
            &config,
            r#"service_engine_groups["g2"].engines[0].addresses[0]"#,
            &format!("{addr} is {why}; an engine's address is a unicast address of its interface"),
        );
    }
}

#[test]
fn bgp_needs_a_peer() {
    let mut config = with_groups();
    bgp(&mut config, 0).peers.clear();
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.peers"#,
        "at least one peer is required: the router the members announce the VIPs to, e.g. \
         { ip: 192.168.33.1, remote_as: 65000 } (no announcement at all: remove bgp)",
    );
}

#[test]
fn bgp_peers_are_unique_and_unicast() {
    let mut config = with_groups();
    let mut again = bgp(&mut config, 0).peers[0].clone();
    again.remote_as = 65002;
    bgp(&mut config, 0).peers.push(again);
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.peers[2].ip"#,
        "peer 192.168.33.1 is already declared (peers[0])",
    );
    bgp(&mut config, 0).peers[2].ip = ip("224.0.0.5");
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.peers[2].ip"#,
        "224.0.0.5 is a multicast address; a peer is a router's unicast address",
    );
}

#[test]
fn as_numbers_are_not_zero() {
    let mut config = with_groups();
    bgp(&mut config, 0).local_as = 0;
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.local_as"#,
        "local_as 0 is out of range (1 to 4294967295)",
    );
    bgp(&mut config, 0).local_as = 1;
    bgp(&mut config, 0).peers[1].remote_as = 0;
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.peers[1].remote_as"#,
        "remote_as 0 is out of range (1 to 4294967295)",
    );
}

#[test]
fn hold_time_and_bfd_interval_out_of_range() {
    let mut config = with_groups();
    bgp(&mut config, 0).hold_time = 2;
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.hold_time"#,
        "hold_time 2 is out of range (3 to 65535 seconds)",
    );
    bgp(&mut config, 0).hold_time = 0;
    assert_eq!(errors(&config).len(), 1);
    bgp(&mut config, 0).hold_time = 65535;
    bgp(&mut config, 0).bfd_interval_ms = 9;
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].bgp.bfd_interval_ms"#,
        "bfd_interval_ms 9 is out of range (10 to 10000 milliseconds)",
    );
    bgp(&mut config, 0).bfd_interval_ms = 10_001;
    assert_eq!(errors(&config).len(), 1);
    // Checked with BFD off too: turning it on must not make the group invalid.
    bgp(&mut config, 0).bfd = false;
    assert_eq!(errors(&config).len(), 1);
    bgp(&mut config, 0).bfd_interval_ms = 10_000;
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn every_member_has_an_address_of_each_peers_family() {
    let mut config = with_groups();
    config.service_engine_groups[0].engines[1].addresses = vec![ip("192.168.33.8")];
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].engines[1].addresses"#,
        r#"engine "se2.lab_a" has no IPv6 address, so it cannot peer with fc00::1 (bgp.peers[1]); give it one on its interface, or remove the group's IPv6 peers"#,
    );
    // Without the IPv6 peer, an IPv4 address is enough.
    bgp(&mut config, 0).peers.truncate(1);
    assert_eq!(config.validate(), Ok(()));
    config.service_engine_groups[0].engines[0].addresses = vec![ip("fc00::7")];
    assert_only_error(
        &config,
        r#"service_engine_groups["g1"].engines[0].addresses"#,
        r#"engine "se1" has no IPv4 address, so it cannot peer with 192.168.33.1 (bgp.peers[0]); give it one on its interface, or remove the group's IPv4 peers"#,
    );
}

#[test]
fn dangling_se_group() {
    let mut config = with_groups();
    config.virtual_services[1].se_group = Some("g3".into());
    assert_only_error(
        &config,
        r#"virtual_services["v6-vs"].se_group"#,
        r#"service engine group "g3" does not exist (known service engine groups: g1, g2)"#,
    );
    config.service_engine_groups.clear();
    config.virtual_services[0].se_group = None;
    assert_only_error(
        &config,
        r#"virtual_services["v6-vs"].se_group"#,
        r#"service engine group "g3" does not exist (no service engine groups are declared)"#,
    );
}

#[test]
fn the_virtual_services_of_a_vip_are_in_one_group() {
    let mut config = with_groups();
    // Another port on web-vs's VIP, carried by no group, then by g2; disabled or not.
    let mut other = config.virtual_services[0].clone();
    other.name = "web-8080".into();
    other.services = vec![Service {
        port: 8080,
        port_range_end: None,
    }];
    other.se_group = None;
    other.enabled = false;
    config.virtual_services.push(other);
    let why = "every virtual service of a VIP must be in the same group (or all in none): \
               the routers send the whole VIP to one group's engines";
    assert_only_error(
        &config,
        r#"virtual_services["web-8080"].se_group"#,
        &format!(
            r#"virtual service "web-vs", on the same VIP 192.168.35.241, is carried by service engine group "g1", and this one by the engines of no group; {why}"#
        ),
    );
    config.virtual_services[2].se_group = Some("g2".into());
    assert_only_error(
        &config,
        r#"virtual_services["web-8080"].se_group"#,
        &format!(
            r#"virtual service "web-vs", on the same VIP 192.168.35.241, is carried by service engine group "g1", and this one by service engine group "g2"; {why}"#
        ),
    );
    config.virtual_services[2].se_group = Some("g1".into());
    assert_eq!(config.validate(), Ok(()));
    // A missing group is its own error, not a second one about the VIP.
    config.virtual_services[2].se_group = Some("g9".into());
    assert_eq!(errors(&config).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

#[test]
fn all_errors_are_collected_in_declaration_order() {
    let config = yaml(
        r#"
network_profiles:
  - name: p
    type: tcp_fast_path
    dsr: { enabled: true, type: l2, encapsulation: gre, gue_port: 1 }
pools:
  - name: pool
    table_size: 100
    servers: [{ ip: 10.0.0.1, ratio: 30 }]
virtual_services:
  - name: vs
    vip: 10.0.0.1
    services: []
    network_profile: nope
    pool: pool
"#,
    );
    let errors = config.validate().unwrap_err();
    let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            r#"network_profiles["p"].dsr.encapsulation"#,
            r#"network_profiles["p"].dsr.gue_port"#,
            r#"pools["pool"].servers[0].ip"#,
            r#"pools["pool"].servers[0].ratio"#,
            r#"pools["pool"].table_size"#,
            r#"virtual_services["vs"].services"#,
            r#"virtual_services["vs"].network_profile"#,
        ]
    );
    assert_eq!(errors.at(r#"pools["pool"].table_size"#).count(), 1);

    let shown = errors.to_string();
    assert!(
        shown.starts_with(
            "invalid configuration (7 errors):\n  - network_profiles[\"p\"].dsr.encapsulation: DSR type l2"
        ),
        "{shown}"
    );

    // The REST API will return the list as JSON.
    let json = serde_json::to_value(&errors).unwrap();
    assert_eq!(
        json[0]["path"],
        r#"network_profiles["p"].dsr.encapsulation"#
    );
}

#[test]
fn a_single_error_displays_on_one_line() {
    let mut config = base();
    config.virtual_services[0].pool = "web-pol".into();
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        r#"invalid configuration: virtual_services["web-vs"].pool: pool "web-pol" does not exist (known pools: web-pool, v6-pool)"#
    );
}
