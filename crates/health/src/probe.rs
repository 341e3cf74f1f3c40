//! The probes: TCP connect (with optional request/response), HTTP, UDP and ICMP echo,
//! each bounded by the monitor's receive timeout, each failing with a precise reason.
//!
//! A probe may carry a socket mark: its packets then go through the DSR probe
//! encapsulator ([`crate::DsrPath`]) to the server registered for that mark.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ricochet_common::checksum::internet_checksum;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use crate::http;
use crate::outcome::{Failure, FailureKind};
use crate::spec::ProbeSpec;

/// Most bytes of an answer read (a health check needs the status line and a little body).
const MAX_ANSWER: usize = 64 * 1024;

/// TCP MSS of marked (encapsulated) probe connections: their packets grow by up to 40
/// bytes of outer header, which must still fit the link MTU (1280, IPv6's minimum, less
/// 40 outer and 60 inner header bytes, rounded down).
const ENCAPSULATED_MSS: u32 = 1160;

/// Where a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The address the probe's packets are addressed to: the server's own, or a VIP.
    pub addr: IpAddr,
    /// The socket mark that sends them through the DSR probe encapsulator, if any.
    pub mark: Option<u32>,
    /// The `Host` header of HTTP checks (the VIP for checks through it).
    pub host: IpAddr,
}

impl Destination {
    /// Straight to `addr`.
    pub fn direct(addr: IpAddr) -> Self {
        Self {
            addr,
            mark: None,
            host: addr,
        }
    }
}

/// Runs one probe to `dest`, within `timeout`.
///
/// `require_answer` makes a UDP probe without an expected response still need an answer
/// (used through the VIP path, where silence proves nothing: a server without the VIP
/// drops the packet without an ICMP error).
pub async fn probe(
    spec: &ProbeSpec,
    dest: Destination,
    timeout: Duration,
    require_answer: bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    let at = Deadline { deadline, timeout };
    match spec {
        ProbeSpec::Tcp {
            port,
            request,
            response,
        } => {
            let addr = SocketAddr::new(dest.addr, *port);
            let mut stream = tcp_connect(addr, dest.mark, at).await?;
            if let Some(request) = request {
                at.run(stream.write_all(request.as_bytes()), "sending the request")
                    .await?
                    .map_err(|e| Failure::io(&e, &format!("sending the request to {addr}")))?;
            }
            if let Some(expected) = response {
                let answer = read_until(&mut stream, at, |got| contains(got, expected)).await?;
                if !contains(&answer, expected) {
                    return Err(mismatch(expected, &answer));
                }
            }
            Ok(())
        }
        ProbeSpec::Http {
            port,
            request,
            codes,
            response,
        } => {
            let addr = SocketAddr::new(dest.addr, *port);
            let mut stream = tcp_connect(addr, dest.mark, at).await?;
            let host = match (dest.host, *port) {
                (IpAddr::V6(v6), 80) => format!("[{v6}]"),
                (IpAddr::V6(v6), p) => format!("[{v6}]:{p}"),
                (ip, 80) => ip.to_string(),
                (ip, p) => format!("{ip}:{p}"),
            };
            at.run(
                stream.write_all(&http::build_request(request, &host)),
                "sending the HTTP request",
            )
            .await?
            .map_err(|e| Failure::io(&e, &format!("sending the HTTP request to {addr}")))?;
            // Done when the status is known and, with a body check, the body holds the text.
            let answer = read_until(&mut stream, at, |got| match http::parse_status(got) {
                Ok(Some(_)) => match response {
                    None => true,
                    Some(expected) => http::body(got).is_some_and(|b| contains(b, expected)),
                },
                Ok(None) => false,
                Err(_) => true,
            })
            .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(failure) => return Err(failure),
            };
            let status = match http::parse_status(&answer) {
                Ok(Some(status)) => status,
                Ok(None) if answer.is_empty() => {
                    return Err(Failure::new(
                        FailureKind::ConnectionReset,
                        format!("connection closed without an HTTP response ({addr})"),
                    ))
                }
                Ok(None) => {
                    return Err(Failure::new(
                        FailureKind::PayloadMismatch,
                        "incomplete HTTP status line",
                    ))
                }
                Err(not_http) => return Err(Failure::new(FailureKind::PayloadMismatch, not_http)),
            };
            if !http::code_matches(status.code, codes) {
                let reason = if status.reason.is_empty() {
                    String::new()
                } else {
                    format!(" {}", status.reason)
                };
                return Err(Failure::new(
                    FailureKind::ResponseCodeMismatch,
                    format!(
                        "HTTP {}{reason} not in {}",
                        status.code,
                        http::describe_codes(codes)
                    ),
                ));
            }
            if let Some(expected) = response {
                let body = http::body(&answer).unwrap_or_default();
                if !contains(body, expected) {
                    return Err(mismatch(expected, body));
                }
            }
            Ok(())
        }
        ProbeSpec::Udp {
            port,
            request,
            response,
        } => {
            let addr = SocketAddr::new(dest.addr, *port);
            udp_probe(
                addr,
                dest.mark,
                request.as_deref().unwrap_or_default(),
                response.as_deref(),
                require_answer,
                at,
            )
            .await
        }
        ProbeSpec::Icmp => icmp_echo(dest.addr, dest.mark, at).await,
    }
}

