//! Per-packet CPU cost of the XDP load balancer, measured with BPF_PROG_TEST_RUN.
//!
//! The program encapsulates (rewrites) packets, and BPF_PROG_TEST_RUN with `repeat > 1`
//! would run it again on its own output, so every sample is one single run on a fresh
//! copy of the input, timed by the kernel. A program that only returns XDP_TX is run the
//! same way in the same rounds: its cost (the test-run timer, the dispatch into the
//! program) is the floor that every XDP program pays, and a path's overhead is its median
//! minus the floor's median.
//!
//! Each round runs the floor and every path once, in a shuffled order, on a thread pinned
//! to one CPU inside a network namespace whose FIB and neighbour table let
//! `bpf_fib_lookup` succeed. Every run's verdict and output size is checked, every new
//! flow must be found in the flow table afterwards (and is deleted again, outside the
//! timed part), and the verdict counters of the whole run must add up exactly to the
//! paths that were run: a mislabelled path fails the section instead of reporting a
//! wrong figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use ricochet_common::{FlowKey, FlowValue, Reason, PROTO_TCP, PROTO_UDP};
use ricochet_config::{Config, Desired};
use ricochet_dataplane::{
    kernel::{KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};
use ricochet_engine::Engine;
use serde::Serialize;

use crate::katran::{self, Katran};
use crate::plot::{self, Axes, BarGroup, Series};
use crate::report::table;
use crate::stats::{percentile_sorted, Summary};
use crate::{Body, Ctx};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

// The network is the fixture lab's (`ricochet_testkit::lab`), built in a network namespace
// of the measuring thread: the load balancer's veth with its addresses, the servers on its
// segment with permanent neighbour entries (the FIB answers with their MACs and the program
// transmits with XDP_TX), forwarding on.
use ricochet_testkit::lab::{
    build_lab_network, CLIENT_MAC, LB_MAC, LB_V4, LB_V6, PEER_MAC,
    UNRESOLVED_V4 as UNRESOLVED_SERVER, WEB01, WEB03,
};
/// The servers on the load balancer's segment.
const SERVERS: [(Ipv4Addr, Ipv6Addr, [u8; 6]); 2] = [
    (WEB01.v4, WEB01.v6, WEB01.mac),
    (WEB03.v4, WEB03.v6, WEB03.mac),
];
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 241);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfc00, 3, 0, 0, 0, 0, 0, 0x24a);
const NOT_VIP4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 99);
/// The VIP's port served by the pool of [`UNRESOLVED_SERVER`].
const UNRESOLVED_PORT: u16 = 8080;
/// A VIP port without a virtual service.
const NO_SERVICE_PORT: u16 = 81;
/// The VIP's port served by a pool whose only server is disabled (Maglev table empty).
const NO_SERVER_PORT: u16 = 8081;
const HASH_SEED: u32 = 0x5eed_0001;

/// Source address ranges of the clients of each role, disjoint so that a new flow can
/// never hit a flow of the filled table.
const TABLE_V4_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
const TABLE_V6_BASE: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xe, 0, 0, 0, 0, 0, 0);
const NEW_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 0);
const NEW_V6_BASE: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xb, 0, 0, 0, 0, 0, 0);
const UDP_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 24, 0, 0);
const MISS_V4_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const MALFORMED_V4_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
const NO_SERVICE_V4_BASE: Ipv4Addr = Ipv4Addr::new(198, 20, 0, 0);
const UNRESOLVED_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 28, 0, 0);
const NO_SERVER_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 29, 0, 0);
const NEW_UNRESOLVED_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 0);
const GRE_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 0);
const GUE_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 0);
const GUE_V6_BASE: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xc, 0, 0, 0, 0, 0, 0);
const L2_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 0);
const ICMP_V4_BASE: Ipv4Addr = Ipv4Addr::new(172, 19, 0, 0);
/// The router on the client's path that sends the ICMP errors of [`Path::IcmpError4`].
const PATH_ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Source ports a client address uses before the next address is taken.
const PORTS_PER_CLIENT: u32 = 16;
const FIRST_PORT: u16 = 40000;

/// Flow-table capacity: above the million flows of the full state, so that filling it
/// evicts nothing.
const FLOW_CAPACITY: u32 = 1 << 21;
/// Flows in the full table, half IPv4 and half IPv6.
const FULL_FLOWS: u32 = 1_000_000;
/// Flows per family that the established paths hit while the table is otherwise empty
/// (and the flows of each diagnostic, in both states): a few active clients, whose
/// lookups stay in cache, against the million hit at random of the full table.
const HOT_FLOWS: u32 = 16;
/// Runs per kernel call in the hot-loop cross-check of the paths that do not rewrite.
const REPEAT: u32 = 1000;
/// The empty table's flows: the hot ones of both families and of the two diagnostics.
const EMPTY_TABLE_FLOWS: u32 = 4 * HOT_FLOWS;

/// The payload of an established flow's data segment: the start of an HTTP request, as
/// long as fits in a minimum-size IPv4 frame.
const SEGMENT_PAYLOAD: &[u8] = b"GET / ";
/// The minimum Ethernet frame without its frame check sequence (64 bytes on the wire):
/// shorter frames are padded with zeros after the IP packet, as a sender's NIC pads them.
const MIN_FRAME: usize = 60;
/// A DNS query for www.example.com/A, as a client sends it.
const DNS_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01";

/// The services the benchmark programs through the engine, as an operator would.
const CONFIG: &str = r#"
network_profiles:
  - name: tcp
    type: tcp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
  - name: udp
    type: udp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
  - name: tcp-gre
    type: tcp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: gre }
  - name: tcp-gue
    type: tcp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: gue }
  - name: tcp-l2
    type: tcp_fast_path
    dsr: { enabled: true, type: l2, encapsulation: ipinip }
pools:
  - name: web4
    servers: [{ ip: 192.168.33.10 }, { ip: 192.168.33.11 }]
  - name: web6
    servers: [{ ip: "fc00::10" }, { ip: "fc00::11" }]
  - name: dns4
    consistent_hash: source_ip_and_port
    servers: [{ ip: 192.168.33.10 }, { ip: 192.168.33.11 }]
  - name: unresolved4
    servers: [{ ip: 192.168.33.50 }]
  - name: disabled4
    servers: [{ ip: 192.168.33.60, enabled: false }]
virtual_services:
  - name: web-v4
    vip: 192.168.35.241
    services: [{ port: 80 }]
    network_profile: tcp
    pool: web4
  - name: web-v6
    vip: "fc00:3::24a"
    services: [{ port: 80 }]
    network_profile: tcp
    pool: web6
  - name: dns-v4
    vip: 192.168.35.241
    services: [{ port: 53 }]
    network_profile: udp
    pool: dns4
  - name: unresolved-v4
    vip: 192.168.35.241
    services: [{ port: 8080 }]
    network_profile: tcp
    pool: unresolved4
  - name: no-server-v4
    vip: 192.168.35.241
    services: [{ port: 8081 }]
    network_profile: tcp
    pool: disabled4
  - name: gre-v4
    vip: 192.168.35.241
    services: [{ port: 8180 }]
    network_profile: tcp-gre
    pool: web4
  - name: gue-v4
    vip: 192.168.35.241
    services: [{ port: 8280 }]
    network_profile: tcp-gue
    pool: web4
  - name: gue-v6
    vip: "fc00:3::24a"
    services: [{ port: 8280 }]
    network_profile: tcp-gue
    pool: web6
  - name: l2-v4
    vip: 192.168.35.241
    services: [{ port: 8380 }]
    network_profile: tcp-l2
    pool: web4
"#;

/// The VIP ports of the services in GRE, GUE and L2 DSR (the same pools as web-v4/v6).
const GRE_PORT: u16 = 8180;
const GUE_PORT: u16 = 8280;
const L2_PORT: u16 = 8380;

/// What one sample runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Path {
    /// The trivial program that returns XDP_TX.
    Floor,
    NewTcp4,
    NewTcp6,
    EstablishedTcp4,
    EstablishedTcp6,
    NewUdp4,
    Miss4,
    Malformed4,
    /// Diagnostic: to the VIP, on a port without a service.
    NoService4,
    /// Diagnostic: a flow-table hit on a freed server slot, in a service without servers.
    NoServer4,
    /// Diagnostic: an established flow whose server's next hop is unresolved.
    Unresolved4,
    /// Diagnostic: a new flow whose server's next hop is unresolved (nothing recorded).
    NewUnresolved4,
    /// A new IPv4 flow to a service in GRE (beside `tcp4-new`, in IP-in-IP).
    NewTcp4Gre,
    /// A new IPv4 flow to a service in GUE.
    NewTcp4Gue,
    /// A new IPv6 flow to a service in GUE (the UDP checksum IPv6 requires).
    NewTcp6Gue,
    /// A new IPv4 flow to a service in L2 DSR (no encapsulation).
    NewTcp4L2,
    /// An ICMP "fragmentation needed" about a web-v4 flow, forwarded to its server.
    IcmpError4,
    /// Katran (`--katran-object`) on the frame of [`Path::NewTcp4`].
    KatranNewTcp4,
    /// Katran on the frame of [`Path::NewTcp6`].
    KatranNewTcp6,
    /// Katran on an established IPv4 flow of its own table (the same flows as Ricochet's).
    KatranEstablishedTcp4,
    /// Katran on an established IPv6 flow of its own table.
    KatranEstablishedTcp6,
    /// Katran on the frame of [`Path::Miss4`].
    KatranMiss4,
}

/// A target on a path's overhead above the floor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
struct Target {
    what: &'static str,
    max_overhead_ns: f64,
}

const NEW_FLOW_TARGET: Target = Target {
    what: "new flow",
    max_overhead_ns: 490.0,
};
const ESTABLISHED_TARGET: Target = Target {
    what: "established flow",
    max_overhead_ns: 130.0,
};
const MISS_TARGET: Target = Target {
    what: "VIP miss",
    max_overhead_ns: 50.0,
};

impl Path {
    const ALL: [Path; 22] = [
        Path::Floor,
        Path::NewTcp4,
        Path::NewTcp6,
        Path::EstablishedTcp4,
        Path::EstablishedTcp6,
        Path::NewUdp4,
        Path::Miss4,
        Path::Malformed4,
        Path::NoService4,
        Path::NoServer4,
        Path::Unresolved4,
        Path::NewUnresolved4,
        Path::NewTcp4Gre,
        Path::NewTcp4Gue,
        Path::NewTcp6Gue,
        Path::NewTcp4L2,
        Path::IcmpError4,
        Path::KatranNewTcp4,
        Path::KatranNewTcp6,
        Path::KatranEstablishedTcp4,
        Path::KatranEstablishedTcp6,
        Path::KatranMiss4,
    ];

    /// The paths one run measures: Katran's only when its object was given.
    fn measured(with_katran: bool) -> Vec<Path> {
        Path::ALL
            .into_iter()
            .filter(|p| with_katran || !p.katran())
            .collect()
    }

    /// Whether Katran runs this path (else Ricochet or the floor).
    fn katran(self) -> bool {
        self.ricochet_peer().is_some()
    }

    /// For a Katran path, Ricochet's path on the same frames and table.
    fn ricochet_peer(self) -> Option<Path> {
        match self {
            Path::KatranNewTcp4 => Some(Path::NewTcp4),
            Path::KatranNewTcp6 => Some(Path::NewTcp6),
            Path::KatranEstablishedTcp4 => Some(Path::EstablishedTcp4),
            Path::KatranEstablishedTcp6 => Some(Path::EstablishedTcp6),
            Path::KatranMiss4 => Some(Path::Miss4),
            _ => None,
        }
    }

    /// For a Ricochet path compared with Katran, Katran's path.
    fn katran_peer(self) -> Option<Path> {
        Path::ALL
            .into_iter()
            .find(|k| k.ricochet_peer() == Some(self))
    }

    /// Paths that only read the packet: the kernel may run them repeatedly on one
    /// buffer (the hot-loop cross-check).
    fn rewrites(self) -> bool {
        matches!(
            self,
            Path::NewTcp4
                | Path::NewTcp6
                | Path::EstablishedTcp4
                | Path::EstablishedTcp6
                | Path::NewUdp4
                | Path::NewTcp4Gre
                | Path::NewTcp4Gue
                | Path::NewTcp6Gue
                | Path::NewTcp4L2
                | Path::IcmpError4
                | Path::KatranNewTcp4
                | Path::KatranNewTcp6
                | Path::KatranEstablishedTcp4
                | Path::KatranEstablishedTcp6
        )
    }

