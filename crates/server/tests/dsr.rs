//! Privileged tests: setup, check and undo in a server namespace, and real DSR traffic from
//! a sender namespace. Run as root (`cargo test -p ricochet-server`); see `common` for how
//! the namespaces stay isolated from the host and are cleaned up.
mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use common::*;
use ricochet_server::{
    check, decap_stats, setup, state_path, undo, DecapKind, DecapMode, ServerError, ServerSpec,
    Severity,
};

const DECAP: &str = "ricochet_decap";

fn spec(t: &Topo, vips: &[IpAddr]) -> ServerSpec {
    ServerSpec {
        vips: vips.to_vec(),
        interface: None,
        decap: DecapMode::Ebpf,
        pin_dir: t.pin_dir.clone(),
        gue_ports: vec![ricochet_server::DEFAULT_GUE_PORT],
    }
}

/// `setup`, `check` or `undo` of (a copy of) `spec`, run inside `ns`.
fn in_ns<R: Send + 'static>(ns: &Ns, spec: &ServerSpec, f: fn(&ServerSpec) -> R) -> R {
    let spec = spec.clone();
    ns.run(move || f(&spec))
}

fn v4() -> IpAddr {
    IpAddr::V4(VIP_V4)
}

fn v6() -> IpAddr {
    IpAddr::V6(VIP_V6)
}

/// How many Ricochet decapsulators are attached to the server interface's TCX ingress.
fn attached_decaps(t: &Topo) -> usize {
    let iface = t.server_if.clone();
    t.server.run(move || {
        let (_, progs) =
            SchedClassifier::query_tcx(&iface, TcAttachType::Ingress).expect("query_tcx");
        progs
            .iter()
            .filter(|p| p.name_as_str() == Some(DECAP))
            .count()
    })
}

fn stats(t: &Topo) -> HashMap<&'static str, u64> {
    let pin_dir = t.pin_dir.clone();
    t.server.run(move || {
        decap_stats(&pin_dir)
            .expect("decap_stats")
            .into_iter()
            .collect()
    })
}

fn rp_filter_keys(t: &Topo) -> [String; 3] {
    [
        "net.ipv4.conf.all.rp_filter".to_owned(),
        "net.ipv4.conf.lo.rp_filter".to_owned(),
        format!("net.ipv4.conf.{}.rp_filter", t.server_if),
    ]
}

