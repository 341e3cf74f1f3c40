//! Types shared by Ricochet's kernel programs and its userspace.
//!
//! Every map key and value is `#[repr(C)]` with no hidden padding (explicit `_pad`
//! fields, checked by const assertions), multi-byte network fields are stored as
//! big-endian byte arrays, and all integers that are not on the wire are native
//! endian. The kernel side reads them in place; userspace builds them from
//! `core::net` types through the constructors below.
#![no_std]

pub mod checksum;
pub mod hash;
pub mod probe;
pub mod vip_filter;

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

/// Declares a `#[repr(transparent)]` newtype over an integer holding bit flags, with
/// its named flags as associated consts, `const` constructors and tests the kernel
/// programs can call, `|`/`&`, and a `Debug` that names the bits.
///
/// Every value of the integer is a valid value of the type (unknown bits are kept, not
/// rejected), so a map struct holding one stays `aya::Pod`: a field read from a map
/// must never be a Rust enum, whose invalid discriminants are undefined behaviour.
#[macro_export]
macro_rules! bit_flags {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($int:ty) {
            $($(#[$fmeta:meta])* const $flag:ident = $value:expr;)+
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        $vis struct $name($int);

        impl $name {
            $($(#[$fmeta])* pub const $flag: $name = $name($value);)+
            /// No flag set.
            pub const EMPTY: $name = $name(0);
            /// Every named flag with its name, in declaration order.
            pub const NAMED: &'static [(&'static str, $name)] =
                &[$((stringify!($flag), $name::$flag)),+];
            /// The union of the named flags.
            pub const KNOWN: $name = $name(0 $(| $value)+);

            /// The flags of `bits`, unknown bits included (kept as they are).
            #[inline(always)]
            pub const fn from_bits(bits: $int) -> Self {
                $name(bits)
            }
            /// The raw bits.
            #[inline(always)]
            pub const fn bits(self) -> $int {
                self.0
            }
            /// Every bit of `other` is set in `self`.
            #[inline(always)]
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
            /// Some bit of `other` is set in `self`.
            #[inline(always)]
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }
            /// No bit is set.
            #[inline(always)]
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
            /// The bits of `self` or `other`.
            #[inline(always)]
            pub const fn union(self, other: Self) -> Self {
                $name(self.0 | other.0)
            }
            /// The bits of `self` that are not in `other`.
            #[inline(always)]
            pub const fn difference(self, other: Self) -> Self {
                $name(self.0 & !other.0)
            }
            /// The bits set that no named flag has (a newer writer's, or corruption).
            #[inline(always)]
            pub const fn unknown(self) -> $int {
                self.0 & !$name::KNOWN.0
            }
            /// Sets the bits of `other`.
            #[inline(always)]
            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }
            /// Clears the bits of `other`.
            #[inline(always)]
            pub fn remove(&mut self, other: Self) {
                self.0 &= !other.0;
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            #[inline(always)]
            fn bitor(self, o: $name) -> $name {
                self.union(o)
            }
        }
        impl core::ops::BitOrAssign for $name {
            #[inline(always)]
            fn bitor_assign(&mut self, o: $name) {
                self.insert(o)
            }
        }
        impl core::ops::BitAnd for $name {
            type Output = $name;
            #[inline(always)]
            fn bitand(self, o: $name) -> $name {
                $name(self.0 & o.0)
            }
        }

        /// `Name(A | B)`, unknown bits in hex (`Name(A | 0x8)`), `Name(0)` if empty.
        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "("))?;
                let mut first = true;
                for (n, v) in $name::NAMED {
                    if self.contains(*v) {
                        if !first {
                            f.write_str(" | ")?;
                        }
                        f.write_str(n)?;
                        first = false;
                    }
                }
                let rest = self.unknown();
                if first {
                    write!(f, "{:#x}", rest)?;
                } else if rest != 0 {
                    write!(f, " | {:#x}", rest)?;
                }
                f.write_str(")")
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
    /// The bitmap over VIP addresses that spares non-VIP packets a lookup
    /// ([`crate::vip_filter`]).
    pub const VIP_FILTER: &str = "VIP_FILTER";
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
    /// Per-CPU token buckets of the ICMP "too big" errors ([`crate::TokenBucket`]).
    pub const ICMP_BUCKETS: &str = "ICMP_BUCKETS";
    /// Decapsulation object: VIPs the server accepts inside IP-in-IP.
    pub const DECAP_VIPS: &str = "DECAP_VIPS";
    pub const DECAP_STATS: &str = "DECAP_STATS";
    /// Decapsulation object: UDP ports (big endian) that carry GUE.
    pub const DECAP_GUE_PORTS: &str = "DECAP_GUE_PORTS";
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
    /// While a service's flow table is not consulted, one established TCP packet in
    /// this many (at random) still looks its flow up: it keeps a long-lived flow's
    /// entry recent in the LRU and its `seen` stamp fresh, and records it again if it
    /// was evicted.
    pub const FLOW_SAMPLE: u32 = 16;
    /// Slots of the shared Maglev array: tables are allocated as regions in it, and a
    /// changed table is written to a fresh region before the service switches over.
    pub const DEFAULT_MAGLEV_SLOTS: u32 = 4 * 65537 * 8;
    pub const MAX_DECAP_VIPS: u32 = 1024;
    pub const MAX_DECAP_GUE_PORTS: u32 = 16;
    /// Outer TTL / hop limit of encapsulated packets.
    pub const OUTER_TTL: u8 = 64;
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" errors each CPU sends per
    /// second at most, on average (a token bucket, RFC 4443 2.4(f)); the same budget as
    /// Linux's default `net.ipv4.icmp_msgs_per_sec`, but per CPU.
    pub const ICMP_TOO_BIG_PER_SEC: u64 = 1000;
    /// Errors a CPU may send back to back after a quiet period (the bucket's depth), as
    /// Linux's default `net.ipv4.icmp_msgs_burst`.
    pub const ICMP_TOO_BIG_BURST: u64 = 50;
}

