//! The fixture lab: the program loaded in a fresh network namespace, its maps
//! programmed through the `Dataplane` trait as the engine would, and a runner that
//! checks one fixture's verdict, output bytes and reason counter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ricochet_common::{
    addr_bytes, hash::client_hash, Reason, ServerValue, ServiceKey, ServiceValue, Settings, VipKey,
    VipValue, PROTO_TCP, PROTO_UDP, SERVER_ACTIVE, SERVICE_HASH_SRC_PORT,
    SETTINGS_HAVE_V4, SETTINGS_HAVE_V6, VIP_TCP_ALL_PORTS,
};
use ricochet_dataplane::{
    kernel::{KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};

use super::{
    net::{self, LB_MAC, LB_V4, LB_V6, ROUTER, WEB01, WEB02_V4, WEB02_V6, WEB03},
    packets::{describe, hexdump, L2},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// A non-zero seed, so that a program ignoring the configured seed is caught.
pub const SEED: u32 = 0x5eed_0001;

pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 241);
/// A VIP whose TCP service covers every port.
pub const VIP4_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 242);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfc00, 3, 0, 0, 0, 0, 0, 0x24a);
/// Addresses on the VIPs' subnet that are not VIPs.
pub const NOT_VIP4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 99);
pub const NOT_VIP6: Ipv6Addr = Ipv6Addr::new(0xfc00, 3, 0, 0, 0, 0, 0, 0x99);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 168, 11, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x11, 0, 0, 0, 0, 0, 2);

/// A server slot of the fixtures' world.
#[derive(Clone, Copy, Debug)]
pub struct Server {
    pub id: u32,
    pub addr: IpAddr,
    /// MAC of the next hop towards it (its own, or the router's).
    pub next_hop_mac: [u8; 6],
    pub generation: u32,
}

pub const WEB01_4: Server = Server { id: 1, addr: IpAddr::V4(WEB01.v4), next_hop_mac: WEB01.mac, generation: 1 };
pub const WEB02_4: Server = Server { id: 2, addr: IpAddr::V4(WEB02_V4), next_hop_mac: ROUTER.mac, generation: 1 };
pub const WEB03_4: Server = Server { id: 3, addr: IpAddr::V4(WEB03.v4), next_hop_mac: WEB03.mac, generation: 1 };
pub const WEB01_6: Server = Server { id: 11, addr: IpAddr::V6(WEB01.v6), next_hop_mac: WEB01.mac, generation: 1 };
pub const WEB02_6: Server = Server { id: 12, addr: IpAddr::V6(WEB02_V6), next_hop_mac: ROUTER.mac, generation: 1 };
pub const WEB03_6: Server = Server { id: 13, addr: IpAddr::V6(WEB03.v6), next_hop_mac: WEB03.mac, generation: 1 };
pub const SERVERS: [Server; 6] = [WEB01_4, WEB02_4, WEB03_4, WEB01_6, WEB02_6, WEB03_6];

impl Server {
    pub fn by_id(id: u32) -> Server {
        *SERVERS.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no server {id}"))
    }
    pub fn v4(&self) -> Ipv4Addr {
        match self.addr {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => panic!("server {} is IPv6", self.id),
        }
    }
    pub fn v6(&self) -> Ipv6Addr {
        match self.addr {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => panic!("server {} is IPv4", self.id),
        }
    }
    pub fn value(&self) -> ServerValue {
        let (addr, family) = addr_bytes(self.addr);
        ServerValue { addr, family, state: SERVER_ACTIVE, generation: self.generation, pool_tag: 0xf17e, ..Default::default() }
    }
    /// The L2 header of a frame the load balancer sends towards this server.
    pub fn l2(&self) -> L2 {
        L2 { dst: self.next_hop_mac, src: LB_MAC, vlan: None }
    }
}

/// Two servers of each family, interleaved in 7-slot tables.
const MIXED4: [u32; 7] = [1, 3, 3, 1, 3, 1, 1];
const MIXED6: [u32; 7] = [11, 13, 13, 11, 13, 11, 11];
const ONLY_WEB02_4: [u32; 7] = [2; 7];
const ONLY_WEB02_6: [u32; 7] = [12; 7];

/// A virtual service of the fixtures' world and its Maglev table.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    pub id: u32,
    pub vip: IpAddr,
    pub proto: u8,
    /// 0: every port.
    pub port: u16,
    pub offset: u32,
    pub table: &'static [u32],
    pub flags: u32,
}

