//! Types shared by Ricochet's kernel programs and its userspace.
//!
//! Every map key and value is `#[repr(C)]` with no hidden padding (explicit `_pad`
//! fields, checked by const assertions), multi-byte network fields are stored as
//! big-endian byte arrays, and all integers that are not on the wire are native
//! endian. The kernel side reads them in place; userspace builds them from
//! `core::net` types through the constructors below.
#![no_std]

pub mod hash;
pub mod probe;

/// Declares a `#[repr(u32)]` enum of counters whose variants are numbered from 0 in
/// order, with `COUNT`, `ALL` (in index order), `name()` (the stable snake_case name of
/// status output and metrics) and `from_index()` generated from the one list, so that
/// a new variant cannot be left out of any of them.
#[macro_export]
macro_rules! counted_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in index order (`ALL[i] as u32 == i`).
            pub const ALL: [$name; <[$name]>::len(&[$($name::$variant),+])] =
                [$($name::$variant),+];
            /// Number of variants: the size of the map the variants index.
            pub const COUNT: u32 = $name::ALL.len() as u32;

            /// Stable snake_case name, used in status output and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant of map index `index`.
            pub const fn from_index(index: u32) -> Option<$name> {
                if index < $name::COUNT {
                    Some($name::ALL[index as usize])
                } else {
                    None
                }
            }
        }
    };
}

/// Address family tag stored in keys (not the kernel's AF_* numbers, so that a zeroed
/// key is never a valid one).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Names of the maps in the load-balancer object (also their pin names).
pub mod maps {
    pub const VIPS: &str = "VIPS";
    pub const SERVICES: &str = "SERVICES";
    pub const FLOWS: &str = "FLOWS";
    pub const SERVERS: &str = "SERVERS";
    pub const MAGLEV: &str = "MAGLEV";
    pub const SERVICE_STATS: &str = "SVC_STATS";
    pub const SERVER_STATS: &str = "SRV_STATS";
    pub const REASONS: &str = "REASONS";
    pub const SETTINGS: &str = "SETTINGS";
    /// Per-CPU cache of resolved next hops, indexed by server id.
    pub const NEXT_HOPS: &str = "NEXT_HOPS";
    /// Per-CPU counters of [`crate::Event`]s.
    pub const EVENTS: &str = "EVENTS";
    /// Decapsulation object: VIPs the server accepts inside IP-in-IP.
    pub const DECAP_VIPS: &str = "DECAP_VIPS";
    pub const DECAP_STATS: &str = "DECAP_STATS";
}

/// Default capacities; each is overridable at load time by the engine.
pub mod limits {
    /// Service ids index the per-service counters.
    pub const MAX_SERVICES: u32 = 4096;
    /// Server ids index `SERVERS` and the per-server counters.
    pub const MAX_SERVERS: u32 = 16384;
    /// (VIP, protocol, port) entries; a port range takes one entry per port.
    pub const MAX_SERVICE_PORTS: u32 = 65536;
    pub const MAX_VIPS: u32 = 4096;
    /// Default flow-table size (LRU).
    pub const DEFAULT_FLOWS: u32 = 1_000_000;
    /// Slots of the shared Maglev array: tables are allocated as regions in it, and a
    /// changed table is written to a fresh region before the service switches over.
    pub const DEFAULT_MAGLEV_SLOTS: u32 = 4 * 65537 * 8;
    pub const MAX_DECAP_VIPS: u32 = 1024;
    /// Outer TTL / hop limit of encapsulated packets.
    pub const OUTER_TTL: u8 = 64;
}

macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}

/// Key of `VIPS` (and of the decapsulator's `DECAP_VIPS`): one virtual IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    /// IPv4 addresses occupy the first four bytes; the rest is zero.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}
assert_size!(VipKey, 20);

/// Value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipValue {
    /// `VIP_*` bits.
    pub flags: u32,
}
assert_size!(VipValue, 4);

/// The VIP has a TCP service covering every port (port 0 entry in `SERVICES`).
pub const VIP_TCP_ALL_PORTS: u32 = 1 << 0;
/// The VIP has a UDP service covering every port.
pub const VIP_UDP_ALL_PORTS: u32 = 1 << 1;

/// Key of `SERVICES`: (VIP, protocol, destination port). Port 0 means every port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Big endian, as on the wire.
    pub port: [u8; 2],
    pub proto: u8,
    pub family: u8,
}
assert_size!(ServiceKey, 20);

/// Value of `SERVICES`. Replaced whole (hash-map updates are atomic for readers), which
/// is how a service switches to a new Maglev table in one step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into the per-service counters.
    pub service_id: u32,
    /// First slot of this service's Maglev table in `MAGLEV`.
    pub table_offset: u32,
    /// Table size M (prime); 0 means the pool has no usable server.
    pub table_size: u32,
    /// `SERVICE_*` bits.
    pub flags: u32,
}
assert_size!(ServiceValue, 16);

/// Hash on source IP and source port (Avi's "consistent hash with source IP and
/// port"); without it, on source IP only.
pub const SERVICE_HASH_SRC_PORT: u32 = 1 << 0;

