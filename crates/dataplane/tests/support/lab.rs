//! The fixture lab: the program loaded in a fresh network namespace, its maps
//! programmed through the `Dataplane` trait as the engine would, and a runner that
//! checks one fixture's verdict, output bytes and reason counter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ricochet_common::{
    addr_bytes, hash::client_hash, vip_filter, Reason, ServerState, ServerValue, ServiceFlags,
    ServiceKey, ServiceValue, Settings, SettingsFlags, VipFlags, VipKey, VipValue, PROTO_TCP,
    PROTO_UDP,
};
use ricochet_dataplane::{
    kernel::{KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};

use super::{
    net::{
        self, LB_MAC, LB_V4, LB_V6, ROUTER, SIDE_MAC, UNRESOLVED_V4, UNROUTABLE_V4, WEB01,
        WEB02_V4, WEB02_V6, WEB03, WEB04,
    },
    packets::{describe, hexdump, L2},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// A non-zero seed, so that a program ignoring the configured seed is caught.
pub const SEED: u32 = 0x5eed_0001;

pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 241);
/// A VIP whose TCP service covers every port.
pub const VIP4_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 242);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfc00, 3, 0, 0, 0, 0, 0, 0x24a);
/// A VIP without any service (a VIP whose services are not written yet): every packet
/// to it is dropped, as to a port without a service.
pub const VIP4_NO_SERVICE: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 243);
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
    /// MAC of the load balancer's interface towards it.
    pub egress_mac: [u8; 6],
    pub generation: u32,
}

const fn server(id: u32, addr: IpAddr, next_hop_mac: [u8; 6]) -> Server {
    Server {
        id,
        addr,
        next_hop_mac,
        egress_mac: LB_MAC,
        generation: 1,
    }
}

pub const WEB01_4: Server = server(1, IpAddr::V4(WEB01.v4), WEB01.mac);
pub const WEB02_4: Server = server(2, IpAddr::V4(WEB02_V4), ROUTER.mac);
pub const WEB03_4: Server = server(3, IpAddr::V4(WEB03.v4), WEB03.mac);
/// On the second link: reached through XDP_REDIRECT.
pub const WEB04_4: Server = Server {
    egress_mac: SIDE_MAC,
    ..server(4, IpAddr::V4(WEB04.v4), WEB04.mac)
};
pub const WEB01_6: Server = server(11, IpAddr::V6(WEB01.v6), WEB01.mac);
pub const WEB02_6: Server = server(12, IpAddr::V6(WEB02_V6), ROUTER.mac);
pub const WEB03_6: Server = server(13, IpAddr::V6(WEB03.v6), WEB03.mac);
/// Servers the FIB cannot deliver to: no route, no neighbour entry.
pub const UNROUTABLE_4: Server = server(20, IpAddr::V4(UNROUTABLE_V4), [0; 6]);
pub const UNRESOLVED_4: Server = server(21, IpAddr::V4(UNRESOLVED_V4), [0; 6]);
pub const SERVERS: [Server; 9] = [
    WEB01_4,
    WEB02_4,
    WEB03_4,
    WEB04_4,
    WEB01_6,
    WEB02_6,
    WEB03_6,
    UNROUTABLE_4,
    UNRESOLVED_4,
];

impl Server {
    pub fn by_id(id: u32) -> Server {
        *SERVERS
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no server {id}"))
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
        ServerValue {
            addr,
            family,
            state: ServerState::ACTIVE,
            generation: self.generation,
            pool_tag: 0xf17e,
            ..Default::default()
        }
    }
    /// The L2 header of a frame the load balancer sends towards this server.
    pub fn l2(&self) -> L2 {
        L2 {
            dst: self.next_hop_mac,
            src: self.egress_mac,
            vlan: None,
        }
    }
}

// Tables of two servers each, in different layouts, so that a program reading the
// wrong region (ignoring a service's offset) sends some client elsewhere.
const MIXED4: [u32; 7] = [1, 3, 3, 1, 3, 1, 1];
const INVERSE4: [u32; 7] = [3, 1, 1, 3, 1, 3, 3];
const SHUFFLED4: [u32; 7] = [3, 3, 1, 1, 1, 3, 1];
const MIXED6: [u32; 7] = [11, 13, 13, 11, 13, 11, 11];
const INVERSE6: [u32; 7] = [13, 11, 11, 13, 11, 13, 13];

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
    pub flags: ServiceFlags,
}

const fn tcp_service(
    id: u32,
    vip: IpAddr,
    port: u16,
    offset: u32,
    table: &'static [u32],
) -> Service {
    Service {
        id,
        vip,
        proto: PROTO_TCP,
        port,
        offset,
        table,
        flags: ServiceFlags::EMPTY,
    }
}