    /// Whether a run records a new flow in its program's table (new flows that are
    /// forwarded).
    fn records_flow(self) -> bool {
        matches!(self.service(), Some((_, true)))
            || matches!(self, Path::KatranNewTcp4 | Path::KatranNewTcp6)
    }

    /// Paths measured only to split the cost between steps (no target of their own).
    fn diagnostic(self) -> bool {
        matches!(
            self,
            Path::NoService4 | Path::NoServer4 | Path::Unresolved4 | Path::NewUnresolved4
        )
    }

    fn id(self) -> &'static str {
        match self {
            Path::Floor => "floor",
            Path::NewTcp4 => "tcp4-new",
            Path::NewTcp6 => "tcp6-new",
            Path::EstablishedTcp4 => "tcp4-established",
            Path::EstablishedTcp6 => "tcp6-established",
            Path::NewUdp4 => "udp4-new",
            Path::Miss4 => "vip-miss",
            Path::Malformed4 => "malformed-drop",
            Path::NoService4 => "no-service-drop",
            Path::NoServer4 => "tcp4-no-server",
            Path::Unresolved4 => "tcp4-no-neighbour",
            Path::NewUnresolved4 => "tcp4-new-no-neighbour",
            Path::NewTcp4Gre => "tcp4-new-gre",
            Path::NewTcp4Gue => "tcp4-new-gue",
            Path::NewTcp6Gue => "tcp6-new-gue",
            Path::NewTcp4L2 => "tcp4-new-l2",
            Path::IcmpError4 => "icmp4-error-forwarded",
            Path::KatranNewTcp4 => "katran-tcp4-new",
            Path::KatranNewTcp6 => "katran-tcp6-new",
            Path::KatranEstablishedTcp4 => "katran-tcp4-established",
            Path::KatranEstablishedTcp6 => "katran-tcp6-established",
            Path::KatranMiss4 => "katran-vip-miss",
        }
    }

    /// A label short enough for a chart's axis.
    fn short(self) -> &'static str {
        match self {
            Path::Floor => "floor",
            Path::NewTcp4 => "TCP4 new",
            Path::NewTcp6 => "TCP6 new",
            Path::EstablishedTcp4 => "TCP4 est.",
            Path::EstablishedTcp6 => "TCP6 est.",
            Path::NewUdp4 => "UDP4 new",
            Path::Miss4 => "VIP miss",
            Path::Malformed4 => "malformed",
            Path::NoService4 => "(no svc)",
            Path::NoServer4 => "(no server)",
            Path::Unresolved4 => "(no neigh)",
            Path::NewUnresolved4 => "(new, no n.)",
            Path::NewTcp4Gre => "TCP4 new GRE",
            Path::NewTcp4Gue => "TCP4 new GUE",
            Path::NewTcp6Gue => "TCP6 new GUE",
            Path::NewTcp4L2 => "TCP4 new L2",
            Path::IcmpError4 => "ICMP4 err.",
            Path::KatranNewTcp4 => "K TCP4 new",
            Path::KatranNewTcp6 => "K TCP6 new",
            Path::KatranEstablishedTcp4 => "K TCP4 est.",
            Path::KatranEstablishedTcp6 => "K TCP6 est.",
            Path::KatranMiss4 => "K VIP miss",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Path::Floor => "a program that only returns XDP_TX (the floor)",
            Path::NewTcp4 => "IPv4 TCP SYN to VIP:80, new flow (Maglev pick, flow recorded)",
            Path::NewTcp6 => "IPv6 TCP SYN to VIP:80, new flow (Maglev pick, flow recorded)",
            Path::EstablishedTcp4 => "IPv4 TCP data segment of an established flow (flow-table hit)",
            Path::EstablishedTcp6 => "IPv6 TCP data segment of an established flow (flow-table hit)",
            Path::NewUdp4 => {
                "IPv4 UDP DNS query to VIP:53, new flow (source IP and port hashing: every query from a new port is one)"
            }
            Path::Miss4 => {
                "IPv4 TCP to an address that is not a VIP (its VIP-filter bit clear): XDP_PASS \
                 (pass_not_vip)"
            }
            Path::Malformed4 => {
                "IPv4 whose total length runs past the frame: XDP_DROP (drop_malformed_ipv4)"
            }
            Path::NoService4 => {
                "diagnostic: IPv4 TCP SYN to the VIP on a port without a service: XDP_DROP (drop_no_service)"
            }
            Path::NoServer4 => {
                "diagnostic: IPv4 TCP data segment whose flow entry names a freed server slot, to \
                 a service whose pool has no enabled server: service hit, flow-table hit, server \
                 slot read, then XDP_DROP (drop_no_server) before any FIB lookup"
            }
            Path::Unresolved4 => {
                "diagnostic: IPv4 TCP data segment of an established flow whose server has no \
                 neighbour entry: everything an established packet does up to and including the \
                 FIB lookup, then XDP_DROP (drop_no_neighbour) instead of the encapsulation"
            }
            Path::NewUnresolved4 => {
                "diagnostic: IPv4 TCP SYN of a new flow to the same service: no flow-table lookup (a SYN), \
                 client hash, Maglev slot, FIB lookup, then XDP_DROP (drop_no_neighbour); a \
                 dropped first packet records no flow (checked after every run)"
            }
            Path::NewTcp4Gre => {
                "`tcp4-new` to a service in GRE: the same steps, a 24-byte outer header (IPv4 \
                 and GRE)"
            }
            Path::NewTcp4Gue => {
                "`tcp4-new` to a service in GUE: outer IPv4 and UDP (28 bytes), the UDP source \
                 port from the flow hash, UDP checksum 0"
            }
            Path::NewTcp6Gue => {
                "`tcp6-new` to a service in GUE: outer IPv6 and UDP (48 bytes), the UDP \
                 checksum computed from the headers"
            }
            Path::NewTcp4L2 => {
                "`tcp4-new` to a service in L2 DSR: the same steps, the route must be on link, \
                 only the Ethernet addresses are rewritten (the frame keeps its size)"
            }
            Path::IcmpError4 => {
                "ICMP fragmentation-needed to the VIP quoting a web-v4 reply (VIP:80 to a client): \
                 the quote parsed, the flow's server found (Maglev, nothing recorded), the error \
                 encapsulated in IP-in-IP (forwarded_icmp_error)"
            }
            Path::KatranNewTcp4 => {
                "Katran on `tcp4-new`'s frame: SYN, so no LRU lookup; jhash, ring slot, real, \
                 LRU insert (checked after every run), IPIP encapsulation"
            }
            Path::KatranNewTcp6 => "Katran on `tcp6-new`'s frame (IPv6 in IPv6)",
            Path::KatranEstablishedTcp4 => {
                "Katran on an established IPv4 flow of its per-CPU LRU (the same flows as \
                 Ricochet's table): LRU hit, real, IPIP encapsulation"
            }
            Path::KatranEstablishedTcp6 => "Katran on an established IPv6 flow of its LRU",
            Path::KatranMiss4 => {
                "Katran on `vip-miss`'s frame: vip_map misses with the port and with port 0, \
                 XDP_PASS"
            }
        }
    }

    /// The verdict every run must return and how many bytes the frame must grow by.
    fn expected(self) -> (u32, usize) {
        match self {
            Path::Floor => (XDP_TX, 0),
            Path::NewTcp4
            | Path::EstablishedTcp4
            | Path::NewUdp4
            | Path::KatranNewTcp4
            | Path::IcmpError4
            | Path::KatranEstablishedTcp4 => (XDP_TX, 20),
            Path::NewTcp4Gre => (XDP_TX, 24),
            Path::NewTcp4Gue => (XDP_TX, 28),
            Path::NewTcp6Gue => (XDP_TX, 48),
            Path::NewTcp4L2 => (XDP_TX, 0),
            Path::NewTcp6
            | Path::EstablishedTcp6
            | Path::KatranNewTcp6
            | Path::KatranEstablishedTcp6 => (XDP_TX, 40),
            Path::Miss4 | Path::KatranMiss4 => (XDP_PASS, 0),
            Path::Malformed4
            | Path::NoService4
            | Path::NoServer4
            | Path::Unresolved4
            | Path::NewUnresolved4 => (XDP_DROP, 0),
        }
    }

    /// The verdict counter each run of the load balancer moves.
    fn reason(self) -> Option<Reason> {
        if self.katran() {
            return None;
        }
        match self {
            Path::Floor => None,
            Path::Miss4 => Some(Reason::PassNotVip),
            Path::Malformed4 => Some(Reason::DropMalformedIpv4),
            Path::NoService4 => Some(Reason::DropNoService),
            Path::NoServer4 => Some(Reason::DropNoServer),
            Path::Unresolved4 | Path::NewUnresolved4 => Some(Reason::DropNoNeighbour),
            Path::IcmpError4 => Some(Reason::ForwardedIcmp),
            _ => Some(Reason::Forwarded),
        }
    }

    /// The virtual service whose counters each run moves, and whether as a new flow.
    fn service(self) -> Option<(&'static str, bool)> {
        match self {
            Path::NewTcp4 => Some(("web-v4", true)),
            Path::EstablishedTcp4 => Some(("web-v4", false)),
            Path::NewTcp6 => Some(("web-v6", true)),
            Path::EstablishedTcp6 => Some(("web-v6", false)),
            Path::NewUdp4 => Some(("dns-v4", true)),
            Path::NewTcp4Gre => Some(("gre-v4", true)),
            Path::NewTcp4Gue => Some(("gue-v4", true)),
            Path::NewTcp6Gue => Some(("gue-v6", true)),
            Path::NewTcp4L2 => Some(("l2-v4", true)),
            _ => None,
        }
    }

    fn target(self) -> Option<Target> {
        match self {
            Path::NewTcp4 | Path::NewTcp6 | Path::NewUdp4 => Some(NEW_FLOW_TARGET),
            Path::EstablishedTcp4 | Path::EstablishedTcp6 => Some(ESTABLISHED_TARGET),
            Path::Miss4 => Some(MISS_TARGET),
            Path::Floor
            | Path::NewTcp4Gre
            | Path::NewTcp4Gue
            | Path::NewTcp6Gue
            | Path::NewTcp4L2
            | Path::IcmpError4
            | Path::Malformed4
            | Path::NoService4
            | Path::NoServer4
            | Path::Unresolved4
            | Path::NewUnresolved4
            | Path::KatranNewTcp4
            | Path::KatranNewTcp6
            | Path::KatranEstablishedTcp4
            | Path::KatranEstablishedTcp6
            | Path::KatranMiss4 => None,
        }
    }
}

/// The flow table's content while a set of rounds runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum TableState {
    /// Only the flows the established paths hit ([`HOT_FLOWS`] per family).
    Empty,
    /// [`FULL_FLOWS`] flows; the established paths hit random ones among them.
    Full,
}

impl TableState {
    fn id(self) -> &'static str {
        match self {
            TableState::Empty => "empty",
            TableState::Full => "1m",
        }
    }
    fn label(self) -> &'static str {
        match self {
            TableState::Empty => "empty table",
            TableState::Full => "1M flows",
        }
    }
    /// Flows per family that an established run picks from (indices of the table's
    /// clients).
    fn established_choices(self) -> u32 {
        match self {
            TableState::Empty => HOT_FLOWS,
            TableState::Full => FULL_FLOWS / 2,
        }
    }
}

// ---------------------------------------------------------------------------------
// Pure helpers

/// xorshift64*: reproducible choices and shuffles without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-32).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The `i`-th IPv4 client of a role: [`PORTS_PER_CLIENT`] source ports per address,
/// addresses counted up from `base`.
fn client_v4(base: Ipv4Addr, i: u32) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::from(u32::from(base) + i / PORTS_PER_CLIENT);
    (addr, FIRST_PORT + (i % PORTS_PER_CLIENT) as u16)
}

/// The `i`-th IPv6 client of a role (addresses counted up in the low bits of `base`).
fn client_v6(base: Ipv6Addr, i: u32) -> (Ipv6Addr, u16) {
    let addr = Ipv6Addr::from(u128::from(base) + u128::from(i / PORTS_PER_CLIENT));
    (addr, FIRST_PORT + (i % PORTS_PER_CLIENT) as u16)
}

// RFC 1071 checksum of an IPv4 header whose checksum field is zero: the test kit's.
use ricochet_testkit::checksum::internet_checksum as ipv4_header_checksum;

fn tcp4_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC).ipv4(src.octets(), dst.octets(), 64);
    let mut out = Vec::with_capacity(128);
    if syn {
        b.tcp(sport, dport, 0x1d2c_3b4a, 64240)
            .syn()
            .write(&mut out, &[])
    } else {
        b.tcp(sport, dport, 0x1d2c_3b4a, 64240)
            .ack(0x0bad_cafe)
            .psh()
            .write(&mut out, SEGMENT_PAYLOAD)
    }
    .expect("writing to a Vec");
    pad_to_min(out)
}

