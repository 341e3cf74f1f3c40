//! The XDP load balancer: VIP traffic is encapsulated in IP-in-IP to a pool server
//! chosen by Maglev consistent hashing; everything else goes to the kernel untouched.
//!
//! The path of a packet: parse Ethernet (one 802.1Q tag allowed) and IPv4/IPv6, look
//! the destination up in `VIPS` (a miss passes the packet), find the virtual service
//! by (VIP, protocol, port), find the flow's server in `FLOWS` or pick one through the
//! service's Maglev table, resolve the next hop to the server through the kernel's FIB
//! and neighbour tables, prepend the outer header and transmit. Every packet is
//! counted under exactly one `Reason`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Only the BPF build of this binary is meaningful; the host build exists so that the
    // workspace checks (clippy, tests) cover this file.
}

#[cfg(target_arch = "bpf")]
mod prog {
    use core::mem::{size_of, MaybeUninit};

    use aya_ebpf::{
        bindings::xdp_action,
        helpers::{
            bpf_fib_lookup, bpf_get_prandom_u32, bpf_jiffies64, bpf_redirect, bpf_xdp_adjust_head,
            bpf_xdp_adjust_tail,
        },
        macros::{map, xdp},
        maps::{Array, HashMap, LruHashMap, PerCpuArray},
        programs::XdpContext,
    };
    use ricochet_common::{
        hash::client_hash, limits, Counters, FlowKey, FlowValue, NextHop, Reason, ServerValue,
        ServiceKey, ServiceValue, Settings, VipKey, VipValue, FAMILY_V4, FAMILY_V6,
        NEXT_HOP_MAX_AGE_JIFFIES, SERVER_ACTIVE, SERVER_FREE, SERVICE_HASH_SRC_PORT,
        SETTINGS_HAVE_V4, SETTINGS_HAVE_V6, VIP_TCP_ALL_PORTS, VIP_UDP_ALL_PORTS,
    };
    use ricochet_ebpf::{csum, headers::*, packet::ptr_at};

    #[map]
    static VIPS: HashMap<VipKey, VipValue> = HashMap::with_max_entries(limits::MAX_VIPS, 0);
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
    static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
    /// Next hops resolved by `bpf_fib_lookup`, per CPU and server id (see `route`).
    #[map]
    static NEXT_HOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(limits::MAX_SERVERS, 0);

    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const FIB_SUCCESS: i64 = 0;
    const FIB_NO_NEIGH: i64 = 7;
    const FIB_FRAG_NEEDED: i64 = 8;

    /// `struct bpf_fib_lookup` (64 bytes), with its unions flattened to the members used.
    #[repr(C)]
    struct FibParams {
        family: u8,
        l4_protocol: u8,
        sport: u16,
        dport: u16,
        /// In: the packet's IP total length (enables the MTU check). Out: the MTU.
        tot_len_mtu: u16,
        ifindex: u32,
        /// IPv4 TOS or IPv6 flowinfo.
        tos_flowinfo: u32,
        src: [u8; 16],
        dst: [u8; 16],
        vlan_proto: u16,
        vlan_tci: u16,
        smac: [u8; 6],
        dmac: [u8; 6],
    }
    const _: () = assert!(size_of::<FibParams>() == 64);

    #[xdp]
    pub fn ricochet_lb(ctx: XdpContext) -> u32 {
        // Not zeroed: `parse` writes it whole before it answers CONTINUE, and it is read
        // only then (zeroing it cost a 56-byte memset, a byte loop in BPF, per packet).
        let mut p = MaybeUninit::<Parsed>::uninit();
        let mut verdict = parse(&ctx, &mut p);
        if verdict.action() == ACTION_CONTINUE {
            // SAFETY: parse initialised `p` (it answered CONTINUE).
            let p = unsafe { p.assume_init_ref() };
            verdict = balance(&ctx, p);
            if verdict.action() == ACTION_ICMP_PENDING {
                verdict = if p.family == FAMILY_V4 {
                    icmp_too_big_v4(&ctx, p.l3_off, p.frame_len, verdict.mtu())
                } else {
                    icmp_too_big_v6(&ctx, p.l3_off, p.frame_len, verdict.mtu())
                };
            }
        }
        count_reason(verdict.reason());
        verdict.action()
    }

