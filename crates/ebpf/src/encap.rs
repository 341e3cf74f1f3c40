//! Encapsulation towards the chosen server, with the next hop's MACs in front: IPv4-in-IPv4
//! (RFC 2003) or IPv6-in-IPv6 (RFC 2473), GRE (RFC 2784) or GUE "variant 1" (UDP, then the
//! inner packet), as the service's flags say. The outer family is the inner one's.

use ricochet_common::{
    hash::client_hash, limits, Reason, ServiceFlags, ServiceValue, Settings, FAMILY_V4, FAMILY_V6,
};

use crate::{
    csum,
    flow::Pick,
    headers::*,
    packet::{load_u16, load_u32, ptr_at, store_u16, store_u32, PacketCtx, XdpPacket},
    parse::Parsed,
    route::{route, Fib, Route},
    verdict::Next,
};

/// What a service's packets travel in between the outer IP header and themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// Nothing: IP-in-IP.
    IpInIp,
    /// A 4-byte GRE header.
    Gre,
    /// A UDP header to this destination port (big endian).
    Gue { port: [u8; 2] },
    /// None at all: L2 DSR, the frame to the server's MAC ([`forward_l2`]).
    L2,
}

impl Tunnel {
    /// The tunnel `svc`'s flags name.
    #[inline(always)]
    pub fn of(svc: &ServiceValue) -> Self {
        if svc.flags.contains(ServiceFlags::L2_DSR) {
            Tunnel::L2
        } else if svc.flags.contains(ServiceFlags::ENCAP_GUE) {
            Tunnel::Gue { port: svc.gue_port }
        } else if svc.flags.contains(ServiceFlags::ENCAP_GRE) {
            Tunnel::Gre
        } else {
            Tunnel::IpInIp
        }
    }

    /// The bytes it adds between the outer IP header and the inner packet.
    #[inline(always)]
    pub const fn header_len(self) -> usize {
        match self {
            Tunnel::IpInIp | Tunnel::L2 => 0,
            Tunnel::Gre => GRE_LEN,
            Tunnel::Gue { .. } => UDP_LEN,
        }
    }

    /// The outer IP protocol (next header) for an inner packet of protocol `ipip`.
    #[inline(always)]
    const fn outer_proto(self, ipip: u8) -> u8 {
        match self {
            Tunnel::IpInIp | Tunnel::L2 => ipip,
            Tunnel::Gre => IPPROTO_GRE,
            Tunnel::Gue { .. } => IPPROTO_UDP,
        }
    }
}

/// The tunnel header that follows the outer IP header: `len` (0, 4 or 8) bytes, as the
/// words that hold them in memory (see [`outer_v4_words`]).
#[derive(Clone, Copy)]
struct TunnelHdr {
    len: usize,
    words: [u32; 2],
}

impl TunnelHdr {
    const NONE: TunnelHdr = TunnelHdr {
        len: 0,
        words: [0; 2],
    };

    /// The GRE header (flags and version 0) in front of an inner packet of `ether_type`.
    #[inline(always)]
    const fn gre(ether_type: u16) -> Self {
        let t = ether_type.to_be_bytes();
        TunnelHdr {
            len: GRE_LEN,
            words: [u32::from_ne_bytes([0, 0, t[0], t[1]]), 0],
        }
    }

    /// The UDP header of GUE.
    #[inline(always)]
    const fn udp(h: UdpHdr) -> Self {
        TunnelHdr {
            len: UDP_LEN,
            words: [
                u32::from_ne_bytes([h.src[0], h.src[1], h.dst[0], h.dst[1]]),
                u32::from_ne_bytes([h.len[0], h.len[1], h.check[0], h.check[1]]),
            ],
        }
    }
}

/// The GUE UDP source port of a flow whose hash is `h`: in the dynamic range (49152 to
/// 65535, RFC 6335), so that it is never 0 nor a service's port, and different for
/// different flows, which is what a server's RSS spreads over its queues.
#[inline(always)]
pub const fn gue_source_port(h: u32) -> u16 {
    0xc000 | ((h >> 16) as u16 & 0x3fff)
}

/// The UDP header of GUE for an inner packet of `inner_len` bytes, its checksum left 0
/// (IPv4 allows it; IPv6 GUE fills it in, see `csum::gue_v6`).
#[inline(always)]
const fn gue_udp(sport: u16, dport: [u8; 2], inner_len: u16) -> UdpHdr {
    UdpHdr {
        src: sport.to_be_bytes(),
        dst: dport,
        len: (inner_len + UDP_LEN as u16).to_be_bytes(),
        check: [0, 0],
    }
}