/// Key of `FLOWS`: the five-tuple as received.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
assert_size!(FlowKey, 40);

/// Value of `FLOWS`: the server chosen for the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub server_id: u32,
    /// Must equal the server slot's generation; a slot reused for another server gets a
    /// new generation, so flows of the old server are re-hashed instead of misdelivered.
    pub generation: u32,
}
assert_size!(FlowValue, 8);

/// Server slot state in `SERVERS`.
pub const SERVER_FREE: u8 = 0;
/// In its pool's Maglev table: receives new and established flows.
pub const SERVER_ACTIVE: u8 = 1;
/// Left the Maglev table (disabled for draining, or down): keeps established flows.
pub const SERVER_DRAINING: u8 = 2;

/// Value of `SERVERS`, indexed by server id.
///
/// Array-map updates are plain copies, so userspace changes a slot in an order that no
/// torn read can misuse: see `ricochet-dataplane`'s server slot allocator.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerValue {
    /// Encapsulation destination: the server's own address.
    pub addr: [u8; 16],
    pub family: u8,
    /// `SERVER_*` state.
    pub state: u8,
    pub _pad: [u8; 2],
    pub generation: u32,
    /// Stable tag of the owning pool (hash of its name), so that a restarted engine can
    /// adopt the pinned slots of the same (pool, server).
    pub pool_tag: u32,
    pub _reserved: u32,
}
assert_size!(ServerValue, 32);

/// Value of `NEXT_HOPS` (per CPU, indexed by server id): the next hop that
/// `bpf_fib_lookup` resolved for the server, reused while it is younger than
/// [`NEXT_HOP_MAX_AGE_JIFFIES`] and was resolved for the same server (generation and
/// address) and ingress interface. Only successful lookups are stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// `bpf_jiffies64()` when resolved (never 0 on a running kernel: jiffies start high).
    pub stamp: u64,
    /// The server's address and generation the lookup was made for.
    pub addr: [u8; 16],
    pub generation: u32,
    /// Interface the packet came in on (an input of the lookup).
    pub in_ifindex: u32,
    /// Egress interface.
    pub ifindex: u32,
    /// MTU of the route (what the lookup's MTU check compared with).
    pub mtu: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 4],
}
assert_size!(NextHop, 56);

/// Lifetime of a `NEXT_HOPS` entry, in jiffies: 1 s at HZ=250 (Debian's default),
/// 0.83 s at HZ=300, 0.25 s at HZ=1000, 2.5 s at HZ=100. A route, MTU or neighbour
/// (MAC) change reaches packets of servers already cached within that time.
pub const NEXT_HOP_MAX_AGE_JIFFIES: u64 = 250;

/// Packet, byte and new-flow counters (per CPU, per service or per server).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}
assert_size!(Counters, 24);

/// Engine-wide settings, entry 0 of `SETTINGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Outer source of IPv4-in-IPv4 packets: the engine's own address.
    pub source_v4: [u8; 4],
    /// Outer source of IPv6-in-IPv6 packets.
    pub source_v6: [u8; 16],
    /// Seed of the flow hash (must match the seed the Maglev tables were built for only
    /// in that every engine of a cluster uses the same one: it picks slots, not servers).
    pub hash_seed: u32,
    /// `SETTINGS_*` bits.
    pub flags: u32,
    pub _reserved: u32,
}
assert_size!(Settings, 32);

/// `source_v4` is set.
pub const SETTINGS_HAVE_V4: u32 = 1 << 0;
/// `source_v6` is set.
pub const SETTINGS_HAVE_V6: u32 = 1 << 1;

