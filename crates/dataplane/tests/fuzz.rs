//! Differential fuzz of the XDP load balancer: random and mutated frames of every header
//! class of the README's reason table (VLAN and QinQ tags, non-IP, truncations at every
//! layer, IPv4 options, fragments, IPv6 extension headers, ICMP, other protocols, bad
//! versions and lengths, frames too big to encapsulate, random bytes) go through the
//! program with BPF_PROG_TEST_RUN in the fixture lab, through the host build of the
//! program's parse and service-lookup stages (`ricochet_ebpf::parse::classify`, the code
//! the kernel runs), and through a reference classifier written here from the README's
//! table and the lab's world (never from the program's code). On every frame the three
//! must agree (the kernel's verdict and output, the host build's reason or service and
//! parsed fields, the reference's verdict and reason), no run may abort, and the reason
//! counters must grow by exactly the predicted reasons: checked every [`BATCH`] frames
//! (one syscall per reason), and on a difference the batch is replayed frame by frame
//! with the counters read around each run to name the frame.
//!
//! Cost: 1,000,000 frames took 38 s on this project's 2-CPU machine under other load
//! (about 38 µs a frame: generation, the host build, one test run).
//!
//! Frames are generated deterministically from a seed and the frame's index; a failure
//! prints both, the frame in hex, and the command that replays just that frame.
//!
//! - `RICOCHET_FUZZ_FRAMES`: how many frames (default [`DEFAULT_FRAMES`]).
//! - `RICOCHET_FUZZ_SEED`: the seed (decimal or 0x-hex; default [`DEFAULT_SEED`]), or
//!   `random` for a fresh one (printed).
//! - `RICOCHET_FUZZ_FIRST`: index of the first frame (to replay one).
//!
//! Run as root: `cargo test -p ricochet-dataplane --test fuzz -- --nocapture`.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ricochet_common::{
    Reason, ServiceKey, ServiceValue, TokenBucket, VipFlags, VipKey, PROTO_TCP, PROTO_UDP,
};
use ricochet_dataplane::Dataplane;
use ricochet_ebpf::{
    packet::HostPacket,
    parse::{classify, Classified},
    service::Lookup,
};
use support::lab::*;
use support::net::{CLIENT_MAC, LB_MAC, LB_MTU, LB_V4, WEB01};

/// Frames of one default run (`cargo xtask test`).
const DEFAULT_FRAMES: u64 = 1_000_000;
const DEFAULT_SEED: u64 = 0x5eed_f022_0001;
/// Frames between two full reads of the reason counters.
const BATCH: u64 = 64;

// ---------------------------------------------------------------------------------
// A small deterministic generator (SplitMix64), seeded per frame.

struct Rng(u64);

impl Rng {
    fn for_frame(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------
// Frame generation

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_LLDP: u16 = 0x88cc;

/// IPv6 next headers the program treats as extension headers.
const V6_EXT: [u8; 8] = [0, 43, 60, 51, 50, 135, 59, 44];
/// Ports of the lab's services, and some that have none.
const PORTS: [u16; 12] = [80, 8080, 53, 81, 443, 8081, 8082, 8083, 22, 0, 65535, 5353];

/// Destinations: the VIPs mostly, some addresses next to them, and addresses the VIP
/// filter lets through though they are no VIPs (its false positives).
fn dst4(r: &mut Rng) -> Ipv4Addr {
    match r.below(20) {
        0..=8 => VIP4,
        9..=12 => VIP4_ALL_PORTS,
        13 => VIP4_NO_SERVICE,
        14 => NOT_VIP4,
        15 => *TWIN4,
        16..=17 => Ipv4Addr::from(r.next() as u32),
        _ => LB_V4,
    }
}

fn dst6(r: &mut Rng) -> Ipv6Addr {
    match r.below(20) {
        0..=12 => VIP6,
        13 => NOT_VIP6,
        14..=15 => *TWIN6,
        16..=17 => {
            let (hi, lo) = (r.next(), r.next());
            Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo))
        }
        _ => WEB01.v6,
    }
}

/// The lab's filter twins of VIP4 and VIP6, found once.
static TWIN4: std::sync::LazyLock<Ipv4Addr> = std::sync::LazyLock::new(filter_twin4);
static TWIN6: std::sync::LazyLock<Ipv6Addr> = std::sync::LazyLock::new(filter_twin6);

fn src4(r: &mut Rng) -> Ipv4Addr {
    if r.chance(50) {
        CLIENT4
    } else {
        Ipv4Addr::from(r.next() as u32)
    }
}

fn src6(r: &mut Rng) -> Ipv6Addr {
    if r.chance(50) {
        CLIENT6
    } else {
        let (hi, lo) = (r.next(), r.next());
        Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo))
    }
}

