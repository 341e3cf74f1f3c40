//! The seed's network (TESTBED.md), built from namespaces, veth pairs and a bridge.
//!
//! ```text
//!  client 192.168.11.2 ---- router 192.168.11.1 | 192.168.33.1 (br0) | 192.168.34.1
//!                                                |                     |
//!          192.168.33.0/24 bridge: se1 .7, se2 .8, web01 .10     web02 192.168.34.10
//!  VIP 192.168.35.241/32 and fc00:3::24a/128, routed by the router to se1
//! ```
//!
//! Every host has one interface, `eth0`, a veth whose peer sits in the router namespace
//! (`vclient`, `vse1`, `vse2`, `vweb01`, `vweb02`); the peers of se1, se2 and web01 are ports
//! of the bridge `br0`, which carries the router's 192.168.33.1 and fc00::1. The veth pairs
//! are created directly inside the namespaces, so the root namespace never sees them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::names::instance_prefix;
use crate::netns::Netns;
use crate::{require_root, VIP_V4, VIP_V6};

/// A MAC address.
pub type Mac = [u8; 6];

/// Formats a MAC address as `02:00:c0:a8:21:07`.
pub fn format_mac(mac: &Mac) -> String {
    let mut text = String::with_capacity(17);
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses a MAC address written as six colon-separated hex bytes.
pub fn parse_mac(text: &str) -> Result<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .with_context(|| format!("MAC address {text:?} has fewer than 6 bytes"))?;
        *byte = u8::from_str_radix(part, 16)
            .with_context(|| format!("bad byte {part:?} in MAC address {text:?}"))?;
    }
    anyhow::ensure!(
        parts.next().is_none(),
        "MAC address {text:?} has more than 6 bytes"
    );
    Ok(mac)
}

/// Deterministic, locally administered MACs that spell the IPv4 address they belong to:
/// `02:<kind>:<a>:<b>:<c>:<d>`, so captures are readable. Kind 0 is a host, 1 a router
/// interface, 2 a bridge port.
const fn mac_for(kind: u8, ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    [0x02, kind, a, b, c, d]
}

/// A host of the topology: a namespace with one interface, `eth0`, toward the router.
#[derive(Debug)]
pub struct Host {
    /// Its role in the seed: `client`, `se1`, `se2`, `web01` or `web02`.
    pub name: &'static str,
    /// Its namespace.
    pub ns: Netns,
    /// Its only interface (a veth), `eth0`.
    pub iface: &'static str,
    /// The MAC address of `iface`.
    pub mac: Mac,
    /// Its IPv4 address on `iface` (a /24).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on `iface` (a /64).
    pub ipv6: Ipv6Addr,
    /// The router's IPv4 address on this host's segment (its default gateway).
    pub gateway_v4: Ipv4Addr,
    /// The router's IPv6 address on this host's segment (its default gateway).
    pub gateway_v6: Ipv6Addr,
    /// The MAC address of the gateway (the bridge's for hosts on the 192.168.33.0/24 segment).
    pub gateway_mac: Mac,
    /// The peer of `iface` in the router namespace: a bridge port (`vse1`, `vse2`, `vweb01`)
    /// or a routed interface (`vclient`, `vweb02`).
    pub router_port: &'static str,
}

impl Host {
    /// Its IPv4 or IPv6 address.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ipv6.into()
        } else {
            self.ipv4.into()
        }
    }
}

/// The router (the seed's T1): forwards between the client, the server segment and web02.
#[derive(Debug)]
pub struct Router {
    /// Its namespace.
    pub ns: Netns,
    /// The bridge that is the 192.168.33.0/24 segment (`br0`), with the router's address on it.
    pub bridge: &'static str,
    /// The MAC address of `bridge`: the gateway MAC of se1, se2 and web01.
    pub bridge_mac: Mac,
    /// 192.168.33.1, on `bridge`.
    pub lan_v4: Ipv4Addr,
    /// fc00::1, on `bridge`.
    pub lan_v6: Ipv6Addr,
    /// The interface toward the client, `vclient`.
    pub client_iface: &'static str,
    /// 192.168.11.1, on `client_iface`.
    pub client_v4: Ipv4Addr,
    /// fc00:11::1, on `client_iface`.
    pub client_v6: Ipv6Addr,
    /// The interface toward web02, `vweb02`.
    pub web02_iface: &'static str,
    /// 192.168.34.1, on `web02_iface`.
    pub web02_v4: Ipv4Addr,
    /// fc00:34::1, on `web02_iface`.
    pub web02_v6: Ipv6Addr,
}

