//! `check`: what a DSR server needs, item by item, each problem with its fix.
use std::{fmt, net::IpAddr};

use serde::Serialize;

use crate::{
    ebpf, iface, kernel,
    state::{self, State},
    sysctl, DecapKind, DecapMode, ServerSpec,
};

/// How much a [`CheckItem`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// As needed.
    Ok,
    /// Worth knowing; not needed for DSR either way.
    Info,
    /// Works, but can break some traffic or later changes (MTU, unreachable pins).
    Warning,
    /// DSR does not work until this is fixed.
    Problem,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Problem => "PROBLEM",
        })
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// How much it matters.
    pub severity: Severity,
    /// What was found, naming the object (VIP, interface, sysctl).
    pub summary: String,
    /// How to fix it (problems and warnings), as a command where there is one.
    pub fix: Option<String>,
}

impl CheckItem {
    fn ok(summary: impl Into<String>) -> Self {
        Self {
            severity: Severity::Ok,
            summary: summary.into(),
            fix: None,
        }
    }
    fn info(summary: impl Into<String>) -> Self {
        Self {
            severity: Severity::Info,
            summary: summary.into(),
            fix: None,
        }
    }
    fn warning(summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
    fn problem(summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            severity: Severity::Problem,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The interface checked (where tunnel packets arrive).
    pub interface: String,
    /// The VIPs checked.
    pub vips: Vec<IpAddr>,
    /// The findings, in the order checked.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// True when no item is a [`Severity::Problem`]: the exit code of `ricochet server check`.
    pub fn is_ok(&self) -> bool {
        self.problems().next().is_none()
    }

    /// The problems.
    pub fn problems(&self) -> impl Iterator<Item = &CheckItem> {
        self.items
            .iter()
            .filter(|i| i.severity == Severity::Problem)
    }

    /// The items of severity `s`.
    pub fn with_severity(&self, s: Severity) -> impl Iterator<Item = &CheckItem> {
        self.items.iter().filter(move |i| i.severity == s)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vips: Vec<String> = self.vips.iter().map(ToString::to_string).collect();
        writeln!(
            f,
            "DSR server check: VIPs {} arriving on {}",
            vips.join(", "),
            self.interface
        )?;
        for item in &self.items {
            writeln!(f, "  {:<7}  {}", item.severity, item.summary)?;
            if let Some(fix) = &item.fix {
                writeln!(f, "  {:<7}  fix: {fix}", "")?;
            }
        }
        let problems = self.with_severity(Severity::Problem).count();
        let warnings = self.with_severity(Severity::Warning).count();
        if problems == 0 {
            write!(f, "ready for DSR ({warnings} warning(s))")
        } else {
            write!(
                f,
                "NOT ready for DSR: {problems} problem(s), {warnings} warning(s)"
            )
        }
    }
}

fn setup_command(vips: &[IpAddr], interface: &str) -> String {
    let args: Vec<String> = vips.iter().map(|v| format!("--vip {v}")).collect();
    format!(
        "ricochet server setup {} --interface {interface}",
        args.join(" ")
    )
}

/// `max(all, dev)` of an IPv4 `conf` sysctl, with both values.
fn effective(dev: &str, name: &str) -> anyhow::Result<(i64, i64, i64)> {
    let all = sysctl::read_int(&sysctl::conf_key("ipv4", "all", name))?;
    let own = sysctl::read_int(&sysctl::conf_key("ipv4", dev, name))?;
    Ok((all.max(own), all, own))
}

/// Checks what a DSR server for `spec` needs, in the calling thread's network namespace,
/// without changing anything. VIPs default to those recorded by [`crate::setup`], the
/// interface to the recorded one, else the default route's. Works without root, except that
/// the eBPF decapsulator can only be inspected as root (reported as a problem otherwise).
///
/// Errors only when the check itself cannot run (interface missing, no VIPs known).
pub fn check(spec: &ServerSpec) -> anyhow::Result<CheckReport> {
    let spec = &spec.resolved();
    let recorded = state::read(&state::state_path(&spec.pin_dir))
        .ok()
        .flatten()
        .unwrap_or_default();
    let vips = if spec.vips.is_empty() {
        recorded.vips.clone()
    } else {
        spec.vips.clone()
    };
    crate::setup::validate_vips(&vips)?;
    let interface = iface::resolve(
        spec.interface.as_deref(),
        recorded.interfaces.first().map(String::as_str),
    )?;
    let mut items = Vec::new();
    let (has_v4, has_v6) = (
        vips.iter().any(IpAddr::is_ipv4),
        vips.iter().any(IpAddr::is_ipv6),
    );

    // The VIPs must be local: on lo.
    if !iface::link("lo")?.up {
        items.push(CheckItem::problem(
            "lo is down: nothing addressed to a VIP on it is delivered",
            "ip link set lo up",
        ));
    }
    for &vip in &vips {
        if iface::has_address("lo", vip)? {
            items.push(CheckItem::ok(format!("VIP {vip} is on lo")));
        } else {
            items.push(CheckItem::problem(
                format!("VIP {vip} is not on lo: decapsulated packets to it are not local, and replies cannot use it as source"),
                iface::add_address_command("lo", vip),
            ));
        }
    }

    decap_items(spec, &recorded, &vips, &interface, &mut items);

    if has_v4 {
        let mut devs = vec![interface.as_str(), "lo"];
        if kernel::tunnel_up(kernel::TUNL) {
            devs.push(kernel::TUNL);
        }
        for dev in devs {
            items.push(rp_filter_item(dev)?);
        }
        items.push(arp_ignore_item(&vips, &interface)?);
        items.push(arp_announce_item(&interface)?);
    }
    if has_v6 {
        for dev in ["all", "lo", interface.as_str()] {
            let key = format!("net.ipv6.conf.{}.disable_ipv6", dev.replace('.', "/"));
            if sysctl::read_int(&key)? != 0 {
                items.push(CheckItem::problem(
                    format!("IPv6 is disabled ({key}=1): IPv6 VIPs cannot work"),
                    format!("sysctl -w {key}=0"),
                ));
            }
        }
    }

    let mtu = iface::link(&interface)?.mtu;
    for (v6, present) in [(false, has_v4), (true, has_v6)] {
        if present {
            items.push(mtu_item(&interface, mtu, v6));
        }
    }

    // The seed sets forwarding, but a DSR server answers; it forwards nothing.
    let fwd = sysctl::read("net.ipv4.ip_forward")?;
    items.push(CheckItem::info(format!(
        "net.ipv4.ip_forward={fwd}: not needed for DSR (the seed sets it to 1; a DSR server only answers, it forwards nothing)"
    )));
    if has_v6 {
        let fwd6 = sysctl::read("net.ipv6.conf.all.forwarding")?;
        items.push(CheckItem::info(format!(
            "net.ipv6.conf.all.forwarding={fwd6}: not needed for DSR (the seed sets it to 1; it also makes the host ignore router advertisements)"
        )));
    }
    Ok(CheckReport {
        interface,
        vips,
        items,
    })
}

fn rp_filter_item(dev: &str) -> anyhow::Result<CheckItem> {
    let (eff, all, own) = effective(dev, "rp_filter")?;
    let key_all = sysctl::conf_key("ipv4", "all", "rp_filter");
    let key_dev = sysctl::conf_key("ipv4", dev, "rp_filter");
    Ok(if eff == 0 {
        CheckItem::ok(format!(
            "reverse-path filter off on {dev} (all={all}, {dev}={own})"
        ))
    } else {
        let mode = if eff == 1 { "strict" } else { "loose" };
        CheckItem::problem(
            format!(
                "reverse-path filter {mode} on {dev}: effective max(all={all}, {dev}={own}) = {eff}, DSR needs 0 \
                 (packets whose source, the client, is not routed back the way they came are dropped)"
            ),
            format!("sysctl -w {key_all}=0 {key_dev}=0"),
        )
    })
}

fn mtu_item(interface: &str, mtu: u32, v6: bool) -> CheckItem {
    let (fam, overhead, headers) = if v6 {
        ("IPv6", 40, 60)
    } else {
        ("IPv4", 20, 40)
    };
    let need = 1500 + overhead;
    if mtu >= need {
        return CheckItem::ok(format!(
            "MTU {mtu} on {interface} carries a full 1500-byte {fam} packet plus its {overhead}-byte outer header"
        ));
    }
    let inner = mtu.saturating_sub(overhead);
    let mss = inner.saturating_sub(headers);
    CheckItem::warning(
        format!(
            "MTU {mtu} on {interface}: a full 1500-byte {fam} client packet encapsulated is {need} bytes and does not fit, \
             so client packets must be at most {inner} bytes"
        ),
        format!(
            "raise the MTU to at least {need} on {interface} and on the path from the load balancer, or make clients send \
             at most {inner} bytes (a lower MTU on the client-facing side, or advertise MSS {mss}: \
             `ip route change <default route> advmss {mss}`)"
        ),
    )
}

/// `arp_ignore` (effective `max(all, interface)`) must keep `interface` from answering ARP
/// for the VIPs on `lo`: see [`sysctl::arp_ignore_hides_lo`].
fn arp_ignore_item(vips: &[IpAddr], interface: &str) -> anyhow::Result<CheckItem> {
    let (eff, all, own) = effective(interface, "arp_ignore")?;
    let state = format!("effective max(all={all}, {interface}={own}) = {eff}");
    if sysctl::arp_ignore_hides_lo(eff) {
        return Ok(CheckItem::ok(format!(
            "{interface} answers no ARP for the VIPs on lo: arp_ignore {state}"
        )));
    }
    // A VIP inside the interface's subnet is asked for by every neighbour on the link.
    let subnets = iface::addresses(interface)?;
    let mut on_link = String::new();
    for &vip in vips.iter().filter(|v| v.is_ipv4()) {
        if let Some(net) = subnets
            .iter()
            .find(|a| iface::in_prefix(a.addr, a.prefix, vip))
        {
            on_link.push_str(&format!(
                "; VIP {vip} is inside {interface}'s subnet {}/{}, so its neighbours ask for it",
                net.addr, net.prefix
            ));
        }
    }
    Ok(CheckItem::problem(
        format!(
            "{interface} answers ARP for the VIPs on lo: arp_ignore {state}, DSR needs 1 \
             (this server can take the load balancer's traffic for a VIP){on_link}"
        ),
        format!(
            "sysctl -w {}=1 {}=1",
            sysctl::conf_key("ipv4", "all", "arp_ignore"),
            sysctl::conf_key("ipv4", interface, "arp_ignore")
        ),
    ))
}

/// `arp_announce` (effective `max(all, interface)`) must be 2, so that ARP requests sent
/// while answering from a VIP name the interface's own address, not the VIP.
fn arp_announce_item(interface: &str) -> anyhow::Result<CheckItem> {
    let (eff, all, own) = effective(interface, "arp_announce")?;
    let want = sysctl::ARP_ANNOUNCE;
    let state = format!("effective max(all={all}, {interface}={own}) = {eff}");
    Ok(if eff == want {
        CheckItem::ok(format!(
            "ARP requests from {interface} use its own address, never a VIP: arp_announce {state}"
        ))
    } else {
        CheckItem::problem(
            format!(
                "ARP requests from {interface} can use a VIP as sender address: arp_announce {state}, DSR needs {want} \
                 (neighbours learn the VIP at this server's MAC address and send it the load balancer's traffic)"
            ),
            format!(
                "sysctl -w {}={want} {}={want}",
                sysctl::conf_key("ipv4", "all", "arp_announce"),
                sysctl::conf_key("ipv4", interface, "arp_announce")
            ),
        )
    })
}

/// GRE and GUE: what decapsulates them, and a warning for what nothing does (a load
/// balancer may send them: `encapsulation: gre` or `gue`).
fn tunnel_items(
    spec: &ServerSpec,
    recorded: &State,
    vips: &[IpAddr],
    inspection: Option<&anyhow::Result<ebpf::Inspection>>,
    items: &mut Vec<CheckItem>,
) {
    let ports = |set: &[u16]| {
        set.iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match inspection {
        Some(Ok(found)) if found.attached > 0 => {
            let missing: Vec<u16> = spec
                .gue_ports
                .iter()
                .copied()
                .filter(|p| !found.gue_ports.contains(p))
                .collect();
            let have: Vec<u16> = found.gue_ports.iter().copied().collect();
            if missing.is_empty() {
                items.push(CheckItem::ok(format!(
                    "GRE and GUE (UDP ports {}) are decapsulated by Ricochet's eBPF decapsulator",
                    ports(&have)
                )));
            } else {
                let mut fix = setup_command(
                    vips,
                    &recorded.interfaces.first().cloned().unwrap_or_default(),
                );
                for p in &missing {
                    fix.push_str(&format!(" --gue-port {p}"));
                }
                items.push(CheckItem::warning(
                    format!(
                        "GUE on UDP port {} is not decapsulated (the decapsulator takes {})",
                        ports(&missing),
                        if have.is_empty() {
                            "none".to_owned()
                        } else {
                            ports(&have)
                        }
                    ),
                    fix,
                ));
            }
        }
        _ if recorded.decap == Some(DecapKind::Kernel) => {
            for v6 in [false, true] {
                if !vips.iter().any(|ip| ip.is_ipv6() == v6) {
                    continue;
                }
                let (module, dev) = kernel::gre(v6);
                if kernel::tunnel_up(dev) {
                    items.push(CheckItem::ok(format!(
                        "GRE is decapsulated by the kernel's {dev}"
                    )));
                } else {
                    items.push(CheckItem::warning(
                        format!("GRE is not decapsulated: the kernel's {dev} (module {module}) is missing or down"),
                        "ricochet server undo, then ricochet server setup --decap ebpf (or load the module and set up again)",
                    ));
                }
                let present = kernel::fou_ports_in_place(v6);
                let missing: Vec<u16> = spec
                    .gue_ports
                    .iter()
                    .copied()
                    .filter(|p| !present.contains(p))
                    .collect();
                if missing.is_empty() {
                    items.push(CheckItem::ok(format!(
                        "GUE on UDP port {} is decapsulated by fou",
                        ports(&spec.gue_ports)
                    )));
                } else {
                    let fix: Vec<String> = missing
                        .iter()
                        .map(|&p| format!("ip {}", kernel::fou_args(true, p, v6).join(" ")))
                        .collect();
                    items.push(CheckItem::warning(
                        format!(
                            "GUE on UDP port {} is not decapsulated (no fou port)",
                            ports(&missing)
                        ),
                        fix.join("; "),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn decap_items(
    spec: &ServerSpec,
    recorded: &State,
    vips: &[IpAddr],
    interface: &str,
    items: &mut Vec<CheckItem>,
) {
    let want_kernel = spec.decap != DecapMode::Ebpf && recorded.decap != Some(DecapKind::Ebpf);
    let want_ebpf = spec.decap != DecapMode::Kernel && recorded.decap != Some(DecapKind::Kernel);
    let inspection = want_ebpf.then(|| ebpf::inspect(&spec.pin_dir, interface));
    let fix = setup_command(vips, interface);

    tunnel_items(spec, recorded, vips, inspection.as_ref(), items);
    if let Some(Ok(found)) = &inspection {
        if found.attached > 0 && !found.uses_pinned_map {
            items.push(CheckItem::warning(
                format!(
                    "the eBPF decapsulator on {interface} does not use the map pinned in {}: setup with this pin \
                     directory cannot update its VIPs",
                    spec.pin_dir.display()
                ),
                format!("ricochet server undo with the pin directory used to set it up, then {fix}"),
            ));
        }
    }
    for &vip in vips {
        let v6 = vip.is_ipv6();
        let (module, dev, _) = kernel::tunnel(v6);
        if want_kernel && kernel::module_present(module) && kernel::tunnel_up(dev) {
            items.push(CheckItem::ok(format!(
                "VIP {vip}: tunnel packets are decapsulated by the kernel's {dev}"
            )));
            continue;
        }
        let ebpf_detail = match &inspection {
            None => String::from("the eBPF decapsulator is not wanted (--decap kernel)"),
            Some(Ok(found)) if found.vips.contains(&vip) => {
                items.push(CheckItem::ok(format!(
                    "VIP {vip}: tunnel packets are decapsulated by Ricochet's eBPF decapsulator on {interface} ingress"
                )));
                continue;
            }
            Some(Ok(found)) if found.attached > 0 => {
                format!("Ricochet's decapsulator is attached to {interface} ingress but {vip} is not in its map")
            }
            Some(Ok(_)) => {
                format!("Ricochet's decapsulator is not attached to {interface} ingress")
            }
            Some(Err(e)) if crate::setup::require_privileges().is_err() => {
                format!("the eBPF decapsulator cannot be inspected without root ({e:#})")
            }
            Some(Err(e)) => format!("the eBPF decapsulator cannot be inspected: {e:#}"),
        };
        let kernel_detail = if !want_kernel {
            format!("the kernel's {dev} is not wanted (--decap ebpf)")
        } else if !kernel::module_present(module) {
            format!("the kernel has no {dev} (module {module} not loaded)")
        } else {
            format!("the kernel's {dev} is missing or down")
        };
        let mut fix = fix.clone();
        if !ebpf::on_bpffs(&spec.pin_dir) {
            if spec.pin_dir.starts_with(ebpf::BPFFS_MOUNT) {
                fix.push_str(&format!(
                    " (bpffs is not mounted: setup mounts it on {})",
                    ebpf::BPFFS_MOUNT
                ));
            } else {
                fix.push_str(&format!(
                    " after mounting a bpffs for {} (`mount -t bpf bpf <dir>`)",
                    spec.pin_dir.display()
                ));
            }
        }
        items.push(CheckItem::problem(
            format!("VIP {vip}: no decapsulation ({kernel_detail}; {ebpf_detail}): tunnel packets to it are dropped"),
            fix,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_warns_below_1500_plus_outer_header() {
        assert_eq!(mtu_item("eth0", 1520, false).severity, Severity::Ok);
        let w = mtu_item("eth0", 1500, false);
        assert_eq!(w.severity, Severity::Warning);
        assert!(w.summary.contains("1520"), "{}", w.summary);
        assert!(w.fix.as_deref().unwrap().contains("advmss 1440"));
        assert_eq!(mtu_item("eth0", 1539, true).severity, Severity::Warning);
        assert_eq!(mtu_item("eth0", 1540, true).severity, Severity::Ok);
        assert!(mtu_item("eth0", 1500, true)
            .fix
            .unwrap()
            .contains("advmss 1400"));
    }

    #[test]
    fn report_display_and_exit_semantics() {
        let r = CheckReport {
            interface: "eth0".into(),
            vips: vec!["192.168.35.241".parse().unwrap()],
            items: vec![
                CheckItem::ok("VIP 192.168.35.241 is on lo"),
                CheckItem::warning("MTU", "raise it"),
                CheckItem::info("ip_forward"),
            ],
        };
        assert!(r.is_ok());
        let text = r.to_string();
        assert!(
            text.contains("ok       VIP 192.168.35.241 is on lo"),
            "{text}"
        );
        assert!(text.contains("fix: raise it"), "{text}");
        assert!(text.ends_with("ready for DSR (1 warning(s))"), "{text}");
        let mut bad = r.clone();
        bad.items.push(CheckItem::problem("x", "y"));
        assert!(!bad.is_ok());
        assert!(bad.to_string().contains("NOT ready for DSR: 1 problem(s)"));
    }
}
