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
