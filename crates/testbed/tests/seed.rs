//! The test bed itself, end to end: these tests need root (they create namespaces) and fail,
//! saying so, without it.

use std::net::IpAddr;
use std::process::Command;
use std::time::Instant;

use ricochet_testbed::{
    bytes_content, dns_txt, http_get, http_get_text, http_url, ping, run_prefix, start_dns,
    start_nginx, sweep_stale, Capture, DnsTransport, Netns, Topology, DNS_WHOAMI, HTTP_BYTES_PATHS,
    VIP_V4, VIP_V6,
};

/// Namespace names currently listed by `ip netns`.
fn netns_names() -> Vec<String> {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn route(topo: &Topology, family: &str, dest: &str) -> String {
    let output = topo
        .router
        .ns
        .ip(&[family, "route", "show", dest])
        .expect("ip route show in the router");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn seed_topology_carries_traffic_and_cleans_up() {
    let start = Instant::now();
    let topo = Topology::seed().expect("building the seed topology");
    eprintln!("seed topology built in {:?}", start.elapsed());
    let prefix = topo.prefix().to_owned();
    assert!(prefix.starts_with(&run_prefix()));
    let names = netns_names();
    for role in ["client", "router", "se1", "se2", "web01", "web02"] {
        assert!(
            names.contains(&format!("{prefix}{role}")),
            "namespace {prefix}{role} missing from {names:?}"
        );
    }

    // Reachability, both families: client to router, router to every server-side host.
    ping(&topo.client.ns, topo.router.client_v4.into(), 1).unwrap();
    ping(&topo.client.ns, topo.router.client_v6.into(), 1).unwrap();
    for host in [&topo.se1, &topo.se2, &topo.web01, &topo.web02] {
        ping(&topo.router.ns, host.ipv4.into(), 1).unwrap();
        ping(&topo.router.ns, host.ipv6.into(), 1).unwrap();
    }
    // Across the router, through the bridge.
    ping(&topo.client.ns, topo.web01.ipv6.into(), 1).unwrap();

    // Router settings the seed asks for.
    assert_eq!(topo.router.ns.sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        topo.router
            .ns
            .sysctl("net.ipv6.conf.all.forwarding")
            .unwrap(),
        "1"
    );
    for iface in ["all", "br0", "vclient", "vse1", "vweb02"] {
        let key = format!("net.ipv4.conf.{iface}.rp_filter");
        assert_eq!(topo.router.ns.sysctl(&key).unwrap(), "0", "{key}");
    }
    let offloads = topo
        .se1
        .ns
        .exec(&["ethtool", "-k", topo.se1.iface])
        .unwrap();
    let offloads = String::from_utf8_lossy(&offloads.stdout);
    assert!(
        offloads.contains("tx-checksumming: off"),
        "tx checksum offload still on: {offloads}"
    );
    let gro = topo
        .router
        .ns
        .exec(&["ethtool", "-k", topo.se1.router_port])
        .unwrap();
    assert!(String::from_utf8_lossy(&gro.stdout).contains("generic-receive-offload: on"));
    assert_eq!(topo.se1.ns.mac(topo.se1.iface).unwrap(), topo.se1.mac);
    assert_eq!(
        topo.router.ns.mac(topo.router.bridge).unwrap(),
        topo.se1.gateway_mac
    );

    // The VIP routes point at SE1, and can be moved.
    assert_eq!(
        route(&topo, "-4", &format!("{VIP_V4}/32")),
        format!("{VIP_V4} via 192.168.33.7 dev br0")
    );
    assert!(
        route(&topo, "-6", &format!("{VIP_V6}/128")).starts_with("fc00:3::24a via fc00::7 dev br0")
    );
    topo.route_vip(VIP_V4.into(), topo.se2.ipv4.into()).unwrap();
    assert!(route(&topo, "-4", &format!("{VIP_V4}/32")).contains("via 192.168.33.8"));
    topo.route_vip_multipath(VIP_V6.into(), &[topo.se1.addr(true), topo.se2.addr(true)])
        .unwrap();
    let multipath = route(&topo, "-6", &format!("{VIP_V6}/128"));
    assert!(
        multipath.contains("nexthop via fc00::7") && multipath.contains("nexthop via fc00::8"),
        "{multipath}"
    );

    // nginx on web01, by its own address, both families, with a capture on web01's link.
    let nginx = start_nginx(&topo.web01.ns, "web01\n").unwrap();
    let capture = Capture::start(&topo.web01.ns, topo.web01.iface, "tcp port 80").unwrap();
    let url = http_url(topo.web01.ipv4.into(), "/");
    assert_eq!(http_get_text(&topo.client.ns, &url).unwrap(), "web01\n");
    let url6 = http_url(topo.web01.ipv6.into(), "/");
    assert_eq!(http_get_text(&topo.client.ns, &url6).unwrap(), "web01\n");
    let (path, len) = HTTP_BYTES_PATHS[1];
    let bytes = http_get(&topo.client.ns, &http_url(topo.web01.ipv4.into(), path)).unwrap();
    assert_eq!(bytes, bytes_content(len));
    let pcap = capture.stop().unwrap();
    let lines = pcap.lines().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("192.168.11.2.") && l.contains("> 192.168.33.10.80: Flags [S]")),
        "no SYN from the client in the capture: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fc00::10.80 > fc00:11::2.")),
        "no IPv6 reply in the capture: {lines:#?}"
    );

    // dnsmasq on web02, by its own address, UDP and TCP, both families.
    let dns = start_dns(&topo.web02.ns, "web02").unwrap();
    for server in [topo.web02.addr(false), topo.web02.addr(true)] {
        for transport in [DnsTransport::Udp, DnsTransport::Tcp] {
            let answer = dns_txt(&topo.client.ns, server, DNS_WHOAMI, transport).unwrap();
            assert_eq!(answer, "web02", "{server} over {transport:?}");
        }
    }

    // A server answers on a VIP on its lo (what a DSR server does after decapsulation); here
    // the router routes the VIP straight to web02, without a load balancer.
    for (vip, prefix_len) in [(IpAddr::from(VIP_V4), 32), (IpAddr::from(VIP_V6), 128)] {
        topo.web02
            .ns
            .ip(&["addr", "add", &format!("{vip}/{prefix_len}"), "dev", "lo"])
            .unwrap();
        topo.route_vip(vip, topo.web02.addr(vip.is_ipv6())).unwrap();
        let answer = dns_txt(&topo.client.ns, vip, DNS_WHOAMI, DnsTransport::Udp).unwrap();
        assert_eq!(answer, "web02");
    }
    assert!(dns
        .stderr()
        .contains("query[TXT] whoami.ricochet.test from 192.168.11.2"));

    // Drop removes every namespace and kills every process of the topology.
    let pids = [nginx.pid(), dns.pid()];
    drop(topo);
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
    for pid in pids {
        // Killed by the namespace's drop; a zombie until its handle reaps it.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "server {pid} still runs: {status}"
        );
    }
    drop((nginx, dns));
    for pid in pids {
        assert!(!pid_alive(pid), "server {pid} not reaped");
    }
    eprintln!("seed test done in {:?}", start.elapsed());
}

