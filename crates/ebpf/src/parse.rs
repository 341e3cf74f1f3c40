//! Parsing: Ethernet (one 802.1Q or 802.1ad tag allowed), IPv4/IPv6 and the TCP/UDP
//! ports of a packet to a VIP, into a [`Parsed`] or the [`Reason`] the packet stops at.
//!
//! The VIP check is part of parsing because it decides what happens to the rest of the
//! packet: to anything but a VIP, IP options, fragments and unknown protocols pass to
//! the kernel untouched; to a VIP they are dropped. The VIP filter answers it for most
//! addresses right after the IP header; see [`crate::service`] for when `VIPS` is read.
//! [`classify`] runs parsing and the service lookup exactly as the kernel program does,
//! for host callers.

use core::mem::MaybeUninit;

use ricochet_common::{vip_filter, Reason, ServiceValue, FAMILY_V4, FAMILY_V6};

use crate::{
    headers::*,
    packet::{ptr_at, read_words, PacketCtx},
    service::{self, Lookup},
};

/// What the parser learnt about a packet addressed to a VIP.
///
/// `repr(C, align(8))` with the addresses first: their copies into map keys then move
/// words, not bytes (a `[u8; 16]` field of a Rust-layout struct is only known to be
/// byte aligned, which costs a load and a store per byte in BPF).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Source and destination in the 16-byte map form (IPv4: first four bytes).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Offset of the IP header (after Ethernet and an optional VLAN tag).
    pub l3_off: usize,
    /// Length of the frame as received.
    pub frame_len: u32,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Length of the IP packet (header included), from its header.
    pub ip_len: u16,
    /// Ports, big endian as on the wire.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// A TCP SYN without ACK: the first packet of a connection. Its flow is new (or a
    /// retransmitted opener), so balancing skips the flow-table lookup for it.
    pub syn: bool,
    /// An ICMP error about a packet the flow's server sent (from the VIP to the client):
    /// `src`, `sport`, `proto` and `dport` are then the flow's, read from the quote, so
    /// that the error finds the flow's server; the packet itself is the ICMP error,
    /// forwarded as it is, never recorded or counted as the flow's traffic.
    pub icmp: bool,
}

/// TCP flags (byte 13 of the header).
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// A packet for a virtual service: what the parse and lookup stages hand to balancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub parsed: Parsed,
    pub service: ServiceValue,
}

/// Parses `ctx` and looks its service up, as the kernel program's first two stages do:
/// `Ok` for a packet the program goes on to balance, otherwise the [`Reason`] it is
/// counted under (whose XDP action is [`crate::verdict::action`]).
///
/// This is the host's reference of those stages (the differential fuzz test runs it
/// against the kernel program through BPF_PROG_TEST_RUN): the kernel runs the same
/// [`parse`] and [`service::find_service`].
#[inline(always)]
pub fn classify(ctx: &impl PacketCtx, maps: &impl Lookup) -> Result<Classified, Reason> {
    let mut p = MaybeUninit::<Parsed>::uninit();
    parse(ctx, maps, &mut p)?;
    // SAFETY: parse initialised `p` (it answered Ok).
    let parsed = unsafe { p.assume_init() };
    let service = service::find_service(maps, &parsed)?;
    Ok(Classified { parsed, service })
}

