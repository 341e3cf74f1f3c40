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

/// Writes `state` as `dir`'s state file: a temporary file renamed over the old one, so
/// that `ricochet status` reads the old or the new one, never half of one.
pub fn write(dir: &Path, state: &StateFile) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = state_file(dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
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
