//! Makes a Linux host ready to be a Ricochet L3 DSR server, checks it, and undoes it.
//!
//! In L3 Direct Server Return the load balancer does not rewrite the client's packet: it wraps
//! it in an outer IPv4 (IPIP, protocol 4) or IPv6 (IP6IP6, next header 41) header addressed to
//! the chosen server. The server must then
//!
//! 1. own the VIP, so that the inner packet (client → VIP) is local and the reply can use the
//!    VIP as its source: the VIP goes on `lo` (`/32` or `/128`), never on the wire-facing
//!    interface;
//! 2. decapsulate the outer header: the kernel's `tunl0`/`ip6tnl0` fallback tunnels (modules
//!    `ipip` and `ip6_tunnel`), or, on kernels without those modules, Ricochet's TC
//!    decapsulator (`ricochet_decap`, from `crates/ebpf`) on the interface's ingress;
//! 3. accept the decapsulated packet although its source (the client) may not be routed back
//!    through the interface it arrived on: `rp_filter` off for `all`, `lo` and the interface
//!    (the kernel applies `max(all, interface)`);
//! 4. keep the VIPs out of ARP on the wire, as every LVS-DR server does: `arp_ignore=1` (never
//!    answer ARP for an address on `lo`) and `arp_announce=2` (ARP requests name the
//!    interface's own address, never the VIP a reply leaves from), for `all` and the
//!    interface (again `max(all, interface)`). IPv4 only: IPv6 has no ARP, and neighbour
//!    discovery never advertises an address held on `lo`.
//!
//! The replies then leave with source VIP straight to the client. [`setup`] does all four,
//! idempotently, and records every change in a state file under [`STATE_DIR`] so that
//! [`undo`] restores exactly what was there before. [`check`] lists what is missing, each
//! item with the command that fixes it. [`netplan_and_sysctl`] prints the persistent
//! configuration of the seed blog post (netplan `lo` + `tunnels`, `sysctl.conf`, plus the ARP
//! settings) for hosts that have the tunnel modules.
//!
//! # How the eBPF decapsulator is attached and persisted
//!
//! The decapsulator is attached with a **TCX link** (Linux ≥ 6.6) at ingress and the link is
//! pinned in the pin directory (default [`DEFAULT_PIN_DIR`]) next to its two maps
//! (`DECAP_VIPS`, `DECAP_STATS`). A pinned TCX link keeps the program attached after the
//! process exits; unpinning it detaches the program. TCX needs no `clsact` qdisc, so none is
//! added. aya 0.14's `SchedClassifier::attach` would also pick TCX on this kernel, but it
//! falls back to a netlink `tc` filter on older ones; we ask for TCX explicitly because a
//! pinned link is what makes the attachment owned (undo removes exactly our link, setup can
//! replace the program atomically with `BPF_LINK_UPDATE`). Kernels older than 6.6 almost
//! always have the `ipip`/`ip6_tunnel` modules, which [`DecapMode::Auto`] prefers anyway.
//!
//! # Limits
//! - UDP services must bind to the VIP (or answer with `IP_PKTINFO`): a socket bound to the
//!   wildcard address would answer from the server's primary address, which the client
//!   does not know. TCP is fine with a wildcard listener.
//! - The encapsulation adds 20 (IPv4) or 40 (IPv6) bytes on the way in: [`check`] warns
//!   when the interface MTU cannot carry a full-size client packet plus that header.
//! - All functions act on the network namespace of the calling thread.
#![warn(missing_docs)]

mod check;
mod cmd;
mod ebpf;
mod error;
mod iface;
mod kernel;
mod netplan;
mod pins;
mod setup;
mod state;
mod sysctl;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

pub use check::{check, CheckItem, CheckReport, Severity};
pub use error::ServerError;
pub use netplan::{netplan_and_sysctl, netplan_yaml, sysctl_conf};
pub use pins::{ensure_pins_outlive_process, keyed_default_pin_dir};
pub use setup::{setup, undo, SetupReport};
pub use state::{state_path, STATE_DIR};

/// Where the decapsulator's maps and link are pinned unless [`ServerSpec::pin_dir`] says
/// otherwise: setup, check and undo key it by the network namespace
/// ([`keyed_default_pin_dir`]), because servers in two namespaces of one host share its
/// bpffs and `/run` and must not share pins and undo record.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ricochet-server";

