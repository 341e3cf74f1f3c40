//! End to end on the seed's network (see shared/TESTBED.md): a client, a router with
//! uRPF off, service engine se1 running `ricochet engine`, web01 on the engine's
//! segment and web02 one router hop away, both made DSR-ready by `ricochet server
//! setup` and serving with nginx and dnsmasq. Needs root.

mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ricochet_testbed::{self as tb, Process, SeedBed, Topology, VIP_V4, VIP_V6};
use support::seed::{seed_bed, Conn, FileMode as _, FILE_STATE, FLOWS};
use support::wait_until;

/// The seed's configuration, with source-IP-and-port hashing so that one client's
/// connections spread over both servers (the seed's source-IP hashing would pin the
/// single test client to one server).
fn config_text(web01: &str, web01_v6: &str) -> String {
    format!(
        "network_profiles:
  - name: dsr-l3-tcp
    type: tcp_fast_path
    dsr: {{ enabled: true, type: l3, encapsulation: ipinip }}
  - name: dsr-l3-udp
    type: udp_fast_path
    dsr: {{ enabled: true, type: l3, encapsulation: ipinip }}
pools:
  - name: web-pool
    consistent_hash: source_ip_and_port
    servers:
{web01}      - {{ ip: 192.168.34.10 }}
  - name: web-pool-v6
    consistent_hash: source_ip_and_port
    servers:
{web01_v6}      - {{ ip: 'fc00:34::10' }}
  - name: dns-pool
    consistent_hash: source_ip_and_port
    servers:
      - {{ ip: 192.168.33.10 }}
      - {{ ip: 192.168.34.10 }}
virtual_services:
  - name: web-vs
    vip: 192.168.35.241
    services: [{{ port: 80 }}]
    application_profile: System-L4-Application
    network_profile: dsr-l3-tcp
    pool: web-pool
  - name: web-vs-v6
    vip: 'fc00:3::24a'
    services: [{{ port: 80 }}]
    network_profile: dsr-l3-tcp
    pool: web-pool-v6
  - name: dns-vs
    vip: 192.168.35.241
    services: [{{ port: 53 }}]
    network_profile: dsr-l3-udp
    pool: dns-pool
"
    )
}

const WEB01: &str = "      - { ip: 192.168.33.10 }\n";
const WEB01_V6: &str = "      - { ip: 'fc00::10' }\n";
const WEB01_DRAINED: &str = "      - { ip: 192.168.33.10, enabled: false }\n";

struct Bed {
    seed: SeedBed,
    config: PathBuf,
}

impl Bed {
    fn new(test: &str) -> Bed {
        let mut seed = seed_bed(test, &[VIP_V4.into(), VIP_V6.into()]);
        seed.start_dns().expect("starting dnsmasq on the servers");
        let config = seed.write_config(&config_text(WEB01, WEB01_V6));
        Bed { seed, config }
    }

    fn start_engine(&self) -> Process {
        self.seed
            .start_file_engine(FLOWS, &["--watch-interval-ms", "100"])
    }

    fn status(&self) -> String {
        self.seed.status_of(FILE_STATE)
    }

    /// Rewrites the config and waits until the engine logged `applied` changes applied.
    fn reconfigure(&self, engine: &mut Process, text: &str, applied: usize) {
        support::seed::reconfigure(engine, &self.config, text, applied);
    }
}

fn curl(topo: &Topology, vip: IpAddr) -> String {
    tb::http_get_text(&topo.client.ns, &tb::http_url(vip, "/"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Opens connections until both servers have at least `per_server` of them.
fn connections_on_both(topo: &Topology, vip: IpAddr, per_server: usize) -> Vec<(String, Conn)> {
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = Conn::open_in(topo, vip);
        let who = c.get().expect("first request");
        conns.push((who, c));
        let n1 = conns.iter().filter(|(w, _)| w == "web01").count();
        let n2 = conns.iter().filter(|(w, _)| w == "web02").count();
        if n1 >= per_server && n2 >= per_server {
            return conns;
        }
    }
    panic!("200 connections did not reach both servers");
}

#[test]
fn dsr_end_to_end_ipv4_ipv6_udp() {
    let bed = Bed::new("dsr");
    let topo = &bed.seed.topo;
    // On the router's port facing se1: XDP_TX'd frames bypass se1's own taps, and this
    // port sees everything se1 sends and everything sent to it.
    let encap = tb::Capture::start(
        &topo.router.ns,
        topo.se1.router_port,
        "ip proto 4 or ip6 proto 41",
    )
    .unwrap();
    let replies = tb::Capture::start(
        &topo.se1.ns,
        topo.se1.iface,
        "(ip and src host 192.168.35.241) or (ip6 and src host fc00:3::24a)",
    )
    .unwrap();
    let _engine = bed.start_engine();

    for vip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..40 {
            *seen.entry(curl(topo, vip)).or_insert(0) += 1;
        }
        assert_eq!(
            seen.keys().cloned().collect::<Vec<_>>(),
            ["web01", "web02"],
            "{vip}: answers {seen:?}"
        );
    }
    let mut dns = std::collections::BTreeSet::new();
    for _ in 0..20 {
        dns.insert(
            tb::dns_txt(
                &topo.client.ns,
                IpAddr::V4(VIP_V4),
                tb::DNS_WHOAMI,
                tb::DnsTransport::Udp,
            )
            .unwrap(),
        );
    }
    assert_eq!(
        dns.into_iter().collect::<Vec<_>>(),
        ["web01", "web02"],
        "DNS over UDP reaches both servers"
    );

    let encap = encap.stop().unwrap().lines().unwrap();
    let has = |needles: &[&str]| encap.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    let dump = encap.join("\n");
    // Outer source the engine, outer destination the server; inner client to VIP.
    for (outer, inner) in [
        ("192.168.33.7 > 192.168.33.10: ", "192.168.11.2."),
        ("192.168.33.7 > 192.168.34.10: ", "192.168.11.2."),
        ("fc00::7 > fc00::10: ", "fc00:11::2."),
        ("fc00::7 > fc00:34::10: ", "fc00:11::2."),
    ] {
        let vip = if outer.contains(':') && !outer.contains('.') {
            "> fc00:3::24a.80:"
        } else {
            "> 192.168.35.241.80:"
        };
        assert!(
            has(&[outer, inner, vip]),
            "no {outer}[{inner} {vip}] in the capture:\n{dump}"
        );
    }
    assert!(
        has(&["192.168.33.7 > ", "> 192.168.35.241.53:"]),
        "UDP to the VIP is encapsulated too:\n{dump}"
    );
    let replies = replies.stop().unwrap().lines().unwrap();
    assert!(
        replies.is_empty(),
        "replies must not cross the engine:\n{}",
        replies.join("\n")
    );

    let status = bed.status();
    assert!(status.contains("192.168.35.241:80"), "{status}");
    assert!(status.contains("web-vs / web-pool (ipinip)"), "{status}");
    // At least one packet for each of the 80 HTTP requests and 20 DNS queries above.
    let forwarded: u64 = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("forwarded "))
        .unwrap_or_else(|| panic!("no forwarded count: {status}"))
        .trim()
        .parse()
        .unwrap();
    assert!(forwarded >= 100, "{status}");
}