/// The client's hash with its port, as the flow label and the GUE source port use it:
/// the pick's when it computed one.
#[inline(always)]
fn port_hash(p: &Parsed, s: &Settings, pick: &Pick) -> u32 {
    match pick.port_hash {
        Some(h) => h,
        None => client_hash(&p.src, p.sport, true, s.hash_seed),
    }
}

/// A pseudo-random number per call: [`crate::random::prandom_u32`] in the kernel.
pub trait Random {
    fn prandom_u32(&self) -> u32;
}

/// Writes the new Ethernet header at the front of a packet whose old L2 header now
/// sits `shift` (>= 20) bytes further in, keeping its EtherType and VLAN tag.
#[inline(always)]
pub fn write_l2(
    ctx: &impl XdpPacket,
    l3_off: usize,
    shift: usize,
    dmac: [u8; 6],
    smac: [u8; 6],
) -> Option<()> {
    let old_type = ptr_at::<[u8; 2]>(ctx, shift + 12)?;
    let new_type = ptr_at::<[u8; 2]>(ctx, 12)?;
    // SAFETY: bounds checked; the regions do not overlap since shift >= 20.
    unsafe { store_u16(new_type.cast(), load_u16(old_type.cast())) };
    if l3_off == ETH_LEN + VLAN_LEN {
        let old_tag = ptr_at::<[u8; 4]>(ctx, shift + ETH_LEN)?;
        let new_tag = ptr_at::<[u8; 4]>(ctx, ETH_LEN)?;
        // SAFETY: as above.
        unsafe { store_u32(new_tag.cast(), load_u32(old_tag.cast())) };
    }
    write_macs(ctx, dmac, smac)
}

/// Writes the Ethernet destination and source addresses (six stores, not twelve).
#[inline(always)]
pub fn write_macs(ctx: &impl PacketCtx, dmac: [u8; 6], smac: [u8; 6]) -> Option<()> {
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    let p = eth.cast::<u8>();
    // SAFETY: bounds checked: twelve bytes.
    unsafe {
        store_u32(p, u32::from_ne_bytes([dmac[0], dmac[1], dmac[2], dmac[3]]));
        store_u16(p.add(4), u16::from_ne_bytes([dmac[4], dmac[5]]));
        store_u16(p.add(6), u16::from_ne_bytes([smac[0], smac[1]]));
        store_u32(
            p.add(8),
            u32::from_ne_bytes([smac[2], smac[3], smac[4], smac[5]]),
        );
    }
    Some(())
}

/// Prepends `outer` (the IPv4 or IPv6 outer header, as its words) and `tunnel` at
/// `l3_off`, moving the L2 header in front of them with the next hop's MACs; the frame
/// is then to leave by `ifindex`. One instance per family whatever the tunnel: a copy
/// per tunnel kind would take a stack slot of its own for each, past the verifier's 512
/// bytes.
#[inline(always)]
fn push_outer<const N: usize>(
    ctx: &impl XdpPacket,
    l3_off: usize,
    outer: [u32; N],
    tunnel: TunnelHdr,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
) -> Result<Next, Reason> {
    let ip_len = 4 * N;
    let len = ip_len + tunnel.len;
    ctx.adjust_head(-(len as i32))
        .map_err(|_| Reason::DropAdjustFailed)?;
    write_l2(ctx, l3_off, len, dmac, smac).ok_or(Reason::DropAdjustFailed)?;
    // The pointer's type is for the bounds check only: the words are stored one by one
    // at offsets of unknown alignment.
    let o = ptr_at::<[u32; N]>(ctx, l3_off)
        .ok_or(Reason::DropAdjustFailed)?
        .cast::<u8>();
    for (i, w) in outer.iter().enumerate() {
        // SAFETY: bounds checked: 4 * N bytes.
        unsafe { store_u32(o.add(4 * i), *w) };
    }
    let [w0, w1] = tunnel.words;
    if tunnel.len == GRE_LEN {
        let t = ptr_at::<[u8; GRE_LEN]>(ctx, l3_off + ip_len).ok_or(Reason::DropAdjustFailed)?;
        // SAFETY: bounds checked.
        unsafe { store_u32(t.cast(), w0) };
    } else if tunnel.len == UDP_LEN {
        let t = ptr_at::<[u8; UDP_LEN]>(ctx, l3_off + ip_len).ok_or(Reason::DropAdjustFailed)?;
        // SAFETY: bounds checked.
        unsafe {
            store_u32(t.cast(), w0);
            store_u32(t.cast::<u8>().add(4), w1);
        }
    }
    Ok(Next::Forward { ifindex })
}