/// What to make DSR-ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The virtual IPs this server answers for (IPv4 and/or IPv6).
    pub vips: Vec<IpAddr>,
    /// The interface tunnel packets arrive on; `None`: the one holding the default route
    /// (IPv4, else IPv6).
    pub interface: Option<String>,
    /// How to decapsulate.
    pub decap: DecapMode,
    /// bpffs directory for the eBPF decapsulator's maps and link; also names the state file.
    pub pin_dir: PathBuf,
    /// UDP ports on which the eBPF decapsulator takes GUE (packets to a VIP in them; other
    /// UDP to these ports passes as it is). Default: [`DEFAULT_GUE_PORT`].
    pub gue_ports: Vec<u16>,
}

/// The GUE port of a network profile that names none (`ricochet_config`'s default).
pub const DEFAULT_GUE_PORT: u16 = 6080;

impl ServerSpec {
    /// A spec for `vips` with the defaults: default-route interface, [`DecapMode::Auto`],
    /// [`DEFAULT_PIN_DIR`].
    pub fn new(vips: Vec<IpAddr>) -> Self {
        Self {
            vips,
            interface: None,
            decap: DecapMode::Auto,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            gue_ports: vec![DEFAULT_GUE_PORT],
        }
    }

    /// This spec with [`DEFAULT_PIN_DIR`] replaced by the calling thread's network
    /// namespace's own default ([`keyed_default_pin_dir`]); any other directory is kept.
    pub fn resolved(&self) -> ServerSpec {
        let mut spec = self.clone();
        if spec.pin_dir == Path::new(DEFAULT_PIN_DIR) {
            spec.pin_dir = keyed_default_pin_dir();
        }
        spec
    }

    fn has_v4(&self) -> bool {
        self.vips.iter().any(IpAddr::is_ipv4)
    }

    fn has_v6(&self) -> bool {
        self.vips.iter().any(IpAddr::is_ipv6)
    }
}

/// Which decapsulation [`setup`] installs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DecapMode {
    /// The kernel's tunnels when its `ipip` (and, for IPv6 VIPs, `ip6_tunnel`) module is
    /// available, else the eBPF decapsulator. A host already set up keeps its choice.
    #[default]
    Auto,
    /// The kernel's `tunl0`/`ip6tnl0`, as the seed's netplan does; fails without the modules.
    Kernel,
    /// Ricochet's TC decapsulator, pinned in the pin directory.
    Ebpf,
}

impl FromStr for DecapMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kernel" => Ok(Self::Kernel),
            "ebpf" => Ok(Self::Ebpf),
            other => Err(format!(
                "unknown decapsulation mode {other:?}: expected auto, kernel or ebpf"
            )),
        }
    }
}

impl fmt::Display for DecapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Kernel => "kernel",
            Self::Ebpf => "ebpf",
        })
    }
}

/// The decapsulation actually in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecapKind {
    /// The kernel's `tunl0` / `ip6tnl0`.
    Kernel,
    /// Ricochet's TC decapsulator (TCX link pinned in the pin directory).
    Ebpf,
}

impl fmt::Display for DecapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kernel => "kernel tunnels (tunl0/ip6tnl0)",
            Self::Ebpf => "eBPF decapsulator (TC ingress, pinned TCX link)",
        })
    }
}

/// The decapsulator's counters from the maps pinned in `pin_dir`, summed over CPUs, one per
/// [`ricochet_common::DecapReason`] in its order (`decapsulated`, `pass_not_tunnel`,
/// `drop_inner_not_vip`, ...).
pub fn decap_stats(pin_dir: &Path) -> anyhow::Result<Vec<(&'static str, u64)>> {
    ebpf::stats(pin_dir)
}

/// The global addresses of `interface` (for the `local:` lines of [`netplan_and_sysctl`]).
pub fn server_addresses(interface: &str) -> anyhow::Result<Vec<IpAddr>> {
    iface::require(interface)?;
    Ok(iface::addresses(interface)?
        .into_iter()
        .filter(|a| a.global)
        .map(|a| a.addr)
        .collect())
}
