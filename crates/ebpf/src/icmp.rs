//! ICMP "fragmentation needed" (IPv4, RFC 1191) and ICMPv6 "packet too big" (RFC 8201)
//! answers to clients whose packets would exceed the route's MTU once encapsulated.
//!
//! The packet itself becomes the error: its head grows by the new IP and ICMP headers,
//! its tail is cut so that only the quote (the offending IP header and 8 bytes of its
//! payload, enough for the client to find the socket) follows, and it goes back out of
//! the interface it came in on.
//!
//! Errors are never sent to a multicast, broadcast or unspecified source, and each CPU
//! sends at most `limits::ICMP_TOO_BIG_PER_SEC` of them per second on average (a token
//! bucket of `limits::ICMP_TOO_BIG_BURST`), as RFC 4443 2.4(e)-(f) requires of ICMPv6
//! and RFC 1122 3.2.2 of ICMP; every case is counted under its own reason.

use ricochet_common::{limits, Reason, TokenBucket, FAMILY_V4};

use crate::{
    csum,
    encap::write_l2,
    headers::*,
    packet::{ptr_at, XdpPacket},
    parse::Parsed,
};

/// Bytes of the offending packet quoted in an ICMP error: its IP header and the
/// first 8 bytes of its payload (RFC 792, RFC 1191), enough to find the socket.
pub const QUOTE_V4: usize = IPV4_LEN + 8;
pub const QUOTE_V6: usize = IPV6_LEN + 8;

/// The rate limiter's kernel services.
pub trait Limiter {
    /// `bpf_ktime_get_ns()`.
    fn now_ns(&self) -> u64;
    /// This CPU's `ICMP_BUCKETS` entry. The pointer is valid for the rest of the program
    /// run, and no one else writes the entry meanwhile (per CPU).
    fn bucket(&self) -> Option<*mut TokenBucket>;
}

/// Why an error must not be sent to `src` (16-byte map form), if it must not.
#[inline(always)]
pub fn bad_source(src: &[u8; 16], family: u8) -> Option<Reason> {
    if family == FAMILY_V4 {
        let a = [src[0], src[1], src[2], src[3]];
        if a == [0, 0, 0, 0] {
            Some(Reason::DropTooBigUnspecifiedSource)
        } else if a == [255, 255, 255, 255] {
            Some(Reason::DropTooBigBroadcastSource)
        } else if a[0] & 0xf0 == 0xe0 {
            Some(Reason::DropTooBigMulticastSource)
        } else {
            None
        }
    } else if src[0] == 0xff {
        Some(Reason::DropTooBigMulticastSource)
    } else if u128::from_ne_bytes(*src) == 0 {
        Some(Reason::DropTooBigUnspecifiedSource)
    } else {
        None
    }
}

/// Spends one error from this CPU's budget: `Err` when it is spent (or the bucket is
/// missing, which a loaded program never sees).
#[inline(always)]
pub fn take_token(env: &impl Limiter) -> Result<(), Reason> {
    let bucket = env.bucket().ok_or(Reason::DropTooBigRateLimited)?;
    let now = env.now_ns();
    // SAFETY: per-CPU entry, no concurrent writer on this CPU (see `Limiter::bucket`).
    if unsafe { (*bucket).take(now) } {
        Ok(())
    } else {
        Err(Reason::DropTooBigRateLimited)
    }
}

/// Answers a packet whose encapsulation exceeds the route's MTU: unless its source must
/// not get an error or the budget is spent, turns it into the family's "too big" error
/// advertising `inner_mtu`, the route's MTU less the encapsulation overhead. [`Reason::IcmpTooBig`]
/// when it is ready to go back, otherwise why not.
#[inline(always)]
pub fn too_big(ctx: &impl XdpPacket, env: &impl Limiter, p: &Parsed, inner_mtu: u16) -> Reason {
    if let Some(r) = bad_source(&p.src, p.family) {
        return r;
    }
    if let Err(r) = take_token(env) {
        return r;
    }
    let sent = if p.family == FAMILY_V4 {
        too_big_v4(ctx, p.l3_off, p.frame_len, inner_mtu)
    } else {
        too_big_v6(ctx, p.l3_off, p.frame_len, inner_mtu)
    };
    match sent {
        Ok(()) => Reason::IcmpTooBig,
        Err(r) => r,
    }
}

