//! Privileged packet fixtures of the XDP load balancer, run with BPF_PROG_TEST_RUN.
//!
//! Each fixture is an input frame, the expected verdict, the expected output frame
//! (compared whole, byte for byte) and the one `Reason` counter the packet must move.
//! Frames are built with `etherparse` from the fixture's description, never with the
//! program's own header code; the only shared piece is `client_hash`, the documented
//! contract of the Maglev layout (a client's slot is `client_hash(..) % table size`).
//!
//! Every test runs in a network namespace of its own (see `support::net`), where
//! `fx0` (192.168.33.7/24, fc00::7/64, MTU 1500; frames are received on it) has
//! permanent neighbours for web01, web03 and the router, web02 sits behind the router,
//! web04 is on a second link `fx2`, and two servers are unreachable (no route, no
//! neighbour entry). The world of VIPs, services and servers is in `support::lab`.
//!
//! Run as root: `cargo test -p ricochet-dataplane --test fixtures`.

mod support;

use std::{
    cell::Cell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use etherparse::{EtherType, IpNumber};
use ricochet_common::{
    limits, Event, FlowKey, FlowValue, Reason, ServerState, ServerValue, ServiceFlags,
    ServiceValue, Settings, SettingsFlags, TokenBucket, VipFlags, VipKey, VipValue, PROTO_TCP,
};
use ricochet_dataplane::Dataplane;
use support::{
    lab::*,
    net::{self, LB_MTU, LB_V4, LB_V6},
    packets::*,
};

const CLIENT_PORT: u16 = 50412;
const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n";

// ---------------------------------------------------------------------------------
// Helpers

/// A fixture for an IPv4 packet that must leave encapsulated towards `server`.
fn forwarded4(what: &str, l2_in: L2, inner: Vec<u8>, server: Server) -> Fixture {
    let l2_out = L2 {
        vlan: l2_in.vlan,
        ..server.l2()
    };
    let output = ipip4(l2_out, LB_V4, server.v4(), &inner, &[]);
    Fixture::tx(what, l2_in.ipv4(&inner), output, Reason::Forwarded)
}

/// A fixture for an IPv6 packet from (`client`, `sport`) that must leave encapsulated
/// towards `server`, with the documented flow label.
fn forwarded6(
    what: &str,
    l2_in: L2,
    inner: Vec<u8>,
    server: Server,
    client: Ipv6Addr,
    sport: u16,
) -> Fixture {
    let l2_out = L2 {
        vlan: l2_in.vlan,
        ..server.l2()
    };
    let output = ip6ip6(
        l2_out,
        LB_V6,
        server.v6(),
        &inner,
        flow_label(client, sport),
    );
    Fixture::tx(what, l2_in.ipv6(&inner), output, Reason::Forwarded)
}

/// The SYN of the client's flow to VIP:80 (`CLIENT4`, `CLIENT_PORT`), expected at `server`.
fn http4_syn(what: &str, server: Server) -> Fixture {
    forwarded4(
        what,
        FROM_CLIENT,
        syn4(CLIENT4, CLIENT_PORT, VIP4, 80),
        server,
    )
}

/// A data segment of the client's flow to VIP:80, expected at `server`.
fn http4_ack(what: &str, server: Server) -> Fixture {
    forwarded4(
        what,
        FROM_CLIENT,
        ack4(CLIENT4, CLIENT_PORT, VIP4, 80),
        server,
    )
}

fn syn4(client: Ipv4Addr, sport: u16, vip: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp4(client, sport, vip, dport, true, &[])
}

fn ack4(client: Ipv4Addr, sport: u16, vip: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp4(client, sport, vip, dport, false, HTTP_GET)
}

/// The server of `svc`'s table other than `s` (the tables hold two).
fn other_server(svc: &Service, s: Server) -> Server {
    let id = *svc
        .table
        .iter()
        .find(|&&id| id != s.id)
        .expect("table with two servers");
    Server::by_id(id)
}

/// Points `svc` at a new table, written to a fresh region first, as the engine
/// switches tables: with the flow table consulted (`CONSULT_FLOWS`, set by the switch).
/// (`Service::value` has the flag.)
fn switch_table(lab: &mut Lab, svc: &Service, slots: &[u32]) {
    lab.dp.write_table(FREE_TABLE_OFFSET, slots).unwrap();
    let value = ServiceValue {
        table_offset: FREE_TABLE_OFFSET,
        table_size: slots.len() as u32,
        ..svc.value()
    };
    lab.dp.put_service(&svc.key(), &value).unwrap();
}

/// The flow's entry, its `seen` stamp zeroed (the clock's; see `the_program_stamps_flows`).
fn flow_of(lab: &Lab, key: &FlowKey) -> Option<FlowValue> {
    lab.dp
        .flows()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| FlowValue { seen: 0, ..v })
}

fn http4_flow(client: Ipv4Addr, sport: u16) -> FlowKey {
    FlowKey::new(client.into(), sport, VIP4.into(), 80, PROTO_TCP)
}

/// Clients 192.168.11.2.. in order.
fn client4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 11, 2 + n)
}

// ---------------------------------------------------------------------------------
// Forwarding

#[test]
fn ipv4_tcp_syn_is_encapsulated_to_the_hashed_server() {
    with_lab(|lab| {
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        lab.check(&http4_syn(
            "IPv4 TCP SYN to VIP:80 (TOS AF41+ECT1, DF)",
            server,
        ));
    });
}

#[test]
fn ipv4_data_segment_is_encapsulated_byte_identical() {
    with_lab(|lab| {
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        lab.check(&http4_ack("IPv4 TCP ACK|PSH with an HTTP request", server));
    });
}

#[test]
fn ipv4_without_df_gets_an_outer_header_without_df() {
    with_lab(|lab| {
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        let opts = V4Opts {
            dont_fragment: Some(false),
            ..Default::default()
        };
        let inner = tcp4_with(CLIENT4, CLIENT_PORT, VIP4, 80, false, HTTP_GET, opts);
        let input = FROM_CLIENT.ipv4(&inner);
        let l2_out = server.l2();
        // The outer packet may be fragmented, so it carries a varying identification
        // (RFC 6864); the rest of the frame, checksum included, is fixed by it.
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let got = lab.run(&input);
            assert_eq!(got.action, 3, "XDP_TX");
            let id = u16::from_be_bytes([got.packet[14 + 4], got.packet[14 + 5]]);
            let expected = ipip4_with_id(l2_out, LB_V4, server.v4(), &inner, &[], id);
            assert_eq!(
                got.packet, expected,
                "IPv4 TCP without DF (outer id {id:#06x})"
            );
            assert_eq!(got.reasons, [(Reason::Forwarded, 1)]);
            ids.insert(id);
        }
        assert!(
            ids.len() > 1,
            "outer IPv4 ids of fragmentable packets must vary: {ids:?}"
        );
    });
}

/// Several clients, each to the server its slot names: a program that ignores the
/// hash, the seed or the table offset sends some of them elsewhere.
#[test]
fn ipv4_clients_reach_the_servers_their_slots_name() {
    with_lab(|lab| {
        let picks: Vec<(Ipv4Addr, Server)> = (0..12)
            .map(|n| (client4(n), HTTP4.pick(client4(n).into(), CLIENT_PORT)))
            .collect();
        assert!(
            picks.iter().any(|(_, s)| s.id == WEB01_4.id)
                && picks.iter().any(|(_, s)| s.id == WEB03_4.id),
            "fixture sanity: the clients should spread over both servers"
        );
        assert!(
            picks.iter().any(|(c, s)| pick_seeded(
                HTTP4.table,
                ServiceFlags::EMPTY,
                (*c).into(),
                CLIENT_PORT,
                0
            ) != s.id),
            "fixture sanity: some client should move with the seed, so that ignoring it is caught"
        );
        for (client, server) in picks {
            lab.check(&forwarded4(
                &format!("SYN from {client} (to server {})", server.id),
                FROM_CLIENT,
                syn4(client, CLIENT_PORT, VIP4, 80),
                server,
            ));
        }
    });
}

/// A minimum-size Ethernet frame: the 40-byte SYN is padded to 60 bytes. The program
/// encapsulates the frame as received, so the padding trails the (correctly sized)
/// outer packet.
#[test]
fn ipv4_padded_minimum_frame_is_encapsulated_with_its_padding() {
    with_lab(|lab| {
        let inner = syn4(CLIENT4, CLIENT_PORT, VIP4, 80);
        let mut input = FROM_CLIENT.ipv4(&inner);
        let padding = vec![0u8; 60 - input.len()];
        input.extend_from_slice(&padding);
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        let output = ipip4(server.l2(), LB_V4, server.v4(), &inner, &padding);
        lab.check(&Fixture::tx(
            "SYN in a 60-byte padded frame",
            input,
            output,
            Reason::Forwarded,
        ));
    });
}

#[test]
fn ipv4_server_behind_the_router_gets_the_routers_mac() {
    with_lab(|lab| {
        lab.check(&forwarded4(
            "IPv4 to VIP:8080, pool web02 (192.168.34.10 via 192.168.33.1)",
            FROM_CLIENT,
            syn4(CLIENT4, CLIENT_PORT, VIP4, 8080),
            WEB02_4,
        ));
    });
}

#[test]
fn ipv6_tcp_is_encapsulated_with_the_documented_flow_label() {
    with_lab(|lab| {
        let server = HTTP6.pick(CLIENT6.into(), CLIENT_PORT);
        assert_ne!(
            flow_label(CLIENT6, CLIENT_PORT),
            0,
            "fixture sanity: a zero label would prove little"
        );
        lab.check(&forwarded6(
            "IPv6 TCP SYN to [VIP]:80 (traffic class EF+CE)",
            FROM_CLIENT,
            tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, true, &[]),
            server,
            CLIENT6,
            CLIENT_PORT,
        ));
        lab.check(&forwarded6(
            "IPv6 TCP data, same flow: same server, same label",
            FROM_CLIENT,
            tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, false, HTTP_GET),
            server,
            CLIENT6,
            CLIENT_PORT,
        ));
    });
}

/// `svc`'s entry with the encapsulation `flags` (and GUE port) of a GRE or GUE profile.
fn with_tunnel(lab: &mut Lab, svc: &Service, flags: ServiceFlags, gue_port: u16) {
    let value = ServiceValue {
        flags: svc.value().flags | flags,
        gue_port: gue_port.to_be_bytes(),
        ..svc.value()
    };
    lab.dp.put_service(&svc.key(), &value).unwrap();
}

#[test]
fn gre_services_encapsulate_in_gre_in_both_families() {
    with_lab(|lab| {
        with_tunnel(lab, &HTTP4, ServiceFlags::ENCAP_GRE, 0);
        with_tunnel(lab, &HTTP6, ServiceFlags::ENCAP_GRE, 0);
        let inner = syn4(CLIENT4, CLIENT_PORT, VIP4, 80);
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        lab.check(&Fixture::tx(
            "IPv4 TCP SYN to a GRE service: outer protocol 47, GRE 0x0800",
            FROM_CLIENT.ipv4(&inner),
            gre4(server.l2(), LB_V4, server.v4(), &inner, &[]),
            Reason::Forwarded,
        ));
        let inner = tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, false, HTTP_GET);
        let server = HTTP6.pick(CLIENT6.into(), CLIENT_PORT);
        lab.check(&Fixture::tx(
            "IPv6 TCP data to a GRE service: next header 47, GRE 0x86dd, the flow label",
            FROM_CLIENT.ipv6(&inner),
            gre6(
                server.l2(),
                LB_V6,
                server.v6(),
                &inner,
                flow_label(CLIENT6, CLIENT_PORT),
            ),
            Reason::Forwarded,
        ));
        // The other services of the VIP keep IP-in-IP.
        lab.check(&forwarded4(
            "IPv4 to VIP:8080 (IP-in-IP service beside the GRE one)",
            FROM_CLIENT,
            syn4(CLIENT4, CLIENT_PORT, VIP4, 8080),
            Server::by_id(WEB02_4.id),
        ));
    });
}

