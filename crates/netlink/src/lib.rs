//! Route netlink, synchronous: what Ricochet asks or changes about the interfaces of the
//! calling thread's network namespace (their state, XDP attachments and veth peers,
//! tunnels, addresses, the default route, namespace ids), without running `ip` and
//! parsing its output.
//!
//! Every call opens a netlink socket of its own in the calling thread's network
//! namespace, sends one request and reads the answers to the end: the callers (the engine's
//! start-up and its periodic checks, `ricochet server setup`) make a handful of calls, so
//! a socket per call costs nothing worth sharing, and a thread that moved into another
//! namespace is always answered by that namespace.
//!
//! A refusal of the kernel is an [`Error`] naming what was asked (which address, which
//! interface), the errno with its meaning, the kernel's own extended-ack message when it
//! gives one, and what to do.

mod address;
mod link;
mod route;

use std::{fmt, io};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
pub use nix::errno::Errno;

pub use address::{add_address, addresses, delete_address, host_prefix, Address, Scope};
pub use link::{
    create_tunnel, delete_link, link_by_index, link_by_name, links, nsid_of, set_link_up, Link,
    Tunnel, XdpState,
};
pub use route::default_route_interface;

/// A netlink request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {kind}")]
pub struct Error {
    /// What was asked, naming the objects: `adding 192.168.35.241/32 to lo`.
    op: String,
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    /// The kernel refused: its errno, its extended-ack message, what to do.
    Kernel {
        errno: Errno,
        message: Option<String>,
        hint: Option<String>,
    },
    /// The socket itself failed.
    Socket(io::Error),
    /// An answer this crate cannot read, or no answer.
    Answer(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Kernel {
                errno,
                message,
                hint,
            } => {
                write!(f, "the kernel answered {errno:?} ({})", errno.desc())?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                if let Some(h) = hint {
                    write!(f, "; {h}")?;
                }
                Ok(())
            }
            ErrorKind::Socket(e) => write!(f, "netlink socket: {e}"),
            ErrorKind::Answer(what) => f.write_str(what),
        }
    }
}

impl Error {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<Errno> {
        match self.kind {
            ErrorKind::Kernel { errno, .. } => Some(errno),
            _ => None,
        }
    }

    fn answer(op: impl Into<String>, what: impl Into<String>) -> Error {
        Error {
            op: op.into(),
            kind: ErrorKind::Answer(what.into()),
        }
    }

    /// Replaces the hint with the one `hint` gives for this errno, if it gives one.
    fn hinted(mut self, hint: impl FnOnce(Errno) -> Option<String>) -> Error {
        if let ErrorKind::Kernel {
            errno, hint: slot, ..
        } = &mut self.kind
        {
            if let Some(h) = hint(*errno) {
                *slot = Some(h);
            }
        }
        self
    }
}

/// What to do about an errno whatever the request.
fn common_hint(errno: Errno) -> Option<String> {
    match errno {
        Errno::EPERM | Errno::EACCES => Some(
            "changing interfaces needs CAP_NET_ADMIN in this network namespace: run as root"
                .to_owned(),
        ),
        _ => None,
    }
}

/// The result of this crate's calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The extended-ack message (`NLMSGERR_ATTR_MSG`) of an `NLMSG_ERROR` whose payload after
/// the error code is `payload` (the echoed request header, then attributes).
fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    // The echoed request is its header alone when capped, else the whole request.
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload[..4].try_into().ok()?) as usize;
        len.checked_add(3)? & !3
    };
    let mut tlvs = payload.get(echoed..)?;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    while tlvs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([tlvs[0], tlvs[1]]));
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or(text);
            let text = String::from_utf8_lossy(text).trim().to_owned();
            return (!text.is_empty()).then_some(text);
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

/// Sends one request (`op` names it for errors) and collects the answers (all parts of a
/// dump). With `NLM_F_ACK`, returns once the kernel acknowledged.
fn request(
    op: &dyn Fn() -> String,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>> {
    let socket_error = |what: &str, e: io::Error| Error {
        op: op(),
        kind: ErrorKind::Socket(io::Error::new(e.kind(), format!("{what}: {e}"))),
    };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| socket_error("opening", e))?;
    socket.bind_auto().map_err(|e| socket_error("binding", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| socket_error("connecting", e))?;
    // The kernel's own sentence ("Unknown device type") rides in the error when asked for;
    // a kernel without extended acks just does not send it.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = NLM_F_REQUEST | flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| socket_error("sending", e))?;
    let dump = flags & NLM_F_DUMP != 0;
    let mut answers = Vec::new();
    loop {
        let (data, _) = socket
            .recv_from_full()
            .map_err(|e| socket_error("receiving", e))?;
        let mut offset = 0;
        while offset < data.len() {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&data[offset..])
                    .map_err(|e| Error::answer(op(), format!("undecodable answer: {e}")))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) => {
                        return Err(Error {
                            op: op(),
                            kind: ErrorKind::Kernel {
                                errno: Errno::from_raw(code.get().abs()),
                                message: extack_message(reply.header.flags, &e.header),
                                hint: common_hint(Errno::from_raw(code.get().abs())),
                            },
                        })
                    }
                    None => return Ok(answers),
                },
                NetlinkPayload::InnerMessage(m) => {
                    answers.push(m);
                    if !dump && flags & NLM_F_ACK == 0 {
                        return Ok(answers);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_ack_message_after_a_capped_header() {
        let mut payload = vec![0u8; 16];
        payload[..4].copy_from_slice(&60u32.to_ne_bytes());
        let text = b"Unknown device type\0";
        let len = (4 + text.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&1u16.to_ne_bytes());
        payload.extend_from_slice(text);
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).as_deref(),
            Some("Unknown device type")
        );
        assert_eq!(extack_message(NLM_F_CAPPED, &payload), None);
        // Uncapped: the whole 20-byte request is echoed before the attributes.
        let mut uncapped = vec![0u8; 20];
        uncapped[..4].copy_from_slice(&20u32.to_ne_bytes());
        uncapped.extend_from_slice(&payload[16..]);
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS, &uncapped).as_deref(),
            Some("Unknown device type")
        );
    }

    #[test]
    fn errors_name_the_request_the_errno_and_the_hint() {
        let e = Error {
            op: "adding 10.0.0.1/32 to lo".into(),
            kind: ErrorKind::Kernel {
                errno: Errno::EEXIST,
                message: None,
                hint: None,
            },
        }
        .hinted(|_| Some("it is there already".into()));
        assert_eq!(
            e.to_string(),
            "adding 10.0.0.1/32 to lo: the kernel answered EEXIST (File exists); it is there \
             already"
        );
        assert_eq!(e.errno(), Some(Errno::EEXIST));
        let denied = Error {
            op: "setting lo up".into(),
            kind: ErrorKind::Kernel {
                errno: Errno::EPERM,
                message: None,
                hint: common_hint(Errno::EPERM),
            },
        };
        assert!(denied.to_string().contains("run as root"), "{denied}");
    }
}
