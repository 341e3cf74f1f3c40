//! Interfaces, addresses and routes of the calling thread's network namespace, through
//! route netlink (`ricochet-netlink`).
use std::net::IpAddr;

use crate::ServerError;
pub(crate) use ricochet_netlink::host_prefix;

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr {
    pub addr: IpAddr,
    pub prefix: u8,
    /// Scope global (not link-local or host).
    pub global: bool,
}

/// The ifindex of `name`, or [`ServerError::NoSuchInterface`].
pub(crate) fn require(name: &str) -> Result<u32, ServerError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| ServerError::NoSuchInterface(name.to_owned()))
}

/// Whether `name` exists.
pub(crate) fn exists(name: &str) -> bool {
    require(name).is_ok()
}

/// MTU and state of `name`.
pub(crate) fn link(name: &str) -> anyhow::Result<ricochet_netlink::Link> {
    require(name)?;
    Ok(ricochet_netlink::link_by_name(name)?)
}

/// The addresses of `dev`.
pub(crate) fn addresses(dev: &str) -> anyhow::Result<Vec<Addr>> {
    require(dev)?;
    Ok(ricochet_netlink::addresses(dev)?
        .into_iter()
        .map(|a| Addr {
            addr: a.addr,
            prefix: a.prefix,
            global: a.scope == ricochet_netlink::Scope::Global,
        })
        .collect())
}

/// Whether `ip` is one of `dev`'s addresses (any prefix length).
pub(crate) fn has_address(dev: &str, ip: IpAddr) -> anyhow::Result<bool> {
    Ok(addresses(dev)?.iter().any(|a| a.addr == ip))
}

/// The command that puts `ip` on `dev` as a host address (IPv6 without duplicate address
/// detection, so the address is usable at once).
pub(crate) fn add_address_command(dev: &str, ip: IpAddr) -> String {
    let nodad = if ip.is_ipv6() { " nodad" } else { "" };
    let fam = if ip.is_ipv6() { "-6 " } else { "" };
    format!("ip {fam}addr add {ip}/{} dev {dev}{nodad}", host_prefix(ip))
}

/// Adds `ip` as a host address to `dev` (IPv6 without duplicate address detection).
pub(crate) fn add_address(dev: &str, ip: IpAddr) -> anyhow::Result<()> {
    Ok(ricochet_netlink::add_address(dev, ip, host_prefix(ip))?)
}

/// Removes `ip/prefix` from `dev`.
pub(crate) fn del_address(dev: &str, ip: IpAddr, prefix: u8) -> anyhow::Result<()> {
    Ok(ricochet_netlink::delete_address(dev, ip, prefix)?)
}

/// Sets `dev` administratively up or down.
pub(crate) fn set_up(dev: &str, up: bool) -> anyhow::Result<()> {
    Ok(ricochet_netlink::set_link_up(dev, up)?)
}

/// The interface tunnel packets arrive on: `given`, else `recorded` (from an earlier setup),
/// else the default route's. Fails naming the interface if it does not exist.
pub(crate) fn resolve(given: Option<&str>, recorded: Option<&str>) -> anyhow::Result<String> {
    let name = match given.or(recorded) {
        Some(n) => n.to_owned(),
        None => ricochet_netlink::default_route_interface()?.ok_or(ServerError::NoDefaultRoute)?,
    };
    require(&name)?;
    Ok(name)
}

/// Whether `ip` lies in `net/prefix` (same family only).
pub(crate) fn in_prefix(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    fn masked(bytes: &[u8], prefix: u8) -> Vec<u8> {
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bits = (usize::from(prefix)).saturating_sub(i * 8).min(8);
                if bits == 0 {
                    0
                } else {
                    b & (0xffu8 << (8 - bits))
                }
            })
            .collect()
    }
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            masked(&n.octets(), prefix) == masked(&i.octets(), prefix)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            masked(&n.octets(), prefix) == masked(&i.octets(), prefix)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_prefix(ip("192.168.33.0"), 24, ip("192.168.33.241")));
        assert!(!in_prefix(ip("192.168.33.0"), 24, ip("192.168.35.241")));
        assert!(in_prefix(ip("192.168.32.0"), 22, ip("192.168.35.241")));
        assert!(in_prefix(ip("fc00::"), 64, ip("fc00::24a")));
        assert!(!in_prefix(ip("fc00::"), 64, ip("fc00:3::24a")));
        assert!(!in_prefix(ip("fc00::"), 0, ip("10.0.0.1")));
        assert!(in_prefix(ip("0.0.0.0"), 0, ip("10.0.0.1")));
    }

    #[test]
    fn add_commands() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            add_address_command("lo", ip("192.168.35.241")),
            "ip addr add 192.168.35.241/32 dev lo"
        );
        assert_eq!(
            add_address_command("lo", ip("fc00:3::24a")),
            "ip -6 addr add fc00:3::24a/128 dev lo nodad"
        );
    }
}
