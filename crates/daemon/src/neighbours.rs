//! Keeps the kernel's neighbour entries of the servers' next hops resolved.
//!
//! The XDP program takes next-hop MACs from the kernel's neighbour table through
//! bpf_fib_lookup, which never triggers resolution itself: a packet to an unresolved
//! next hop is dropped (counted as `drop_no_neighbour`). So the engine sends an ICMP echo
//! to every server now and then; the kernel resolves the next hop to send it, and the
//! traffic keeps the entries fresh. Replies are not needed and not read.

use std::net::IpAddr;

use ricochet_common::checksum::internet_checksum;
use tracing::debug;

/// Sends one ICMP/ICMPv6 echo request to `ip` from a raw socket.
pub fn probe(ip: IpAddr) -> std::io::Result<()> {
    let (domain, proto, kind) = match ip {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8),
    };
    // SAFETY: plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut msg = [kind, 0, 0, 0, 0x52, 0x43, 0, 1, b'r', b'i', b'c', b'o'];
    if ip.is_ipv4() {
        let c = internet_checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    } // The kernel fills in ICMPv6 checksums of raw sockets.
    let rc = match ip {
        IpAddr::V4(a) => send_to(
            fd,
            &msg,
            &libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            },
        ),
        IpAddr::V6(a) => send_to(
            fd,
            &msg,
            &libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            },
        ),
    };
    let err = (rc < 0).then(std::io::Error::last_os_error);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The socket addresses `probe` sends to.
trait SockAddr {}
impl SockAddr for libc::sockaddr_in {}
impl SockAddr for libc::sockaddr_in6 {}

/// `sendto(2)` without blocking; its return value.
fn send_to<A: SockAddr>(fd: libc::c_int, msg: &[u8], addr: &A) -> isize {
    // SAFETY: a valid buffer, and a socket address of the size given (the trait admits
    // only libc's sockaddr types).
    unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_DONTWAIT,
            (addr as *const A).cast(),
            std::mem::size_of::<A>() as libc::socklen_t,
        )
    }
}

/// Probes every address; failures are logged, not fatal (a server may be down).
pub fn probe_all<'a>(ips: impl IntoIterator<Item = &'a IpAddr>) {
    for ip in ips {
        if let Err(e) = probe(*ip) {
            debug!(%ip, error = %e, "neighbour probe failed");
        }
    }
}
