//! The server-side decapsulator, for kernels without the tunnel modules (ipip, ip6_tunnel,
//! gre, fou): a TC ingress program that strips the outer headers of IPv4-in-IPv4 and
//! IPv6-in-IPv6, GRE (4-byte header) and GUE (UDP to a port in `DECAP_GUE_PORTS`, then
//! the inner packet) whose inner destination is one of this server's VIPs, so the inner
//! packet reaches the socket bound on the VIP (on `lo`) and the reply goes straight to
//! the client. IP-in-IP and GRE packets to other addresses are dropped (no open relay);
//! UDP to a GUE port that does not carry a packet to a VIP is ordinary UDP and passes, as
//! does everything else.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Only the BPF build of this binary is meaningful.
}

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_SHOT},
        helpers::bpf_skb_adjust_room,
        macros::{classifier, map},
        maps::{HashMap, PerCpuArray},
        programs::TcContext,
    };
    use ricochet_common::{limits, DecapReason, VipKey, FAMILY_V4, FAMILY_V6};
    use ricochet_ebpf::{headers::*, packet::ptr_at};

    #[map]
    static DECAP_VIPS: HashMap<VipKey, u32> = HashMap::with_max_entries(limits::MAX_DECAP_VIPS, 0);
    #[map]
    static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DecapReason::COUNT, 0);
    /// UDP destination ports (big endian) that carry GUE.
    #[map]
    static DECAP_GUE_PORTS: HashMap<[u8; 2], u32> =
        HashMap::with_max_entries(limits::MAX_DECAP_GUE_PORTS, 0);

    /// bpf_skb_adjust_room mode: shrink/grow right after the MAC header.
    const BPF_ADJ_ROOM_MAC: u32 = 1;

    #[classifier]
    pub fn ricochet_decap(ctx: TcContext) -> i32 {
        let (action, reason) = process(&ctx);
        if let Some(c) = DECAP_STATS.get_ptr_mut(reason as u32) {
            // SAFETY: per-CPU slot.
            unsafe { *c += 1 };
        }
        action
    }

    #[inline(always)]
    fn is_vip(addr: [u8; 16], family: u8) -> bool {
        let key = VipKey::from_raw(addr, family);
        // SAFETY: only presence is read.
        unsafe { DECAP_VIPS.get(key) }.is_some()
    }

    const OK: i32 = TC_ACT_OK;
    const SHOT: i32 = TC_ACT_SHOT;

    #[inline(always)]
    fn is_gue_port(port: [u8; 2]) -> bool {
        // SAFETY: only presence is read.
        unsafe { DECAP_GUE_PORTS.get(port) }.is_some()
    }

    /// What follows an outer IP header of protocol `proto` at `off`, for an inner packet
    /// of the outer's family (`ether_type`): the tunnel header's length, or `None` for a
    /// packet that is not one of Ricochet's tunnels.
    #[inline(always)]
    fn tunnel(
        ctx: &TcContext,
        proto: u8,
        ipip: u8,
        ether_type: u16,
        off: usize,
    ) -> Option<Result<usize, DecapReason>> {
        if proto == ipip {
            return Some(Ok(0));
        }
        if proto == IPPROTO_GRE {
            let Some(gre) = ptr_at::<GreHdr>(ctx, off) else {
                return Some(Err(DecapReason::DropMalformed));
            };
            // SAFETY: bounds checked.
            let gre = unsafe { *gre };
            // Checksum, key or sequence number present, another version or payload: not
            // what the load balancer sends (the kernel's GRE, where there is one, may
            // know it).
            if gre.flags_version != [0, 0] || gre.proto != ether_type.to_be_bytes() {
                return None;
            }
            return Some(Ok(GRE_LEN));
        }
        if proto == IPPROTO_UDP {
            let udp = ptr_at::<UdpHdr>(ctx, off)?;
            // SAFETY: bounds checked.
            if is_gue_port(unsafe { (*udp).dst }) {
                return Some(Ok(UDP_LEN));
            }
        }
        None
    }

    #[inline(always)]
    fn process(ctx: &TcContext) -> (i32, DecapReason) {
        let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
            return (OK, DecapReason::PassNotTunnel);
        };
        // SAFETY: bounds checked.
        let ether_type = u16::from_be_bytes(unsafe { (*eth).proto });
        match ether_type {
            ETH_P_IP => {
                let Some(outer) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
                    return (OK, DecapReason::PassNotTunnel);
                };
                // SAFETY: bounds checked.
                let outer = unsafe { *outer };
                let off = ETH_LEN + IPV4_LEN;
                let udp = outer.proto == IPPROTO_UDP;
                let tunnel_len = match tunnel(ctx, outer.proto, IPPROTO_IPIP, ETH_P_IP, off) {
                    None => return (OK, DecapReason::PassNotTunnel),
                    Some(Err(r)) => return (SHOT, r),
                    Some(Ok(len)) => len,
                };
                // The data plane never sends outer options or fragments.
                if outer.ver_ihl != 0x45 || outer.frag() & IP_MF_OFFSET != 0 {
                    return if udp {
                        (OK, DecapReason::PassNotTunnel)
                    } else {
                        (SHOT, DecapReason::DropMalformed)
                    };
                }
                let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, off + tunnel_len) else {
                    return if udp {
                        (OK, DecapReason::PassNotTunnel)
                    } else {
                        (SHOT, DecapReason::DropMalformed)
                    };
                };
                // SAFETY: bounds checked.
                let inner = unsafe { *inner };
                let mut dst = [0u8; 16];
                dst[..4].copy_from_slice(&inner.dst);
                if inner.version() != 4 || !is_vip(dst, FAMILY_V4) {
                    // UDP to the GUE port that is not GUE to a VIP is plain UDP.
                    return if udp {
                        (OK, DecapReason::PassNotTunnel)
                    } else if inner.version() != 4 {
                        (SHOT, DecapReason::DropMalformed)
                    } else {
                        (SHOT, DecapReason::DropInnerNotVip)
                    };
                }
                strip(ctx, IPV4_LEN + tunnel_len)
            }
            ETH_P_IPV6 => {
                let Some(outer) = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN) else {
                    return (OK, DecapReason::PassNotTunnel);
                };
                // SAFETY: bounds checked.
                let next = unsafe { (*outer).next_hdr };
                let off = ETH_LEN + IPV6_LEN;
                let udp = next == IPPROTO_UDP;
                let tunnel_len = match tunnel(ctx, next, IPPROTO_IPV6, ETH_P_IPV6, off) {
                    None => return (OK, DecapReason::PassNotTunnel),
                    Some(Err(r)) => return (SHOT, r),
                    Some(Ok(len)) => len,
                };
                let Some(inner) = ptr_at::<Ipv6Hdr>(ctx, off + tunnel_len) else {
                    return if udp {
                        (OK, DecapReason::PassNotTunnel)
                    } else {
                        (SHOT, DecapReason::DropMalformed)
                    };
                };
                // SAFETY: bounds checked.
                let inner = unsafe { *inner };
                if inner.version() != 6 || !is_vip(inner.dst, FAMILY_V6) {
                    return if udp {
                        (OK, DecapReason::PassNotTunnel)
                    } else if inner.version() != 6 {
                        (SHOT, DecapReason::DropMalformed)
                    } else {
                        (SHOT, DecapReason::DropInnerNotVip)
                    };
                }
                strip(ctx, IPV6_LEN + tunnel_len)
            }
            _ => (OK, DecapReason::PassNotTunnel),
        }
    }

    /// Removes `len` bytes right after the MAC header: the outer IP header and any tunnel
    /// header. The EtherType stays right because the inner packet has the outer's family.
    #[inline(always)]
    fn strip(ctx: &TcContext, len: usize) -> (i32, DecapReason) {
        // SAFETY: plain helper call on the context.
        let rc = unsafe { bpf_skb_adjust_room(ctx.skb.skb, -(len as i32), BPF_ADJ_ROOM_MAC, 0) };
        if rc != 0 {
            return (SHOT, DecapReason::DropAdjustFailed);
        }
        (OK, DecapReason::Decapsulated)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: unreachable in a verified program.
        unsafe { core::hint::unreachable_unchecked() }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}
