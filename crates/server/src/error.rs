//! The errors a caller may want to tell apart (for exit codes or hints); everything else is
//! an `anyhow` chain whose context names the object (interface, VIP, sysctl, pin).
use std::path::PathBuf;

use crate::DecapKind;

/// A specific, user-fixable reason why an operation could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The process lacks CAP_NET_ADMIN or CAP_BPF.
    #[error("needs root (CAP_NET_ADMIN, CAP_BPF): run as root")]
    NotRoot,
    /// The named interface does not exist in this network namespace.
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    /// No interface was given and there is no default route to pick one from.
    #[error("no default route (IPv4 or IPv6) to find the interface tunnel packets arrive on: pass --interface")]
    NoDefaultRoute,
    /// The spec has no VIP.
    #[error("no VIPs given: pass at least one --vip")]
    NoVips,
    /// A VIP that cannot be a service address.
    #[error("VIP {0} is not a unicast address")]
    BadVip(std::net::IpAddr),
    /// The pin directory is not on a BPF filesystem.
    #[error("{} is not on a BPF filesystem (bpffs): mount one with `mount -t bpf bpf /sys/fs/bpf`", .0.display())]
    NoBpffs(PathBuf),
    /// The pin directory's bpffs lives in a mount namespace that ends with this process.
    #[error(
        "{} would be pinned in a bpffs that only this command's private mount namespace holds \
         (`ip netns exec` makes one, with its own /sys): it goes away when the command exits, \
         and the decapsulator with it. Enter only the network namespace instead: `{fix}`",
        pin_dir.display()
    )]
    PinsDieWithProcess {
        /// The pin directory asked for.
        pin_dir: PathBuf,
        /// The command to run instead.
        fix: String,
    },
    /// Kernel decapsulation was asked for but the tunnel module is missing.
    #[error("the kernel has no {module} module (needed for {device}): use --decap ebpf (or auto)")]
    NoKernelTunnel {
        /// `ipip` or `ip6_tunnel`.
        module: &'static str,
        /// `tunl0` or `ip6tnl0`.
        device: &'static str,
    },
    /// The host is already set up with the other decapsulation.
    #[error("this host is already set up with {0}: run `ricochet server undo` first to switch")]
    DecapConflict(DecapKind),
}
