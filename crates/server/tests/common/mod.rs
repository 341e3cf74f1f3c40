//! Namespaces, packets and sockets for the privileged tests.
//!
//! Each namespace belongs to a dedicated thread that `unshare`s a new network namespace
//! (and, for the server, a private mount namespace with its own `/run` and no bpffs), so
//! nothing the tests do is visible from the root namespace, and everything (veths,
//! addresses, sysctls, bpffs pins, state files) disappears with the thread, also when a
//! test panics or the process is killed.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
};

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (CAP_NET_ADMIN, CAP_BPF): run the privileged tests as root"
    );
}

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace owned by a dedicated thread; closures sent with [`Ns::run`] execute
/// inside it.
pub struct Ns {
    pub name: String,
    tid: i32,
    /// A process in the private mount namespace, so that it outlives the setup calls as a
    /// real host's or container's does (setup refuses pins that die with the process).
    holder: Option<std::process::Child>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(p: &str) -> bool {
    #[allow(clippy::unnecessary_cast, reason = "f_type's type depends on the libc")]
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

impl Ns {
    /// A new namespace. With `private_mounts` the thread also gets its own mount namespace
    /// (propagation private), a tmpfs on `/run` (the state files) and no bpffs on
    /// `/sys/fs/bpf`, so the code under test mounts its own, invisible to the host.
    pub fn new(name: &str, private_mounts: bool) -> Ns {
        let mut ns = Ns::unheld(name, private_mounts);
        if private_mounts {
            ns.holder = Some(ns.run(|| {
                Command::new("sleep")
                    .arg("3600")
                    .spawn()
                    .expect("starting the mount namespace's holder")
            }));
        }
        ns
    }

    /// Like [`Ns::new`], but a private mount namespace is held by this thread only: pins
    /// made there die with the process, as under `ip netns exec`.
    pub fn unheld(name: &str, private_mounts: bool) -> Ns {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let init = || -> Result<i32, String> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
                    if private_mounts {
                        unshare(CloneFlags::CLONE_NEWNS)
                            .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
                        mount(
                            None::<&str>,
                            "/",
                            None::<&str>,
                            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                            None::<&str>,
                        )
                        .map_err(|e| format!("making / private: {e}"))?;
                        mount(
                            Some("tmpfs"),
                            "/run",
                            Some("tmpfs"),
                            MsFlags::empty(),
                            None::<&str>,
                        )
                        .map_err(|e| format!("tmpfs on /run: {e}"))?;
                        while is_bpffs("/sys/fs/bpf") {
                            umount2("/sys/fs/bpf", MntFlags::MNT_DETACH)
                                .map_err(|e| format!("unmounting our copy of /sys/fs/bpf: {e}"))?;
                        }
                    }
                    sh_result("ip link set lo up")?;
                    Ok(nix::unistd::gettid().as_raw())
                };
                let ok = init();
                let failed = ok.is_err();
                let _ = ready_tx.send(ok);
                if failed {
                    return;
                }
                for job in rx {
                    job();
                }
            })
            .expect("spawning a namespace thread");
        let tid = ready_rx
            .recv()
            .expect("namespace thread died")
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Ns {
            name: name.to_owned(),
            tid,
            holder: None,
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// The thread id: `ip link ... netns <tid>` moves an interface into this namespace.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Runs `f` inside the namespace and returns its result; a panic in `f` is re-raised here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (rtx, rrx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            let _ = rtx.send(r);
        });
        self.tx
            .as_ref()
            .expect("namespace alive")
            .send(job)
            .expect("namespace thread gone");
        match rrx.recv().expect("namespace thread gone") {
            Ok(r) => r,
            Err(p) => panic::resume_unwind(p),
        }
    }

    /// Runs a shell-free command line (split on whitespace) in the namespace; panics with
    /// its stderr on failure.
    pub fn sh(&self, line: &str) -> String {
        let line = line.to_owned();
        let name = self.name.clone();
        self.run(move || sh_result(&line).unwrap_or_else(|e| panic!("[{name}] {e}")))
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl_set(&self, key: &str, value: &str) {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.run(move || {
            std::fs::write(sysctl_path(&key), &value)
                .unwrap_or_else(|e| panic!("sysctl {key}: {e}"))
        })
    }

    /// Reads a sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> String {
        let key = key.to_owned();
        self.run(move || {
            std::fs::read_to_string(sysctl_path(&key))
                .unwrap_or_else(|e| panic!("sysctl {key}: {e}"))
                .trim()
                .to_owned()
        })
    }

    /// The addresses on `dev` as `addr/prefix` strings.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out = self.sh(&format!("ip -j addr show dev {dev}"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Path::new("/proc/sys").join(rel)
}

/// Runs `line` (split on whitespace) in the calling thread's namespaces.
pub fn sh_result(line: &str) -> Result<String, String> {
    let mut parts = line.split_whitespace();
    let prog = parts.next().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(parts)
        .output()
        .map_err(|e| format!("`{line}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

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
        let (tx, rx) = mpsc::channel();
        if let Some(t) = self.server.tx.as_ref() {
            let _ = t.send(Box::new(move || {
                let _ = std::fs::remove_dir_all(&pin_dir);
                let _ = tx.send(());
            }));
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Packets, built here independently of the code under test.

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    let c = fold(sum16(segment, sum16(&pseudo, 0)));
    if c == 0 && proto == 17 {
        0xffff
    } else {
        c
    }
}

/// An IP packet (v4 or v6 by the addresses) carrying `segment` of protocol `proto`, with
/// every checksum filled in.
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, mut segment: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let c = l4_checksum(src, dst, proto, &segment);
    segment[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + segment.len()) as u16;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(&segment);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&segment);
            h
        }
        _ => panic!("mixed families"),
    }
}

/// A UDP datagram `src` → `dst` as an IP packet.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 17, u, 6)
}

/// A TCP SYN `src` → `dst` with sequence number `seq`, as an IP packet.
pub fn tcp_syn_packet(src: SocketAddr, dst: SocketAddr, seq: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    // Data offset 6 words (one option), SYN, window, checksum, urgent pointer.
    t.extend_from_slice(&[0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    // MSS 1400.
    t.extend_from_slice(&[2, 4, 0x05, 0x78]);
    ip_packet(src.ip(), dst.ip(), 6, t, 16)
}

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
