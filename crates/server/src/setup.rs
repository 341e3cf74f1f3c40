//! `setup` and `undo`: change the host, recording every change in the state file, and
//! reverse exactly the recorded changes.
use std::{fmt, fs, net::IpAddr, path::PathBuf};

use anyhow::anyhow;
use tracing::{info, warn};

use crate::{
    ebpf, iface, kernel,
    state::{AddedAddress, State, StateFile, SysctlChange},
    sysctl, DecapKind, DecapMode, ServerError, ServerSpec,
};

/// What [`setup`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    /// The interface tunnel packets arrive on.
    pub interface: String,
    /// The decapsulation in place.
    pub decap: DecapKind,
    /// The VIPs set up.
    pub vips: Vec<IpAddr>,
    /// What this run changed, one sentence each; empty when the host was already set up.
    pub changes: Vec<String>,
    /// What the host cannot do that a load balancer may ask of it (GRE or GUE without
    /// the kernel's modules in kernel mode), one sentence each with the way out.
    pub warnings: Vec<String>,
    /// Where the changes are recorded for [`undo`].
    pub state_file: PathBuf,
}

impl SetupReport {
    /// Whether this run changed anything.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vips: Vec<String> = self.vips.iter().map(ToString::to_string).collect();
        writeln!(
            f,
            "DSR server set up on {} for VIPs {}",
            self.interface,
            vips.join(", ")
        )?;
        writeln!(f, "  decapsulation: {}", self.decap)?;
        if self.changes.is_empty() {
            writeln!(f, "  nothing changed: already set up")?;
        }
        for c in &self.changes {
            writeln!(f, "  changed: {c}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        write!(f, "  undo record: {}", self.state_file.display())
    }
}

/// Fails with [`ServerError::NotRoot`] unless the calling thread has CAP_NET_ADMIN and
/// CAP_BPF (or CAP_SYS_ADMIN, which covers BPF on kernels before 5.8).
pub(crate) fn require_privileges() -> Result<(), ServerError> {
    let status = fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    if has_caps(&status) {
        Ok(())
    } else {
        Err(ServerError::NotRoot)
    }
}

/// Whether a `/proc/<pid>/status` text shows the needed effective capabilities.
pub(crate) fn has_caps(status: &str) -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

pub(crate) fn validate_vips(vips: &[IpAddr]) -> Result<(), ServerError> {
    if vips.is_empty() {
        return Err(ServerError::NoVips);
    }
    for &vip in vips {
        let bad = vip.is_unspecified()
            || vip.is_loopback()
            || vip.is_multicast()
            || matches!(vip, IpAddr::V4(v4) if v4.is_broadcast());
        if bad {
            return Err(ServerError::BadVip(vip));
        }
    }
    Ok(())
}

/// Applies changes to the host and records each in the state.
pub(crate) struct Apply<'a> {
    pub st: &'a mut State,
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Apply<'_> {
    /// Sets sysctl `key` to `value`, recording the value it had the first time it changed.
    pub fn sysctl(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let current = sysctl::read(key)?;
        if current == value {
            return Ok(());
        }
        sysctl::write(key, value)?;
        info!(key, from = %current, to = value, "sysctl changed");
        match self.st.sysctls.iter_mut().find(|c| c.key == key) {
            Some(rec) => rec.value = value.to_owned(),
            None => self.st.sysctls.push(SysctlChange {
                key: key.to_owned(),
                previous: current.clone(),
                value: value.to_owned(),
            }),
        }
        self.changes
            .push(format!("sysctl {key}: {current} -> {value}"));
        Ok(())
    }

    /// Puts `ip` on `dev` as a host address unless it is there already.
    pub fn address(&mut self, dev: &str, ip: IpAddr) -> anyhow::Result<()> {
        if iface::has_address(dev, ip)? {
            return Ok(());
        }
        iface::add_address(dev, ip)?;
        info!(%ip, dev, "VIP added");
        self.st.addresses.push(AddedAddress {
            dev: dev.to_owned(),
            addr: ip,
            prefix: iface::host_prefix(ip),
        });
        self.changes
            .push(format!("added {ip}/{} to {dev}", iface::host_prefix(ip)));
        Ok(())
    }