pub const HTTP4: Service =
    Service { id: 1, vip: IpAddr::V4(VIP4), proto: PROTO_TCP, port: 80, offset: 0, table: &MIXED4, flags: 0 };
pub const ALT4: Service =
    Service { id: 2, vip: IpAddr::V4(VIP4), proto: PROTO_TCP, port: 8080, offset: 7, table: &ONLY_WEB02_4, flags: 0 };
pub const DNS4: Service = Service {
    id: 3,
    vip: IpAddr::V4(VIP4),
    proto: PROTO_UDP,
    port: 53,
    offset: 14,
    table: &MIXED4,
    flags: SERVICE_HASH_SRC_PORT,
};
/// A service whose pool has no usable server (table size 0).
pub const EMPTY4: Service =
    Service { id: 4, vip: IpAddr::V4(VIP4), proto: PROTO_TCP, port: 81, offset: 0, table: &[], flags: 0 };
pub const HTTP6: Service =
    Service { id: 5, vip: IpAddr::V6(VIP6), proto: PROTO_TCP, port: 80, offset: 21, table: &MIXED6, flags: 0 };
pub const ALT6: Service =
    Service { id: 6, vip: IpAddr::V6(VIP6), proto: PROTO_TCP, port: 8080, offset: 28, table: &ONLY_WEB02_6, flags: 0 };
pub const DNS6: Service = Service {
    id: 7,
    vip: IpAddr::V6(VIP6),
    proto: PROTO_UDP,
    port: 53,
    offset: 35,
    table: &MIXED6,
    flags: SERVICE_HASH_SRC_PORT,
};
pub const ALL_PORTS4: Service =
    Service { id: 8, vip: IpAddr::V4(VIP4_ALL_PORTS), proto: PROTO_TCP, port: 0, offset: 42, table: &MIXED4, flags: 0 };
pub const HTTPS4: Service = Service {
    id: 9,
    vip: IpAddr::V4(VIP4),
    proto: PROTO_TCP,
    port: 443,
    offset: 49,
    table: &MIXED4,
    flags: SERVICE_HASH_SRC_PORT,
};
pub const SERVICES: [Service; 9] = [HTTP4, ALT4, DNS4, EMPTY4, HTTP6, ALT6, DNS6, ALL_PORTS4, HTTPS4];
/// First free slot of the Maglev array after the world's tables.
pub const FREE_TABLE_OFFSET: u32 = 56;

impl Service {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.vip, self.proto, self.port)
    }
    pub fn value(&self) -> ServiceValue {
        ServiceValue {
            service_id: self.id,
            table_offset: self.offset,
            table_size: self.table.len() as u32,
            flags: self.flags,
        }
    }
    /// The server the documented map contract assigns to a new flow from
    /// (`client`, `sport`): `table[client_hash(..) % size]`.
    pub fn pick(&self, client: IpAddr, sport: u16) -> Server {
        Server::by_id(pick_in(self.table, self.flags, client, sport))
    }
}

/// `table[client_hash(src, sport, with_port, SEED) % len]`.
pub fn pick_in(table: &[u32], flags: u32, client: IpAddr, sport: u16) -> u32 {
    let (src, _) = addr_bytes(client);
    let h = client_hash(&src, sport.to_be_bytes(), flags & SERVICE_HASH_SRC_PORT != 0, SEED);
    table[(h % table.len() as u32) as usize]
}

/// The documented outer flow label of an IPv6 packet from (`client`, `sport`).
pub fn flow_label(client: Ipv6Addr, sport: u16) -> u32 {
    client_hash(&client.octets(), sport.to_be_bytes(), true, SEED) & 0x000f_ffff
}

pub fn world_settings() -> Settings {
    let mut source_v6 = [0; 16];
    source_v6.copy_from_slice(&LB_V6.octets());
    Settings {
        source_v4: LB_V4.octets(),
        source_v6,
        hash_seed: SEED,
        flags: SETTINGS_HAVE_V4 | SETTINGS_HAVE_V6,
        ..Default::default()
    }
}

/// One packet fixture: what is sent, and what must come out.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub what: String,
    pub input: Vec<u8>,
    pub action: u32,
    pub output: Vec<u8>,
    pub reason: Reason,
}

