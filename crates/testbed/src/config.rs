//! The seed's virtual service in Ricochet's configuration file format, shared by the
//! end-to-end tests and the benchmarks.

use std::net::Ipv4Addr;

/// The seed's virtual service `web-vs` on `vip` port 80 (TCP fast path, L3 DSR over
/// IP-in-IP, System-L4-Application) with the pool `web-pool` of `servers`, hashing the
/// client's address and port (one client, many connections: every server gets some).
pub fn web_vs_config(vip: Ipv4Addr, servers: &[Ipv4Addr]) -> String {
    let servers: String = servers
        .iter()
        .map(|ip| format!("      - {{ ip: {ip} }}\n"))
        .collect();
    format!(
        "network_profiles:
  - name: dsr-l3-tcp
    type: tcp_fast_path
    dsr: {{ enabled: true, type: l3, encapsulation: ipinip }}
pools:
  - name: web-pool
    consistent_hash: source_ip_and_port
    servers:
{servers}virtual_services:
  - name: web-vs
    vip: {vip}
    services: [{{ port: 80 }}]
    application_profile: System-L4-Application
    network_profile: dsr-l3-tcp
    pool: web-pool
"
    )
}