pub const HTTP4: Service = tcp_service(1, IpAddr::V4(VIP4), 80, 0, &MIXED4);
/// Pool web02, behind the router.
pub const ALT4: Service = tcp_service(2, IpAddr::V4(VIP4), 8080, 7, &[WEB02_4.id; 7]);
pub const DNS4: Service = Service {
    proto: PROTO_UDP,
    flags: ServiceFlags::HASH_SRC_PORT,
    ..tcp_service(3, IpAddr::V4(VIP4), 53, 14, &INVERSE4)
};
/// A service whose pool has no usable server (table size 0).
pub const EMPTY4: Service = tcp_service(4, IpAddr::V4(VIP4), 81, 0, &[]);
pub const HTTP6: Service = tcp_service(5, IpAddr::V6(VIP6), 80, 21, &MIXED6);
pub const ALT6: Service = tcp_service(6, IpAddr::V6(VIP6), 8080, 28, &[WEB02_6.id; 7]);
pub const DNS6: Service = Service {
    proto: PROTO_UDP,
    flags: ServiceFlags::HASH_SRC_PORT,
    ..tcp_service(7, IpAddr::V6(VIP6), 53, 35, &INVERSE6)
};
/// The port-0 entry of the all-ports VIP.
pub const ALL_PORTS4: Service = tcp_service(8, IpAddr::V4(VIP4_ALL_PORTS), 0, 42, &INVERSE4);
pub const HTTPS4: Service = Service {
    flags: ServiceFlags::HASH_SRC_PORT,
    ..tcp_service(9, IpAddr::V4(VIP4), 443, 49, &SHUFFLED4)
};
/// A specific port of the all-ports VIP: takes precedence over the port-0 entry.
pub const ALL_PORTS4_8080: Service =
    tcp_service(10, IpAddr::V4(VIP4_ALL_PORTS), 8080, 56, &[WEB02_4.id; 7]);
/// Pool web04, on the second link.
pub const SIDE4: Service = tcp_service(11, IpAddr::V4(VIP4), 8081, 63, &[WEB04_4.id; 7]);
pub const UNROUTABLE4: Service = tcp_service(12, IpAddr::V4(VIP4), 8082, 70, &[UNROUTABLE_4.id; 7]);
pub const UNRESOLVED4: Service = tcp_service(13, IpAddr::V4(VIP4), 8083, 77, &[UNRESOLVED_4.id; 7]);
pub const SERVICES: [Service; 13] = [
    HTTP4,
    ALT4,
    DNS4,
    EMPTY4,
    HTTP6,
    ALT6,
    DNS6,
    ALL_PORTS4,
    HTTPS4,
    ALL_PORTS4_8080,
    SIDE4,
    UNROUTABLE4,
    UNRESOLVED4,
];
/// The world's VIPs and their flags.
pub const VIPS: [(IpAddr, VipFlags); 4] = [
    (IpAddr::V4(VIP4), VipFlags::EMPTY),
    (IpAddr::V6(VIP6), VipFlags::EMPTY),
    (IpAddr::V4(VIP4_ALL_PORTS), VipFlags::TCP_ALL_PORTS),
    (IpAddr::V4(VIP4_NO_SERVICE), VipFlags::EMPTY),
];

/// The world's VIP filter: the bit of each VIP.
pub fn world_filter() -> Vec<u64> {
    let mut words = vec![0; vip_filter::WORDS as usize];
    for (vip, _) in VIPS {
        let (addr, family) = addr_bytes(vip);
        vip_filter::set(&mut words, &addr, family);
    }
    words
}

/// A non-VIP address whose VIP-filter bit is VIP4's: the filter lets its packets
/// through (a false positive), and the exact lookups must pass them like any other
/// address's. The first such address of 10.0.0.0/8.
pub fn filter_twin4() -> Ipv4Addr {
    let want = vip_filter::bit_v4(VIP4.octets());
    (0x0a00_0000u32..0x0b00_0000)
        .map(Ipv4Addr::from)
        .find(|a| vip_filter::bit_v4(a.octets()) == want)
        .expect("2^24 addresses for 2^16 bits")
}

/// A non-VIP address whose VIP-filter bit is VIP6's (VIP6 with its last 32 bits
/// changed).
pub fn filter_twin6() -> Ipv6Addr {
    let want = vip_filter::bit_v6(&VIP6.octets());
    let vip = u128::from(VIP6);
    (1..=u128::from(u32::MAX))
        .map(|x| Ipv6Addr::from(vip ^ x))
        .find(|a| vip_filter::bit_v6(&a.octets()) == want)
        .expect("a twin among 2^32 neighbours")
}

/// First free slot of the Maglev array after the world's tables.
pub const FREE_TABLE_OFFSET: u32 = 128;

impl Service {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.vip, self.proto, self.port)
    }
    /// The entry as the engine's first apply writes it: with `CONSULT_FLOWS` (a new
    /// entry is flagged until a scan of the flow table clears it), so established packets
    /// follow the flow table; [`Service::value_not_consulted`] is the steady state.
    pub fn value(&self) -> ServiceValue {
        ServiceValue {
            flags: self.flags | ServiceFlags::CONSULT_FLOWS,
            ..self.value_not_consulted()
        }
    }
    /// The entry once the engine's scan cleared its flag: established TCP packets take
    /// the Maglev pick, and one in 16 looks its flow up.
    pub fn value_not_consulted(&self) -> ServiceValue {
        ServiceValue {
            service_id: self.id,
            table_offset: self.offset,
            table_size: self.table.len() as u32,
            flags: self.flags,
            gue_port: [0, 0],
        }
    }
    /// The server the documented map contract assigns to a new flow from
    /// (`client`, `sport`): `table[client_hash(..) % size]`.
    pub fn pick(&self, client: IpAddr, sport: u16) -> Server {
        Server::by_id(pick_in(self.table, self.flags, client, sport))
    }
}

