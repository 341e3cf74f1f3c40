//! Detection of frames that an XDP program sends (XDP_TX, XDP_REDIRECT) and the driver
//! then drops: the program counts them as forwarded, so without this nothing says so.
//!
//! Two checks:
//! - **veth peers.** A veth delivers an XDP_TX or redirected frame only into a peer that
//!   runs NAPI: one with a native XDP program (an XDP_PASS one is enough) or with GRO on,
//!   and up. Otherwise every such frame is lost (`xdp_tx_errors` in `ethtool -S`). The
//!   check asks netlink for the peer (`IFLA_LINK`, in the namespace of `IFLA_LINK_NETNSID`)
//!   and ethtool for its GRO, entering the peer's namespace when a `/run/netns` entry or a
//!   process shows it; when none does it says that it could not check.
//! - **transmit error counters**, for every driver: the statistics of `ethtool -S` whose
//!   name says XDP and transmit error (veth's `rx_queue_0_xdp_tx_errors` and
//!   `tx_queue_0_xdp_xmit_errors`, mlx5's `tx_xdp_err`, virtio's `xdp_tx_drops`, ...), on
//!   every interface of the namespace (a redirect leaves through any of them). A counter
//!   that rose since the previous check is a finding.

use std::{
    collections::BTreeMap,
    fmt,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::PathBuf,
};

use anyhow::{anyhow, Context as _};

use crate::{ethtool, netlink};

/// What kind of problem a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// The veth peer has neither a native XDP program nor GRO (or is down): every frame
    /// sent with XDP_TX is dropped.
    VethPeerDropsXdp,
    /// The veth peer could not be checked (its namespace cannot be entered from here).
    VethPeerUnchecked,
    /// A driver's XDP transmit error counter rose.
    TransmitErrors,
}

impl FindingKind {
    /// A short stable name (logs, JSON, the controller's report).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::VethPeerDropsXdp => "veth_peer_drops_xdp",
            FindingKind::VethPeerUnchecked => "veth_peer_unchecked",
            FindingKind::TransmitErrors => "xdp_transmit_errors",
        }
    }
}

/// One problem: what it is, on which interface, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// The interface the frames are lost on.
    pub interface: String,
    /// What was found, as a sentence.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; to fix: {}", self.interface, self.what, self.fix)
    }
}

/// Whether an `ethtool -S` statistic counts XDP frames the driver failed to transmit.
///
/// Matches names with `xdp` and `err` (`xdp_tx_errors`, `xdp_xmit_errors`, `tx_xdp_err`)
/// and names with `xdp`, a transmit word and `drop` or `full` (`xdp_tx_drops`,
/// `rx_xdp_tx_full`). Not `xdp_drops` or `xdp_tx`: those count the program's verdicts.
pub fn is_xmit_error_counter(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if !n.contains("xdp") {
        return false;
    }
    let transmit = n.contains("tx") || n.contains("xmit");
    n.contains("err") || (transmit && (n.contains("drop") || n.contains("full")))
}

/// The XDP transmit error counters of `iface` (empty for a driver without any).
pub fn xmit_error_counters(iface: &str) -> anyhow::Result<Vec<(String, u64)>> {
    Ok(ethtool::stats(iface)?
        .into_iter()
        .filter(|(name, _)| is_xmit_error_counter(name))
        .collect())
}

fn peer_fix(peer: &str, where_: &str) -> String {
    format!(
        "attach an XDP program to the veth peer {peer}{where_} (an XDP_PASS one is enough) \
         or enable GRO on it (`ethtool -K {peer} gro on`), and keep it up"
    )
}