/// Pads a frame to [`MIN_FRAME`] bytes with zeros (the IP length fields are unchanged).
fn pad_to_min(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
    frame
}

fn tcp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, syn: bool) -> Vec<u8> {
    tcp6_frame_to(src, sport, dst, 80, syn)
}

fn tcp6_frame_to(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC).ipv6(src.octets(), dst.octets(), 64);
    let mut out = Vec::with_capacity(160);
    if syn {
        b.tcp(sport, dport, 0x1d2c_3b4a, 64240)
            .syn()
            .write(&mut out, &[])
    } else {
        b.tcp(sport, dport, 0x1d2c_3b4a, 64240)
            .ack(0x0bad_cafe)
            .psh()
            .write(&mut out, SEGMENT_PAYLOAD)
    }
    .expect("writing to a Vec");
    pad_to_min(out)
}

fn udp4_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, 53)
        .write(&mut out, DNS_QUERY)
        .expect("writing to a Vec");
    out
}

/// The ICMP "fragmentation needed" (next-hop MTU 1300) a router on the path sends to the
/// VIP about web-v4's reply to (`client`, `cport`): the reply's header and 8 bytes quoted.
fn icmp4_error_frame(client: Ipv4Addr, cport: u16) -> Vec<u8> {
    let mut reply = Vec::new();
    PacketBuilder::ipv4(VIP4.octets(), client.octets(), 64)
        .tcp(80, cport, 7, 64240)
        .ack(1)
        .write(&mut reply, &[0x42; 1360])
        .expect("writing to a Vec");
    let error = ricochet_testkit::packets::icmp4_error_from(
        PATH_ROUTER_V4,
        3,
        4,
        [0, 0, 0x05, 0x14],
        &reply,
        28,
    );
    let mut frame = Vec::with_capacity(14 + error.len());
    frame.extend_from_slice(&LB_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&error);
    pad_to_min(frame)
}

/// A TCP SYN to the VIP whose IPv4 total length claims 64 bytes more than the frame
/// holds (header checksum correct): the parser drops it before any map lookup.
fn malformed4_frame(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut frame = tcp4_frame(src, sport, VIP4, 80, true);
    let ip = &mut frame[14..34];
    let total = u16::from_be_bytes([ip[2], ip[3]]) + 64;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = ipv4_header_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame
}

fn tcp_flow(src: IpAddr, sport: u16, dst: IpAddr) -> FlowKey {
    FlowKey::new(src, sport, dst, 80, PROTO_TCP)
}

/// Which flows of the table a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TableFlows {
    V4,
    V6,
    /// The no-neighbour diagnostic's (VIP:8080).
    Unresolved,
    /// The no-server diagnostic's (VIP:8081), naming a freed server slot.
    NoServer,
}

/// The `i`-th flow of a kind, as the program keys it.
fn table_flow(kind: TableFlows, i: u32) -> FlowKey {
    match kind {
        TableFlows::V4 => {
            let (src, sport) = client_v4(TABLE_V4_BASE, i);
            tcp_flow(src.into(), sport, VIP4.into())
        }
        TableFlows::V6 => {
            let (src, sport) = client_v6(TABLE_V6_BASE, i);
            tcp_flow(src.into(), sport, VIP6.into())
        }
        TableFlows::Unresolved => {
            let (src, sport) = client_v4(UNRESOLVED_V4_BASE, i);
            FlowKey::new(src.into(), sport, VIP4.into(), UNRESOLVED_PORT, PROTO_TCP)
        }
        TableFlows::NoServer => {
            let (src, sport) = client_v4(NO_SERVER_V4_BASE, i);
            FlowKey::new(src.into(), sport, VIP4.into(), NO_SERVER_PORT, PROTO_TCP)
        }
    }
}

/// The input of one run, and the new flow it carries (recorded by the program only when
/// the path forwards it: see [`Path::records_flow`]).
///
/// A Katran path takes its Ricochet peer's input: the same new client in the same round
/// (their tables are separate, so both see a new flow), a random flow of the same table.
fn input(path: Path, round: u32, state: TableState, rng: &mut Rng) -> (Vec<u8>, Option<FlowKey>) {
    if let Some(peer) = path.ricochet_peer() {
        return input(peer, round, state, rng);
    }
    match path {
        // The floor program does not look at the frame: the SYN is as good as any.
        Path::Floor | Path::NewTcp4 => {
            let (src, sport) = client_v4(NEW_V4_BASE, round);
            let key = (path == Path::NewTcp4).then(|| tcp_flow(src.into(), sport, VIP4.into()));
            (tcp4_frame(src, sport, VIP4, 80, true), key)
        }
        Path::NewTcp6 => {
            let (src, sport) = client_v6(NEW_V6_BASE, round);
            let key = tcp_flow(src.into(), sport, VIP6.into());
            (tcp6_frame(src, sport, VIP6, true), Some(key))
        }
        Path::EstablishedTcp4 => {
            let i = rng.below(state.established_choices());
            let (src, sport) = client_v4(TABLE_V4_BASE, i);
            (tcp4_frame(src, sport, VIP4, 80, false), None)
        }
        Path::EstablishedTcp6 => {
            let i = rng.below(state.established_choices());
            let (src, sport) = client_v6(TABLE_V6_BASE, i);
            (tcp6_frame(src, sport, VIP6, false), None)
        }
        Path::NewUdp4 => {
            let (src, sport) = client_v4(UDP_V4_BASE, round);
            let key = FlowKey::new(src.into(), sport, VIP4.into(), 53, PROTO_UDP);
            (udp4_frame(src, sport, VIP4), Some(key))
        }
        Path::Miss4 => {
            let (src, sport) = client_v4(MISS_V4_BASE, round);
            (tcp4_frame(src, sport, NOT_VIP4, 80, true), None)
        }
        Path::Malformed4 => {
            let (src, sport) = client_v4(MALFORMED_V4_BASE, round);
            (malformed4_frame(src, sport), None)
        }
        Path::NoService4 => {
            let (src, sport) = client_v4(NO_SERVICE_V4_BASE, round);
            (tcp4_frame(src, sport, VIP4, NO_SERVICE_PORT, true), None)
        }
        Path::NoServer4 => {
            let i = rng.below(HOT_FLOWS);
            let (src, sport) = client_v4(NO_SERVER_V4_BASE, i);
            (tcp4_frame(src, sport, VIP4, NO_SERVER_PORT, false), None)
        }
        Path::Unresolved4 => {
            let i = rng.below(HOT_FLOWS);
            let (src, sport) = client_v4(UNRESOLVED_V4_BASE, i);
            (tcp4_frame(src, sport, VIP4, UNRESOLVED_PORT, false), None)
        }
        Path::NewUnresolved4 => {
            let (src, sport) = client_v4(NEW_UNRESOLVED_V4_BASE, round);
            let key = FlowKey::new(src.into(), sport, VIP4.into(), UNRESOLVED_PORT, PROTO_TCP);
            (
                tcp4_frame(src, sport, VIP4, UNRESOLVED_PORT, true),
                Some(key),
            )
        }
        Path::NewTcp4Gre | Path::NewTcp4Gue | Path::NewTcp4L2 => {
            let (base, port) = match path {
                Path::NewTcp4Gre => (GRE_V4_BASE, GRE_PORT),
                Path::NewTcp4Gue => (GUE_V4_BASE, GUE_PORT),
                _ => (L2_V4_BASE, L2_PORT),
            };
            let (src, sport) = client_v4(base, round);
            let key = FlowKey::new(src.into(), sport, VIP4.into(), port, PROTO_TCP);
            (tcp4_frame(src, sport, VIP4, port, true), Some(key))
        }
        Path::NewTcp6Gue => {
            let (src, sport) = client_v6(GUE_V6_BASE, round);
            let key = FlowKey::new(src.into(), sport, VIP6.into(), GUE_PORT, PROTO_TCP);
            (tcp6_frame_to(src, sport, VIP6, GUE_PORT, true), Some(key))
        }
        Path::IcmpError4 => {
            let (client, cport) = client_v4(ICMP_V4_BASE, round);
            (icmp4_error_frame(client, cport), None)
        }
        Path::KatranNewTcp4
        | Path::KatranNewTcp6
        | Path::KatranEstablishedTcp4
        | Path::KatranEstablishedTcp6
        | Path::KatranMiss4 => unreachable!("Katran paths take their peer's input"),
    }
}

/// Ricochet's flow key as Katran keys the same flow.
fn katran_key(key: &FlowKey) -> katran::FlowKey {
    let addr = |bytes: [u8; 16]| -> IpAddr {
        if key.family == ricochet_common::FAMILY_V4 {
            Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
        } else {
            Ipv6Addr::from(bytes).into()
        }
    };
    katran::FlowKey::new(
        addr(key.src),
        u16::from_be_bytes(key.sport),
        addr(key.dst),
        u16::from_be_bytes(key.dport),
        key.proto,
    )
}

/// What the counters of the whole set of rounds must show: each load-balancer path
/// moved its reason once per run, and its service's packets (and new flows) likewise.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    reasons: BTreeMap<&'static str, u64>,
    /// service name -> (packets, new flows)
    services: BTreeMap<&'static str, (u64, u64)>,
}

/// What `runs` (program runs per path) must add to the counters.
fn expected_counts(runs: &[(Path, u64)]) -> Expected {
    let mut e = Expected::default();
    for r in Reason::ALL {
        e.reasons.insert(r.name(), 0);
    }
    for p in Path::ALL {
        if let Some((svc, _)) = p.service() {
            e.services.insert(svc, (0, 0));
        }
    }
    for &(p, n) in runs {
        if let Some(r) = p.reason() {
            *e.reasons.entry(r.name()).or_default() += n;
        }
        if let Some((svc, new)) = p.service() {
            let c = e.services.entry(svc).or_default();
            c.0 += n;
            if new {
                c.1 += n;
            }
        }
    }
    e
}

/// What `runs` must add to Katran's counters: every forwarded run is an XDP_TX, every
/// miss an XDP_PASS; every forwarded run reaches the connection table step, each SYN as an
/// LRU miss of a new connection, and no established run misses.
fn katran_expected(runs: &[(Path, u64)]) -> katran::Counters {
    let mut c = katran::Counters::default();
    for &(p, n) in runs {
        match p {
            Path::KatranNewTcp4 | Path::KatranNewTcp6 => {
                c.tx += n;
                c.lru_packets += n;
                c.syn_misses += n;
            }
            Path::KatranEstablishedTcp4 | Path::KatranEstablishedTcp6 => {
                c.tx += n;
                c.lru_packets += n;
            }
            Path::KatranMiss4 => c.pass += n,
            _ => {}
        }
    }
    c
}

/// The Katran real a flow of the table goes to (reals 1 and 2 are the IPv4 servers, 3 and
/// 4 the IPv6 ones, in [`SERVERS`] order); none for the diagnostics' flows.
fn katran_real(kind: TableFlows, i: u32) -> Option<u32> {
    match kind {
        TableFlows::V4 => Some(1 + i % 2),
        TableFlows::V6 => Some(3 + i % 2),
        TableFlows::Unresolved | TableFlows::NoServer => None,
    }
}

/// Loads Katran's object and provisions it as Katran's userspace would for the same
/// services: the IPv4 and IPv6 web VIPs on port 80 with their two servers each (a ring
/// that alternates them), the peer's MAC as the default router's, one LRU per CPU of
/// [`FLOW_CAPACITY`] entries.
fn set_up_katran(object: &std::path::Path) -> anyhow::Result<Katran> {
    let mut k = Katran::load(object, FLOW_CAPACITY)?;
    for (i, (v4, v6, _)) in SERVERS.iter().enumerate() {
        k.set_real(1 + i as u32, (*v4).into())?;
        k.set_real(3 + i as u32, (*v6).into())?;
    }
    k.add_tcp_vip(VIP4.into(), 80, 0, &[1, 2])?;
    k.add_tcp_vip(VIP6.into(), 80, 1, &[3, 4])?;
    k.set_default_mac(PEER_MAC)?;
    Ok(k)
}

/// `after - before`, counter by counter.
fn delta(before: &Expected, after: &Expected) -> Expected {
    Expected {
        reasons: after
            .reasons
            .iter()
            .map(|(k, v)| (*k, v - before.reasons.get(k).copied().unwrap_or(0)))
            .collect(),
        services: after
            .services
            .iter()
            .map(|(k, (p, n))| {
                let (bp, bn) = before.services.get(k).copied().unwrap_or((0, 0));
                (*k, (p - bp, n - bn))
            })
            .collect(),
    }
}