/// Size of the field `f` points at; lets [`assert_layout!`] sum field sizes in a const.
#[doc(hidden)]
pub const fn field_size<T, F>(_f: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// Asserts at compile time that the struct `$t` has exactly the fields listed (a
/// destructuring pattern without `..`: a field added later must be listed), that their
/// sizes add up to the struct's size (no hidden padding: the kernel hashes and copies
/// every byte, and userspace's `aya::Pod` impls rely on it) and that the size is `$n`.
#[macro_export]
macro_rules! assert_layout {
    ($t:ident { $($f:ident),+ $(,)? }, $n:expr) => {
        const _: () = {
            #[allow(dead_code)]
            fn every_field_listed(v: &$t) {
                let $t { $($f: _),+ } = *v;
            }
            let mut sum = 0;
            $(sum += $crate::field_size(|v: &$t| &v.$f);)+
            assert!(
                sum == core::mem::size_of::<$t>(),
                concat!(stringify!($t), " has hidden padding")
            );
            assert!(core::mem::size_of::<$t>() == $n);
        };
    };
}

/// Key of `VIPS` (and of the decapsulator's `DECAP_VIPS`): one virtual IP.
///
/// Aligned to 4 (its size is a multiple of 4, so no byte is added): the kernel then
/// builds and hashes it with word copies, where an alignment of 1 costs a load and a
/// store per byte of the address.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    /// IPv4 addresses occupy the first four bytes; the rest is zero.
    pub addr: [u8; 16],
    pub family: u8,
    /// Zero. Two scalars rather than `[u8; 3]`: the kernel builds the key with plain
    /// stores, where a 3-byte array of zeros costs a call to a byte-loop `memset`.
    pub _pad: u8,
    pub _pad2: u16,
}
assert_layout!(
    VipKey {
        addr,
        family,
        _pad,
        _pad2
    },
    20
);

