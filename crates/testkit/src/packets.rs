//! Packet builders for the fixtures, on `etherparse`: the input frames and the
//! expected output frames are built here, independently of the program under test
//! (no code of `ricochet-ebpf` is used; checksums come from etherparse, cross-checked
//! with [`crate::checksum`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    icmpv4::DestUnreachableHeader, EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type,
    Icmpv6Header, Icmpv6Type, IpDscp, IpEcn, IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel,
    Ipv6Header, SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
};

use crate::checksum::internet_checksum;
use crate::lab::{CLIENT_MAC, LB_MAC};

/// TOS of the client packets: DSCP AF41 (34) with ECN ECT(1), so that a program that
/// drops either part of the byte when copying it is caught.
pub const CLIENT_TOS: u8 = (34 << 2) | 0b01;
/// Traffic class of the client IPv6 packets (DSCP EF, ECN CE).
pub const CLIENT_TC: u8 = (46 << 2) | 0b11;
/// Flow label the client put on its IPv6 packets (must survive, inside, untouched).
pub const CLIENT_FLOW_LABEL: u32 = 0x5_a5a5;
pub const CLIENT_TTL: u8 = 57;
/// Outer TTL / hop limit of encapsulated packets (`limits::OUTER_TTL`, documented).
pub const OUTER_TTL: u8 = 64;

/// The Ethernet (and optional 802.1Q) header of a frame.
#[derive(Clone, Copy, Debug)]
pub struct L2 {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// VLAN id of a single 802.1Q tag.
    pub vlan: Option<u16>,
}

/// Frames from clients arrive from [`CLIENT_MAC`] to the load balancer's MAC.
pub const FROM_CLIENT: L2 = L2 {
    dst: LB_MAC,
    src: CLIENT_MAC,
    vlan: None,
};

/// VLAN priority used on tagged fixtures (non-zero, so the whole TCI is checked).
const VLAN_PCP: u8 = 5;

impl L2 {
    pub fn tagged(self, vlan: u16) -> L2 {
        L2 {
            vlan: Some(vlan),
            ..self
        }
    }

    /// The frame carrying `l3` (EtherType `ether_type`).
    pub fn frame(&self, ether_type: EtherType, l3: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + l3.len());
        match self.vlan {
            None => {
                Ethernet2Header {
                    destination: self.dst,
                    source: self.src,
                    ether_type,
                }
                .write(&mut out)
                .unwrap();
            }
            Some(id) => {
                Ethernet2Header {
                    destination: self.dst,
                    source: self.src,
                    ether_type: EtherType::VLAN_TAGGED_FRAME,
                }
                .write(&mut out)
                .unwrap();
                SingleVlanHeader {
                    pcp: VlanPcp::try_new(VLAN_PCP).unwrap(),
                    drop_eligible_indicator: false,
                    vlan_id: VlanId::try_new(id).unwrap(),
                    ether_type,
                }
                .write(&mut out)
                .unwrap();
            }
        }
        out.extend_from_slice(l3);
        out
    }

    pub fn ipv4(&self, packet: &[u8]) -> Vec<u8> {
        self.frame(EtherType::IPV4, packet)
    }

    pub fn ipv6(&self, packet: &[u8]) -> Vec<u8> {
        self.frame(EtherType::IPV6, packet)
    }
}

// ---------------------------------------------------------------------------------
// Transport headers

/// A TCP segment (header with a valid checksum, then `payload`) from `src` to `dst`.
pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut h = TcpHeader::new(sport, dport, 0x1d2c_3b4a, 64240);
    if syn {
        h.syn = true;
    } else {
        h.ack = true;
        h.psh = true;
        h.acknowledgment_number = 0x0bad_cafe;
    }
    h.checksum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
        _ => panic!("mixed address families"),
    }
    .unwrap();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A UDP datagram with a valid checksum.
pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let h = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => UdpHeader::with_ipv4_checksum(
            sport,
            dport,
            &ipv4_header(s, d, IpNumber::UDP, 0),
            payload,
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => UdpHeader::with_ipv6_checksum(
            sport,
            dport,
            &ipv6_header(s, d, IpNumber::UDP, 0),
            payload,
        ),
        _ => panic!("mixed address families"),
    }
    .unwrap();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// An ICMP echo request (IPv4) or ICMPv6 echo request, with a valid checksum.
pub fn echo_request(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let payload = b"ping ping ping";
    let mut out = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let h = Icmpv4Header::with_checksum(
                Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
                payload,
            );
            h.to_bytes().to_vec()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Icmpv6Header::with_checksum(
                Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
                s.octets(),
                d.octets(),
                payload,
            )
            .unwrap();
            h.to_bytes().to_vec()
        }
        _ => panic!("mixed address families"),
    };
    out.extend_from_slice(payload);
    out
}

// ---------------------------------------------------------------------------------
// IPv4

/// An IPv4 header as a client sends it: [`CLIENT_TOS`], DF, TTL [`CLIENT_TTL`].
pub fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpNumber,
    payload_len: usize,
) -> Ipv4Header {
    let mut h = Ipv4Header::new(
        payload_len as u16,
        CLIENT_TTL,
        proto,
        src.octets(),
        dst.octets(),
    )
    .unwrap();
    h.dscp = IpDscp::try_new(CLIENT_TOS >> 2).unwrap();
    h.ecn = IpEcn::try_new(CLIENT_TOS & 3).unwrap();
    h.identification = 0x4d2e;
    h.dont_fragment = true;
    h
}

/// Serialises `h` followed by `payload`, with the total length and checksum set.
pub fn ipv4_packet(mut h: Ipv4Header, payload: &[u8]) -> Vec<u8> {
    h.total_len = (h.header_len() + payload.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Options of the "with options" fixtures: a router alert (RFC 2113), 4 bytes.
pub const IPV4_ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// Knobs of the IPv4 fixtures that are not TCP/UDP to a port.
#[derive(Clone, Copy, Debug, Default)]
pub struct V4Opts {
    pub dont_fragment: Option<bool>,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    pub router_alert: bool,
    /// TTL instead of [`CLIENT_TTL`].
    pub ttl: Option<u8>,
}

/// A TCP/IPv4 packet; `syn` picks a SYN, else an ACK|PSH carrying `payload`.
pub fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    tcp4_with(src, sport, dst, dport, syn, payload, V4Opts::default())
}

pub fn tcp4_with(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
    opts: V4Opts,
) -> Vec<u8> {
    let seg = tcp(src.into(), sport, dst.into(), dport, syn, payload);
    let mut h = ipv4_header(src, dst, IpNumber::TCP, seg.len());
    if let Some(df) = opts.dont_fragment {
        h.dont_fragment = df;
    }
    if let Some(ttl) = opts.ttl {
        h.time_to_live = ttl;
    }
    h.more_fragments = opts.more_fragments;
    h.fragment_offset = IpFragOffset::try_new(opts.fragment_offset).unwrap();
    if opts.router_alert {
        h.options = IPV4_ROUTER_ALERT[..].try_into().unwrap();
    }
    ipv4_packet(h, &seg)
}

pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let dgram = udp(src.into(), sport, dst.into(), dport, payload);
    ipv4_packet(ipv4_header(src, dst, IpNumber::UDP, dgram.len()), &dgram)
}

/// An IPv4 packet of protocol `proto` carrying `payload` as is.
pub fn raw4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpNumber, payload: &[u8]) -> Vec<u8> {
    ipv4_packet(ipv4_header(src, dst, proto, payload.len()), payload)
}