/// The ARP settings setup makes, with their values: `arp_ignore` and `arp_announce` for
/// `all` and the server's interface.
fn arp_keys(t: &Topo) -> [(String, &'static str); 4] {
    [
        ("net.ipv4.conf.all.arp_ignore".to_owned(), "1"),
        (format!("net.ipv4.conf.{}.arp_ignore", t.server_if), "1"),
        ("net.ipv4.conf.all.arp_announce".to_owned(), "2"),
        (format!("net.ipv4.conf.{}.arp_announce", t.server_if), "2"),
    ]
}

/// Sets the ARP settings to the kernel's defaults (0): a new namespace copies `all` and
/// `default` from the host's, which may already have them set.
fn arp_defaults(t: &Topo) {
    for (key, _) in arp_keys(t) {
        t.server.sysctl_set(&key, "0");
    }
}

/// The IPv4 neighbours `ns` knows on `dev`, in any state.
fn neighbours(ns: &Ns, dev: &str) -> Vec<IpAddr> {
    let out = ns.sh(&format!("ip -4 -j neigh show dev {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["dst"].as_str()?.parse().ok())
        .collect()
}

fn exists_in_server(t: &Topo, p: PathBuf) -> bool {
    t.server.run(move || p.exists())
}

#[test]
fn setup_is_idempotent_adds_vips_and_check_passes() {
    let started = Instant::now();
    let t = Topo::new("a");
    for key in rp_filter_keys(&t) {
        t.server.sysctl_set(&key, "1");
    }
    arp_defaults(&t);
    // This kernel has no ipip/ip6_tunnel (TOOLCHAIN.md): Auto must pick the eBPF decapsulator.
    let no_modules =
        !Path::new("/sys/module/ipip").exists() && !Path::new("/sys/module/ip6_tunnel").exists();
    let mut first = spec(&t, &[v4()]);
    first.decap = if no_modules {
        DecapMode::Auto
    } else {
        DecapMode::Ebpf
    };

    let r1 = t.server.run(move || setup(&first)).expect("first setup");
    println!("{r1}");
    assert_eq!(r1.decap, DecapKind::Ebpf);
    assert_eq!(r1.interface, t.server_if, "the default route's interface");
    let has = |r: &ricochet_server::SetupReport, s: &str| r.changes.iter().any(|c| c.contains(s));
    assert!(
        has(&r1, "mounted bpffs"),
        "bpffs was not mounted in the server's mount namespace: {r1}"
    );
    assert!(has(&r1, "added 192.168.35.241/32 to lo"), "{r1}");
    assert!(has(&r1, "attached the eBPF decapsulator"), "{r1}");
    for (key, value) in arp_keys(&t) {
        assert!(has(&r1, &format!("sysctl {key}: 0 -> {value}")), "{r1}");
    }

    // More VIPs: added to lo and to the pinned map the attached program already reads.
    let both = spec(&t, &[v4(), v6()]);
    let r2 = in_ns(&t.server, &both, setup).expect("setup with one more VIP");
    println!("{r2}");
    assert!(has(&r2, "added fc00:3::24a/128 to lo"), "{r2}");
    assert!(
        has(&r2, "VIP fc00:3::24a added to the decapsulator map"),
        "{r2}"
    );
    assert!(
        !has(&r2, "attached"),
        "the decapsulator was attached again: {r2}"
    );
    assert!(!has(&r2, "replaced"), "the same program was replaced: {r2}");

    // Idempotent: nothing changes, not even the record.
    let state_file = state_path(&t.pin_dir);
    let record = |t: &Topo| {
        let p = state_file.clone();
        t.server
            .run(move || std::fs::read_to_string(&p).expect("state file"))
    };
    let before = record(&t);
    let r3 = in_ns(&t.server, &both, setup).expect("repeated setup");
    assert!(!r3.changed(), "a repeated setup changed things: {r3}");
    assert!(r3.to_string().contains("nothing changed"));
    assert_eq!(record(&t), before, "a repeated setup rewrote the record");

    // The host is as it should be.
    let lo = t.server.addrs("lo");
    assert!(lo.contains(&"192.168.35.241/32".to_owned()), "{lo:?}");
    assert!(lo.contains(&"fc00:3::24a/128".to_owned()), "{lo:?}");
    for key in rp_filter_keys(&t) {
        assert_eq!(t.server.sysctl_get(&key), "0", "{key}");
    }
    for (key, value) in arp_keys(&t) {
        assert_eq!(t.server.sysctl_get(&key), value, "{key}");
    }
    assert_eq!(
        attached_decaps(&t),
        1,
        "exactly one decapsulator on the ingress"
    );
    for pin in [
        "DECAP_VIPS",
        "DECAP_STATS",
        &format!("link_{}", t.server_if),
    ] {
        assert!(
            exists_in_server(&t, t.pin_dir.join(pin)),
            "pin {pin} missing"
        );
    }

    // check agrees, with the given VIPs and with the recorded ones.
    let report = in_ns(&t.server, &both, check).expect("check");
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    let oks: Vec<&str> = report
        .with_severity(Severity::Ok)
        .map(|i| i.summary.as_str())
        .collect();
    for want in [
        "VIP 192.168.35.241 is on lo",
        "VIP fc00:3::24a is on lo",
        "VIP 192.168.35.241: tunnel packets are decapsulated by Ricochet's eBPF decapsulator",
        "VIP fc00:3::24a: tunnel packets are decapsulated by Ricochet's eBPF decapsulator",
        "reverse-path filter off on lo",
        &format!(
            "{} answers no ARP for the VIPs on lo: arp_ignore effective max(all=1, {0}=1) = 1",
            t.server_if
        ),
        &format!(
            "ARP requests from {} use its own address, never a VIP: arp_announce effective max(all=2, {0}=2) = 2",
            t.server_if
        ),
    ] {
        assert!(
            oks.iter().any(|s| s.starts_with(want)),
            "no ok item {want:?} in\n{report}"
        );
    }
    let recorded = t
        .server
        .run({
            let mut s = both.clone();
            s.vips.clear();
            move || check(&s)
        })
        .expect("check with the recorded VIPs");
    assert_eq!(recorded.vips, vec![v4(), v6()]);
    assert!(recorded.is_ok(), "{recorded}");

    // Someone removed the map pins: the attached program keeps its (now unpinned) maps, check
    // warns that setup can no longer reach them, and setup swaps in a program that uses new
    // pinned maps, atomically under the same link.
    let pin_dir = t.pin_dir.clone();
    t.server.run(move || {
        for m in ["DECAP_VIPS", "DECAP_STATS"] {
            std::fs::remove_file(pin_dir.join(m)).expect("remove a map pin");
        }
    });
    let report = in_ns(&t.server, &both, check).expect("check");
    assert!(
        report.is_ok(),
        "the attached program still decapsulates: {report}"
    );
    assert!(
        report
            .with_severity(Severity::Warning)
            .any(|i| i.summary.contains("does not use the map pinned")),
        "{report}"
    );
    let r4 = in_ns(&t.server, &both, setup).expect("setup after the map pins were removed");
    println!("{r4}");
    assert!(has(&r4, "created the decapsulator maps"), "{r4}");
    assert!(has(&r4, "replaced the decapsulator program"), "{r4}");
    assert_eq!(attached_decaps(&t), 1, "replaced, not added");
    let report = in_ns(&t.server, &both, check).expect("check");
    assert!(report.is_ok(), "{report}");
    assert!(
        !report
            .items
            .iter()
            .any(|i| i.summary.contains("does not use the map pinned")),
        "{report}"
    );
    println!("setup test took {:?}", started.elapsed());
}

/// Receives on a raw TCP socket until the SYN-ACK from `vip:port` to `client_port` shows up.
fn wait_syn_ack(
    sniff: &std::os::fd::OwnedFd,
    vip: IpAddr,
    port: u16,
    client: IpAddr,
    client_port: u16,
    seq: u32,
) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let Some((pkt, from)) = raw_recv(sniff) else {
            continue;
        };
        // IPv4 raw sockets deliver the IP header, IPv6 ones only the payload.
        let (tcp, src, dst) = if vip.is_ipv4() {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let src = IpAddr::from([pkt[12], pkt[13], pkt[14], pkt[15]]);
            let dst = IpAddr::from([pkt[16], pkt[17], pkt[18], pkt[19]]);
            (&pkt[ihl..], src, Some(dst))
        } else {
            (&pkt[..], from, None)
        };
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let flags = tcp[13];
        if sport == port && dport == client_port && flags & 0x12 == 0x12 {
            assert_eq!(src, vip, "the SYN-ACK must come from the VIP");
            if let Some(dst) = dst {
                assert_eq!(dst, client, "the SYN-ACK must go to the client");
            }
            assert_eq!(ack, seq.wrapping_add(1));
            return;
        }
    }
    panic!("no SYN-ACK from {vip}:{port} to the client within 5 s");
}

#[test]
fn tunnelled_traffic_is_decapsulated_and_answered_from_the_vip() {
    let started = Instant::now();
    let t = Topo::new("b");
    arp_defaults(&t);
    let s = spec(&t, &[v4(), v6()]);
    in_ns(&t.server, &s, setup).expect("setup");
    // From here on no loader is open: the decapsulator lives on through its pinned link.

    let raw4 = t.sender.run(|| raw_socket(false, libc::IPPROTO_IPIP));
    let raw6 = t.sender.run(|| raw_socket(true, libc::IPPROTO_IPV6));
    let cases = [
        (v4(), IpAddr::V4(CLIENT_V4), IpAddr::V4(SERVER_V4), &raw4),
        (v6(), IpAddr::V6(CLIENT_V6), IpAddr::V6(SERVER_V6), &raw6),
    ];
    for (vip, client, server, raw) in cases {
        // UDP: the datagram reaches the socket on VIP:5353, the reply reaches the client
        // straight from the VIP (the server's route to the client is the sender).
        let (vip_sa, client_sa) = (SocketAddr::new(vip, 5353), SocketAddr::new(client, 40000));
        let service = t
            .server
            .run(move || UdpSocket::bind(vip_sa).expect("bind the VIP"));
        let user = t
            .sender
            .run(move || UdpSocket::bind(client_sa).expect("bind the client address"));
        for sock in [&service, &user] {
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        raw_send(raw, server, &udp_packet(client_sa, vip_sa, b"ping"));
        let mut buf = [0u8; 64];
        let (n, from) = service
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{vip}: no datagram on the VIP: {e}"));
        assert_eq!(
            (&buf[..n], from),
            (&b"ping"[..], client_sa),
            "the inner datagram, from the client"
        );
        if vip.is_ipv4() {
            // The reply from the VIP must resolve its next hop (the sender) anew, and the
            // sender must learn the server only from that ARP request.
            t.server
                .sh(&format!("ip -4 neigh flush dev {}", t.server_if));
            t.sender
                .sh(&format!("ip -4 neigh flush dev {}", t.sender_if));
        }
        service.send_to(b"pong", from).expect("reply");
        let (n, from) = user
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{vip}: no reply at the client: {e}"));
        assert_eq!(
            (&buf[..n], from),
            (&b"pong"[..], vip_sa),
            "the reply, from the VIP"
        );
        if vip.is_ipv4() {
            // A host answering an ARP request records the request's sender address: the
            // server's own (arp_announce=2), not the VIP the reply left from.
            let learned = neighbours(&t.sender, &t.sender_if);
            assert!(
                learned.contains(&server),
                "the server's ARP request did not name its own address {server}: the sender knows {learned:?}"
            );
            assert!(
                !learned.contains(&vip),
                "the server sent an ARP request with the VIP as sender address: the sender knows {learned:?}"
            );
        }

        // TCP: a SYN to a listener on the VIP gets its SYN-ACK from the VIP to the client.
        let _listener = t
            .server
            .run(move || TcpListener::bind(SocketAddr::new(vip, 8080)).expect("listen on the VIP"));
        let sniff = t
            .sender
            .run(move || raw_socket(vip.is_ipv6(), libc::IPPROTO_TCP));
        let syn = tcp_syn_packet(
            SocketAddr::new(client, 40001),
            SocketAddr::new(vip, 8080),
            1000,
        );
        raw_send(raw, server, &syn);
        wait_syn_ack(&sniff, vip, 8080, client, 40001, 1000);
    }

    // A tunnel packet to an address that is not a VIP is dropped and counted.
    let before = stats(&t);
    let not_vip4 = SocketAddr::new("192.168.35.99".parse().unwrap(), 5353);
    let not_vip6 = SocketAddr::new("fc00:3::99".parse().unwrap(), 5353);
    raw_send(
        &raw4,
        IpAddr::V4(SERVER_V4),
        &udp_packet(
            SocketAddr::new(IpAddr::V4(CLIENT_V4), 40002),
            not_vip4,
            b"x",
        ),
    );
    raw_send(
        &raw6,
        IpAddr::V6(SERVER_V6),
        &udp_packet(
            SocketAddr::new(IpAddr::V6(CLIENT_V6), 40002),
            not_vip6,
            b"x",
        ),
    );
    let want = before["drop_inner_not_vip"] + 2;
    assert!(
        wait_for(Duration::from_secs(2), || stats(&t)["drop_inner_not_vip"]
            >= want),
        "drop_inner_not_vip did not count 2 drops: {:?} -> {:?}",
        before,
        stats(&t)
    );
    let after = stats(&t);
    println!("decapsulator counters: {after:?}");
    assert!(after["decapsulated"] >= 4, "{after:?}");
    assert!(
        after["pass_not_tunnel"] > 0,
        "ordinary traffic (ARP, ND) passes: {after:?}"
    );
    assert_eq!(after["drop_malformed"], 0, "{after:?}");
    println!("traffic test took {:?}", started.elapsed());
}

#[test]
fn gre_and_gue_are_decapsulated_and_plain_udp_to_the_gue_port_passes() {
    let t = Topo::new("g");
    arp_defaults(&t);
    let s = ServerSpec {
        gue_ports: vec![6080, 7000],
        ..spec(&t, &[v4(), v6()])
    };
    in_ns(&t.server, &s, setup).expect("setup");
    let gre4 = t.sender.run(|| raw_socket(false, libc::IPPROTO_GRE));
    let gre6 = t.sender.run(|| raw_socket(true, libc::IPPROTO_GRE));
    let cases = [
        (
            v4(),
            IpAddr::V4(CLIENT_V4),
            IpAddr::V4(SERVER_V4),
            &gre4,
            [0x08, 0x00],
        ),
        (
            v6(),
            IpAddr::V6(CLIENT_V6),
            IpAddr::V6(SERVER_V6),
            &gre6,
            [0x86, 0xdd],
        ),
    ];
    for (vip, client, server, gre, ether_type) in cases {
        let vip_sa = SocketAddr::new(vip, 5353);
        let service = t
            .server
            .run(move || UdpSocket::bind(vip_sa).expect("bind the VIP"));
        service
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let received = |what: &str| {
            let mut buf = [0u8; 64];
            let (n, _) = service
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{what} to {vip}: no datagram on the VIP: {e}"));
            buf[..n].to_vec()
        };

        // GRE: flags and version 0, then the inner packet's EtherType.
        let mut packet = vec![0, 0, ether_type[0], ether_type[1]];
        packet.extend_from_slice(&udp_packet(SocketAddr::new(client, 40010), vip_sa, b"gre"));
        raw_send(gre, server, &packet);
        assert_eq!(received("GRE"), b"gre");

        // GUE: a real UDP datagram (the sender's kernel adds the header and, over IPv6,
        // the checksum) to each GUE port, the inner packet as its payload.
        for port in [6080, 7000] {
            let sender = t
                .sender
                .run(move || UdpSocket::bind(SocketAddr::new(client, 0)).expect("bind the sender"));
            let inner = udp_packet(SocketAddr::new(client, 40011), vip_sa, b"gue");
            sender
                .send_to(&inner, SocketAddr::new(server, port))
                .expect("send GUE");
            assert_eq!(received(&format!("GUE on port {port}")), b"gue");
        }

        // UDP to the GUE port that is not a packet to a VIP is ordinary UDP: it reaches
        // a socket bound there.
        let plain = t.server.run(move || {
            UdpSocket::bind(SocketAddr::new(server, 6080)).expect("bind the GUE port")
        });
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let sender = t
            .sender
            .run(move || UdpSocket::bind(SocketAddr::new(client, 0)).expect("bind the sender"));
        sender
            .send_to(b"not a tunnel", SocketAddr::new(server, 6080))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = plain
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("plain UDP to {server}:6080 did not arrive: {e}"));
        assert_eq!(&buf[..n], b"not a tunnel");
    }

    // GRE to an address that is not a VIP is dropped, as IP-in-IP is.
    let before = stats(&t);
    let mut packet = vec![0, 0, 0x08, 0x00];
    packet.extend_from_slice(&udp_packet(
        SocketAddr::new(IpAddr::V4(CLIENT_V4), 40012),
        SocketAddr::new("192.168.35.99".parse().unwrap(), 5353),
        b"x",
    ));
    raw_send(&gre4, IpAddr::V4(SERVER_V4), &packet);
    assert!(
        wait_for(Duration::from_secs(2), || stats(&t)["drop_inner_not_vip"]
            > before["drop_inner_not_vip"]),
        "GRE to a non-VIP was not dropped: {:?}",
        stats(&t)
    );
    let after = stats(&t);
    println!("decapsulator counters: {after:?}");
    assert!(after["decapsulated"] >= 6, "{after:?}");
    assert_eq!(after["drop_malformed"], 0, "{after:?}");

    // check names the GUE ports it takes, and warns of one a profile may use that it does not.
    let report = in_ns(&t.server, &s, check).expect("check");
    assert!(
        report
            .items
            .iter()
            .any(|i| i.severity == Severity::Ok && i.summary.contains("UDP ports 6080, 7000")),
        "{report}"
    );
    let other = ServerSpec {
        gue_ports: vec![6080, 9999],
        ..s.clone()
    };
    let report = in_ns(&t.server, &other, check).expect("check");
    let warning = report
        .with_severity(Severity::Warning)
        .find(|i| {
            i.summary
                .contains("GUE on UDP port 9999 is not decapsulated")
        })
        .unwrap_or_else(|| panic!("no warning for port 9999:\n{report}"));
    assert!(
        warning
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("--gue-port 9999"),
        "{warning:?}"
    );
}

#[test]
fn check_lists_what_is_missing_with_fixes() {
    let started = Instant::now();
    let t = Topo::new("c");
    t.server.sysctl_set("net.ipv4.conf.all.rp_filter", "1");
    arp_defaults(&t);
    let s = ServerSpec {
        decap: DecapMode::Auto,
        ..spec(&t, &[v4(), v6()])
    };
    let report = in_ns(&t.server, &s, check).expect("check");
    println!("{report}");
    assert!(!report.is_ok());
    let problem = |start: &str| {
        report
            .problems()
            .find(|i| i.summary.starts_with(start))
            .unwrap_or_else(|| panic!("no problem {start:?} in\n{report}"))
            .fix
            .clone()
            .expect("a problem carries its fix")
    };
    assert_eq!(
        problem("VIP 192.168.35.241 is not on lo"),
        "ip addr add 192.168.35.241/32 dev lo"
    );
    assert_eq!(
        problem("VIP fc00:3::24a is not on lo"),
        "ip -6 addr add fc00:3::24a/128 dev lo nodad"
    );
    for vip in ["192.168.35.241", "fc00:3::24a"] {
        let fix = problem(&format!("VIP {vip}: no decapsulation"));
        assert!(
            fix.starts_with(
                "ricochet server setup --vip 192.168.35.241 --vip fc00:3::24a --interface"
            ),
            "{fix}"
        );
    }
    let iface = t.server_if.clone();
    let fix = problem(&format!("reverse-path filter strict on {iface}"));
    assert_eq!(
        fix,
        format!("sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{iface}.rp_filter=0")
    );
    problem("reverse-path filter strict on lo");
    assert_eq!(
        problem(&format!(
            "{iface} answers ARP for the VIPs on lo: arp_ignore effective max(all=0, {iface}=0) = 0, DSR needs 1"
        )),
        format!("sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.{iface}.arp_ignore=1")
    );
    assert_eq!(
        problem(&format!(
            "ARP requests from {iface} can use a VIP as sender address: arp_announce effective max(all=0, {iface}=0) = 0, DSR needs 2"
        )),
        format!("sysctl -w net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.{iface}.arp_announce=2")
    );
    // Forwarding is reported, never a problem.
    assert!(report
        .with_severity(Severity::Info)
        .any(|i| i.summary.starts_with("net.ipv4.ip_forward=")));
    assert!(!report.problems().any(|i| i.summary.contains("forward")));
    // A veth has MTU 1500: an encapsulated full-size packet does not fit.
    let mtu_warnings = report
        .with_severity(Severity::Warning)
        .filter(|i| i.summary.starts_with("MTU 1500"))
        .count();
    assert_eq!(mtu_warnings, 2, "one MTU warning per family:\n{report}");
    t.server.sh(&format!("ip link set {iface} mtu 1540"));
    let report = in_ns(&t.server, &s, check).expect("check");
    assert_eq!(
        report
            .with_severity(Severity::Warning)
            .filter(|i| i.summary.starts_with("MTU"))
            .count(),
        0,
        "{report}"
    );

    // A VIP inside the interface's subnet: the ARP problem says its neighbours ask for it.
    let on_link = ServerSpec {
        vips: vec!["192.168.33.241".parse().unwrap()],
        ..s.clone()
    };
    let report = t.server.run(move || check(&on_link)).expect("check");
    assert!(
        report.problems().any(|i| i.summary.contains(&format!(
            "VIP 192.168.33.241 is inside {iface}'s subnet 192.168.33.10/24, so its neighbours ask for it"
        ))),
        "{report}"
    );
    // The kernel applies max(all, interface): either one set is enough, and a stricter
    // arp_ignore (2: same subnet only) is as good.
    t.server
        .sysctl_set(&format!("net.ipv4.conf.{iface}.arp_ignore"), "2");
    t.server.sysctl_set("net.ipv4.conf.all.arp_announce", "2");
    let report = in_ns(&t.server, &s, check).expect("check");
    let oks: Vec<&str> = report
        .with_severity(Severity::Ok)
        .map(|i| i.summary.as_str())
        .collect();
    for want in [
        format!("{iface} answers no ARP for the VIPs on lo: arp_ignore effective max(all=0, {iface}=2) = 2"),
        format!("ARP requests from {iface} use its own address, never a VIP: arp_announce effective max(all=2, {iface}=0) = 2"),
    ] {
        assert!(oks.contains(&want.as_str()), "no ok item {want:?} in\n{report}");
    }
    // arp_ignore 3 hides only scope-host addresses, and arp_announce above 2 acts as 0.
    t.server.sysctl_set("net.ipv4.conf.all.arp_ignore", "3");
    t.server
        .sysctl_set(&format!("net.ipv4.conf.{iface}.arp_announce"), "3");
    let report = in_ns(&t.server, &s, check).expect("check");
    for start in [
        format!("{iface} answers ARP for the VIPs on lo: arp_ignore effective max(all=3, {iface}=2) = 3"),
        format!("ARP requests from {iface} can use a VIP as sender address: arp_announce effective max(all=2, {iface}=3) = 3"),
    ] {
        assert!(
            report.problems().any(|i| i.summary.starts_with(&start)),
            "no problem {start:?} in\n{report}"
        );
    }

    // Errors name the object.
    let missing = ServerSpec {
        interface: Some("rcsnope0".into()),
        ..s.clone()
    };
    let err = t
        .server
        .run({
            let m = missing.clone();
            move || check(&m).map(|_| ())
        })
        .expect_err("a missing interface is an error");
    assert!(
        matches!(err.downcast_ref(), Some(ServerError::NoSuchInterface(i)) if i == "rcsnope0"),
        "{err:#}"
    );
    assert_eq!(err.to_string(), "interface rcsnope0 does not exist");
    let err = t
        .server
        .run(move || setup(&missing).map(|_| ()))
        .expect_err("setup on a missing interface");
    assert!(err.to_string().contains("rcsnope0"), "{err:#}");
    // The sender namespace has no default route: the interface must be given.
    let no_route = ServerSpec {
        pin_dir: PathBuf::from("/sys/fs/bpf/unused"),
        ..s.clone()
    };
    let err = t
        .sender
        .run(move || check(&no_route).map(|_| ()))
        .expect_err("no default route");
    assert!(
        matches!(err.downcast_ref(), Some(ServerError::NoDefaultRoute)),
        "{err:#}"
    );
    println!("check test took {:?}", started.elapsed());
}

#[test]
fn undo_restores_exactly_what_setup_changed() {
    let started = Instant::now();
    let t = Topo::new("d");
    let [all, lo, dev] = rp_filter_keys(&t);
    let [(ignore_all, _), (ignore_dev, _), (announce_all, _), (announce_dev, _)] = arp_keys(&t);
    // arp_ignore 2 on the interface is stricter than setup's 1: setup keeps it.
    let previous = [
        (&all, "2"),
        (&lo, "1"),
        (&dev, "1"),
        (&ignore_all, "0"),
        (&ignore_dev, "2"),
        (&announce_all, "1"),
        (&announce_dev, "0"),
    ];
    for (k, v) in previous {
        t.server.sysctl_set(k, v);
    }
    // An address the administrator had on lo before: setup finds it, undo must keep it.
    t.server.sh("ip addr add 192.168.35.250/32 dev lo");
    let theirs: IpAddr = "192.168.35.250".parse().unwrap();
    let s = spec(&t, &[v4(), theirs, v6()]);
    let setup_again = |t: &Topo| in_ns(&t.server, &s, setup).expect("setup");
    let r = setup_again(&t);
    assert_eq!(attached_decaps(&t), 1);
    for (k, v) in [
        (&ignore_all, "1"),
        (&ignore_dev, "2"),
        (&announce_all, "2"),
        (&announce_dev, "2"),
    ] {
        assert_eq!(t.server.sysctl_get(k), v, "{k} after setup");
    }
    assert!(
        !r.changes.iter().any(|c| c.contains(ignore_dev.as_str())),
        "the stricter arp_ignore was changed: {r}"
    );

    // Undo of one VIP removes just that VIP.
    t.server
        .run({
            let s = ServerSpec {
                vips: vec![v6()],
                ..s.clone()
            };
            move || undo(&s)
        })
        .expect("undo one VIP");
    assert!(!t.server.addrs("lo").contains(&"fc00:3::24a/128".to_owned()));
    assert_eq!(attached_decaps(&t), 1, "still attached for the other VIPs");
    let report = in_ns(&t.server, &s, check).unwrap();
    assert!(
        report
            .problems()
            .any(|i| i.summary.starts_with("VIP fc00:3::24a: no decapsulation")),
        "{report}"
    );
    assert!(
        !report
            .problems()
            .any(|i| i.summary.starts_with("VIP 192.168.35.241")),
        "{report}"
    );

    // Full undo.
    in_ns(&t.server, &s, undo).expect("undo");
    for (k, v) in previous {
        assert_eq!(t.server.sysctl_get(k), v, "{k} restored");
    }
    let lo_addrs = t.server.addrs("lo");
    assert!(
        lo_addrs.contains(&"192.168.35.250/32".to_owned()),
        "the administrator's address stays: {lo_addrs:?}"
    );
    assert!(
        !lo_addrs
            .iter()
            .any(|a| a == "192.168.35.241/32" || a == "fc00:3::24a/128"),
        "{lo_addrs:?}"
    );
    assert!(
        wait_for(Duration::from_secs(2), || attached_decaps(&t) == 0),
        "the decapsulator is still attached after undo"
    );
    assert!(
        !exists_in_server(&t, t.pin_dir.clone()),
        "pin directory left behind"
    );
    assert!(
        !exists_in_server(&t, state_path(&t.pin_dir)),
        "state file left behind"
    );
    let report = in_ns(&t.server, &s, check).unwrap();
    assert!(!report.is_ok(), "{report}");
    // Nothing recorded: a second undo is a no-op.
    in_ns(&t.server, &s, undo).expect("second undo");

    // A sysctl someone changed after setup is left as they set it.
    setup_again(&t);
    t.server.sysctl_set(&lo, "2");
    t.server.sysctl_set(&ignore_all, "8");
    in_ns(&t.server, &s, undo).expect("undo");
    assert_eq!(
        t.server.sysctl_get(&lo),
        "2",
        "an administrator's later change is kept"
    );
    assert_eq!(t.server.sysctl_get(&all), "2");
    assert_eq!(t.server.sysctl_get(&dev), "1");
    assert_eq!(
        t.server.sysctl_get(&ignore_all),
        "8",
        "an administrator's later change is kept"
    );
    assert_eq!(t.server.sysctl_get(&announce_all), "1");
    assert_eq!(t.server.sysctl_get(&announce_dev), "0");
    println!("undo test took {:?}", started.elapsed());
}

#[test]
fn refusals_change_nothing() {
    let started = Instant::now();
    let t = Topo::new("e");
    let lo_before = t.server.addrs("lo");

    // Kernel decapsulation without the ipip/ip6_tunnel modules (this machine kind).
    if !Path::new("/sys/module/ipip").exists() {
        let s = ServerSpec {
            decap: DecapMode::Kernel,
            ..spec(&t, &[v4()])
        };
        let err = t
            .server
            .run(move || setup(&s).map(|_| ()))
            .expect_err("no ipip module");
        assert!(
            matches!(
                err.downcast_ref(),
                Some(ServerError::NoKernelTunnel {
                    module: "ipip",
                    device: "tunl0"
                })
            ),
            "{err:#}"
        );
        assert!(err.to_string().contains("use --decap ebpf"), "{err}");
    }

    // GUE ports the decapsulator cannot take: 0, or more than its map holds.
    for (ports, says) in [
        (vec![6080, 0], "GUE port 0 is not a port"),
        (
            (1..=17).collect::<Vec<u16>>(),
            "17 GUE ports given, the decapsulator takes at most 16",
        ),
    ] {
        let s = ServerSpec {
            gue_ports: ports,
            ..spec(&t, &[v4()])
        };
        let err = t
            .server
            .run(move || setup(&s).map(|_| ()))
            .expect_err("bad GUE ports");
        assert!(err.to_string().contains(says), "{err:#}");
    }
    // Without CAP_NET_ADMIN/CAP_BPF (effective capabilities dropped on this thread only).
    let s = spec(&t, &[v4()]);
    let err = t.server.run(move || {
        drop_effective_capabilities();
        setup(&s).map(|_| ())
    });
    let err = err.expect_err("setup without privileges");
    assert!(
        matches!(err.downcast_ref(), Some(ServerError::NotRoot)),
        "{err:#}"
    );
    assert_eq!(
        err.to_string(),
        "needs root (CAP_NET_ADMIN, CAP_BPF): run as root"
    );
    // check still runs, and says what it could not inspect.
    let s = spec(&t, &[v4()]);
    let report = t
        .server
        .run(move || check(&s))
        .expect("check without privileges");
    assert!(
        report
            .problems()
            .any(|i| i.summary.contains("cannot be inspected without root")),
        "{report}"
    );

    assert_eq!(
        t.server.addrs("lo"),
        lo_before,
        "a refused setup changed lo"
    );
    assert!(
        !exists_in_server(&t, state_path(&t.pin_dir)),
        "a refused setup left a record"
    );
    println!("refusals test took {:?}", started.elapsed());
}

/// Clears the calling thread's effective capabilities (capabilities are per thread).
fn drop_effective_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset with a v3 header and two data words, as capget(2) documents.
    unsafe {
        assert_eq!(
            libc::syscall(
                libc::SYS_capget,
                &header as *const Header,
                data.as_mut_ptr()
            ),
            0
        );
        for d in &mut data {
            d.effective = 0;
        }
        assert_eq!(
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()),
            0
        );
    }
}
