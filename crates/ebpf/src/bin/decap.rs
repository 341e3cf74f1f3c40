//! The server-side decapsulator, for kernels without the ipip/ip6_tunnel modules: a TC
//! ingress program that strips the outer header of IPv4-in-IPv4 and IPv6-in-IPv6
//! packets whose inner destination is one of this server's VIPs, so the inner packet
//! reaches the socket bound on the VIP (on `lo`) and the reply goes straight to the
//! client. Other tunnel packets are dropped (no open relay); the rest passes untouched.
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
                if outer.proto != IPPROTO_IPIP {
                    return (OK, DecapReason::PassNotTunnel);
                }
                // The data plane never sends outer options or fragments.
                if outer.ver_ihl != 0x45 || outer.frag() & IP_MF_OFFSET != 0 {
                    return (SHOT, DecapReason::DropMalformed);
                }
                let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN + IPV4_LEN) else {
                    return (SHOT, DecapReason::DropMalformed);
                };
                // SAFETY: bounds checked.
                let inner = unsafe { *inner };
                if inner.version() != 4 {
                    return (SHOT, DecapReason::DropMalformed);
                }
                let mut dst = [0u8; 16];
                dst[..4].copy_from_slice(&inner.dst);
                if !is_vip(dst, FAMILY_V4) {
                    return (SHOT, DecapReason::DropInnerNotVip);
                }
                strip(ctx, IPV4_LEN)
            }
            ETH_P_IPV6 => {
                let Some(outer) = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN) else {
                    return (OK, DecapReason::PassNotTunnel);
                };
                // SAFETY: bounds checked.
                if unsafe { (*outer).next_hdr } != IPPROTO_IPV6 {
                    return (OK, DecapReason::PassNotTunnel);
                }
                let Some(inner) = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN + IPV6_LEN) else {
                    return (SHOT, DecapReason::DropMalformed);
                };
                // SAFETY: bounds checked.
                let inner = unsafe { *inner };
                if inner.version() != 6 {
                    return (SHOT, DecapReason::DropMalformed);
                }
                if !is_vip(inner.dst, FAMILY_V6) {
                    return (SHOT, DecapReason::DropInnerNotVip);
                }
                strip(ctx, IPV6_LEN)
            }
            _ => (OK, DecapReason::PassNotTunnel),
        }
    }

    /// Removes `len` bytes right after the MAC header: the outer IP header. The
    /// EtherType stays right because the inner packet has the outer's family.
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