/// Recomputes the header checksum of the IPv4 packet in `packet` after a hand edit.
pub fn fix_ipv4_checksum(packet: &mut [u8]) {
    let ihl = ((packet[0] & 0x0f) as usize * 4).max(20);
    packet[10] = 0;
    packet[11] = 0;
    let sum = rfc1071(&packet[..ihl.min(packet.len())]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071 checksum of `data` (the test kit's, rather than the program's).
pub fn rfc1071(data: &[u8]) -> u16 {
    internet_checksum(data)
}

// ---------------------------------------------------------------------------------
// IPv6

/// An IPv6 header as a client sends it: [`CLIENT_TC`], [`CLIENT_FLOW_LABEL`].
pub fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, next: IpNumber, payload_len: usize) -> Ipv6Header {
    Ipv6Header {
        traffic_class: CLIENT_TC,
        flow_label: Ipv6FlowLabel::try_new(CLIENT_FLOW_LABEL).unwrap(),
        payload_length: payload_len as u16,
        next_header: next,
        hop_limit: CLIENT_TTL,
        source: src.octets(),
        destination: dst.octets(),
    }
}

/// An IPv6 packet whose payload (extension headers included) is `payload`.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: IpNumber, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + payload.len());
    ipv6_header(src, dst, next, payload.len())
        .write(&mut out)
        .unwrap();
    out.extend_from_slice(payload);
    out
}

pub fn tcp6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let seg = tcp(src.into(), sport, dst.into(), dport, syn, payload);
    ipv6_packet(src, dst, IpNumber::TCP, &seg)
}

pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let dgram = udp(src.into(), sport, dst.into(), dport, payload);
    ipv6_packet(src, dst, IpNumber::UDP, &dgram)
}

