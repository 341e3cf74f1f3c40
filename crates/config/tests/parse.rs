//! Parsing: the YAML shape, defaults, and parse errors with their location.

mod common;

use std::net::IpAddr;

use ricochet_config::{
    Config, ConfigError, ConsistentHash, DsrEncapsulation, DsrType, HealthMonitorType, LbAlgorithm,
    NetworkProfileType, SYSTEM_L4_APPLICATION,
};

/// The parse error of `text`, as (line, column, message).
fn parse_error(text: &str) -> (Option<usize>, Option<usize>, String) {
    match Config::from_yaml_str(text) {
        Err(ConfigError::Parse {
            file: None,
            line,
            column,
            message,
        }) => (line, column, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn seed_parses_with_the_blog_setup() {
    let config = Config::load(common::SEED_PATH).expect("seed.yaml parses");

    let profile = &config.network_profiles[0];
    assert_eq!(profile.name, "dsr-l3-tcp");
    assert_eq!(profile.kind, NetworkProfileType::TcpFastPath);
    let dsr = profile.dsr.as_ref().unwrap();
    assert!(dsr.enabled);
    assert_eq!(dsr.kind, DsrType::L3);
    assert_eq!(dsr.encapsulation, DsrEncapsulation::Ipinip);

    let vs = &config.virtual_services[0];
    assert_eq!(vs.name, "web-vs");
    assert_eq!(vs.vip, "192.168.35.241".parse::<IpAddr>().unwrap());
    assert_eq!(vs.services[0].range(), (80, 80));
    assert_eq!(vs.application_profile, SYSTEM_L4_APPLICATION);
    assert_eq!(vs.network_profile, "dsr-l3-tcp");
    assert_eq!(vs.pool, "web-pool");

    let pool = &config.pools[0];
    let ips: Vec<String> = pool.servers.iter().map(|s| s.ip.to_string()).collect();
    assert_eq!(ips, ["192.168.33.10", "192.168.34.10"]);

    let v6 = &config.virtual_services[1];
    assert_eq!(v6.vip, "fc00:3::24a".parse::<IpAddr>().unwrap());
    let v6_pool = config.pools.iter().find(|p| p.name == v6.pool).unwrap();
    let ips: Vec<String> = v6_pool.servers.iter().map(|s| s.ip.to_string()).collect();
    assert_eq!(ips, ["fc00::10", "fc00:34::10"]);

    let dns = &config.virtual_services[2];
    assert_eq!(dns.services[0].range(), (53, 53));
    let dns_profile = config
        .network_profiles
        .iter()
        .find(|p| p.name == dns.network_profile)
        .unwrap();
    assert_eq!(dns_profile.kind, NetworkProfileType::UdpFastPath);
    assert!(dns_profile.dsr_enabled());

    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn defaults_are_applied() {
    let config = common::yaml(
        r#"
network_profiles:
  - { name: t, type: tcp_fast_path, dsr: { enabled: true, type: l3, encapsulation: ipinip } }
  - { name: u, type: udp_fast_path, dsr: { enabled: true, type: l3, encapsulation: ipinip } }
health_monitors:
  - { name: h, type: http, http_monitor: {} }
pools:
  - name: p
    servers: [{ ip: 10.0.0.1 }]
virtual_services:
  - { name: v, vip: 10.0.1.1, services: [{ port: 80 }], network_profile: t, pool: p }
"#,
    );
    assert_eq!(config.network_profiles[0].session_idle_timeout, None);
    assert_eq!(config.network_profiles[0].effective_idle_timeout(), 300);
    assert_eq!(config.network_profiles[1].effective_idle_timeout(), 10);

    let monitor = &config.health_monitors[0];
    assert_eq!(monitor.kind, HealthMonitorType::Http);
    assert_eq!(
        (
            monitor.send_interval,
            monitor.receive_timeout,
            monitor.successful_checks,
            monitor.failed_checks
        ),
        (10, 4, 2, 2)
    );
    let http = monitor.http_monitor.as_ref().unwrap();
    assert_eq!(http.http_request, "GET / HTTP/1.0");
    assert_eq!(http.http_response_code.len(), 2);

    let pool = &config.pools[0];
    assert_eq!(pool.lb_algorithm, LbAlgorithm::ConsistentHash);
    assert_eq!(pool.consistent_hash, ConsistentHash::SourceIp);
    assert_eq!(pool.table_size, None);
    assert_eq!(pool.effective_table_size(), 65537);
    assert_eq!(pool.servers[0].port, None);
    assert_eq!(pool.servers[0].ratio, 1);
    assert!(pool.servers[0].enabled);

    let vs = &config.virtual_services[0];
    assert_eq!(vs.application_profile, "System-L4-Application");
    assert!(vs.enabled);
    assert_eq!(vs.services[0].port_range_end, None);

    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn empty_document_is_an_empty_configuration() {
    for text in ["", "\n", "# nothing yet\n", "{}"] {
        assert_eq!(Config::from_yaml_str(text).unwrap(), Config::default());
    }
}

#[test]
fn unknown_field_has_its_location() {
    let (line, column, message) =
        parse_error("pools:\n  - name: p\n    servers:\n      - ip: 10.0.0.1\n        wieght: 2\n");
    assert_eq!((line, column), (Some(5), Some(9)));
    assert!(
        message.starts_with("pools[0].servers[0]: unknown field `wieght`, expected one of"),
        "{message}"
    );
}

#[test]
fn unknown_field_at_top_level() {
    let (line, column, message) = parse_error("virtual_service: []\n");
    assert_eq!((line, column), (Some(1), Some(1)));
    assert!(
        message.starts_with("unknown field `virtual_service`, expected one of"),
        "{message}"
    );
}

#[test]
fn wrong_type_has_its_location() {
    let (line, column, message) = parse_error(
        "virtual_services:\n  - name: v\n    vip: 10.0.0.1\n    services: [{ port: http }]\n    network_profile: t\n    pool: p\n",
    );
    assert_eq!((line, column), (Some(4), Some(24)));
    assert_eq!(
        message,
        r#"virtual_services[0].services[0].port: invalid type: string "http", expected u16"#
    );
}

#[test]
fn out_of_range_number() {
    let (line, _, message) = parse_error("pools:\n  - name: p\n    table_size: -1\n");
    assert_eq!(line, Some(3));
    assert_eq!(
        message,
        "pools[0].table_size: invalid type: integer `-1`, expected u32"
    );
}

#[test]
fn invalid_ip_address() {
    let (line, column, message) = parse_error(
        "virtual_services:\n  - name: v\n    vip: 192.168.35.256\n    network_profile: t\n    pool: p\n",
    );
    assert_eq!((line, column), (Some(3), Some(10)));
    assert_eq!(
        message,
        "virtual_services[0].vip: invalid IP address syntax"
    );
}

#[test]
fn unknown_variants_list_the_accepted_values() {
    let (_, _, message) = parse_error("pools:\n  - name: p\n    lb_algorithm: round_robin\n");
    assert_eq!(
        message,
        "pools[0].lb_algorithm: unknown variant `round_robin`, expected `consistent_hash`"
    );
    let (_, _, message) = parse_error("application_profiles:\n  - name: a\n    type: http\n");
    assert_eq!(
        message,
        "application_profiles[0].type: unknown variant `http`, expected `l4`"
    );
    let (_, _, message) = parse_error("network_profiles:\n  - name: n\n    type: tcp\n");
    assert!(
        message.starts_with(
            "network_profiles[0].type: unknown variant `tcp`, expected one of `tcp_fast_path`"
        ),
        "{message}"
    );
}

#[test]
fn missing_required_field() {
    let (line, _, message) = parse_error(
        "virtual_services:\n  - name: v\n    vip: 10.0.0.1\n    services: [{ port: 80 }]\n    pool: p\n",
    );
    assert_eq!(line, Some(2));
    assert_eq!(
        message,
        "virtual_services[0]: missing field `network_profile`"
    );
    let (_, _, message) = parse_error(
        "network_profiles:\n  - name: n\n    type: tcp_fast_path\n    dsr: { enabled: true }\n",
    );
    assert_eq!(message, "network_profiles[0].dsr: missing field `type`");
}

#[test]
fn invalid_yaml() {
    let (line, _, message) = parse_error("pools: [\n");
    assert_eq!(line, Some(2));
    assert!(message.contains("while parsing"), "{message}");
}

#[test]
fn parse_error_display() {
    let err = Config::from_yaml_str("pools: 3\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 8: pools: invalid type: integer `3`, expected a sequence"
    );

    let dir = std::env::temp_dir().join(format!("ricochet-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "pools: 3\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:1:8: pools: invalid type: integer `3`, expected a sequence",
            path.display()
        )
    );
}

#[test]
fn missing_file() {
    let err = Config::load("/nonexistent/ricochet.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/ricochet.yaml: "),
        "{err}"
    );
}

#[test]
fn yaml_and_json_round_trip() {
    let config = Config::load(common::SEED_PATH).unwrap();
    let text = serde_yaml::to_string(&config).unwrap();
    assert_eq!(Config::from_yaml_str(&text).unwrap(), config);

    // The REST API will speak JSON with the same shape.
    let json = serde_json::to_string(&config).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["network_profiles"][0]["type"], "tcp_fast_path");
    assert_eq!(value["network_profiles"][0]["dsr"]["type"], "l3");
}
