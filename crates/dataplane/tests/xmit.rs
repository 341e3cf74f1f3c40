//! Privileged: detection of XDP frames a driver drops on transmit (`ricochet_dataplane::xmit`),
//! on veth pairs in namespaces of the test's own.
//!
//! Run as root: `cargo test -p ricochet-dataplane --test xmit`.

use ricochet_testkit::lab as net;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode};
use ricochet_dataplane::xmit::{self, FindingKind, XmitMonitor};

const LB: &str = "xa";
const PEER: &str = "xb";

fn need_root() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create namespaces and attach XDP: run them as root"
    );
}

/// `ip ARGS` in the calling thread's namespace; panics with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ethtool_gro(iface: &str, on: bool, netns: Option<&str>) {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ethtool"]);
            c
        }
        None => Command::new("ethtool"),
    };
    let out = cmd
        .args(["-K", iface, "gro", if on { "on" } else { "off" }])
        .output()
        .expect("running ethtool");
    assert!(
        out.status.success(),
        "ethtool -K {iface} gro: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth pair `xa` <-> `xb`, both up, GRO off on both, in the calling thread's namespace,
/// without IPv6 (whose router and multicast listener messages would be traffic the tests
/// did not send).
fn veth_pair() {
    net::sysctl(&[
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    ip(&["link", "add", LB, "type", "veth", "peer", "name", PEER]);
    ip(&["link", "set", LB, "up"]);
    ip(&["link", "set", PEER, "up"]);
    ethtool_gro(LB, false, None);
    ethtool_gro(PEER, false, None);
}

/// Loads the trivial object and attaches `program` (`xdp_pass`, `xdp_tx`) to `iface`; the
/// attachment lasts as long as the returned object.
fn attach(iface: &str, program: &str, mode: XdpMode) -> aya::Ebpf {
    let mut ebpf = aya::Ebpf::load(ricochet_bpf::TRIVIAL).expect("loading the trivial object");
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .expect("program missing")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("loading");
    prog.attach(iface, mode)
        .unwrap_or_else(|e| panic!("attaching {program} to {iface}: {e}"));
    ebpf
}

/// A named namespace (`/run/netns/NAME`), deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn new(tag: &str) -> Self {
        let name = format!("rcx{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        NamedNetns(name)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Sends `count` small frames out of `iface` with an AF_PACKET socket.
fn send_frames(iface: &str, count: usize) {
    let index = net::ifindex(iface);
    assert_ne!(index, 0, "no {iface}");
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: sockaddr_ll is plain old data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    // The local experimental EtherType: nothing in the namespace answers it.
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for _ in 0..count {
        // SAFETY: valid buffer and address for the duration of the call.
        let rc = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            frame.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
}

fn tx_errors(iface: &str) -> u64 {
    xmit::xmit_error_counters(iface)
        .unwrap()
        .iter()
        .filter(|(n, _)| n.contains("xdp_tx_errors"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn a_veth_peer_without_xdp_or_gro_is_found_and_an_xdp_peer_is_clean() {
    need_root();
    ricochet_testkit::netns::in_fresh_netns(|| {
        veth_pair();
        // Nothing attached yet: nothing to check.
        assert_eq!(xmit::check_veth_peer(LB).unwrap(), None);
        let lb = attach(LB, "xdp_tx", XdpMode::Driver);
        let finding = xmit::check_veth_peer(LB)
            .unwrap()
            .expect("a peer without XDP or GRO is found");
        assert_eq!(finding.kind, FindingKind::VethPeerDropsXdp);
        assert_eq!(finding.interface, LB);
        assert!(finding.what.contains(PEER), "{finding}");
        assert!(
            finding.fix.contains("XDP program") && finding.fix.contains("gro on"),
            "{finding}"
        );

        let peer = attach(PEER, "xdp_pass", XdpMode::Driver);
        assert_eq!(xmit::check_veth_peer(LB).unwrap(), None, "XDP_PASS peer");
        drop(peer);
        assert!(
            xmit::check_veth_peer(LB).unwrap().is_some(),
            "peer's program gone"
        );
        ethtool_gro(PEER, true, None);
        assert_eq!(xmit::check_veth_peer(LB).unwrap(), None, "GRO on the peer");

        ip(&["link", "set", PEER, "down"]);
        let down = xmit::check_veth_peer(LB).unwrap().expect("a peer down");
        assert!(down.what.contains("down"), "{down}");
        ip(&["link", "set", PEER, "up"]);
        ethtool_gro(PEER, false, None);

        // A generic program transmits through the stack: the peer needs nothing.
        drop(lb);
        let _generic = attach(LB, "xdp_tx", XdpMode::Skb);
        assert_eq!(xmit::check_veth_peer(LB).unwrap(), None);
    });
}

#[test]
fn a_veth_peer_in_a_named_namespace_is_checked_there() {
    need_root();
    let other = NamedNetns::new("peer");
    let name = other.0.clone();
    ricochet_testkit::netns::in_fresh_netns(move || {
        veth_pair();
        ip(&["link", "set", PEER, "netns", &name]);
        ip(&["-n", &name, "link", "set", PEER, "up"]);
        let _lb = attach(LB, "xdp_tx", XdpMode::Driver);
        let finding = xmit::check_veth_peer(LB).unwrap().expect("found");
        assert_eq!(finding.kind, FindingKind::VethPeerDropsXdp, "{finding}");
        assert!(
            finding.what.contains(&format!("/run/netns/{name}")),
            "names the namespace: {finding}"
        );
        ethtool_gro(PEER, true, Some(&name));
        assert_eq!(
            xmit::check_veth_peer(LB).unwrap(),
            None,
            "GRO read in the peer's namespace"
        );
    });
}

#[test]
fn a_veth_peer_in_a_namespace_nobody_names_is_reported_unchecked() {
    need_root();
    // A namespace held only by a thread: no /run/netns entry, no process shows it.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // SAFETY: plain syscalls; unshare changes only this thread's namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let tid = tid_rx.recv().unwrap();
    ricochet_testkit::netns::in_fresh_netns(|| {
        veth_pair();
        ip(&["link", "set", PEER, "netns", &tid.to_string()]);
        let up = Command::new("nsenter")
            .arg(format!("--net=/proc/{tid}/ns/net"))
            .args(["ip", "link", "set", PEER, "up"])
            .output()
            .expect("running nsenter");
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let _lb = attach(LB, "xdp_tx", XdpMode::Driver);
        let finding = xmit::check_veth_peer(LB).unwrap().expect("reported");
        assert_eq!(finding.kind, FindingKind::VethPeerUnchecked, "{finding}");
        assert!(
            finding.what.contains(PEER) && finding.what.contains("cannot be checked"),
            "{finding}"
        );
    });
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn rising_xdp_transmit_errors_are_found() {
    need_root();
    ricochet_testkit::netns::in_fresh_netns(|| {
        veth_pair();
        let _lb = attach(LB, "xdp_tx", XdpMode::Driver);
        let mut monitor = XmitMonitor::new(LB).unwrap();
        assert!(
            !monitor
                .check()
                .unwrap()
                .iter()
                .any(|f| f.kind == FindingKind::TransmitErrors),
            "no traffic, no transmit errors"
        );
        // xb -> xa: xa's program bounces every frame back to xb, which cannot take it.
        send_frames(PEER, 20);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tx_errors(LB) < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(tx_errors(LB) >= 20, "the driver counts the drops");
        let findings = monitor.check().unwrap();
        let errors = findings
            .iter()
            .find(|f| f.kind == FindingKind::TransmitErrors)
            .unwrap_or_else(|| panic!("transmit errors found: {findings:?}"));
        assert_eq!(errors.interface, LB);
        assert!(errors.what.contains("xdp_tx_errors +20"), "{errors}");
        assert!(
            errors.fix.contains(PEER),
            "the fix names the peer: {errors}"
        );
        // Counted once: the next check sees no new rise.
        assert!(!monitor
            .check()
            .unwrap()
            .iter()
            .any(|f| f.kind == FindingKind::TransmitErrors));

        // With an XDP_PASS program on the peer the bounced frames arrive: nothing rises.
        let _peer = attach(PEER, "xdp_pass", XdpMode::Driver);
        let before = tx_errors(LB);
        send_frames(PEER, 20);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(tx_errors(LB), before);
        assert_eq!(monitor.check().unwrap(), vec![], "all clean");
    });
}