/// Parses the headers into `p`; `Ok` (and `p` written whole) when the packet may be
/// for a VIP (its destination passed the VIP filter) and carries TCP or UDP ports.
/// The service lookup ([`service::find_service`]) then decides; a packet stopped
/// earlier looks its destination up in `VIPS` only if the filter let it through.
///
/// A subprogram of its own with an out-parameter: `Parsed` is too large to return in a
/// register, and zeroing it first would cost a byte-loop memset per packet in BPF.
#[inline(never)]
pub fn parse(
    ctx: &impl PacketCtx,
    maps: &impl Lookup,
    p: &mut MaybeUninit<Parsed>,
) -> Result<(), Reason> {
    let frame_len = ctx.data_end() - ctx.data();
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Reason::PassTruncatedL2)?;
    // SAFETY: bounds checked by ptr_at.
    let mut ether_type = u16::from_be_bytes(unsafe { (*eth).proto });
    let mut l3_off = ETH_LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag = ptr_at::<[u8; 4]>(ctx, ETH_LEN).ok_or(Reason::PassTruncatedL2)?;
        // SAFETY: bounds checked.
        let tag = unsafe { *tag };
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        l3_off = ETH_LEN + VLAN_LEN;
    }
    match ether_type {
        ETH_P_IP => parse_v4(ctx, maps, l3_off, frame_len, p),
        ETH_P_IPV6 => parse_v6(ctx, maps, l3_off, frame_len, p),
        _ => Err(Reason::PassNotIp),
    }
}

/// An IPv4 address in the 16-byte form of the maps (zeros after it), built with
/// word stores: a `[0; 16]` array filled afterwards costs a byte-loop memset in BPF.
#[inline(always)]
pub fn addr_v4(a: [u8; 4]) -> [u8; 16] {
    (u32::from_le_bytes(a) as u128).to_le_bytes()
}

/// Reads the ports of a TCP or UDP header at `l4_off`; `l4_room` is what the IP
/// header says the L4 part spans.
#[inline(always)]
fn ports(
    ctx: &impl PacketCtx,
    proto: u8,
    l4_off: usize,
    l4_room: usize,
) -> Result<(Ports, bool), Reason> {
    let need = if proto == IPPROTO_TCP {
        TCP_LEN
    } else {
        UDP_LEN
    };
    if l4_room < need {
        return Err(Reason::DropTruncatedL4);
    }
    let syn = if proto == IPPROTO_TCP {
        let tcp = ptr_at::<[u8; TCP_LEN]>(ctx, l4_off).ok_or(Reason::DropTruncatedL4)?;
        // SAFETY: bounds checked.
        let flags = unsafe { (*tcp)[13] };
        flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    } else {
        ptr_at::<[u8; UDP_LEN]>(ctx, l4_off).ok_or(Reason::DropTruncatedL4)?;
        false
    };
    let p = read_words::<Ports, 1>(ctx, l4_off).ok_or(Reason::DropTruncatedL4)?;
    Ok((p, syn))
}

#[inline(always)]
fn parse_v4(
    ctx: &impl PacketCtx,
    maps: &impl Lookup,
    l3_off: usize,
    frame_len: usize,
    p: &mut MaybeUninit<Parsed>,
) -> Result<(), Reason> {
    let ip = read_words::<Ipv4Hdr, 5>(ctx, l3_off).ok_or(Reason::DropMalformedIpv4)?;
    let hdr_len = (ip.ihl() as usize) * 4;
    let tot = ip.total_len() as usize;
    if ip.version() != 4 || hdr_len < IPV4_LEN || tot < hdr_len || l3_off + tot > frame_len {
        return Err(Reason::DropMalformedIpv4);
    }
    if !service::maybe_vip(maps, vip_filter::bit_v4(ip.dst)) {
        return Err(Reason::PassNotVip);
    }
    let dst = addr_v4(ip.dst);
    let f = match transport_v4(ctx, &ip, l3_off, hdr_len, tot) {
        Ok(t) => t,
        Err(r) => return Err(service::stop_for_vip(maps, dst, FAMILY_V4, r)),
    };
    p.write(Parsed {
        l3_off,
        frame_len: frame_len as u32,
        family: FAMILY_V4,
        proto: f.proto,
        ip_len: tot as u16,
        src: addr_v4(f.client),
        dst,
        sport: f.ports.src,
        dport: f.ports.dst,
        syn: f.syn,
        icmp: f.icmp,
    });
    Ok(())
}

/// The flow a packet to a VIP belongs to, as the client sends it.
struct Flow<A> {
    proto: u8,
    /// The client's port, then the VIP's.
    ports: Ports,
    syn: bool,
    /// The packet is an ICMP error about the flow (see [`Parsed::icmp`]).
    icmp: bool,
    client: A,
}

