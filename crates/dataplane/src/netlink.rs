//! Route netlink queries the data plane needs about interfaces: their kind, their XDP
//! attachment, a veth's peer (and the namespace it lives in).
//!
//! Every call opens a netlink socket in the calling thread's network namespace.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{anyhow, bail, Context as _};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
    nsid::{NsidAttribute, NsidMessage},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Which XDP programs an interface runs (`IFLA_XDP`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpState {
    /// The program attached in the driver (native mode).
    pub native: Option<u32>,
    /// The program attached in the generic (skb) path.
    pub generic: Option<u32>,
    /// The program offloaded to the hardware.
    pub offloaded: Option<u32>,
}

impl XdpState {
    pub fn is_empty(&self) -> bool {
        *self == XdpState::default()
    }
}

/// What netlink says about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `veth`, `bridge`, ... (`IFLA_INFO_KIND`); `None` for physical devices and `lo`.
    pub kind: Option<String>,
    pub xdp: XdpState,
    /// The ifindex of the other end (`IFLA_LINK`): for a veth, its peer.
    pub link: Option<u32>,
    /// The namespace of that other end when it is not this one (`IFLA_LINK_NETNSID`, an id
    /// relative to the namespace that asked).
    pub link_netnsid: Option<i32>,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        xdp: XdpState::default(),
        link: None,
        link_netnsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Link(index) if index != 0 => link.link = Some(index),
            LinkAttribute::LinkNetNsId(id) if id >= 0 => link.link_netnsid = Some(id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(match kind {
                            InfoKind::Veth => "veth".to_owned(),
                            other => other.to_string(),
                        });
                    }
                }
            }
            LinkAttribute::Xdp(xdp) => link.xdp = parse_xdp(&xdp),
            _ => {}
        }
    }
    link
}

fn parse_xdp(attrs: &[LinkXdp]) -> XdpState {
    let mut state = XdpState::default();
    let mut attached = None;
    let mut single = None;
    for a in attrs {
        match a {
            LinkXdp::Attached(mode) => attached = Some(*mode),
            LinkXdp::ProgId(id) if *id != 0 => single = Some(*id),
            LinkXdp::DrvProgId(id) if *id != 0 => state.native = Some(*id),
            LinkXdp::SkbProgId(id) if *id != 0 => state.generic = Some(*id),
            LinkXdp::HwProgId(id) if *id != 0 => state.offloaded = Some(*id),
            _ => {}
        }
    }
    // With one program, the kernel gives its mode and IFLA_XDP_PROG_ID only.
    match attached {
        Some(XdpAttached::Driver) => state.native = state.native.or(single),
        Some(XdpAttached::SocketBuffer) => state.generic = state.generic.or(single),
        Some(XdpAttached::Hardware) => state.offloaded = state.offloaded.or(single),
        _ => {}
    }
    state
}

/// Sends one request and collects the answers (all parts of a dump).
fn request(msg: RouteNetlinkMessage, flags: u16) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a route netlink socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the netlink socket")?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = NLM_F_REQUEST | flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).context("sending a netlink request")?;
    let dump = flags & NLM_F_DUMP != 0;
    let mut answers = Vec::new();
    loop {
        let (data, _) = socket
            .recv_from_full()
            .context("receiving a netlink answer")?;
        let mut offset = 0;
        while offset < data.len() {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&data[offset..])
                    .map_err(|e| anyhow!("decoding a netlink answer: {e}"))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::Error(e) => match e.code {
                    Some(_) => return Err(e.to_io().into()),
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

fn one_link(mut msg: LinkMessage, what: &str) -> anyhow::Result<Link> {
    msg.header.interface_family = netlink_packet_route::AddressFamily::Unspec;
    let answers = request(RouteNetlinkMessage::GetLink(msg), 0).map_err(|e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.raw_os_error())
        {
            Some(libc::ENODEV) => anyhow!("no interface {what} in this network namespace"),
            _ => e.context(format!("asking netlink about interface {what}")),
        }
    })?;
    answers
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
            _ => None,
        })
        .ok_or_else(|| anyhow!("netlink gave no answer about interface {what}"))
}

/// The interface named `name` in this namespace.
pub fn link_by_name(name: &str) -> anyhow::Result<Link> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    one_link(msg, name)
}

/// The interface with index `index` in this namespace, or with `netnsid` in the namespace
/// that has this id here (`IFLA_TARGET_NETNSID`, Linux 4.20+).
pub fn link_by_index(index: u32, netnsid: Option<i32>) -> anyhow::Result<Link> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if let Some(id) = netnsid {
        msg.attributes.push(LinkAttribute::IfNetnsId(id));
    }
    let what = match netnsid {
        Some(id) => format!("#{index} (in the namespace with id {id})"),
        None => format!("#{index}"),
    };
    one_link(msg, &what)
}

/// Every interface of this namespace.
pub fn links() -> anyhow::Result<Vec<Link>> {
    let answers = request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
    )
    .context("listing interfaces through netlink")?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
            _ => None,
        })
        .collect())
}

/// The id this namespace gives the network namespace `ns` (a `/proc/PID/ns/net` or
/// `/run/netns/NAME` descriptor), if it gave it one.
pub fn nsid_of(ns: BorrowedFd<'_>) -> anyhow::Result<Option<i32>> {
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(ns.as_raw_fd() as u32));
    let answers = request(RouteNetlinkMessage::GetNsId(msg), 0)
        .context("asking netlink for a namespace id")?;
    for m in answers {
        if let RouteNetlinkMessage::NewNsId(m) = m {
            for a in m.attributes {
                if let NsidAttribute::Id(id) = a {
                    return Ok((id >= 0).then_some(id));
                }
            }
        }
    }
    bail!("netlink answered RTM_GETNSID without an id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_by_name_and_index() {
        let lo = link_by_name("lo").expect("lo");
        assert_eq!(lo.index, 1);
        assert_eq!(lo.kind, None);
        assert_eq!(link_by_index(1, None).unwrap().name, "lo");
        assert!(links().unwrap().iter().any(|l| l.name == "lo"));
        let e = link_by_name("no-such-if0").unwrap_err().to_string();
        assert!(e.contains("no interface no-such-if0"), "{e}");
    }

    #[test]
    fn xdp_attributes_of_one_and_several_programs() {
        let one = parse_xdp(&[LinkXdp::Attached(XdpAttached::Driver), LinkXdp::ProgId(7)]);
        assert_eq!(one.native, Some(7));
        assert_eq!(one.generic, None);
        let multi = parse_xdp(&[
            LinkXdp::Attached(XdpAttached::Multiple),
            LinkXdp::DrvProgId(3),
            LinkXdp::SkbProgId(4),
        ]);
        assert_eq!((multi.native, multi.generic), (Some(3), Some(4)));
        assert!(parse_xdp(&[LinkXdp::Attached(XdpAttached::None)]).is_empty());
    }
}