    /// Sets `dev` up unless it is up.
    pub fn link_up(&mut self, dev: &str) -> anyhow::Result<()> {
        if iface::link(dev)?.up {
            return Ok(());
        }
        iface::set_up(dev, true)?;
        info!(dev, "interface set up");
        if !self.st.links_set_up.iter().any(|d| d == dev) {
            self.st.links_set_up.push(dev.to_owned());
        }
        self.changes.push(format!("set {dev} up"));
        Ok(())
    }
}

fn choose_decap(spec: &ServerSpec, st: &State) -> Result<DecapKind, ServerError> {
    match (spec.decap, st.decap) {
        (DecapMode::Kernel, Some(DecapKind::Ebpf)) => {
            Err(ServerError::DecapConflict(DecapKind::Ebpf))
        }
        (DecapMode::Ebpf, Some(DecapKind::Kernel)) => {
            Err(ServerError::DecapConflict(DecapKind::Kernel))
        }
        (DecapMode::Auto, Some(kind)) => Ok(kind),
        (DecapMode::Kernel, _) => {
            // Fail before changing anything when the modules are missing.
            for v6 in [false, true] {
                let needed = if v6 { spec.has_v6() } else { spec.has_v4() };
                if needed && !kernel::available(!v6, v6, true) {
                    let (module, device, _) = kernel::tunnel(v6);
                    return Err(ServerError::NoKernelTunnel { module, device });
                }
            }
            Ok(DecapKind::Kernel)
        }
        (DecapMode::Ebpf, _) => Ok(DecapKind::Ebpf),
        (DecapMode::Auto, None) if kernel::available(spec.has_v4(), spec.has_v6(), true) => {
            Ok(DecapKind::Kernel)
        }
        (DecapMode::Auto, None) => Ok(DecapKind::Ebpf),
    }
}

/// Makes the host a DSR server for `spec` (see the crate documentation). Idempotent: a
/// second run changes nothing; a run with more VIPs adds them. Every change is recorded in
/// [`crate::state_path`]`(pin_dir)` for [`undo`], also when a later step fails.
pub fn setup(spec: &ServerSpec) -> anyhow::Result<SetupReport> {
    let spec = &spec.resolved();
    require_privileges()?;
    validate_vips(&spec.vips)?;
    validate_gue_ports(&spec.gue_ports)?;
    let interface = iface::resolve(spec.interface.as_deref(), None)?;
    let (file, previous) = StateFile::open(&spec.pin_dir)?;
    let mut st = previous.unwrap_or_default();
    let decap = choose_decap(spec, &st)?;
    if decap == DecapKind::Ebpf {
        crate::pins::ensure_pins_outlive_process(&spec.pin_dir)?;
    }
    let mut apply = Apply {
        st: &mut st,
        changes: Vec::new(),
        warnings: Vec::new(),
    };
    let result = apply_all(spec, &interface, decap, &mut apply);
    let (changes, warnings) = (apply.changes, apply.warnings);
    for w in &warnings {
        warn!("{w}");
    }
    let saved = file.save(&st);
    result?;
    saved?;
    info!(interface, %decap, changes = changes.len(), "server set up");
    Ok(SetupReport {
        interface,
        decap,
        vips: spec.vips.clone(),
        changes,
        warnings,
        state_file: file.path().to_owned(),
    })
}

fn apply_all(
    spec: &ServerSpec,
    interface: &str,
    decap: DecapKind,
    apply: &mut Apply<'_>,
) -> anyhow::Result<()> {
    apply.st.decap = Some(decap);
    if !apply.st.interfaces.iter().any(|i| i == interface) {
        apply.st.interfaces.push(interface.to_owned());
    }
    for vip in &spec.vips {
        if !apply.st.vips.contains(vip) {
            apply.st.vips.push(*vip);
        }
    }
    apply.link_up("lo")?;
    // rp_filter is IPv4 only; the kernel uses max(all, interface) for each interface.
    if spec.has_v4() {
        for dev in ["all", "lo", interface] {
            apply.sysctl(&sysctl::conf_key("ipv4", dev, "rp_filter"), "0")?;
        }
        arp(interface, apply)?;
    }
    for &vip in &spec.vips {
        apply.address("lo", vip)?;
    }
    match decap {
        DecapKind::Ebpf => ebpf::ensure(
            &spec.pin_dir,
            interface,
            &spec.vips,
            &spec.gue_ports,
            &mut apply.st.ebpf,
            &mut apply.changes,
        ),
        DecapKind::Kernel => {
            kernel::ensure(&spec.vips, apply)?;
            if spec.has_v4() {
                apply.sysctl(&sysctl::conf_key("ipv4", kernel::TUNL, "rp_filter"), "0")?;
            }
            kernel::ensure_gre_gue(&spec.vips, &spec.gue_ports, apply)
        }
    }
}