/// `table[client_hash(src, sport, with_port, SEED) % len]`.
pub fn pick_in(table: &[u32], flags: ServiceFlags, client: IpAddr, sport: u16) -> u32 {
    pick_seeded(table, flags, client, sport, SEED)
}

pub fn pick_seeded(
    table: &[u32],
    flags: ServiceFlags,
    client: IpAddr,
    sport: u16,
    seed: u32,
) -> u32 {
    let (src, _) = addr_bytes(client);
    let h = client_hash(
        &src,
        sport.to_be_bytes(),
        flags.contains(ServiceFlags::HASH_SRC_PORT),
        seed,
    );
    table[(h % table.len() as u32) as usize]
}

/// The documented outer flow label of an IPv6 packet from (`client`, `sport`).
pub fn flow_label(client: Ipv6Addr, sport: u16) -> u32 {
    client_hash(&client.octets(), sport.to_be_bytes(), true, SEED) & 0x000f_ffff
}

/// The documented GUE UDP source port of a packet from (`client`, `sport`): the flow hash's
/// high bits in the dynamic range, `0xc000 | (client_hash(..) >> 16 & 0x3fff)`.
pub fn gue_source_port(client: IpAddr, sport: u16) -> u16 {
    let (src, _) = addr_bytes(client);
    let h = client_hash(&src, sport.to_be_bytes(), true, SEED);
    0xc000 | ((h >> 16) as u16 & 0x3fff)
}

pub fn world_settings() -> Settings {
    Settings {
        source_v4: LB_V4.octets(),
        source_v6: LB_V6.octets(),
        hash_seed: SEED,
        flags: SettingsFlags::HAVE_V4 | SettingsFlags::HAVE_V6,
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
        Fixture {
            what: what.into(),
            output: input.clone(),
            input,
            action: XDP_PASS,
            reason,
        }
    }
    /// Dropped, before anything in it was changed.
    pub fn drop(what: impl Into<String>, input: Vec<u8>, reason: Reason) -> Fixture {
        Fixture {
            what: what.into(),
            output: input.clone(),
            input,
            action: XDP_DROP,
            reason,
        }
    }
    /// Sent back out of the interface it came in on, as `output`.
    pub fn tx(what: impl Into<String>, input: Vec<u8>, output: Vec<u8>, reason: Reason) -> Fixture {
        Fixture {
            what: what.into(),
            input,
            action: XDP_TX,
            output,
            reason,
        }
    }
    /// Redirected to another interface, as `output`.
    pub fn redirect(
        what: impl Into<String>,
        input: Vec<u8>,
        output: Vec<u8>,
        reason: Reason,
    ) -> Fixture {
        Fixture {
            what: what.into(),
            input,
            action: XDP_REDIRECT,
            output,
            reason,
        }
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
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
    ricochet_testkit::require_root("the fixtures load eBPF and create namespaces");
    ricochet_testkit::netns::in_fresh_netns(|| {
        let mut lab = Lab::new();
        f(&mut lab);
    })
}

impl Lab {
    /// Builds the network (in the calling thread's namespace, which must be fresh),
    /// loads the program and programs the world.
    fn new() -> Lab {
        let ifindex = net::build_lab_network();
        let caps = Capacities {
            services: 64,
            servers: 64,
            maglev_slots: 1024,
            flows: 1024,
            ..Capacities::default()
        };
        let dp = KernelDataplane::load(&LoadOptions {
            pin_dir: None,
            caps,
        })
        .expect("loading the XDP program");
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
        for (vip, flags) in VIPS {
            dp.put_vip(&VipKey::new(vip), &VipValue { flags }).unwrap();
        }
        for (i, word) in world_filter().into_iter().enumerate() {
            if word != 0 {
                dp.put_vip_filter_word(i as u32, word).unwrap();
            }
        }
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
        let out = self
            .dp
            .test_run(input, self.ifindex)
            .expect("BPF_PROG_TEST_RUN");
        let after = self.dp.reason_counters().unwrap();
        let reasons = before
            .iter()
            .zip(&after)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((r, b), (_, a))| (*r, a - b))
            .collect();
        Outcome {
            action: out.action,
            packet: out.packet,
            reasons,
        }
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
                got.reasons
                    .iter()
                    .map(|(r, n)| format!("{}+{n}", r.name()))
                    .collect::<Vec<_>>()
            ));
        }
        assert!(
            problems.is_empty(),
            "fixture {:?}:\n{}",
            fx.what,
            problems.join("\n")
        );
        got
    }

    pub fn check_all(&mut self, fixtures: &[Fixture]) {
        for fx in fixtures {
            self.check(fx);
        }
    }
}
