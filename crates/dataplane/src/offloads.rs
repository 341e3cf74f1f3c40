//! Receive offloads that generic XDP must not see.
//!
//! A generic (skb-mode) XDP program runs after GRO: with GRO (or LRO, or hardware GRO)
//! on, it is handed packets merged from several segments, several KB long, and the load
//! balancer answers "fragmentation needed" to a client whose segments all fit. So while
//! the program is attached in generic mode these features are off, and what was on before
//! is turned on again when it is detached. Native XDP runs before GRO and needs nothing.
//!
//! With a pin directory the record of what was on is a symlink `offloads-IFACE` in that
//! directory (bpffs holds symlinks but no files): it lives exactly as long as the pinned
//! link, and `detach` reads it to restore the features.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use tracing::info;

use crate::ethtool;

/// The features generic XDP needs off: every kind of receive merging.
pub const MERGING: [&str; 4] = ["rx-gro", "rx-lro", "rx-gro-hw", "rx-gro-list"];

const RECORD_PREFIX: &str = "ricochet-offloads-v1:";

/// The features that were on before [`disable_merging`] turned them off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub on: Vec<String>,
}

impl Saved {
    fn encode(&self) -> String {
        format!("{RECORD_PREFIX}{}", self.on.join(","))
    }

    fn decode(text: &str) -> anyhow::Result<Saved> {
        let Some(list) = text.strip_prefix(RECORD_PREFIX) else {
            bail!("{text:?} is not a record of offloads written by Ricochet");
        };
        let on: Vec<String> = list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = on.iter().find(|f| !MERGING.contains(&f.as_str())) {
            bail!("the offloads record names {bad:?}, which Ricochet never turns off");
        }
        Ok(Saved { on })
    }
}

/// Turns every merging feature of `iface` off and returns those that were on. Fails,
/// restoring what it changed, when one stays on (a driver that cannot turn it off).
pub fn disable_merging(iface: &str) -> anyhow::Result<Saved> {
    let before = ethtool::features(iface)?;
    let on: Vec<String> = before
        .iter()
        .filter(|f| f.active && MERGING.contains(&f.name.as_str()))
        .map(|f| f.name.clone())
        .collect();
    let saved = Saved { on };
    if saved.on.is_empty() {
        return Ok(saved);
    }
    let changes: Vec<(&str, bool)> = saved.on.iter().map(|f| (f.as_str(), false)).collect();
    let after = ethtool::set_features(iface, &changes)?;
    let stuck: Vec<&str> = after
        .iter()
        .filter(|f| f.active && MERGING.contains(&f.name.as_str()))
        .map(|f| f.name.as_str())
        .collect();
    if !stuck.is_empty() {
        let stuck = stuck.join(", ");
        let _ = restore(iface, &saved);
        bail!(
            "generic XDP on {iface} needs {stuck} off (the program would see merged \
             packets larger than the MTU), and the driver keeps it on: use native XDP \
             (--xdp-mode native)"
        );
    }
    info!(
        iface,
        features = saved.on.join(","),
        "turned receive merging off for generic XDP; `ricochet detach` turns it on again"
    );
    Ok(saved)
}

/// Turns the features of `saved` on again.
pub fn restore(iface: &str, saved: &Saved) -> anyhow::Result<()> {
    if saved.on.is_empty() {
        return Ok(());
    }
    let changes: Vec<(&str, bool)> = saved.on.iter().map(|f| (f.as_str(), true)).collect();
    ethtool::set_features(iface, &changes)
        .with_context(|| format!("turning {} on again on {iface}", saved.on.join(", ")))?;
    info!(
        iface,
        features = saved.on.join(","),
        "receive merging restored"
    );
    Ok(())
}

/// Where the record of `iface`'s offloads lives in a pin directory.
pub fn record_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("offloads-{iface}"))
}

/// Writes the record (a symlink whose target is the list).
pub fn write_record(pin_dir: &Path, iface: &str, saved: &Saved) -> anyhow::Result<()> {
    let path = record_path(pin_dir, iface);
    std::os::unix::fs::symlink(saved.encode(), &path)
        .with_context(|| format!("recording the offloads of {iface} at {}", path.display()))
}

/// Reads a record, if there is one.
pub fn read_record(path: &Path) -> anyhow::Result<Option<Saved>> {
    match std::fs::read_link(path) {
        Ok(target) => Saved::decode(&target.to_string_lossy())
            .with_context(|| format!("reading {}", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_ones_are_refused() {
        for on in [vec![], vec!["rx-gro".to_owned(), "rx-gro-hw".to_owned()]] {
            let s = Saved { on };
            assert_eq!(Saved::decode(&s.encode()).unwrap(), s);
        }
        assert!(Saved::decode("rx-gro").is_err());
        let e = Saved::decode("ricochet-offloads-v1:tx-checksumming")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tx-checksumming"), "{e}");
    }
}