/// The Ethernet header with 0, 1 or 2 tags (any of 802.1Q/802.1ad in any order) and
/// `ether_type` after them.
fn l2(r: &mut Rng, ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1600);
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    let tags = match r.below(10) {
        0..=6 => 0,
        7..=8 => 1,
        _ => 2,
    };
    for _ in 0..tags {
        let tpid = r.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
        f.extend_from_slice(&tpid.to_be_bytes());
        let tci = r.next() as u16;
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn l4(r: &mut Rng, proto: u8, payload: usize) -> Vec<u8> {
    let sport = if r.chance(30) {
        r.pick(&[50412, 1024, 0, 65535])
    } else {
        r.next() as u16
    };
    let dport = if r.chance(85) {
        r.pick(&PORTS)
    } else {
        r.next() as u16
    };
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    match proto {
        PROTO_TCP => {
            h.extend_from_slice(&r.bytes(8)); // seq, ack
            let any = r.byte();
            let flags = r.pick(&[0x02u8, 0x10, 0x18, 0x11, 0x04, any]);
            h.extend_from_slice(&[0x50, flags]);
            h.extend_from_slice(&r.bytes(6)); // window, checksum, urgent
        }
        PROTO_UDP => {
            h.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
            h.extend_from_slice(&r.bytes(2));
        }
        _ => h.extend_from_slice(&r.bytes(4)), // ICMP type, code, checksum
    }
    h.extend_from_slice(&r.bytes(payload));
    h
}

/// An ICMP (`v6`: ICMPv6) message to `to`, mostly an error quoting a reply from `to` (a
/// server's packet from the VIP to a client), with every way its quote can go wrong:
/// other types, truncated quotes, options, later fragments, other protocols and families,
/// another source. `payload` bytes of the quoted packet's payload follow its ports.
fn icmp_error(r: &mut Rng, v6: bool, to: IpAddr, payload: usize) -> Vec<u8> {
    let any = r.byte();
    let kind = if v6 {
        r.pick(&[1, 2, 3, 4, 2, 128, 129, any])
    } else {
        r.pick(&[3, 11, 12, 3, 0, 8, any])
    };
    let mut m = vec![kind, r.byte(), r.byte(), r.byte()];
    m.extend_from_slice(&r.bytes(4));
    let proto = if r.chance(90) {
        r.pick(&[PROTO_TCP, PROTO_UDP])
    } else {
        let any = r.byte();
        r.pick(&[1, 58, 47, 44, 0, any])
    };
    let from = if r.chance(90) {
        to
    } else if v6 {
        IpAddr::V6(src6(r))
    } else {
        IpAddr::V4(src4(r))
    };
    let client = if v6 {
        IpAddr::V6(src6(r))
    } else {
        IpAddr::V4(src4(r))
    };
    let mut quote = Vec::new();
    match (from, client) {
        (IpAddr::V4(from), IpAddr::V4(client)) => {
            let ver_ihl = if r.chance(95) {
                0x45
            } else {
                r.pick(&[0x46, 0x4f, 0x65, any])
            };
            quote.extend_from_slice(&[ver_ihl, r.byte()]);
            quote.extend_from_slice(&r.bytes(4)); // total length, id
            let frag: u16 = match r.below(10) {
                0..=5 => 0x4000,
                6..=7 => 0x2000,
                _ => r.next() as u16,
            };
            quote.extend_from_slice(&frag.to_be_bytes());
            quote.extend_from_slice(&[r.byte(), proto, 0, 0]);
            quote.extend_from_slice(&from.octets());
            quote.extend_from_slice(&client.octets());
        }
        (IpAddr::V6(from), IpAddr::V6(client)) => {
            let version = if r.chance(95) { 0x60 } else { r.byte() & 0xf0 };
            quote.extend_from_slice(&[version, r.byte(), r.byte(), r.byte()]);
            quote.extend_from_slice(&r.bytes(2));
            quote.extend_from_slice(&[proto, r.byte()]);
            quote.extend_from_slice(&from.octets());
            quote.extend_from_slice(&client.octets());
        }
        _ => unreachable!("one family"),
    }
    // The reply's ports: from a service port (mostly), to the client's.
    let sport = if r.chance(85) {
        r.pick(&PORTS)
    } else {
        r.next() as u16
    };
    quote.extend_from_slice(&sport.to_be_bytes());
    quote.extend_from_slice(&r.bytes(6));
    quote.extend_from_slice(&r.bytes(payload));
    let header = if v6 { 40 } else { 20 };
    let keep = match r.below(10) {
        0 => r.range(0, header + 8),
        1 => header + 8,
        _ => quote.len(),
    };
    quote.truncate(keep);
    m.extend_from_slice(&quote);
    m
}

/// Payload sizes: mostly small, some near and above what fits once encapsulated.
fn payload_len(r: &mut Rng) -> usize {
    match r.below(10) {
        0..=6 => r.range(0, 64),
        7 => r.range(64, 1400),
        _ => r.range(1400, 1560),
    }
}

fn ipv4(r: &mut Rng) -> Vec<u8> {
    let proto = match r.below(20) {
        0..=8 => PROTO_TCP,
        9..=14 => PROTO_UDP,
        15..=16 => 1,
        _ => {
            let any = r.byte();
            r.pick(&[2, 4, 41, 47, 50, 132, any])
        }
    };
    let options = if r.chance(8) { r.range(1, 10) * 4 } else { 0 };
    let (src, dst) = (src4(r), dst4(r));
    let len = payload_len(r);
    let seg = if proto == 1 && r.chance(70) {
        icmp_error(r, false, IpAddr::V4(dst), len)
    } else {
        l4(r, proto, len)
    };
    let hdr_len = 20 + options;
    let tos = r.byte();
    let mut ip = vec![0x40 | (hdr_len / 4) as u8, tos];
    ip.extend_from_slice(&((hdr_len + seg.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&r.bytes(2)); // id
    let frag: u16 = match r.below(20) {
        0..=9 => 0x4000,                           // DF
        10..=15 => 0,                              // none
        16 => 0x2000,                              // MF: a first fragment
        17 => (r.next() as u16) & 0x1fff,          // an offset
        18 => 0x4000 | (r.next() as u16 & 0x1fff), // DF and an offset (nonsense)
        _ => r.next() as u16,
    };
    ip.extend_from_slice(&frag.to_be_bytes());
    let ttl = r.byte();
    ip.extend_from_slice(&[ttl, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    for _ in 0..options {
        let any = r.byte();
        ip.push(r.pick(&[1, 0, 0x94, any]));
    }
    let sum = ricochet_testkit::checksum::internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&seg);
    ip
}

fn ipv6(r: &mut Rng) -> Vec<u8> {
    let (src, dst) = (src6(r), dst6(r));
    let next = match r.below(20) {
        0..=8 => PROTO_TCP,
        9..=13 => PROTO_UDP,
        14 => 58,
        15..=17 => r.pick(&V6_EXT),
        _ => {
            let any = r.byte();
            r.pick(&[1, 4, 41, 47, 132, any])
        }
    };
    let mut payload = Vec::new();
    if V6_EXT.contains(&next) {
        // An extension header, then TCP or UDP behind it.
        let inner = r.pick(&[PROTO_TCP, PROTO_UDP]);
        payload.extend_from_slice(&[inner, 0]);
        payload.extend_from_slice(&r.bytes(6));
        let len = payload_len(r);
        payload.extend_from_slice(&l4(r, inner, len));
    } else if next == 58 && r.chance(70) {
        let len = payload_len(r);
        payload = icmp_error(r, true, IpAddr::V6(dst), len);
    } else {
        let len = payload_len(r);
        payload = l4(r, next, len);
    }
    let tc_flow = r.bytes(4);
    let mut ip = vec![
        0x60 | (tc_flow[0] & 0x0f),
        tc_flow[1],
        tc_flow[2],
        tc_flow[3],
    ];
    ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    let hop_limit = r.byte();
    ip.extend_from_slice(&[next, hop_limit]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&payload);
    ip
}

/// Offset of the L3 header after the Ethernet header and up to two tags (as built).
fn built_l3_offset(f: &[u8]) -> usize {
    let mut off = 12;
    while off + 2 <= f.len() && matches!(be16(f, off), ETH_P_8021Q | ETH_P_8021AD) && off < 20 {
        off += 4;
    }
    off + 2
}

/// A frame of one of the base classes: well-formed IPv4 and IPv6 (to VIPs mostly, with
/// every header variant the generators above make), not IP, random bytes.
fn base_frame(r: &mut Rng) -> Vec<u8> {
    match r.below(68) {
        0..=29 => {
            let mut f = l2(r, ETH_P_IP);
            f.extend_from_slice(&ipv4(r));
            f
        }
        30..=54 => {
            let mut f = l2(r, ETH_P_IPV6);
            f.extend_from_slice(&ipv6(r));
            f
        }
        // Not IP.
        55..=59 => {
            let any = r.next() as u16;
            let et = r.pick(&[ETH_P_ARP, ETH_P_LLDP, 0x88e5, 0x0842, any]);
            let mut f = l2(r, et);
            let n = r.range(0, 80);
            f.extend_from_slice(&r.bytes(n));
            f
        }
        // Random bytes behind an IP EtherType, and random bytes altogether.
        60..=64 => {
            let et = r.pick(&[ETH_P_IP, ETH_P_IPV6]);
            let mut f = l2(r, et);
            let n = r.range(0, 120);
            f.extend_from_slice(&r.bytes(n));
            f
        }
        _ => {
            let n = r.range(14, 200);
            r.bytes(n)
        }
    }
}

/// Frame `index` of the run with `seed`: never shorter than 14 bytes (BPF_PROG_TEST_RUN
/// refuses shorter XDP input) and never longer than fits a test-run page.
fn frame(seed: u64, index: u64) -> Vec<u8> {
    let r = &mut Rng::for_frame(seed, index);
    let mut f = match r.below(100) {
        0..=67 => base_frame(r),
        // A frame with some bytes of its headers mutated (lengths, versions, IHL, next
        // headers, ports, tags).
        68..=87 => {
            let mut f = base_frame(r);
            let l3 = built_l3_offset(&f).min(f.len());
            for _ in 0..r.range(1, 4) {
                let window = (f.len() - l3).min(64);
                if window == 0 {
                    break;
                }
                let at = l3 + r.below(window as u64) as usize;
                if r.chance(50) {
                    f[at] ^= 1 << r.below(8);
                } else {
                    f[at] = r.byte();
                }
            }
            f
        }
        // A frame cut short anywhere.
        88..=95 => {
            let mut f = base_frame(r);
            let len = r.range(14.min(f.len()), f.len());
            f.truncate(len);
            f
        }
        // A frame whose IP length field lies.
        _ => {
            let mut f = base_frame(r);
            let l3 = built_l3_offset(&f);
            if f.len() >= l3 + 6 {
                let at = if f[l3] >> 4 == 6 { l3 + 4 } else { l3 + 2 };
                let len = be16(&f, at);
                let lie = match r.below(4) {
                    0 => len.wrapping_add(r.range(1, 8) as u16),
                    1 => len.wrapping_sub(r.range(1, 40) as u16),
                    2 => 0,
                    _ => r.next() as u16,
                };
                f[at..at + 2].copy_from_slice(&lie.to_be_bytes());
            }
            f
        }
    };
    if r.chance(3) {
        // Trailing bytes after the IP packet (Ethernet padding and worse).
        let n = r.range(1, 40);
        f.extend_from_slice(&r.bytes(n));
    }
    f.truncate(3000);
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

// ---------------------------------------------------------------------------------
// The reference: what the README's table and the lab's world say must happen.

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expect {
    action: u32,
    reason: Reason,
}

const fn pass(reason: Reason) -> Expect {
    Expect {
        action: XDP_PASS,
        reason,
    }
}
const fn drop(reason: Reason) -> Expect {
    Expect {
        action: XDP_DROP,
        reason,
    }
}

/// What parsing found in a packet to a VIP with a supported transport.
struct ToVip {
    v6: bool,
    vip: IpAddr,
    src: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    /// The IP packet's length from its header (header included).
    ip_len: usize,
    /// DF set (IPv4).
    df: bool,
    /// An ICMP error about the flow (the other fields are the quoted flow's).
    icmp: bool,
}

fn is_vip(a: IpAddr) -> bool {
    a == IpAddr::V4(VIP4)
        || a == IpAddr::V4(VIP4_ALL_PORTS)
        || a == IpAddr::V4(VIP4_NO_SERVICE)
        || a == IpAddr::V6(VIP6)
}

fn reference(f: &[u8]) -> Expect {
    match reference_stages(f) {
        Ok((p, svc)) => reference_balance(&p, svc),
        Err(r) => Expect {
            action: stage_action(r),
            reason: r,
        },
    }
}

/// The XDP action of a packet stopped by parsing or the service lookup.
fn stage_action(r: Reason) -> u32 {
    match r {
        Reason::PassNotIp | Reason::PassNotVip | Reason::PassTruncatedL2 => XDP_PASS,
        _ => XDP_DROP,
    }
}

/// Parsing and the service lookup: the packet's service, or the reason it stops at.
fn reference_stages(f: &[u8]) -> Result<(ToVip, &'static Service), Reason> {
    if f.len() < 14 {
        return Err(Reason::PassTruncatedL2);
    }
    let mut et = be16(f, 12);
    let mut l3 = 14;
    if et == ETH_P_8021Q || et == ETH_P_8021AD {
        // One tag is parsed; a second one (QinQ) leaves a tag EtherType: not IP.
        if f.len() < 18 {
            return Err(Reason::PassTruncatedL2);
        }
        et = be16(f, 16);
        l3 = 18;
    }
    let p = match et {
        ETH_P_IP => reference_v4(f, l3)?,
        ETH_P_IPV6 => reference_v6(f, l3)?,
        _ => return Err(Reason::PassNotIp),
    };
    let svc = reference_service(&p).ok_or(Reason::DropNoService)?;
    Ok((p, svc))
}

fn reference_v4(f: &[u8], l3: usize) -> Result<ToVip, Reason> {
    if f.len() < l3 + 20 {
        return Err(Reason::DropMalformedIpv4);
    }
    let ip = &f[l3..];
    let (version, hdr_len, total) = (ip[0] >> 4, (ip[0] & 0x0f) as usize * 4, be16(ip, 2));
    let total = total as usize;
    if version != 4 || hdr_len < 20 || total < hdr_len || l3 + total > f.len() {
        return Err(Reason::DropMalformedIpv4);
    }
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    if !is_vip(dst) {
        return Err(Reason::PassNotVip);
    }
    if hdr_len != 20 {
        return Err(Reason::DropIpv4Options);
    }
    let frag = be16(ip, 6);
    if frag & 0x3fff != 0 {
        return Err(Reason::DropFragment);
    }
    let proto = ip[9];
    match proto {
        PROTO_TCP | PROTO_UDP => {}
        1 => return reference_icmp(f, l3, 20, total - 20, dst, frag & 0x4000 != 0),
        _ => return Err(Reason::DropUnsupportedProto),
    }
    let need = if proto == PROTO_TCP { 20 } else { 8 };
    if total - 20 < need || f.len() < l3 + 20 + need {
        return Err(Reason::DropTruncatedL4);
    }
    Ok(ToVip {
        v6: false,
        vip: dst,
        src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        proto,
        sport: be16(ip, 20),
        dport: be16(ip, 22),
        ip_len: total,
        df: frag & 0x4000 != 0,
        icmp: false,
    })
}

fn reference_v6(f: &[u8], l3: usize) -> Result<ToVip, Reason> {
    if f.len() < l3 + 40 {
        return Err(Reason::DropMalformedIpv6);
    }
    let ip = &f[l3..];
    let payload = be16(ip, 4) as usize;
    if ip[0] >> 4 != 6 || l3 + 40 + payload > f.len() {
        return Err(Reason::DropMalformedIpv6);
    }
    let addr = |at: usize| -> IpAddr {
        let b: [u8; 16] = ip[at..at + 16].try_into().unwrap();
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let dst = addr(24);
    if !is_vip(dst) {
        return Err(Reason::PassNotVip);
    }
    let next = ip[6];
    match next {
        PROTO_TCP | PROTO_UDP => {}
        58 => return reference_icmp(f, l3, 40, payload, dst, false),
        44 => return Err(Reason::DropFragment),
        n if V6_EXT.contains(&n) => return Err(Reason::DropIpv6ExtHeader),
        _ => return Err(Reason::DropUnsupportedProto),
    }
    let need = if next == PROTO_TCP { 20 } else { 8 };
    if payload < need || f.len() < l3 + 40 + need {
        return Err(Reason::DropTruncatedL4);
    }
    Ok(ToVip {
        v6: true,
        vip: dst,
        src: addr(8),
        proto: next,
        sport: be16(ip, 40),
        dport: be16(ip, 42),
        ip_len: 40 + payload,
        df: false,
        icmp: false,
    })
}

/// An ICMP message to `vip` (README: errors quoting a VIP's TCP or UDP packet go to the
/// flow's server; other ICMP is dropped): the flow it is about, or where it stops.
/// `hdr` is the IP header's length, `room` what the IP header says follows it.
fn reference_icmp(
    f: &[u8],
    l3: usize,
    hdr: usize,
    room: usize,
    vip: IpAddr,
    df: bool,
) -> Result<ToVip, Reason> {
    let v6 = hdr == 40;
    let icmp = l3 + hdr;
    if f.len() < icmp + 8 || room < 8 {
        return Err(Reason::DropIcmp);
    }
    let errors: &[u8] = if v6 { &[1, 2, 3, 4] } else { &[3, 11, 12] };
    if !errors.contains(&f[icmp]) {
        return Err(Reason::DropIcmp);
    }
    let q = &f[icmp + 8..];
    if room - 8 < hdr + 8 {
        return Err(Reason::DropIcmpBadQuote);
    }
    let (proto, from, client) = if v6 {
        let addr = |at: usize| -> IpAddr {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&q[at..at + 16]).unwrap(),
            ))
        };
        if q[0] >> 4 != 6 {
            return Err(Reason::DropIcmpBadQuote);
        }
        (q[6], addr(8), addr(24))
    } else {
        if q[0] != 0x45 || be16(q, 6) & 0x1fff != 0 {
            return Err(Reason::DropIcmpBadQuote);
        }
        let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(q[at], q[at + 1], q[at + 2], q[at + 3]));
        (q[9], addr(12), addr(16))
    };
    if !(proto == PROTO_TCP || proto == PROTO_UDP) || from != vip {
        return Err(Reason::DropIcmpBadQuote);
    }
    Ok(ToVip {
        v6,
        vip,
        src: client,
        proto,
        sport: be16(q, hdr + 2),
        dport: be16(q, hdr),
        ip_len: hdr + room,
        df,
        icmp: true,
    })
}

/// The service by (VIP, protocol, port), or the VIP's all-ports entry (the lab gives
/// only VIP4_ALL_PORTS one, for TCP).
fn reference_service(p: &ToVip) -> Option<&'static Service> {
    let exact = SERVICES
        .iter()
        .find(|s| s.vip == p.vip && s.proto == p.proto && s.port == p.dport && s.port != 0);
    exact.or_else(|| {
        SERVICES.iter().find(|s| {
            p.vip == IpAddr::V4(VIP4_ALL_PORTS)
                && p.proto == PROTO_TCP
                && s.vip == p.vip
                && s.proto == PROTO_TCP
                && s.port == 0
        })
    })
}

/// The lab's world from here on: the server the Maglev contract picks, and what the
/// lab's FIB says about the way to it.
fn reference_balance(p: &ToVip, svc: &Service) -> Expect {
    if svc.table.is_empty() {
        return drop(Reason::DropNoServer);
    }
    let server = Server::by_id(pick_in(svc.table, svc.flags, p.src, p.sport));
    if server.id == UNROUTABLE_4.id {
        return drop(Reason::DropNoRoute);
    }
    let outer_len = p.ip_len + if p.v6 { 40 } else { 20 };
    // The FIB checks the route's MTU before the neighbour.
    if outer_len > LB_MTU as usize {
        // No ICMP error about an ICMP error.
        if p.icmp || !(p.v6 || p.df) {
            return drop(Reason::DropTooBig);
        }
        // No ICMP error goes to a source that cannot be one (RFC 1812 4.3.2.7, RFC 4443
        // 2.4(e)): the unspecified address, the limited broadcast, multicast.
        return match p.src {
            IpAddr::V4(a) if a.is_unspecified() => drop(Reason::DropTooBigUnspecifiedSource),
            IpAddr::V4(a) if a.is_broadcast() => drop(Reason::DropTooBigBroadcastSource),
            IpAddr::V4(a) if a.is_multicast() => drop(Reason::DropTooBigMulticastSource),
            IpAddr::V6(a) if a.is_multicast() => drop(Reason::DropTooBigMulticastSource),
            IpAddr::V6(a) if a.is_unspecified() => drop(Reason::DropTooBigUnspecifiedSource),
            _ => Expect {
                action: XDP_TX,
                reason: Reason::IcmpTooBig,
            },
        };
    }
    if server.id == UNRESOLVED_4.id {
        return drop(Reason::DropNoNeighbour);
    }
    Expect {
        action: if server.id == WEB04_4.id {
            XDP_REDIRECT
        } else {
            XDP_TX
        },
        reason: if p.icmp {
            Reason::ForwardedIcmp
        } else {
            Reason::Forwarded
        },
    }
}

// ---------------------------------------------------------------------------------
// The host build of the kernel program's parse and lookup stages (`ricochet-ebpf`'s
// `parse::classify`, the code the kernel runs), over the lab's VIPs and services.

struct HostWorld;

static WORLD_FILTER: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(world_filter);

impl Lookup for HostWorld {
    fn vip_filter_word(&self, index: u32) -> u64 {
        WORLD_FILTER.get(index as usize).copied().unwrap_or(0)
    }
    fn vip_flags(&self, key: &VipKey) -> Option<VipFlags> {
        VIPS.iter()
            .find(|(vip, _)| VipKey::new(*vip) == *key)
            .map(|(_, flags)| *flags)
    }
    fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        SERVICES
            .iter()
            .find(|s| s.key() == *key)
            .map(Service::value)
    }
}