#[test]
fn gue_services_encapsulate_in_udp_to_their_port_from_a_port_of_the_flow() {
    with_lab(|lab| {
        with_tunnel(lab, &HTTP4, ServiceFlags::ENCAP_GUE, 6080);
        with_tunnel(lab, &DNS6, ServiceFlags::ENCAP_GUE, 7000);
        for sport in [CLIENT_PORT, 40000, 1] {
            let inner = ack4(CLIENT4, sport, VIP4, 80);
            let server = HTTP4.pick(CLIENT4.into(), sport);
            lab.check(&Fixture::tx(
                format!("IPv4 TCP from port {sport} to a GUE service (port 6080, checksum 0)"),
                FROM_CLIENT.ipv4(&inner),
                gue4(
                    server.l2(),
                    LB_V4,
                    server.v4(),
                    &inner,
                    gue_source_port(CLIENT4.into(), sport),
                    6080,
                ),
                Reason::Forwarded,
            ));
        }
        let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x00\x00\x01\x00\x01";
        for sport in [33333, 53] {
            let inner = udp6(CLIENT6, sport, VIP6, 53, query);
            let server = DNS6.pick(CLIENT6.into(), sport);
            lab.check(&Fixture::tx(
                format!("IPv6 UDP from port {sport} to a GUE service on port 7000 (checksummed)"),
                FROM_CLIENT.ipv6(&inner),
                gue6(
                    server.l2(),
                    LB_V6,
                    server.v6(),
                    &inner,
                    flow_label(CLIENT6, sport),
                    gue_source_port(CLIENT6.into(), sport),
                    7000,
                ),
                Reason::Forwarded,
            ));
        }
        // Different flows, different source ports (what the servers' RSS spreads).
        let ports: std::collections::BTreeSet<u16> = (0..64)
            .map(|i| gue_source_port(CLIENT4.into(), 20000 + i))
            .collect();
        assert!(ports.len() > 48, "{ports:?}");
        assert!(ports.iter().all(|&p| p >= 0xc000));
    });
}

#[test]
fn l2_dsr_sends_the_frame_to_the_servers_mac_when_it_is_on_link() {
    with_lab(|lab| {
        with_tunnel(lab, &HTTP4, ServiceFlags::L2_DSR, 0);
        with_tunnel(lab, &HTTP6, ServiceFlags::L2_DSR, 0);
        // A client whose Maglev pick is web01 (on fx0's segment).
        let client_of = |svc: &Service, id: u32, v6: bool| {
            (0..200u16)
                .map(|n| {
                    if v6 {
                        IpAddr::V6(Ipv6Addr::new(0xfc00, 0x11, 0, 0, 0, 0, 0, 2 + n))
                    } else {
                        IpAddr::V4(client4(n as u8))
                    }
                })
                .find(|&c| svc.pick(c, CLIENT_PORT).id == id)
                .unwrap()
        };
        let c = client_of(&HTTP4, WEB01_4.id, false);
        let IpAddr::V4(c4) = c else { unreachable!() };
        let inner = syn4(c4, CLIENT_PORT, VIP4, 80);
        lab.check(&Fixture::tx(
            "IPv4 SYN to an L2 DSR service, web01 on link: the same packet to web01's MAC",
            FROM_CLIENT.ipv4(&inner),
            WEB01_4.l2().ipv4(&inner),
            Reason::Forwarded,
        ));
        let tagged = FROM_CLIENT.tagged(42);
        lab.check(&Fixture::tx(
            "802.1Q-tagged, L2 DSR: the tag stays",
            tagged.ipv4(&inner),
            L2 {
                vlan: Some(42),
                ..WEB01_4.l2()
            }
            .ipv4(&inner),
            Reason::Forwarded,
        ));
        // VIP:8080's pool is web02 alone, behind the router.
        with_tunnel(lab, &ALT4, ServiceFlags::L2_DSR, 0);
        lab.check(&Fixture::drop(
            "IPv4 to an L2 DSR service whose server, web02, is behind the router",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 8080)),
            Reason::DropL2NotOnLink,
        ));
        let on_link6 = HTTP6
            .table
            .iter()
            .find(|&&id| id != WEB02_6.id)
            .copied()
            .unwrap();
        let c = client_of(&HTTP6, on_link6, true);
        let IpAddr::V6(c6) = c else { unreachable!() };
        let inner = tcp6(c6, CLIENT_PORT, VIP6, 80, false, HTTP_GET);
        let server = Server::by_id(on_link6);
        lab.check(&Fixture::tx(
            "IPv6 to an L2 DSR service, on-link pick: the same packet to its MAC",
            FROM_CLIENT.ipv6(&inner),
            server.l2().ipv6(&inner),
            Reason::Forwarded,
        ));
        // Counted as the service's traffic like any forwarded packet.
        assert!(lab.dp.service_counters(HTTP4.id).unwrap().packets >= 2);
    });
}

#[test]
fn tunnels_advertise_the_mtu_left_after_their_headers() {
    with_lab(|lab| {
        with_tunnel(lab, &HTTP4, ServiceFlags::ENCAP_GRE, 0);
        let inner = sized4(LB_MTU as usize - 20, true);
        lab.check(&Fixture::tx(
            "1480-byte IPv4 with DF to a GRE service on a 1500-MTU path: next-hop MTU 1476",
            FROM_CLIENT.ipv4(&inner),
            icmp4_frag_needed(FROM_CLIENT, &inner, LB_MTU as u16 - 24),
            Reason::IcmpTooBig,
        ));
        let fits = sized4(LB_MTU as usize - 24, true);
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        lab.check(&Fixture::tx(
            "1476-byte IPv4 with DF to a GRE service: fits",
            FROM_CLIENT.ipv4(&fits),
            gre4(server.l2(), LB_V4, server.v4(), &fits, &[]),
            Reason::Forwarded,
        ));
        with_tunnel(lab, &HTTP6, ServiceFlags::ENCAP_GUE, 6080);
        let inner = sized6(LB_MTU as usize - 40);
        lab.check(&Fixture::tx(
            "1460-byte IPv6 to a GUE service on a 1500-MTU path: packet too big, MTU 1452",
            FROM_CLIENT.ipv6(&inner),
            icmp6_packet_too_big(FROM_CLIENT, &inner, LB_MTU - 48),
            Reason::IcmpTooBig,
        ));
    });
}

#[test]
fn ipv6_server_behind_the_router_gets_the_routers_mac() {
    with_lab(|lab| {
        lab.check(&forwarded6(
            "IPv6 to [VIP]:8080, pool web02 (fc00:34::10 via fc00::1)",
            FROM_CLIENT,
            tcp6(CLIENT6, CLIENT_PORT, VIP6, 8080, true, &[]),
            WEB02_6,
            CLIENT6,
            CLIENT_PORT,
        ));
    });
}

#[test]
fn udp_service_is_forwarded() {
    with_lab(|lab| {
        let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01";
        let sport = 33333;
        lab.check(&forwarded4(
            "IPv4 UDP to VIP:53",
            FROM_CLIENT,
            udp4(CLIENT4, sport, VIP4, 53, query),
            DNS4.pick(CLIENT4.into(), sport),
        ));
        lab.check(&forwarded6(
            "IPv6 UDP to [VIP]:53",
            FROM_CLIENT,
            udp6(CLIENT6, sport, VIP6, 53, query),
            DNS6.pick(CLIENT6.into(), sport),
            CLIENT6,
            sport,
        ));
    });
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    with_lab(|lab| {
        let tagged = FROM_CLIENT.tagged(42);
        lab.check(&forwarded4(
            "802.1Q (VLAN 42, PCP 5) IPv4 SYN",
            tagged,
            syn4(CLIENT4, CLIENT_PORT, VIP4, 80),
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
        lab.check(&forwarded6(
            "802.1Q (VLAN 42, PCP 5) IPv6 SYN",
            tagged,
            tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, true, &[]),
            HTTP6.pick(CLIENT6.into(), CLIENT_PORT),
            CLIENT6,
            CLIENT_PORT,
        ));
    });
}

#[test]
fn all_ports_service_forwards_any_tcp_port() {
    with_lab(|lab| {
        for port in [1, 22, 80, 8443, 65535] {
            lab.check(&forwarded4(
                &format!("TCP to the all-ports VIP, port {port}"),
                FROM_CLIENT,
                syn4(CLIENT4, CLIENT_PORT, VIP4_ALL_PORTS, port),
                ALL_PORTS4.pick(CLIENT4.into(), CLIENT_PORT),
            ));
        }
        lab.check(&Fixture::drop(
            "UDP to the all-ports VIP (TCP only)",
            FROM_CLIENT.ipv4(&udp4(CLIENT4, CLIENT_PORT, VIP4_ALL_PORTS, 53, b"x")),
            Reason::DropNoService,
        ));
    });
}

/// An 802.1ad (S-tag, TPID 0x88a8) single tag is handled like an 802.1Q one.
#[test]
fn single_8021ad_tag_is_kept() {
    let retag = |mut frame: Vec<u8>| {
        assert_eq!(frame[12..14], [0x81, 0x00]);
        frame[12..14].copy_from_slice(&[0x88, 0xa8]);
        frame
    };
    with_lab(|lab| {
        let fx = forwarded4(
            "802.1ad (S-VLAN 42) IPv4 SYN",
            FROM_CLIENT.tagged(42),
            syn4(CLIENT4, CLIENT_PORT, VIP4, 80),
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        );
        lab.check(&Fixture {
            input: retag(fx.input.clone()),
            output: retag(fx.output.clone()),
            ..fx
        });
    });
}

/// Only one tag is parsed: a double-tagged (QinQ) frame is not IP to the program.
#[test]
fn double_tagged_frames_pass() {
    with_lab(|lab| {
        let inner_tagged = FROM_CLIENT
            .tagged(42)
            .ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 80));
        let mut qinq = inner_tagged[..12].to_vec();
        qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 100]);
        qinq.extend_from_slice(&inner_tagged[12..]);
        lab.check(&Fixture::pass(
            "QinQ (S-VLAN 100, C-VLAN 42) IPv4 SYN to the VIP",
            qinq,
            Reason::PassNotIp,
        ));
    });
}