    #[inline(always)]
    fn count_reason(reason: u32) {
        if let Some(c) = REASONS.get_ptr_mut(reason) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *c += 1 };
        }
    }

    /// What the parser learnt about a packet addressed to a VIP.
    struct Parsed {
        l3_off: usize,
        frame_len: u32,
        family: u8,
        proto: u8,
        /// Length of the IP packet (header included), from its header.
        ip_len: u16,
        /// `VIP_*` flags of the destination VIP.
        vip_flags: u32,
        src: [u8; 16],
        dst: [u8; 16],
        sport: [u8; 2],
        dport: [u8; 2],
    }

    /// An XDP action and the reason counted for it, packed in one scalar so that
    /// subprograms return it in a register (BPF has no aggregate returns).
    #[repr(transparent)]
    #[derive(Clone, Copy)]
    struct Verdict(u64);

    impl Verdict {
        #[inline(always)]
        const fn new(action: u32, reason: Reason) -> Self {
            Verdict(((reason as u64) << 32) | action as u64)
        }
        #[inline(always)]
        fn action(self) -> u32 {
            self.0 as u32
        }
        #[inline(always)]
        fn reason(self) -> u32 {
            self.reason_bits()
        }
    }
    /// Action code (not a real XDP action) of a verdict that asks the entry point to
    /// turn the packet into an ICMP "too big" error; the route MTU rides in bits 48..64.
    const ACTION_ICMP_PENDING: u32 = 0xffff;
    /// Action code meaning "parsed, go on balancing".
    const ACTION_CONTINUE: u32 = 0xfffe;

    impl Verdict {
        #[inline(always)]
        const fn too_big(mtu: u16) -> Self {
            Verdict(Verdict::new(ACTION_ICMP_PENDING, Reason::IcmpTooBig).0 | (mtu as u64) << 48)
        }
        #[inline(always)]
        fn mtu(self) -> u16 {
            (self.0 >> 48) as u16
        }
        #[inline(always)]
        fn reason_bits(self) -> u32 {
            ((self.0 >> 32) & 0xffff) as u32
        }
    }
    const CONTINUE: Verdict = Verdict::new(ACTION_CONTINUE, Reason::Forwarded);

    const fn pass(r: Reason) -> Verdict {
        Verdict::new(xdp_action::XDP_PASS, r)
    }
    const fn drop(r: Reason) -> Verdict {
        Verdict::new(xdp_action::XDP_DROP, r)
    }

    /// Parses the headers into `p`; `CONTINUE` when the packet is for a VIP service.
    #[inline(never)]
    fn parse(ctx: &XdpContext, p: &mut MaybeUninit<Parsed>) -> Verdict {
        let frame_len = ctx.data_end() - ctx.data();
        let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
            return pass(Reason::PassTruncatedL2);
        };
        // SAFETY: bounds checked by ptr_at.
        let mut ether_type = u16::from_be_bytes(unsafe { (*eth).proto });
        let mut l3_off = ETH_LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let Some(tag) = ptr_at::<[u8; 4]>(ctx, ETH_LEN) else {
                return pass(Reason::PassTruncatedL2);
            };
            // SAFETY: bounds checked.
            let tag = unsafe { *tag };
            ether_type = u16::from_be_bytes([tag[2], tag[3]]);
            l3_off = ETH_LEN + VLAN_LEN;
        }
        match ether_type {
            ETH_P_IP => parse_v4(ctx, l3_off, frame_len, p),
            ETH_P_IPV6 => parse_v6(ctx, l3_off, frame_len, p),
            _ => pass(Reason::PassNotIp),
        }
    }

    /// An IPv4 address in the 16-byte form of the maps (zeros after it), built with
    /// word stores: a `[0; 16]` array filled afterwards costs a byte-loop memset in BPF.
    #[inline(always)]
    fn addr_v4(a: [u8; 4]) -> [u8; 16] {
        (u32::from_le_bytes(a) as u128).to_le_bytes()
    }

    /// Fields of a key followed by zero padding, written as one word (see `addr_v4`).
    #[inline(always)]
    fn tail_word(a: u8, b: u8) -> u32 {
        u32::from_le_bytes([a, b, 0, 0])
    }

    #[inline(always)]
    fn vip_flags(addr: [u8; 16], family: u8) -> Option<u32> {
        #[repr(C)]
        struct Words {
            addr: [u8; 16],
            family_pad: u32,
        }
        // SAFETY: `Words` has `VipKey`'s size and byte layout (address, then family and
        // three zero bytes); any byte pattern is a valid `VipKey`.
        let key: VipKey = unsafe {
            core::mem::transmute(Words {
                addr,
                family_pad: tail_word(family, 0),
            })
        };
        // SAFETY: the value is copied out at once.
        unsafe { VIPS.get(&key) }.map(|v| v.flags)
    }

    /// Reads the ports of a TCP or UDP header at `l4_off`; `l4_room` is what the IP
    /// header says the L4 part spans.
    #[inline(always)]
    fn ports(ctx: &XdpContext, proto: u8, l4_off: usize, l4_room: usize) -> Result<Ports, Verdict> {
        let need = if proto == IPPROTO_TCP {
            TCP_LEN
        } else {
            UDP_LEN
        };
        if l4_room < need {
            return Err(drop(Reason::DropTruncatedL4));
        }
        let hdr_ok = if proto == IPPROTO_TCP {
            ptr_at::<[u8; TCP_LEN]>(ctx, l4_off).is_some()
        } else {
            ptr_at::<[u8; UDP_LEN]>(ctx, l4_off).is_some()
        };
        if !hdr_ok {
            return Err(drop(Reason::DropTruncatedL4));
        }
        let p = ptr_at::<Ports>(ctx, l4_off).ok_or(drop(Reason::DropTruncatedL4))?;
        // SAFETY: bounds checked.
        Ok(unsafe { *p })
    }

    #[inline(always)]
    fn parse_v4(
        ctx: &XdpContext,
        l3_off: usize,
        frame_len: usize,
        p: &mut MaybeUninit<Parsed>,
    ) -> Verdict {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3_off) else {
            return drop(Reason::DropMalformedIpv4);
        };
        // SAFETY: bounds checked; copied to the stack.
        let ip = unsafe { *ip };
        let hdr_len = (ip.ihl() as usize) * 4;
        let tot = ip.total_len() as usize;
        if ip.version() != 4 || hdr_len < IPV4_LEN || tot < hdr_len || l3_off + tot > frame_len {
            return drop(Reason::DropMalformedIpv4);
        }
        let dst = addr_v4(ip.dst);
        let Some(vip_flags) = vip_flags(dst, FAMILY_V4) else {
            return pass(Reason::PassNotVip);
        };
        if hdr_len != IPV4_LEN {
            return drop(Reason::DropIpv4Options);
        }
        if ip.frag() & IP_MF_OFFSET != 0 {
            return drop(Reason::DropFragment);
        }
        let proto = ip.proto;
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {}
            IPPROTO_ICMP => return drop(Reason::DropIcmp),
            _ => return drop(Reason::DropUnsupportedProto),
        }
        let pr = match ports(ctx, proto, l3_off + IPV4_LEN, tot - IPV4_LEN) {
            Ok(pr) => pr,
            Err(v) => return v,
        };
        let src = addr_v4(ip.src);
        p.write(Parsed {
            l3_off,
            frame_len: frame_len as u32,
            family: FAMILY_V4,
            proto,
            ip_len: tot as u16,
            vip_flags,
            src,
            dst,
            sport: pr.src,
            dport: pr.dst,
        });
        CONTINUE
    }

    #[inline(always)]
    fn parse_v6(
        ctx: &XdpContext,
        l3_off: usize,
        frame_len: usize,
        p: &mut MaybeUninit<Parsed>,
    ) -> Verdict {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3_off) else {
            return drop(Reason::DropMalformedIpv6);
        };
        // SAFETY: bounds checked; copied to the stack.
        let ip = unsafe { *ip };
        let payload = ip.payload_len() as usize;
        if ip.version() != 6 || l3_off + IPV6_LEN + payload > frame_len {
            return drop(Reason::DropMalformedIpv6);
        }
        let Some(vip_flags) = vip_flags(ip.dst, FAMILY_V6) else {
            return pass(Reason::PassNotVip);
        };
        let proto = ip.next_hdr;
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {}
            IPPROTO_ICMPV6 => return drop(Reason::DropIcmp),
            IPPROTO_FRAGMENT => return drop(Reason::DropFragment),
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_ESP
            | IPPROTO_MH | IPPROTO_NONE => return drop(Reason::DropIpv6ExtHeader),
            _ => return drop(Reason::DropUnsupportedProto),
        }
        let pr = match ports(ctx, proto, l3_off + IPV6_LEN, payload) {
            Ok(pr) => pr,
            Err(v) => return v,
        };
        p.write(Parsed {
            l3_off,
            frame_len: frame_len as u32,
            family: FAMILY_V6,
            proto,
            ip_len: (IPV6_LEN + payload) as u16,
            vip_flags,
            src: ip.src,
            dst: ip.dst,
            sport: pr.src,
            dport: pr.dst,
        });
        CONTINUE
    }

    #[inline(always)]
    fn find_service(p: &Parsed) -> Option<ServiceValue> {
        let mut key = ServiceKey {
            addr: p.dst,
            port: p.dport,
            proto: p.proto,
            family: p.family,
        };
        // SAFETY: values are copied out at once.
        if let Some(v) = unsafe { SERVICES.get(&key) } {
            return Some(*v);
        }
        let all_ports = if p.proto == IPPROTO_TCP {
            VIP_TCP_ALL_PORTS
        } else {
            VIP_UDP_ALL_PORTS
        };
        if p.vip_flags & all_ports == 0 {
            return None;
        }
        key.port = [0, 0];
        // SAFETY: as above.
        unsafe { SERVICES.get(&key) }.copied()
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

    /// The packet's `FLOWS` key.
    #[inline(always)]
    fn flow_key(p: &Parsed) -> FlowKey {
        #[repr(C)]
        struct Words {
            src: [u8; 16],
            dst: [u8; 16],
            sport: [u8; 2],
            dport: [u8; 2],
            proto_family_pad: u32,
        }
        // SAFETY: `Words` has `FlowKey`'s size and byte layout (the padding is zero);
        // any byte pattern is a valid `FlowKey`.
        unsafe {
            core::mem::transmute(Words {
                src: p.src,
                dst: p.dst,
                sport: p.sport,
                dport: p.dport,
                proto_family_pad: tail_word(p.proto, p.family),
            })
        }
    }

    /// The server of this packet's flow: the one recorded in `FLOWS` while it still
    /// holds its slot, or a new pick from the Maglev table (recorded for next time).
    #[inline(always)]
    fn pick_server(p: &Parsed, svc: &ServiceValue, seed: u32) -> Option<(u32, ServerValue, bool)> {
        let key = flow_key(p);
        // SAFETY: values are copied out at once.
        if let Some(f) = unsafe { FLOWS.get(&key) }.copied() {
            if let Some(s) = SERVERS.get(f.server_id).copied() {
                if s.generation == f.generation && s.state != SERVER_FREE {
                    return Some((f.server_id, s, false));
                }
            }
        }
        if svc.table_size == 0 {
            return None;
        }
        let with_port = svc.flags & SERVICE_HASH_SRC_PORT != 0;
        let h = client_hash(&p.src, p.sport, with_port, seed);
        let slot = svc.table_offset.wrapping_add(h % svc.table_size);
        let id = *MAGLEV.get(slot)?;
        let s = SERVERS.get(id).copied()?;
        if s.state != SERVER_ACTIVE {
            return None;
        }
        // Recorded by `balance` only once the packet is forwarded: a flow whose first
        // packet is dropped (no route yet, too big) must not leave a stale entry.
        Some((id, s, true))
    }

    /// Finds the service and server and encapsulates: a subprogram whose frame is
    /// released before the ICMP path runs.
    #[inline(never)]
    fn balance(ctx: &XdpContext, p: &Parsed) -> Verdict {
        let Some(svc) = find_service(p) else {
            return drop(Reason::DropNoService);
        };
        let Some(settings) = SETTINGS.get(0) else {
            return drop(Reason::DropNoSource);
        };
        let Some((server_id, server, new_flow)) = pick_server(p, &svc, settings.hash_seed) else {
            return drop(Reason::DropNoServer);
        };
        let bytes = p.frame_len as u64;
        let verdict = if p.family == FAMILY_V4 {
            if settings.flags & SETTINGS_HAVE_V4 == 0 {
                return drop(Reason::DropNoSource);
            }
            encap_v4(ctx, p, settings, server_id, &server)
        } else {
            if settings.flags & SETTINGS_HAVE_V6 == 0 {
                return drop(Reason::DropNoSource);
            }
            encap_v6(ctx, p, settings, server_id, &server)
        };
        if verdict.reason() == Reason::Forwarded as u32 {
            if new_flow {
                let key = flow_key(p);
                let value = FlowValue {
                    server_id,
                    generation: server.generation,
                };
                let _ = FLOWS.insert(&key, &value, 0);
            }
            add(&SVC_STATS, svc.service_id, bytes, new_flow);
            add(&SRV_STATS, server_id, bytes, new_flow);
        }
        verdict
    }

    /// Outcome of the FIB lookup for the encapsulated packet.
    enum Route {
        Via {
            ifindex: u32,
            smac: [u8; 6],
            dmac: [u8; 6],
        },
        TooBig {
            mtu: u16,
        },
        Fail(Reason),
    }

    /// The next hop towards `server` (slot `server_id`) for an outer packet of
    /// `tot_len` bytes: from this CPU's `NEXT_HOPS` entry while it is younger than
    /// `NEXT_HOP_MAX_AGE_JIFFIES` and was resolved for the same server (generation and
    /// address) and ingress interface; otherwise from `bpf_fib_lookup`, whose success
    /// refills the entry. Failures (no route, no neighbour, too big) are never cached,
    /// so they are looked up again on every packet.
    #[inline(always)]
    fn route(
        ctx: &XdpContext,
        family: u8,
        src: &[u8; 16],
        server_id: u32,
        server: &ServerValue,
        tot_len: u16,
        tos: u32,
    ) -> Route {
        let in_ifindex = ctx.ingress_ifindex() as u32;
        // SAFETY: plain helper call (inlined by the verifier on 64-bit JITs).
        let now = unsafe { bpf_jiffies64() };
        let cached = NEXT_HOPS.get_ptr_mut(server_id);
        if let Some(c) = cached {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            let c = unsafe { &*c };
            if now.wrapping_sub(c.stamp) < NEXT_HOP_MAX_AGE_JIFFIES
                && c.generation == server.generation
                && c.in_ifindex == in_ifindex
                && c.addr == server.addr
            {
                if tot_len > c.mtu {
                    return Route::TooBig { mtu: c.mtu };
                }
                return Route::Via {
                    ifindex: c.ifindex,
                    smac: c.smac,
                    dmac: c.dmac,
                };
            }
        }
        let v4 = family == FAMILY_V4;
        let mut fib = FibParams {
            family: if v4 { AF_INET } else { AF_INET6 },
            l4_protocol: if v4 { IPPROTO_IPIP } else { IPPROTO_IPV6 },
            sport: 0,
            dport: 0,
            tot_len_mtu: tot_len,
            ifindex: in_ifindex,
            tos_flowinfo: tos,
            src: *src,
            dst: server.addr,
            vlan_proto: 0,
            vlan_tci: 0,
            smac: [0; 6],
            dmac: [0; 6],
        };
        // SAFETY: FibParams has the layout of struct bpf_fib_lookup.
        let rc = unsafe {
            bpf_fib_lookup(
                ctx.ctx as *mut _,
                &mut fib as *mut FibParams as *mut _,
                size_of::<FibParams>() as i32,
                0,
            )
        };
        match rc {
            FIB_SUCCESS => {
                if let Some(c) = cached {
                    // SAFETY: per-CPU slot, no concurrent writer on this CPU. With the
                    // MTU check requested, a successful lookup returns the route's MTU.
                    unsafe {
                        *c = NextHop {
                            stamp: now,
                            addr: server.addr,
                            generation: server.generation,
                            in_ifindex,
                            ifindex: fib.ifindex,
                            mtu: fib.tot_len_mtu,
                            smac: fib.smac,
                            dmac: fib.dmac,
                            _pad: [0; 4],
                        }
                    };
                }
                Route::Via {
                    ifindex: fib.ifindex,
                    smac: fib.smac,
                    dmac: fib.dmac,
                }
            }
            FIB_FRAG_NEEDED => Route::TooBig {
                mtu: fib.tot_len_mtu,
            },
            FIB_NO_NEIGH => Route::Fail(Reason::DropNoNeighbour),
            _ => Route::Fail(Reason::DropNoRoute),
        }
    }

    /// Writes the new Ethernet header at the front of a packet whose old L2 header now
    /// sits `shift` (>= 20) bytes further in, keeping its EtherType and VLAN tag.
    #[inline(always)]
    fn write_l2(
        ctx: &XdpContext,
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

    #[inline(always)]
    fn transmit(ctx: &XdpContext, ifindex: u32) -> Verdict {
        if ifindex == ctx.ingress_ifindex() as u32 {
            Verdict::new(xdp_action::XDP_TX, Reason::Forwarded)
        } else {
            // SAFETY: plain helper call.
            let action = unsafe { bpf_redirect(ifindex, 0) } as u32;
            Verdict::new(action, Reason::Forwarded)
        }
    }

    /// Prepends `outer` (the IPv4 or IPv6 outer header) at `l3_off`, moving the L2 header
    /// in front of it with the next hop's MACs, and sends the frame out of `ifindex`.
    #[inline(always)]
    fn push_outer<H: Copy>(
        ctx: &XdpContext,
        l3_off: usize,
        outer: H,
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    ) -> Verdict {
        let len = size_of::<H>();
        // SAFETY: plain helper call; every pointer is re-derived afterwards.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(len as i32)) } != 0 {
            return drop(Reason::DropAdjustFailed);
        }
        if write_l2(ctx, l3_off, len, dmac, smac).is_none() {
            return drop(Reason::DropAdjustFailed);
        }
        let Some(o) = ptr_at::<H>(ctx, l3_off) else {
            return drop(Reason::DropAdjustFailed);
        };
        // SAFETY: bounds checked.
        unsafe { *o = outer };
        transmit(ctx, ifindex)
    }

    // A subprogram of its own: inlined, its stack would add to the caller's 512 bytes.
    #[inline(never)]
    fn encap_v4(
        ctx: &XdpContext,
        p: &Parsed,
        s: &Settings,
        server_id: u32,
        server: &ServerValue,
    ) -> Verdict {
        let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, p.l3_off) else {
            return drop(Reason::DropMalformedIpv4);
        };
        // SAFETY: bounds checked.
        let inner = unsafe { *inner };
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&s.source_v4);
        let outer_len = p.ip_len as u32 + IPV4_LEN as u32;
        if outer_len > 0xffff {
            return drop(Reason::DropTooBig);
        }
        let (ifindex, smac, dmac) = match route(
            ctx,
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
                    return drop(Reason::DropTooBig);
                }
                return Verdict::too_big(mtu);
            }
            Route::Fail(r) => return drop(r),
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
            // SAFETY: plain helper call.
            let id = unsafe { bpf_get_prandom_u32() } as u16;
            outer.set_id(id);
        }
        push_outer(ctx, p.l3_off, outer, ifindex, smac, dmac)
    }

    // A subprogram of its own: inlined, its stack would add to the caller's 512 bytes.
    #[inline(never)]
    fn encap_v6(
        ctx: &XdpContext,
        p: &Parsed,
        s: &Settings,
        server_id: u32,
        server: &ServerValue,
    ) -> Verdict {
        let Some(inner) = ptr_at::<Ipv6Hdr>(ctx, p.l3_off) else {
            return drop(Reason::DropMalformedIpv6);
        };
        // SAFETY: bounds checked.
        let inner = unsafe { *inner };
        let outer_len = p.ip_len as u32 + IPV6_LEN as u32;
        if outer_len > 0xffff {
            return drop(Reason::DropTooBig);
        }
        let flow_label = client_hash(&p.src, p.sport, true, s.hash_seed) & 0x000f_ffff;
        let flowinfo = (inner.traffic_class() as u32) << 20 | flow_label;
        let (ifindex, smac, dmac) = match route(
            ctx,
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
            Route::TooBig { mtu } => return Verdict::too_big(mtu),
            Route::Fail(r) => return drop(r),
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

    /// Bytes of the offending packet quoted in an ICMP error: its IP header and the
    /// first 8 bytes of its payload (RFC 792, RFC 1191), enough to find the socket.
    const QUOTE_V4: usize = IPV4_LEN + 8;
    const QUOTE_V6: usize = IPV6_LEN + 8;

    /// Resizes the packet for an ICMP error: grows the head by `shift` (the new IP and
    /// ICMP headers) and cuts the tail so that only the quote follows. Returns the old
    /// Ethernet header, read before its bytes get overwritten.
    #[inline(always)]
    fn icmp_resize(
        ctx: &XdpContext,
        l3_off: usize,
        frame_len: u32,
        shift: usize,
        quote: usize,
    ) -> Option<EthHdr> {
        // SAFETY: plain helper call; pointers re-derived afterwards.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(shift as i32)) } != 0 {
            return None;
        }
        let new_len = l3_off + shift + quote;
        // The verifier forbids arithmetic on data_end, so the length comes from the parser.
        let cur_len = frame_len as usize + shift;
        // SAFETY: plain helper call; pointers re-derived afterwards.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len as i32 - cur_len as i32) } != 0 {
            return None;
        }
        let old_eth = ptr_at::<EthHdr>(ctx, shift)?;
        // SAFETY: bounds checked; copied out.
        Some(unsafe { *old_eth })
    }

    /// Turns the packet into an ICMP "fragmentation needed" from the VIP to the client,
    /// advertising the MTU left after the encapsulation overhead, and bounces it back.
    ///
    /// Layout after the rewrite: [L2][IPv4][ICMP][quoted IPv4 header + 8 bytes]. The
    /// quote is the packet's own header, already in place once the head grows by
    /// IPv4 + ICMP and the old L2 header's bytes are overwritten.
    #[inline(never)]
    fn icmp_too_big_v4(ctx: &XdpContext, l3_off: usize, frame_len: u32, route_mtu: u16) -> Verdict {
        let shift = IPV4_LEN + ICMP_LEN;
        let Some(old_eth) = icmp_resize(ctx, l3_off, frame_len, shift, QUOTE_V4) else {
            return drop(Reason::DropAdjustFailed);
        };
        let Some(quote) = ptr_at::<Ipv4Hdr>(ctx, shift + l3_off) else {
            return drop(Reason::DropAdjustFailed);
        };
        let (client_mac, my_mac) = (old_eth.src, old_eth.dst);
        // SAFETY: bounds checked; copied before the old L2 header is overwritten.
        let (client, vip) = unsafe { ((*quote).src, (*quote).dst) };
        if write_l2(ctx, l3_off, shift, client_mac, my_mac).is_none() {
            return drop(Reason::DropAdjustFailed);
        }
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
        let mtu = route_mtu.saturating_sub(IPV4_LEN as u16);
        let (Some(ip_p), Some(icmp_p)) = (
            ptr_at::<Ipv4Hdr>(ctx, l3_off),
            ptr_at::<IcmpHdr>(ctx, l3_off + IPV4_LEN),
        ) else {
            return drop(Reason::DropAdjustFailed);
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
        let Some(body) = ptr_at::<[u8; ICMP_LEN + QUOTE_V4]>(ctx, l3_off + IPV4_LEN) else {
            return drop(Reason::DropAdjustFailed);
        };
        // SAFETY: bounds checked; read in place.
        let sum = csum::finish(csum::add_bytes(0, unsafe { &*body }));
        // SAFETY: icmp_p is still in bounds (nothing resized since).
        unsafe { (*icmp_p).check = sum.to_be_bytes() };
        Verdict::new(xdp_action::XDP_TX, Reason::IcmpTooBig)
    }

    /// Turns the packet into an ICMPv6 "packet too big" from the VIP to the client;
    /// layout as for IPv4.
    #[inline(never)]
    fn icmp_too_big_v6(ctx: &XdpContext, l3_off: usize, frame_len: u32, route_mtu: u16) -> Verdict {
        let shift = IPV6_LEN + ICMP_LEN;
        let Some(old_eth) = icmp_resize(ctx, l3_off, frame_len, shift, QUOTE_V6) else {
            return drop(Reason::DropAdjustFailed);
        };
        let Some(quote) = ptr_at::<Ipv6Hdr>(ctx, shift + l3_off) else {
            return drop(Reason::DropAdjustFailed);
        };
        let (client_mac, my_mac) = (old_eth.src, old_eth.dst);
        // SAFETY: bounds checked; copied before the old L2 header is overwritten.
        let (client, vip) = unsafe { ((*quote).src, (*quote).dst) };
        if write_l2(ctx, l3_off, shift, client_mac, my_mac).is_none() {
            return drop(Reason::DropAdjustFailed);
        }
        let upper_len = (ICMP_LEN + QUOTE_V6) as u32;
        let pseudo = csum::ipv6_pseudo(&vip, &client, upper_len, IPPROTO_ICMPV6);
        let mtu = route_mtu.saturating_sub(IPV6_LEN as u16) as u32;
        let (Some(ip_p), Some(icmp_p)) = (
            ptr_at::<Ipv6Hdr>(ctx, l3_off),
            ptr_at::<IcmpHdr>(ctx, l3_off + IPV6_LEN),
        ) else {
            return drop(Reason::DropAdjustFailed);
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
        let Some(body) = ptr_at::<[u8; ICMP_LEN + QUOTE_V6]>(ctx, l3_off + IPV6_LEN) else {
            return drop(Reason::DropAdjustFailed);
        };
        // SAFETY: bounds checked; read in place.
        let sum = csum::finish(csum::add_bytes(pseudo, unsafe { &*body }));
        // SAFETY: icmp_p is still in bounds.
        unsafe { (*icmp_p).check = sum.to_be_bytes() };
        Verdict::new(xdp_action::XDP_TX, Reason::IcmpTooBig)
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