/// Encapsulates an IPv4 packet to `server` in its service's tunnel; `Next::TooBig` (with
/// the MTU left to the inner packet) when the outer packet exceeds the route's MTU and
/// the inner one has DF set (without DF: dropped).
// Inlined into `balance` (no BPF-to-BPF call per packet); the three encapsulations sit on
// exclusive branches, so their stack slots overlap in `balance`'s frame.
#[inline(always)]
pub fn encap_v4(
    ctx: &impl XdpPacket,
    env: &(impl Fib + Random),
    p: &Parsed,
    s: &Settings,
    pick: &Pick,
) -> Result<Next, Reason> {
    let (server_id, server, tunnel) = (pick.server_id, &pick.server, pick.tunnel);
    let inner = ptr_at::<Ipv4Hdr>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv4)?;
    // SAFETY: bounds checked. Two fields, not a copy of the header: stack is scarce.
    let (tos, df) = unsafe { ((*inner).tos, (*inner).frag() & IP_DF != 0) };
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&s.source_v4);
    let overhead = IPV4_LEN + tunnel.header_len();
    let outer_len = p.ip_len as u32 + overhead as u32;
    if outer_len > 0xffff {
        return Err(Reason::DropTooBig);
    }
    let (ifindex, smac, dmac) = match route::<false>(
        env,
        ctx.ingress_ifindex(),
        FAMILY_V4,
        &src,
        server_id,
        server,
        outer_len as u16,
        tos as u32,
    ) {
        Route::Via {
            ifindex,
            smac,
            dmac,
        } => (ifindex, smac, dmac),
        Route::TooBig { mtu } => {
            if !df {
                return Err(Reason::DropTooBig);
            }
            return Ok(Next::TooBig {
                mtu: mtu.saturating_sub(overhead as u16) as u32,
            });
        }
        Route::Fail(r) => return Err(r),
    };
    // A packet without DF may be fragmented on the way: its outer header needs an ID
    // that differs from its neighbours' (RFC 6864). DF packets keep 0, which RFC 6864
    // allows.
    let id = if df { 0 } else { env.prandom_u32() as u16 };
    let outer = outer_v4_words(
        tos,
        df,
        id,
        p.ip_len,
        s.source_v4,
        [
            server.addr[0],
            server.addr[1],
            server.addr[2],
            server.addr[3],
        ],
        limits::OUTER_TTL,
        tunnel.outer_proto(IPPROTO_IPIP),
        tunnel.header_len() as u16,
    );
    let hdr = match tunnel {
        Tunnel::IpInIp | Tunnel::L2 => TunnelHdr::NONE,
        Tunnel::Gre => TunnelHdr::gre(ETH_P_IP),
        Tunnel::Gue { port } => {
            let h = port_hash(p, s, pick);
            TunnelHdr::udp(gue_udp(gue_source_port(h), port, p.ip_len))
        }
    };
    push_outer(ctx, p.l3_off, outer, hdr, ifindex, smac, dmac)
}

