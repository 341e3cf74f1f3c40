//! Namespaces, packets and sockets for the privileged tests.
//!
//! Each namespace belongs to a dedicated thread that `unshare`s a new network namespace
//! (and, for the server, a private mount namespace with its own `/run` and no bpffs):
//! the test kit's [`Ns`]. Nothing the tests do is visible from the root namespace, and
//! everything (veths, addresses, sysctls, bpffs pins, state files) disappears with the
//! thread, also when a test panics or the process is killed.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different part"
)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

/// Fails the test unless it runs as root.
pub fn require_root() {
    ricochet_testkit::require_root("the server tests create namespaces and attach eBPF");
}

pub use ricochet_testkit::netns::Ns;

// The seed's addresses (TESTBED.md): SE1 sends to web01; the client is behind the SE.
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 10);
pub const SENDER_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 7);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 11, 2);
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 241);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0x10);
pub const SENDER_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0x7);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x11, 0, 0, 0, 0, 0, 0x2);
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 3, 0, 0, 0, 0, 0, 0x24a);

/// Two namespaces joined by a veth: "sender" (the load balancer, also holding the client's
/// addresses on its lo) and "server" (the host under test). The server's default routes
/// point at the sender, so replies to the client go there directly.
pub struct Topo {
    pub server: Ns,
    pub sender: Ns,
    pub server_if: String,
    pub sender_if: String,
    pub pin_dir: PathBuf,
}

impl Topo {
    /// `tag` keeps names unique between the tests of one process.
    pub fn new(tag: &str) -> Topo {
        require_root();
        let base = format!("rcs{}{tag}", std::process::id());
        let sender = Ns::new(&format!("{base}-snd"), false);
        let server = Ns::new(&format!("{base}-srv"), true);
        let (server_if, sender_if) = (format!("{base}s"), format!("{base}c"));
        assert!(server_if.len() <= 15, "interface name {server_if} too long");
        server.sh(&format!(
            "ip link add {server_if} type veth peer name {sender_if} netns {}",
            sender.tid()
        ));

        server.sh(&format!("ip addr add {SERVER_V4}/24 dev {server_if}"));
        server.sh(&format!(
            "ip -6 addr add {SERVER_V6}/64 dev {server_if} nodad"
        ));
        server.sh(&format!("ip link set {server_if} up"));
        server.sh(&format!("ip route add default via {SENDER_V4}"));
        server.sh(&format!("ip -6 route add default via {SENDER_V6}"));

        sender.sh(&format!("ip addr add {SENDER_V4}/24 dev {sender_if}"));
        sender.sh(&format!(
            "ip -6 addr add {SENDER_V6}/64 dev {sender_if} nodad"
        ));
        sender.sh(&format!("ip addr add {CLIENT_V4}/32 dev lo"));
        sender.sh(&format!("ip -6 addr add {CLIENT_V6}/128 dev lo nodad"));
        sender.sh(&format!("ip link set {sender_if} up"));
        // Replies come from the VIP, which the sender has no route to.
        sender.sysctl_set("net.ipv4.conf.all.rp_filter", "0");
        sender.sysctl_set(&format!("net.ipv4.conf.{sender_if}.rp_filter"), "0");
        // TOOLCHAIN.md's veth pitfall: no partial checksums from the sending side.
        sender.sh(&format!("ethtool -K {sender_if} tx off"));

        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{base}"));
        Topo {
            server,
            sender,
            server_if,
            sender_if,
            pin_dir,
        }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // The server's bpffs is private to its mount namespace and goes with it; remove the
        // pins anyway in case it was shared with the host. Must not panic (may run while
        // unwinding).
        let pin_dir = self.pin_dir.clone();
        self.server.try_run(Duration::from_secs(5), move || {
            let _ = std::fs::remove_dir_all(&pin_dir);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Packets, built by the test kit independently of the code under test.

pub use ricochet_testkit::ip::{tcp_syn_packet, udp_packet};

// ---------------------------------------------------------------------------------------
// Raw sockets.

/// A raw socket of `proto`, in the calling thread's namespace, with a receive timeout.
pub fn raw_socket(v6: bool, proto: i32) -> OwnedFd {
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: valid option pointer and length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    fd
}

/// Sends `payload` on raw socket `fd` to `dst`: the kernel adds the outer IP header with
/// the socket's protocol (4 for IPIP, 41 for IP6IP6).
pub fn raw_send(fd: &OwnedFd, dst: IpAddr, payload: &[u8]) {
    let rc = match dst {
        IpAddr::V4(d) => {
            // SAFETY: zeroed sockaddr_in is valid; fields set below.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes(d.octets());
            // SAFETY: valid buffer and address.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(d) => {
            // SAFETY: zeroed sockaddr_in6 is valid; fields set below.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = d.octets();
            // SAFETY: valid buffer and address.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    assert_eq!(
        rc,
        payload.len() as isize,
        "sendto {dst}: {}",
        std::io::Error::last_os_error()
    );
}

/// Receives one packet (with its source address) from raw socket `fd`, or `None` on timeout.
pub fn raw_recv(fd: &OwnedFd) -> Option<(Vec<u8>, IpAddr)> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: sockaddr_storage is plain data; zero is valid.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid buffer, address storage and length.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut sa as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    let src = match i32::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((&sa as *const libc::sockaddr_storage).cast()) };
            IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
        }
        _ => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&sa as *const libc::sockaddr_storage).cast()) };
            IpAddr::from(sin6.sin6_addr.s6_addr)
        }
    };
    Some((buf, src))
}

/// Waits up to `within` for `cond`.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
