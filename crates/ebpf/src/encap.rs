//! Encapsulation towards the chosen server, with the next hop's MACs in front: IPv4-in-IPv4
//! (RFC 2003) or IPv6-in-IPv6 (RFC 2473), GRE (RFC 2784) or GUE "variant 1" (UDP, then the
//! inner packet), as the service's flags say. The outer family is the inner one's.

use core::mem::size_of;

use ricochet_common::{
    hash::client_hash, limits, Reason, ServiceFlags, ServiceValue, Settings, FAMILY_V4, FAMILY_V6,
};

use crate::{
    csum,
    flow::Pick,
    headers::*,
    packet::{ptr_at, XdpPacket},
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
}

impl Tunnel {
    /// The tunnel `svc`'s flags name.
    #[inline(always)]
    pub fn of(svc: &ServiceValue) -> Self {
        if svc.flags.contains(ServiceFlags::ENCAP_GUE) {
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
            Tunnel::IpInIp => 0,
            Tunnel::Gre => GRE_LEN,
            Tunnel::Gue { .. } => UDP_LEN,
        }
    }

    /// The outer IP protocol (next header) for an inner packet of protocol `ipip`.
    #[inline(always)]
    const fn outer_proto(self, ipip: u8) -> u8 {
        match self {
            Tunnel::IpInIp => ipip,
            Tunnel::Gre => IPPROTO_GRE,
            Tunnel::Gue { .. } => IPPROTO_UDP,
        }
    }
}

/// An outer IP header and the tunnel header after it, written in one store sequence.
#[repr(C)]
#[derive(Clone, Copy)]
struct Stacked<I: Copy, T: Copy> {
    ip: I,
    tunnel: T,
}

/// The GUE UDP source port of a flow whose hash is `h`: in the dynamic range (49152 to
/// 65535, RFC 6335), so that it is never 0 nor a service's port, and different for
/// different flows, which is what a server's RSS spreads over its queues.
#[inline(always)]
pub const fn gue_source_port(h: u32) -> u16 {
    0xc000 | ((h >> 16) as u16 & 0x3fff)
}

/// The GRE header in front of an inner packet of EtherType `ether_type`.
#[inline(always)]
const fn gre(ether_type: u16) -> GreHdr {
    GreHdr {
        flags_version: [0, 0],
        proto: ether_type.to_be_bytes(),
    }
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

/// `bpf_get_prandom_u32()`.
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
    unsafe { *new_type = *old_type };
    if l3_off == ETH_LEN + VLAN_LEN {
        let old_tag = ptr_at::<[u8; 4]>(ctx, shift + ETH_LEN)?;
        let new_tag = ptr_at::<[u8; 4]>(ctx, ETH_LEN)?;
        // SAFETY: as above.
        unsafe { *new_tag = *old_tag };
    }
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked.
    unsafe {
        (*eth).dst = dmac;
        (*eth).src = smac;
    }
    Some(())
}

/// Prepends `outer` (the IPv4 or IPv6 outer header and any tunnel header) at `l3_off`, moving the L2 header
/// in front of it with the next hop's MACs; the frame is then to leave by `ifindex`.
#[inline(always)]
fn push_outer<H: Copy>(
    ctx: &impl XdpPacket,
    l3_off: usize,
    outer: H,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
) -> Result<Next, Reason> {
    let len = size_of::<H>();
    ctx.adjust_head(-(len as i32))
        .map_err(|_| Reason::DropAdjustFailed)?;
    write_l2(ctx, l3_off, len, dmac, smac).ok_or(Reason::DropAdjustFailed)?;
    let o = ptr_at::<H>(ctx, l3_off).ok_or(Reason::DropAdjustFailed)?;
    // SAFETY: bounds checked.
    unsafe { *o = outer };
    Ok(Next::Forward { ifindex })
}