/// The seed's network, removed (namespaces, links, processes) when dropped.
///
/// Fields drop in order; each [`Netns`] kills what runs in it and deletes itself, which
/// destroys its veth pairs.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    /// The `xdp_pass` programs on the service engines' veth peers (attached while these
    /// live; they go with the router's namespace anyway).
    _peer_xdp: Vec<aya::Ebpf>,
    /// 192.168.11.2 / fc00:11::2, behind the router.
    pub client: Host,
    /// The router between the client, the server segment and web02.
    pub router: Router,
    /// Service engine 1: 192.168.33.7 / fc00::7 (the VIP routes point here at first).
    pub se1: Host,
    /// Service engine 2: 192.168.33.8 / fc00::8.
    pub se2: Host,
    /// Server on the service engines' segment: 192.168.33.10 / fc00::10.
    pub web01: Host,
    /// Server one router hop away: 192.168.34.10 / fc00:34::10.
    pub web02: Host,
}

/// What distinguishes one host from another in [`Topology::seed`].
struct HostSpec {
    name: &'static str,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    gateway_v4: Ipv4Addr,
    gateway_v6: Ipv6Addr,
    router_port: &'static str,
    /// Whether the router port is a bridge port (the 192.168.33.0/24 segment).
    bridged: bool,
}

const fn v6(segments: [u16; 8]) -> Ipv6Addr {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Addr::new(a, b, c, d, e, f, g, h)
}

const LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 1);
const LAN_V6: Ipv6Addr = v6([0xfc00, 0, 0, 0, 0, 0, 0, 1]);
const CLIENT_GW_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 11, 1);
const CLIENT_GW_V6: Ipv6Addr = v6([0xfc00, 0x11, 0, 0, 0, 0, 0, 1]);
const WEB02_GW_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 34, 1);
const WEB02_GW_V6: Ipv6Addr = v6([0xfc00, 0x34, 0, 0, 0, 0, 0, 1]);
const BRIDGE: &str = "br0";
const HOST_IFACE: &str = "eth0";

const HOSTS: [HostSpec; 5] = [
    HostSpec {
        name: "client",
        ipv4: Ipv4Addr::new(192, 168, 11, 2),
        ipv6: v6([0xfc00, 0x11, 0, 0, 0, 0, 0, 2]),
        gateway_v4: CLIENT_GW_V4,
        gateway_v6: CLIENT_GW_V6,
        router_port: "vclient",
        bridged: false,
    },
    HostSpec {
        name: "se1",
        ipv4: Ipv4Addr::new(192, 168, 33, 7),
        ipv6: v6([0xfc00, 0, 0, 0, 0, 0, 0, 7]),
        gateway_v4: LAN_V4,
        gateway_v6: LAN_V6,
        router_port: "vse1",
        bridged: true,
    },
    HostSpec {
        name: "se2",
        ipv4: Ipv4Addr::new(192, 168, 33, 8),
        ipv6: v6([0xfc00, 0, 0, 0, 0, 0, 0, 8]),
        gateway_v4: LAN_V4,
        gateway_v6: LAN_V6,
        router_port: "vse2",
        bridged: true,
    },
    HostSpec {
        name: "web01",
        ipv4: Ipv4Addr::new(192, 168, 33, 10),
        ipv6: v6([0xfc00, 0, 0, 0, 0, 0, 0, 0x10]),
        gateway_v4: LAN_V4,
        gateway_v6: LAN_V6,
        router_port: "vweb01",
        bridged: true,
    },
    HostSpec {
        name: "web02",
        ipv4: Ipv4Addr::new(192, 168, 34, 10),
        ipv6: v6([0xfc00, 0x34, 0, 0, 0, 0, 0, 0x10]),
        gateway_v4: WEB02_GW_V4,
        gateway_v6: WEB02_GW_V6,
        router_port: "vweb02",
        bridged: false,
    },
];

/// Sysctls of every namespace: no reverse-path filtering (the seed's uRPF note: replies come
/// from the VIP, which is not routed back to where they come from).
const NO_RP_FILTER: [(&str, &str); 2] = [
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
];

impl Topology {
    /// Builds the seed's network: namespaces `client`, `router`, `se1`, `se2`, `web01`,
    /// `web02` (named `rc<pid>-<n>-<role>`), addresses, default routes via the router, and the
    /// VIP routes 192.168.35.241/32 via 192.168.33.7 and fc00:3::24a/128 via fc00::7.
    ///
    /// Every veth end has tx checksum offload off (so XDP-encapsulated packets carry complete
    /// checksums), and the router-side peers of se1 and se2 have GRO on (so XDP_TX from a
    /// service engine is delivered). Fails, saying so, when not run as root.
    pub fn seed() -> Result<Self> {
        require_root()?;
        let prefix = instance_prefix();
        Self::build(prefix.clone())
            .with_context(|| format!("building the seed topology (namespaces {prefix}*)"))
    }