impl VipKey {
    /// The key of `addr` (16-byte form: IPv4 in the first four bytes, zeros after) with
    /// family tag `family`; the padding is zero. Callable by the kernel programs.
    #[inline(always)]
    pub const fn from_raw(addr: [u8; 16], family: u8) -> Self {
        VipKey {
            addr,
            family,
            _pad: 0,
            _pad2: 0,
        }
    }
}

/// Value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipValue {
    pub flags: VipFlags,
}
assert_layout!(VipValue { flags }, 4);

bit_flags! {
    /// Flags of a VIP (`VipValue::flags`).
    pub struct VipFlags(u32) {
        /// The VIP has a TCP service covering every port (port 0 entry in `SERVICES`).
        const TCP_ALL_PORTS = 1 << 0;
        /// The VIP has a UDP service covering every port.
        const UDP_ALL_PORTS = 1 << 1;
    }
}

/// Key of `SERVICES`: (VIP, protocol, destination port). Port 0 means every port.
/// Aligned to 4 as [`VipKey`] is, for the same reason.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Big endian, as on the wire.
    pub port: [u8; 2],
    pub proto: u8,
    pub family: u8,
}
assert_layout!(
    ServiceKey {
        addr,
        port,
        proto,
        family
    },
    20
);

impl ServiceKey {
    /// The key of (VIP `addr` in 16-byte form, `proto`, big-endian `port`); port 0 is
    /// the every-port entry. Callable by the kernel programs.
    #[inline(always)]
    pub const fn from_raw(addr: [u8; 16], port: [u8; 2], proto: u8, family: u8) -> Self {
        ServiceKey {
            addr,
            port,
            proto,
            family,
        }
    }
}

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
    pub flags: ServiceFlags,
    /// With [`ServiceFlags::ENCAP_GUE`]: the outer UDP destination port, big endian (the
    /// servers' `fou` or decapsulator port). Zero otherwise.
    pub gue_port: [u8; 2],
}
assert_layout!(
    ServiceValue {
        service_id,
        table_offset,
        table_size,
        flags,
        gue_port
    },
    16
);

bit_flags! {
    /// Flags of a virtual service (`ServiceValue::flags`). 16 bits: the value's last two
    /// bytes are [`ServiceValue::gue_port`] (entries written when the flags were 32 bits
    /// wide read back the same, with port 0, since only low bits were ever set).
    ///
    /// The encapsulation is IP-in-IP unless one of `ENCAP_GRE` or `ENCAP_GUE` is set
    /// (never both).
    pub struct ServiceFlags(u16) {
        /// Hash on source IP and source port (Avi's "consistent hash with source IP and
        /// port"); without it, on source IP only.
        const HASH_SRC_PORT = 1 << 0;
        /// Established TCP packets look their flow up in `FLOWS` (set by the engine with
        /// every change of the service's Maglev table, cleared once a scan of `FLOWS`
        /// finds no live flow of the service whose recorded server the current table
        /// would not pick). Clear: they take the Maglev pick, and one in
        /// [`limits::FLOW_SAMPLE`] still looks up, to keep the flow's entry fresh.
        const CONSULT_FLOWS = 1 << 1;
        /// GRE (RFC 2784): outer IP protocol 47 and a 4-byte GRE header (no checksum,
        /// key or sequence number) whose protocol type is the inner packet's EtherType.
        const ENCAP_GRE = 1 << 2;
        /// GUE "variant 1" (as katran sends it): outer UDP to [`ServiceValue::gue_port`]
        /// with the inner IP packet right after the UDP header; the UDP source port
        /// comes from the flow hash, so that servers spread flows over their queues.
        const ENCAP_GUE = 1 << 3;
        /// L2 DSR (IPVS's "direct routing", Avi's MAC-based translation): no
        /// encapsulation; the frame goes to the server's MAC address on the engine's own
        /// segment with the IP packet unchanged. Never with `ENCAP_GRE` or `ENCAP_GUE`.
        const L2_DSR = 1 << 4;
    }
}