/// The differences between what the counters show and what they must show; empty when
/// every path took the way it is labelled with.
fn mismatches(expected: &Expected, got: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &expected.reasons {
        let have = got.reasons.get(name).copied().unwrap_or(0);
        if have != *want {
            out.push(format!(
                "reason {name}: {have} runs counted, {want} expected"
            ));
        }
    }
    for (svc, (packets, new)) in &expected.services {
        let (hp, hn) = got.services.get(svc).copied().unwrap_or((0, 0));
        if hp != *packets || hn != *new {
            out.push(format!(
                "service {svc}: {hp} packets / {hn} new flows counted, {packets} / {new} expected"
            ));
        }
    }
    out
}

/// Whether a measured overhead meets its target (at most the target's ns).
fn meets(target: Target, overhead_ns: f64) -> bool {
    overhead_ns <= target.max_overhead_ns
}

// ---------------------------------------------------------------------------------
// Measuring (in the namespace, on the pinned thread)

/// Samples of one table state: durations in ns per path, in round order.
#[derive(Debug, Serialize)]
struct StateSamples {
    state: TableState,
    samples: BTreeMap<Path, Vec<u32>>,
    /// Entries in the flow table before and after the rounds (walked).
    flows_before: usize,
    flows_after: usize,
    /// Entries in Katran's LRU of the measuring CPU before and after (walked).
    katran_flows: Option<(usize, usize)>,
    /// Seconds spent filling the table before the rounds (full state only).
    fill_seconds: f64,
    rounds_seconds: f64,
}

/// What the report says about the Katran that was measured.
#[derive(Debug, Serialize)]
struct KatranInfo {
    object: String,
    lru_entries_per_cpu: u32,
    lrus: usize,
    ring_size: u32,
}

#[derive(Debug, Serialize)]
struct Measured {
    cpu: usize,
    /// Whether every service's flow table was consulted (`CONSULT_FLOWS`).
    flows_consulted: bool,
    /// The paths measured, in [`Path::ALL`] order.
    paths: Vec<Path>,
    katran: Option<KatranInfo>,
    warmup_rounds: u32,
    rounds: u32,
    states: Vec<StateSamples>,
    /// Hot-loop cross-check: per path that does not rewrite, the kernel's mean ns per
    /// run over [`REPEAT`] runs, one value per call.
    repeated: BTreeMap<Path, Vec<u32>>,
    /// Wall-clock seconds of the hot-loop calls.
    repeated_seconds: f64,
}

/// xdp_md as BPF_PROG_TEST_RUN takes it: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

struct Bench {
    engine: Engine<KernelDataplane>,
    /// The trivial object; its `xdp_tx` is the floor.
    trivial: aya::Ebpf,
    ifindex: u32,
    out: Vec<u8>,
    /// Service name -> service id (index of its counters).
    service_ids: BTreeMap<String, u32>,
    /// (server slot, generation) of the servers the table's flows go to, by
    /// [`TableFlows`] kind.
    flow_targets: [Vec<FlowValue>; 4],
    /// Katran, when its object was given; its flows are in the LRU of [`Bench::cpu`].
    katran: Option<Katran>,
    /// The CPU the measuring thread is pinned to.
    cpu: usize,
    /// The paths measured (Katran's only with Katran).
    paths: Vec<Path>,
}

