//! Ricochet's test kit: what the privileged tests and the benchmarks share, written
//! independently of the code under test. Dev-only: production crates never depend on
//! it (only as a dev-dependency), and it is never published.
//!
//! - [`checksum`]: the Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sums.
//! - [`packets`]: whole Ethernet frames on `etherparse`, with every header knob the
//!   fixtures need, and the frames the load balancer must send (IPIP, ICMP errors).
//! - [`ip`]: bare IP packets for raw sockets.
//! - [`netns`]: network namespaces owned by threads ([`netns::in_fresh_netns`],
//!   [`netns::Ns`]).
//! - [`lab`]: the fixture lab's network inside such a namespace.
//! - [`prometheus`]: `/metrics` read by the Python client's parser and `promtool`.
//! - [`require_root`] and [`is_bpffs`].
//!
//! The seed's multi-namespace topology for end-to-end tests is `ricochet-testbed`'s
//! (`ip netns` namespaces that processes can join), which the demo uses too.

pub mod checksum;
pub mod ip;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod prometheus;

use std::path::Path;

/// Fails the calling test unless the process runs as root, saying that `what` (e.g.
/// "the fixtures load eBPF and create namespaces") needs it.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what}: this needs root (CAP_NET_ADMIN, CAP_BPF); run the privileged tests as root, \
         e.g. `cargo xtask test` in a root shell"
    );
}

/// `BPF_FS_MAGIC` of statfs(2).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether a bpf filesystem is mounted at `path`.
pub fn is_bpffs(path: &Path) -> bool {
    #[allow(clippy::unnecessary_cast, reason = "f_type's type depends on the libc")]
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpffs_is_recognised_and_other_filesystems_are_not() {
        assert!(!is_bpffs(Path::new("/proc")));
        assert!(!is_bpffs(Path::new("/nonexistent/ricochet-testkit")));
        // /sys/fs/bpf is a bpffs wherever the privileged tests run (they mount it there).
        if Path::new("/sys/fs/bpf").exists()
            && std::fs::read_to_string("/proc/self/mounts")
                .unwrap()
                .lines()
                .any(|l| l.starts_with("bpf /sys/fs/bpf ") || l.contains(" /sys/fs/bpf bpf "))
        {
            assert!(is_bpffs(Path::new("/sys/fs/bpf")));
        }
    }
}