/// Key of `FLOWS`: the five-tuple as received.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
assert_layout!(
    FlowKey {
        src,
        dst,
        sport,
        dport,
        proto,
        family,
        _pad
    },
    40
);

impl FlowKey {
    /// The key of a five-tuple as received (addresses in 16-byte form, ports big
    /// endian); the padding is zero. Callable by the kernel programs.
    #[inline(always)]
    pub const fn from_raw(
        src: [u8; 16],
        dst: [u8; 16],
        sport: [u8; 2],
        dport: [u8; 2],
        proto: u8,
        family: u8,
    ) -> Self {
        FlowKey {
            src,
            dst,
            sport,
            dport,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

/// Value of `FLOWS`: the server chosen for the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub server_id: u32,
    /// Must equal the server slot's generation; a slot reused for another server gets a
    /// new generation, so flows of the old server are re-hashed instead of misdelivered.
    pub generation: u32,
    /// When a packet of the flow last looked it up (or recorded it), in units of
    /// [`FLOW_CLOCK_SHIFT`] of the monotonic coarse clock: the engine's scan takes a
    /// flow unseen for longer than its idle timeout for closed.
    pub seen: u32,
}
assert_layout!(
    FlowValue {
        server_id,
        generation,
        seen
    },
    12
);

/// `FlowValue::seen` is `CLOCK_MONOTONIC_COARSE` in ns shifted right by this (units of
/// 2^30 ns, about 1.07 s; wraps after 146 years).
pub const FLOW_CLOCK_SHIFT: u32 = 30;

/// The `FlowValue::seen` stamp of a monotonic coarse time in ns.
#[inline(always)]
pub const fn flow_clock(coarse_ns: u64) -> u32 {
    (coarse_ns >> FLOW_CLOCK_SHIFT) as u32
}

/// State of a server slot in `SERVERS` (`ServerValue::state`).
///
/// A newtype over the byte, not an enum: the kernel reads it from a map userspace
/// writes, and every byte must be a valid value. The kernel treats a byte other than
/// the three named ones like `DRAINING` (not picked for new flows, keeps recorded ones).
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ServerState(u8);

impl ServerState {
    /// Unused slot (a zeroed entry).
    pub const FREE: ServerState = ServerState(0);
    /// In its pool's Maglev table: receives new and established flows.
    pub const ACTIVE: ServerState = ServerState(1);
    /// Left the Maglev table (disabled for draining, or down): keeps established flows.
    pub const DRAINING: ServerState = ServerState(2);
    /// The named states, in value order.
    pub const ALL: [ServerState; 3] = [Self::FREE, Self::ACTIVE, Self::DRAINING];

    /// The state stored as `raw` (any byte; see [`ServerState::name`]).
    #[inline(always)]
    pub const fn from_raw(raw: u8) -> Self {
        ServerState(raw)
    }
    /// The stored byte.
    #[inline(always)]
    pub const fn raw(self) -> u8 {
        self.0
    }
    /// `"free"`, `"active"` or `"draining"`; `None` for a byte no named state has.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("free"),
            1 => Some("active"),
            2 => Some("draining"),
            _ => None,
        }
    }
}

/// `ServerState::ACTIVE`, or `ServerState(7)` for an unnamed byte.
impl core::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            0 => f.write_str("ServerState::FREE"),
            1 => f.write_str("ServerState::ACTIVE"),
            2 => f.write_str("ServerState::DRAINING"),
            raw => write!(f, "ServerState({raw})"),
        }
    }
}

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
    pub state: ServerState,
    pub _pad: [u8; 2],
    pub generation: u32,
    /// Stable tag of the owning pool (hash of its name), so that a restarted engine can
    /// adopt the pinned slots of the same (pool, server).
    pub pool_tag: u32,
    pub _reserved: u32,
}
assert_layout!(
    ServerValue {
        addr,
        family,
        state,
        _pad,
        generation,
        pool_tag,
        _reserved
    },
    32
);

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
    /// 1 when the server itself is the next hop (on a segment of `ifindex`, no router
    /// between): what L2 DSR needs.
    pub on_link: u8,
    /// Zero; makes the 8-byte alignment of `stamp` explicit (no hidden tail bytes).
    pub _pad: [u8; 5],
}
assert_layout!(
    NextHop {
        stamp,
        addr,
        generation,
        in_ifindex,
        ifindex,
        mtu,
        smac,
        dmac,
        on_link,
        _pad
    },
    56
);

