//! Decapsulation by the kernel's own tunnels, as the seed configures it: the `ipip` module's
//! fallback device `tunl0` receives every IPIP packet no other tunnel claims, `ip6_tunnel`'s
//! `ip6tnl0` every IP6IP6 packet; the VIPs go on them as in the seed's netplan. Where the
//! modules exist, GRE and GUE too: `ip_gre`'s `gre0` and `ip6_gre`'s `ip6gre0` take every
//! GRE packet, and a `fou` port hands the inner packet of UDP to the GUE port to the
//! IP-in-IP handler, hence to `tunl0`/`ip6tnl0` (GUE "variant 1": no GUE header).
use std::{net::IpAddr, path::Path};

use ricochet_netlink::Tunnel;
use tracing::info;

use crate::{cmd, iface, setup::Apply, state::FouPort, ServerError};

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

/// GRE's module and its fallback device, per family.
pub(crate) fn gre(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        ("ip6_gre", "ip6gre0")
    } else {
        ("ip_gre", "gre0")
    }
}

/// The `fou` module of a family.
pub(crate) fn fou_module(v6: bool) -> &'static str {
    if v6 {
        "fou6"
    } else {
        "fou"
    }
}

/// The `ip` arguments that add (or delete) a fou port handing UDP to `port` to the
/// family's IP-in-IP handler.
pub(crate) fn fou_args(add: bool, port: u16, v6: bool) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if v6 {
        args.push("-6".into());
    }
    args.extend(["fou".into(), if add { "add" } else { "del" }.into()]);
    args.extend(["port".into(), port.to_string()]);
    if add {
        args.extend(["ipproto".into(), if v6 { "41" } else { "4" }.into()]);
    }
    args
}

/// The ports of `ip [-6] fou show` output that hand UDP to the family's IP-in-IP
/// (lines such as `port 6080 ipproto 4`).
pub(crate) fn fou_ports(show: &str, v6: bool) -> Vec<u16> {
    let want = if v6 { "41" } else { "4" };
    show.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let port = words.iter().position(|w| *w == "port")?;
            let proto = words.iter().position(|w| *w == "ipproto")?;
            (words.get(proto + 1) == Some(&want))
                .then(|| words.get(port + 1)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The fou ports of a family now in place (none when `ip fou` cannot tell).
pub(crate) fn fou_ports_in_place(v6: bool) -> Vec<u16> {
    let args: Vec<&str> = if v6 {
        vec!["-6", "fou", "show"]
    } else {
        vec!["fou", "show"]
    };
    cmd::run("ip", &args)
        .map(|out| fou_ports(&out, v6))
        .unwrap_or_default()
}

/// Whether `module` is loaded or built in, or (`load`) can be loaded.
fn module_loadable(module: &str, load: bool) -> bool {
    module_present(module)
        || (load && cmd::run("modprobe", &["-q", module]).is_ok() && module_present(module))
}

/// Sets up what the kernel has for GRE and GUE of the families of `vips`: the GRE fallback
/// device up (with `rp_filter` off on `gre0`, as on `tunl0`), and a fou port for each of
/// `gue_ports`. What the kernel lacks is a warning, not a failure: IP-in-IP works without
/// them, and a server of GRE or GUE services needs `--decap ebpf` instead.
pub(crate) fn ensure_gre_gue(
    vips: &[IpAddr],
    gue_ports: &[u16],
    apply: &mut Apply<'_>,
) -> anyhow::Result<()> {
    for v6 in [false, true] {
        if !vips.iter().any(|ip| ip.is_ipv6() == v6) {
            continue;
        }
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let (module, dev) = gre(v6);
        if module_loadable(module, true) && iface::exists(dev) {
            apply.link_up(dev)?;
            if !v6 {
                apply.sysctl(&crate::sysctl::conf_key("ipv4", dev, "rp_filter"), "0")?;
            }
        } else {
            apply.warnings.push(format!(
                "{fam} GRE is not decapsulated: the kernel has no {dev} (module {module}); \
                 servers of GRE services need `--decap ebpf`"
            ));
        }
        let module = fou_module(v6);
        if !module_loadable(module, true) {
            apply.warnings.push(format!(
                "{fam} GUE is not decapsulated: the kernel has no fou (module {module}); \
                 servers of GUE services need `--decap ebpf`"
            ));
            continue;
        }
        let present = fou_ports_in_place(v6);
        for &port in gue_ports {
            if present.contains(&port) {
                continue;
            }
            let args = fou_args(true, port, v6);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cmd::run("ip", &args)?;
            info!(port, v6, "fou port added");
            apply.st.fou_ports.push(FouPort { port, v6 });
            apply.changes.push(format!(
                "{fam} GUE on UDP port {port} decapsulated by fou (`ip {}`)",
                args.join(" ")
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fou_commands_and_their_listing() {
        assert_eq!(
            fou_args(true, 6080, false).join(" "),
            "fou add port 6080 ipproto 4"
        );
        assert_eq!(
            fou_args(true, 7000, true).join(" "),
            "-6 fou add port 7000 ipproto 41"
        );
        assert_eq!(
            fou_args(false, 6080, true).join(" "),
            "-6 fou del port 6080"
        );
        let show = "port 6080 ipproto 4\nport 5555 gue\nport 7000 ipproto 4 local 10.0.0.1\nport 9 ipproto 41\n";
        assert_eq!(fou_ports(show, false), [6080, 7000]);
        assert_eq!(fou_ports(show, true), [9]);
        assert!(fou_ports("", false).is_empty());
    }
}
