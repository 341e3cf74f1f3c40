//! The addresses of an interface: list, add, delete (`ip addr show|add|del dev NAME`).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
    AddressFamily, RouteNetlinkMessage,
};

use crate::{link::index_of, request, Errno, Result};

/// How far an address is valid (`ifa_scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Valid everywhere (`scope global`).
    Global,
    /// On this link only (IPv6 `fe80::/10`, `scope link`).
    Link,
    /// On this host only (`127.0.0.1`, `::1`; `scope host`).
    Host,
    /// Another scope (site, nowhere, a number).
    Other,
}

/// One address of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix: u8,
    pub scope: Scope,
}

/// The host prefix length of `ip`'s family: 32 or 128.
pub fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The addresses of interface `dev`, IPv4 and IPv6, in the kernel's order.
pub fn addresses(dev: &str) -> Result<Vec<Address>> {
    let op = || format!("listing the addresses of {dev}");
    let index = index_of(dev, &op)?;
    let answers = request(
        &op,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
    )?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => parse(a),
            _ => None,
        })
        .collect())
}

fn parse(msg: AddressMessage) -> Option<Address> {
    // IPv4 gives the interface's own address as IFA_LOCAL (IFA_ADDRESS is the peer's on a
    // point-to-point link); IPv6 gives IFA_ADDRESS only.
    let mut local = None;
    let mut address = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            _ => {}
        }
    }
    Some(Address {
        addr: local.or(address)?,
        prefix: msg.header.prefix_len,
        scope: match msg.header.scope {
            AddressScope::Universe => Scope::Global,
            AddressScope::Link => Scope::Link,
            AddressScope::Host => Scope::Host,
            _ => Scope::Other,
        },
    })
}

fn message(index: u32, ip: IpAddr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    msg
}

/// Adds `ip/prefix` to interface `dev`, scope global; an IPv6 address without duplicate
/// address detection (`nodad`), so that it is usable at once. Fails with `EEXIST` when the
/// address is there already.
pub fn add_address(dev: &str, ip: IpAddr, prefix: u8) -> Result<()> {
    let op = || format!("adding {ip}/{prefix} to {dev}");
    let index = index_of(dev, &op)?;
    let mut msg = message(index, ip, prefix);
    if ip.is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    request(
        &op,
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(|e| {
        e.hinted(|errno| match errno {
            Errno::EEXIST => Some(format!(
                "{ip} is on {dev} already (`ip addr show dev {dev}`): leave it, or remove it \
                 first to change its prefix length"
            )),
            Errno::EINVAL => Some(format!("{prefix} is not a valid prefix length for {ip}")),
            _ => None,
        })
    })?;
    Ok(())
}

/// Removes `ip/prefix` from interface `dev`. Fails with `EADDRNOTAVAIL` when the address is
/// not there.
pub fn delete_address(dev: &str, ip: IpAddr, prefix: u8) -> Result<()> {
    let op = || format!("removing {ip}/{prefix} from {dev}");
    let index = index_of(dev, &op)?;
    request(
        &op,
        RouteNetlinkMessage::DelAddress(message(index, ip, prefix)),
        NLM_F_ACK,
    )
    .map_err(|e| {
        e.hinted(|errno| {
            (errno == Errno::EADDRNOTAVAIL).then(|| {
                format!(
                    "{ip}/{prefix} is not on {dev} (`ip addr show dev {dev}` lists what is): \
                     removed already?"
                )
            })
        })
    })?;
    Ok(())
}