#[test]
fn specific_port_of_an_all_ports_vip_takes_precedence() {
    with_lab(|lab| {
        lab.check(&forwarded4(
            "TCP to the all-ports VIP, port 8080 (its own service: web02)",
            FROM_CLIENT,
            syn4(CLIENT4, CLIENT_PORT, VIP4_ALL_PORTS, 8080),
            WEB02_4,
        ));
        lab.check(&forwarded4(
            "TCP to the all-ports VIP, port 8081 (the port-0 service)",
            FROM_CLIENT,
            syn4(CLIENT4, CLIENT_PORT, VIP4_ALL_PORTS, 8081),
            ALL_PORTS4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
    });
}

/// A port-0 entry serves every port only while the VIP carries the all-ports flag.
#[test]
fn port_zero_entry_needs_the_vip_flag() {
    with_lab(|lab| {
        let wildcard = Service { port: 0, ..HTTP4 };
        lab.dp
            .put_service(&wildcard.key(), &wildcard.value())
            .unwrap();
        lab.check(&Fixture::drop(
            "TCP to VIP:22 with a port-0 entry but no all-ports flag on the VIP",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 22)),
            Reason::DropNoService,
        ));
        lab.dp
            .put_vip(
                &VipKey::new(VIP4.into()),
                &VipValue {
                    flags: VipFlags::TCP_ALL_PORTS,
                },
            )
            .unwrap();
        lab.check(&forwarded4(
            "the same packet once the VIP has the flag",
            FROM_CLIENT,
            syn4(CLIENT4, CLIENT_PORT, VIP4, 22),
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
        lab.check(&Fixture::drop(
            "UDP to VIP:22: the TCP flag does not open UDP",
            FROM_CLIENT.ipv4(&udp4(CLIENT4, CLIENT_PORT, VIP4, 22, b"x")),
            Reason::DropNoService,
        ));
    });
}

/// A server behind another interface: the frame is redirected there, with that
/// interface's MAC as source.
#[test]
fn server_on_another_link_is_reached_by_redirect() {
    with_lab(|lab| {
        let inner = syn4(CLIENT4, CLIENT_PORT, VIP4, 8081);
        let output = ipip4(WEB04_4.l2(), LB_V4, WEB04_4.v4(), &inner, &[]);
        lab.check(&Fixture::redirect(
            "IPv4 SYN to VIP:8081, pool web04 on fx2",
            FROM_CLIENT.ipv4(&inner),
            output,
            Reason::Forwarded,
        ));
    });
}

/// The load balancer is a tunnel entry, not a routing hop: it neither decrements nor
/// checks the client's TTL (so `drop_ttl_expired` is never counted by this program).
#[test]
fn client_ttl_is_left_alone() {
    with_lab(|lab| {
        for ttl in [1, 0] {
            let opts = V4Opts {
                ttl: Some(ttl),
                ..Default::default()
            };
            lab.check(&forwarded4(
                &format!("IPv4 SYN with TTL {ttl}"),
                FROM_CLIENT,
                tcp4_with(CLIENT4, CLIENT_PORT, VIP4, 80, true, &[], opts),
                HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
            ));
        }
    });
}

// ---------------------------------------------------------------------------------
// Servers the FIB cannot deliver to

#[test]
fn server_without_a_route_drops() {
    with_lab(|lab| {
        lab.check(&Fixture::drop(
            "IPv4 SYN to VIP:8082, pool 10.99.0.1 (no route)",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 8082)),
            Reason::DropNoRoute,
        ));
    });
}

#[test]
fn server_without_a_neighbour_entry_drops() {
    with_lab(|lab| {
        lab.check(&Fixture::drop(
            "IPv4 SYN to VIP:8083, pool 192.168.33.50 (on the segment, unresolved)",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 8083)),
            Reason::DropNoNeighbour,
        ));
    });
}

#[test]
fn forwarding_disabled_drops_with_no_route() {
    with_lab(|lab| {
        net::sysctl(&[
            "net.ipv4.conf.all.forwarding=0",
            "net.ipv6.conf.all.forwarding=0",
        ]);
        lab.check_all(&[
            Fixture::drop(
                "IPv4 SYN to VIP:80 with IPv4 forwarding off",
                FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 80)),
                Reason::DropNoRoute,
            ),
            Fixture::drop(
                "IPv6 SYN to [VIP]:80 with IPv6 forwarding off",
                FROM_CLIENT.ipv6(&tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, true, &[])),
                Reason::DropNoRoute,
            ),
        ]);
    });
}

// ---------------------------------------------------------------------------------
// Not for the load balancer: passed untouched

#[test]
fn traffic_to_other_addresses_passes_untouched() {
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::pass(
                "IPv4 TCP to a non-VIP address",
                FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, NOT_VIP4, 80)),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv4 TCP to the load balancer's own address",
                FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, LB_V4, 22)),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv6 TCP to a non-VIP address",
                FROM_CLIENT.ipv6(&tcp6(CLIENT6, CLIENT_PORT, NOT_VIP6, 80, true, &[])),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv4 with options to a non-VIP address (options matter only for VIPs)",
                FROM_CLIENT.ipv4(&tcp4_with(
                    CLIENT4,
                    CLIENT_PORT,
                    NOT_VIP4,
                    80,
                    true,
                    &[],
                    V4Opts {
                        router_alert: true,
                        ..Default::default()
                    },
                )),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv4 fragment to a non-VIP address",
                FROM_CLIENT.ipv4(&tcp4_with(
                    CLIENT4,
                    CLIENT_PORT,
                    NOT_VIP4,
                    80,
                    false,
                    HTTP_GET,
                    V4Opts {
                        more_fragments: true,
                        dont_fragment: Some(false),
                        ..Default::default()
                    },
                )),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv6 with a hop-by-hop header to a non-VIP address",
                FROM_CLIENT.ipv6(&tcp6_behind_ext(
                    CLIENT6,
                    CLIENT_PORT,
                    NOT_VIP6,
                    80,
                    IpNumber::IPV6_HEADER_HOP_BY_HOP,
                )),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "ICMP echo to a non-VIP address",
                FROM_CLIENT.ipv4(&raw4(
                    CLIENT4,
                    NOT_VIP4,
                    IpNumber::ICMP,
                    &echo_request(CLIENT4.into(), NOT_VIP4.into()),
                )),
                Reason::PassNotVip,
            ),
        ]);
    });
}

/// Addresses the VIP filter lets through though they are no VIPs (they share a VIP's
/// bit): the exact lookups find no VIP, so their packets pass as any other address's,
/// whatever stage they would be dropped at if they were to a VIP.
#[test]
fn vip_filter_false_positives_pass_untouched() {
    let (twin4, twin6) = (filter_twin4(), filter_twin6());
    let tcp_hdr = tcp(CLIENT4.into(), CLIENT_PORT, twin4.into(), 80, true, &[]);
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::pass(
                "IPv4 TCP to VIP4's filter twin, port of a VIP4 service",
                FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, twin4, 80)),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv4 UDP to VIP4's filter twin",
                FROM_CLIENT.ipv4(&udp4(CLIENT4, CLIENT_PORT, twin4, 53, b"q")),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv6 TCP to VIP6's filter twin",
                FROM_CLIENT.ipv6(&tcp6(CLIENT6, CLIENT_PORT, twin6, 80, true, &[])),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv4 with options to VIP4's filter twin",
                FROM_CLIENT.ipv4(&tcp4_with(
                    CLIENT4,
                    CLIENT_PORT,
                    twin4,
                    80,
                    true,
                    &[],
                    V4Opts {
                        router_alert: true,
                        ..Default::default()
                    },
                )),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv4 fragment to VIP4's filter twin",
                FROM_CLIENT.ipv4(&tcp4_with(
                    CLIENT4,
                    CLIENT_PORT,
                    twin4,
                    80,
                    false,
                    HTTP_GET,
                    V4Opts {
                        more_fragments: true,
                        dont_fragment: Some(false),
                        ..Default::default()
                    },
                )),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "truncated TCP header to VIP4's filter twin",
                FROM_CLIENT.ipv4(&raw4(CLIENT4, twin4, IpNumber::TCP, &tcp_hdr[..12])),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "ICMP echo to VIP4's filter twin",
                FROM_CLIENT.ipv4(&raw4(
                    CLIENT4,
                    twin4,
                    IpNumber::ICMP,
                    &echo_request(CLIENT4.into(), twin4.into()),
                )),
                Reason::PassNotVip,
            ),
            Fixture::pass(
                "IPv6 hop-by-hop header to VIP6's filter twin",
                FROM_CLIENT.ipv6(&tcp6_behind_ext(
                    CLIENT6,
                    CLIENT_PORT,
                    twin6,
                    80,
                    IpNumber::IPV6_HEADER_HOP_BY_HOP,
                )),
                Reason::PassNotVip,
            ),
        ]);
    });
}

/// The filter is the program's first word on VIPs: a VIP whose bit is clear is not
/// one, whatever services it has; its bit back, it is served again.
#[test]
fn a_vip_outside_the_filter_is_passed() {
    let (addr, family) = ricochet_common::addr_bytes(VIP4.into());
    let (word, mask) =
        ricochet_common::vip_filter::word_and_mask(ricochet_common::vip_filter::bit(&addr, family));
    let full = world_filter()[word as usize];
    with_lab(|lab| {
        lab.dp.put_vip_filter_word(word, full & !mask).unwrap();
        lab.check(&Fixture::pass(
            "TCP to VIP4:80 with VIP4's filter bit clear",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 80)),
            Reason::PassNotVip,
        ));
        lab.dp.put_vip_filter_word(word, full).unwrap();
        lab.check(&http4_syn(
            "the same packet with the bit set again",
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
    });
}

/// A VIP in `VIPS` without any service entry: what reaches it is dropped, by the same
/// stages as for any VIP.
#[test]
fn a_vip_without_services_drops_what_it_receives() {
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "TCP to a VIP without services",
                FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4_NO_SERVICE, 80)),
                Reason::DropNoService,
            ),
            Fixture::drop(
                "UDP to a VIP without services",
                FROM_CLIENT.ipv4(&udp4(CLIENT4, CLIENT_PORT, VIP4_NO_SERVICE, 53, b"q")),
                Reason::DropNoService,
            ),
            Fixture::drop(
                "IPv4 options to a VIP without services",
                FROM_CLIENT.ipv4(&tcp4_with(
                    CLIENT4,
                    CLIENT_PORT,
                    VIP4_NO_SERVICE,
                    80,
                    true,
                    &[],
                    V4Opts {
                        router_alert: true,
                        ..Default::default()
                    },
                )),
                Reason::DropIpv4Options,
            ),
        ]);
    });
}

#[test]
fn non_ip_frames_pass_untouched() {
    // An ARP request "who has 192.168.33.7? tell 192.168.33.1", built by hand.
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&net::ROUTER.mac);
    arp.extend_from_slice(&net::ROUTER.v4.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&LB_V4.octets());
    let broadcast = L2 {
        dst: [0xff; 6],
        src: net::ROUTER.mac,
        vlan: None,
    };
    let lldp = L2 {
        dst: [0x01, 0x80, 0xc2, 0, 0, 0x0e],
        src: net::ROUTER.mac,
        vlan: None,
    };
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::pass(
                "ARP request",
                broadcast.frame(EtherType::ARP, &arp),
                Reason::PassNotIp,
            ),
            Fixture::pass(
                "802.1Q-tagged ARP request",
                broadcast.tagged(42).frame(EtherType::ARP, &arp),
                Reason::PassNotIp,
            ),
            Fixture::pass(
                "LLDP frame",
                lldp.frame(EtherType(0x88cc), &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]),
                Reason::PassNotIp,
            ),
        ]);
    });
}

// ---------------------------------------------------------------------------------
// Malformed and unsupported packets

/// BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header (EINVAL), so
/// the program's `pass_truncated_l2` branch for such frames cannot be exercised here
/// (drivers never deliver them either); the truncated VLAN tag below covers the reason.
#[test]
fn frame_shorter_than_ethernet_is_refused_by_the_kernel_test_harness() {
    with_lab(|lab| {
        let short = &FROM_CLIENT.ipv4(&[])[..10];
        let res = lab.dp.test_run(short, lab.ifindex);
        assert!(
            res.is_err(),
            "BPF_PROG_TEST_RUN accepted a 10-byte frame: {res:?}; turn this into a fixture"
        );
    });
}

