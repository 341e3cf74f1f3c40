//! DSR modes end to end on the seed's network (see shared/TESTBED.md): curl and DNS
//! through GRE and GUE services to web01 and web02, the servers decapsulating with
//! `ricochet server setup`'s eBPF decapsulator (this kernel has no gre or fou module), a
//! capture on the router showing the tunnel, and no reply crossing the engine; L2 DSR to
//! web01 by its MAC address (and refused for web02, behind the router); path MTU
//! discovery of the servers' replies through a narrow link on the client's path, which
//! works because the router's ICMP errors reach the servers through the engine. Needs
//! root.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ricochet_testbed::{self as tb, Topology, VIP_V4, VIP_V6};
use support::seed::{reconfigure, seed_bed, FileMode as _, FILE_STATE, FLOWS};
use support::wait_until;

/// The seed's services, the TCP profile in `tcp_encap` and the UDP one in `udp_encap`
/// (flow-style YAML of the `dsr` section's tail), hashing on source IP and port so that
/// the single test client reaches both servers.
fn config_text(tcp_encap: &str, udp_encap: &str) -> String {
    format!(
        "network_profiles:
  - name: dsr-tcp
    type: tcp_fast_path
    dsr: {{ enabled: true, type: l3, {tcp_encap} }}
  - name: dsr-udp
    type: udp_fast_path
    dsr: {{ enabled: true, type: l3, {udp_encap} }}
pools:
  - name: web-pool
    consistent_hash: source_ip_and_port
    servers: [{{ ip: 192.168.33.10 }}, {{ ip: 192.168.34.10 }}]
  - name: web-pool-v6
    consistent_hash: source_ip_and_port
    servers: [{{ ip: 'fc00::10' }}, {{ ip: 'fc00:34::10' }}]
  - name: dns-pool
    consistent_hash: source_ip_and_port
    servers: [{{ ip: 192.168.33.10 }}, {{ ip: 192.168.34.10 }}]
virtual_services:
  - name: web-vs
    vip: 192.168.35.241
    services: [{{ port: 80 }}]
    network_profile: dsr-tcp
    pool: web-pool
  - name: web-vs-v6
    vip: 'fc00:3::24a'
    services: [{{ port: 80 }}]
    network_profile: dsr-tcp
    pool: web-pool-v6
  - name: dns-vs
    vip: 192.168.35.241
    services: [{{ port: 53 }}]
    network_profile: dsr-udp
    pool: dns-pool
"
    )
}

/// 40 HTTP GETs to each VIP and 20 DNS queries: every one answered, by both servers.
fn both_servers_answer(topo: &Topology, what: &str) {
    for vip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            let body = tb::http_get_text(&topo.client.ns, &tb::http_url(vip, "/"))
                .unwrap_or_else(|e| panic!("{what}: curl to {vip}: {e:#}"));
            seen.insert(body.trim().to_owned());
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["web01", "web02"],
            "{what}: HTTP to {vip}"
        );
    }
    let mut dns = BTreeSet::new();
    for _ in 0..20 {
        dns.insert(
            tb::dns_txt(
                &topo.client.ns,
                IpAddr::V4(VIP_V4),
                tb::DNS_WHOAMI,
                tb::DnsTransport::Udp,
            )
            .unwrap_or_else(|e| panic!("{what}: DNS to the VIP: {e:#}")),
        );
    }
    assert_eq!(
        dns.into_iter().collect::<Vec<_>>(),
        ["web01", "web02"],
        "{what}: DNS over UDP"
    );
}

/// Captures, on the router's port facing se1, what se1 sends (XDP_TX'd frames bypass se1's
/// own taps), and on se1 anything from a VIP (a reply crossing the engine).
struct Captures {
    tunnel: tb::Capture,
    replies: tb::Capture,
}

impl Captures {
    fn start(topo: &Topology, tunnel_filter: &str) -> Captures {
        Captures {
            tunnel: tb::Capture::start(&topo.router.ns, topo.se1.router_port, tunnel_filter)
                .unwrap(),
            replies: tb::Capture::start(
                &topo.se1.ns,
                topo.se1.iface,
                "(ip and src host 192.168.35.241) or (ip6 and src host fc00:3::24a)",
            )
            .unwrap(),
        }
    }