/// The deadline of one probe, and the timeout it came from (for the message).
#[derive(Debug, Clone, Copy)]
struct Deadline {
    deadline: Instant,
    timeout: Duration,
}

impl Deadline {
    /// Runs `fut` until the deadline; on expiry fails with "timeout after T (doing)".
    async fn run<F: std::future::Future>(self, fut: F, doing: &str) -> Result<F::Output, Failure> {
        timeout_at(self.deadline, fut)
            .await
            .map_err(|_| Failure::timeout(self.timeout, doing))
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

fn mismatch(expected: &str, got: &[u8]) -> Failure {
    let shown: String = String::from_utf8_lossy(&got[..got.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    Failure::new(
        FailureKind::PayloadMismatch,
        format!(
            "response did not contain {expected:?} (got {} bytes: {shown:?})",
            got.len()
        ),
    )
}

/// A socket of `ty` for `addr`'s family, non-blocking, with `mark` set.
fn socket(addr: IpAddr, ty: Type, proto: Protocol, mark: Option<u32>) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, ty, Some(proto))?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    Ok(socket)
}

async fn tcp_connect(
    addr: SocketAddr,
    mark: Option<u32>,
    at: Deadline,
) -> Result<TcpStream, Failure> {
    let doing = format!("connecting to {addr}");
    let local = |e: io::Error| {
        Failure::new(
            FailureKind::Other,
            format!("{e} (creating a socket for {addr})"),
        )
    };
    let socket = socket(addr.ip(), Type::STREAM, Protocol::TCP, mark).map_err(local)?;
    if mark.is_some() {
        socket.set_tcp_mss(ENCAPSULATED_MSS).map_err(local)?;
    }
    let socket = TcpSocket::from_std_stream(socket.into());
    at.run(socket.connect(addr), "no answer to the connection request")
        .await?
        .map_err(|e| Failure::io(&e, &doing))
}

/// Reads until `done(answer so far)`, the peer closes, or [`MAX_ANSWER`] bytes. A timeout
/// after some bytes arrived returns them (the caller judges them); before any, fails.
async fn read_until(
    stream: &mut TcpStream,
    at: Deadline,
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, Failure> {
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while answer.len() < MAX_ANSWER && !done(&answer) {
        match timeout_at(at.deadline, stream.read(&mut buf)).await {
            Err(_) if answer.is_empty() => {
                return Err(Failure::timeout(at.timeout, "connected, but no answer"))
            }
            Err(_) => break,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if answer.is_empty() => return Err(Failure::io(&e, "reading the answer")),
            Ok(Err(_)) => break,
        }
    }
    Ok(answer)
}

async fn udp_probe(
    addr: SocketAddr,
    mark: Option<u32>,
    request: &str,
    expected: Option<&str>,
    require_answer: bool,
    at: Deadline,
) -> Result<(), Failure> {
    let local = |e: io::Error| {
        Failure::new(
            FailureKind::Other,
            format!("{e} (creating a UDP socket for {addr})"),
        )
    };
    let socket = socket(addr.ip(), Type::DGRAM, Protocol::UDP, mark).map_err(local)?;
    let socket = UdpSocket::from_std(socket.into()).map_err(local)?;
    // Connected: the kernel then reports an ICMP port unreachable as ECONNREFUSED, and
    // only answers from addr are received.
    socket
        .connect(addr)
        .await
        .map_err(|e| Failure::io(&e, &format!("connecting a UDP socket to {addr}")))?;
    socket
        .send(request.as_bytes())
        .await
        .map_err(|e| Failure::io(&e, &format!("sending the UDP request to {addr}")))?;
    let mut buf = vec![0u8; MAX_ANSWER];
    let port_unreachable = || {
        Failure::new(
            FailureKind::PortUnreachable,
            format!("port unreachable: ICMP error to the UDP request to {addr}"),
        )
    };
    match timeout_at(at.deadline, socket.recv(&mut buf)).await {
        // Avi's rule for a UDP monitor without a response: no ICMP error is success.
        Err(_) if expected.is_none() && !require_answer => Ok(()),
        Err(_) => Err(Failure::timeout(at.timeout, "no UDP answer")),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Err(port_unreachable()),
        Ok(Err(e)) => Err(Failure::io(&e, &format!("receiving from {addr}"))),
        Ok(Ok(n)) => match expected {
            Some(text) if !contains(&buf[..n], text) => Err(mismatch(text, &buf[..n])),
            _ => Ok(()),
        },
    }
}

/// Identifier of the next echo request (a per-process sequence from the pid, so that two
/// engines on one host do not take each other's replies).
fn next_echo_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// ICMP echo over a raw socket (the engine runs as root; unprivileged ping sockets depend
/// on `net.ipv4.ping_group_range`, which excludes everyone by default).
async fn icmp_echo(addr: IpAddr, mark: Option<u32>, at: Deadline) -> Result<(), Failure> {
    let local = |e: io::Error| {
        Failure::new(
            FailureKind::Other,
            format!("{e} (opening a raw ICMP socket to ping {addr}: needs CAP_NET_RAW)"),
        )
    };
    let proto = if addr.is_ipv4() {
        Protocol::ICMPV4
    } else {
        Protocol::ICMPV6
    };
    let socket = socket(addr, Type::RAW, proto, mark).map_err(local)?;
    // SAFETY: a socket2::Socket owns its descriptor, which stays open and the same until
    // the Socket, owned by the AsyncFd from here on, is dropped.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| local(e.into_parts().1))?;
    let id = next_echo_id();
    let seq = 1u16;
    let request = echo_request(addr.is_ipv6(), id, seq);
    let target = SockAddr::from(SocketAddr::new(addr, 0));
    socket
        .get_ref()
        .send_to(&request, &target)
        .map_err(|e| Failure::io(&e, &format!("sending an ICMP echo request to {addr}")))?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    loop {
        let mut ready = at
            .run(socket.readable(), "no ICMP echo reply")
            .await?
            .map_err(local)?;
        let (n, from) = match ready.try_io(|fd| fd.get_ref().recv_from(&mut buf)) {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Err(Failure::io(&e, &format!("receiving from {addr}"))),
            Err(_would_block) => continue,
        };
        // SAFETY: recv_from initialised the first n bytes.
        let packet: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
        let from_ip = from.as_socket().map(|s| s.ip());
        if from_ip == Some(addr) && is_echo_reply(packet, addr.is_ipv6(), id, seq) {
            return Ok(());
        }
    }
}

fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"ricochet-health");
    if !v6 {
        // ICMPv6 checksums cover a pseudo-header: the kernel fills them in on raw sockets.
        let sum = internet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn is_echo_reply(packet: &[u8], v6: bool, id: u16, seq: u16) -> bool {
    // IPv4 raw sockets deliver the IP header; IPv6 ones do not.
    let icmp = if v6 {
        packet
    } else {
        let ihl = packet.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        packet.get(ihl..).unwrap_or_default()
    };
    let reply_type = if v6 { 129 } else { 0 };
    icmp.len() >= 8
        && icmp[0] == reply_type
        && icmp[1] == 0
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies_and_replies_match_by_id_and_sequence() {
        let request = echo_request(false, 0x1234, 1);
        // Checked with the test kit's checksum, not with the function that filled it in.
        assert!(
            ricochet_testkit::checksum::verifies(&request),
            "a correct checksum sums to zero: {request:02x?}"
        );
        let mut reply = vec![0x45u8; 1];
        reply.extend_from_slice(&[0; 19]);
        reply.extend_from_slice(&request);
        reply[20] = 0; // echo reply
        assert!(is_echo_reply(&reply, false, 0x1234, 1));
        assert!(!is_echo_reply(&reply, false, 0x1235, 1));
        assert!(!is_echo_reply(&reply, false, 0x1234, 2));
        let v6 = echo_request(true, 7, 1);
        let mut v6_reply = v6.clone();
        v6_reply[0] = 129;
        assert!(is_echo_reply(&v6_reply, true, 7, 1));
        assert!(!is_echo_reply(&v6, true, 7, 1), "a request is not a reply");
    }

    #[test]
    fn mismatch_shows_what_came_instead() {
        let f = mismatch("web01", b"HTTP/1.1 200 OK\r\n\r\nweb02\n");
        assert_eq!(f.kind, FailureKind::PayloadMismatch);
        assert_eq!(
            f.message,
            "response did not contain \"web01\" (got 25 bytes: \"HTTP/1.1 200 OK....web02.\")"
        );
    }
}