/// Encapsulates an IPv6 packet to `server` in its service's tunnel, with the client's flow
/// hash as the outer flow label; `Next::TooBig` (with the MTU left to the inner packet)
/// when the outer packet exceeds the route's MTU.
// Inlined into `balance` (no BPF-to-BPF call per packet); the three encapsulations sit on
// exclusive branches, so their stack slots overlap in `balance`'s frame.
#[inline(always)]
pub fn encap_v6(
    ctx: &impl XdpPacket,
    env: &(impl Fib + Random),
    p: &Parsed,
    s: &Settings,
    pick: &Pick,
) -> Result<Next, Reason> {
    let (server_id, server, tunnel) = (pick.server_id, &pick.server, pick.tunnel);
    let vtc = ptr_at::<[u8; 2]>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv6)?;
    // SAFETY: bounds checked.
    let traffic_class = unsafe { ((*vtc)[0] << 4) | ((*vtc)[1] >> 4) };
    let overhead = IPV6_LEN + tunnel.header_len();
    let outer_len = p.ip_len as u32 + overhead as u32;
    if outer_len > 0xffff {
        return Err(Reason::DropTooBig);
    }
    let h = port_hash(p, s, pick);
    let flow_label = h & 0x000f_ffff;
    let flowinfo = (traffic_class as u32) << 20 | flow_label;
    let (ifindex, smac, dmac) = match route::<false>(
        env,
        ctx.ingress_ifindex(),
        FAMILY_V6,
        &s.source_v6,
        server_id,
        server,
        outer_len as u16,
        flowinfo.to_be(),
    ) {
        Route::Via {
            ifindex,
            smac,
            dmac,
        } => (ifindex, smac, dmac),
        Route::TooBig { mtu } => {
            return Ok(Next::TooBig {
                mtu: mtu.saturating_sub(overhead as u16) as u32,
            })
        }
        Route::Fail(r) => return Err(r),
    };
    let outer = outer_v6_words(
        traffic_class,
        p.ip_len,
        &s.source_v6,
        &server.addr,
        flow_label,
        limits::OUTER_TTL,
        tunnel.outer_proto(IPPROTO_IPV6),
        tunnel.header_len() as u16,
    );
    let hdr = match tunnel {
        Tunnel::IpInIp | Tunnel::L2 => TunnelHdr::NONE,
        Tunnel::Gre => TunnelHdr::gre(ETH_P_IPV6),
        // The checksum is left to `fill_gue_v6_checksum`, once the packet is in place.
        Tunnel::Gue { port } => TunnelHdr::udp(gue_udp(gue_source_port(h), port, p.ip_len)),
    };
    let next = push_outer(ctx, p.l3_off, outer, hdr, ifindex, smac, dmac)?;
    if let Tunnel::Gue { .. } = tunnel {
        fill_gue_v6_checksum(ctx, p.l3_off);
    }
    Ok(next)
}

/// Fills in the UDP checksum of an IPv6 GUE packet [`encap_v6`] wrote at `l3_off`: IPv6 has
/// no UDP checksum of 0 (RFC 8200) unless the receiving socket opted in (RFC 6936), and
/// `fou` and the decapsulator get a real one. Computed from the headers in the packet,
/// once written: from the stack copies, they would all stay live at once, past the
/// verifier's 512 bytes for the call chain.
#[inline(always)]
pub fn fill_gue_v6_checksum(ctx: &impl XdpPacket, l3_off: usize) {
    // [`push_outer`] wrote all three: the checks cannot fail, they are the verifier's.
    let (Some(outer), Some(udp), Some(inner)) = (
        ptr_at::<Ipv6Hdr>(ctx, l3_off),
        ptr_at::<UdpHdr>(ctx, l3_off + IPV6_LEN),
        ptr_at::<Ipv6Hdr>(ctx, l3_off + IPV6_LEN + UDP_LEN),
    ) else {
        return;
    };
    // SAFETY: bounds checked; the three do not overlap.
    unsafe {
        let check = csum::gue_v6(&(*outer).src, &(*outer).dst, &*udp, &*inner);
        (*udp).check = check.to_be_bytes();
    }
}

/// L2 DSR: sends the frame to `server`'s MAC address, the IP packet untouched (IPVS's
/// direct routing): the server must be the next hop itself, on a segment of the engine
/// ([`Reason::DropL2NotOnLink`] otherwise); `Next::TooBig` when the packet exceeds the
/// egress MTU (a smaller one than the ingress's). The Ethernet addresses are rewritten
/// in place; a VLAN tag stays.
#[inline(always)]
pub fn forward_l2(
    ctx: &impl XdpPacket,
    env: &impl Fib,
    p: &Parsed,
    s: &Settings,
    pick: &Pick,
) -> Result<Next, Reason> {
    let mut src = [0u8; 16];
    if p.family == FAMILY_V4 {
        src[..4].copy_from_slice(&s.source_v4);
    } else {
        src = s.source_v6;
    }
    let (ifindex, smac, dmac) = match route::<true>(
        env,
        ctx.ingress_ifindex(),
        p.family,
        &src,
        pick.server_id,
        &pick.server,
        p.ip_len,
        0,
    ) {
        Route::Via {
            ifindex,
            smac,
            dmac,
        } => (ifindex, smac, dmac),
        Route::TooBig { mtu } => {
            if p.family == FAMILY_V4 {
                let ip = ptr_at::<Ipv4Hdr>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv4)?;
                // SAFETY: bounds checked.
                if unsafe { (*ip).frag() } & IP_DF == 0 {
                    return Err(Reason::DropTooBig);
                }
            }
            return Ok(Next::TooBig { mtu: mtu as u32 });
        }
        Route::Fail(r) => return Err(r),
    };
    write_macs(ctx, dmac, smac).ok_or(Reason::DropAdjustFailed)?;
    Ok(Next::Forward { ifindex })
}