#[test]
fn netns_runs_commands_code_and_processes_inside() {
    let ns = Netns::new("unit").expect("creating a namespace");
    let name = ns.name().to_owned();

    // exec runs inside: the namespace has only lo.
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"));

    // A failing command's error names the namespace, the command and its stderr.
    let error = ns.exec(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains(&name) && message.contains("oops"),
        "{message}"
    );

    // Code on a thread inside: a socket bound there sees the namespace's loopback only.
    let listener = ns
        .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = ns.exec(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"),
    ]);
    assert!(connect.is_ok(), "{connect:?}");
    assert_eq!(ns.sysctl("net.ipv6.conf.all.accept_dad").unwrap(), "0");

    // A spawned process that dies early reports its output.
    let mut process = ns
        .spawn(&[
            "sh",
            "-c",
            "echo starting; echo no port for you >&2; exit 1",
        ])
        .unwrap();
    let error = format!("{:#}", process.wait_for_tcp_listen(8080).unwrap_err());
    assert!(
        error.contains("no port for you") && error.contains("starting") && error.contains(&name),
        "{error}"
    );

    // A spawned process is killed with its group when the namespace goes.
    let mut sleeper = ns
        .spawn(&["sh", "-c", "sleep 60 & echo background=$!; sleep 60"])
        .unwrap();
    sleeper.wait_for_output("background=").unwrap();
    let pids = ns.pids().unwrap();
    assert!(pids.len() >= 2, "{pids:?}");
    drop(ns);
    assert!(!netns_names().contains(&name));
    drop(sleeper);
    for pid in pids {
        assert!(!pid_alive(pid) || is_zombie(pid), "{pid} survived");
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| status.contains("State:\tZ"))
        .unwrap_or(true)
}

#[test]
fn sweep_removes_namespaces_of_dead_runs_only() {
    // A pid above the kernel's largest possible pid_max (2^22) belongs to no process; our own
    // pid in the rest of the name keeps concurrent runs of this test apart.
    let stale = format!("rc4194305-{}-stale", std::process::id());
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());
    let ours = Netns::new("live").unwrap();
    let removed = sweep_stale().unwrap();
    let names = netns_names();
    assert!(!names.contains(&stale), "{removed:?}");
    assert!(names.contains(&ours.name().to_owned()));
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let prefix = std::sync::Mutex::new(String::new());
    let pid = std::sync::Mutex::new(0);
    let result = std::panic::catch_unwind(|| {
        let topo = Topology::seed().expect("building the seed topology");
        *prefix.lock().unwrap() = topo.prefix().to_owned();
        let nginx = start_nginx(&topo.web01.ns, "web01\n").unwrap();
        *pid.lock().unwrap() = nginx.pid();
        panic!("a test fails with the topology and a server up");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    assert!(!netns_names().iter().any(|name| name.starts_with(&prefix)));
    assert!(!pid_alive(pid.into_inner().unwrap()));
}