    fn build(prefix: String) -> Result<Self> {
        let router_ns = Netns::create(format!("{prefix}router"))?;
        let router = Router {
            ns: router_ns,
            bridge: BRIDGE,
            bridge_mac: mac_for(1, LAN_V4),
            lan_v4: LAN_V4,
            lan_v6: LAN_V6,
            client_iface: HOSTS[0].router_port,
            client_v4: CLIENT_GW_V4,
            client_v6: CLIENT_GW_V6,
            web02_iface: HOSTS[4].router_port,
            web02_v4: WEB02_GW_V4,
            web02_v6: WEB02_GW_V6,
        };
        let r = &router.ns;
        r.set_sysctls(&NO_RP_FILTER)?;
        r.ip(&[
            "link",
            "add",
            BRIDGE,
            "address",
            &format_mac(&router.bridge_mac),
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        r.ip(&["link", "set", BRIDGE, "up"])?;
        add_addrs(r, BRIDGE, LAN_V4, LAN_V6)?;

        // Hosts are created in the order of HOSTS; a failure drops those made so far.
        let mut hosts = Vec::with_capacity(HOSTS.len());
        for spec in &HOSTS {
            hosts.push(Self::build_host(&prefix, spec, &router)?);
        }

        let mut rp_filter = Vec::new();
        let keys: Vec<String> = HOSTS
            .iter()
            .map(|spec| spec.router_port)
            .chain([BRIDGE])
            .map(|iface| format!("net.ipv4.conf.{iface}.rp_filter"))
            .collect();
        for key in &keys {
            rp_filter.push((key.as_str(), "0"));
        }
        r.set_sysctls(&rp_filter)?;
        r.set_sysctls(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ])?;

        let mut hosts = hosts.into_iter();
        let mut next = || hosts.next().expect("one host per spec");
        let peer_xdp = [HOSTS[1].router_port, HOSTS[2].router_port]
            .into_iter()
            .map(|port| attach_xdp_pass(&router.ns, port))
            .collect::<Result<Vec<_>>>()?;
        let topology = Self {
            prefix,
            _peer_xdp: peer_xdp,
            client: next(),
            router,
            se1: next(),
            se2: next(),
            web01: next(),
            web02: next(),
        };
        topology.route_vip(VIP_V4.into(), topology.se1.ipv4.into())?;
        topology.route_vip(VIP_V6.into(), topology.se1.ipv6.into())?;
        Ok(topology)
    }

    /// Creates one host's namespace and its veth pair to the router, and configures both ends.
    fn build_host(prefix: &str, spec: &HostSpec, router: &Router) -> Result<Host> {
        let ns = Netns::create(format!("{prefix}{}", spec.name))?;
        let r = &router.ns;
        let mac = mac_for(0, spec.ipv4);
        let port_mac = if spec.bridged {
            mac_for(2, spec.ipv4)
        } else {
            mac_for(1, spec.gateway_v4)
        };
        ns.set_sysctls(&NO_RP_FILTER)?;
        ns.ip(&[
            "link",
            "add",
            HOST_IFACE,
            "address",
            &format_mac(&mac),
            "type",
            "veth",
            "peer",
            "name",
            spec.router_port,
            "address",
            &format_mac(&port_mac),
            "netns",
            r.name(),
        ])
        .with_context(|| format!("creating the veth pair {} <-> router", spec.name))?;

        if spec.bridged {
            r.ip(&["link", "set", spec.router_port, "master", BRIDGE])?;
        }
        r.ip(&["link", "set", spec.router_port, "up"])?;
        if !spec.bridged {
            add_addrs(r, spec.router_port, spec.gateway_v4, spec.gateway_v6)?;
        }
        r.ethtool_feature(spec.router_port, "tx", false)?;
        if spec.name.starts_with("se") {
            // XDP_TX out of the service engine's eth0 reaches the peer only if the peer
            // has NAPI (GRO on, or an XDP program); and only with an XDP program does the
            // veth driver also kick the peer's NAPI after XDP_TX, otherwise frames wait
            // in its ring for unrelated traffic. `Topology::seed` attaches `xdp_pass`.
            r.ethtool_feature(spec.router_port, "gro", true)?;
        }

        ns.ip(&["link", "set", HOST_IFACE, "up"])?;
        add_addrs(&ns, HOST_IFACE, spec.ipv4, spec.ipv6)?;
        ns.ethtool_feature(HOST_IFACE, "tx", false)?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &spec.gateway_v4.to_string(),
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &spec.gateway_v6.to_string(),
        ])?;