/// Lifetime of a `NEXT_HOPS` entry, in jiffies: 1 s at HZ=250 (Debian's default),
/// 0.83 s at HZ=300, 0.25 s at HZ=1000, 2.5 s at HZ=100. A route, MTU or neighbour
/// (MAC) change reaches packets of servers already cached within that time.
pub const NEXT_HOP_MAX_AGE_JIFFIES: u64 = 250;

/// Value of `ICMP_BUCKETS` (per CPU, one entry): the budget of ICMP "too big" errors,
/// a token bucket kept in nanoseconds of credit. Each error costs
/// `1e9 / ICMP_TOO_BIG_PER_SEC` ns; credit accrues with time since `stamp_ns` up to
/// `ICMP_TOO_BIG_BURST` errors' worth. A zeroed entry (a fresh map) is a full bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last update; a stamp ahead of the
    /// clock accrues nothing until the clock passes it.
    pub stamp_ns: u64,
    /// Unspent credit, ns.
    pub credit_ns: u64,
}
assert_layout!(
    TokenBucket {
        stamp_ns,
        credit_ns
    },
    16
);

impl TokenBucket {
    /// Credit one ICMP error costs, ns.
    pub const COST_NS: u64 = 1_000_000_000 / limits::ICMP_TOO_BIG_PER_SEC;
    /// The bucket's depth, ns.
    pub const DEPTH_NS: u64 = Self::COST_NS * limits::ICMP_TOO_BIG_BURST;

    /// Accrues credit up to `now_ns` and spends one error's worth if there is enough:
    /// true when the error may be sent.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.stamp_ns);
        let credit = self.credit_ns.saturating_add(elapsed);
        let credit = if credit > Self::DEPTH_NS {
            Self::DEPTH_NS
        } else {
            credit
        };
        if now_ns > self.stamp_ns {
            self.stamp_ns = now_ns;
        }
        if credit < Self::COST_NS {
            self.credit_ns = credit;
            return false;
        }
        self.credit_ns = credit - Self::COST_NS;
        true
    }
}

/// Packet, byte and new-flow counters (per CPU, per service or per server).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}
assert_layout!(
    Counters {
        packets,
        bytes,
        new_flows
    },
    24
);

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
    pub flags: SettingsFlags,
    pub _reserved: u32,
}
assert_layout!(
    Settings {
        source_v4,
        source_v6,
        hash_seed,
        flags,
        _reserved
    },
    32
);