/// ICMP types of errors that quote the offending packet: destination unreachable (3,
/// fragmentation needed among its codes), time exceeded (11), parameter problem (12).
#[inline(always)]
const fn icmp4_error(kind: u8) -> bool {
    matches!(kind, 3 | 11 | 12)
}

/// ICMPv6 error types (RFC 4443): destination unreachable (1), packet too big (2), time
/// exceeded (3), parameter problem (4).
#[inline(always)]
const fn icmp6_error(kind: u8) -> bool {
    matches!(kind, 1..=4)
}

/// The flow an ICMP error to `vip` quotes (a packet the flow's server sent from `vip` to
/// the client), at `quote_off` with `room` bytes of the error's payload left. The quote is
/// checked as the parser checks a packet: an IPv4 header without options, no later
/// fragment, TCP or UDP, from the VIP, with 8 bytes of its transport header.
#[inline(always)]
fn quoted_flow_v4(
    ctx: &impl PacketCtx,
    vip: [u8; 4],
    quote_off: usize,
    room: usize,
) -> Result<Flow<[u8; 4]>, Reason> {
    if room < IPV4_LEN + 8 {
        return Err(Reason::DropIcmpBadQuote);
    }
    let q = ptr_at::<Ipv4Hdr>(ctx, quote_off).ok_or(Reason::DropIcmpBadQuote)?;
    // SAFETY: bounds checked; copied to the stack.
    let q = unsafe { *q };
    let ports = ptr_at::<Ports>(ctx, quote_off + IPV4_LEN).ok_or(Reason::DropIcmpBadQuote)?;
    // SAFETY: bounds checked.
    let ports = unsafe { *ports };
    if q.ver_ihl != 0x45
        || q.frag() & IP_OFFSET != 0
        || !(q.proto == IPPROTO_TCP || q.proto == IPPROTO_UDP)
        || q.src != vip
    {
        return Err(Reason::DropIcmpBadQuote);
    }
    Ok(Flow {
        proto: q.proto,
        ports: Ports {
            src: ports.dst,
            dst: ports.src,
        },
        syn: false,
        icmp: true,
        client: q.dst,
    })
}

/// What follows a well-formed IPv4 header that may be a VIP's: the flow, or the reason a
/// packet to a VIP stops at.
#[inline(always)]
fn transport_v4(
    ctx: &impl PacketCtx,
    ip: &Ipv4Hdr,
    l3_off: usize,
    hdr_len: usize,
    tot: usize,
) -> Result<Flow<[u8; 4]>, Reason> {
    if hdr_len != IPV4_LEN {
        return Err(Reason::DropIpv4Options);
    }
    if ip.frag() & IP_MF_OFFSET != 0 {
        return Err(Reason::DropFragment);
    }
    let proto = ip.proto;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMP => {
            let icmp = ptr_at::<IcmpHdr>(ctx, l3_off + IPV4_LEN).ok_or(Reason::DropIcmp)?;
            // SAFETY: bounds checked.
            let kind = unsafe { (*icmp).kind };
            if tot < IPV4_LEN + ICMP_LEN || !icmp4_error(kind) {
                return Err(Reason::DropIcmp);
            }
            let quote = l3_off + IPV4_LEN + ICMP_LEN;
            return quoted_flow_v4(ctx, ip.dst, quote, tot - IPV4_LEN - ICMP_LEN);
        }
        _ => return Err(Reason::DropUnsupportedProto),
    }
    let (pr, syn) = ports(ctx, proto, l3_off + IPV4_LEN, tot - IPV4_LEN)?;
    Ok(Flow {
        proto,
        ports: pr,
        syn,
        icmp: false,
        client: ip.src,
    })
}