counted_enum! {
    /// Why the program gave a packet the verdict it did; indexes `REASONS`.
    ///
    /// Every packet is counted under exactly one reason. The README's "Limits" section
    /// documents each one.
    pub enum Reason {
        /// Encapsulated and sent to a server (XDP_TX or redirect).
        Forwarded => "forwarded",
        /// Not IPv4/IPv6 (ARP, LLDP, ...): passed to the kernel.
        PassNotIp => "pass_not_ip",
        /// IP but not to a VIP: passed to the kernel.
        PassNotVip => "pass_not_vip",
        /// Frame too short for its Ethernet or VLAN header: passed (the kernel drops it).
        PassTruncatedL2 => "pass_truncated_l2",
        /// IPv4 header malformed (version, IHL < 5, total length vs frame): dropped.
        DropMalformedIpv4 => "drop_malformed_ipv4",
        /// IPv6 header truncated or payload length beyond the frame: dropped.
        DropMalformedIpv6 => "drop_malformed_ipv6",
        /// To a VIP with IPv4 options: dropped (not supported).
        DropIpv4Options => "drop_ipv4_options",
        /// To a VIP, an IPv4 fragment: dropped (not supported).
        DropFragment => "drop_fragment",
        /// To a VIP with an IPv6 extension header: dropped (not supported).
        DropIpv6ExtHeader => "drop_ipv6_ext_header",
        /// To a VIP, ICMP/ICMPv6: dropped (VIPs answer no ICMP).
        DropIcmp => "drop_icmp_to_vip",
        /// To a VIP, a protocol other than TCP/UDP/ICMP: dropped.
        DropUnsupportedProto => "drop_unsupported_protocol",
        /// TCP/UDP header truncated: dropped.
        DropTruncatedL4 => "drop_truncated_l4",
        /// To a VIP, a port with no virtual service: dropped.
        DropNoService => "drop_no_service",
        /// The service's pool has no usable server: dropped.
        DropNoServer => "drop_no_server",
        /// No engine source address for the family is configured: dropped.
        DropNoSource => "drop_no_source_address",
        /// Encapsulated size exceeds the egress MTU: answered with ICMP frag-needed or
        /// ICMPv6 packet-too-big.
        IcmpTooBig => "icmp_too_big_sent",
        /// Like `IcmpTooBig` but the packet could not be turned into the ICMP error
        /// (no DF on IPv4, or the rewrite failed): dropped.
        DropTooBig => "drop_too_big",
        /// The FIB has no route to the server (or forwarding is disabled): dropped.
        DropNoRoute => "drop_no_route",
        /// The next hop's neighbour entry is not resolved: dropped; the engine keeps
        /// neighbours of servers resolved.
        DropNoNeighbour => "drop_no_neighbour",
        /// bpf_xdp_adjust_head/tail failed: dropped.
        DropAdjustFailed => "drop_adjust_failed",
    }
}

counted_enum! {
    /// Why the decapsulator passed or dropped a packet; indexes `DECAP_STATS`.
    pub enum DecapReason {
        /// Outer header removed; the inner packet goes up the stack.
        Decapsulated => "decapsulated",
        /// Not IP-in-IP: passed untouched.
        PassNotTunnel => "pass_not_tunnel",
        /// IP-in-IP whose inner destination is not a configured VIP: dropped (no open relay).
        DropInnerNotVip => "drop_inner_not_vip",
        /// Truncated or malformed outer/inner header: dropped.
        DropMalformed => "drop_malformed",
        /// bpf_skb_adjust_room failed: dropped.
        DropAdjustFailed => "drop_adjust_failed",
    }
}

counted_enum! {
    /// Things that went wrong in the load balancer without changing a packet's fate
    /// (which its [`Reason`] records); indexes `EVENTS`.
    pub enum Event {
        /// A new flow's `FLOWS` insert failed (the kernel could not allocate an entry):
        /// the packet was forwarded, and the flow's next packet is hashed again.
        FlowInsertFailed => "flow_insert_failed",
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    use core::net::IpAddr;

    // SAFETY: each type is repr(C), Copy, and has no padding (asserted above), so any
    // byte pattern of its size is a valid value.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipValue {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for ServerValue {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for NextHop {}

    /// (16-byte address, family tag) of an IP address.
    pub fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                out[..4].copy_from_slice(&v4.octets());
                (out, FAMILY_V4)
            }
            IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
        }
    }

    /// The address stored in `addr` with tag `family`, if the tag is valid.
    pub fn addr_from_bytes(addr: [u8; 16], family: u8) -> Option<IpAddr> {
        match family {
            FAMILY_V4 => Some(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
            FAMILY_V6 => Some(IpAddr::from(addr)),
            _ => None,
        }
    }

    impl VipKey {
        pub fn new(ip: IpAddr) -> Self {
            let (addr, family) = addr_bytes(ip);
            VipKey {
                addr,
                family,
                _pad: [0; 3],
            }
        }
        pub fn ip(&self) -> Option<IpAddr> {
            addr_from_bytes(self.addr, self.family)
        }
    }

    impl ServiceKey {
        /// `port` 0 is the every-port entry.
        pub fn new(ip: IpAddr, proto: u8, port: u16) -> Self {
            let (addr, family) = addr_bytes(ip);
            ServiceKey {
                addr,
                port: port.to_be_bytes(),
                proto,
                family,
            }
        }
        pub fn ip(&self) -> Option<IpAddr> {
            addr_from_bytes(self.addr, self.family)
        }
        pub fn port(&self) -> u16 {
            u16::from_be_bytes(self.port)
        }
    }

    impl FlowKey {
        pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> Self {
            let (src, family) = addr_bytes(src);
            let (dst, _) = addr_bytes(dst);
            FlowKey {
                src,
                dst,
                sport: sport.to_be_bytes(),
                dport: dport.to_be_bytes(),
                proto,
                family,
                _pad: [0; 2],
            }
        }
    }

    impl ServerValue {
        pub fn ip(&self) -> Option<IpAddr> {
            addr_from_bytes(self.addr, self.family)
        }
    }

    impl core::ops::AddAssign for Counters {
        fn add_assign(&mut self, o: Counters) {
            self.packets += o.packets;
            self.bytes += o.bytes;
            self.new_flows += o.new_flows;
        }
    }
}
#[cfg(feature = "user")]
pub use user::{addr_bytes, addr_from_bytes};
