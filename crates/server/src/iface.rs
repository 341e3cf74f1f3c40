//! Interfaces, addresses and routes of the calling thread's network namespace, through
//! `ip -j` (iproute2's JSON output).
use std::net::IpAddr;

use crate::{cmd, ServerError};
use anyhow::Context as _;

/// One interface.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr {
    pub addr: IpAddr,
    pub prefix: u8,
    /// Scope global (not link-local or host).
    pub global: bool,
}

/// The host prefix length of `ip`'s family: 32 or 128.
pub(crate) fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
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
pub(crate) fn link(name: &str) -> anyhow::Result<Link> {
    require(name)?;
    let v = cmd::ip_json(&["link", "show", "dev", name])?;
    let l = v
        .get(0)
        .with_context(|| format!("`ip -j link show dev {name}` printed no interface"))?;
    let mtu = l["mtu"]
        .as_u64()
        .with_context(|| format!("no MTU for interface {name}"))?;
    let up = l["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP")));
    Ok(Link {
        mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
        up,
    })
}

/// The addresses of `dev`.
pub(crate) fn addresses(dev: &str) -> anyhow::Result<Vec<Addr>> {
    require(dev)?;
    let v = cmd::ip_json(&["addr", "show", "dev", dev])?;
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(prefix)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            let Ok(addr) = local.parse::<IpAddr>() else {
                continue;
            };
            out.push(Addr {
                addr,
                prefix: u8::try_from(prefix).unwrap_or(0),
                global: a["scope"].as_str() == Some("global"),
            });
        }
    }
    Ok(out)
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

/// Adds `ip` as a host address to `dev`.
pub(crate) fn add_address(dev: &str, ip: IpAddr) -> anyhow::Result<()> {
    let cidr = format!("{ip}/{}", host_prefix(ip));
    let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
    if ip.is_ipv6() {
        args.push("nodad");
    }
    cmd::run("ip", &args).with_context(|| format!("adding VIP {ip} to {dev}"))?;
    Ok(())
}

/// Removes `ip/prefix` from `dev`.
pub(crate) fn del_address(dev: &str, ip: IpAddr, prefix: u8) -> anyhow::Result<()> {
    let cidr = format!("{ip}/{prefix}");
    cmd::run("ip", &["addr", "del", &cidr, "dev", dev])
        .with_context(|| format!("removing VIP {ip} from {dev}"))?;
    Ok(())
}

/// Sets `dev` administratively up or down.
pub(crate) fn set_up(dev: &str, up: bool) -> anyhow::Result<()> {
    let state = if up { "up" } else { "down" };
    cmd::run("ip", &["link", "set", "dev", dev, state])
        .with_context(|| format!("setting interface {dev} {state}"))?;
    Ok(())
}

/// The interface of the default route, IPv4 first, then IPv6.
pub(crate) fn default_route_interface() -> anyhow::Result<Option<String>> {
    for fam in ["-4", "-6"] {
        let v = cmd::ip_json(&[fam, "route", "show", "default"])?;
        if let Some(dev) = v
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|r| r["dev"].as_str())
        {
            return Ok(Some(dev.to_owned()));
        }
    }
    Ok(None)
}

/// The interface tunnel packets arrive on: `given`, else `recorded` (from an earlier setup),
/// else the default route's. Fails naming the interface if it does not exist.
pub(crate) fn resolve(given: Option<&str>, recorded: Option<&str>) -> anyhow::Result<String> {
    let name = match given.or(recorded) {
        Some(n) => n.to_owned(),
        None => default_route_interface()?.ok_or(ServerError::NoDefaultRoute)?,
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