#[inline(always)]
fn parse_v6(
    ctx: &impl PacketCtx,
    maps: &impl Lookup,
    l3_off: usize,
    frame_len: usize,
    p: &mut MaybeUninit<Parsed>,
) -> Result<(), Reason> {
    let ip = read_words::<Ipv6Hdr, 10>(ctx, l3_off).ok_or(Reason::DropMalformedIpv6)?;
    let payload = ip.payload_len() as usize;
    if ip.version() != 6 || l3_off + IPV6_LEN + payload > frame_len {
        return Err(Reason::DropMalformedIpv6);
    }
    if !service::maybe_vip(maps, vip_filter::bit_v6(&ip.dst)) {
        return Err(Reason::PassNotVip);
    }
    let f = match transport_v6(ctx, &ip, l3_off, payload) {
        Ok(t) => t,
        Err(r) => return Err(service::stop_for_vip(maps, ip.dst, FAMILY_V6, r)),
    };
    p.write(Parsed {
        l3_off,
        frame_len: frame_len as u32,
        family: FAMILY_V6,
        proto: f.proto,
        ip_len: (IPV6_LEN + payload) as u16,
        src: f.client,
        dst: ip.dst,
        sport: f.ports.src,
        dport: f.ports.dst,
        syn: f.syn,
        icmp: f.icmp,
    });
    Ok(())
}

/// [`quoted_flow_v4`] for ICMPv6: the quote an IPv6 header with TCP or UDP right after it
/// (no extension header), from the VIP.
#[inline(always)]
fn quoted_flow_v6(
    ctx: &impl PacketCtx,
    vip: &[u8; 16],
    quote_off: usize,
    room: usize,
) -> Result<Flow<[u8; 16]>, Reason> {
    if room < IPV6_LEN + 8 {
        return Err(Reason::DropIcmpBadQuote);
    }
    let q = ptr_at::<Ipv6Hdr>(ctx, quote_off).ok_or(Reason::DropIcmpBadQuote)?;
    // SAFETY: bounds checked; copied to the stack.
    let q = unsafe { *q };
    let ports = ptr_at::<Ports>(ctx, quote_off + IPV6_LEN).ok_or(Reason::DropIcmpBadQuote)?;
    // SAFETY: bounds checked.
    let ports = unsafe { *ports };
    if q.version() != 6
        || !(q.next_hdr == IPPROTO_TCP || q.next_hdr == IPPROTO_UDP)
        || q.src != *vip
    {
        return Err(Reason::DropIcmpBadQuote);
    }
    Ok(Flow {
        proto: q.next_hdr,
        ports: Ports {
            src: ports.dst,
            dst: ports.src,
        },
        syn: false,
        icmp: true,
        client: q.dst,
    })
}