        Ok(Host {
            name: spec.name,
            ns,
            iface: HOST_IFACE,
            mac,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
            gateway_v4: spec.gateway_v4,
            gateway_v6: spec.gateway_v6,
            gateway_mac: if spec.bridged {
                router.bridge_mac
            } else {
                port_mac
            },
            router_port: spec.router_port,
        })
    }

    /// The prefix of this topology's namespace names, `rc<pid>-<n>-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The five hosts, in the order client, se1, se2, web01, web02.
    pub fn hosts(&self) -> [&Host; 5] {
        [&self.client, &self.se1, &self.se2, &self.web01, &self.web02]
    }

    /// The host with this role name, if any.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts().into_iter().find(|host| host.name == name)
    }

    /// Points the router's route for `vip` (a /32 or /128) at `via`, replacing any previous
    /// route for it: e.g. `route_vip(VIP_V4.into(), topo.se2.ipv4.into())` moves the VIP to
    /// SE2, and any other address becomes a new VIP.
    pub fn route_vip(&self, vip: IpAddr, via: IpAddr) -> Result<()> {
        self.route_vip_multipath(vip, &[via])
    }

    /// Routes `vip` over several next hops with equal weight (ECMP, as a router in front of
    /// several service engines does).
    pub fn route_vip_multipath(&self, vip: IpAddr, vias: &[IpAddr]) -> Result<()> {
        anyhow::ensure!(!vias.is_empty(), "no next hop for VIP {vip}");
        anyhow::ensure!(
            vias.iter().all(|via| via.is_ipv4() == vip.is_ipv4()),
            "VIP {vip} and next hops {vias:?} mix address families"
        );
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let dest = format!("{vip}/{}", if vip.is_ipv4() { 32 } else { 128 });
        let vias: Vec<String> = vias.iter().map(ToString::to_string).collect();
        let mut args = vec![family, "route", "replace", dest.as_str()];
        if let [via] = vias.as_slice() {
            args.extend(["via", via.as_str()]);
        } else {
            for via in &vias {
                args.extend(["nexthop", "via", via.as_str()]);
            }
        }
        self.router
            .ns
            .ip(&args)
            .with_context(|| format!("routing VIP {vip} via {vias:?} in the router"))
            .map(drop)
    }

    /// Removes the router's route for `vip`.
    pub fn unroute_vip(&self, vip: IpAddr) -> Result<()> {
        let dest = format!("{vip}/{}", if vip.is_ipv4() { 32 } else { 128 });
        self.router.ns.ip(&["route", "del", &dest]).map(drop)
    }
}

/// Adds an IPv4 /24 and an IPv6 /64 (without duplicate address detection) to an interface.
fn add_addrs(ns: &Netns, iface: &str, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", iface])?;
    ns.ip(&["addr", "add", &format!("{ipv6}/64"), "dev", iface, "nodad"])?;
    Ok(())
}

/// Attaches the trivial `xdp_pass` program to `iface` in `ns` (see `build_host` for why
/// the service engines' veth peers need one).
fn attach_xdp_pass(ns: &Netns, iface: &'static str) -> Result<aya::Ebpf> {
    ns.run(move || -> Result<aya::Ebpf> {
        let mut ebpf =
            aya::Ebpf::load(ricochet_bpf::TRIVIAL).context("loading the trivial XDP object")?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut("xdp_pass")
            .context("xdp_pass missing")?
            .try_into()?;
        prog.load()?;
        prog.attach(iface, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching xdp_pass to {iface}"))?;
        Ok(ebpf)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_spell_the_address() {
        let mac = mac_for(0, Ipv4Addr::new(192, 168, 33, 7));
        assert_eq!(format_mac(&mac), "02:00:c0:a8:21:07");
        assert_eq!(parse_mac("02:00:c0:a8:21:07").unwrap(), mac);
        assert!(parse_mac("02:00:c0:a8:21").is_err());
        assert!(parse_mac("02:00:c0:a8:21:07:01").is_err());
        assert!(parse_mac("02:00:c0:a8:21:zz").is_err());
    }

    #[test]
    fn seed_addresses_match_the_testbed_document() {
        let names: Vec<_> = HOSTS.iter().map(|h| h.name).collect();
        assert_eq!(names, ["client", "se1", "se2", "web01", "web02"]);
        assert_eq!(HOSTS[1].ipv6.to_string(), "fc00::7");
        assert_eq!(HOSTS[2].ipv6.to_string(), "fc00::8");
        assert_eq!(HOSTS[3].ipv6.to_string(), "fc00::10");
        assert_eq!(HOSTS[4].ipv6.to_string(), "fc00:34::10");
        assert_eq!(HOSTS[0].ipv6.to_string(), "fc00:11::2");
        assert_eq!(VIP_V6.to_string(), "fc00:3::24a");
        // Interface names must fit IFNAMSIZ (15 characters).
        assert!(HOSTS.iter().all(|h| h.router_port.len() <= 15));
    }
}
