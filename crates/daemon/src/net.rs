//! Host network facts the engine needs: interface addresses and per-interface sysctls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context as _};

/// Global-scope addresses of `iface`, in the kernel's order (`getifaddrs(3)`).
///
/// The scope is the one the kernel gives an address by default: IPv4 loopback addresses
/// (127.0.0.0/8) are host-scoped, IPv6 ones by their type (`::1` host, `fe80::/10` link,
/// `fec0::/10` site); every other address is global.
pub fn interface_addrs(iface: &str) -> anyhow::Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>)> {
    let addrs = nix::ifaddrs::getifaddrs()
        .with_context(|| format!("listing the addresses of {iface} (getifaddrs)"))?;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in addrs.filter(|a| a.interface_name == iface) {
        let Some(address) = a.address else { continue };
        if let Some(sin) = address.as_sockaddr_in() {
            if is_global_v4(sin.ip()) {
                v4.push(sin.ip());
            }
        } else if let Some(sin6) = address.as_sockaddr_in6() {
            if is_global_v6(sin6.ip()) {
                v6.push(sin6.ip());
            }
        }
    }
    Ok((v4, v6))
}

/// The networks of `iface`'s addresses (address and prefix length), IPv4 and IPv6: the
/// segments whose hosts the engine reaches without a router.
pub fn interface_networks(iface: &str) -> anyhow::Result<Vec<(IpAddr, u8)>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .with_context(|| format!("listing the addresses of {iface} (getifaddrs)"))?;
    let mut out = Vec::new();
    for a in addrs.filter(|a| a.interface_name == iface) {
        let (Some(address), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        if let (Some(ip), Some(m)) = (address.as_sockaddr_in(), mask.as_sockaddr_in()) {
            out.push((IpAddr::V4(ip.ip()), u32::from(m.ip()).count_ones() as u8));
        } else if let (Some(ip), Some(m)) = (address.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            out.push((IpAddr::V6(ip.ip()), u128::from(m.ip()).count_ones() as u8));
        }
    }
    Ok(out)
}

/// Whether `ip` is in the network `net/prefix`.
pub fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_global_v4(a: Ipv4Addr) -> bool {
    !a.is_loopback()
}

fn is_global_v6(a: Ipv6Addr) -> bool {
    let site_local = (a.segments()[0] & 0xffc0) == 0xfec0;
    !a.is_loopback() && !a.is_unicast_link_local() && !site_local && !a.is_unspecified()
}

pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(iface)?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface named {iface:?}");
    }
    Ok(i)
}

fn write_sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("setting {path} = {value}"))
}

/// bpf_fib_lookup answers only for interfaces with forwarding on: the engine routes
/// encapsulated packets, so it enables forwarding on its own interface (only there).
pub fn enable_forwarding(iface: &str, v4: bool, v6: bool) -> anyhow::Result<()> {
    if v4 {
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"), "1")?;
    }
    if v6 {
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"), "1")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_kernel_defaults() {
        assert!(is_global_v4("10.0.0.1".parse().unwrap()));
        assert!(is_global_v4("192.168.33.7".parse().unwrap()));
        assert!(!is_global_v4("127.0.0.1".parse().unwrap()));
        assert!(!is_global_v4("127.1.2.3".parse().unwrap()));
        assert!(is_global_v6("fc00::7".parse().unwrap()));
        assert!(is_global_v6("2001:db8::1".parse().unwrap()));
        for local in ["::1", "fe80::1", "febf::1", "fec0::1", "feff::1", "::"] {
            assert!(!is_global_v6(local.parse().unwrap()), "{local}");
        }
    }

    fn ip(args: &str) {
        let out = std::process::Command::new("ip")
            .args(args.split(' '))
            .output()
            .expect("running ip (iproute2)");
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// In a network namespace of the test thread's own (it ends with the thread): a
    /// veth with two IPv4 and two IPv6 addresses, one of them link-local.
    #[test]
    fn the_global_addresses_of_an_interface_in_order() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): this test needs root (CAP_SYS_ADMIN)");
            ip("link add rcnet0 type veth peer name rcnet1");
            ip("addr add 10.9.0.2/24 dev rcnet0");
            ip("addr add 10.9.1.2/24 dev rcnet0");
            ip("addr add 2001:db8:9::2/64 dev rcnet0 nodad");
            ip("addr add fe80::2/64 dev rcnet0 nodad");
            ip("link set rcnet0 up");
            ip("link set lo up");
            let (v4, v6) = interface_addrs("rcnet0").unwrap();
            assert_eq!(
                v4,
                [
                    "10.9.0.2".parse::<Ipv4Addr>().unwrap(),
                    "10.9.1.2".parse().unwrap()
                ]
            );
            assert_eq!(v6, ["2001:db8:9::2".parse::<Ipv6Addr>().unwrap()]);
            // lo holds 127.0.0.1 and ::1 only: nothing global.
            assert_eq!(interface_addrs("lo").unwrap(), (vec![], vec![]));
            assert_eq!(interface_addrs("nosuch0").unwrap(), (vec![], vec![]));
        })
        .join()
        .unwrap();
    }
}

#[cfg(test)]
mod network_tests {
    use super::in_network;

    #[test]
    fn addresses_are_in_their_networks_only() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(in_network(ip("192.168.33.10"), ip("192.168.33.7"), 24));
        assert!(!in_network(ip("192.168.34.10"), ip("192.168.33.7"), 24));
        assert!(in_network(ip("10.1.2.3"), ip("10.200.0.1"), 8));
        assert!(in_network(ip("1.2.3.4"), ip("9.9.9.9"), 0));
        assert!(in_network(ip("fc00::10"), ip("fc00::7"), 64));
        assert!(!in_network(ip("fc00:34::10"), ip("fc00::7"), 64));
        assert!(
            !in_network(ip("fc00::10"), ip("192.168.33.7"), 24),
            "families differ"
        );
        assert!(in_network(ip("fc00::7"), ip("fc00::7"), 128));
        assert!(!in_network(ip("fc00::8"), ip("fc00::7"), 128));
    }
}