    /// The tunnel capture's lines (`tcpdump -nn -e`: GRE's inner packet is decoded on
    /// the same line, GUE's is not, as tcpdump knows no GUE port), after checking that no
    /// reply crossed the engine.
    fn stop(self) -> Vec<String> {
        let replies = self.replies.stop().unwrap().lines().unwrap();
        assert!(
            replies.is_empty(),
            "replies must not cross the engine:\n{}",
            replies.join("\n")
        );
        self.tunnel.stop().unwrap().lines().unwrap()
    }
}

/// Asserts that `lines` hold, for each server of the IPv4 pools, a packet containing all
/// `needles` once `{server}` in them is replaced by the server's address.
fn tunnelled_to_both(lines: &[String], needles: &[&str]) {
    let dump = lines.join("\n");
    for server in ["192.168.33.10", "192.168.34.10"] {
        let needles: Vec<String> = needles
            .iter()
            .map(|n| n.replace("{server}", server))
            .collect();
        assert!(
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "no packet with {needles:?} in the capture:\n{dump}"
        );
    }
}

/// The UDP source ports of the GUE packets from se1 to `dport` in `lines`.
fn gue_source_ports(lines: &[String], dport: u16) -> BTreeSet<u16> {
    let to = format!(".{dport}: ");
    lines
        .iter()
        .filter(|l| l.contains(&to))
        .filter_map(|l| {
            let from = l.split("192.168.33.7.").nth(1)?;
            from.split(' ').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn gre_and_gue_services_reach_both_servers() {
    let mut bed = seed_bed("modes", &[VIP_V4.into(), VIP_V6.into()]);
    bed.start_dns().expect("starting dnsmasq on the servers");
    // The servers take GUE on 6080 (setup's default) and, added now, on 7000.
    let added = bed.setup_servers(&["--gue-port", "7000"]).unwrap();
    for out in &added {
        assert!(out.contains("GUE on UDP port 7000"), "{out}");
        assert!(!out.contains("port 6080"), "6080 was set up already: {out}");
    }
    let topo = &bed.topo;

    // TCP in GRE, UDP in GUE to port 7000.
    let config = bed.write_config(&config_text(
        "encapsulation: gre",
        "encapsulation: gue, gue_port: 7000",
    ));
    let captures = Captures::start(topo, "ip proto 47 or ip6 proto 47 or udp port 7000");
    let engine = bed.start_file_engine(FLOWS, &["--watch-interval-ms", "100"]);
    both_servers_answer(topo, "TCP in GRE, UDP in GUE");
    let lines = captures.stop();
    tunnelled_to_both(
        &lines,
        &["192.168.33.7 > {server}: GREv0", "> 192.168.35.241.80: "],
    );
    tunnelled_to_both(&lines, &["192.168.33.7.", " > {server}.7000: "]);
    let dump = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fc00::7 > fc00::10: GREv0") && l.contains("> fc00:3::24a.80: ")),
        "IPv6 in GRE to web01:\n{dump}"
    );
    let ports = gue_source_ports(&lines, 7000);
    assert!(
        ports.len() >= 2 && ports.iter().all(|&p| p >= 49152),
        "GUE source ports vary with the flow, in the dynamic range: {ports:?}"
    );
    let status = bed.status_of(FILE_STATE);
    assert!(status.contains("web-vs / web-pool (gre)"), "{status}");
    assert!(
        status.contains("dns-vs / dns-pool (gue (udp port 7000))"),
        "{status}"
    );

    // Swapped live: TCP in GUE on the default port, UDP in GRE.
    let captures = Captures::start(topo, "ip proto 47 or ip6 proto 47 or udp port 6080");
    reconfigure(
        &engine,
        &config,
        &config_text("encapsulation: gue", "encapsulation: gre"),
        1,
    );
    both_servers_answer(topo, "TCP in GUE, UDP in GRE");
    let lines = captures.stop();
    tunnelled_to_both(&lines, &["192.168.33.7.", " > {server}.6080: "]);
    tunnelled_to_both(
        &lines,
        &["192.168.33.7 > {server}: GREv0", "> 192.168.35.241.53: "],
    );
    let dump = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fc00::7.") && l.contains(" > fc00:34::10.6080: ")),
        "IPv6 in GUE to web02:\n{dump}"
    );
    // What the servers' decapsulators counted: nothing malformed.
    for host in ["web01", "web02"] {
        let stats = ricochet_server::decap_stats(&bed.pin_dir(host)).unwrap();
        let count = |name: &str| stats.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(count("decapsulated") > 40, "{host}: {stats:?}");
        assert_eq!(count("drop_malformed"), 0, "{host}: {stats:?}");
    }
}

/// The router's output hook drops the ICMP errors it would send about packets too big for
/// the client's link (an nftables table in its namespace), or stops dropping them.
fn withhold_router_errors(topo: &Topology, withhold: bool) {
    let ruleset = if withhold {
        "table inet ricochet_test {
  chain out {
    type filter hook output priority 0;
    icmp type destination-unreachable drop
    icmpv6 type packet-too-big drop
  }
}
"
    } else {
        "delete table inet ricochet_test\n"
    };
    let path = std::env::temp_dir().join(format!("ricochet-nft-{}.nft", std::process::id()));
    std::fs::write(&path, ruleset).unwrap();
    let out = topo
        .router
        .ns
        .output(&["nft", "-f", path.to_str().unwrap()])
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nft -f on the router: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `forwarded_icmp_error` in `ricochet status`.
fn forwarded_icmp(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("forwarded_icmp_error "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[test]
fn a_narrow_link_on_the_clients_path_is_discovered_by_the_servers_through_the_engine() {
    let bed = seed_bed("pmtu", &[VIP_V4.into(), VIP_V6.into()]);
    let topo = &bed.topo;
    // web-vs in IP-in-IP, web-vs-v6 (same profile) too; the UDP profile is not used here.
    bed.write_config(&config_text("encapsulation: ipinip", "encapsulation: gre"));
    let _engine = bed.start_file_engine(FLOWS, &[]);
    // The router's side of the client's link: 1300 bytes. The client still advertises an
    // MSS for 1500, so the servers' full-sized replies hit the narrow link, and only the
    // router's ICMP error (to the VIP, their source) can tell them.
    let mtu = topo
        .router
        .ns
        .ip(&["link", "set", topo.router.client_iface, "mtu", "1300"])
        .unwrap();
    assert!(mtu.status.success(), "{mtu:?}");
    let want = tb::bytes_content(1024 * 1024);

    // Without the errors reaching the engine, the downloads stall (the servers keep
    // sending segments that do not fit).
    withhold_router_errors(topo, true);
    for vip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        let r = tb::http_get(&topo.client.ns, &tb::http_url(vip, "/bytes/1m"));
        assert!(
            r.is_err(),
            "{vip}: the 1 MB download completed though the router's errors were withheld"
        );
    }
    assert_eq!(forwarded_icmp(&bed.status_of(FILE_STATE)), 0);

    // With them, each error reaches the flow's server through the engine, and the same
    // downloads complete.
    withhold_router_errors(topo, false);
    for vip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        let body = tb::http_get(&topo.client.ns, &tb::http_url(vip, "/bytes/1m"))
            .unwrap_or_else(|e| panic!("{vip}: 1 MB download over the 1300-byte link: {e:#}"));
        assert!(
            body == want,
            "{vip}: {} bytes, not the 1 MB file",
            body.len()
        );
    }
    let status = bed.status_of(FILE_STATE);
    let forwarded = forwarded_icmp(&status);
    assert!(forwarded >= 2, "one error per family at least:\n{status}");
    println!("ICMP errors forwarded to the servers: {forwarded}");
}

/// The seed's services in L2 DSR, every pool on web01 alone (the only server on se1's
/// segment), or with web02 (`with_web02`), which L2 DSR cannot reach.
fn l2_config(with_web02: bool) -> String {
    let web02 = if with_web02 {
        ", { ip: 192.168.34.10 }"
    } else {
        ""
    };
    format!(
        "network_profiles:
  - name: dsr-l2-tcp
    type: tcp_fast_path
    dsr: {{ enabled: true, type: l2, encapsulation: ipinip }}
  - name: dsr-l2-udp
    type: udp_fast_path
    dsr: {{ enabled: true, type: l2, encapsulation: ipinip }}
pools:
  - name: web-pool
    servers: [{{ ip: 192.168.33.10 }}{web02}]
  - name: web-pool-v6
    servers: [{{ ip: 'fc00::10' }}]
  - name: dns-pool
    servers: [{{ ip: 192.168.33.10 }}]
virtual_services:
  - name: web-vs
    vip: 192.168.35.241
    services: [{{ port: 80 }}]
    network_profile: dsr-l2-tcp
    pool: web-pool
  - name: web-vs-v6
    vip: 'fc00:3::24a'
    services: [{{ port: 80 }}]
    network_profile: dsr-l2-tcp
    pool: web-pool-v6
  - name: dns-vs
    vip: 192.168.35.241
    services: [{{ port: 53 }}]
    network_profile: dsr-l2-udp
    pool: dns-pool
"
    )
}

#[test]
fn l2_dsr_reaches_the_server_on_the_engines_segment_by_its_mac() {
    let mut bed = seed_bed("l2", &[VIP_V4.into(), VIP_V6.into()]);
    bed.start_dns().expect("starting dnsmasq on the servers");
    let topo = &bed.topo;
    let config = bed.write_config(&l2_config(false));
    let se1_frames = format!("ether src {}", tb::format_mac(&topo.se1.mac));
    let frames = tb::Capture::start(&topo.router.ns, topo.se1.router_port, &se1_frames).unwrap();
    let engine = bed.start_file_engine(FLOWS, &["--watch-interval-ms", "100"]);
    for vip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        for _ in 0..10 {
            let body = tb::http_get_text(&topo.client.ns, &tb::http_url(vip, "/")).unwrap();
            assert_eq!(body.trim(), "web01", "{vip}");
        }
    }
    for _ in 0..10 {
        let who = tb::dns_txt(
            &topo.client.ns,
            IpAddr::V4(VIP_V4),
            tb::DNS_WHOAMI,
            tb::DnsTransport::Udp,
        )
        .unwrap();
        assert_eq!(who, "web01");
    }
    let lines = frames.stop().unwrap().lines().unwrap();
    let dump = lines.join("\n");
    let web01 = tb::format_mac(&topo.web01.mac);
    // The client's own packets, unchanged at the IP layer, from se1's MAC to web01's.
    for (needle, what) in [
        ("192.168.11.2.", "> 192.168.35.241.80: "),
        ("192.168.11.2.", "> 192.168.35.241.53: "),
        ("fc00:11::2.", "> fc00:3::24a.80: "),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("> {web01}"))
                && l.contains(needle)
                && l.contains(what)),
            "no client packet {what} to web01's MAC {web01}:\n{dump}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("proto IPIP") || l.contains("ip-proto-4")),
        "L2 DSR encapsulates nothing:\n{dump}"
    );
    let status = bed.status_of(FILE_STATE);
    assert!(
        status.contains("web-vs / web-pool (l2 (server's mac))"),
        "{status}"
    );

    // web02 is one router away: the engine refuses the change, says why, keeps running.
    std::fs::write(&config, l2_config(true)).unwrap();
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let log = engine.stderr();
        if log.contains("server 192.168.34.10 of pool \"web-pool\" is not on a segment of") {
            Ok(())
        } else {
            Err(format!("the refusal is not logged:\n{}", engine.report()))
        }
    });
    let body = tb::http_get_text(&topo.client.ns, &tb::http_url(IpAddr::V4(VIP_V4), "/")).unwrap();
    assert_eq!(body.trim(), "web01", "the running configuration stays");
}
