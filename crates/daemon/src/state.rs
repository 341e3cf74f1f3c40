//! The state file: what `ricochet status` reads besides the live counters (which it
//! takes from the pinned maps), written by the daemon after every apply and every
//! second.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ricochet_api::types::{EngineWarning, ServerHealth};
use ricochet_dataplane::kernel::{KernelDataplane, LoadOptions};
use ricochet_dataplane::Dataplane;
use serde::{Deserialize, Serialize};

/// What `ricochet status` reads besides the live counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub interface: String,
    pub pin_dir: PathBuf,
    /// The configuration file, when the engine follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// The controller, when the engine follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The controller's configuration revision that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_revision: Option<u64>,
    /// The health of every enabled pool server, from the engine's monitors.
    #[serde(default)]
    pub health: Vec<ServerHealth>,
    pub pid: u32,
    pub status: ricochet_engine::status::Status,
    /// Packets lost without an error elsewhere (XDP frames a driver drops), with the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<EngineWarning>,
    /// The announcement of the group's VIPs over BGP, if the engine announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<ricochet_api::types::BgpReport>,
    /// Where BIRD is told what to announce (so `ricochet detach` can withdraw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_include: Option<BirdFiles>,
}

/// BIRD's control socket and the include file the engine writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirdFiles {
    pub socket: PathBuf,
    pub include_file: PathBuf,
}

impl From<crate::bgp::BgpOptions> for BirdFiles {
    fn from(o: crate::bgp::BgpOptions) -> Self {
        BirdFiles {
            socket: o.bird_socket,
            include_file: o.include_file,
        }
    }
}

/// The state file in `dir`.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Where the running configuration comes from, as the state file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The configuration file followed.
    pub config: Option<PathBuf>,
    /// The controller followed.
    pub controller: Option<String>,
    /// The controller's revision that runs.
    pub controller_revision: Option<u64>,
}

/// Writes `state` as `dir`'s state file: a temporary file in `dir` renamed over the old
/// one, so that `ricochet status` reads the old or the new one, never half of one (and a
/// failed write leaves no temporary file behind).
pub fn write(dir: &Path, state: &StateFile) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = state_file(dir);
    let bytes = serde_json::to_vec_pretty(state)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.json.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // Readable by all, as a file written plainly would be (temporary files are 0600).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .and_then(|()| tmp.write_all(&bytes))
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // The error's own copy of the temporary file goes with it: removed now, not when
    // the caller drops the error.
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads `dir`'s state file.
pub fn read(dir: &Path) -> anyhow::Result<StateFile> {
    let path = state_file(dir);
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The engine's data plane as the status command sees it: the pinned maps.
pub fn open_pinned(pin_dir: &Path) -> anyhow::Result<KernelDataplane> {
    if !pin_dir.join(ricochet_common::maps::SERVICES).exists() {
        bail!(
            "no data plane is pinned at {}: is the engine running (or was it detached)?",
            pin_dir.display()
        );
    }
    // The pins' own capacities: asking for others would only log that they stay.
    let dp = KernelDataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir.to_owned()),
        caps: ricochet_dataplane::kernel::pinned_caps(pin_dir)?,
    })?;
    let _ = dp.capacities();
    Ok(dp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(revision: u64) -> StateFile {
        StateFile {
            interface: "eth0".into(),
            pin_dir: "/sys/fs/bpf/ricochet".into(),
            config: Some("/etc/ricochet.yaml".into()),
            controller: None,
            controller_revision: None,
            health: vec![],
            warnings: vec![],
            bgp: None,
            bgp_include: None,
            pid: 42,
            status: ricochet_engine::status::Status {
                revision,
                services: vec![],
                pools: vec![],
                reasons: vec![("pass_not_vip".into(), 7)],
                flows: None,
            },
        }
    }

    #[test]
    fn the_state_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("run");
        write(&sub, &state(1)).unwrap();
        assert_eq!(read(&sub).unwrap(), state(1));
        write(&sub, &state(2)).unwrap();
        assert_eq!(read(&sub).unwrap(), state(2));
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["state.json"]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(state_file(&sub)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_state_directory_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let e = write(&file.join("run"), &state(1)).unwrap_err();
        assert!(format!("{e:#}").contains("creating"), "{e:#}");
        assert!(format!("{e:#}").contains("a-file/run"), "{e:#}");
    }
}
