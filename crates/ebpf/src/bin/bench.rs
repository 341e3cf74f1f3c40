//! XDP programs of the forwarding benchmark (`crates/bench`, section `forwarding`).
//!
//! - `bench_gen` is a traffic generator: the benchmark runs it with BPF_PROG_TEST_RUN in
//!   live-frames mode on the generator's veth, and every XDP_TX it returns sends one frame
//!   to the device under test. Live mode recycles its pages without resetting them, and the
//!   devices under test rewrite frames in place (Ricochet prepends an outer header), so the
//!   generator writes the whole frame every time: Ethernet, IPv4 (checksum included), TCP.
//!   Packet `n` belongs to flow `n % flow_count`; a flow has its own client address and
//!   port and goes to VIP `flow % vip_count`, so the set of five-tuples is exactly
//!   `flow_count` whatever the number of VIPs.
//! - `bench_sink` counts (per CPU) and drops what comes back to the generator's veth (a
//!   veth delivers XDP_TX frames promptly only to a peer with an XDP program), and counts
//!   apart the IP-in-IP frames among them (Ricochet's output).
//! - `bench_drop` drops everything: the device under test that measures the generator's
//!   own ceiling.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Only the BPF build of this binary is meaningful.
}

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::xdp_action,
        macros::{map, xdp},
        maps::{Array, PerCpuArray},
        programs::XdpContext,
    };
    use ricochet_ebpf::{
        csum,
        headers::{
            EthHdr, Ipv4Hdr, ETH_LEN, ETH_P_IP, IPPROTO_IPIP, IPPROTO_TCP, IPV4_LEN, IP_DF, TCP_LEN,
        },
    };

    /// The generator's parameters (entry 0 of `GEN_CONFIG`), written by the benchmark.
    /// Its layout is mirrored in `crates/bench/src/forwarding.rs` (`GenConfig`).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct GenConfig {
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        /// First client address; flow `f` uses `client_base + f / PORTS_PER_CLIENT`.
        client_base: [u8; 4],
        /// First VIP; flow `f` goes to `vip_base + f % vip_count`.
        vip_base: [u8; 4],
        vip_count: u32,
        flow_count: u32,
        /// Destination port, big endian.
        dport: [u8; 2],
        /// Length of the frames (Ethernet header included); at least 54.
        frame_len: u16,
    }
    const _: () = assert!(core::mem::size_of::<GenConfig>() == 32);

    /// Client ports per client address: ports 1024..1024+PORTS_PER_CLIENT.
    const PORTS_PER_CLIENT: u32 = 64_000;
    /// Frames are written up to this length (the rest of a longer frame keeps its bytes).
    const MAX_FRAME: usize = 128;

    #[map]
    static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);
    /// Frames generated (per CPU); also the packet sequence number.
    #[map]
    static GEN_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
    /// Frames received by `bench_sink` (per CPU).
    #[map]
    static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
    /// Of those, IPv4 frames carrying IP-in-IP (protocol 4): what Ricochet sends.
    #[map]
    static SINK_IPIP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct TcpHdr {
        sport: [u8; 2],
        dport: [u8; 2],
        seq: [u8; 4],
        ack: [u8; 4],
        off_flags: [u8; 2],
        window: [u8; 2],
        check: [u8; 2],
        urg: [u8; 2],
    }

    #[xdp]
    pub fn bench_gen(ctx: XdpContext) -> u32 {
        let Some(cfg) = GEN_CONFIG.get(0) else {
            return xdp_action::XDP_ABORTED;
        };
        let Some(count) = GEN_COUNT.get_ptr_mut(0) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        let n = unsafe {
            let n = *count;
            *count = n + 1;
            n
        };
        let flows = if cfg.flow_count == 0 {
            1
        } else {
            cfg.flow_count
        };
        let vips = if cfg.vip_count == 0 { 1 } else { cfg.vip_count };
        let flow = (n % flows as u64) as u32;
        let client = u32::from_be_bytes(cfg.client_base).wrapping_add(flow / PORTS_PER_CLIENT);
        let vip = u32::from_be_bytes(cfg.vip_base).wrapping_add(flow % vips);
        let sport = (1024 + flow % PORTS_PER_CLIENT) as u16;

        let start = ctx.data();
        let end = ctx.data_end();
        let frame_len = end - start;
        let hdrs = ETH_LEN + IPV4_LEN + TCP_LEN;
        if frame_len < hdrs || frame_len > MAX_FRAME {
            return xdp_action::XDP_ABORTED;
        }
        let ip_len = (frame_len - ETH_LEN) as u16;

        let eth = EthHdr {
            dst: cfg.dst_mac,
            src: cfg.src_mac,
            proto: ETH_P_IP.to_be_bytes(),
        };
        let mut ip = Ipv4Hdr {
            ver_ihl: 0x45,
            tos: 0,
            tot_len: ip_len.to_be_bytes(),
            id: (n as u16).to_be_bytes(),
            frag_off: IP_DF.to_be_bytes(),
            ttl: 64,
            proto: IPPROTO_TCP,
            check: [0; 2],
            src: client.to_be_bytes(),
            dst: vip.to_be_bytes(),
        };
        ip.check = csum::ipv4_header(&ip).to_be_bytes();
        // No TCP checksum: nothing on the path reads it (the devices under test forward
        // or drop, the sink drops).
        let tcp = TcpHdr {
            sport: sport.to_be_bytes(),
            dport: cfg.dport,
            seq: (n as u32).to_be_bytes(),
            ack: [0, 0, 0, 1],
            off_flags: [5 << 4, 0x10],
            window: [0xff, 0xff],
            check: [0; 2],
            urg: [0; 2],
        };
        // SAFETY: the frame holds at least `hdrs` bytes (checked above); the header
        // structs have alignment 1.
        unsafe {
            if start + hdrs > end {
                return xdp_action::XDP_ABORTED;
            }
            *(start as *mut EthHdr) = eth;
            *((start + ETH_LEN) as *mut Ipv4Hdr) = ip;
            *((start + ETH_LEN + IPV4_LEN) as *mut TcpHdr) = tcp;
        }
        // Zero the payload: a recycled page holds whatever the last device wrote there.
        let mut off = hdrs;
        while off < MAX_FRAME {
            if start + off + 1 > end {
                break;
            }
            // SAFETY: bounds checked just above.
            unsafe { *((start + off) as *mut u8) = 0 };
            off += 1;
        }
        xdp_action::XDP_TX
    }

    #[xdp]
    pub fn bench_sink(ctx: XdpContext) -> u32 {
        count(&SINK_COUNT);
        let start = ctx.data();
        if start + ETH_LEN + IPV4_LEN <= ctx.data_end() {
            // SAFETY: bounds checked just above; the header structs have alignment 1.
            let (eth, ip) = unsafe {
                (
                    &*(start as *const EthHdr),
                    &*((start + ETH_LEN) as *const Ipv4Hdr),
                )
            };
            if eth.proto == ETH_P_IP.to_be_bytes() && ip.proto == IPPROTO_IPIP {
                count(&SINK_IPIP);
            }
        }
        xdp_action::XDP_DROP
    }

    #[inline(always)]
    fn count(map: &PerCpuArray<u64>) {
        if let Some(c) = map.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *c += 1 };
        }
    }

    #[xdp]
    pub fn bench_drop(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_DROP
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