/// The host build's classification of `f`.
fn host_classify(f: &[u8]) -> Result<Classified, Reason> {
    let mut buf = f.to_vec();
    let len = buf.len();
    let packet = HostPacket::new(&mut buf, 0, len, 0);
    classify(&packet, &HostWorld)
}

/// The host build must stop where the reference stops, or find the same service and
/// the same fields for balancing.
fn compare_host(f: &[u8]) -> Result<(), String> {
    let host = host_classify(f);
    match (reference_stages(f), host) {
        (Err(want), Err(got)) if want == got => Ok(()),
        (Ok((p, svc)), Ok(c)) => {
            let (src, _) = ricochet_common::addr_bytes(p.src);
            let got = (
                c.service.service_id,
                c.parsed.ip_len as usize,
                c.parsed.src,
                u16::from_be_bytes(c.parsed.sport),
                u16::from_be_bytes(c.parsed.dport),
            );
            let want = (svc.id, p.ip_len, src, p.sport, p.dport);
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "host build parsed (service, ip_len, src, sport, dport) {got:?}, the \
                     reference {want:?}"
                ))
            }
        }
        (want, got) => Err(format!(
            "host build classified it {}, the reference {}",
            describe_stage(got.map(|c| c.service.service_id)),
            describe_stage(want.map(|(_, s)| s.id))
        )),
    }
}