/// Resizes the packet for an ICMP error: grows the head by `shift` (the new IP and
/// ICMP headers) and cuts the tail so that only the quote follows. Returns the old
/// Ethernet header, read before its bytes get overwritten.
#[inline(always)]
fn resize(
    ctx: &impl XdpPacket,
    l3_off: usize,
    frame_len: u32,
    shift: usize,
    quote: usize,
) -> Result<EthHdr, Reason> {
    ctx.adjust_head(-(shift as i32))
        .map_err(|_| Reason::DropAdjustFailed)?;
    let new_len = l3_off + shift + quote;
    // The verifier forbids arithmetic on data_end, so the length comes from the parser.
    let cur_len = frame_len as usize + shift;
    ctx.adjust_tail(new_len as i32 - cur_len as i32)
        .map_err(|_| Reason::DropAdjustFailed)?;
    let old_eth = ptr_at::<EthHdr>(ctx, shift).ok_or(Reason::DropAdjustFailed)?;
    // SAFETY: bounds checked; copied out.
    Ok(unsafe { *old_eth })
}

/// Turns the packet into an ICMP "fragmentation needed" from the VIP to the client.
///
/// Layout after the rewrite: [L2][IPv4][ICMP][quoted IPv4 header + 8 bytes]. The
/// quote is the packet's own header, already in place once the head grows by
/// IPv4 + ICMP and the old L2 header's bytes are overwritten.
#[inline(never)]
fn too_big_v4(
    ctx: &impl XdpPacket,
    l3_off: usize,
    frame_len: u32,
    inner_mtu: u16,
) -> Result<(), Reason> {
    let shift = IPV4_LEN + ICMP_LEN;
    let old_eth = resize(ctx, l3_off, frame_len, shift, QUOTE_V4)?;
    let quote = ptr_at::<Ipv4Hdr>(ctx, shift + l3_off).ok_or(Reason::DropAdjustFailed)?;
    let (client_mac, my_mac) = (old_eth.src, old_eth.dst);
    // SAFETY: bounds checked; copied before the old L2 header is overwritten.
    let (client, vip) = unsafe { ((*quote).src, (*quote).dst) };
    write_l2(ctx, l3_off, shift, client_mac, my_mac).ok_or(Reason::DropAdjustFailed)?;
    let mut ip = Ipv4Hdr {
        ver_ihl: 0x45,
        tos: 0xc0, // network control, as routers send ICMP errors
        tot_len: ((shift + QUOTE_V4) as u16).to_be_bytes(),
        id: [0, 0],
        frag_off: [0, 0],
        ttl: limits::OUTER_TTL,
        proto: IPPROTO_ICMP,
        check: [0, 0],
        src: vip,
        dst: client,
    };
    ip.check = csum::ipv4_header(&ip).to_be_bytes();
    let mtu = inner_mtu;
    let (Some(ip_p), Some(icmp_p)) = (
        ptr_at::<Ipv4Hdr>(ctx, l3_off),
        ptr_at::<IcmpHdr>(ctx, l3_off + IPV4_LEN),
    ) else {
        return Err(Reason::DropAdjustFailed);
    };
    // SAFETY: bounds checked.
    unsafe {
        *ip_p = ip;
        *icmp_p = IcmpHdr {
            kind: ICMP_DEST_UNREACH,
            code: ICMP_FRAG_NEEDED,
            check: [0, 0],
            rest: [0, 0, (mtu >> 8) as u8, mtu as u8],
        };
    }
    let body = ptr_at::<[u8; ICMP_LEN + QUOTE_V4]>(ctx, l3_off + IPV4_LEN)
        .ok_or(Reason::DropAdjustFailed)?;
    // SAFETY: bounds checked; read in place.
    let sum = csum::finish(csum::add_bytes(0, unsafe { &*body }));
    // SAFETY: icmp_p is still in bounds (nothing resized since).
    unsafe { (*icmp_p).check = sum.to_be_bytes() };
    Ok(())
}