/// The ARP settings of every LVS-DR server, on `all` and `interface` (the kernel applies
/// `max(all, interface)` to both): `arp_ignore=1`, so the server never answers ARP for a VIP
/// it holds on `lo` (and takes the load balancer's traffic), and `arp_announce=2`, so its ARP
/// requests name its own address as sender, never the VIP a reply leaves from (neighbours
/// would otherwise learn the VIP at this server's MAC address). A stricter `arp_ignore`
/// already in place (2 or 8) is kept.
///
/// IPv4 only: IPv6 has no ARP, and neighbour discovery needs no such setting, because Linux
/// answers a solicitation only for addresses on the interface it arrives on, and takes a
/// solicitation's source from the packet only when that address is on the outgoing
/// interface; a VIP on `lo` is never advertised.
fn arp(interface: &str, apply: &mut Apply<'_>) -> anyhow::Result<()> {
    for dev in ["all", interface] {
        let ignore = sysctl::conf_key("ipv4", dev, "arp_ignore");
        if !sysctl::arp_ignore_hides_lo(sysctl::read_int(&ignore)?) {
            apply.sysctl(&ignore, "1")?;
        }
    }
    for dev in ["all", interface] {
        let announce = sysctl::conf_key("ipv4", dev, "arp_announce");
        apply.sysctl(&announce, &sysctl::ARP_ANNOUNCE.to_string())?;
    }
    Ok(())
}

/// Refuses, before anything changes, GUE ports the decapsulator cannot take: 0, or more
/// distinct ports than its map holds.
pub(crate) fn validate_gue_ports(ports: &[u16]) -> anyhow::Result<()> {
    if ports.contains(&0) {
        anyhow::bail!("GUE port 0 is not a port: give the UDP ports the load balancer's GUE profiles use (1 to 65535)");
    }
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    let max = ricochet_common::limits::MAX_DECAP_GUE_PORTS as usize;
    if distinct.len() > max {
        anyhow::bail!(
            "{} GUE ports given, the decapsulator takes at most {max}: nothing was changed",
            distinct.len()
        );
    }
    Ok(())
}

/// Reverses what [`setup`] recorded for `spec.pin_dir`, and nothing else: addresses that
/// were already there stay, sysctls go back to their earlier values (unless someone changed
/// them since), the decapsulator is detached and its pins removed.
///
/// With VIPs in `spec` that are only some of those set up, only those VIPs are removed
/// (from `lo`, the tunnels and the decapsulator's map); otherwise everything is undone.
/// Without a record, nothing is changed.
pub fn undo(spec: &ServerSpec) -> anyhow::Result<()> {
    let spec = &spec.resolved();
    require_privileges()?;
    let (file, st) = StateFile::open(&spec.pin_dir)?;
    let Some(mut st) = st else {
        info!(state = %file.path().display(), "nothing recorded: nothing to undo");
        return Ok(());
    };
    let partial = !spec.vips.is_empty() && st.vips.iter().any(|v| !spec.vips.contains(v));
    let mut errors = Vec::new();
    if partial {
        undo_vips(spec, &mut st, &mut errors);
    } else {
        undo_all(spec, &mut st, &mut errors);
    }
    file.save(&st)?;
    if errors.is_empty() {
        Ok(())
    } else {
        let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        Err(anyhow!(
            "undo left {} change(s) in place (kept in {}): {}",
            errors.len(),
            file.path().display(),
            all.join("; ")
        ))
    }
}

fn undo_vips(spec: &ServerSpec, st: &mut State, errors: &mut Vec<anyhow::Error>) {
    let gone: Vec<IpAddr> = st
        .vips
        .iter()
        .copied()
        .filter(|v| spec.vips.contains(v))
        .collect();
    let in_map: Vec<IpAddr> = st
        .ebpf
        .vips
        .iter()
        .copied()
        .filter(|v| gone.contains(v))
        .collect();
    if !in_map.is_empty() {
        match ebpf::remove_vips(&spec.pin_dir, &in_map) {
            Ok(()) => st.ebpf.vips.retain(|v| !in_map.contains(v)),
            Err(e) => errors.push(e),
        }
    }
    st.addresses
        .retain(|a| !gone.contains(&a.addr) || !remove_address(a, errors));
    st.vips.retain(|v| !gone.contains(v));
}

