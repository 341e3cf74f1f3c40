//! Host network facts the engine needs: interface addresses and per-interface sysctls.

use std::net::{Ipv4Addr, Ipv6Addr};

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