#[test]
fn truncated_l2_passes() {
    with_lab(|lab| {
        let tagged = FROM_CLIENT
            .tagged(42)
            .ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 80));
        lab.check_all(&[
            Fixture::pass(
                "802.1Q tag cut after its TCI (16 bytes)",
                tagged[..16].to_vec(),
                Reason::PassTruncatedL2,
            ),
            Fixture::pass(
                "802.1Q EtherType and nothing else (14 bytes)",
                tagged[..14].to_vec(),
                Reason::PassTruncatedL2,
            ),
        ]);
    });
}

#[test]
fn malformed_ipv4_headers_are_dropped() {
    let good = syn4(CLIENT4, CLIENT_PORT, VIP4, 80);
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        fix_ipv4_checksum(&mut p);
        FROM_CLIENT.ipv4(&p)
    };
    let set_total = |v: u16| move |p: &mut Vec<u8>| p[2..4].copy_from_slice(&v.to_be_bytes());
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "IPv4 header cut at 12 bytes",
                FROM_CLIENT.ipv4(&good[..12]),
                Reason::DropMalformedIpv4,
            ),
            Fixture::drop(
                "IHL 4 (< 5)",
                edit(&|p| p[0] = 0x44),
                Reason::DropMalformedIpv4,
            ),
            Fixture::drop("IHL 0", edit(&|p| p[0] = 0x40), Reason::DropMalformedIpv4),
            Fixture::drop(
                "total length one byte beyond the frame",
                edit(&set_total(good.len() as u16 + 1)),
                Reason::DropMalformedIpv4,
            ),
            Fixture::drop(
                "total length 16 (< header length)",
                edit(&set_total(16)),
                Reason::DropMalformedIpv4,
            ),
            Fixture::drop(
                "version 6 in an IPv4 EtherType frame",
                edit(&|p| p[0] = 0x65),
                Reason::DropMalformedIpv4,
            ),
            Fixture::drop(
                "IHL 15 in a 40-byte packet (options beyond total length)",
                edit(&|p| p[0] = 0x4f),
                Reason::DropMalformedIpv4,
            ),
        ]);
    });
}

#[test]
fn ipv4_options_to_a_vip_are_dropped() {
    with_lab(|lab| {
        let opts = V4Opts {
            router_alert: true,
            ..Default::default()
        };
        lab.check(&Fixture::drop(
            "IPv4 SYN with a router-alert option (IHL 6) to VIP:80",
            FROM_CLIENT.ipv4(&tcp4_with(CLIENT4, CLIENT_PORT, VIP4, 80, true, &[], opts)),
            Reason::DropIpv4Options,
        ));
    });
}

#[test]
fn ipv4_fragments_to_a_vip_are_dropped() {
    let frag = |more_fragments, fragment_offset| {
        let opts = V4Opts {
            dont_fragment: Some(false),
            more_fragments,
            fragment_offset,
            ..Default::default()
        };
        FROM_CLIENT.ipv4(&tcp4_with(
            CLIENT4,
            CLIENT_PORT,
            VIP4,
            80,
            false,
            HTTP_GET,
            opts,
        ))
    };
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "first fragment (MF, offset 0)",
                frag(true, 0),
                Reason::DropFragment,
            ),
            Fixture::drop(
                "middle fragment (MF, offset 185)",
                frag(true, 185),
                Reason::DropFragment,
            ),
            Fixture::drop(
                "last fragment (offset 185, no MF)",
                frag(false, 185),
                Reason::DropFragment,
            ),
        ]);
    });
}

#[test]
fn ipv6_extension_headers_to_a_vip_are_dropped() {
    let ext = |next| FROM_CLIENT.ipv6(&tcp6_behind_ext(CLIENT6, CLIENT_PORT, VIP6, 80, next));
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "hop-by-hop options header",
                ext(IpNumber::IPV6_HEADER_HOP_BY_HOP),
                Reason::DropIpv6ExtHeader,
            ),
            Fixture::drop(
                "routing header",
                ext(IpNumber::IPV6_ROUTE_HEADER),
                Reason::DropIpv6ExtHeader,
            ),
            Fixture::drop(
                "destination options header",
                ext(IpNumber::IPV6_DESTINATION_OPTIONS),
                Reason::DropIpv6ExtHeader,
            ),
            Fixture::drop(
                "fragment header",
                ext(IpNumber::IPV6_FRAGMENTATION_HEADER),
                Reason::DropFragment,
            ),
        ]);
    });
}

#[test]
fn truncated_transport_headers_are_dropped() {
    let tcp_hdr = tcp(CLIENT4.into(), CLIENT_PORT, VIP4.into(), 80, true, &[]);
    let udp_hdr = udp(CLIENT4.into(), CLIENT_PORT, VIP4.into(), 53, &[]);
    let tcp6_hdr = tcp(CLIENT6.into(), CLIENT_PORT, VIP6.into(), 80, true, &[]);
    let udp6_hdr = udp(CLIENT6.into(), CLIENT_PORT, VIP6.into(), 53, &[]);
    // The TCP header is in the frame, but the IPv4 total length ends 8 bytes into it.
    let mut cut_by_length = syn4(CLIENT4, CLIENT_PORT, VIP4, 80);
    cut_by_length[2..4].copy_from_slice(&28u16.to_be_bytes());
    fix_ipv4_checksum(&mut cut_by_length);
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "IPv4 TCP header of 12 bytes",
                FROM_CLIENT.ipv4(&raw4(CLIENT4, VIP4, IpNumber::TCP, &tcp_hdr[..12])),
                Reason::DropTruncatedL4,
            ),
            Fixture::drop(
                "IPv4 TCP header cut by the IP total length (frame holds it all)",
                FROM_CLIENT.ipv4(&cut_by_length),
                Reason::DropTruncatedL4,
            ),
            Fixture::drop(
                "IPv4 UDP header of 6 bytes",
                FROM_CLIENT.ipv4(&raw4(CLIENT4, VIP4, IpNumber::UDP, &udp_hdr[..6])),
                Reason::DropTruncatedL4,
            ),
            Fixture::drop(
                "IPv6 TCP header of 12 bytes",
                FROM_CLIENT.ipv6(&ipv6_packet(CLIENT6, VIP6, IpNumber::TCP, &tcp6_hdr[..12])),
                Reason::DropTruncatedL4,
            ),
            Fixture::drop(
                "IPv6 UDP header of 4 bytes",
                FROM_CLIENT.ipv6(&ipv6_packet(CLIENT6, VIP6, IpNumber::UDP, &udp6_hdr[..4])),
                Reason::DropTruncatedL4,
            ),
        ]);
    });
}

#[test]
fn icmp_to_a_vip_is_dropped() {
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "ICMP echo request to the VIP",
                FROM_CLIENT.ipv4(&raw4(
                    CLIENT4,
                    VIP4,
                    IpNumber::ICMP,
                    &echo_request(CLIENT4.into(), VIP4.into()),
                )),
                Reason::DropIcmp,
            ),
            Fixture::drop(
                "ICMPv6 echo request to the VIP",
                FROM_CLIENT.ipv6(&ipv6_packet(
                    CLIENT6,
                    VIP6,
                    IpNumber::IPV6_ICMP,
                    &echo_request(CLIENT6.into(), VIP6.into()),
                )),
                Reason::DropIcmp,
            ),
        ]);
    });
}

// ---------------------------------------------------------------------------------
// ICMP errors about flows

/// A router on the client's path (the errors come in from the client side).
const PATH_ROUTER4: Ipv4Addr = Ipv4Addr::new(192, 168, 11, 1);
const PATH_ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x11, 0, 0, 0, 0, 0, 1);

/// A 1400-byte reply of web-vs (VIP:80) to `client`'s port `cport`, as a server sends it.
fn reply4_to(client: Ipv4Addr, cport: u16) -> Vec<u8> {
    tcp4(VIP4, 80, client, cport, false, &vec![0x42; 1360])
}

fn reply4(cport: u16) -> Vec<u8> {
    reply4_to(CLIENT4, cport)
}

/// "Fragmentation needed" (MTU 1300) from the path's router about `offending`, quoting
/// `quote_len` bytes of it.
fn frag_needed(offending: &[u8], quote_len: usize) -> Vec<u8> {
    icmp4_error_from(PATH_ROUTER4, 3, 4, [0, 0, 0x05, 0x14], offending, quote_len)
}

#[test]
fn icmp_errors_about_a_flow_reach_its_server_encapsulated_like_the_flow() {
    with_lab(|lab| {
        let error = frag_needed(&reply4(CLIENT_PORT), 576 - 20 - 8);
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        lab.check(&Fixture::tx(
            "ICMP frag-needed to the VIP quoting web-vs's reply: to the flow's server",
            FROM_CLIENT.ipv4(&error),
            ipip4(server.l2(), LB_V4, server.v4(), &error, &[]),
            Reason::ForwardedIcmp,
        ));
        // web-vs hashes on the client's address: another client, another server.
        let other = (0..50)
            .map(client4)
            .find(|&c| HTTP4.pick(c.into(), CLIENT_PORT).id != server.id)
            .unwrap();
        let error = icmp4_error_from(
            PATH_ROUTER4,
            11,
            0,
            [0; 4],
            &reply4_to(other, CLIENT_PORT),
            28,
        );
        let to = HTTP4.pick(other.into(), CLIENT_PORT);
        lab.check(&Fixture::tx(
            "ICMP time exceeded with the minimal quote (header and 8 bytes), another flow",
            FROM_CLIENT.ipv4(&error),
            ipip4(to.l2(), LB_V4, to.v4(), &error, &[]),
            Reason::ForwardedIcmp,
        ));
        // An error is no traffic of its flow: nothing recorded, nothing counted.
        assert_eq!(lab.dp.flow_count(), 0);
        assert_eq!(lab.dp.service_counters(HTTP4.id).unwrap().packets, 0);

        // In GRE when the service is.
        with_tunnel(lab, &HTTP4, ServiceFlags::ENCAP_GRE, 0);
        let error = frag_needed(&reply4(CLIENT_PORT), 100);
        lab.check(&Fixture::tx(
            "ICMP frag-needed about a GRE service's flow: in GRE",
            FROM_CLIENT.ipv4(&error),
            gre4(server.l2(), LB_V4, server.v4(), &error, &[]),
            Reason::ForwardedIcmp,
        ));

        // ICMPv6 packet too big about a DNS reply (UDP) from [VIP]:53.
        let sport = 33333;
        let reply = udp6(VIP6, 53, CLIENT6, sport, &[0x17; 1400]);
        let error = icmp6_error_from(PATH_ROUTER6, 2, 1300, &reply, 1232);
        let server = DNS6.pick(CLIENT6.into(), sport);
        lab.check(&Fixture::tx(
            "ICMPv6 packet too big quoting dns-vs's reply: to the flow's server, its label",
            FROM_CLIENT.ipv6(&error),
            ip6ip6(
                server.l2(),
                LB_V6,
                server.v6(),
                &error,
                flow_label(CLIENT6, sport),
            ),
            Reason::ForwardedIcmp,
        ));
    });
}