/// Checks that frames `iface`'s native XDP program sends with XDP_TX reach its veth
/// peer. `None` when `iface` is not a veth or runs no native XDP program (a generic one
/// transmits through the ordinary stack, which needs nothing of the peer).
pub fn check_veth_peer(iface: &str) -> anyhow::Result<Option<Finding>> {
    let link = netlink::link_by_name(iface)?;
    if !link.is_veth() || link.xdp.native.is_none() {
        return Ok(None);
    }
    let Some(peer_index) = link.link else {
        return Ok(Some(unchecked(
            iface,
            "netlink gives no peer for this veth".into(),
        )));
    };
    let peer = match netlink::link_by_index(peer_index, link.link_netnsid) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Some(unchecked(
                iface,
                format!("its veth peer #{peer_index} could not be read: {e:#}"),
            )))
        }
    };
    let mut where_ = String::new();
    if peer.xdp.native.is_some() && peer.up {
        return Ok(None);
    }
    let gro = match link.link_netnsid {
        None => gro_active(&peer.name),
        Some(id) => match find_netns(id) {
            Ok(Some((path, fd))) => {
                where_ = format!(" (namespace {})", path.display());
                in_netns(&fd, || gro_active(&peer.name))
                    .and_then(|r| r)
                    .with_context(|| format!("in namespace {}", path.display()))
            }
            Ok(None) => {
                if !peer.up {
                    return Ok(Some(down(iface, &peer.name, " (another namespace)")));
                }
                return Ok(Some(unchecked(
                    iface,
                    format!(
                        "its veth peer {} has no native XDP program and lives in another \
                         network namespace (id {id} here) that no /run/netns entry or \
                         process shows, so its GRO cannot be checked: XDP_TX frames are \
                         lost unless it has GRO on",
                        peer.name
                    ),
                )));
            }
            Err(e) => Err(e),
        },
    };
    let gro = match gro {
        Ok(g) => g,
        Err(e) => {
            return Ok(Some(unchecked(
                iface,
                format!(
                    "its veth peer {} has no native XDP program and its GRO could not be \
                     read: {e:#}",
                    peer.name
                ),
            )))
        }
    };
    if !peer.up {
        return Ok(Some(down(iface, &peer.name, &where_)));
    }
    if gro {
        return Ok(None);
    }
    Ok(Some(Finding {
        kind: FindingKind::VethPeerDropsXdp,
        interface: iface.to_owned(),
        what: format!(
            "its veth peer {}{where_} has neither a native XDP program nor GRO: every \
             frame the load balancer sends back out with XDP_TX is dropped \
             (xdp_tx_errors in `ethtool -S {iface}`)",
            peer.name
        ),
        fix: peer_fix(&peer.name, &where_),
    }))
}

fn unchecked(iface: &str, what: String) -> Finding {
    Finding {
        kind: FindingKind::VethPeerUnchecked,
        interface: iface.to_owned(),
        what,
        fix: "make sure the veth peer has a native XDP program (an XDP_PASS one is enough) \
              or GRO on; give its namespace a name (`ip netns attach NAME PID`) so that the \
              engine can check it"
            .to_owned(),
    }
}

fn down(iface: &str, peer: &str, where_: &str) -> Finding {
    Finding {
        kind: FindingKind::VethPeerDropsXdp,
        interface: iface.to_owned(),
        what: format!(
            "its veth peer {peer}{where_} is down: every frame sent with XDP_TX is dropped"
        ),
        fix: format!("bring {peer} up (`ip link set {peer} up`)"),
    }
}

fn gro_active(iface: &str) -> anyhow::Result<bool> {
    Ok(ethtool::features(iface)?
        .iter()
        .any(|f| f.name == "rx-gro" && f.active))
}

/// Finds the network namespace that has id `nsid` here: among `/run/netns/*` first, then
/// the namespaces of running processes.
fn find_netns(nsid: i32) -> anyhow::Result<Option<(PathBuf, OwnedFd)>> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        candidates.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        candidates.extend(
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .map(|e| e.path().join("ns/net")),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for path in candidates {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        use std::os::unix::fs::MetadataExt as _;
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let fd = OwnedFd::from(file);
        if netlink::nsid_of(fd.as_fd())? == Some(nsid) {
            return Ok(Some((path, fd)));
        }
    }
    Ok(None)
}