impl Bench {
    /// Runs `path` on `frame` (`repeat` times in one kernel call) and checks its verdict
    /// and output size; returns the kernel's duration per run in ns.
    fn run(&mut self, path: Path, frame: &[u8], repeat: u32) -> anyhow::Result<u32> {
        let (action, out_len, ns) = if path == Path::Floor {
            let ctx = xdp_md(frame.len(), self.ifindex);
            self.out.resize(frame.len() + 256, 0);
            let floor: &Xdp = self
                .trivial
                .program("xdp_tx")
                .ok_or_else(|| anyhow!("program xdp_tx missing"))?
                .try_into()?;
            let res = floor
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut self.out),
                    ctx_in: Some(&ctx),
                    repeat,
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN of the floor program")?;
            (
                res.return_value,
                res.data_size_out as usize,
                res.duration.as_nanos(),
            )
        } else if path.katran() {
            let ctx = xdp_md(frame.len(), self.ifindex);
            let res = self
                .katran
                .as_mut()
                .ok_or_else(|| anyhow!("path {} needs --katran-object", path.id()))?
                .run(frame, &ctx, repeat)?;
            (res.action, res.out_len, res.ns)
        } else {
            let res = self
                .engine
                .dataplane_mut()
                .test_run_repeated(frame, self.ifindex, repeat)?;
            (res.action, res.packet.len(), res.duration.as_nanos())
        };
        let (want_action, grow) = path.expected();
        if path.katran() && (action != want_action || out_len != frame.len() + grow) {
            let counters = self
                .katran
                .as_ref()
                .map(|k| format!("{:?}", k.counters()))
                .unwrap_or_default();
            bail!(
                "path {} ({}) returned action {action} with a {out_len}-byte frame; expected \
                 action {want_action} with {} bytes: Katran is not provisioned for this path, so \
                 its figure would be mislabelled. Katran's counters so far: {counters}",
                path.id(),
                path.describe(),
                frame.len() + grow,
            );
        }
        if action != want_action || out_len != frame.len() + grow {
            let reasons = self
                .engine
                .dataplane()
                .reason_counters()
                .map(|rs| {
                    rs.iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(r, n)| format!("{} {n}", r.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|e| format!("(unreadable: {e:#})"));
            bail!(
                "path {} ({}) returned action {action} with a {out_len}-byte frame; expected \
                 action {want_action} with {} bytes. The benchmark's set-up does not make the \
                 program take this path, so its figure would be mislabelled. Verdict counters so \
                 far: {reasons}",
                path.id(),
                path.describe(),
                frame.len() + grow,
            );
        }
        Ok(u32::try_from(ns).unwrap_or(u32::MAX))
    }

    fn counts(&self) -> anyhow::Result<Expected> {
        let dp = self.engine.dataplane();
        let mut got = Expected::default();
        for (r, n) in dp.reason_counters()? {
            got.reasons.insert(r.name(), n);
        }
        for p in Path::ALL {
            if let Some((svc, _)) = p.service() {
                let id = self.service_ids[svc];
                let c = dp.service_counters(id)?;
                got.services.insert(svc, (c.packets, c.new_flows));
            }
        }
        Ok(got)
    }

    /// Fails unless the counters moved from `before` by exactly what `runs` imply.
    fn check_counts(
        &self,
        before: &Expected,
        runs: &[(Path, u64)],
        what: &str,
    ) -> anyhow::Result<()> {
        let moved = delta(before, &self.counts()?);
        let wrong = mismatches(&expected_counts(runs), &moved);
        ensure!(
            wrong.is_empty(),
            "{what}: the verdict counters do not match the paths run: {}. Some run took \
             another path than its label says, so the figures would be wrong",
            wrong.join("; ")
        );
        Ok(())
    }

    /// Fails unless Katran's counters moved from `before` by exactly what `runs` imply.
    fn check_katran_counts(
        &self,
        before: &katran::Counters,
        runs: &[(Path, u64)],
        what: &str,
    ) -> anyhow::Result<()> {
        let Some(k) = &self.katran else {
            return Ok(());
        };
        let moved = k.counters()?.since(before);
        let want = katran_expected(runs);
        ensure!(
            moved == want,
            "{what}: Katran's counters moved by {moved:?}, {want:?} expected. Some Katran run \
             took another way than its label says (a non-SYN LRU miss means an established \
             flow was not in the LRU; a fallback count means the per-CPU LRU was not used), so \
             the figures would be wrong"
        );
        Ok(())
    }

    fn katran_counters(&self) -> anyhow::Result<katran::Counters> {
        self.katran
            .as_ref()
            .map_or(Ok(katran::Counters::default()), Katran::counters)
    }

    /// Writes the flows `from..to` of each kind in `kinds`.
    fn fill(
        &mut self,
        kinds: &[TableFlows],
        from: u32,
        to: u32,
        progress: bool,
    ) -> anyhow::Result<()> {
        let step = ((to - from) / 10).max(1);
        let start = Instant::now();
        let picker = self.engine.flow_picker()?;
        let mut flows = Vec::with_capacity(((to - from) as usize) * kinds.len());
        for i in from..to {
            for &kind in kinds {
                let key = table_flow(kind, i);
                // As traffic records them: each flow on its Maglev pick (the diagnostics'
                // on their fixed targets, a free slot or the one unresolved server).
                let value = match kind {
                    TableFlows::V4 | TableFlows::V6 => picker(&key)
                        .with_context(|| format!("no Maglev pick for flow {i} ({kind:?})"))?,
                    _ => {
                        let targets = &self.flow_targets[kind as usize];
                        targets[i as usize % targets.len()]
                    }
                };
                flows.push((i, kind, key, value));
            }
        }
        drop(picker);
        let mut last = from;
        for (i, kind, key, value) in flows {
            {
                self.engine
                    .dataplane_mut()
                    .insert_flow(&key, &value)
                    .with_context(|| format!("writing flow {i} of the table ({kind:?})"))?;
                // Katran's table holds the same flows (the diagnostics are Ricochet's own).
                if let (Some(k), Some(real)) = (self.katran.as_mut(), katran_real(kind, i)) {
                    k.insert_flow(self.cpu, &katran_key(&key), real)
                        .with_context(|| format!("writing flow {i} into Katran's LRU"))?;
                }
            }
            if progress && i != last && (i - from).is_multiple_of(step) {
                last = i;
                eprintln!(
                    "    per-packet: filling the flow table: {} flows written ({:.1} s)",
                    kinds.len() as u32 * (i - from + 1),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Ok(())
    }

    /// Leaves every service's flow table consulted, or clears the flags as the engine's
    /// scan does once no flow disagrees (after its grace: a few seconds at most).
    fn set_flow_table_use(&mut self, consult: bool) -> anyhow::Result<()> {
        if consult {
            ensure!(
                self.engine.consulting(),
                "the services' flow tables are not consulted after their first apply"
            );
            return Ok(());
        }
        let start = Instant::now();
        while self.engine.consulting() {
            let r = self.engine.scan_flows(300)?;
            ensure!(
                r.disagreeing.values().all(|n| *n == 0),
                "flows disagree with their Maglev pick: {:?}",
                r.disagreeing
            );
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the scan did not clear the flags in 10 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The interleaved single-run rounds of one table state.
    fn rounds(
        &mut self,
        state: TableState,
        warmup: u32,
        rounds: u32,
        rng: &mut Rng,
    ) -> anyhow::Result<BTreeMap<Path, Vec<u32>>> {
        let before = self.counts()?;
        let katran_before = self.katran_counters()?;
        let mut samples: BTreeMap<Path, Vec<u32>> = self
            .paths
            .iter()
            .map(|p| (*p, Vec::with_capacity(rounds as usize)))
            .collect();
        let mut order = self.paths.clone();
        // New-flow clients are numbered on across states, so that no key repeats.
        let first = match state {
            TableState::Empty => 0,
            TableState::Full => warmup + rounds,
        };
        for round in 0..warmup + rounds {
            rng.shuffle(&mut order);
            for &path in &order {
                let (frame, new_flow) = input(path, first + round, state, rng);
                let ns = self.run(path, &frame, 1)?;
                if let (Some(key), true) = (new_flow, path.katran()) {
                    // The same check on Katran's LRU of this CPU.
                    let (cpu, k) = (self.cpu, self.katran.as_mut().expect("a Katran path"));
                    let key = katran_key(&key);
                    let recorded = match state {
                        TableState::Empty => k.remove_flow(cpu, &key)?,
                        TableState::Full => k.lookup_flow(cpu, &key)?.is_some(),
                    };
                    ensure!(
                        recorded,
                        "path {}: Katran did not record the new flow in CPU {cpu}'s LRU (its \
                         new-connection rate limit, or another LRU than the one filled), so it \
                         did not take the path it is labelled with",
                        path.id()
                    );
                } else if let Some(key) = new_flow {
                    // Outside the timed part: a forwarded new flow must have been recorded,
                    // a dropped one not. In the empty table a recorded flow goes again, so
                    // that the table stays empty; in the full one it stays, so that the next
                    // new flow takes a never-used element from the free list as in service.
                    let dp = self.engine.dataplane_mut();
                    let recorded = match (state, path.records_flow()) {
                        (TableState::Empty, true) => dp.remove_flow(&key).is_ok(),
                        _ => dp.lookup_flow(&key)?.is_some(),
                    };
                    ensure!(
                        recorded == path.records_flow(),
                        "path {}: its flow was {}recorded, so it did not take the path it is \
                         labelled with",
                        path.id(),
                        if recorded { "" } else { "not " }
                    );
                }
                if round >= warmup {
                    samples.get_mut(&path).expect("every path").push(ns);
                }
            }
        }
        let runs: Vec<(Path, u64)> = self
            .paths
            .iter()
            .map(|&p| (p, u64::from(warmup + rounds)))
            .collect();
        self.check_counts(&before, &runs, &format!("with the {}", state.label()))?;
        self.check_katran_counts(
            &katran_before,
            &runs,
            &format!("with the {}", state.label()),
        )?;
        Ok(samples)
    }

    /// The hot-loop cross-check: the paths that do not rewrite the packet, `REPEAT`
    /// runs per kernel call, interleaved like the single runs.
    fn repeated(&mut self, calls: u32, rng: &mut Rng) -> anyhow::Result<BTreeMap<Path, Vec<u32>>> {
        let before = self.counts()?;
        let katran_before = self.katran_counters()?;
        let paths: Vec<Path> = self
            .paths
            .iter()
            .copied()
            .filter(|p| !p.rewrites())
            .collect();
        let mut samples: BTreeMap<Path, Vec<u32>> =
            paths.iter().map(|p| (*p, Vec::new())).collect();
        let mut order = paths.clone();
        for call in 0..calls {
            rng.shuffle(&mut order);
            for &path in &order {
                let (frame, _) = input(path, call, TableState::Empty, rng);
                let ns = self.run(path, &frame, REPEAT)?;
                samples.get_mut(&path).expect("every path").push(ns);
            }
        }
        let runs: Vec<(Path, u64)> = paths
            .iter()
            .map(|&p| (p, u64::from(calls) * u64::from(REPEAT)))
            .collect();
        self.check_counts(&before, &runs, "in the hot-loop cross-check")?;
        self.check_katran_counts(&katran_before, &runs, "in the hot-loop cross-check")?;
        Ok(samples)
    }
}

fn desired() -> anyhow::Result<Desired> {
    let config = Config::from_yaml_str(CONFIG).map_err(|e| anyhow!("{e}"))?;
    config.compile().map_err(|e| anyhow!("{e}"))
}

/// Loads the programs and programs the services (on the namespace's thread).
fn set_up(
    ifindex: u32,
    cpu: usize,
    katran_object: Option<&std::path::Path>,
) -> anyhow::Result<Bench> {
    let caps = Capacities {
        flows: FLOW_CAPACITY,
        ..Capacities::default()
    };
    let dp = KernelDataplane::load(&LoadOptions {
        pin_dir: None,
        caps,
    })?;
    let mut engine = Engine::new(dp);
    engine.set_settings(&ricochet_engine::settings(
        Some(LB_V4),
        Some(LB_V6),
        HASH_SEED,
    ))?;
    engine.apply(&desired()?)?;
    let service_ids = engine.services().map(|s| (s.name.clone(), s.id)).collect();
    let slots = engine.dataplane().servers()?;
    let targets = |pool: &str| -> anyhow::Result<Vec<FlowValue>> {
        let p = engine
            .pools()
            .find(|p| p.name == pool)
            .ok_or_else(|| anyhow!("pool {pool} not programmed"))?;
        Ok(p.servers
            .iter()
            .map(|s| FlowValue {
                server_id: s.slot,
                generation: slots[s.slot as usize].generation,
                seen: ricochet_engine::flows::flow_clock_now(),
            })
            .collect())
    };
    // The no-server diagnostic's flows name the last slot, which no pool uses: the
    // program finds it free and falls back to the (empty) Maglev table.
    let free_slot = slots.len() as u32 - 1;
    ensure!(
        slots[free_slot as usize].state == ricochet_common::ServerState::FREE,
        "server slot {free_slot} is in use: the no-server diagnostic needs it free"
    );
    let flow_targets = [
        targets("web4")?,
        targets("web6")?,
        targets("unresolved4")?,
        vec![FlowValue {
            server_id: free_slot,
            generation: 0,
            seen: ricochet_engine::flows::flow_clock_now(),
        }],
    ];
    ensure!(
        flow_targets[2].len() == 1
            && slots[flow_targets[2][0].server_id as usize].ip() == Some(UNRESOLVED_SERVER.into()),
        "the unresolved pool's server is not {UNRESOLVED_SERVER}"
    );

    let mut trivial =
        aya::Ebpf::load(ricochet_bpf::TRIVIAL).context("loading the trivial XDP object")?;
    let prog: &mut Xdp = trivial
        .program_mut("xdp_tx")
        .ok_or_else(|| anyhow!("program xdp_tx missing from the trivial object"))?
        .try_into()?;
    prog.load().context("loading xdp_tx")?;
    let katran = katran_object.map(set_up_katran).transpose()?;
    let paths = Path::measured(katran.is_some());
    Ok(Bench {
        engine,
        trivial,
        ifindex,
        out: Vec::new(),
        service_ids,
        flow_targets,
        katran,
        cpu,
        paths,
    })
}

fn measure(
    ifindex: u32,
    cpu: usize,
    warmup: u32,
    rounds: u32,
    repeat_calls: u32,
    katran_object: Option<&std::path::Path>,
    consult_flows: bool,
) -> anyhow::Result<Measured> {
    let _pinned = crate::sys::pin_thread(&[cpu])?;
    let start = Instant::now();
    let mut bench = set_up(ifindex, cpu, katran_object)?;
    eprintln!(
        "    per-packet: programs loaded and services programmed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // The VIP miss is measured on an address the VIP filter rules out at once: one that
    // shares a VIP's bit would time the slow path of a false positive instead.
    let filter = bench.engine.dataplane().vip_filter()?;
    let (miss_addr, miss_family) = ricochet_common::addr_bytes(NOT_VIP4.into());
    ensure!(
        !ricochet_common::vip_filter::contains(&filter, &miss_addr, miss_family),
        "{NOT_VIP4}, the VIP miss's destination, shares a VIP's filter bit: pick another"
    );
    let mut rng = Rng::new(0x7e57_0001);
    let mut states = Vec::new();
    let all_kinds = [
        TableFlows::V4,
        TableFlows::V6,
        TableFlows::Unresolved,
        TableFlows::NoServer,
    ];
    bench.fill(&all_kinds, 0, HOT_FLOWS, false)?;
    bench.set_flow_table_use(consult_flows)?;
    let start = Instant::now();
    let repeated = bench.repeated(repeat_calls, &mut rng)?;
    let repeated_seconds = start.elapsed().as_secs_f64();
    eprintln!("    per-packet: hot-loop cross-check in {repeated_seconds:.1} s");
    for state in [TableState::Empty, TableState::Full] {
        let mut fill_seconds = 0.0;
        if state == TableState::Full {
            let start = Instant::now();
            bench.fill(
                &[TableFlows::V4, TableFlows::V6],
                HOT_FLOWS,
                FULL_FLOWS / 2,
                true,
            )?;
            fill_seconds = start.elapsed().as_secs_f64();
        }
        let flows_before = bench.engine.dataplane().flow_count();
        let katran_before = bench
            .katran
            .as_ref()
            .map(|k| k.flow_count(cpu))
            .transpose()?;
        let start = Instant::now();
        let samples = bench.rounds(state, warmup, rounds, &mut rng)?;
        let rounds_seconds = start.elapsed().as_secs_f64();
        let flows_after = bench.engine.dataplane().flow_count();
        let katran_after = bench
            .katran
            .as_ref()
            .map(|k| k.flow_count(cpu))
            .transpose()?;
        if let (Some(before), Some(after)) = (katran_before, katran_after) {
            let want = katran_table_sizes(state, warmup + rounds);
            ensure!(
                (before, after) == want,
                "Katran's LRU of CPU {cpu} held {before} flows before and {after} after the \
                 rounds with the {}, {} and {} expected: flows were evicted or leaked, so its \
                 state is not the one labelled",
                state.label(),
                want.0,
                want.1
            );
        }
        let (want_before, want_after) = table_sizes(state, warmup + rounds);
        ensure!(
            flows_before == want_before && flows_after == want_after,
            "the flow table held {flows_before} flows before and {flows_after} after the rounds \
             with the {}, {want_before} and {want_after} expected: flows were evicted or \
             leaked, so the state is not the one labelled",
            state.label()
        );
        eprintln!(
            "    per-packet: {}: {} rounds in {rounds_seconds:.1} s",
            state.label(),
            warmup + rounds
        );
        states.push(StateSamples {
            state,
            samples,
            flows_before,
            flows_after,
            katran_flows: katran_before.zip(katran_after),
            fill_seconds,
            rounds_seconds,
        });
    }
    Ok(Measured {
        cpu,
        flows_consulted: consult_flows,
        paths: bench.paths.clone(),
        katran: bench.katran.as_ref().map(|k| KatranInfo {
            object: katran_object
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            lru_entries_per_cpu: k.lru_size(),
            lrus: k.lru_count(),
            ring_size: k.ring_size(),
        }),
        warmup_rounds: warmup,
        rounds,
        states,
        repeated,
        repeated_seconds,
    })
}

/// Flows in the table before and after `runs` rounds of a state: the hot flows (both
/// families and the two diagnostics'), the million, and in the full state the new flows
/// the rounds leave behind.
fn table_sizes(state: TableState, runs: u32) -> (usize, usize) {
    let new_paths = Path::ALL
        .iter()
        .filter(|p| matches!(p.service(), Some((_, true))))
        .count();
    let hot = EMPTY_TABLE_FLOWS as usize;
    match state {
        TableState::Empty => (hot, hot),
        TableState::Full => {
            let before = (FULL_FLOWS + 2 * HOT_FLOWS) as usize;
            (before, before + new_paths * runs as usize)
        }
    }
}

/// Flows in Katran's LRU before and after `runs` rounds of a state: the hot flows of
/// both families, the million, and in the full state the new flows of its two SYN paths.
fn katran_table_sizes(state: TableState, runs: u32) -> (usize, usize) {
    let hot = 2 * HOT_FLOWS as usize;
    match state {
        TableState::Empty => (hot, hot),
        TableState::Full => {
            let before = FULL_FLOWS as usize;
            (before, before + 2 * runs as usize)
        }
    }
}

// ---------------------------------------------------------------------------------
// The report

#[derive(Debug, Serialize)]
struct Row {
    state: TableState,
    path: Path,
    summary: Summary,
    floor_median_ns: f64,
    overhead_ns: f64,
    target: Option<Target>,
    target_met: Option<bool>,
}

fn to_f64(samples: &[u32]) -> Vec<f64> {
    samples.iter().map(|&v| f64::from(v)).collect()
}

fn rows(m: &Measured) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in &m.states {
        let floor = Summary::of(&to_f64(&s.samples[&Path::Floor]));
        for &p in &m.paths {
            let summary = Summary::of(&to_f64(&s.samples[&p]));
            let overhead = summary.p50 - floor.p50;
            let target = p.target();
            rows.push(Row {
                state: s.state,
                path: p,
                summary,
                floor_median_ns: floor.p50,
                overhead_ns: overhead,
                target,
                target_met: target.map(|t| meets(t, overhead)),
            });
        }
    }
    rows
}

/// Each DSR mode's new flow beside the same flow in IP-in-IP, measured in the same rounds:
/// what the mode costs above the floor and above IP-in-IP, per table state.
fn modes_markdown(rows: &[Row]) -> String {
    let modes = [
        (Path::NewTcp4Gre, Path::NewTcp4, "GRE, IPv4"),
        (Path::NewTcp4Gue, Path::NewTcp4, "GUE, IPv4"),
        (Path::NewTcp6Gue, Path::NewTcp6, "GUE, IPv6"),
        (Path::NewTcp4L2, Path::NewTcp4, "L2 DSR, IPv4"),
    ];
    let header = [
        "mode (new TCP flow)",
        "table",
        "overhead",
        "IP-in-IP's",
        "difference",
    ];
    let mut out = Vec::new();
    for state in [TableState::Empty, TableState::Full] {
        if !rows.iter().any(|r| r.state == state) {
            continue;
        }
        for (path, ipip, label) in modes {
            let (m, b) = (row(rows, state, path), row(rows, state, ipip));
            out.push(vec![
                label.to_owned(),
                state.label().to_owned(),
                format!("{} ns", ns(m.overhead_ns)),
                format!("{} ns", ns(b.overhead_ns)),
                format!("{:+.0} ns", m.overhead_ns - b.overhead_ns),
            ]);
        }
    }
    format!(
        "\nDSR modes beside IP-in-IP (the same SYN steps to a service of another network \
         profile, in the same rounds; the ICMP error path is `icmp4-error-forwarded` above):\n\n{}\n",
        table(&header, &out)
    )
}

fn row(rows: &[Row], state: TableState, path: Path) -> &Row {
    rows.iter()
        .find(|r| r.state == state && r.path == path)
        .expect("every state and path has a row")
}

/// Hot-loop medians: path -> (summary of the per-call means, overhead above the floor's).
fn repeated_rows(m: &Measured) -> BTreeMap<Path, (Summary, f64)> {
    let floor = Summary::of(&to_f64(&m.repeated[&Path::Floor]));
    m.repeated
        .iter()
        .map(|(p, v)| {
            let s = Summary::of(&to_f64(v));
            (*p, (s, s.p50 - floor.p50))
        })
        .collect()
}

fn ns(v: f64) -> String {
    format!("{v:.0}")
}

fn samples_csv(m: &Measured) -> String {
    let mut csv = String::from("table,round");
    for p in &m.paths {
        let _ = write!(csv, ",{}", p.id());
    }
    csv.push('\n');
    for s in &m.states {
        for i in 0..m.rounds as usize {
            let _ = write!(csv, "{},{i}", s.state.id());
            for &p in &m.paths {
                let _ = write!(csv, ",{}", s.samples[&p][i]);
            }
            csv.push('\n');
        }
    }
    csv
}

/// Sorted percentiles 1..=99 and the maximum of every path and state.
fn percentiles_json(m: &Measured) -> BTreeMap<String, BTreeMap<String, Vec<f64>>> {
    let mut out = BTreeMap::new();
    for s in &m.states {
        let mut per_path = BTreeMap::new();
        for &p in &m.paths {
            let mut sorted = to_f64(&s.samples[&p]);
            sorted.sort_by(f64::total_cmp);
            let pcts = (1..=99)
                .map(|q| percentile_sorted(&sorted, f64::from(q)))
                .chain(sorted.last().copied())
                .collect();
            per_path.insert(p.id().to_owned(), pcts);
        }
        out.insert(s.state.id().to_owned(), per_path);
    }
    out
}

fn percentile_chart(ctx: &Ctx, m: &Measured, state: TableState) -> anyhow::Result<String> {
    let s = m
        .states
        .iter()
        .find(|s| s.state == state)
        .expect("both states measured");
    let series: Vec<Series> = m
        .paths
        .iter()
        .filter(|p| !p.diagnostic())
        .map(|p| {
            let mut sorted = to_f64(&s.samples[p]);
            sorted.sort_by(f64::total_cmp);
            let qs = [1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0];
            Series {
                name: p.id().to_owned(),
                points: qs
                    .iter()
                    .map(|&q| (q, percentile_sorted(&sorted, q)))
                    .collect(),
            }
        })
        .collect();
    let name = format!("per_packet_percentiles_{}.png", state.id());
    plot::line_chart(
        &ctx.plot_path(&name),
        &format!(
            "ns per BPF_PROG_TEST_RUN run by percentile ({})",
            state.label()
        ),
        "percentile",
        "ns per run (kernel-timed, floor included; log scale)",
        &series,
        Axes {
            log_x: false,
            log_y: true,
        },
    )?;
    Ok(name)
}

fn kernel_fact(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

/// "met in k of n rows" for a headline.
fn target_count(rows: &[Row], target: Target) -> String {
    let judged = rows.iter().filter(|r| r.target == Some(target));
    let met = judged
        .clone()
        .filter(|r| r.target_met == Some(true))
        .count();
    format!("met in {met} of {} rows", judged.count())
}

fn target_summary(rows: &[Row], target: Target) -> String {
    let judged: Vec<&Row> = rows.iter().filter(|r| r.target == Some(target)).collect();
    let missed: Vec<String> = judged
        .iter()
        .filter(|r| r.target_met == Some(false))
        .map(|r| format!("{} ({})", r.path.id(), r.state.label()))
        .collect();
    if missed.is_empty() {
        format!("met in all {} rows", judged.len())
    } else {
        format!(
            "not met in {} of {} rows: {}",
            missed.len(),
            judged.len(),
            missed.join(", ")
        )
    }
}

/// Thousands separators for counts in prose.
fn grouped(n: usize) -> String {
    crate::report::grouped(n as u64)
}

fn markdown(ctx: &Ctx, m: &Measured, rows: &[Row], links: &Links) -> String {
    let mut md = String::new();
    let full = m
        .states
        .iter()
        .find(|s| s.state == TableState::Full)
        .expect("both states measured");
    let _ = writeln!(
        md,
        "### Method\n\n\
         The XDP load balancer (`ricochet_lb`, loaded with a flow table of {} entries and \
         programmed by the engine with an IPv4 and an IPv6 web service and an IPv4 DNS service, \
         two servers each, plus two diagnostic services on the IPv4 VIP: one whose only server \
         has no neighbour entry, one whose only server is disabled) and a trivial program that only returns XDP_TX (`xdp_tx`, the \
         **floor**) are run with BPF_PROG_TEST_RUN, one run per sample (`repeat` 1): the program \
         rewrites packets, so repeating it in the kernel would time it on its own output. The \
         kernel copies the input frame in for every run and reports that run's duration in ns. \
         The measuring thread is pinned to CPU {} inside a network namespace where the load \
         balancer's interface has the servers as permanent neighbours, so that `bpf_fib_lookup` \
         succeeds as on a real service engine. Each round runs the floor and every path once, \
         in a shuffled order, with a fresh frame per run; {} warm-up rounds are discarded, then \
         {} rounds are kept per table state. **Overhead** = the path's median minus the floor's \
         median over the same rounds.\n",
        grouped(FLOW_CAPACITY as usize),
        m.cpu,
        grouped(m.warmup_rounds as usize),
        grouped(m.rounds as usize),
    );
    md.push_str(
        "Every figure is checked to belong to its label: each run's verdict and output size \
         (encapsulation adds 20 or 40 bytes); after every new-flow run, its flow must be in the \
         flow table; the verdict and per-service counters (packets, new flows) must have moved \
         by exactly what the runs imply, so that an established run that fell through to a new \
         flow, or a forward that became a drop, fails the section; and the table's size is \
         walked before and after each state.\n\n",
    );
    let _ = writeln!(
        md,
        "Table states:\n\n\
         - **empty**: only the {hot} IPv4 and {hot} IPv6 flows that the established paths hit \
         (a random one per run) and {hot} for each diagnostic. A new flow is deleted again after \
         its run (outside the timed part), so the table stays at {} entries (the map's \
         per-CPU free list may hand the freed element to the next new flow).\n\
         - **1M flows**: {} flows (half IPv4, half IPv6, the hot ones among them; written \
         from userspace in {:.1} s, one update per flow) plus the diagnostics' flows; the \
         established paths hit a random one of the million per run, so the lookup meets cold \
         cache lines as with real traffic. New flows stay in the table, each taking a \
         never-used element from the free list as in service: it grows from {} to {} entries \
         during the rounds (capacity {}: nothing is evicted).\n",
        grouped(EMPTY_TABLE_FLOWS as usize),
        grouped(FULL_FLOWS as usize),
        full.fill_seconds,
        grouped(full.flows_before),
        grouped(full.flows_after),
        grouped(FLOW_CAPACITY as usize),
        hot = grouped(HOT_FLOWS as usize),
    );
    md.push_str("Paths (new flows use a fresh client address and source port per run):\n\n");
    for p in &m.paths {
        let _ = writeln!(md, "- `{}`: {}", p.id(), p.describe());
    }
    let _ = writeln!(
        md,
        "\nKernel {}, `net.core.bpf_jit_enable` = {}, `kernel.bpf_stats_enabled` = {}.\n",
        kernel_fact("/proc/sys/kernel/osrelease"),
        kernel_fact("/proc/sys/net/core/bpf_jit_enable"),
        kernel_fact("/proc/sys/kernel/bpf_stats_enabled"),
    );

    md.push_str("### Results\n\n");
    let header = [
        "path",
        "table",
        "median ns",
        "p10",
        "p90",
        "p99",
        "floor median",
        "overhead above floor",
        "target (overhead)",
    ];
    let mut table_rows = Vec::new();
    for r in rows {
        let target = match (r.target, r.target_met) {
            (Some(t), Some(met)) => format!(
                "≤ {} ns: {}",
                t.max_overhead_ns,
                if met { "met" } else { "**not met**" }
            ),
            _ if r.path.diagnostic() => "(diagnostic)".to_owned(),
            _ => "—".to_owned(),
        };
        table_rows.push(vec![
            format!("`{}`", r.path.id()),
            r.state.label().to_owned(),
            ns(r.summary.p50),
            ns(r.summary.p10),
            ns(r.summary.p90),
            ns(r.summary.p99),
            ns(r.floor_median_ns),
            if r.path == Path::Floor {
                "—".to_owned()
            } else {
                ns(r.overhead_ns)
            },
            target,
        ]);
    }
    md.push_str(&table(&header, &table_rows));
    let _ = writeln!(
        md,
        "\nTargets on the overhead above the floor: {} ns for an established flow ({}); {} ns \
         for a new flow ({}; the UDP query is a new flow and is held to it too); {} ns for a VIP \
         miss ({}).\n",
        ESTABLISHED_TARGET.max_overhead_ns,
        target_summary(rows, ESTABLISHED_TARGET),
        NEW_FLOW_TARGET.max_overhead_ns,
        target_summary(rows, NEW_FLOW_TARGET),
        MISS_TARGET.max_overhead_ns,
        target_summary(rows, MISS_TARGET),
    );
    md.push_str(&modes_markdown(rows));
    let _ = writeln!(
        md,
        "![Overhead above the floor per path]({})\n\n![Percentiles, empty table]({})\n\n\
         ![Percentiles, 1M flows]({})\n",
        links.bars, links.pct_empty, links.pct_full
    );

    md.push_str(&katran_markdown(m, rows));
    md.push_str("### Where the time goes\n\n");
    md.push_str(
        "Each step is the difference between the medians of two paths measured in the same \
         rounds with the empty table (where every flow-table hit is to one of a few flows), so \
         it isolates the work one path does beyond the other. The hot-loop column \
         is the same difference measured with warm caches (below), where both paths allow it.\n\n",
    );
    let rep = repeated_rows(m);
    let steps: [(Path, Path, &str); 11] = [
        (
            Path::Malformed4,
            Path::Floor,
            "program entry, Ethernet and IPv4 header checks, verdict counter",
        ),
        (Path::Miss4, Path::Malformed4, "VIP lookup (a miss)"),
        (
            Path::NoService4,
            Path::Miss4,
            "VIP hit, TCP ports, service lookup (a miss)",
        ),
        (
            Path::NoServer4,
            Path::NoService4,
            "service hit, settings, flow-table hit, server slot read",
        ),
        (
            Path::Unresolved4,
            Path::NoServer4,
            "FIB lookup (route found, failing at the neighbour: failures are not cached) and the encapsulation's preamble",
        ),
        (
            Path::EstablishedTcp4,
            Path::Unresolved4,
            "next hop from the per-CPU cache instead of a failing FIB lookup (negative when the cache is cheaper), head adjust, Ethernet and outer IPv4 header with checksum, service and server counters",
        ),
        (
            Path::NewTcp4,
            Path::EstablishedTcp4,
            "a new flow instead of a hit: no flow-table lookup (a SYN) instead of a hit, client hash, Maglev slot, flow insert",
        ),
        (
            Path::NewUnresolved4,
            Path::Unresolved4,
            "of which: no flow-table lookup instead of a hit, client hash, Maglev slot (no insert)",
        ),
        (
            Path::NewTcp4,
            Path::NewUnresolved4,
            "of which: flow insert, plus the neighbour, encapsulation and counters (as `tcp4-established` − `tcp4-no-neighbour`)",
        ),
        (
            Path::NewTcp6,
            Path::EstablishedTcp6,
            "the same for IPv6",
        ),
        (
            Path::EstablishedTcp6,
            Path::EstablishedTcp4,
            "IPv6 instead of IPv4 for an established flow (flow-label hash, 40-byte header; next hop from the cache)",
        ),
    ];
    let mut step_rows = Vec::new();
    for (a, b, what) in steps {
        let single = row(rows, TableState::Empty, a).summary.p50
            - row(rows, TableState::Empty, b).summary.p50;
        let hot = match (rep.get(&a), rep.get(&b)) {
            (Some((sa, _)), Some((sb, _))) => ns(sa.p50 - sb.p50),
            _ => "—".to_owned(),
        };
        step_rows.push(vec![
            format!("`{}` − `{}`", a.id(), b.id()),
            what.to_owned(),
            ns(single),
            hot,
        ]);
    }
    md.push_str(&table(
        &[
            "difference",
            "what it adds",
            "single runs, ns",
            "hot loop, ns",
        ],
        &step_rows,
    ));
    md.push_str(&format!(
        "\nWhat {full} flows add to each path ({full}-flow median − empty-table median). An \
             established packet's lookup then reads a random bucket and element among {full} \
             preallocated elements spread over a large memory area (most likely cache and TLB \
             misses, which this benchmark does not count), while a new flow's lookup reads a \
             bucket and at most a short chain before it takes an element from the free list, \
             so a hit can cost more than a new flow there. The diagnostics hit their own few \
             flows in both states.\n\n",
        full = grouped(FULL_FLOWS as usize),
    ));
    let growth: Vec<Vec<String>> = m
        .paths
        .iter()
        .map(|&p| {
            vec![
                format!("`{}`", p.id()),
                ns(row(rows, TableState::Full, p).summary.p50
                    - row(rows, TableState::Empty, p).summary.p50),
            ]
        })
        .collect();
    md.push_str(&table(&["path", "ns added by 1M flows"], &growth));

    let _ = writeln!(
        md,
        "\nHot-loop cross-check: the paths that do not rewrite the packet may be run {REPEAT} \
         times per kernel call on one buffer, as a NAPI poll runs a program back to back with \
         warm caches. The kernel reports the mean per run; {} calls per path, interleaved. The \
         single-run figures above also carry the cache and TLB state that a system call and the \
         benchmark's own work between runs leave behind; the difference shows how much. A call \
         repeats one frame, so `tcp4-new-no-neighbour` hashes the same client onto the same, \
         warm Maglev slot every time there, which the single runs' fresh clients never do.\n",
        m.repeated[&Path::Floor].len()
    );
    let rep_rows: Vec<Vec<String>> = rep
        .iter()
        .map(|(p, (s, overhead))| {
            let single = row(rows, TableState::Empty, *p);
            vec![
                format!("`{}`", p.id()),
                ns(s.p50),
                if *p == Path::Floor {
                    "—".to_owned()
                } else {
                    ns(*overhead)
                },
                ns(single.summary.p50),
                if *p == Path::Floor {
                    "—".to_owned()
                } else {
                    ns(single.overhead_ns)
                },
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "path",
            "hot loop: median ns per run",
            "hot loop: overhead",
            "single runs (empty table): median",
            "single runs: overhead",
        ],
        &rep_rows,
    ));

    let _ = writeln!(
        md,
        "\n### Caveats\n\n\
         - The kernel's timer around a single run includes its own clock reads and the dispatch \
         into the program; the floor carries the same costs, which is why overheads are reported \
         above it. The floor itself is not the cost of XDP on a real NIC.\n\
         - BPF_PROG_TEST_RUN does not transmit: XDP_TX is a return code here. The driver, DMA \
         and the veth's transmit are not in these figures (the forwarding section measures \
         them).\n\
         - No hardware performance counters are read: the steps above come from differences \
         of medians, not from cycle counts, and the CPU is pinned but not isolated, so the \
         tails (p99) include interrupt noise (and, on a virtual machine, the host's). Other load \
         on the machine (the other CPUs, a hypervisor's host) moves every median of a run \
         together: compare paths within one run rather than across runs.{}\n\
         - With `repeat` above 1 the kernel installs the program in its XDP dispatcher for the \
         call and removes it after (a direct call instead of an indirect one: one reason why the \
         hot loop's floor is lower). That set-up is slow, {:.0} ms per call here, hence few \
         calls.\n\
         - Not measured here: XDP_REDIRECT to another interface, ICMP \"too big\" answers, VLAN \
         tags, a full table that evicts (LRU) on every new flow.\n",
        if ctx.quick {
            "\n- This was a `--quick` run: few rounds, noisier medians."
        } else {
            ""
        },
        1000.0 * m.repeated_seconds
            / m.repeated.values().map(Vec::len).sum::<usize>().max(1) as f64,
    );
    let _ = writeln!(
        md,
        "\nRaw data: [{}]({}) (one line per round: ns of every path, floor included), \
         [{}]({}) (percentiles 1..99 and the maximum per path and state), [{}]({}) (summaries, \
         hot-loop samples, set-up, timings).",
        links.csv, links.csv, links.pct_json, links.pct_json, links.json, links.json
    );
    md
}

/// The target on Ricochet's overhead as a fraction of Katran's, path by path.
const KATRAN_RATIO_TARGET: f64 = 0.75;

/// Ricochet's overhead over Katran's on the same path and table; none when Katran's is
/// not above the floor (no ratio can be formed).
fn katran_ratio(ricochet_ns: f64, katran_ns: f64) -> Option<f64> {
    (katran_ns > 0.0).then(|| ricochet_ns / katran_ns)
}

/// Rows of the comparison: (Ricochet's row, Katran's row) for every compared path and
/// state measured.
fn katran_pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    rows.iter()
        .filter_map(|r| {
            let k = r.path.katran_peer()?;
            let kr = rows.iter().find(|x| x.path == k && x.state == r.state)?;
            Some((r, kr))
        })
        .collect()
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or("— (Katran at the floor)".to_owned(), |r| {
        format!("{r:.2}")
    })
}

fn katran_markdown(m: &Measured, rows: &[Row]) -> String {
    let mut md = String::from("### Ricochet and Katran\n\n");
    let Some(k) = &m.katran else {
        md.push_str(
            "**Katran was not measured** in this run (no `--katran-object`): the figures \
             above are overheads above the floor only. Give `cargo xtask bench \
             --katran-object PATH` a Katran balancer object built from Katran's sources to \
             measure it beside Ricochet in the same rounds.\n\n",
        );
        return md;
    };
    let _ = writeln!(
        md,
        "Katran's XDP balancer (`{}`, built by the user from Katran's sources; not part of \
         this project) was loaded with aya and provisioned as Katran's userspace does it: the \
         IPv4 and IPv6 VIPs on port 80 in `vip_map`, the same two servers per family as \
         `reals` 1-4, each VIP's ring of {} slots alternating its two reals in `ch_rings`, the \
         default router's MAC in `ctl_array[0]`, and one LRU hash of {} entries per CPU ({} \
         LRUs, set in `lru_mapping` as Katran's `createLruMap` per forwarding core does); the \
         LRU of the measuring CPU holds the same flows as Ricochet's table in each state. Its \
         runs take part in the same shuffled rounds as Ricochet's and the floor, on the same \
         frames (a Katran new flow is the very frame of Ricochet's, in the same round), and \
         are checked the same way: verdict and output size of every run, the new flow in the \
         LRU after every SYN, the LRU's size walked before and after, and Katran's own \
         counters (XDP_TX / XDP_PASS totals, SYN and non-SYN LRU misses, the fallback LRU \
         count, which must stay 0) moved by exactly what the runs imply.\n",
        k.object,
        grouped(k.ring_size as usize),
        grouped(k.lru_entries_per_cpu as usize),
        k.lrus,
    );
    md.push_str(
        "What differs by design: Katran sends every packet to one default router MAC and \
         does no FIB lookup; Ricochet looks up each server's next hop (cached per CPU). \
         Ricochet reads one word of its VIP filter (an array) and then looks up (VIP, \
         port, protocol) in one hash lookup, as Katran looks up its vip_map; a VIP miss \
         costs Ricochet the filter word, Katran two vip_map lookups (the port, then port 0). Both hash a TCP SYN without a flow-table lookup and record it. \
         Ricochet counts per service, per server and per verdict reason; Katran per VIP, \
         per real and globally.\n\n",
    );
    let mut table_rows = Vec::new();
    for (r, kr) in katran_pairs(rows) {
        let ratio = katran_ratio(r.overhead_ns, kr.overhead_ns);
        table_rows.push(vec![
            format!("`{}` / `{}`", r.path.id(), kr.path.id()),
            r.state.label().to_owned(),
            ns(r.overhead_ns),
            ns(kr.overhead_ns),
            ratio_text(ratio),
            match ratio {
                Some(x) if x <= KATRAN_RATIO_TARGET => "met".to_owned(),
                Some(_) => "**not met**".to_owned(),
                None => "—".to_owned(),
            },
        ]);
    }
    md.push_str(&table(
        &[
            "Ricochet / Katran path",
            "table",
            "Ricochet overhead ns",
            "Katran overhead ns",
            "Ricochet / Katran",
            &format!("target ≤ {KATRAN_RATIO_TARGET}"),
        ],
        &table_rows,
    ));
    md.push('\n');
    md
}

struct Links {
    bars: String,
    pct_empty: String,
    pct_full: String,
    csv: String,
    pct_json: String,
    json: String,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let (warmup, rounds, repeat_calls) = if ctx.quick {
        (200, 2_000, 10)
    } else {
        (2_000, 50_000, 60)
    };
    let cpu = if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        1
    } else {
        0
    };
    let start = Instant::now();
    let measured = ricochet_testkit::netns::in_fresh_netns(|| -> anyhow::Result<Measured> {
        let ifindex = build_lab_network();
        eprintln!(
            "    per-packet: namespace ready in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        measure(
            ifindex,
            cpu,
            warmup,
            rounds,
            repeat_calls,
            ctx.katran_object.as_deref(),
            ctx.consult_flows,
        )
    })?;

    let rows = rows(&measured);
    let bars = "per_packet_overhead.png".to_owned();
    let groups: Vec<BarGroup> = measured
        .paths
        .iter()
        .filter(|p| **p != Path::Floor)
        .map(|&p| BarGroup {
            label: p.short().to_owned(),
            values: [TableState::Empty, TableState::Full]
                .iter()
                .map(|&s| Some(row(&rows, s, p).overhead_ns))
                .collect(),
        })
        .collect();
    plot::bar_chart(
        &ctx.plot_path(&bars),
        "Overhead above an XDP_TX-only program (median ns; diagnostics in parentheses)",
        "ns above the floor",
        &[TableState::Empty.label(), TableState::Full.label()],
        &groups,
    )?;
    let pct_empty = percentile_chart(ctx, &measured, TableState::Empty)?;
    let pct_full = percentile_chart(ctx, &measured, TableState::Full)?;
    let csv = ctx.write_raw_text("per-packet-samples.csv", &samples_csv(&measured))?;
    let pct_json =
        ctx.write_raw_json("per-packet-percentiles.json", &percentiles_json(&measured))?;
    #[derive(Serialize)]
    struct StateInfo {
        state: TableState,
        flows_before: usize,
        flows_after: usize,
        katran_flows: Option<(usize, usize)>,
        fill_seconds: f64,
        rounds_seconds: f64,
    }
    #[derive(Serialize)]
    struct Raw<'a> {
        cpu: usize,
        katran: Option<&'a KatranInfo>,
        warmup_rounds: u32,
        rounds: u32,
        flow_capacity: u32,
        full_flows: u32,
        hot_flows_per_kind: u32,
        states: Vec<StateInfo>,
        rows: &'a [Row],
        hot_loop_repeat: u32,
        hot_loop_seconds: f64,
        hot_loop_summaries: BTreeMap<Path, (Summary, f64)>,
        hot_loop_samples: &'a BTreeMap<Path, Vec<u32>>,
    }
    let json = ctx.write_raw_json(
        "per-packet.json",
        &Raw {
            cpu: measured.cpu,
            katran: measured.katran.as_ref(),
            warmup_rounds: measured.warmup_rounds,
            rounds: measured.rounds,
            flow_capacity: FLOW_CAPACITY,
            full_flows: FULL_FLOWS,
            hot_flows_per_kind: HOT_FLOWS,
            states: measured
                .states
                .iter()
                .map(|s| StateInfo {
                    state: s.state,
                    flows_before: s.flows_before,
                    flows_after: s.flows_after,
                    katran_flows: s.katran_flows,
                    fill_seconds: s.fill_seconds,
                    rounds_seconds: s.rounds_seconds,
                })
                .collect(),
            rows: &rows,
            hot_loop_repeat: REPEAT,
            hot_loop_seconds: measured.repeated_seconds,
            hot_loop_summaries: repeated_rows(&measured),
            hot_loop_samples: &measured.repeated,
        },
    )?;
    let links = Links {
        bars,
        pct_empty,
        pct_full,
        csv,
        pct_json,
        json,
    };
    let markdown = markdown(ctx, &measured, &rows, &links);

    let o = |s: TableState, p: Path| ns(row(&rows, s, p).overhead_ns);
    let both = |p: Path| format!("{} / {}", o(TableState::Empty, p), o(TableState::Full, p));
    let comparison = if measured.katran.is_some() {
        let pairs = katran_pairs(&rows);
        let text: Vec<String> = pairs
            .iter()
            .filter(|(r, _)| r.state == TableState::Full || r.path == Path::EstablishedTcp4)
            .map(|(r, kr)| {
                format!(
                    "{} ({}) {}",
                    r.path.id(),
                    r.state.label(),
                    ratio_text(katran_ratio(r.overhead_ns, kr.overhead_ns))
                )
            })
            .collect();
        format!(
            "Ricochet's overhead / Katran's, same rounds: {} (target ≤ {KATRAN_RATIO_TARGET})",
            text.join(", ")
        )
    } else {
        "Katran was not measured (no --katran-object): overheads above the floor only".to_owned()
    };
    let headlines = vec![
        if measured.flows_consulted {
            "flow table consulted by every service (--consult-flows: CONSULT_FLOWS set, as \
             right after a pool change): established TCP packets look their flow up"
                .to_owned()
        } else {
            format!(
                "flow table not consulted (the steady state: the engine's scan found every \
                 flow on its Maglev pick): established TCP packets take the Maglev pick, 1 in \
                 {} looks its flow up; run with --consult-flows for the other state",
                ricochet_common::limits::FLOW_SAMPLE
            )
        },
        format!(
            "floor (an XDP_TX-only program): {} ns per single BPF_PROG_TEST_RUN run; the \
             overheads below are medians above it, empty table / 1M flows",
            ns(row(&rows, TableState::Full, Path::Floor).summary.p50)
        ),
        format!(
            "established flow: IPv4 {} ns, IPv6 {} ns (target ≤ {} ns: {})",
            both(Path::EstablishedTcp4),
            both(Path::EstablishedTcp6),
            ESTABLISHED_TARGET.max_overhead_ns,
            target_count(&rows, ESTABLISHED_TARGET)
        ),
        format!(
            "new flow: IPv4 TCP {} ns, IPv6 TCP {} ns, IPv4 UDP {} ns (target ≤ {} ns: {})",
            both(Path::NewTcp4),
            both(Path::NewTcp6),
            both(Path::NewUdp4),
            NEW_FLOW_TARGET.max_overhead_ns,
            target_count(&rows, NEW_FLOW_TARGET)
        ),
        format!(
            "VIP miss (pass) {} ns (target ≤ {} ns: {}); malformed drop {} ns",
            both(Path::Miss4),
            MISS_TARGET.max_overhead_ns,
            target_count(&rows, MISS_TARGET),
            both(Path::Malformed4)
        ),
        comparison,
    ];
    Ok(Body {
        markdown,
        headlines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_config_compiles_to_the_services_the_paths_use() {
        let d = desired().unwrap();
        assert_eq!(d.services.len(), 9);
        for p in &d.pools {
            let n = match p.name.as_str() {
                "unresolved4" | "disabled4" => 1,
                _ => 2,
            };
            assert_eq!(p.servers.len(), n, "pool {}", p.name);
        }
        assert_eq!(
            d.pool("unresolved4").unwrap().servers[0].ip,
            IpAddr::from(UNRESOLVED_SERVER)
        );
        assert!(SERVERS.iter().all(|s| s.0 != UNRESOLVED_SERVER));
        assert!(!d.pool("disabled4").unwrap().servers[0].enabled);
        for p in Path::ALL {
            if let Some((svc, _)) = p.service() {
                assert!(d.service(svc).is_some(), "{svc} is configured");
            }
        }
    }

    #[test]
    fn clients_are_distinct_within_and_across_roles() {
        let mut seen = HashSet::new();
        for base in [
            TABLE_V4_BASE,
            NEW_V4_BASE,
            UDP_V4_BASE,
            MISS_V4_BASE,
            MALFORMED_V4_BASE,
            NO_SERVICE_V4_BASE,
            UNRESOLVED_V4_BASE,
            NO_SERVER_V4_BASE,
            NEW_UNRESOLVED_V4_BASE,
            GRE_V4_BASE,
            GUE_V4_BASE,
            L2_V4_BASE,
            ICMP_V4_BASE,
        ] {
            // The table's clients (500,000) and the rounds' (at most ~100,000) never meet.
            let n = if base == TABLE_V4_BASE {
                FULL_FLOWS / 2
            } else {
                120_000
            };
            for i in 0..n {
                assert!(seen.insert(client_v4(base, i)), "{base} #{i} repeats");
            }
        }
        let mut seen6 = HashSet::new();
        for base in [TABLE_V6_BASE, NEW_V6_BASE, GUE_V6_BASE] {
            for i in 0..FULL_FLOWS / 2 {
                assert!(seen6.insert(client_v6(base, i)), "{base} #{i} repeats");
            }
        }
        assert_eq!(
            client_v4(NEW_V4_BASE, 17),
            (Ipv4Addr::new(172, 16, 0, 1), 40001)
        );
    }

    #[test]
    fn malformed_frame_claims_more_than_it_holds_with_a_valid_checksum() {
        let good = tcp4_frame(CLIENT_V4_FOR_TEST, 40000, VIP4, 80, true);
        // The checksum helper agrees with etherparse on the untouched header.
        let mut h = good[14..34].to_vec();
        let theirs = [h[10], h[11]];
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(ipv4_header_checksum(&h).to_be_bytes(), theirs);

        let bad = malformed4_frame(CLIENT_V4_FOR_TEST, 40000);
        assert_eq!(bad.len(), good.len());
        let total = u16::from_be_bytes([bad[16], bad[17]]) as usize;
        let good_total = u16::from_be_bytes([good[16], good[17]]) as usize;
        assert_eq!(total, good_total + 64);
        assert!(
            14 + total > bad.len(),
            "it claims more than the frame holds"
        );
        let mut h = bad[14..34].to_vec();
        let sum = [h[10], h[11]];
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(ipv4_header_checksum(&h).to_be_bytes(), sum);
    }
    const CLIENT_V4_FOR_TEST: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

    #[test]
    fn ipv4_tcp_frames_are_minimum_ethernet_frames_padded_after_the_packet() {
        for syn in [true, false] {
            let f = tcp4_frame(CLIENT_V4_FOR_TEST, 40000, VIP4, 80, syn);
            assert_eq!(f.len(), MIN_FRAME, "64 bytes on the wire with the FCS");
            let total = u16::from_be_bytes([f[16], f[17]]) as usize;
            let want = 20 + 20 + if syn { 0 } else { SEGMENT_PAYLOAD.len() };
            assert_eq!(total, want);
            assert!(f[14 + total..].iter().all(|&b| b == 0), "zero padding");
        }
        // IPv6 frames are longer than the minimum: no padding.
        let f6 = tcp6_frame(Ipv6Addr::LOCALHOST, 40000, VIP6, true);
        assert_eq!(f6.len(), 14 + 40 + 20);
    }

    #[test]
    fn frames_carry_the_flow_the_input_names() {
        let mut rng = Rng::new(1);
        let (frame, key) = input(Path::NewTcp4, 33, TableState::Empty, &mut rng);
        let key = key.unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("IPv4 expected")
        };
        assert_eq!(&key.src[..4], &ip.header().source());
        assert_eq!(&key.dst[..4], &VIP4.octets());
        let (_, udp_key) = input(Path::NewUdp4, 33, TableState::Empty, &mut rng);
        assert_eq!(udp_key.unwrap().proto, PROTO_UDP);
        // Established runs pick among the table's flows only.
        for _ in 0..1000 {
            let (frame, key) = input(Path::EstablishedTcp6, 0, TableState::Empty, &mut rng);
            assert!(key.is_none());
            let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
                panic!("IPv6 expected")
            };
            let src = ip.header().source_addr();
            assert!(
                (0..HOT_FLOWS).any(|i| client_v6(TABLE_V6_BASE, i).0 == src),
                "{src} is not a hot flow"
            );
        }
        let (frame, _) = input(Path::Unresolved4, 0, TableState::Full, &mut rng);
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("TCP expected")
        };
        assert_eq!(tcp.destination_port(), UNRESOLVED_PORT);
        assert_eq!(
            table_flow(TableFlows::V6, 5),
            FlowKey::new(
                client_v6(TABLE_V6_BASE, 5).0.into(),
                client_v6(TABLE_V6_BASE, 5).1,
                VIP6.into(),
                80,
                PROTO_TCP
            )
        );
    }

    #[test]
    fn rng_stays_in_range_and_shuffles_into_permutations() {
        let mut rng = Rng::new(42);
        let mut hits = [0u32; 7];
        for _ in 0..70_000 {
            hits[rng.below(7) as usize] += 1;
        }
        assert!(
            hits.iter().all(|&h| (9_000..11_000).contains(&h)),
            "{hits:?}"
        );
        let mut order = Path::ALL;
        rng.shuffle(&mut order);
        let mut sorted = order;
        sorted.sort();
        assert_eq!(sorted, Path::ALL);
        assert_ne!(order, Path::ALL, "a shuffle of 8 should move something");
    }

    fn every_path(n: u64) -> Vec<(Path, u64)> {
        Path::ALL.iter().map(|&p| (p, n)).collect()
    }

    #[test]
    fn expected_counts_follow_the_paths() {
        let e = expected_counts(&every_path(10));
        assert_eq!(e.reasons["forwarded"], 90);
        assert_eq!(e.reasons["forwarded_icmp_error"], 10);
        assert_eq!(e.reasons["pass_not_vip"], 10);
        assert_eq!(e.reasons["drop_malformed_ipv4"], 10);
        assert_eq!(e.reasons["drop_no_service"], 10);
        assert_eq!(e.reasons["drop_no_neighbour"], 20);
        assert_eq!(e.reasons["drop_no_server"], 10);
        assert_eq!(e.reasons["drop_no_route"], 0);
        assert_eq!(e.services["web-v4"], (20, 10));
        assert_eq!(e.services["web-v6"], (20, 10));
        assert_eq!(e.services["dns-v4"], (10, 10));
        // The hot loop runs only paths that leave the packet alone.
        let hot: Vec<(Path, u64)> = Path::ALL
            .iter()
            .filter(|p| !p.rewrites())
            .map(|&p| (p, 7))
            .collect();
        let e = expected_counts(&hot);
        assert_eq!(e.reasons["forwarded"], 0);
        assert_eq!(e.services["web-v4"], (0, 0));
        assert_eq!(e.reasons["pass_not_vip"], 7);
    }

    #[test]
    fn only_paths_that_keep_the_frame_size_may_repeat() {
        for p in Path::ALL {
            if !p.rewrites() {
                assert_eq!(p.expected().1, 0, "{}", p.id());
                assert_ne!(p.reason(), Some(Reason::Forwarded), "{}", p.id());
            }
        }
    }

    #[test]
    fn table_sizes_count_the_new_flows_left_in_the_full_table() {
        assert_eq!(table_sizes(TableState::Empty, 100), (64, 64));
        assert_eq!(
            table_sizes(TableState::Full, 100),
            (1_000_032, 1_000_032 + 700)
        );
    }

    #[test]
    fn delta_subtracts_counter_by_counter() {
        let before = expected_counts(&every_path(3));
        let after = expected_counts(&every_path(10));
        assert_eq!(delta(&before, &after), expected_counts(&every_path(7)));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(2_097_152), "2,097,152");
    }

    #[test]
    fn a_mislabelled_path_is_caught() {
        let want = expected_counts(&every_path(10));
        assert!(mismatches(&want, &expected_counts(&every_path(10))).is_empty());
        // An established IPv4 run that fell through to a new flow.
        let mut got = expected_counts(&every_path(10));
        got.services.get_mut("web-v4").unwrap().1 += 1;
        let m = mismatches(&want, &got);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("web-v4"), "{m:?}");
        // A forwarded run that was dropped for want of a neighbour.
        let mut got = expected_counts(&every_path(10));
        *got.reasons.get_mut("forwarded").unwrap() -= 1;
        *got.reasons.get_mut("drop_no_neighbour").unwrap() += 1;
        assert_eq!(mismatches(&want, &got).len(), 2);
    }

    #[test]
    fn targets_are_judged_on_the_overhead() {
        assert!(meets(MISS_TARGET, 50.0));
        assert!(!meets(MISS_TARGET, 50.5));
        assert_eq!(Path::EstablishedTcp6.target(), Some(ESTABLISHED_TARGET));
        assert_eq!(Path::Malformed4.target(), None);
        assert!(Path::NewUdp4.records_flow());
        assert!(!Path::NewUnresolved4.records_flow());
        assert!(!Path::EstablishedTcp4.records_flow());
    }

    #[test]
    fn xdp_md_carries_length_and_ifindex() {
        let ctx = xdp_md(74, 3);
        assert_eq!(u32::from_ne_bytes(ctx[4..8].try_into().unwrap()), 74);
        assert_eq!(u32::from_ne_bytes(ctx[12..16].try_into().unwrap()), 3);
        assert_eq!(&ctx[..4], &[0; 4]);
    }
}