/// A TCP/IPv6 packet whose TCP segment follows one extension header of type `ext`
/// (hop-by-hop, routing, destination options: 8 bytes; fragment: a fragment header).
pub fn tcp6_behind_ext(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    ext: IpNumber,
) -> Vec<u8> {
    let seg = tcp(src.into(), sport, dst.into(), dport, true, &[]);
    let mut payload = Vec::new();
    if ext == IpNumber::IPV6_FRAGMENTATION_HEADER {
        // Atomic-looking first fragment: offset 0, more fragments set.
        etherparse::Ipv6FragmentHeader::new(IpNumber::TCP, IpFragOffset::ZERO, true, 0xfeed)
            .write(&mut payload)
            .unwrap();
    } else if ext == IpNumber::IPV6_ROUTE_HEADER {
        // Routing type 4 (SRH) would need segments; type 0 with segments left 0 is a
        // syntactically valid, inert routing header of 8 bytes.
        payload.extend_from_slice(&[IpNumber::TCP.0, 0, 0, 0, 0, 0, 0, 0]);
    } else {
        // Hop-by-hop / destination options: one PadN option filling the 8 bytes.
        payload.extend_from_slice(&[IpNumber::TCP.0, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&seg);
    ipv6_packet(src, dst, ext, &payload)
}

// ---------------------------------------------------------------------------------
// Expected outputs

/// The frame the load balancer must send for `inner` (an IPv4 packet) to `server`:
/// new L2 header, outer IPv4 per RFC 2003 (TOS and DF copied, id 0, TTL 64, protocol
/// 4, header checksum), then the inner packet byte for byte, then whatever trailed the
/// inner packet in the received frame (`trailer`, e.g. Ethernet padding).
pub fn ipip4(l2: L2, src: Ipv4Addr, server: Ipv4Addr, inner: &[u8], trailer: &[u8]) -> Vec<u8> {
    ipip4_with_id(l2, src, server, inner, trailer, 0)
}

/// [`ipip4`] with outer identification `id` (the program picks a random one for packets
/// without DF, which may be fragmented on the way: RFC 6864).
pub fn ipip4_with_id(
    l2: L2,
    src: Ipv4Addr,
    server: Ipv4Addr,
    inner: &[u8],
    trailer: &[u8],
    id: u16,
) -> Vec<u8> {
    encap4(l2, src, server, IpNumber::IPV4, &[], inner, trailer, id)
}

/// The frame for `inner` (IPv4) to `server` in GRE (RFC 2784): the outer IPv4 header of
/// [`ipip4`] with protocol 47, then a 4-byte GRE header (no checksum, key or sequence
/// number, version 0, protocol type 0x0800), then the inner packet.
pub fn gre4(l2: L2, src: Ipv4Addr, server: Ipv4Addr, inner: &[u8], trailer: &[u8]) -> Vec<u8> {
    let gre = gre_header(EtherType::IPV4);
    encap4(l2, src, server, IpNumber::GRE, &gre, inner, trailer, 0)
}

/// The frame for `inner` (IPv4) to `server` in GUE variant 1: the outer IPv4 header of
/// [`ipip4`] with protocol 17, a UDP header from `sport` to `dport` with checksum 0
/// (allowed over IPv4), then the inner packet.
pub fn gue4(
    l2: L2,
    src: Ipv4Addr,
    server: Ipv4Addr,
    inner: &[u8],
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let udp = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (8 + inner.len()) as u16,
        checksum: 0,
    };
    encap4(
        l2,
        src,
        server,
        IpNumber::UDP,
        &udp.to_bytes(),
        inner,
        &[],
        0,
    )
}

fn gre_header(ether_type: EtherType) -> [u8; 4] {
    let t = ether_type.0.to_be_bytes();
    [0, 0, t[0], t[1]]
}

#[allow(clippy::too_many_arguments)] // one per header field the fixtures vary
fn encap4(
    l2: L2,
    src: Ipv4Addr,
    server: Ipv4Addr,
    proto: IpNumber,
    tunnel: &[u8],
    inner: &[u8],
    trailer: &[u8],
    id: u16,
) -> Vec<u8> {
    let tos = inner[1];
    let df = inner[6] & 0x40 != 0;
    let mut payload = tunnel.to_vec();
    payload.extend_from_slice(inner);
    let mut outer = Ipv4Header::new(
        payload.len() as u16,
        OUTER_TTL,
        proto,
        src.octets(),
        server.octets(),
    )
    .unwrap();
    outer.dscp = IpDscp::try_new(tos >> 2).unwrap();
    outer.ecn = IpEcn::try_new(tos & 3).unwrap();
    outer.identification = id;
    outer.dont_fragment = df;
    let mut l3 = ipv4_packet(outer, &payload);
    assert_eq!(rfc1071(&l3[..20]), 0, "expected outer IPv4 header checksum");
    l3.extend_from_slice(trailer);
    l2.ipv4(&l3)
}

/// The frame for `inner` (an IPv6 packet) to `server`: outer IPv6 per RFC 2473
/// (traffic class copied, `flow_label`, next header 41, hop limit 64).
pub fn ip6ip6(l2: L2, src: Ipv6Addr, server: Ipv6Addr, inner: &[u8], flow_label: u32) -> Vec<u8> {
    encap6(l2, src, server, IpNumber::IPV6, &[], inner, flow_label)
}

/// The frame for `inner` (IPv6) to `server` in GRE: the outer header of [`ip6ip6`] with
/// next header 47, then the GRE header with protocol type 0x86dd.
pub fn gre6(l2: L2, src: Ipv6Addr, server: Ipv6Addr, inner: &[u8], flow_label: u32) -> Vec<u8> {
    let gre = gre_header(EtherType::IPV6);
    encap6(l2, src, server, IpNumber::GRE, &gre, inner, flow_label)
}

/// The frame for `inner` (IPv6) to `server` in GUE: the outer header of [`ip6ip6`] with
/// next header 17, then a UDP header from `sport` to `dport` whose checksum etherparse
/// computes over the whole datagram (IPv6 forbids 0).
pub fn gue6(
    l2: L2,
    src: Ipv6Addr,
    server: Ipv6Addr,
    inner: &[u8],
    flow_label: u32,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let outer = outer6(
        src,
        server,
        IpNumber::UDP,
        8 + inner.len(),
        inner,
        flow_label,
    );
    let udp = UdpHeader::with_ipv6_checksum(sport, dport, &outer, inner).unwrap();
    assert_ne!(udp.checksum, 0);
    encap6(
        l2,
        src,
        server,
        IpNumber::UDP,
        &udp.to_bytes(),
        inner,
        flow_label,
    )
}

fn outer6(
    src: Ipv6Addr,
    server: Ipv6Addr,
    next: IpNumber,
    payload_len: usize,
    inner: &[u8],
    flow_label: u32,
) -> Ipv6Header {
    Ipv6Header {
        traffic_class: inner[0] << 4 | inner[1] >> 4,
        flow_label: Ipv6FlowLabel::try_new(flow_label).unwrap(),
        payload_length: payload_len as u16,
        next_header: next,
        hop_limit: OUTER_TTL,
        source: src.octets(),
        destination: server.octets(),
    }
}

fn encap6(
    l2: L2,
    src: Ipv6Addr,
    server: Ipv6Addr,
    next: IpNumber,
    tunnel: &[u8],
    inner: &[u8],
    flow_label: u32,
) -> Vec<u8> {
    let mut l3 = Vec::new();
    outer6(
        src,
        server,
        next,
        tunnel.len() + inner.len(),
        inner,
        flow_label,
    )
    .write(&mut l3)
    .unwrap();
    l3.extend_from_slice(tunnel);
    l3.extend_from_slice(inner);
    l2.ipv6(&l3)
}

/// TOS / traffic class of the ICMP errors the program sends (network control, as
/// routers send them: the value documented in lb.rs).
pub const ICMP_ERROR_TOS: u8 = 0xc0;

/// The ICMP "fragmentation needed" (type 3 code 4) answering `offending` (an IPv4
/// packet to `vip`), sent back out of the interface it came in on: the L2 addresses
/// swapped, from the VIP to the client, quoting the offending IP header and the first
/// 8 bytes of its payload.
pub fn icmp4_frag_needed(received: L2, offending: &[u8], mtu: u16) -> Vec<u8> {
    let src: [u8; 4] = offending[12..16].try_into().unwrap();
    let dst: [u8; 4] = offending[16..20].try_into().unwrap();
    let quote = &offending[..20 + 8];
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        }),
        quote,
    );
    let mut body = icmp.to_bytes().to_vec();
    body.extend_from_slice(quote);
    let mut ip = Ipv4Header::new(body.len() as u16, OUTER_TTL, IpNumber::ICMP, dst, src).unwrap();
    ip.dscp = IpDscp::try_new(ICMP_ERROR_TOS >> 2).unwrap();
    ip.identification = 0;
    ip.dont_fragment = false;
    let l3 = ipv4_packet(ip, &body);
    // Cross-check etherparse's checksums with the RFC 1071 sum written here.
    assert_eq!(rfc1071(&l3[..20]), 0, "expected IPv4 header checksum");
    assert_eq!(rfc1071(&l3[20..]), 0, "expected ICMP checksum");
    let l2 = L2 {
        dst: received.src,
        src: received.dst,
        vlan: received.vlan,
    };
    l2.ipv4(&l3)
}

