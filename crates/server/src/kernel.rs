//! Decapsulation by the kernel's own tunnels, as the seed configures it: the `ipip` module's
//! fallback device `tunl0` receives every IPIP packet no other tunnel claims, `ip6_tunnel`'s
//! `ip6tnl0` every IP6IP6 packet; the VIPs go on them as in the seed's netplan.
use std::{net::IpAddr, path::Path};

use ricochet_netlink::Tunnel;
use tracing::info;

use crate::{cmd, iface, setup::Apply, ServerError};

/// The IPv4-in-IPv4 fallback tunnel.
pub(crate) const TUNL: &str = "tunl0";
/// The IPv6 fallback tunnel.
pub(crate) const IP6TNL: &str = "ip6tnl0";

/// Module, device and tunnel type, per family.
pub(crate) fn tunnel(v6: bool) -> (&'static str, &'static str, Tunnel) {
    if v6 {
        ("ip6_tunnel", IP6TNL, Tunnel::Ip6Ip6)
    } else {
        ("ipip", TUNL, Tunnel::IpIp)
    }
}

/// Whether `module` is loaded or built in.
pub(crate) fn module_present(module: &str) -> bool {
    Path::new("/sys/module").join(module).exists()
}

/// Whether the kernel has the tunnel for one family; with `load`, tries `modprobe`.
fn have(v6: bool, load: bool) -> bool {
    let (module, dev, _) = tunnel(v6);
    if module_present(module) || iface::exists(dev) {
        return true;
    }
    load && cmd::run("modprobe", &["-q", module]).is_ok() && module_present(module)
}

/// Whether the kernel can decapsulate every family needed.
pub(crate) fn available(v4: bool, v6: bool, load: bool) -> bool {
    (!v4 || have(false, load)) && (!v6 || have(true, load))
}

/// Whether `dev` exists and is up.
pub(crate) fn tunnel_up(dev: &str) -> bool {
    iface::exists(dev) && iface::link(dev).is_ok_and(|l| l.up)
}

/// Creates (if needed) and sets up `tunl0`/`ip6tnl0` for the families of `vips` and puts
/// each VIP on its family's tunnel, recording every change.
pub(crate) fn ensure(vips: &[IpAddr], apply: &mut Apply<'_>) -> anyhow::Result<()> {
    for v6 in [false, true] {
        let fam: Vec<IpAddr> = vips
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv6() == v6)
            .collect();
        if fam.is_empty() {
            continue;
        }
        let (module, dev, kind) = tunnel(v6);
        if !have(v6, true) {
            return Err(ServerError::NoKernelTunnel {
                module,
                device: dev,
            }
            .into());
        }
        if !iface::exists(dev) {
            ricochet_netlink::create_tunnel(dev, kind)?;
            info!(dev, "tunnel created");
            apply.st.links_created.push(dev.to_owned());
            apply.changes.push(format!("created tunnel {dev}"));
        }
        apply.link_up(dev)?;
        for vip in fam {
            apply.address(dev, vip)?;
        }
    }
    Ok(())
}
