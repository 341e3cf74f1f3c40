//! The fixture lab's network: the links, addresses, neighbours and routes the XDP
//! program's FIB lookups need, built in a fresh network namespace of the calling thread
//! (see [`crate::netns::in_fresh_netns`]).
//!
//! Children spawned from that thread (`ip`, `sysctl`) inherit its namespace,
//! BPF_PROG_TEST_RUN resolves the ingress ifindex in it, and `bpf_fib_lookup` uses the
//! namespace of that device. The namespace, and everything in it, goes away when the
//! thread exits: nothing is ever created in the root namespace.

use std::{
    ffi::CString,
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
};

/// The load balancer's interface; frames are "received" on it.
pub const LB_IF: &str = "fx0";
/// Its veth peer (only there so that `fx0` has a carrier).
pub const PEER_IF: &str = "fx1";
/// MTU of `fx0`: a 1500-byte IPv4 packet does not fit once encapsulated.
pub const LB_MTU: u32 = 1500;

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x07];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x08];
/// Source MAC of the client frames (the upstream router, seen from the load balancer).
/// Deliberately not a MAC of the neighbour table: ICMP errors must go back to it.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];

/// The load balancer's own addresses (the outer source of encapsulated packets).
pub const LB_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 7);
pub const LB_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 7);

/// A host on the load balancer's segment, with a permanent neighbour entry.
#[derive(Clone, Copy, Debug)]
pub struct Neighbour {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: [u8; 6],
}

/// The upstream router; `192.168.34.0/24` and `fc00:34::/64` are behind it.
pub const ROUTER: Neighbour = Neighbour {
    v4: Ipv4Addr::new(192, 168, 33, 1),
    v6: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 1),
    mac: [0x02, 0, 0, 0, 0, 0x01],
};
/// web01: a server on the segment.
pub const WEB01: Neighbour = Neighbour {
    v4: Ipv4Addr::new(192, 168, 33, 10),
    v6: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0x10),
    mac: [0x02, 0, 0, 0, 0, 0x0a],
};
/// web03: another server on the segment.
pub const WEB03: Neighbour = Neighbour {
    v4: Ipv4Addr::new(192, 168, 33, 11),
    v6: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0x11),
    mac: [0x02, 0, 0, 0, 0, 0x0b],
};
/// web02 lives behind the router: its frames carry the router's MAC.
pub const WEB02_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 34, 10);
pub const WEB02_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x34, 0, 0, 0, 0, 0, 0x10);

/// A second link of the load balancer, `fx2` (192.168.36.7/24, peer `fx3`): servers
/// there are reached with XDP_REDIRECT rather than XDP_TX.
pub const SIDE_IF: &str = "fx2";
pub const SIDE_PEER_IF: &str = "fx3";
pub const SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x27];
pub const SIDE_PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x28];
pub const SIDE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 36, 7);
/// web04, on `fx2`'s segment.
pub const WEB04: Neighbour = Neighbour {
    v4: Ipv4Addr::new(192, 168, 36, 10),
    v6: Ipv6Addr::new(0xfc00, 0x36, 0, 0, 0, 0, 0, 0x10),
    mac: [0x02, 0, 0, 0, 0, 0x0d],
};

/// No route leads there (the namespace has no default route).
pub const UNROUTABLE_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// On `fx0`'s segment, but with no neighbour entry.
pub const UNRESOLVED_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 50);

/// Index of `name` in the calling thread's network namespace (0 if absent).
pub fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).expect("interface name");
    // SAFETY: valid C string; the call opens a socket in the calling thread's namespace.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `ip -batch -` with `commands` (in the calling thread's namespace); panics
/// with its stderr on failure.
pub fn ip_batch(commands: &[String]) {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ip (iproute2)");
    let script = commands.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing to ip");
    let out = child.wait_with_output().expect("waiting for ip");
    assert!(
        out.status.success(),
        "ip -batch failed: {}\nscript:\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sysctl -w` on `settings` (in the calling thread's namespace).
pub fn sysctl(settings: &[&str]) {
    let out = Command::new("sysctl")
        .arg("-qw")
        .args(settings)
        .output()
        .expect("spawning sysctl");
    assert!(
        out.status.success(),
        "sysctl {settings:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the test network in the calling thread's (fresh) namespace and returns the
/// ifindex of [`LB_IF`].
///
/// Panics if `fx0` already exists here: that would mean the thread is not in a fresh
/// namespace, and the setup would touch a namespace it does not own.
pub fn build_lab_network() -> u32 {
    assert_eq!(
        ifindex(LB_IF),
        0,
        "{LB_IF} exists already: not in a fresh network namespace"
    );
    let mut cmds = vec![
        "link set lo up".to_owned(),
        format!(
            "link add {LB_IF} address {} mtu {LB_MTU} type veth peer name {PEER_IF} address {}",
            mac(LB_MAC),
            mac(PEER_MAC)
        ),
        format!("link set {LB_IF} up"),
        format!("link set {PEER_IF} up"),
        format!("addr add {LB_V4}/24 dev {LB_IF}"),
        format!("addr add {LB_V6}/64 dev {LB_IF} nodad"),
        format!(
            "link add {SIDE_IF} address {} type veth peer name {SIDE_PEER_IF} address {}",
            mac(SIDE_MAC),
            mac(SIDE_PEER_MAC)
        ),
        format!("link set {SIDE_IF} up"),
        format!("link set {SIDE_PEER_IF} up"),
        format!("addr add {SIDE_V4}/24 dev {SIDE_IF}"),
        format!(
            "neigh add {} lladdr {} dev {SIDE_IF} nud permanent",
            WEB04.v4,
            mac(WEB04.mac)
        ),
    ];
    for n in [ROUTER, WEB01, WEB03] {
        for addr in [n.v4.to_string(), n.v6.to_string()] {
            cmds.push(format!(
                "neigh add {addr} lladdr {} dev {LB_IF} nud permanent",
                mac(n.mac)
            ));
        }
    }
    cmds.push(format!(
        "route add 192.168.34.0/24 via {} dev {LB_IF}",
        ROUTER.v4
    ));
    cmds.push(format!(
        "route add fc00:34::/64 via {} dev {LB_IF}",
        ROUTER.v6
    ));
    ip_batch(&cmds);
    // bpf_fib_lookup answers FWD_DISABLED unless the ingress device forwards; "all"
    // propagates to the existing devices.
    sysctl(&[
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
    ]);
    let index = ifindex(LB_IF);
    assert_ne!(
        index, 0,
        "{LB_IF} created by ip is not visible from this thread: namespace mix-up"
    );
    index
}
