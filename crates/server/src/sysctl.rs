//! Reading and writing `/proc/sys` for the calling thread's network namespace.
//!
//! Keys use sysctl(8)'s dotted notation, where a dot inside a component (an interface name
//! such as `eth0.100`) is written as a slash: `net.ipv4.conf.eth0/100.rp_filter`.
use std::path::PathBuf;

use anyhow::Context as _;

/// The key of a per-interface (or `all`/`default`) `conf` setting.
pub(crate) fn conf_key(family: &str, dev: &str, name: &str) -> String {
    format!("net.{family}.conf.{}.{name}", dev.replace('.', "/"))
}

/// Whether an effective (`max(all, interface)`) `arp_ignore` keeps an interface from
/// answering ARP for addresses held elsewhere, such as the VIPs on `lo`: 1 and 2 reply only
/// for addresses on the receiving interface and 8 never replies, whereas 0 replies for any
/// local address, 3 hides only scope-host addresses (a VIP on `lo` is scope global) and the
/// reserved 4-7 behave like 0. The set {1, 2, 8} is closed under max, so `all` and the
/// interface each holding one of them is enough.
pub(crate) fn arp_ignore_hides_lo(value: i64) -> bool {
    matches!(value, 1 | 2 | 8)
}

/// The `arp_announce` that keeps VIPs out of ARP requests: 2, always the outgoing
/// interface's own address as sender. The kernel treats values above 2 like 0 (the packet's
/// source, a VIP when it answers from one), so the effective `max(all, interface)` must be
/// exactly this.
pub(crate) const ARP_ANNOUNCE: i64 = 2;

/// `/proc/sys/...` of a dotted key.
pub(crate) fn path(key: &str) -> PathBuf {
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    PathBuf::from("/proc/sys").join(rel)
}

/// The value of `key`, trimmed.
pub(crate) fn read(key: &str) -> anyhow::Result<String> {
    let p = path(key);
    let v = std::fs::read_to_string(&p)
        .with_context(|| format!("reading sysctl {key} ({})", p.display()))?;
    Ok(v.trim().to_owned())
}

/// The value of `key` parsed as an integer.
pub(crate) fn read_int(key: &str) -> anyhow::Result<i64> {
    let v = read(key)?;
    v.parse()
        .with_context(|| format!("sysctl {key} is {v:?}, not an integer"))
}

/// Sets `key` to `value`.
pub(crate) fn write(key: &str, value: &str) -> anyhow::Result<()> {
    let p = path(key);
    std::fs::write(&p, value)
        .with_context(|| format!("setting sysctl {key}={value} ({})", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_ignore_values_that_hide_lo_addresses() {
        let hiding: Vec<i64> = (0..=9).filter(|&v| arp_ignore_hides_lo(v)).collect();
        assert_eq!(hiding, [1, 2, 8]);
        // Closed under max: any two hiding values of all/interface still hide.
        for a in [1, 2, 8] {
            for b in [1, 2, 8] {
                assert!(arp_ignore_hides_lo(i64::max(a, b)));
            }
        }
    }

    #[test]
    fn keys_and_paths_swap_dots_and_slashes() {
        let k = conf_key("ipv4", "eth0.100", "rp_filter");
        assert_eq!(k, "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(
            path(&k),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
