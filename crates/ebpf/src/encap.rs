//! Encapsulation: IPv4-in-IPv4 (RFC 2003) and IPv6-in-IPv6 (RFC 2473) towards the
//! chosen server, with the next hop's MACs in front.

use core::mem::size_of;

use ricochet_common::{hash::client_hash, limits, Reason, Settings, FAMILY_V4, FAMILY_V6};

use crate::{
    flow::Pick,
    headers::*,
    packet::{ptr_at, XdpPacket},
    parse::Parsed,
    route::{route, Fib, Route},
    verdict::Next,
};

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

/// Prepends `outer` (the IPv4 or IPv6 outer header) at `l3_off`, moving the L2 header
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

/// Encapsulates an IPv4 packet to `server`; `Next::TooBig` when the outer packet
/// exceeds the route's MTU and the inner one has DF set (without DF: dropped).
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
    let (server_id, server) = (pick.server_id, &pick.server);
    let inner = ptr_at::<Ipv4Hdr>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv4)?;
    // SAFETY: bounds checked.
    let inner = unsafe { *inner };
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&s.source_v4);
    let outer_len = p.ip_len as u32 + IPV4_LEN as u32;
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
            return Ok(Next::TooBig { mtu });
        }
        Route::Fail(r) => return Err(r),
    };
    let mut outer = ipip_outer_v4(
        &inner,
        s.source_v4,
        [
            server.addr[0],
            server.addr[1],
            server.addr[2],
            server.addr[3],
        ],
        limits::OUTER_TTL,
    );
    if inner.frag() & IP_DF == 0 {
        // The outer packet may be fragmented on the way: it needs an ID that differs
        // from its neighbours' (RFC 6864). DF packets keep 0, which RFC 6864 allows.
        outer.set_id(env.prandom_u32() as u16);
    }
    push_outer(ctx, p.l3_off, outer, ifindex, smac, dmac)
}

/// Encapsulates an IPv6 packet to `server`, with the client's flow hash as the outer
/// flow label; `Next::TooBig` when the outer packet exceeds the route's MTU.
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
    let (server_id, server) = (pick.server_id, &pick.server);
    let inner = ptr_at::<Ipv6Hdr>(ctx, p.l3_off).ok_or(Reason::DropMalformedIpv6)?;
    // SAFETY: bounds checked.
    let inner = unsafe { *inner };
    let outer_len = p.ip_len as u32 + IPV6_LEN as u32;
    if outer_len > 0xffff {
        return Err(Reason::DropTooBig);
    }
    let flow_label = client_hash(&p.src, p.sport, true, s.hash_seed) & 0x000f_ffff;
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
        Route::TooBig { mtu } => return Ok(Next::TooBig { mtu }),
        Route::Fail(r) => return Err(r),
    };
    let outer = ipip_outer_v6(
        &inner,
        s.source_v6,
        server.addr,
        flow_label,
        limits::OUTER_TTL,
    );
    push_outer(ctx, p.l3_off, outer, ifindex, smac, dmac)
}
