//! Host network facts the engine needs: interface addresses and per-interface sysctls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context as _};

/// Global-scope addresses of `iface`, from `ip -j addr show` (iproute2).
pub fn interface_addrs(iface: &str) -> anyhow::Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>)> {
    let out = std::process::Command::new("ip")
        .args(["-j", "addr", "show", "dev", iface])
        .output()
        .context("running `ip -j addr show` (iproute2 is required)")?;
    if !out.status.success() {
        bail!(
            "interface {iface}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `ip -j addr` output")?;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] != "global" {
                continue;
            }
            match a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                Some(IpAddr::V4(x)) => v4.push(x),
                Some(IpAddr::V6(x)) => v6.push(x),
                None => {}
            }
        }
    }
    Ok((v4, v6))
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