fn describe_stage(r: Result<u32, Reason>) -> String {
    match r {
        Ok(id) => format!("for service {id}"),
        Err(r) => r.name().to_owned(),
    }
}

// ---------------------------------------------------------------------------------
// The run

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v:?}: not a number ({e})")))
}

fn seed() -> u64 {
    match std::env::var("RICOCHET_FUZZ_SEED").as_deref() {
        Ok("random") => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        }
        _ => env_u64("RICOCHET_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
    }
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// A failure's report: the frame, how to replay it, what differed.
fn failure(seed: u64, index: u64, f: &[u8], what: String) -> String {
    format!(
        "frame {index} of seed {seed:#x} ({} bytes): {what}\n  frame: {}\n  replay: \
         RICOCHET_FUZZ_SEED={seed:#x} RICOCHET_FUZZ_FIRST={index} RICOCHET_FUZZ_FRAMES=1 \
         cargo test -p ricochet-dataplane --test fuzz -- --nocapture",
        f.len(),
        hex(f)
    )
}

/// The output frame must be what the verdict implies: untouched when passed or dropped,
/// the input behind an outer header when forwarded, an ICMP error of the quoted size.
fn check_output(f: &[u8], out: &[u8], e: Expect) -> Result<(), String> {
    let l3 = if matches!(be16(f, 12), ETH_P_8021Q | ETH_P_8021AD) {
        18
    } else {
        14
    };
    match e.reason {
        Reason::Forwarded | Reason::ForwardedIcmp => {
            let outer = if f[l3] >> 4 == 6 { 40 } else { 20 };
            if out.len() != f.len() + outer || out[l3 + outer..] != f[l3..] {
                return Err(format!(
                    "forwarded frame is not the input behind a {outer}-byte outer header: {}",
                    hex(out)
                ));
            }
        }
        Reason::IcmpTooBig => {
            // The IP and ICMP headers, quoting the IP header and 8 bytes.
            let want = l3
                + if f[l3] >> 4 == 6 {
                    40 + 8 + 48
                } else {
                    20 + 8 + 28
                };
            if out.len() != want {
                return Err(format!(
                    "ICMP error of {} bytes, not {want}: {}",
                    out.len(),
                    hex(out)
                ));
            }
        }
        _ => {
            if out != f {
                return Err(format!("a passed or dropped frame changed: {}", hex(out)));
            }
        }
    }
    Ok(())
}

/// Fills every CPU's ICMP "too big" budget before a frame the reference answers with an
/// error: the budget depends on the clock (1,000 errors a second per CPU, bursts of 50),
/// which a frame-by-frame reference cannot predict at the rate frames run here. The
/// budget itself is pinned by its own fixtures.
fn refill_before(lab: &mut Lab, want: Expect) {
    if want.reason == Reason::IcmpTooBig {
        // A zeroed bucket is a full one (see `TokenBucket`).
        lab.dp
            .set_icmp_buckets(&TokenBucket::default())
            .expect("refilling the ICMP budget");
    }
}

#[test]
fn program_and_reference_agree_on_random_and_mutated_frames() {
    let seed = seed();
    let frames = env_u64("RICOCHET_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let first = env_u64("RICOCHET_FUZZ_FIRST").unwrap_or(0);
    eprintln!("fuzz: {frames} frames from index {first}, seed {seed:#x}");
    with_lab(|lab| {
        let started = Instant::now();
        let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut predicted = [0u64; Reason::COUNT as usize];
        let mut before = lab.dp.reason_counters().unwrap();
        let mut in_batch = 0;
        for index in first..first + frames {
            let f = frame(seed, index);
            let want = reference(&f);
            if let Err(e) = compare_host(&f) {
                panic!("{}", failure(seed, index, &f, e));
            }
            refill_before(lab, want);
            let got = lab
                .dp
                .test_run(&f, lab.ifindex)
                .unwrap_or_else(|e| panic!("{}", failure(seed, index, &f, format!("{e:#}"))));
            if got.action != want.action {
                panic!(
                    "{}",
                    failure(
                        seed,
                        index,
                        &f,
                        format!(
                            "verdict {} from the program, {} ({}) from the reference",
                            got.action,
                            want.action,
                            want.reason.name()
                        )
                    )
                );
            }
            if let Err(e) = check_output(&f, &got.packet, want) {
                panic!("{}", failure(seed, index, &f, e));
            }
            predicted[want.reason as usize] += 1;
            *by_reason.entry(want.reason.name()).or_insert(0) += 1;
            in_batch += 1;
            if in_batch == BATCH || index + 1 == first + frames {
                let after = lab.dp.reason_counters().unwrap();
                let moved: Vec<(Reason, u64)> = before
                    .iter()
                    .zip(&after)
                    .map(|((r, b), (_, a))| (*r, a - b))
                    .collect();
                let expected: Vec<(Reason, u64)> = Reason::ALL
                    .iter()
                    .map(|r| (*r, predicted[*r as usize]))
                    .collect();
                if moved != expected {
                    // Find the frame: replay the batch one by one, each with its counters.
                    let start = index + 1 - in_batch;
                    let mut culprit = None;
                    for i in start..=index {
                        let f = frame(seed, i);
                        let want = reference(&f);
                        refill_before(lab, want);
                        let c0 = lab.dp.reason_counters().unwrap();
                        lab.dp.test_run(&f, lab.ifindex).unwrap();
                        let c1 = lab.dp.reason_counters().unwrap();
                        let d: Vec<(Reason, u64)> = c0
                            .iter()
                            .zip(&c1)
                            .filter(|((_, b), (_, a))| a != b)
                            .map(|((r, b), (_, a))| (*r, a - b))
                            .collect();
                        if d != [(want.reason, 1)] {
                            culprit = Some(failure(
                                seed,
                                i,
                                &f,
                                format!(
                                    "counted {:?}, the reference predicts {} once",
                                    d.iter()
                                        .map(|(r, n)| format!("{}+{n}", r.name()))
                                        .collect::<Vec<_>>(),
                                    want.reason.name()
                                ),
                            ));
                            break;
                        }
                    }
                    panic!(
                        "reason counters of frames {start}..={index} moved {moved:?}, predicted \
                         {expected:?}\n{}",
                        culprit.unwrap_or_else(|| "(no single frame reproduces it)".into())
                    );
                }
                before = after;
                predicted = [0; Reason::COUNT as usize];
                in_batch = 0;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "fuzz: {frames} frames agreed in {secs:.1} s ({:.1} µs a frame); by reason: {by_reason:?}",
            secs * 1e6 / frames as f64
        );
        if frames >= 100_000 {
            // A run of the default size reaches every reason the lab's world can produce.
            for r in [
                Reason::Forwarded,
                Reason::PassNotIp,
                Reason::PassNotVip,
                Reason::PassTruncatedL2,
                Reason::DropMalformedIpv4,
                Reason::DropMalformedIpv6,
                Reason::DropIpv4Options,
                Reason::DropFragment,
                Reason::DropIpv6ExtHeader,
                Reason::DropIcmp,
                Reason::DropIcmpBadQuote,
                Reason::ForwardedIcmp,
                Reason::DropUnsupportedProto,
                Reason::DropTruncatedL4,
                Reason::DropNoService,
                Reason::DropNoServer,
                Reason::IcmpTooBig,
                Reason::DropTooBig,
                Reason::DropNoRoute,
                Reason::DropNoNeighbour,
            ] {
                assert!(
                    by_reason.get(r.name()).copied().unwrap_or(0) >= 10,
                    "the generator hardly reaches {}: {by_reason:?}",
                    r.name()
                );
            }
        }
    });
}

#[test]
fn the_generator_is_deterministic_and_the_reference_reads_the_readme_table() {
    assert_eq!(frame(7, 42), frame(7, 42));
    assert_ne!(frame(7, 42), frame(7, 43));
    assert_ne!(frame(7, 42), frame(8, 42));
    // Hand-made frames of some rows of the table.
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    f.extend_from_slice(&[0, 42]);
    assert_eq!(reference(&f), pass(Reason::PassTruncatedL2));
    f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    f.extend_from_slice(&[0; 40]);
    assert_eq!(reference(&f), pass(Reason::PassNotIp), "QinQ");
    let mut v4 = vec![0u8; 12];
    v4.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&CLIENT4.octets());
    ip.extend_from_slice(&VIP4.octets());
    ip.extend_from_slice(&[0xc4, 0xec, 0, 80]);
    ip.extend_from_slice(&[0; 16]);
    v4.extend_from_slice(&ip);
    let to = HTTP4.pick(CLIENT4.into(), 0xc4ec);
    assert_eq!(
        reference(&v4),
        Expect {
            action: XDP_TX,
            reason: Reason::Forwarded
        },
        "a SYN to web-vs goes to {to:?}"
    );
    let mut short = v4.clone();
    short.truncate(14 + 30);
    assert_eq!(reference(&short), drop(Reason::DropMalformedIpv4));
    let mut frag = v4.clone();
    frag[14 + 6] = 0x20;
    assert_eq!(reference(&frag), drop(Reason::DropFragment));
}
