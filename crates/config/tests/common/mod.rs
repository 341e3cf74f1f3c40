//! Shared fixtures of the integration tests.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use ricochet_config::{Config, ValidationError};

/// A small valid configuration: an IPv4 and an IPv6 TCP service, a UDP profile unused.
pub const BASE: &str = r#"
network_profiles:
  - name: dsr-tcp
    type: tcp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
  - name: dsr-udp
    type: udp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
health_monitors:
  - name: hm-tcp
    type: tcp
pools:
  - name: web-pool
    servers: [{ ip: 192.168.33.10 }, { ip: 192.168.34.10 }]
  - name: v6-pool
    servers: [{ ip: "fc00::10" }, { ip: "fc00:34::10" }]
virtual_services:
  - name: web-vs
    vip: 192.168.35.241
    services: [{ port: 80 }]
    network_profile: dsr-tcp
    pool: web-pool
  - name: v6-vs
    vip: "fc00:3::24a"
    services: [{ port: 80 }]
    network_profile: dsr-tcp
    pool: v6-pool
"#;

/// The example file shipped with the crate.
pub const SEED_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed.yaml");

pub fn base() -> Config {
    let config = Config::from_yaml_str(BASE).expect("BASE parses");
    config.validate().expect("BASE is valid");
    config
}

pub fn yaml(text: &str) -> Config {
    Config::from_yaml_str(text).unwrap_or_else(|e| panic!("test YAML does not parse: {e}"))
}

/// The validation errors of `config`, as (path, message) pairs; panics if it is valid.
pub fn errors(config: &Config) -> Vec<(String, String)> {
    let errors = config
        .validate()
        .expect_err("configuration should have been refused");
    errors
        .into_iter()
        .map(|ValidationError { path, message }| (path, message))
        .collect()
}

/// Asserts that `config` is refused with exactly one error, at `path`, saying `message`.
#[track_caller]
pub fn assert_only_error(config: &Config, path: &str, message: &str) {
    assert_eq!(
        errors(config),
        vec![(path.to_owned(), message.to_owned())],
        "unexpected validation result"
    );
}
