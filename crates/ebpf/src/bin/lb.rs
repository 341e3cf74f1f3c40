//! The XDP load balancer: VIP traffic is encapsulated in IP-in-IP to a pool server
//! chosen by Maglev consistent hashing; everything else goes to the kernel untouched.
//!
//! This file is the entry point only: the maps, the kernel side of the traits the
//! pipeline is generic over, and the mapping of the pipeline's outcome to the XDP
//! action. The path of a packet (parse, VIP and service lookup, flow table or Maglev,
//! next hop, encapsulation, ICMP) is `ricochet_ebpf::balance::run`. Every packet is
//! counted under exactly one `Reason`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Only the BPF build of this binary is meaningful; the logic it runs is the
    // `ricochet-ebpf` library, which has host tests of its own.
}

#[cfg(target_arch = "bpf")]
mod prog {
    use core::mem::size_of;

    use aya_ebpf::{
        bindings::xdp_action,
        helpers::{
            bpf_fib_lookup, bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns,
            bpf_ktime_get_ns, bpf_redirect,
        },
        macros::{map, xdp},
        maps::{Array, HashMap, LruHashMap, PerCpuArray},
        programs::XdpContext,
    };
    use ricochet_common::{
        limits, vip_filter, Counters, Event, FlowKey, FlowValue, NextHop, Reason, ServerValue,
        ServiceKey, ServiceValue, Settings, TokenBucket, VipFlags, VipKey, VipValue,
    };
    use ricochet_ebpf::{
        balance::{self, Env, Stats},
        encap::Random,
        flow::{InsertError, Table},
        icmp::Limiter,
        random::{self, RandomState},
        route::{Fib, FibParams},
        service::Lookup,
        verdict::{self, Action},
    };

