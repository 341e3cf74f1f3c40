//! The persistent configuration of the seed blog post ("Configure the servers"): netplan's
//! `lo` addresses and `tunl0`/`ip6tnl0` tunnels, and the `sysctl.conf` lines, for a set of
//! VIPs. For hosts whose kernel has the `ipip` and `ip6_tunnel` modules; elsewhere
//! [`crate::setup`] (the eBPF decapsulator) is the way.
use std::{fmt::Write as _, net::IpAddr};

use crate::{iface::host_prefix, kernel, sysctl, ServerSpec};

/// The `sysctl.conf` lines for `spec`: `rp_filter` off where the kernel checks it, and the
/// LVS-DR ARP settings (`arp_ignore=1`, `arp_announce=2`) for `all` and the interface, as
/// [`crate::setup`] sets them; all of them IPv4 only. The seed also sets `ip_forward` and
/// IPv6 forwarding; they are not needed for DSR and appear as comments only.
pub fn sysctl_conf(spec: &ServerSpec) -> String {
    let mut out = String::new();
    if spec.vips.iter().any(IpAddr::is_ipv4) {
        let mut devs = vec!["all", "lo", kernel::TUNL];
        if let Some(i) = spec.interface.as_deref() {
            devs.push(i);
        }
        for dev in devs {
            let _ = writeln!(out, "{}=0", sysctl::conf_key("ipv4", dev, "rp_filter"));
        }
        out.push_str(
            "# Never answer ARP for the VIPs on lo, never use a VIP as the sender of an ARP request:\n",
        );
        let mut devs = vec!["all"];
        devs.extend(spec.interface.as_deref());
        for (name, value) in [("arp_ignore", 1), ("arp_announce", sysctl::ARP_ANNOUNCE)] {
            for dev in &devs {
                let _ = writeln!(out, "{}={value}", sysctl::conf_key("ipv4", dev, name));
            }
        }
    }
    out.push_str("# The seed also sets net.ipv4.ip_forward=1");
    if spec.vips.iter().any(IpAddr::is_ipv6) {
        out.push_str(" and net.ipv6.conf.all.forwarding=1");
    }
    out.push_str(":\n# a DSR server only answers, it forwards nothing, so they are not needed.\n");
    out
}

/// The netplan document for `spec`: the VIPs on `lo`, and `tunl0` (mode `ipip`) and
/// `ip6tnl0` (mode `ip6ip6`) with the VIPs, `local` being this server's address of the
/// family from `server_addrs` (a placeholder when there is none).
pub fn netplan_yaml(spec: &ServerSpec, server_addrs: &[IpAddr]) -> String {
    let mut out = String::from(
        "network:\n    version: 2\n    ethernets:\n        lo:\n            dhcp4: false\n",
    );
    out.push_str("            addresses:\n");
    for vip in &spec.vips {
        let _ = writeln!(out, "                - {vip}/{}", host_prefix(*vip));
    }
    let tunnels: Vec<(bool, Vec<IpAddr>)> = [false, true]
        .into_iter()
        .map(|v6| {
            (
                v6,
                spec.vips
                    .iter()
                    .copied()
                    .filter(|ip| ip.is_ipv6() == v6)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, vips)| !vips.is_empty())
        .collect();
    if !tunnels.is_empty() {
        out.push_str("    tunnels:\n");
    }
    for (v6, vips) in tunnels {
        let (dev, mode, remote, placeholder) = if v6 {
            (kernel::IP6TNL, "ip6ip6", "::0", "SERVER_IPV6")
        } else {
            (kernel::TUNL, "ipip", "0.0.0.0", "SERVER_IPV4")
        };
        let local = server_addrs.iter().find(|a| a.is_ipv6() == v6);
        let _ = writeln!(out, "        {dev}:\n            mode: {mode}");
        match local {
            Some(a) => {
                let _ = writeln!(out, "            local: {a}");
            }
            None => {
                let _ = writeln!(out, "            local: {placeholder}  # this server's address on the tunnel-facing interface");
            }
        }
        let _ = writeln!(out, "            remote: {remote}\n            addresses:");
        for vip in vips {
            let _ = writeln!(out, "                - {vip}/{}", host_prefix(vip));
        }
    }
    out
}

/// Both, as the seed presents them: the `sysctl.conf` lines, then the netplan section, each
/// headed by a comment saying where it goes.
pub fn netplan_and_sysctl(spec: &ServerSpec, server_addrs: &[IpAddr]) -> String {
    let vips: Vec<String> = spec.vips.iter().map(ToString::to_string).collect();
    format!(
        "# Ricochet L3 DSR server configuration for VIPs {vips}\n\
         #\n\
         # Add to /etc/sysctl.conf (or /etc/sysctl.d/90-ricochet-dsr.conf), then run `sysctl --system`:\n\
         {sysctl}\
         #\n\
         # /etc/netplan/90-ricochet-dsr.yaml (merged with your other netplan files), then run `netplan apply`.\n\
         # The tunnels need the kernel's ipip and ip6_tunnel modules; without them, run\n\
         # `ricochet server setup` (Ricochet's eBPF decapsulator) instead of the tunnels section.\n\
         {yaml}",
        vips = vips.join(", "),
        sysctl = sysctl_conf(spec),
        yaml = netplan_yaml(spec, server_addrs),
    )
}
