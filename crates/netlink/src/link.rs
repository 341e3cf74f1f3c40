//! Interfaces: lookup by name or index, state and MTU, XDP attachments, a veth's peer (and
//! the namespace it lives in); setting one up or down, creating a tunnel, deleting one.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::{
    link::{
        InfoData, InfoIpTunnel, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp,
        XdpAttached,
    },
    nsid::{NsidAttribute, NsidMessage},
    IpProtocol, RouteNetlinkMessage,
};

use crate::{request, Errno, Error, Result};

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
    /// The MTU (`IFLA_MTU`); 0 if the kernel gave none.
    pub mtu: u32,
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
        mtu: 0,
        kind: None,
        xdp: XdpState::default(),
        link: None,
        link_netnsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
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

fn one_link(mut msg: LinkMessage, what: &str) -> Result<Link> {
    msg.header.interface_family = netlink_packet_route::AddressFamily::Unspec;
    let op = || format!("looking up interface {what}");
    let answers = request(&op, RouteNetlinkMessage::GetLink(msg), 0).map_err(|e| {
        e.hinted(|errno| {
            (errno == Errno::ENODEV).then(|| {
                "no interface of that name or index in this network namespace (`ip link` \
                 lists them)"
                    .to_owned()
            })
        })
    })?;
    answers
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
            _ => None,
        })
        .ok_or_else(|| Error::answer(op(), "the kernel gave no answer"))
}

/// The interface named `name` in this namespace.
pub fn link_by_name(name: &str) -> Result<Link> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    one_link(msg, name)
}

/// The interface with index `index` in this namespace, or with `netnsid` in the namespace
/// that has this id here (`IFLA_TARGET_NETNSID`, Linux 4.20+).
pub fn link_by_index(index: u32, netnsid: Option<i32>) -> Result<Link> {
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
pub fn links() -> Result<Vec<Link>> {
    let answers = request(
        &|| "listing interfaces".to_owned(),
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
    )?;
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
pub fn nsid_of(ns: BorrowedFd<'_>) -> Result<Option<i32>> {
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(ns.as_raw_fd() as u32));
    let op = || "asking for a network namespace's id".to_owned();
    let answers = request(&op, RouteNetlinkMessage::GetNsId(msg), 0)?;
    for m in answers {
        if let RouteNetlinkMessage::NewNsId(m) = m {
            for a in m.attributes {
                if let NsidAttribute::Id(id) = a {
                    return Ok((id >= 0).then_some(id));
                }
            }
        }
    }
    Err(Error::answer(
        op(),
        "the kernel answered RTM_GETNSID without an id",
    ))
}

/// The interface `name`, or an error saying it is not in this namespace.
pub(crate) fn index_of(name: &str, op: &dyn Fn() -> String) -> Result<u32> {
    link_by_name(name)
        .map(|l| l.index)
        .map_err(|e| match e.errno() {
            Some(Errno::ENODEV) => Error::answer(
                op(),
                format!("there is no interface {name} in this network namespace"),
            ),
            _ => e,
        })
}

/// Sets interface `name` administratively up or down (`ip link set dev NAME up|down`).
pub fn set_link_up(name: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    let op = || format!("setting interface {name} {state}");
    let mut msg = LinkMessage::default();
    msg.header.index = index_of(name, &op)?;
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
    request(&op, RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)?;
    Ok(())
}

/// Deletes interface `name` (`ip link del dev NAME`).
pub fn delete_link(name: &str) -> Result<()> {
    let op = || format!("deleting interface {name}");
    let mut msg = LinkMessage::default();
    msg.header.index = index_of(name, &op)?;
    request(&op, RouteNetlinkMessage::DelLink(msg), NLM_F_ACK).map_err(|e| {
        e.hinted(|errno| {
            (errno == Errno::EOPNOTSUPP).then(|| {
                "the kernel does not let this interface be deleted (a module's fallback \
                 device goes with its module)"
                    .to_owned()
            })
        })
    })?;
    Ok(())
}

/// A tunnel device [`create_tunnel`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// IPv4 in IPv4 (`type ipip`, module `ipip`).
    IpIp,
    /// IPv6 in IPv6 (`type ip6tnl mode ip6ip6`, module `ip6_tunnel`).
    Ip6Ip6,
}

/// Creates the tunnel device `name` of type `kind`, with no fixed endpoints, so that it
/// receives every packet of its kind that no other tunnel claims (`ip link add name NAME
/// type ipip`, or `type ip6tnl mode ip6ip6`).
pub fn create_tunnel(name: &str, kind: Tunnel) -> Result<()> {
    let (info_kind, module, shown) = match kind {
        Tunnel::IpIp => (InfoKind::IpIp, "ipip", "ipip"),
        Tunnel::Ip6Ip6 => (InfoKind::Ip6Tnl, "ip6_tunnel", "ip6tnl mode ip6ip6"),
    };
    let op = || format!("creating tunnel {name} (type {shown})");
    let mut info = vec![LinkInfo::Kind(info_kind)];
    if kind == Tunnel::Ip6Ip6 {
        info.push(LinkInfo::Data(InfoData::IpTunnel(vec![
            InfoIpTunnel::Protocol(IpProtocol::Ipv6),
        ])));
    }
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    request(
        &op,
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(|e| {
        e.hinted(|errno| match errno {
            Errno::EEXIST => Some(format!("an interface named {name} exists already")),
            Errno::EOPNOTSUPP => Some(format!(
                "this kernel has no {module} module: load it (`modprobe {module}`) or use \
                 Ricochet's eBPF decapsulator"
            )),
            _ => None,
        })
    })?;
    Ok(())
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
        assert!(lo.up && lo.mtu > 0, "{lo:?}");
        let e = link_by_name("no-such-if0").unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENODEV));
        let e = e.to_string();
        assert!(
            e.starts_with(
                "looking up interface no-such-if0: the kernel answered ENODEV (No such device)"
            ),
            "{e}"
        );
        assert!(e.contains("no interface of that name"), "{e}");
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
