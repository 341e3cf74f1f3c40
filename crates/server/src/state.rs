//! What [`crate::setup`] changed, so that [`crate::undo`] reverses exactly that.
//!
//! One JSON file per pin directory under [`STATE_DIR`] (bpffs cannot hold regular files).
//! Setup and undo hold an exclusive `flock` on the directory while they read, change and
//! write the state, so two runs never interleave.
use std::{
    fs::{self, File},
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::DecapKind;

/// Directory of the state files (tmpfs on most systems: forgotten at reboot, like the
/// runtime changes they describe).
pub const STATE_DIR: &str = "/run/ricochet-server";

/// The state file that records what setup changed for pin directory `pin_dir`.
pub fn state_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '-' } else { c })
        .collect();
    let name = if name.is_empty() {
        "root".to_owned()
    } else {
        name
    };
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

/// Everything setup changed. Values are what was there before, recorded the first time
/// setup changed them (a second setup never overwrites an earlier `previous`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Decapsulation chosen by the first setup.
    pub decap: Option<DecapKind>,
    /// The interfaces set up, in order; the first is check's default.
    pub interfaces: Vec<String>,
    /// Every VIP setup was asked for (whether or not it had to change anything for it).
    pub vips: Vec<IpAddr>,
    /// Sysctls changed, in the order they were changed.
    pub sysctls: Vec<SysctlChange>,
    /// Addresses added (VIPs on `lo`, and on `tunl0`/`ip6tnl0` in kernel mode).
    pub addresses: Vec<AddedAddress>,
    /// Interfaces created (kernel tunnels that did not exist).
    pub links_created: Vec<String>,
    /// Interfaces that were down and were set up.
    pub links_set_up: Vec<String>,
    /// The eBPF decapsulator's objects.
    pub ebpf: EbpfState,
    /// fou ports added for GUE (kernel decapsulation).
    #[serde(default)]
    pub fou_ports: Vec<FouPort>,
}

/// A fou port setup added: UDP to `port` goes to the IP-in-IP handler of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FouPort {
    pub port: u16,
    pub v6: bool,
}

/// One sysctl setup changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SysctlChange {
    pub key: String,
    pub previous: String,
    pub value: String,
}

/// One address setup added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AddedAddress {
    pub dev: String,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The eBPF decapsulator's pins and map entries that setup created.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EbpfState {
    /// The pin directory did not exist.
    pub created_pin_dir: bool,
    /// The maps were created (not reused from earlier pins).
    pub created_maps: bool,
    /// `DECAP_GUE_PORTS` was created (a pin directory set up before GUE lacks it).
    #[serde(default)]
    pub created_gue_ports: bool,
    /// Pinned TCX links, one per interface.
    pub links: Vec<PinnedTcx>,
    /// VIPs inserted into `DECAP_VIPS`.
    pub vips: Vec<IpAddr>,
}

/// A TCX link pinned at `pin`, attaching the decapsulator to `interface`'s ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinnedTcx {
    pub interface: String,
    pub pin: PathBuf,
}

impl State {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.sysctls.is_empty()
            && self.addresses.is_empty()
            && self.links_created.is_empty()
            && self.links_set_up.is_empty()
            && self.ebpf == EbpfState::default()
    }
}

/// An open, locked state file.
pub(crate) struct StateFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateFile {
    /// Locks the state directory (creating it) and reads the state of `pin_dir`, if any.
    pub fn open(pin_dir: &Path) -> anyhow::Result<(Self, Option<State>)> {
        fs::create_dir_all(STATE_DIR)
            .with_context(|| format!("creating state directory {STATE_DIR}"))?;
        let dir = File::open(STATE_DIR)
            .with_context(|| format!("opening state directory {STATE_DIR}"))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking state directory {STATE_DIR}"))?;
        let path = state_path(pin_dir);
        let state = read(&path)?;
        Ok((Self { path, _lock: lock }, state))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state` atomically (temporary file + rename), or removes the file when
    /// nothing is recorded.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        if state.is_empty() && state.vips.is_empty() {
            return self.remove();
        }
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(state).context("serialising the state")?;
        let mut f =
            File::create(&tmp).with_context(|| format!("writing state file {}", tmp.display()))?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing state file {}", tmp.display()))?;
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))
    }

    /// Removes the state file.
    pub fn remove(&self) -> anyhow::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing state file {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Reads the state at `path` without locking (for check); `None` if there is none.
pub(crate) fn read(path: &Path) -> anyhow::Result<Option<State>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "parsing state file {} (remove it if it is damaged)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading state file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_names_follow_the_pin_dir() {
        assert_eq!(
            state_path(Path::new("/sys/fs/bpf/ricochet-server")),
            PathBuf::from("/run/ricochet-server/sys-fs-bpf-ricochet-server.json")
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = State {
            decap: Some(DecapKind::Ebpf),
            ..State::default()
        };
        s.sysctls.push(SysctlChange {
            key: "net.ipv4.conf.all.rp_filter".into(),
            previous: "1".into(),
            value: "0".into(),
        });
        s.ebpf.links.push(PinnedTcx {
            interface: "eth0".into(),
            pin: "/sys/fs/bpf/x/link_eth0".into(),
        });
        let back: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(!s.is_empty());
        assert!(State::default().is_empty());
    }
}