/// Runs `f` on a thread that first enters the network namespace `ns`.
fn in_netns<T: Send>(ns: &OwnedFd, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let raw = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: plain syscall on a descriptor that outlives the thread; it changes
            // only this thread's network namespace.
            if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                return Err(anyhow!(
                    "entering a network namespace: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Watches the XDP transmit error counters of every interface in the namespace, and the
/// veth peer of the load balancer's interface.
#[derive(Debug)]
pub struct XmitMonitor {
    iface: String,
    /// (interface, counter) -> value at the previous check.
    last: BTreeMap<(String, String), u64>,
    /// (interface, counter) -> value when the monitor started.
    start: BTreeMap<(String, String), u64>,
}

impl XmitMonitor {
    /// Starts watching; the counters' present values are the baseline.
    pub fn new(iface: &str) -> anyhow::Result<Self> {
        let now = read_all()?;
        Ok(XmitMonitor {
            iface: iface.to_owned(),
            start: now.clone(),
            last: now,
        })
    }

    /// Every XDP transmit error counter of the namespace's interfaces as the last check
    /// read it: (interface, counter) → the driver's value (for the engine's metrics).
    pub fn counters(&self) -> &BTreeMap<(String, String), u64> {
        &self.last
    }

    /// Checks the veth peer of the load balancer's interface and every counter that rose
    /// since the previous check (or since [`new`](Self::new)).
    pub fn check(&mut self) -> anyhow::Result<Vec<Finding>> {
        let mut findings: Vec<Finding> = check_veth_peer(&self.iface)?.into_iter().collect();
        let now = read_all()?;
        let mut rises: BTreeMap<&str, Vec<(&str, u64, u64)>> = BTreeMap::new();
        for ((iface, counter), &value) in &now {
            let key = (iface.clone(), counter.clone());
            let before = self.last.get(&key).copied().unwrap_or(0);
            if value > before {
                let total = value - self.start.get(&key).copied().unwrap_or(0);
                rises.entry(iface.as_str()).or_default().push((
                    counter.as_str(),
                    value - before,
                    total,
                ));
            }
        }
        let links = netlink::links().unwrap_or_default();
        for (iface, counters) in rises {
            let sum: u64 = counters.iter().map(|c| c.1).sum();
            let detail: Vec<String> = counters
                .iter()
                .map(|(name, d, total)| format!("{name} +{d} ({total} since the engine started)"))
                .collect();
            let veth_peer = links
                .iter()
                .find(|l| l.name == iface && l.is_veth())
                .map(
                    |l| match l.link.zip(l.link_netnsid.is_none().then_some(())) {
                        Some((index, ())) => links
                            .iter()
                            .find(|p| p.index == index)
                            .map_or(format!("#{index}"), |p| p.name.clone()),
                        None => "(in another namespace)".to_owned(),
                    },
                );
            let fix = match veth_peer {
                Some(peer) => peer_fix(&peer, ""),
                None => format!(
                    "check that the driver of {iface} supports XDP transmit (XDP_TX and \
                     ndo_xdp_xmit for redirects) and has XDP TX queues for every CPU \
                     (`ethtool -l {iface}`, `ethtool -S {iface}`)"
                ),
            };
            findings.push(Finding {
                kind: FindingKind::TransmitErrors,
                interface: iface.to_owned(),
                what: format!(
                    "{sum} XDP frames were dropped by the driver on transmit since the \
                     previous check ({}): the load balancer counted them as forwarded",
                    detail.join(", ")
                ),
                fix,
            });
        }
        self.last = now;
        Ok(findings)
    }
}

/// The XDP transmit error counters of every interface of the namespace.
fn read_all() -> anyhow::Result<BTreeMap<(String, String), u64>> {
    let mut all = BTreeMap::new();
    for link in netlink::links()? {
        // An interface can vanish between the listing and the read; a driver may have
        // no statistics at all.
        let Ok(counters) = xmit_error_counters(&link.name) else {
            continue;
        };
        for (name, value) in counters {
            all.insert((link.name.clone(), name), value);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_error_counters_are_told_from_verdict_counters() {
        for yes in [
            "rx_queue_0_xdp_tx_errors",
            "tx_queue_3_xdp_xmit_errors",
            "tx_xdp_err",
            "rx_xdp_tx_err",
            "rx_xdp_tx_full",
            "tx_queue_1_xdp_tx_drops",
            "XDP_TX_ERRORS",
        ] {
            assert!(is_xmit_error_counter(yes), "{yes}");
        }
        for no in [
            "rx_queue_0_xdp_packets",
            "rx_queue_0_xdp_drops",
            "rx_queue_0_xdp_tx",
            "rx_queue_0_xdp_redirect",
            "tx_queue_0_xdp_xmit",
            "rx_errors",
            "peer_ifindex",
        ] {
            assert!(!is_xmit_error_counter(no), "{no}");
        }
    }
}
