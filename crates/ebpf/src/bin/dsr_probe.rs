//! The DSR probe encapsulator, on the service engine: a TC egress program that wraps the
//! packets of health-check sockets in IPv4-in-IPv4 / IPv6-in-IPv6 to a pool server, so a
//! check addressed to VIP:port reaches the server exactly as a client's packet forwarded
//! by the XDP load balancer does. The server's answer comes from the VIP straight back to
//! the engine's own address (DSR), where the health checker's socket receives it.
//!
//! Which packets: those whose socket mark (`SO_MARK`, set by the health checker) is a key
//! of `PROBE_TARGETS`; the value names the server (outer destination) and the engine's
//! address (outer source). Everything else passes untouched, so the program costs one
//! map lookup on marked traffic and one load of `skb->mark` on the rest.
//!
//! After encapsulation the packet is redirected with `bpf_redirect_neigh`: the kernel
//! routes the outer destination (the server) and resolves its next hop, replacing the
//! route to the VIP the socket's packet was sent by. The redirected packet passes this
//! program once more on its way out; being IP-in-IP already, it is left alone.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Only the BPF build of this binary is meaningful.
}

#[cfg(target_arch = "bpf")]
mod prog {
    use core::ptr;

    use aya_ebpf::{
        bindings::{
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, TC_ACT_OK, TC_ACT_SHOT,
        },
        helpers::bpf_redirect_neigh,
        macros::{classifier, map},
        maps::{HashMap, PerCpuArray},
        programs::TcContext,
    };
    use ricochet_common::{
        limits::OUTER_TTL,
        probe::{ProbeReason, ProbeTarget, MAX_PROBE_TARGETS},
        FAMILY_V4, FAMILY_V6,
    };
    use ricochet_ebpf::headers::*;

    #[map]
    static PROBE_TARGETS: HashMap<u32, ProbeTarget> =
        HashMap::with_max_entries(MAX_PROBE_TARGETS, 0);
    #[map]
    static PROBE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProbeReason::COUNT, 0);

    /// bpf_skb_adjust_room mode: grow right after the MAC header.
    const BPF_ADJ_ROOM_MAC: u32 = 1;
    const OK: i32 = TC_ACT_OK;
    const SHOT: i32 = TC_ACT_SHOT;

    #[classifier]
    pub fn ricochet_dsr_probe(ctx: TcContext) -> i32 {
        let (action, reason) = process(&ctx);
        if let Some(c) = PROBE_STATS.get_ptr_mut(reason as u32) {
            // SAFETY: per-CPU slot.
            unsafe { *c += 1 };
        }
        action
    }

    #[inline(always)]
    fn process(ctx: &TcContext) -> (i32, ProbeReason) {
        // SAFETY: the context's skb pointer is valid for the program's run.
        let (mark, ifindex) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).ifindex) };
        if mark == 0 {
            return (OK, ProbeReason::PassUnmarked);
        }
        // SAFETY: the value is copied out at once.
        let Some(target) = (unsafe { PROBE_TARGETS.get(mark) }).copied() else {
            return (OK, ProbeReason::PassUnmarked);
        };
        let Ok(ether_type) = ctx.load::<[u8; 2]>(12) else {
            return (SHOT, ProbeReason::DropMalformed);
        };
        let encapsulated = match (u16::from_be_bytes(ether_type), target.family) {
            (ETH_P_IP, FAMILY_V4) => encap_v4(ctx, &target),
            (ETH_P_IPV6, FAMILY_V6) => encap_v6(ctx, &target),
            _ => Err(ProbeReason::DropFamilyMismatch),
        };
        match encapsulated {
            Ok(()) => {}
            Err(ProbeReason::PassEncapsulated) => return (OK, ProbeReason::PassEncapsulated),
            Err(reason) => return (SHOT, reason),
        }
        // SAFETY: plain helper call; a null parameter block asks the kernel to route the
        // (outer) destination itself and resolve the neighbour.
        let action = unsafe { bpf_redirect_neigh(ifindex, ptr::null_mut(), 0, 0) };
        (action as i32, ProbeReason::Encapsulated)
    }

    #[inline(always)]
    fn encap_v4(ctx: &TcContext, target: &ProbeTarget) -> Result<(), ProbeReason> {
        let inner: Ipv4Hdr = ctx.load(ETH_LEN).map_err(|_| ProbeReason::DropMalformed)?;
        if inner.proto == IPPROTO_IPIP {
            return Err(ProbeReason::PassEncapsulated);
        }
        if inner.version() != 4 {
            return Err(ProbeReason::DropMalformed);
        }
        let mut src = [0u8; 4];
        src.copy_from_slice(&target.source[..4]);
        let mut dst = [0u8; 4];
        dst.copy_from_slice(&target.server[..4]);
        let outer = ipip_outer_v4(&inner, src, dst, OUTER_TTL);
        ctx.adjust_room(
            IPV4_LEN as i32,
            BPF_ADJ_ROOM_MAC,
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64,
        )
        .map_err(|_| ProbeReason::DropAdjustFailed)?;
        ctx.store(ETH_LEN, &outer, 0)
            .map_err(|_| ProbeReason::DropAdjustFailed)
    }

    #[inline(always)]
    fn encap_v6(ctx: &TcContext, target: &ProbeTarget) -> Result<(), ProbeReason> {
        let inner: Ipv6Hdr = ctx.load(ETH_LEN).map_err(|_| ProbeReason::DropMalformed)?;
        if inner.next_hdr == IPPROTO_IPV6 {
            return Err(ProbeReason::PassEncapsulated);
        }
        if inner.version() != 6 {
            return Err(ProbeReason::DropMalformed);
        }
        // Health checks need no ECMP entropy: flow label 0.
        let outer = ipip_outer_v6(&inner, target.source, target.server, 0, OUTER_TTL);
        ctx.adjust_room(
            IPV6_LEN as i32,
            BPF_ADJ_ROOM_MAC,
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 as u64,
        )
        .map_err(|_| ProbeReason::DropAdjustFailed)?;
        ctx.store(ETH_LEN, &outer, 0)
            .map_err(|_| ProbeReason::DropAdjustFailed)
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