impl Fixture {
    /// Passed to the kernel untouched.
    pub fn pass(what: impl Into<String>, input: Vec<u8>, reason: Reason) -> Fixture {
        Fixture { what: what.into(), output: input.clone(), input, action: XDP_PASS, reason }
    }
    /// Dropped, before anything in it was changed.
    pub fn drop(what: impl Into<String>, input: Vec<u8>, reason: Reason) -> Fixture {
        Fixture { what: what.into(), output: input.clone(), input, action: XDP_DROP, reason }
    }
    /// Sent back out of the interface it came in on, as `output`.
    pub fn tx(what: impl Into<String>, input: Vec<u8>, output: Vec<u8>, reason: Reason) -> Fixture {
        Fixture { what: what.into(), input, action: XDP_TX, output, reason }
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}

/// What one run of the program did.
#[derive(Debug)]
pub struct Outcome {
    pub action: u32,
    pub packet: Vec<u8>,
    /// The reason counters that moved, with their increments.
    pub reasons: Vec<(Reason, u64)>,
}

pub struct Lab {
    pub dp: KernelDataplane,
    pub ifindex: u32,
}

/// Runs `f` with a lab of its own, in a network namespace of its own.
pub fn with_lab(f: impl FnOnce(&mut Lab) + Send) {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the fixtures load eBPF and create namespaces: run them as root");
    net::in_fresh_netns(|| {
        let mut lab = Lab::new();
        f(&mut lab);
    })
}

impl Lab {
    /// Builds the network (in the calling thread's namespace, which must be fresh),
    /// loads the program and programs the world.
    fn new() -> Lab {
        let ifindex = net::build_lab_network();
        let caps = Capacities { services: 64, servers: 64, maglev_slots: 1024, flows: 1024, ..Capacities::default() };
        let dp = KernelDataplane::load(&LoadOptions { pin_dir: None, caps }).expect("loading the XDP program");
        let mut lab = Lab { dp, ifindex };
        lab.program_world();
        lab
    }

    fn program_world(&mut self) {
        let dp = &mut self.dp;
        dp.set_settings(&world_settings()).unwrap();
        for s in SERVERS {
            dp.put_server(s.id, &s.value()).unwrap();
        }
        dp.put_vip(&VipKey::new(VIP4.into()), &VipValue { flags: 0 }).unwrap();
        dp.put_vip(&VipKey::new(VIP6.into()), &VipValue { flags: 0 }).unwrap();
        dp.put_vip(&VipKey::new(VIP4_ALL_PORTS.into()), &VipValue { flags: VIP_TCP_ALL_PORTS }).unwrap();
        for svc in SERVICES {
            if !svc.table.is_empty() {
                dp.write_table(svc.offset, svc.table).unwrap();
            }
            dp.put_service(&svc.key(), &svc.value()).unwrap();
        }
    }

    /// Runs the program once on `input`, received on `fx0`.
    pub fn run(&mut self, input: &[u8]) -> Outcome {
        let before = self.dp.reason_counters().unwrap();
        let out = self.dp.test_run(input, self.ifindex).expect("BPF_PROG_TEST_RUN");
        let after = self.dp.reason_counters().unwrap();
        let reasons = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((r, b), (_, a))| (*r, a - b))
            .collect();
        Outcome { action: out.action, packet: out.packet, reasons }
    }

    /// Runs `fx` and checks the verdict, the whole output frame and that exactly its
    /// reason was counted, once.
    pub fn check(&mut self, fx: &Fixture) -> Outcome {
        let got = self.run(&fx.input);
        let mut problems = Vec::new();
        if got.action != fx.action {
            problems.push(format!(
                "verdict: expected {} ({}), got {} ({})",
                action_name(fx.action),
                fx.action,
                action_name(got.action),
                got.action
            ));
        }
        if got.packet != fx.output {
            problems.push(format!(
                "output frame differs ({} bytes expected, {} got; '>' marks the first difference)\n\
                 expected:\n{}  {}\ngot:\n{}  {}",
                fx.output.len(),
                got.packet.len(),
                hexdump(&fx.output, &got.packet),
                describe(&fx.output),
                hexdump(&got.packet, &fx.output),
                describe(&got.packet),
            ));
        }
        if got.reasons != [(fx.reason, 1)] {
            problems.push(format!(
                "reason: expected {} counted once, counters moved: {:?}",
                fx.reason.name(),
                got.reasons.iter().map(|(r, n)| format!("{}+{n}", r.name())).collect::<Vec<_>>()
            ));
        }
        assert!(problems.is_empty(), "fixture {:?}:\n{}", fx.what, problems.join("\n"));
        got
    }

    pub fn check_all(&mut self, fixtures: &[Fixture]) {
        for fx in fixtures {
            self.check(fx);
        }
    }
}