    #[map]
    static VIPS: HashMap<VipKey, VipValue> = HashMap::with_max_entries(limits::MAX_VIPS, 0);
    /// Bitmap over VIP addresses ([`ricochet_common::vip_filter`]).
    #[map]
    static VIP_FILTER: Array<u64> = Array::with_max_entries(vip_filter::WORDS, 0);
    #[map]
    static SERVICES: HashMap<ServiceKey, ServiceValue> =
        HashMap::with_max_entries(limits::MAX_SERVICE_PORTS, 0);
    #[map]
    static FLOWS: LruHashMap<FlowKey, FlowValue> =
        LruHashMap::with_max_entries(limits::DEFAULT_FLOWS, 0);
    #[map]
    static SERVERS: Array<ServerValue> = Array::with_max_entries(limits::MAX_SERVERS, 0);
    #[map]
    static MAGLEV: Array<u32> = Array::with_max_entries(limits::DEFAULT_MAGLEV_SLOTS, 0);
    #[map]
    static SVC_STATS: PerCpuArray<Counters> =
        PerCpuArray::with_max_entries(limits::MAX_SERVICES, 0);
    #[map]
    static SRV_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(limits::MAX_SERVERS, 0);
    #[map]
    static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);
    #[map]
    static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Event::COUNT, 0);
    #[map]
    static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
    /// Next hops resolved by `bpf_fib_lookup`, per CPU and server id.
    #[map]
    static NEXT_HOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(limits::MAX_SERVERS, 0);

    /// This CPU's pseudo-random generator ([`ricochet_ebpf::random`]).
    #[map]
    static RANDOM: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// This CPU's budget of ICMP "too big" errors.
    #[map]
    static ICMP_BUCKETS: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

    #[xdp]
    pub fn ricochet_lb(ctx: XdpContext) -> u32 {
        let kernel = Kernel { ctx: &ctx };
        let (reason, egress) = match balance::run(&ctx, &kernel) {
            Ok(f) => (f.reason, f.ifindex),
            // Only `run`'s Ok is forwarded; an error never is, so `egress` is unused.
            Err(r) => (r, 0),
        };
        count(&REASONS, reason as u32);
        match verdict::action(reason) {
            Action::Pass => xdp_action::XDP_PASS,
            Action::Drop => xdp_action::XDP_DROP,
            Action::Bounce => xdp_action::XDP_TX,
            Action::Forward if egress == ctx.ingress_ifindex() as u32 => xdp_action::XDP_TX,
            // SAFETY: plain helper call; it answers XDP_REDIRECT (or XDP_ABORTED).
            Action::Forward => unsafe { bpf_redirect(egress, 0) as u32 },
        }
    }

    #[inline(always)]
    fn count(map: &PerCpuArray<u64>, index: u32) {
        if let Some(c) = map.get_ptr_mut(index) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *c += 1 };
        }
    }

    #[inline(always)]
    fn add(map: &PerCpuArray<Counters>, index: u32, bytes: u64, new_flow: bool) {
        if let Some(c) = map.get_ptr_mut(index) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe {
                (*c).packets += 1;
                (*c).bytes += bytes;
                if new_flow {
                    (*c).new_flows += 1;
                }
            }
        }
    }

    /// The kernel's maps and helpers, for the pipeline's traits.
    struct Kernel<'a> {
        ctx: &'a XdpContext,
    }

    impl Lookup for Kernel<'_> {
        #[inline(always)]
        fn vip_filter_word(&self, index: u32) -> u64 {
            VIP_FILTER.get(index).copied().unwrap_or(0)
        }
        #[inline(always)]
        fn vip_flags(&self, key: &VipKey) -> Option<VipFlags> {
            // SAFETY: the value is copied out at once.
            unsafe { VIPS.get(key) }.map(|v| v.flags)
        }
        #[inline(always)]
        fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
            // SAFETY: the value is copied out at once.
            unsafe { SERVICES.get(key) }.copied()
        }
    }

    impl Table for Kernel<'_> {
        #[inline(always)]
        fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
            let f = FLOWS.get_ptr_mut(key)?;
            let now = self.flow_clock();
            // SAFETY: the entry stays valid for the program's run (RCU); a concurrent
            // writer of the stamp writes the same or a newer one, and a torn read of a
            // flow the engine replaced is not possible (userspace never writes FLOWS
            // while forwarding).
            unsafe {
                if (*f).seen != now {
                    (*f).seen = now;
                }
                Some(*f)
            }
        }
        #[inline(always)]
        fn insert_flow(&self, key: &FlowKey, value: &FlowValue) -> Result<(), InsertError> {
            FLOWS.insert(key, value, 0).map_err(InsertError)
        }
        #[inline(always)]
        fn server(&self, id: u32) -> Option<ServerValue> {
            SERVERS.get(id).copied()
        }
        #[inline(always)]
        fn maglev(&self, slot: u32) -> Option<u32> {
            MAGLEV.get(slot).copied()
        }
        #[inline(always)]
        fn flow_clock(&self) -> u32 {
            // SAFETY: plain helper call (the coarse clock: no clock source read).
            ricochet_common::flow_clock(unsafe { bpf_ktime_get_coarse_ns() })
        }
    }

    impl Fib for Kernel<'_> {
        #[inline(always)]
        fn now(&self) -> u64 {
            // SAFETY: plain helper call (inlined by the verifier on 64-bit JITs).
            unsafe { bpf_jiffies64() }
        }
        #[inline(always)]
        fn next_hop(&self, server_id: u32) -> Option<*mut NextHop> {
            NEXT_HOPS.get_ptr_mut(server_id)
        }
        #[inline(always)]
        fn fib_lookup(&self, params: &mut FibParams) -> i64 {
            // SAFETY: FibParams has the layout of struct bpf_fib_lookup.
            unsafe {
                bpf_fib_lookup(
                    self.ctx.ctx as *mut _,
                    params as *mut FibParams as *mut _,
                    size_of::<FibParams>() as i32,
                    0,
                )
            }
        }
    }

    impl Random for Kernel<'_> {
        #[inline(always)]
        fn prandom_u32(&self) -> u32 {
            random::prandom_u32(self)
        }
    }

    impl RandomState for Kernel<'_> {
        #[inline(always)]
        fn random_state(&self) -> Option<*mut u64> {
            RANDOM.get_ptr_mut(0)
        }
        #[inline(always)]
        fn kernel_random(&self) -> u32 {
            // SAFETY: plain helper call.
            unsafe { bpf_get_prandom_u32() }
        }
    }

    impl Stats for Kernel<'_> {
        #[inline(always)]
        fn count_service(&self, service_id: u32, bytes: u64, new_flow: bool) {
            add(&SVC_STATS, service_id, bytes, new_flow);
        }
        #[inline(always)]
        fn count_server(&self, server_id: u32, bytes: u64, new_flow: bool) {
            add(&SRV_STATS, server_id, bytes, new_flow);
        }
        #[inline(always)]
        fn count_event(&self, event: Event) {
            count(&EVENTS, event as u32);
        }
    }

    impl Limiter for Kernel<'_> {
        #[inline(always)]
        fn now_ns(&self) -> u64 {
            // SAFETY: plain helper call.
            unsafe { bpf_ktime_get_ns() }
        }
        #[inline(always)]
        fn bucket(&self) -> Option<*mut TokenBucket> {
            ICMP_BUCKETS.get_ptr_mut(0)
        }
    }

    impl Env for Kernel<'_> {
        #[inline(always)]
        fn settings(&self) -> Option<&Settings> {
            SETTINGS.get(0)
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: unreachable in a verified program (the verifier rejects panicking paths
        // that remain reachable, and there is no unwinding in BPF).
        unsafe { core::hint::unreachable_unchecked() }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}