/// Turns the packet into an ICMPv6 "packet too big" from the VIP to the client;
/// layout as for IPv4.
#[inline(never)]
fn too_big_v6(
    ctx: &impl XdpPacket,
    l3_off: usize,
    frame_len: u32,
    inner_mtu: u16,
) -> Result<(), Reason> {
    let shift = IPV6_LEN + ICMP_LEN;
    let old_eth = resize(ctx, l3_off, frame_len, shift, QUOTE_V6)?;
    let quote = ptr_at::<Ipv6Hdr>(ctx, shift + l3_off).ok_or(Reason::DropAdjustFailed)?;
    let (client_mac, my_mac) = (old_eth.src, old_eth.dst);
    // SAFETY: bounds checked; copied before the old L2 header is overwritten.
    let (client, vip) = unsafe { ((*quote).src, (*quote).dst) };
    write_l2(ctx, l3_off, shift, client_mac, my_mac).ok_or(Reason::DropAdjustFailed)?;
    let upper_len = (ICMP_LEN + QUOTE_V6) as u32;
    let pseudo = csum::ipv6_pseudo(&vip, &client, upper_len, IPPROTO_ICMPV6);
    let mtu = inner_mtu as u32;
    let (Some(ip_p), Some(icmp_p)) = (
        ptr_at::<Ipv6Hdr>(ctx, l3_off),
        ptr_at::<IcmpHdr>(ctx, l3_off + IPV6_LEN),
    ) else {
        return Err(Reason::DropAdjustFailed);
    };
    // SAFETY: bounds checked.
    unsafe {
        *ip_p = Ipv6Hdr {
            vtc_flow: [0x6c, 0, 0, 0], // traffic class 0xc0 (network control)
            payload_len: (upper_len as u16).to_be_bytes(),
            next_hdr: IPPROTO_ICMPV6,
            hop_limit: limits::OUTER_TTL,
            src: vip,
            dst: client,
        };
        *icmp_p = IcmpHdr {
            kind: ICMPV6_PKT_TOOBIG,
            code: 0,
            check: [0, 0],
            rest: mtu.to_be_bytes(),
        };
    }
    let body = ptr_at::<[u8; ICMP_LEN + QUOTE_V6]>(ctx, l3_off + IPV6_LEN)
        .ok_or(Reason::DropAdjustFailed)?;
    // SAFETY: bounds checked; read in place.
    let sum = csum::finish(csum::add_bytes(pseudo, unsafe { &*body }));
    // SAFETY: icmp_p is still in bounds.
    unsafe { (*icmp_p).check = sum.to_be_bytes() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_common::FAMILY_V6;

    fn v4(a: [u8; 4]) -> Option<Reason> {
        bad_source(&crate::parse::addr_v4(a), FAMILY_V4)
    }

    fn v6(first: u8, last: u8) -> Option<Reason> {
        let mut a = [0u8; 16];
        a[0] = first;
        a[15] = last;
        bad_source(&a, FAMILY_V6)
    }

    #[test]
    fn sources_that_get_no_error() {
        assert_eq!(v4([0, 0, 0, 0]), Some(Reason::DropTooBigUnspecifiedSource));
        assert_eq!(
            v4([255, 255, 255, 255]),
            Some(Reason::DropTooBigBroadcastSource)
        );
        assert_eq!(v4([224, 0, 0, 0]), Some(Reason::DropTooBigMulticastSource));
        assert_eq!(v4([239, 1, 2, 3]), Some(Reason::DropTooBigMulticastSource));
        for ok in [
            [192, 168, 11, 2],
            [223, 255, 255, 255],
            [240, 0, 0, 1],
            [0, 0, 0, 1],
        ] {
            assert_eq!(v4(ok), None, "{ok:?}");
        }
        assert_eq!(v6(0, 0), Some(Reason::DropTooBigUnspecifiedSource));
        assert_eq!(v6(0xff, 1), Some(Reason::DropTooBigMulticastSource));
        assert_eq!(v6(0, 1), None, "::1 is a unicast address");
        assert_eq!(v6(0xfe, 0), None);
        assert_eq!(v6(0xfc, 2), None);
    }
}