bit_flags! {
    /// Flags of the engine-wide settings (`Settings::flags`).
    pub struct SettingsFlags(u32) {
        /// `source_v4` is set.
        const HAVE_V4 = 1 << 0;
        /// `source_v6` is set.
        const HAVE_V6 = 1 << 1;
    }
}

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
        /// To a VIP, ICMP/ICMPv6 that is not an error quoting a packet (echo requests
        /// among them): dropped (VIPs answer no ICMP).
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
        /// Like `IcmpTooBig`, but this CPU's budget of "too big" errors is spent
        /// (RFC 4443 2.4(f)): dropped without an answer. See
        /// [`limits::ICMP_TOO_BIG_PER_SEC`].
        DropTooBigRateLimited => "drop_too_big_rate_limited",
        /// Like `IcmpTooBig`, but the source is a multicast address (224.0.0.0/4,
        /// ff00::/8): dropped without an answer (RFC 1122 3.2.2, RFC 4443 2.4(e)).
        DropTooBigMulticastSource => "drop_too_big_multicast_source",
        /// Like `IcmpTooBig`, but the source is the IPv4 limited broadcast
        /// 255.255.255.255: dropped without an answer.
        DropTooBigBroadcastSource => "drop_too_big_broadcast_source",
        /// Like `IcmpTooBig`, but the source is unspecified (0.0.0.0, ::): dropped
        /// without an answer.
        DropTooBigUnspecifiedSource => "drop_too_big_unspecified_source",
        /// An ICMP error to a VIP (destination unreachable, time exceeded, parameter
        /// problem; ICMPv6 also packet too big) about a packet of a flow: sent to the
        /// flow's server, encapsulated like the flow, so the server hears it (path MTU
        /// discovery of its replies).
        ForwardedIcmp => "forwarded_icmp_error",
        /// An ICMP error to a VIP whose quote is not a VIP's TCP or UDP packet: truncated
        /// (less than the IP header and 8 bytes), another family, IPv4 options or a
        /// non-first fragment, IPv6 extension headers, another protocol, or a source that
        /// is not the VIP. Dropped.
        DropIcmpBadQuote => "drop_icmp_bad_quote",
        /// For an L2 DSR service, the route to the server goes through a router (the
        /// server is not on a segment of the engine): dropped. The engine refuses such a
        /// configuration; this catches a route that changed since.
        DropL2NotOnLink => "drop_l2_server_not_on_link",
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
        /// A TCP packet that is not a connection's SYN looked its flow up and found no
        /// usable entry (evicted, or recorded by another load balancer or before a
        /// restart), and was hashed and recorded again: katran's signal that flows were
        /// reshuffled. Only packets that look up count: every one of a service whose
        /// flow table is consulted (`ServiceFlags::CONSULT_FLOWS`), one in
        /// `limits::FLOW_SAMPLE` of the others.
        FlowMissNonSyn => "flow_miss_non_syn",
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
    unsafe impl aya::Pod for TokenBucket {}

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
            VipKey::from_raw(addr, family)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check_counted<T: Copy + PartialEq + core::fmt::Debug>(
        all: &[T],
        index: impl Fn(T) -> u32,
        name: impl Fn(T) -> &'static str,
        from_index: impl Fn(u32) -> Option<T>,
    ) {
        for (i, v) in all.iter().enumerate() {
            assert_eq!(index(*v), i as u32, "{v:?} is at its index in ALL");
            assert_eq!(from_index(i as u32), Some(*v));
            let n = name(*v);
            assert!(
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{n}"
            );
            for w in &all[..i] {
                assert_ne!(name(*w), n, "names are unique");
            }
        }
        assert_eq!(from_index(all.len() as u32), None);
    }

    #[test]
    fn counted_enums_list_every_variant_in_index_order() {
        assert_eq!(Reason::COUNT as usize, Reason::ALL.len());
        check_counted(&Reason::ALL, |r| r as u32, Reason::name, Reason::from_index);
        check_counted(
            &DecapReason::ALL,
            |r| r as u32,
            DecapReason::name,
            DecapReason::from_index,
        );
        check_counted(&Event::ALL, |r| r as u32, Event::name, Event::from_index);
        check_counted(
            &probe::ProbeReason::ALL,
            |r| r as u32,
            probe::ProbeReason::name,
            probe::ProbeReason::from_index,
        );
        // Names are an interface (status, metrics): a few pinned.
        assert_eq!(Reason::Forwarded.name(), "forwarded");
        assert_eq!(Reason::DropIcmp.name(), "drop_icmp_to_vip");
        // Indices are kept across versions: new reasons are appended.
        assert_eq!(Reason::from_index(19), Some(Reason::DropAdjustFailed));
    }

    #[test]
    fn token_bucket_spends_and_refills() {
        let cost = TokenBucket::COST_NS;
        assert_eq!(cost, 1_000_000, "1000 per second");
        // A fresh (zeroed) bucket at any realistic clock is full: a burst, then none.
        let mut b = TokenBucket::default();
        let t = 5_000_000_000;
        for i in 0..limits::ICMP_TOO_BIG_BURST {
            assert!(b.take(t), "error {i} of the burst");
        }
        assert!(!b.take(t), "burst spent");
        assert!(!b.take(t + cost - 1), "not yet a whole error's worth");
        assert!(b.take(t + cost), "one refilled");
        assert!(!b.take(t + cost));
        // Refill is capped at the depth, however long the pause.
        let later = t + 1000 * cost;
        let sent = (0..1000).take_while(|_| b.take(later)).count();
        assert_eq!(sent as u64, limits::ICMP_TOO_BIG_BURST);
        // A stamp ahead of the clock accrues nothing and is kept.
        let mut b = TokenBucket {
            stamp_ns: u64::MAX,
            credit_ns: 2 * cost,
        };
        assert!(b.take(t) && b.take(t));
        assert!(!b.take(t));
        assert_eq!(b.stamp_ns, u64::MAX);
    }

    /// Writes `v`'s Debug into a stack buffer (the crate is no_std).
    fn debug(v: &impl core::fmt::Debug) -> ([u8; 64], usize) {
        struct Buf([u8; 64], usize);
        impl core::fmt::Write for Buf {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                let end = self.1 + s.len();
                self.0.get_mut(self.1..end).ok_or(core::fmt::Error)?;
                self.0[self.1..end].copy_from_slice(s.as_bytes());
                self.1 = end;
                Ok(())
            }
        }
        let mut b = Buf([0; 64], 0);
        core::fmt::write(&mut b, format_args!("{v:?}")).unwrap();
        (b.0, b.1)
    }

    fn assert_debug(v: &impl core::fmt::Debug, want: &str) {
        let (buf, len) = debug(v);
        assert_eq!(core::str::from_utf8(&buf[..len]).unwrap(), want);
    }

    #[test]
    fn flags_keep_their_bits_and_test_them() {
        // The bits are the map format: pinned.
        assert_eq!(VipFlags::TCP_ALL_PORTS.bits(), 1);
        assert_eq!(VipFlags::UDP_ALL_PORTS.bits(), 2);
        assert_eq!(ServiceFlags::HASH_SRC_PORT.bits(), 1);
        assert_eq!(SettingsFlags::HAVE_V4.bits(), 1);
        assert_eq!(SettingsFlags::HAVE_V6.bits(), 2);
        assert_eq!(VipFlags::KNOWN.bits(), 3);
        assert_eq!(VipFlags::default(), VipFlags::EMPTY);

        let both = VipFlags::TCP_ALL_PORTS | VipFlags::UDP_ALL_PORTS;
        assert!(both.contains(VipFlags::TCP_ALL_PORTS) && both.contains(VipFlags::UDP_ALL_PORTS));
        assert!(both.contains(both) && both.contains(VipFlags::EMPTY));
        let tcp = VipFlags::TCP_ALL_PORTS;
        assert!(!tcp.contains(VipFlags::UDP_ALL_PORTS));
        assert!(!tcp.contains(both), "contains needs every bit");
        assert!(tcp.intersects(both) && !tcp.intersects(VipFlags::UDP_ALL_PORTS));
        assert!(VipFlags::EMPTY.is_empty() && !tcp.is_empty());
        assert_eq!(both.difference(tcp), VipFlags::UDP_ALL_PORTS);
        assert_eq!(both & VipFlags::UDP_ALL_PORTS, VipFlags::UDP_ALL_PORTS);

        let mut f = SettingsFlags::EMPTY;
        f |= SettingsFlags::HAVE_V6;
        assert_eq!(f.bits(), 2);
        f.insert(SettingsFlags::HAVE_V4);
        assert_eq!(f, SettingsFlags::HAVE_V4 | SettingsFlags::HAVE_V6);
        f.remove(SettingsFlags::HAVE_V6);
        assert_eq!(f, SettingsFlags::HAVE_V4);

        // Every bit pattern is a value: unknown bits are kept and reported, not lost.
        let odd = VipFlags::from_bits(0x8000_0001);
        assert_eq!(odd.bits(), 0x8000_0001);
        assert!(odd.contains(VipFlags::TCP_ALL_PORTS));
        assert_eq!(odd.unknown(), 0x8000_0000);
        assert_eq!(both.unknown(), 0);

        // Usable in consts, as the kernel program's are.
        const C: ServiceFlags = ServiceFlags::EMPTY.union(ServiceFlags::HASH_SRC_PORT);
        const { assert!(C.contains(ServiceFlags::HASH_SRC_PORT) && !C.is_empty()) };
        assert_eq!(C, ServiceFlags::HASH_SRC_PORT);
    }

    #[test]
    fn flags_debug_names_their_bits() {
        assert_debug(&VipFlags::EMPTY, "VipFlags(0x0)");
        assert_debug(&VipFlags::UDP_ALL_PORTS, "VipFlags(UDP_ALL_PORTS)");
        assert_debug(
            &(VipFlags::TCP_ALL_PORTS | VipFlags::UDP_ALL_PORTS),
            "VipFlags(TCP_ALL_PORTS | UDP_ALL_PORTS)",
        );
        assert_debug(
            &SettingsFlags::from_bits(0x12),
            "SettingsFlags(HAVE_V6 | 0x10)",
        );
        assert_debug(&ServiceFlags::from_bits(0x40), "ServiceFlags(0x40)");
    }

    #[test]
    fn server_state_names_and_keeps_every_byte() {
        assert_eq!(
            ServerState::default(),
            ServerState::FREE,
            "a zeroed slot is free"
        );
        for (i, s) in ServerState::ALL.iter().enumerate() {
            assert_eq!(s.raw() as usize, i, "the stored byte is the map format");
        }
        assert_eq!(ServerState::FREE.name(), Some("free"));
        assert_eq!(ServerState::ACTIVE.name(), Some("active"));
        assert_eq!(ServerState::DRAINING.name(), Some("draining"));
        for b in 3..=u8::MAX {
            let s = ServerState::from_raw(b);
            assert_eq!(s.raw(), b);
            assert_eq!(s.name(), None, "{b}");
            assert!(!ServerState::ALL.contains(&s));
        }
        assert_debug(&ServerState::ACTIVE, "ServerState::ACTIVE");
        assert_debug(&ServerState::FREE, "ServerState::FREE");
        assert_debug(&ServerState::DRAINING, "ServerState::DRAINING");
        assert_debug(&ServerState::from_raw(7), "ServerState(7)");
    }

    #[test]
    fn typed_fields_keep_the_map_layout() {
        use core::mem::{align_of, size_of};
        assert_eq!(size_of::<VipFlags>(), 4);
        assert_eq!(align_of::<VipFlags>(), align_of::<u32>());
        assert_eq!(size_of::<ServiceFlags>(), 2);
        assert_eq!(size_of::<SettingsFlags>(), 4);
        assert_eq!(size_of::<ServerState>(), 1);
        assert_eq!(core::mem::offset_of!(ServiceValue, flags), 12);
        assert_eq!(core::mem::offset_of!(ServiceValue, gue_port), 14);
        assert_eq!(core::mem::offset_of!(ServerValue, state), 17);
        assert_eq!(core::mem::offset_of!(Settings, flags), 24);
    }

    #[test]
    fn key_constructors_zero_the_padding() {
        let k = VipKey::from_raw([7; 16], FAMILY_V6);
        assert_eq!(
            (k.addr, k.family, k._pad, k._pad2),
            ([7; 16], FAMILY_V6, 0, 0)
        );
        let f = FlowKey::from_raw([1; 16], [2; 16], [3, 4], [5, 6], PROTO_UDP, FAMILY_V4);
        assert_eq!(f._pad, [0; 2]);
        assert_eq!(
            (f.sport, f.dport, f.proto, f.family),
            ([3, 4], [5, 6], 17, 4)
        );
        let s = ServiceKey::from_raw([9; 16], [0, 80], PROTO_TCP, FAMILY_V4);
        assert_eq!(
            (s.addr, s.port, s.proto, s.family),
            ([9; 16], [0, 80], 6, 4)
        );
    }
}