/// Encapsulates an IPv4 packet to `server` in its service's tunnel; `Next::TooBig` (with
/// the MTU left to the inner packet) when the outer packet exceeds the route's MTU and
/// the inner one has DF set (without DF: dropped).
// A subprogram of its own: inlined, its stack would add to the caller's 512 bytes. Five
// arguments at most (BPF calls pass them in R1-R5).
#[inline(never)]
pub fn encap_v4(
    ctx: &impl XdpPacket,
    env: &(impl Fib + Random),
    p: &Parsed,
    s: &Settings,
    pick: &Pick,
) -> Result<Next, Reason> {
    let (server_id, server, tunnel) = (pick.server_id, &pick.server, pick.tunnel);
    let inner = ptr_at::<Ipv4Hdr>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv4)?;
    // SAFETY: bounds checked.
    let inner = unsafe { *inner };
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&s.source_v4);
    let overhead = IPV4_LEN + tunnel.header_len();
    let outer_len = p.ip_len as u32 + overhead as u32;
    if outer_len > 0xffff {
        return Err(Reason::DropTooBig);
    }
    let (ifindex, smac, dmac) = match route(
        env,
        ctx.ingress_ifindex(),
        FAMILY_V4,
        &src,
        server_id,
        server,
        outer_len as u16,
        inner.tos as u32,
    ) {
        Route::Via {
            ifindex,
            smac,
            dmac,
        } => (ifindex, smac, dmac),
        Route::TooBig { mtu } => {
            if inner.frag() & IP_DF == 0 {
                return Err(Reason::DropTooBig);
            }
            return Ok(Next::TooBig {
                mtu: mtu.saturating_sub(overhead as u16),
            });
        }
        Route::Fail(r) => return Err(r),
    };
    let mut outer = outer_v4(
        &inner,
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
    if inner.frag() & IP_DF == 0 {
        // The outer packet may be fragmented on the way: it needs an ID that differs
        // from its neighbours' (RFC 6864). DF packets keep 0, which RFC 6864 allows.
        outer.set_id(env.prandom_u32() as u16);
    }
    let l3_off = p.l3_off;
    match tunnel {
        Tunnel::IpInIp => push_outer(ctx, l3_off, outer, ifindex, smac, dmac),
        Tunnel::Gre => {
            let outer = Stacked {
                ip: outer,
                tunnel: gre(ETH_P_IP),
            };
            push_outer(ctx, l3_off, outer, ifindex, smac, dmac)
        }
        Tunnel::Gue { port } => {
            let h = client_hash(&p.src, p.sport, true, s.hash_seed);
            let outer = Stacked {
                ip: outer,
                tunnel: gue_udp(gue_source_port(h), port, p.ip_len),
            };
            push_outer(ctx, l3_off, outer, ifindex, smac, dmac)
        }
    }
}

/// Encapsulates an IPv6 packet to `server` in its service's tunnel, with the client's flow
/// hash as the outer flow label; `Next::TooBig` (with the MTU left to the inner packet)
/// when the outer packet exceeds the route's MTU.
// A subprogram of its own: inlined, its stack would add to the caller's 512 bytes. Five
// arguments at most (BPF calls pass them in R1-R5).
#[inline(never)]
pub fn encap_v6(
    ctx: &impl XdpPacket,
    env: &(impl Fib + Random),
    p: &Parsed,
    s: &Settings,
    pick: &Pick,
) -> Result<Next, Reason> {
    let (server_id, server, tunnel) = (pick.server_id, &pick.server, pick.tunnel);
    let inner = ptr_at::<Ipv6Hdr>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv6)?;
    // SAFETY: bounds checked.
    let inner = unsafe { *inner };
    let overhead = IPV6_LEN + tunnel.header_len();
    let outer_len = p.ip_len as u32 + overhead as u32;
    if outer_len > 0xffff {
        return Err(Reason::DropTooBig);
    }
    let h = client_hash(&p.src, p.sport, true, s.hash_seed);
    let flow_label = h & 0x000f_ffff;
    let flowinfo = (inner.traffic_class() as u32) << 20 | flow_label;
    let (ifindex, smac, dmac) = match route(
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
                mtu: mtu.saturating_sub(overhead as u16),
            })
        }
        Route::Fail(r) => return Err(r),
    };
    let outer = outer_v6(
        &inner,
        s.source_v6,
        server.addr,
        flow_label,
        limits::OUTER_TTL,
        tunnel.outer_proto(IPPROTO_IPV6),
        tunnel.header_len() as u16,
    );
    let l3_off = p.l3_off;
    match tunnel {
        Tunnel::IpInIp => push_outer(ctx, l3_off, outer, ifindex, smac, dmac),
        Tunnel::Gre => {
            let outer = Stacked {
                ip: outer,
                tunnel: gre(ETH_P_IPV6),
            };
            push_outer(ctx, l3_off, outer, ifindex, smac, dmac)
        }
        Tunnel::Gue { port } => {
            let mut udp = gue_udp(gue_source_port(h), port, p.ip_len);
            // IPv6 has no UDP checksum of 0 (RFC 8200) unless the receiving socket
            // opted in (RFC 6936); fou and the decapsulator get a real one.
            udp.check = csum::gue_v6(&outer.src, &outer.dst, &udp, &inner).to_be_bytes();
            let outer = Stacked {
                ip: outer,
                tunnel: udp,
            };
            push_outer(ctx, l3_off, outer, ifindex, smac, dmac)
        }
    }
}