/// The ICMPv6 "packet too big" answering `offending` (an IPv6 packet to a VIP),
/// quoting its IPv6 header and the first 8 bytes of its payload.
pub fn icmp6_packet_too_big(received: L2, offending: &[u8], mtu: u32) -> Vec<u8> {
    let src: [u8; 16] = offending[8..24].try_into().unwrap();
    let dst: [u8; 16] = offending[24..40].try_into().unwrap();
    let quote = &offending[..40 + 8];
    let icmp =
        Icmpv6Header::with_checksum(Icmpv6Type::PacketTooBig { mtu }, dst, src, quote).unwrap();
    let mut body = icmp.to_bytes().to_vec();
    body.extend_from_slice(quote);
    let mut l3 = Vec::new();
    Ipv6Header {
        traffic_class: ICMP_ERROR_TOS,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: body.len() as u16,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: OUTER_TTL,
        source: dst,
        destination: src,
    }
    .write(&mut l3)
    .unwrap();
    l3.extend_from_slice(&body);
    // Cross-check etherparse's checksum: pseudo-header (RFC 8200 8.1) + message.
    let mut summed = [&dst[..], &src[..]].concat();
    summed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    summed.extend_from_slice(&[0, 0, 0, IpNumber::IPV6_ICMP.0]);
    summed.extend_from_slice(&body);
    assert_eq!(rfc1071(&summed), 0, "expected ICMPv6 checksum");
    let l2 = L2 {
        dst: received.src,
        src: received.dst,
        vlan: received.vlan,
    };
    l2.ipv6(&l3)
}