/// Removes a recorded address; true when it is gone.
fn remove_address(a: &AddedAddress, errors: &mut Vec<anyhow::Error>) -> bool {
    let present = iface::exists(&a.dev) && iface::has_address(&a.dev, a.addr).unwrap_or(true);
    if !present {
        return true;
    }
    match iface::del_address(&a.dev, a.addr, a.prefix) {
        Ok(()) => {
            info!(ip = %a.addr, dev = %a.dev, "VIP removed");
            true
        }
        Err(e) => {
            errors.push(e);
            false
        }
    }
}

fn undo_all(spec: &ServerSpec, st: &mut State, errors: &mut Vec<anyhow::Error>) {
    // Reverse order of setup: decapsulation, addresses, links, sysctls.
    let mut fou = std::mem::take(&mut st.fou_ports);
    fou.retain(|f| {
        let args = kernel::fou_args(false, f.port, f.v6);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if !kernel::fou_ports_in_place(f.v6).contains(&f.port) {
            return false;
        }
        match crate::cmd::run("ip", &args) {
            Ok(_) => false,
            Err(e) => {
                errors.push(e);
                true
            }
        }
    });
    st.fou_ports = fou;
    let before = errors.len();
    ebpf::teardown(&spec.pin_dir, &st.ebpf, errors);
    if errors.len() == before {
        st.ebpf = Default::default();
    }
    let mut addresses = std::mem::take(&mut st.addresses);
    addresses.reverse();
    addresses.retain(|a| !remove_address(a, errors));
    st.addresses = addresses;

    let mut down = std::mem::take(&mut st.links_set_up);
    down.reverse();
    down.retain(|dev| {
        if !iface::exists(dev) || st.links_created.contains(dev) {
            return false;
        }
        match iface::set_up(dev, false) {
            Ok(()) => false,
            Err(e) => {
                errors.push(e);
                true
            }
        }
    });
    st.links_set_up = down;

    let mut created = std::mem::take(&mut st.links_created);
    created.retain(|dev| {
        if !iface::exists(dev) {
            return false;
        }
        match ricochet_netlink::delete_link(dev) {
            Ok(()) => false,
            Err(e) => {
                errors.push(e.into());
                true
            }
        }
    });
    st.links_created = created;

    let mut sysctls = std::mem::take(&mut st.sysctls);
    sysctls.reverse();
    sysctls.retain(|c| {
        if !sysctl::path(&c.key).exists() {
            warn!(key = %c.key, "sysctl no longer exists (interface gone?): nothing to restore");
            return false;
        }
        let restored = sysctl::read(&c.key).and_then(|now| {
            if now == c.value {
                sysctl::write(&c.key, &c.previous)?;
                info!(key = %c.key, value = %c.previous, "sysctl restored");
            } else {
                warn!(key = %c.key, now = %now, set = %c.value, "sysctl changed since setup: left as it is");
            }
            Ok(())
        });
        match restored {
            Ok(()) => false,
            Err(e) => {
                errors.push(e);
                true
            }
        }
    });
    sysctls.reverse();
    st.sysctls = sysctls;
    if st.is_empty() {
        *st = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(has_caps(root));
        // CAP_NET_ADMIN and CAP_SYS_ADMIN only (a pre-5.8 style root).
        assert!(has_caps("CapEff:\t0000000000201000\n"));
        // CAP_NET_ADMIN alone is not enough to load BPF.
        assert!(!has_caps("CapEff:\t0000000000001000\n"));
        assert!(!has_caps("CapEff:\t0000000000000000\n"));
        assert!(!has_caps(""));
    }

    #[test]
    fn vips_must_be_unicast() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(validate_vips(&[ip("192.168.35.241"), ip("fc00:3::24a")]).is_ok());
        assert!(matches!(validate_vips(&[]), Err(ServerError::NoVips)));
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
        ] {
            assert!(
                matches!(validate_vips(&[ip(bad)]), Err(ServerError::BadVip(_))),
                "{bad}"
            );
        }
    }
}