#[test]
fn icmp_errors_follow_the_flow_table() {
    with_lab(|lab| {
        let (a, b) = open_http4_flow(lab);
        switch_table(lab, &HTTP4, &[b.id; 7]);
        let error = frag_needed(&reply4(CLIENT_PORT), 200);
        lab.check(&Fixture::tx(
            "frag-needed about the established flow after the table moved to B: A",
            FROM_CLIENT.ipv4(&error),
            ipip4(a.l2(), LB_V4, a.v4(), &error, &[]),
            Reason::ForwardedIcmp,
        ));
        let misses = non_syn_misses(lab);
        let error = frag_needed(&reply4(CLIENT_PORT + 1), 200);
        lab.check(&Fixture::tx(
            "frag-needed about a flow the table does not hold: the Maglev pick, B",
            FROM_CLIENT.ipv4(&error),
            ipip4(b.l2(), LB_V4, b.v4(), &error, &[]),
            Reason::ForwardedIcmp,
        ));
        assert_eq!(lab.dp.flow_count(), 1, "errors record no flow");
        assert_eq!(
            non_syn_misses(lab),
            misses,
            "an error's lookup miss is no TCP packet's miss"
        );
    });
}

#[test]
fn icmp_errors_without_a_vip_flow_in_their_quote_are_dropped() {
    with_lab(|lab| {
        let reply = reply4(CLIENT_PORT);
        let not_from_vip = tcp4(LB_V4, 80, CLIENT4, CLIENT_PORT, false, &[0; 100]);
        let to_vip = |quoted: &[u8]| {
            // The error goes to the VIP whatever its quote says.
            let mut e = frag_needed(quoted, 28);
            e[16..20].copy_from_slice(&VIP4.octets());
            fix_ipv4_checksum(&mut e);
            e
        };
        let icmp_quote = raw4(VIP4, CLIENT4, IpNumber::ICMP, &[0; 8]);
        let mut with_options = reply.clone();
        with_options[0] = 0x46;
        let mut later_fragment = reply.clone();
        later_fragment[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        lab.check_all(&[
            Fixture::drop(
                "quote truncated inside the ports (header and 4 bytes)",
                FROM_CLIENT.ipv4(&frag_needed(&reply, 24)),
                Reason::DropIcmpBadQuote,
            ),
            Fixture::drop(
                "quote of a packet from another address than the VIP",
                FROM_CLIENT.ipv4(&to_vip(&not_from_vip)),
                Reason::DropIcmpBadQuote,
            ),
            Fixture::drop(
                "quote of an ICMP packet",
                FROM_CLIENT.ipv4(&to_vip(&icmp_quote)),
                Reason::DropIcmpBadQuote,
            ),
            Fixture::drop(
                "quote with IPv4 options",
                FROM_CLIENT.ipv4(&to_vip(&with_options)),
                Reason::DropIcmpBadQuote,
            ),
            Fixture::drop(
                "quote of a later fragment (no ports)",
                FROM_CLIENT.ipv4(&to_vip(&later_fragment)),
                Reason::DropIcmpBadQuote,
            ),
            Fixture::drop(
                "quote of a reply from a port without a service (VIP:82)",
                FROM_CLIENT.ipv4(&frag_needed(
                    &tcp4(VIP4, 82, CLIENT4, CLIENT_PORT, false, &[]),
                    28,
                )),
                Reason::DropNoService,
            ),
            Fixture::drop(
                "ICMP echo reply to the VIP (not an error)",
                FROM_CLIENT.ipv4(&icmp4_error_from(PATH_ROUTER4, 0, 0, [0; 4], &reply, 28)),
                Reason::DropIcmp,
            ),
            Fixture::drop(
                "ICMPv6 quote with an extension header",
                FROM_CLIENT.ipv6(&icmp6_error_from(
                    PATH_ROUTER6,
                    1,
                    0,
                    &tcp6_behind_ext(
                        VIP6,
                        80,
                        CLIENT6,
                        CLIENT_PORT,
                        IpNumber::IPV6_DESTINATION_OPTIONS,
                    ),
                    100,
                )),
                Reason::DropIcmpBadQuote,
            ),
            Fixture::drop(
                "ICMPv6 quote truncated (IPv6 header and 4 bytes)",
                FROM_CLIENT.ipv6(&icmp6_error_from(
                    PATH_ROUTER6,
                    2,
                    1300,
                    &udp6(VIP6, 53, CLIENT6, 5353, b"x"),
                    44,
                )),
                Reason::DropIcmpBadQuote,
            ),
        ]);
    });
}

#[test]
fn other_protocols_to_a_vip_are_dropped() {
    // GRE carrying IPv4 (4-byte base header), SCTP INIT-ish bytes: content is irrelevant.
    let gre = [
        0u8, 0, 0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let sctp = [
        0xc3u8, 0x50, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 20, 0, 0, 0, 1,
    ];
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "GRE to the VIP",
                FROM_CLIENT.ipv4(&raw4(CLIENT4, VIP4, IpNumber::GRE, &gre)),
                Reason::DropUnsupportedProto,
            ),
            Fixture::drop(
                "SCTP to the VIP",
                FROM_CLIENT.ipv4(&raw4(CLIENT4, VIP4, IpNumber::SCTP, &sctp)),
                Reason::DropUnsupportedProto,
            ),
            Fixture::drop(
                "IPv6 SCTP to the VIP",
                FROM_CLIENT.ipv6(&ipv6_packet(CLIENT6, VIP6, IpNumber::SCTP, &sctp)),
                Reason::DropUnsupportedProto,
            ),
        ]);
    });
}

#[test]
fn ports_without_a_service_are_dropped() {
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "TCP to VIP:22",
                FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 22)),
                Reason::DropNoService,
            ),
            Fixture::drop(
                "UDP to VIP:80 (only TCP has port 80)",
                FROM_CLIENT.ipv4(&udp4(CLIENT4, CLIENT_PORT, VIP4, 80, b"x")),
                Reason::DropNoService,
            ),
            Fixture::drop(
                "TCP to [VIP]:22",
                FROM_CLIENT.ipv6(&tcp6(CLIENT6, CLIENT_PORT, VIP6, 22, true, &[])),
                Reason::DropNoService,
            ),
        ]);
    });
}

#[test]
fn service_without_servers_drops() {
    with_lab(|lab| {
        assert_eq!(EMPTY4.value().table_size, 0);
        lab.check(&Fixture::drop(
            "TCP to VIP:81, whose pool has no usable server (table size 0)",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 81)),
            Reason::DropNoServer,
        ));
    });
}

#[test]
fn missing_source_address_drops_that_family_only() {
    with_lab(|lab| {
        let v4_only = Settings {
            flags: SettingsFlags::HAVE_V4,
            ..world_settings()
        };
        let v6_only = Settings {
            flags: SettingsFlags::HAVE_V6,
            ..world_settings()
        };
        let syn_v4 = syn4(CLIENT4, CLIENT_PORT, VIP4, 80);
        let syn_v6 = tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, true, &[]);

        lab.dp.set_settings(&v6_only).unwrap();
        lab.check(&Fixture::drop(
            "IPv4 to a VIP with no IPv4 source configured",
            FROM_CLIENT.ipv4(&syn_v4),
            Reason::DropNoSource,
        ));
        lab.check(&forwarded6(
            "IPv6 still forwarded",
            FROM_CLIENT,
            syn_v6.clone(),
            HTTP6.pick(CLIENT6.into(), CLIENT_PORT),
            CLIENT6,
            CLIENT_PORT,
        ));

        lab.dp.set_settings(&v4_only).unwrap();
        lab.check(&Fixture::drop(
            "IPv6 to a VIP with no IPv6 source configured",
            FROM_CLIENT.ipv6(&tcp6(CLIENT6, CLIENT_PORT + 1, VIP6, 80, true, &[])),
            Reason::DropNoSource,
        ));
        lab.check(&forwarded4(
            "IPv4 forwarded again",
            FROM_CLIENT,
            syn_v4,
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
    });
}

#[test]
fn malformed_ipv6_headers_are_dropped() {
    let good = tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, true, &[]);
    let mut too_long = good.clone();
    let payload_len = u16::from_be_bytes([good[4], good[5]]);
    too_long[4..6].copy_from_slice(&(payload_len + 1).to_be_bytes());
    let mut version4 = good.clone();
    version4[0] = 0x40 | (version4[0] & 0x0f);
    with_lab(|lab| {
        lab.check_all(&[
            Fixture::drop(
                "IPv6 header cut at 30 bytes",
                FROM_CLIENT.ipv6(&good[..30]),
                Reason::DropMalformedIpv6,
            ),
            Fixture::drop(
                "IPv6 payload length one byte beyond the frame",
                FROM_CLIENT.ipv6(&too_long),
                Reason::DropMalformedIpv6,
            ),
            Fixture::drop(
                "version 4 in an IPv6 EtherType frame",
                FROM_CLIENT.ipv6(&version4),
                Reason::DropMalformedIpv6,
            ),
        ]);
    });
}

// ---------------------------------------------------------------------------------
// Path MTU

/// An IPv4 packet of `len` bytes in all to VIP:80 (TCP data).
fn sized4(len: usize, df: bool) -> Vec<u8> {
    let payload = vec![0x5a; len - 40];
    let opts = V4Opts {
        dont_fragment: Some(df),
        ..Default::default()
    };
    tcp4_with(CLIENT4, CLIENT_PORT, VIP4, 80, false, &payload, opts)
}

/// An IPv6 packet of `len` bytes in all to [VIP]:80 (TCP data).
fn sized6(len: usize) -> Vec<u8> {
    tcp6(CLIENT6, CLIENT_PORT, VIP6, 80, false, &vec![0x5a; len - 60])
}

#[test]
fn ipv4_too_big_with_df_is_answered_with_frag_needed() {
    with_lab(|lab| {
        let inner = sized4(LB_MTU as usize, true);
        let expected = icmp4_frag_needed(FROM_CLIENT, &inner, LB_MTU as u16 - 20);
        lab.check(&Fixture::tx(
            "1500-byte IPv4 with DF on a 1500-MTU path: ICMP 3/4, next-hop MTU 1480",
            FROM_CLIENT.ipv4(&inner),
            expected,
            Reason::IcmpTooBig,
        ));
        // The error is not traffic of the service.
        assert_eq!(lab.dp.service_counters(HTTP4.id).unwrap().packets, 0);
    });
}

#[test]
fn ipv4_too_big_on_a_vlan_keeps_the_tag() {
    with_lab(|lab| {
        let inner = sized4(LB_MTU as usize, true);
        let tagged = FROM_CLIENT.tagged(42);
        lab.check(&Fixture::tx(
            "802.1Q 1500-byte IPv4 with DF: ICMP 3/4 on the same VLAN",
            tagged.ipv4(&inner),
            icmp4_frag_needed(tagged, &inner, LB_MTU as u16 - 20),
            Reason::IcmpTooBig,
        ));
    });
}

#[test]
fn ipv4_too_big_without_df_is_dropped() {
    with_lab(|lab| {
        lab.check(&Fixture::drop(
            "1500-byte IPv4 without DF on a 1500-MTU path",
            FROM_CLIENT.ipv4(&sized4(LB_MTU as usize, false)),
            Reason::DropTooBig,
        ));
    });
}

#[test]
fn ipv6_too_big_is_answered_with_packet_too_big() {
    with_lab(|lab| {
        let inner = sized6(LB_MTU as usize);
        lab.check(&Fixture::tx(
            "1500-byte IPv6 on a 1500-MTU path: ICMPv6 packet too big, MTU 1460",
            FROM_CLIENT.ipv6(&inner),
            icmp6_packet_too_big(FROM_CLIENT, &inner, LB_MTU - 40),
            Reason::IcmpTooBig,
        ));
    });
}