/// A readable decode of a frame's headers for failure messages.
pub fn describe(frame: &[u8]) -> String {
    match etherparse::PacketHeaders::from_ethernet_slice(frame) {
        Ok(p) => {
            let mut s = format!("link: {:?}", p.link);
            if !p.link_exts.is_empty() {
                s += &format!("\n  link ext: {:?}", p.link_exts);
            }
            s += &format!("\n  net: {:?}\n  transport: {:?}", p.net, p.transport);
            s
        }
        Err(e) => format!("(headers not parseable: {e})"),
    }
}

/// Hex dump, 16 bytes a line, marking the first byte that differs from `other`.
pub fn hexdump(frame: &[u8], other: &[u8]) -> String {
    let first_diff = frame
        .iter()
        .zip(other)
        .position(|(a, b)| a != b)
        .unwrap_or(frame.len().min(other.len()));
    let mut s = String::new();
    for (row, chunk) in frame.chunks(16).enumerate() {
        s.push_str(&format!("  {:04x}:", row * 16));
        for (i, b) in chunk.iter().enumerate() {
            let at = row * 16 + i;
            let mark = if at == first_diff { '>' } else { ' ' };
            s.push_str(&format!("{mark}{b:02x}"));
        }
        s.push('\n');
    }
    s
}

/// An ICMP error a router at `router` sends about `offending` (an IPv4 packet from a VIP
/// to a client, as a server sends it), to the packet's source, the VIP: the IPv4 packet
/// (no L2), quoting the first `quote_len` bytes of `offending` (routers quote the header
/// and at least 8 bytes, Linux up to 576 bytes in all). `kind` is the ICMP type and
/// `rest` the 4 bytes after the checksum (for "fragmentation needed": 0, 0, then the
/// next-hop MTU).
pub fn icmp4_error_from(
    router: Ipv4Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    offending: &[u8],
    quote_len: usize,
) -> Vec<u8> {
    let vip: [u8; 4] = offending[12..16].try_into().unwrap();
    let mut body = vec![kind, code, 0, 0];
    body.extend_from_slice(&rest);
    body.extend_from_slice(&offending[..quote_len.min(offending.len())]);
    let check = internet_checksum(&body);
    body[2..4].copy_from_slice(&check.to_be_bytes());
    assert_eq!(rfc1071(&body), 0, "expected ICMP checksum");
    let ip = Ipv4Header::new(body.len() as u16, 63, IpNumber::ICMP, router.octets(), vip).unwrap();
    ipv4_packet(ip, &body)
}

/// The ICMPv6 error a router at `router` sends about `offending` (an IPv6 packet from a
/// VIP to a client) to the VIP, quoting its first `quote_len` bytes; `kind` 2 (packet too
/// big) with `rest` the MTU, 1, 3 or 4 for the others. Checksummed by etherparse.
pub fn icmp6_error_from(
    router: Ipv6Addr,
    kind: u8,
    rest: u32,
    offending: &[u8],
    quote_len: usize,
) -> Vec<u8> {
    let vip: [u8; 16] = offending[8..24].try_into().unwrap();
    let quote = &offending[..quote_len.min(offending.len())];
    let icmp_type = match kind {
        2 => Icmpv6Type::PacketTooBig { mtu: rest },
        other => Icmpv6Type::Unknown {
            type_u8: other,
            code_u8: 0,
            bytes5to8: rest.to_be_bytes(),
        },
    };
    let icmp = Icmpv6Header::with_checksum(icmp_type, router.octets(), vip, quote).unwrap();
    let mut body = icmp.to_bytes().to_vec();
    body.extend_from_slice(quote);
    ipv6_packet(router, Ipv6Addr::from(vip), IpNumber::IPV6_ICMP, &body)
}