/// What follows an IPv6 header that may be a VIP's, as [`transport_v4`].
#[inline(always)]
fn transport_v6(
    ctx: &impl PacketCtx,
    ip: &Ipv6Hdr,
    l3_off: usize,
    payload: usize,
) -> Result<Flow<[u8; 16]>, Reason> {
    let proto = ip.next_hdr;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMPV6 => {
            let icmp = ptr_at::<IcmpHdr>(ctx, l3_off + IPV6_LEN).ok_or(Reason::DropIcmp)?;
            // SAFETY: bounds checked.
            let kind = unsafe { (*icmp).kind };
            if payload < ICMP_LEN || !icmp6_error(kind) {
                return Err(Reason::DropIcmp);
            }
            let quote = l3_off + IPV6_LEN + ICMP_LEN;
            return quoted_flow_v6(ctx, &ip.dst, quote, payload - ICMP_LEN);
        }
        IPPROTO_FRAGMENT => return Err(Reason::DropFragment),
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_ESP
        | IPPROTO_MH | IPPROTO_NONE => return Err(Reason::DropIpv6ExtHeader),
        _ => return Err(Reason::DropUnsupportedProto),
    }
    let (pr, syn) = ports(ctx, proto, l3_off + IPV6_LEN, payload)?;
    Ok(Flow {
        proto,
        ports: pr,
        syn,
        icmp: false,
        client: ip.src,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{packet::HostPacket, testenv::*};
    use ricochet_common::{ServiceFlags, VipFlags};
    use std::vec::Vec;

    const VIP4: [u8; 4] = [192, 168, 35, 241];
    const CLIENT4: [u8; 4] = [192, 168, 11, 2];
    const VIP6: [u8; 16] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x35];
    const CLIENT6: [u8; 16] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
    const WEB: ServiceValue = ServiceValue {
        service_id: 3,
        table_offset: 0,
        table_size: 7,
        flags: ServiceFlags::EMPTY,
        gue_port: [0, 0],
    };

    fn env() -> TestEnv {
        let mut e = TestEnv::default();
        e.add_vip(&VIP4, VipFlags::EMPTY);
        e.add_vip(&VIP6, VipFlags::UDP_ALL_PORTS);
        e.add_service(&VIP4, IPPROTO_TCP, 80, WEB);
        e.add_service(&VIP6, IPPROTO_TCP, 443, WEB);
        e
    }

    fn classify_frame(env: &TestEnv, frame: &[u8]) -> Result<Classified, Reason> {
        let mut buf = buffer(frame);
        let ctx = HostPacket::new(&mut buf, HEADROOM, frame.len(), 1);
        classify(&ctx, env)
    }

    fn v4_frame(vlan: Option<u16>, ip: Vec<u8>) -> Vec<u8> {
        let mut f = eth(vlan, ETH_P_IP);
        f.extend_from_slice(&ip);
        f
    }

    fn v6_frame(ip: Vec<u8>) -> Vec<u8> {
        let mut f = eth(None, ETH_P_IPV6);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn only_a_tcp_syn_without_ack_is_an_opener() {
        let e = env();
        let with_flags = |flags: u8| {
            let mut t = tcp(50412, 80, b"");
            t[13] = flags;
            v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &t))
        };
        let syn = |frame: &[u8]| classify_frame(&e, frame).unwrap().parsed.syn;
        assert!(syn(&with_flags(0x02)));
        assert!(syn(&with_flags(0x02 | 0x08)), "SYN with PSH still opens");
        assert!(!syn(&with_flags(0x12)), "SYN-ACK");
        assert!(!syn(&with_flags(0x10)), "ACK");
        assert!(!syn(&with_flags(0x18)), "PSH-ACK");
        let mut t6 = tcp(1234, 443, b"");
        t6[13] = 0x02;
        assert!(syn(&v6_frame(ipv6(CLIENT6, VIP6, 6, &t6))));
        t6[13] = 0x10;
        assert!(!syn(&v6_frame(ipv6(CLIENT6, VIP6, 6, &t6))));
    }

    #[test]
    fn tcp_to_a_service_is_classified() {
        let e = env();
        let frame = v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &tcp(50412, 80, b"hi")));
        let c = classify_frame(&e, &frame).unwrap();
        assert_eq!(c.service, WEB);
        let p = c.parsed;
        assert_eq!((p.l3_off, p.frame_len as usize), (14, frame.len()));
        assert_eq!((p.family, p.proto, p.ip_len), (FAMILY_V4, 6, 42));
        assert_eq!(p.src, addr16(&CLIENT4));
        assert_eq!(p.dst, addr16(&VIP4));
        assert_eq!(p.sport, 50412u16.to_be_bytes());
        assert_eq!(p.dport, 80u16.to_be_bytes());

        let tagged = v4_frame(Some(7), ipv4(CLIENT4, VIP4, 6, true, &tcp(50412, 80, b"")));
        assert_eq!(classify_frame(&e, &tagged).unwrap().parsed.l3_off, 18);

        let frame6 = v6_frame(ipv6(CLIENT6, VIP6, 6, &tcp(1234, 443, b"")));
        let p = classify_frame(&e, &frame6).unwrap().parsed;
        assert_eq!(
            (p.family, p.ip_len, p.src, p.dst),
            (FAMILY_V6, 60, CLIENT6, VIP6)
        );
    }

    #[test]
    fn each_stop_has_its_reason() {
        let e = env();
        let other = [192, 168, 35, 9];
        let cases: &[(&str, Vec<u8>, Reason)] = &[
            ("empty", Vec::new(), Reason::PassTruncatedL2),
            (
                "short Ethernet",
                eth(None, ETH_P_IP)[..13].to_vec(),
                Reason::PassTruncatedL2,
            ),
            (
                "tag cut",
                eth(Some(1), ETH_P_IP)[..16].to_vec(),
                Reason::PassTruncatedL2,
            ),
            ("ARP", eth(None, 0x0806), Reason::PassNotIp),
            (
                "not a VIP",
                v4_frame(None, ipv4(CLIENT4, other, 6, true, &tcp(1, 80, b""))),
                Reason::PassNotVip,
            ),
            ("IPv4 cut", eth(None, ETH_P_IP), Reason::DropMalformedIpv4),
            ("IPv6 cut", eth(None, ETH_P_IPV6), Reason::DropMalformedIpv6),
            (
                "ICMP",
                v4_frame(
                    None,
                    ipv4(CLIENT4, VIP4, 1, false, &[8, 0, 0, 0, 0, 0, 0, 0]),
                ),
                Reason::DropIcmp,
            ),
            (
                "GRE",
                v4_frame(None, ipv4(CLIENT4, VIP4, 47, false, &[0; 8])),
                Reason::DropUnsupportedProto,
            ),
            (
                "TCP cut",
                v4_frame(None, ipv4(CLIENT4, VIP4, 6, false, &[0; 19])),
                Reason::DropTruncatedL4,
            ),
            (
                "UDP cut",
                v4_frame(None, ipv4(CLIENT4, VIP4, 17, false, &[0; 7])),
                Reason::DropTruncatedL4,
            ),
            (
                "no service on the port",
                v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 81, b""))),
                Reason::DropNoService,
            ),
            (
                "IPv6 fragment",
                v6_frame(ipv6(CLIENT6, VIP6, 44, &[0; 16])),
                Reason::DropFragment,
            ),
            (
                "IPv6 hop-by-hop",
                v6_frame(ipv6(CLIENT6, VIP6, 0, &[0; 16])),
                Reason::DropIpv6ExtHeader,
            ),
            (
                "ICMPv6",
                v6_frame(ipv6(CLIENT6, VIP6, 58, &[0; 8])),
                Reason::DropIcmp,
            ),
        ];
        for (what, frame, reason) in cases {
            assert_eq!(classify_frame(&e, frame).err(), Some(*reason), "{what}");
        }
    }

    #[test]
    fn ipv4_header_checks_come_in_order() {
        let e = env();
        let good = ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 80, b""));
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut ip = good.clone();
            f(&mut ip);
            classify_frame(&e, &v4_frame(None, ip)).err()
        };
        assert_eq!(
            mutate(&|ip| ip[0] = 0x55),
            Some(Reason::DropMalformedIpv4),
            "version"
        );
        assert_eq!(
            mutate(&|ip| ip[0] = 0x44),
            Some(Reason::DropMalformedIpv4),
            "IHL 4"
        );
        assert_eq!(
            mutate(&|ip| ip[3] = 41 + 20),
            Some(Reason::DropMalformedIpv4),
            "too long"
        );
        assert_eq!(
            mutate(&|ip| ip[0] = 0x46),
            Some(Reason::DropIpv4Options),
            "options"
        );
        assert_eq!(mutate(&|ip| ip[6] = 0x20), Some(Reason::DropFragment), "MF");
        assert_eq!(
            mutate(&|ip| ip[7] = 1),
            Some(Reason::DropFragment),
            "offset"
        );
        // To another address, the same oddities pass to the kernel.
        let mut ip = good.clone();
        ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
        ip[0] = 0x46;
        assert_eq!(
            classify_frame(&e, &v4_frame(None, ip)).err(),
            Some(Reason::PassNotVip)
        );
        // A frame padded beyond the IP packet is fine; the IP length is the header's.
        let mut f = v4_frame(None, good);
        f.extend_from_slice(&[0; 6]);
        assert_eq!(classify_frame(&e, &f).unwrap().parsed.ip_len, 40);
    }

    #[test]
    fn every_port_entries_need_the_vip_flag() {
        let mut e = env();
        e.add_service(
            &VIP4,
            IPPROTO_TCP,
            0,
            ServiceValue {
                service_id: 9,
                ..WEB
            },
        );
        let frame = v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 8080, b"")));
        assert_eq!(
            classify_frame(&e, &frame).err(),
            Some(Reason::DropNoService)
        );
        e.add_vip(&VIP4, VipFlags::TCP_ALL_PORTS);
        assert_eq!(classify_frame(&e, &frame).unwrap().service.service_id, 9);
        let port80 = v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 80, b"")));
        assert_eq!(
            classify_frame(&e, &port80).unwrap().service.service_id,
            3,
            "the port's own entry first"
        );
        let udp = v4_frame(
            None,
            ipv4(CLIENT4, VIP4, 17, true, &[0, 1, 0, 2, 0, 8, 0, 0]),
        );
        assert_eq!(
            classify_frame(&e, &udp).err(),
            Some(Reason::DropNoService),
            "TCP's flag does not cover UDP"
        );
    }

    /// Hash-map lookups (`VIPS`, `SERVICES`) that classifying `frame` takes.
    fn lookups(e: &TestEnv, frame: &[u8]) -> (Result<u32, Reason>, u32) {
        *e.hash_lookups.borrow_mut() = 0;
        let r = classify_frame(e, frame).map(|c| c.service.service_id);
        (r, *e.hash_lookups.borrow())
    }

    #[test]
    fn a_packet_to_a_service_takes_one_hash_lookup() {
        let e = env();
        let v4 = v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 80, b"")));
        assert_eq!(lookups(&e, &v4), (Ok(3), 1), "SERVICES only");
        let v6 = v6_frame(ipv6(CLIENT6, VIP6, 6, &tcp(1, 443, b"")));
        assert_eq!(lookups(&e, &v6), (Ok(3), 1), "SERVICES only, IPv6");
        // Not a VIP and not sharing a VIP's filter bit: no hash lookup at all.
        let other = v4_frame(
            None,
            ipv4(CLIENT4, [192, 168, 35, 9], 6, true, &tcp(1, 80, b"")),
        );
        assert_eq!(lookups(&e, &other), (Err(Reason::PassNotVip), 0));
        let other6 = v6_frame(ipv6(CLIENT6, CLIENT6, 6, &tcp(1, 443, b"")));
        assert_eq!(lookups(&e, &other6), (Err(Reason::PassNotVip), 0));
        // A port without a service: the service misses, VIPS says it is a VIP.
        let port81 = v4_frame(None, ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 81, b"")));
        assert_eq!(lookups(&e, &port81), (Err(Reason::DropNoService), 2));
    }

    #[test]
    fn filter_false_positives_pass_as_any_other_address() {
        let e = env();
        let twin = filter_twin_v4(&VIP4);
        let twin6 = filter_twin_v6(&VIP6);
        let tcp4 = |dst, port| v4_frame(None, ipv4(CLIENT4, dst, 6, true, &tcp(1, port, b"")));
        // Well formed, to the port of a VIP's service: SERVICES misses, then VIPS.
        assert_eq!(lookups(&e, &tcp4(twin, 80)), (Err(Reason::PassNotVip), 2));
        let to_twin6 = v6_frame(ipv6(CLIENT6, twin6, 6, &tcp(1, 443, b"")));
        assert_eq!(lookups(&e, &to_twin6), (Err(Reason::PassNotVip), 2));
        // Stopped before its ports (a drop to a VIP): VIPS says it is none, so it passes.
        let mut options = ipv4(CLIENT4, twin, 6, true, &tcp(1, 80, b""));
        options[0] = 0x46;
        let mut fragment = ipv4(CLIENT4, twin, 6, true, &tcp(1, 80, b""));
        fragment[6] = 0x20;
        let cases: &[(&str, Vec<u8>)] = &[
            ("options", v4_frame(None, options)),
            ("fragment", v4_frame(None, fragment)),
            (
                "ICMP",
                v4_frame(
                    None,
                    ipv4(CLIENT4, twin, 1, false, &[8, 0, 0, 0, 0, 0, 0, 0]),
                ),
            ),
            (
                "GRE",
                v4_frame(None, ipv4(CLIENT4, twin, 47, false, &[0; 8])),
            ),
            (
                "TCP cut",
                v4_frame(None, ipv4(CLIENT4, twin, 6, false, &[0; 19])),
            ),
            (
                "IPv6 fragment",
                v6_frame(ipv6(CLIENT6, twin6, 44, &[0; 16])),
            ),
            (
                "IPv6 hop-by-hop",
                v6_frame(ipv6(CLIENT6, twin6, 0, &[0; 16])),
            ),
            ("ICMPv6", v6_frame(ipv6(CLIENT6, twin6, 58, &[0; 8]))),
        ];
        for (what, frame) in cases {
            assert_eq!(
                lookups(&e, frame),
                (Err(Reason::PassNotVip), 1),
                "{what} to a filter twin: one VIPS lookup, then pass"
            );
        }
        // The same frames to the VIP itself are dropped as before.
        let mut options = ipv4(CLIENT4, VIP4, 6, true, &tcp(1, 80, b""));
        options[0] = 0x46;
        assert_eq!(
            lookups(&e, &v4_frame(None, options)),
            (Err(Reason::DropIpv4Options), 1)
        );
        assert_eq!(
            lookups(&e, &v6_frame(ipv6(CLIENT6, VIP6, 44, &[0; 16]))),
            (Err(Reason::DropFragment), 1)
        );
    }

    #[test]
    fn a_vip_without_services_drops_what_it_receives() {
        let mut e = env();
        let lonely = [192, 168, 35, 250];
        e.add_vip(&lonely, VipFlags::EMPTY);
        let frame = v4_frame(
            None,
            ipv4(CLIENT4, lonely, 17, true, &[0, 1, 0, 53, 0, 8, 0, 0]),
        );
        assert_eq!(lookups(&e, &frame), (Err(Reason::DropNoService), 2));
        // IPv6: a VIP with an every-port flag but no port-0 entry yet (being written).
        let lonely6 = filter_twin_v6(&VIP6);
        e.add_vip(&lonely6, VipFlags::UDP_ALL_PORTS);
        let udp6 = v6_frame(ipv6(CLIENT6, lonely6, 17, &[0, 1, 0, 53, 0, 8, 0, 0]));
        assert_eq!(lookups(&e, &udp6), (Err(Reason::DropNoService), 3));
    }

    #[test]
    fn every_port_entries_are_the_fallback_of_a_miss() {
        let mut e = env();
        let all6 = ServiceValue {
            service_id: 12,
            ..WEB
        };
        e.add_service(&VIP6, IPPROTO_UDP, 0, all6);
        let udp6 = |port: u16| {
            let mut u = [0u8; 8];
            u[..2].copy_from_slice(&5353u16.to_be_bytes());
            u[2..4].copy_from_slice(&port.to_be_bytes());
            v6_frame(ipv6(CLIENT6, VIP6, 17, &u))
        };
        // VIP6's flags have UDP_ALL_PORTS: miss, VIPS, port-0 entry.
        assert_eq!(lookups(&e, &udp6(5000)), (Ok(12), 3));
        e.add_service(
            &VIP6,
            IPPROTO_UDP,
            5000,
            ServiceValue {
                service_id: 13,
                ..WEB
            },
        );
        assert_eq!(
            lookups(&e, &udp6(5000)),
            (Ok(13), 1),
            "the port's own entry"
        );
        assert_eq!(lookups(&e, &udp6(5001)), (Ok(12), 3));
        // TCP to VIP6 has no every-port flag: the port-0 entry is not looked up.
        let tcp6 = v6_frame(ipv6(CLIENT6, VIP6, 6, &tcp(1, 444, b"")));
        assert_eq!(lookups(&e, &tcp6), (Err(Reason::DropNoService), 2));
    }
}