#[test]
fn removing_and_draining_servers_live() {
    let bed = Bed::new("live");
    let topo = &bed.seed.topo;
    let mut engine = bed.start_engine();
    let vip = IpAddr::V4(VIP_V4);

    // Drain web01: its established connections keep working, new ones go to web02.
    let mut conns = connections_on_both(topo, vip, 2);
    bed.reconfigure(&mut engine, &config_text(WEB01_DRAINED, WEB01_V6), 1);
    for (who, c) in &mut conns {
        assert_eq!(
            &c.get().expect("established connection survives draining"),
            who
        );
    }
    for _ in 0..10 {
        assert_eq!(
            curl(topo, vip),
            "web02",
            "a drained server gets no new connection"
        );
    }
    assert!(bed.status().contains("draining"));

    // Remove web01 entirely: web02's established connections are untouched.
    bed.reconfigure(&mut engine, &config_text("", WEB01_V6), 2);
    for (who, c) in conns.iter_mut().filter(|(w, _)| w == "web02") {
        assert_eq!(
            &c.get()
                .expect("web02's connections survive web01's removal"),
            who
        );
    }
    for _ in 0..10 {
        assert_eq!(curl(topo, vip), "web02");
    }

    // A refused change (dangling pool) leaves everything running.
    std::fs::write(
        &bed.config,
        config_text("", WEB01_V6).replace("pool: web-pool\n", "pool: no-such-pool\n"),
    )
    .unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        if engine.stderr().contains("refused") {
            Ok(())
        } else {
            Err(format!("refusal not logged:\n{}", engine.report()))
        }
    });
    assert_eq!(curl(topo, vip), "web02");
}

#[test]
fn engine_restart_keeps_established_connections() {
    let bed = Bed::new("restart");
    let topo = &bed.seed.topo;
    let mut engine = bed.start_engine();
    let vip = IpAddr::V4(VIP_V4);
    let mut conns = connections_on_both(topo, vip, 2);

    engine.stop().unwrap();
    // The pinned data plane keeps forwarding while no engine runs.
    for (who, c) in &mut conns {
        assert_eq!(
            &c.get().expect("forwarding continues without the daemon"),
            who
        );
    }
    let mut engine = bed.start_engine();
    assert!(engine.stderr().contains("adopting"), "{}", engine.report());
    for (who, c) in &mut conns {
        assert_eq!(
            &c.get()
                .expect("established connection survives the restart"),
            who
        );
    }
    assert!(matches!(curl(topo, vip).as_str(), "web01" | "web02"));

    // Detach removes the pins; the VIP stops answering.
    engine.stop().unwrap();
    bed.seed.detach(FILE_STATE);
    assert!(!bed.seed.pin_dir("se1").exists());
    let r = topo
        .client
        .ns
        .output(&["curl", "-s", "-m", "2", "http://192.168.35.241/"])
        .unwrap();
    assert!(!r.status.success(), "after detach the VIP must not answer");
}

#[test]
fn a_panicking_test_undoes_the_servers() {
    let left = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let bed = seed_bed("panic", &[VIP_V4.into()]);
        for host in ["web01", "web02"] {
            let pin = bed.pin_dir(host);
            let record = ricochet_server::state_path(&pin);
            assert!(pin.exists(), "{} pinned by setup", pin.display());
            assert!(record.exists(), "{} written by setup", record.display());
            left.lock().unwrap().extend([pin, record]);
        }
        left.lock().unwrap().push(bed.dir().to_owned());
        panic!("a test fails with both servers set up");
    });
    assert!(result.is_err());
    let left = left.into_inner().unwrap();
    assert_eq!(left.len(), 5);
    for path in left {
        assert!(!path.exists(), "{} left after the panic", path.display());
    }
}