#[test]
fn events_are_readable_and_quiet_on_a_healthy_path() {
    with_lab(|lab| {
        lab.check(&http4_syn(
            "a new flow, recorded",
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
        assert!(flow_of(lab, &http4_flow(CLIENT4, CLIENT_PORT)).is_some());
        let events = lab.dp.event_counters().unwrap();
        assert_eq!(
            events.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            Event::ALL.to_vec()
        );
        assert!(
            events.iter().all(|(_, n)| *n == 0),
            "a recorded flow is no failure: {events:?}"
        );
    });
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, which stamps the buckets.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall writing into `ts`.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every CPU's ICMP budget set to `credit_ns`, stamped ahead of the clock so that no
/// credit accrues while the test runs (the program keeps a stamp from the future).
fn frozen_budget(lab: &mut Lab, credit_ns: u64) {
    lab.dp
        .set_icmp_buckets(&TokenBucket {
            stamp_ns: u64::MAX,
            credit_ns,
        })
        .unwrap();
}

fn too_big4_fixture(what: &str) -> Fixture {
    let inner = sized4(LB_MTU as usize, true);
    Fixture::tx(
        what,
        FROM_CLIENT.ipv4(&inner),
        icmp4_frag_needed(FROM_CLIENT, &inner, LB_MTU as u16 - 20),
        Reason::IcmpTooBig,
    )
}

fn rate_limited4(what: &str) -> Fixture {
    Fixture::drop(
        what,
        FROM_CLIENT.ipv4(&sized4(LB_MTU as usize, true)),
        Reason::DropTooBigRateLimited,
    )
}

#[test]
fn too_big_errors_exhaust_the_per_cpu_budget_then_refill() {
    with_lab(|lab| {
        // A new program starts with zeroed buckets, which count as full.
        assert!(lab
            .dp
            .icmp_buckets()
            .unwrap()
            .iter()
            .all(|b| *b == TokenBucket::default()));
        lab.check(&too_big4_fixture("first error of a fresh program"));
        assert!(
            lab.dp
                .icmp_buckets()
                .unwrap()
                .iter()
                .any(|b| b.stamp_ns > 0
                    && b.credit_ns == TokenBucket::DEPTH_NS - TokenBucket::COST_NS),
            "the CPU that ran it holds a full bucket less one error: {:?}",
            lab.dp.icmp_buckets().unwrap()
        );

        // A full bucket that cannot refill: exactly the documented burst, then drops.
        frozen_budget(lab, TokenBucket::DEPTH_NS);
        for i in 0..limits::ICMP_TOO_BIG_BURST {
            lab.check(&too_big4_fixture(&format!("error {i} of the burst")));
        }
        lab.check(&rate_limited4("burst spent"));
        lab.check(&rate_limited4("still spent"));
        // Other packets are not affected.
        lab.check(&http4_syn(
            "a SYN that fits",
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));

        // Time refills it: three errors' worth elapsed since the stamp.
        lab.dp
            .set_icmp_buckets(&TokenBucket {
                stamp_ns: monotonic_ns() - 3 * TokenBucket::COST_NS,
                credit_ns: 0,
            })
            .unwrap();
        lab.check(&too_big4_fixture("after the refill"));
        frozen_budget(lab, 0);
        lab.check(&rate_limited4("empty again"));
        let inner = sized6(LB_MTU as usize);
        lab.check(&Fixture::drop(
            "IPv6 shares the budget",
            FROM_CLIENT.ipv6(&inner),
            Reason::DropTooBigRateLimited,
        ));
    });
}

#[test]
fn too_big_errors_never_go_to_multicast_broadcast_or_unspecified_sources() {
    with_lab(|lab| {
        // One error's worth: none of the refused sources may spend it.
        frozen_budget(lab, TokenBucket::COST_NS);
        let v4 = |src: Ipv4Addr| {
            let payload = vec![0x5a; LB_MTU as usize - 40];
            let opts = V4Opts {
                dont_fragment: Some(true),
                ..Default::default()
            };
            FROM_CLIENT.ipv4(&tcp4_with(
                src,
                CLIENT_PORT,
                VIP4,
                80,
                false,
                &payload,
                opts,
            ))
        };
        let v6 = |src: Ipv6Addr| {
            FROM_CLIENT.ipv6(&tcp6(src, CLIENT_PORT, VIP6, 80, false, &vec![0x5a; 1440]))
        };
        lab.check_all(&[
            Fixture::drop(
                "IPv4 from 0.0.0.0",
                v4(Ipv4Addr::UNSPECIFIED),
                Reason::DropTooBigUnspecifiedSource,
            ),
            Fixture::drop(
                "IPv4 from 255.255.255.255",
                v4(Ipv4Addr::BROADCAST),
                Reason::DropTooBigBroadcastSource,
            ),
            Fixture::drop(
                "IPv4 from 224.0.0.251",
                v4(Ipv4Addr::new(224, 0, 0, 251)),
                Reason::DropTooBigMulticastSource,
            ),
            Fixture::drop(
                "IPv4 from 239.255.255.250",
                v4(Ipv4Addr::new(239, 255, 255, 250)),
                Reason::DropTooBigMulticastSource,
            ),
            Fixture::drop(
                "IPv6 from ::",
                v6(Ipv6Addr::UNSPECIFIED),
                Reason::DropTooBigUnspecifiedSource,
            ),
            Fixture::drop(
                "IPv6 from ff02::1",
                v6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
                Reason::DropTooBigMulticastSource,
            ),
        ]);
        lab.check(&too_big4_fixture(
            "a unicast client still gets the one error",
        ));
        lab.check(&rate_limited4("and it was the only one"));
    });
}

#[test]
fn packets_that_fit_exactly_after_encapsulation_are_forwarded() {
    with_lab(|lab| {
        lab.check(&forwarded4(
            "1480-byte IPv4: 1500 after IPIP",
            FROM_CLIENT,
            sized4(LB_MTU as usize - 20, true),
            HTTP4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
        lab.check(&forwarded6(
            "1460-byte IPv6: 1500 after IP6IP6",
            FROM_CLIENT,
            sized6(LB_MTU as usize - 40),
            HTTP6.pick(CLIENT6.into(), CLIENT_PORT),
            CLIENT6,
            CLIENT_PORT,
        ));
    });
}

// ---------------------------------------------------------------------------------
// Flows, draining and server removal

/// Opens the client's flow to VIP:80 at the server its slot names (A); returns A and the
/// table's other server (B).
fn open_http4_flow(lab: &mut Lab) -> (Server, Server) {
    let a = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
    lab.check(&http4_syn("SYN: new flow to A", a));
    (a, other_server(&HTTP4, a))
}

/// Checks that `FLOWS` records the client's flow to VIP:80 for `server` (slot and
/// generation).
fn assert_http4_flow(lab: &Lab, server: Server, what: &str) {
    assert_eq!(
        flow_of(lab, &http4_flow(CLIENT4, CLIENT_PORT)),
        Some(FlowValue {
            server_id: server.id,
            generation: server.generation,
            seen: 0,
        }),
        "{what}"
    );
}

/// A new flow of the same client from another port: the table's server.
fn other_port_syn(what: &str, server: Server) -> Fixture {
    forwarded4(
        what,
        FROM_CLIENT,
        syn4(CLIENT4, CLIENT_PORT + 1, VIP4, 80),
        server,
    )
}

/// The client's flow of `family` to VIP:80: its key, a SYN and a data segment, the
/// service, and the fixture of a packet expected at a server.
struct HttpFlow {
    key: FlowKey,
    syn: Vec<u8>,
    ack: Vec<u8>,
    svc: &'static Service,
    v6: bool,
}

impl HttpFlow {
    fn v4(client: Ipv4Addr) -> HttpFlow {
        HttpFlow {
            key: http4_flow(client, CLIENT_PORT),
            syn: syn4(client, CLIENT_PORT, VIP4, 80),
            ack: ack4(client, CLIENT_PORT, VIP4, 80),
            svc: &HTTP4,
            v6: false,
        }
    }
    fn v6(client: Ipv6Addr) -> HttpFlow {
        HttpFlow {
            key: FlowKey::new(client.into(), CLIENT_PORT, VIP6.into(), 80, PROTO_TCP),
            syn: tcp6(client, CLIENT_PORT, VIP6, 80, true, &[]),
            ack: tcp6(client, CLIENT_PORT, VIP6, 80, false, HTTP_GET),
            svc: &HTTP6,
            v6: true,
        }
    }
    fn to(&self, what: &str, inner: &[u8], server: Server) -> Fixture {
        if self.v6 {
            let client = Ipv6Addr::from(self.key.src);
            forwarded6(
                what,
                FROM_CLIENT,
                inner.to_vec(),
                server,
                client,
                CLIENT_PORT,
            )
        } else {
            forwarded4(what, FROM_CLIENT, inner.to_vec(), server)
        }
    }
    fn first_server(&self) -> Server {
        let client = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.key.src))
        } else {
            let b = self.key.src;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        self.svc.pick(client, CLIENT_PORT)
    }
}

fn non_syn_misses(lab: &Lab) -> u64 {
    lab.dp
        .event_counters()
        .unwrap()
        .into_iter()
        .find(|(e, _)| *e == Event::FlowMissNonSyn)
        .map(|(_, n)| n)
        .expect("every event is counted")
}

/// A SYN is hashed without reading the flow table: with the table moved from A to B, a
/// data segment still goes to A (its recorded server), while a SYN of the same
/// five-tuple, a new connection, goes to B and replaces the recorded server, which the
/// next data segment then follows.
fn syn_skips_the_lookup_but_is_recorded(lab: &mut Lab, flow: &HttpFlow) {
    let a = flow.first_server();
    let b = other_server(flow.svc, a);
    lab.check(&flow.to("SYN: new flow to A", &flow.syn, a));
    assert_eq!(
        flow_of(lab, &flow.key).map(|v| v.server_id),
        Some(a.id),
        "the SYN recorded A"
    );
    switch_table(lab, flow.svc, &[b.id; 7]);
    lab.check(&flow.to("data segment: still A, from the flow table", &flow.ack, a));
    lab.check(&flow.to(
        "SYN of the same five-tuple: hashed (B), the flow table not read",
        &flow.syn,
        b,
    ));
    assert_eq!(
        flow_of(lab, &flow.key),
        Some(FlowValue {
            server_id: b.id,
            generation: b.generation,
            seen: 0,
        }),
        "the SYN recorded its hash pick over the old entry"
    );
    lab.check(&flow.to("next data segment: B, recorded by the SYN", &flow.ack, b));
    assert_eq!(lab.dp.flow_count(), 1);
    assert_eq!(non_syn_misses(lab), 0, "no data segment missed");
}

#[test]
fn ipv4_syn_is_hashed_without_a_flow_lookup_and_recorded() {
    with_lab(|lab| syn_skips_the_lookup_but_is_recorded(lab, &HttpFlow::v4(CLIENT4)));
}

#[test]
fn ipv6_syn_is_hashed_without_a_flow_lookup_and_recorded() {
    with_lab(|lab| syn_skips_the_lookup_but_is_recorded(lab, &HttpFlow::v6(CLIENT6)));
}

/// A data segment whose flow is not in the table (evicted, or opened through another
/// load balancer) is hashed and forwarded, recorded, and counted as a non-SYN miss;
/// the next one is a hit, and neither a SYN nor UDP ever counts.
#[test]
fn non_syn_flow_misses_are_counted_for_ipv4_and_ipv6() {
    with_lab(|lab| {
        for (i, flow) in [HttpFlow::v4(CLIENT4), HttpFlow::v6(CLIENT6)]
            .iter()
            .enumerate()
        {
            let before = non_syn_misses(lab);
            let a = flow.first_server();
            lab.check(&flow.to("data segment of an unknown flow: hashed", &flow.ack, a));
            assert_eq!(non_syn_misses(lab), before + 1, "flow {i}: one miss");
            assert_eq!(
                flow_of(lab, &flow.key).map(|v| v.server_id),
                Some(a.id),
                "flow {i}: the miss recorded the flow"
            );
            lab.check(&flow.to("its next data segment: a hit", &flow.ack, a));
            assert_eq!(
                non_syn_misses(lab),
                before + 1,
                "flow {i}: a hit is no miss"
            );
        }
        let syn_client = client4(9);
        let syn = HttpFlow::v4(syn_client);
        lab.check(&syn.to("a SYN of a new flow", &syn.syn, syn.first_server()));
        lab.check(&forwarded4(
            "a UDP query of a new flow",
            FROM_CLIENT,
            udp4(CLIENT4, CLIENT_PORT, VIP4, 53, b"query"),
            DNS4.pick(CLIENT4.into(), CLIENT_PORT),
        ));
        assert_eq!(non_syn_misses(lab), 2, "only the two data segments missed");
    });
}

#[test]
fn established_flows_keep_their_server_when_the_table_changes() {
    with_lab(|lab| {
        let (a, b) = open_http4_flow(lab);
        assert_http4_flow(lab, a, "the SYN recorded the flow");

        switch_table(lab, &HTTP4, &[b.id; 7]);
        lab.check(&http4_ack(
            "next packet of the flow after the table moved to B: still A",
            a,
        ));
        lab.check(&other_port_syn(
            "new flow from the same client (other port): B",
            b,
        ));
        lab.check(&forwarded4(
            "new flow from another client: B",
            FROM_CLIENT,
            syn4(client4(7), CLIENT_PORT, VIP4, 80),
            b,
        ));
        assert_eq!(lab.dp.flow_count(), 3);
    });
}

#[test]
fn draining_server_keeps_established_flows_only() {
    with_lab(|lab| {
        let (a, b) = open_http4_flow(lab);

        // The engine drains A: a table without A first, then the slot's state.
        switch_table(lab, &HTTP4, &[b.id; 7]);
        lab.dp
            .put_server(
                a.id,
                &ServerValue {
                    state: ServerState::DRAINING,
                    ..a.value()
                },
            )
            .unwrap();

        lab.check(&http4_ack("established flow to the draining A: still A", a));
        lab.check(&other_port_syn("new flow from the same client: B", b));
        assert_http4_flow(lab, a, "the flow stays with the draining A");
    });
}

#[test]
fn flows_of_a_reused_server_slot_move_to_the_tables_server() {
    with_lab(|lab| {
        let (a, b) = open_http4_flow(lab);

        // A is removed and its slot reused for web02 under a new generation.
        switch_table(lab, &HTTP4, &[b.id; 7]);
        let reused = Server {
            id: a.id,
            generation: a.generation + 1,
            ..WEB02_4
        };
        lab.dp.put_server(a.id, &reused.value()).unwrap();

        lab.check(&http4_ack(
            "next packet of the flow: the table's server B (not the slot's new tenant)",
            b,
        ));
        assert_http4_flow(lab, b, "the flow entry follows the new server");
        lab.check(&http4_ack("and stays there", b));
    });
}

#[test]
fn flows_of_a_freed_server_slot_move_to_the_tables_server() {
    with_lab(|lab| {
        let (a, b) = open_http4_flow(lab);

        switch_table(lab, &HTTP4, &[b.id; 7]);
        lab.dp
            .put_server(
                a.id,
                &ServerValue {
                    state: ServerState::FREE,
                    ..a.value()
                },
            )
            .unwrap();

        lab.check(&http4_ack(
            "next packet of the flow after A's slot was freed: B",
            b,
        ));
        assert_http4_flow(lab, b, "the flow entry follows the table's server");
    });
}

// ---------------------------------------------------------------------------------
// Hashing

/// Two source ports of `client` that `HASH_SRC_PORT` hashing sends to different
/// servers of `table` (searched deterministically).
fn ports_split_by_port_hashing(table: &[u32], client: IpAddr) -> (u16, u16) {
    let first = 40000;
    let s0 = pick_in(table, ServiceFlags::HASH_SRC_PORT, client, first);
    let second = (first + 1..first + 1000)
        .find(|&p| pick_in(table, ServiceFlags::HASH_SRC_PORT, client, p) != s0)
        .expect("some port hashes to the other server");
    (first, second)
}

#[test]
fn source_ip_hashing_ignores_the_source_port() {
    with_lab(|lab| {
        assert!(!HTTP4.flags.contains(ServiceFlags::HASH_SRC_PORT));
        // Ports that port hashing would split: a program hashing them anyway fails.
        let (p1, p2) = ports_split_by_port_hashing(HTTP4.table, CLIENT4.into());
        let server = HTTP4.pick(CLIENT4.into(), p1);
        assert_eq!(server.id, HTTP4.pick(CLIENT4.into(), p2).id);
        for port in [p1, p2] {
            lab.check(&forwarded4(
                &format!("source-IP hashing, source port {port}"),
                FROM_CLIENT,
                syn4(CLIENT4, port, VIP4, 80),
                server,
            ));
        }
    });
}

#[test]
fn source_port_hashing_follows_the_computed_slots() {
    with_lab(|lab| {
        assert!(HTTPS4.flags.contains(ServiceFlags::HASH_SRC_PORT));
        let (p1, p2) = ports_split_by_port_hashing(HTTPS4.table, CLIENT4.into());
        let (s1, s2) = (
            HTTPS4.pick(CLIENT4.into(), p1),
            HTTPS4.pick(CLIENT4.into(), p2),
        );
        assert_ne!(s1.id, s2.id);
        lab.check(&forwarded4(
            "port hashing, first port",
            FROM_CLIENT,
            syn4(CLIENT4, p1, VIP4, 443),
            s1,
        ));
        lab.check(&forwarded4(
            "port hashing, second port",
            FROM_CLIENT,
            syn4(CLIENT4, p2, VIP4, 443),
            s2,
        ));
    });
}

// ---------------------------------------------------------------------------------
// Counters

#[test]
fn service_and_server_counters_match_the_forwarded_traffic() {
    with_lab(|lab| {
        let a = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        let other_client = (1..50)
            .map(client4)
            .find(|c| HTTP4.pick((*c).into(), CLIENT_PORT).id != a.id)
            .unwrap();
        let b = HTTP4.pick(other_client.into(), CLIENT_PORT);

        let flow_a = [
            syn4(CLIENT4, CLIENT_PORT, VIP4, 80),
            ack4(CLIENT4, CLIENT_PORT, VIP4, 80),
            tcp4(CLIENT4, CLIENT_PORT, VIP4, 80, false, &[0x42; 700]),
        ];
        let flow_b = syn4(other_client, CLIENT_PORT, VIP4, 80);
        let mut bytes_a = 0;
        for (i, inner) in flow_a.iter().enumerate() {
            let fx = forwarded4(&format!("flow A packet {i}"), FROM_CLIENT, inner.clone(), a);
            bytes_a += fx.input.len() as u64;
            lab.check(&fx);
        }
        let fx = forwarded4("flow B SYN", FROM_CLIENT, flow_b, b);
        let bytes_b = fx.input.len() as u64;
        lab.check(&fx);
        // Neither a drop nor an ICMP error counts as service traffic.
        lab.check(&Fixture::drop(
            "no service",
            FROM_CLIENT.ipv4(&syn4(CLIENT4, CLIENT_PORT, VIP4, 22)),
            Reason::DropNoService,
        ));
        let big = sized4(LB_MTU as usize, true);
        lab.check(&Fixture::tx(
            "too big",
            FROM_CLIENT.ipv4(&big),
            icmp4_frag_needed(FROM_CLIENT, &big, LB_MTU as u16 - 20),
            Reason::IcmpTooBig,
        ));

        // Bytes are counted as received: the whole frame, L2 header included.
        let svc = lab.dp.service_counters(HTTP4.id).unwrap();
        assert_eq!(
            (svc.packets, svc.bytes, svc.new_flows),
            (4, bytes_a + bytes_b, 2),
            "service counters"
        );
        let ca = lab.dp.server_counters(a.id).unwrap();
        assert_eq!(
            (ca.packets, ca.bytes, ca.new_flows),
            (3, bytes_a, 1),
            "server A counters"
        );
        let cb = lab.dp.server_counters(b.id).unwrap();
        assert_eq!(
            (cb.packets, cb.bytes, cb.new_flows),
            (1, bytes_b, 1),
            "server B counters"
        );
        for svc in SERVICES.iter().filter(|s| s.id != HTTP4.id) {
            assert_eq!(
                lab.dp.service_counters(svc.id).unwrap().packets,
                0,
                "service {} untouched",
                svc.id
            );
        }
        let forwarded: u64 = lab
            .dp
            .reason_counters()
            .unwrap()
            .iter()
            .filter(|(r, _)| *r == Reason::Forwarded)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(forwarded, 4);
    });
}

/// A flow whose first packet was dropped (here: the server's neighbour entry was not
/// resolved yet) is still new when its retransmitted SYN is forwarded: the program
/// records a flow only once its packet is forwarded (after drop_no_source_address,
/// drop_no_route, drop_no_neighbour, drop_adjust_failed or icmp_too_big_sent, nothing).
#[test]
fn flow_whose_first_packet_was_dropped_is_counted_as_new_once_forwarded() {
    with_lab(|lab| {
        let syn = syn4(CLIENT4, CLIENT_PORT, VIP4, 8083);
        lab.check(&Fixture::drop(
            "SYN to VIP:8083, whose server has no neighbour entry yet",
            FROM_CLIENT.ipv4(&syn),
            Reason::DropNoNeighbour,
        ));
        assert_eq!(
            lab.dp.flow_count(),
            0,
            "a dropped packet left a flow entry: {:?}",
            lab.dp.flows()
        );

        let resolved = Server {
            next_hop_mac: [0x02, 0, 0, 0, 0, 0x32],
            ..UNRESOLVED_4
        };
        net::ip_batch(&[format!(
            "neigh add {} lladdr 02:00:00:00:00:32 dev {} nud permanent",
            resolved.v4(),
            net::LB_IF
        )]);
        lab.check(&forwarded4(
            "the retransmitted SYN, now resolvable",
            FROM_CLIENT,
            syn,
            resolved,
        ));
        let svc = lab.dp.service_counters(UNRESOLVED4.id).unwrap();
        assert_eq!((svc.packets, svc.new_flows), (1, 1), "service counters");
        let srv = lab.dp.server_counters(resolved.id).unwrap();
        assert_eq!((srv.packets, srv.new_flows), (1, 1), "server counters");
    });
}

// ---------------------------------------------------------------------------------
// The next-hop cache

/// Keeps the calling thread on the CPU it runs on: `NEXT_HOPS` is per CPU, and
/// BPF_PROG_TEST_RUN runs the program on the caller's CPU.
fn stay_on_this_cpu() {
    // SAFETY: plain syscalls on the calling thread; cpu_set_t is plain old data.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Replaces the neighbour entry of `server` (on `fx0`) with `mac`.
fn set_neighbour_mac(server: Server, mac: [u8; 6]) {
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    net::ip_batch(&[format!(
        "neigh replace {} lladdr {mac} dev {} nud permanent",
        server.addr,
        net::LB_IF
    )]);
}

/// How soon after a next hop was resolved a packet must run to be sure of meeting the
/// cached entry: `NEXT_HOP_MAX_AGE_JIFFIES` (250) is at least 250 ms at any HZ (<= 1000).
const WITHIN_CACHE_LIFETIME: Duration = Duration::from_millis(200);

/// Runs `prepare` (untimed), then `attempt`, until an attempt takes less than
/// [`WITHIN_CACHE_LIFETIME`], and returns what that attempt saw. Each `prepare` must
/// make the attempt's first lookup miss the cache (a new generation of the slot), so
/// that the attempt's packets meet an entry of its own. On a loaded machine an attempt
/// can take too long; ten slow ones fail the test rather than skip the check.
fn within_cache_lifetime<T>(
    lab: &mut Lab,
    what: &str,
    mut prepare: impl FnMut(&mut Lab),
    mut attempt: impl FnMut(&mut Lab) -> T,
) -> T {
    let mut slow = Vec::new();
    for _ in 0..10 {
        prepare(lab);
        let start = Instant::now();
        let seen = attempt(lab);
        let took = start.elapsed();
        if took < WITHIN_CACHE_LIFETIME {
            return seen;
        }
        slow.push(took);
    }
    panic!(
        "{what}: no attempt ran within {WITHIN_CACHE_LIFETIME:?} of its lookup (took {slow:?}), \
         so the cache's lifetime could not be checked"
    );
}

/// The rules of the next-hop cache (`NEXT_HOPS`): a successful FIB lookup is reused for
/// the same server slot (generation and address) and ingress interface while it is
/// younger than `NEXT_HOP_MAX_AGE_JIFFIES` (1 s at HZ=250, 2.5 s at HZ=100), so a
/// neighbour's new MAC is not seen at once; the route's MTU is cached with it, so a
/// too-big packet still gets its ICMP error from a cached route; a new generation of
/// the slot (reuse) or a new address resolves again at once; an entry that ages out is
/// resolved again.
#[test]
fn next_hop_cache_follows_generations_and_ages_out() {
    const SECOND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5b];
    const THIRD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5c];
    with_lab(|lab| {
        stay_on_this_cpu();
        let server = HTTP4.pick(CLIENT4.into(), CLIENT_PORT);
        let other = other_server(&HTTP4, server);
        let ack = FROM_CLIENT.ipv4(&ack4(CLIENT4, CLIENT_PORT, VIP4, 80));
        let fits = sized4(LB_MTU as usize - 20, true);
        let too_big = sized4(LB_MTU as usize, true);
        // Each attempt takes the slot to a generation of its own (see within_cache_lifetime).
        let generation = Cell::new(server.generation);
        let fresh_slot = |lab: &mut Lab, mac: [u8; 6]| -> Server {
            generation.set(generation.get() + 1);
            let s = Server {
                generation: generation.get(),
                next_hop_mac: mac,
                ..server
            };
            lab.dp.put_server(s.id, &s.value()).unwrap();
            s
        };
        // Starts an attempt: the neighbour has the server's own MAC again and the slot a
        // new generation, so the attempt's SYN resolves and caches afresh.
        let reset = |lab: &mut Lab| -> Server {
            set_neighbour_mac(server, server.next_hop_mac);
            fresh_slot(lab, server.next_hop_mac)
        };

        let current = Cell::new(server);
        let (cached, seen_ack, seen_fits) = within_cache_lifetime(
            lab,
            "MAC change within the lifetime",
            |lab| current.set(reset(lab)),
            |lab| {
                lab.check(&http4_syn(
                    "SYN: the FIB resolves the server's next hop, which is cached",
                    current.get(),
                ));
                set_neighbour_mac(server, SECOND_MAC);
                let seen_ack = lab.run(&ack);
                let seen_fits = lab.run(&FROM_CLIENT.ipv4(&fits));
                // Right whether or not the route came from the cache.
                lab.check(&Fixture::tx(
                    "1500-byte IPv4 with DF, route from the cache: ICMP 3/4, MTU 1480",
                    FROM_CLIENT.ipv4(&too_big),
                    icmp4_frag_needed(FROM_CLIENT, &too_big, LB_MTU as u16 - 20),
                    Reason::IcmpTooBig,
                ));
                (current.get(), seen_ack, seen_fits)
            },
        );
        assert_eq!(
            seen_ack.packet,
            http4_ack("", cached).output,
            "within the cache's lifetime the old MAC is used"
        );
        assert_eq!(
            seen_fits.packet,
            forwarded4("", FROM_CLIENT, fits.clone(), cached).output,
            "1480-byte IPv4, route from the cache: fits the 1500-byte MTU once encapsulated"
        );

        // The slot is reused (same address, new generation): resolved again at once.
        let (reused, seen) = within_cache_lifetime(
            lab,
            "new generation",
            |lab| current.set(reset(lab)),
            |lab| {
                lab.check(&http4_syn("SYN: resolved and cached", current.get()));
                set_neighbour_mac(server, SECOND_MAC);
                let reused = fresh_slot(lab, SECOND_MAC);
                (reused, lab.run(&ack))
            },
        );
        assert_eq!(
            seen.packet,
            http4_ack("", reused).output,
            "after a generation change: the new MAC"
        );

        // The slot's address changes under the same generation: resolved again at once.
        let (moved, seen) = within_cache_lifetime(
            lab,
            "new address",
            |lab| current.set(reset(lab)),
            |lab| {
                lab.check(&http4_syn("SYN: resolved and cached", current.get()));
                let moved = Server {
                    id: server.id,
                    generation: current.get().generation,
                    ..other
                };
                lab.dp.put_server(moved.id, &moved.value()).unwrap();
                (moved, lab.run(&ack))
            },
        );
        assert_eq!(
            seen.packet,
            http4_ack("", moved).output,
            "after an address change: the new server's next hop"
        );

        // Without a generation change, the entry ages out: 250 jiffies, 2.5 s at HZ=100.
        let cached = reset(lab);
        lab.check(&http4_syn("SYN: resolved and cached", cached));
        set_neighbour_mac(server, THIRD_MAC);
        let changed = Instant::now();
        let third = Server {
            next_hop_mac: THIRD_MAC,
            ..cached
        };
        let (old, new) = (http4_ack("", cached), http4_ack("", third));
        loop {
            let got = lab.run(&ack);
            assert_eq!(got.action, XDP_TX);
            if got.packet == new.output {
                break;
            }
            assert_eq!(got.packet, old.output, "neither the old nor the new MAC");
            assert!(
                changed.elapsed() < Duration::from_secs(3),
                "the cached next hop did not age out within 3 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "the new MAC was used {:?} after the change",
            changed.elapsed()
        );
    });
}

// ---------------------------------------------------------------------------------
// The harness itself

/// The lab's links and sysctls live and die with its namespace: the root namespace
/// (where this test's own thread is) never sees them.
#[test]
fn lab_leaves_the_root_namespace_alone() {
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    let sysctls = [
        "/proc/sys/net/ipv4/conf/all/forwarding",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ];
    let before: Vec<String> = sysctls.iter().map(|p| read(p)).collect();
    let root_ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(
        net::ifindex(net::LB_IF),
        0,
        "{} exists in the root namespace",
        net::LB_IF
    );
    with_lab(|lab| {
        assert_ne!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            root_ns,
            "lab thread in the root namespace"
        );
        assert_eq!(net::ifindex(net::LB_IF), lab.ifindex);
        for p in sysctls {
            assert_eq!(read(p).trim(), "1", "{p} inside the lab");
        }
    });
    assert_eq!(
        net::ifindex(net::LB_IF),
        0,
        "{} leaked into the root namespace",
        net::LB_IF
    );
    let after: Vec<String> = sysctls.iter().map(|p| read(p)).collect();
    assert_eq!(before, after, "root namespace sysctls changed");
}

/// Now on the clock of `FlowValue::seen` (`CLOCK_MONOTONIC_COARSE`, 2^30 ns units).
fn flow_clock_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ricochet_common::flow_clock(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// With the flag clear (the steady state once the engine's scan found no flow off its
/// Maglev pick), an established packet takes the pick, even over an entry that says
/// otherwise, and the entry is not read except by a sample; with the flag set, the entry
/// wins. Every entry the program writes is stamped with the coarse clock.
#[test]
fn with_the_flag_clear_established_packets_take_the_maglev_pick() {
    with_lab(|lab| {
        let flow = HttpFlow::v4(CLIENT4);
        let a = flow.first_server();
        let b = other_server(flow.svc, a);
        let before = flow_clock_now();
        lab.check(&flow.to("SYN: new flow to A", &flow.syn, a));
        let after = flow_clock_now();
        let seen = lab
            .dp
            .flows()
            .into_iter()
            .find(|(k, _)| *k == flow.key)
            .map(|(_, v)| v.seen)
            .expect("the SYN recorded its flow");
        assert!(
            (before..=after).contains(&seen),
            "stamped {seen}, between {before} and {after}"
        );
        // An entry naming B (as if recorded before a table change).
        lab.dp.remove_flow(&flow.key).unwrap();
        lab.dp
            .insert_flow(
                &flow.key,
                &FlowValue {
                    server_id: b.id,
                    generation: b.generation,
                    seen,
                },
            )
            .unwrap();
        lab.dp
            .put_service(&flow.svc.key(), &flow.svc.value_not_consulted())
            .unwrap();
        // Every packet goes to A, the sampled ones (which read the entry) included.
        for i in 0..64 {
            lab.check(&flow.to(&format!("data segment {i}: the Maglev pick"), &flow.ack, a));
        }
        lab.dp
            .put_service(&flow.svc.key(), &flow.svc.value())
            .unwrap();
        lab.check(&flow.to("flag set: the entry's server", &flow.ack, b));
        assert_eq!(non_syn_misses(lab), 0);
    });
}

/// With the flag clear, data segments of unknown flows (a spoofed ACK flood's) are
/// forwarded to their pick and only the sampled 1 in 16 look up, miss, are counted and
/// recorded; with the flag set, every one is.
#[test]
fn with_the_flag_clear_one_in_16_unknown_flows_is_looked_up_and_recorded() {
    const ACKS: u16 = 3200;
    with_lab(|lab| {
        let svc = &HTTP4;
        lab.dp
            .put_service(&svc.key(), &svc.value_not_consulted())
            .unwrap();
        let (misses, flows) = (non_syn_misses(lab), lab.dp.flow_count());
        for port in 0..ACKS {
            let sport = 10_000 + port;
            let out = lab.run(&FROM_CLIENT.ipv4(&ack4(CLIENT4, sport, VIP4, 80)));
            assert_eq!(
                out.reasons,
                [(Reason::Forwarded, 1)],
                "ACK from port {sport}"
            );
        }
        let missed = non_syn_misses(lab) - misses;
        let recorded = (lab.dp.flow_count() - flows) as u64;
        // Binomial(3200, 1/16): mean 200, standard deviation 14; these bounds are 7 of them.
        assert!(
            (100..=300).contains(&missed),
            "{missed} of {ACKS} unknown ACKs looked up and missed: not about 1 in 16"
        );
        assert_eq!(recorded, missed, "each miss is recorded");
        lab.dp.put_service(&svc.key(), &svc.value()).unwrap();
        let (misses, flows) = (non_syn_misses(lab), lab.dp.flow_count());
        for port in 0..100u16 {
            lab.run(&FROM_CLIENT.ipv4(&ack4(CLIENT4, 20_000 + port, VIP4, 80)));
        }
        assert_eq!(
            non_syn_misses(lab) - misses,
            100,
            "flag set: every one misses"
        );
        assert_eq!(lab.dp.flow_count() - flows, 100);
    });
}
