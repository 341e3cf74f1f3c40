//! Ricochet's benchmarks, run by `cargo xtask bench`.
//!
//! Each section of the report is a module with a `run(&Ctx) -> Result<Section>`: it measures,
//! keeps its raw data in [`Ctx::raw_dir`], draws its plots into [`Ctx::out_dir`] and returns its
//! part of the report (Markdown). [`report`] puts the sections together with the machine, the
//! method and the date. Benchmarks report figures and ratios measured side by side in one run;
//! they never fail on a number (a section fails only when it cannot measure at all).

pub mod control_plane;
pub mod end_to_end;
pub mod forwarding;
pub mod machine;
pub mod maglev;
pub mod per_packet;
pub mod plot;
pub mod report;
pub mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where a run writes, and how long it may take.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The report's directory: `report.md` and the PNG plots.
    pub out_dir: PathBuf,
    /// Raw data beside the report (`<out_dir>/raw`).
    pub raw_dir: PathBuf,
    /// A short run (fewer samples, shorter durations) to check that everything works; its
    /// figures are noisier and the report says so.
    pub quick: bool,
    /// The `ricochet` binary, for sections that run the engine daemon.
    pub ricochet_bin: Option<PathBuf>,
}

impl Ctx {
    pub fn new(out_dir: &Path, quick: bool, ricochet_bin: Option<PathBuf>) -> anyhow::Result<Self> {
        let raw_dir = out_dir.join("raw");
        std::fs::create_dir_all(&raw_dir)
            .with_context(|| format!("creating {}", raw_dir.display()))?;
        Ok(Ctx {
            out_dir: out_dir.to_owned(),
            raw_dir,
            quick,
            ricochet_bin,
        })
    }

    /// Writes `value` as pretty JSON to `raw/<name>` and returns the path relative to the
    /// report, for linking.
    pub fn write_raw_json<T: Serialize>(&self, name: &str, value: &T) -> anyhow::Result<String> {
        let path = self.raw_dir.join(name);
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(format!("raw/{name}"))
    }

    /// Writes text (CSV, logs) to `raw/<name>`; returns the relative path.
    pub fn write_raw_text(&self, name: &str, text: &str) -> anyhow::Result<String> {
        let path = self.raw_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(format!("raw/{name}"))
    }

    /// The path of a plot in the report directory.
    pub fn plot_path(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }
}

/// One section of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    /// Stable identifier (`per-packet`, `forwarding`, ...).
    pub id: String,
    pub title: String,
    /// The section's body in Markdown (method, tables, plots as `![..](file.png)`, links to raw
    /// data). Headings inside start at `###`.
    pub markdown: String,
    /// One-line headline figures for the report's summary.
    pub headlines: Vec<String>,
    /// Wall-clock seconds the section took.
    #[serde(default)]
    pub seconds: f64,
}

/// The sections in report order: id, title, runner.
pub type Runner = fn(&Ctx) -> anyhow::Result<Section>;

pub const SECTIONS: &[(&str, &str, Runner)] = &[
    (
        "per-packet",
        "Per-packet cost (BPF_PROG_TEST_RUN)",
        per_packet::run,
    ),
    (
        "forwarding",
        "Forwarding rate through a veth",
        forwarding::run,
    ),
    ("maglev", "Maglev tables", maglev::run),
    ("control-plane", "Control plane", control_plane::run),
    (
        "end-to-end",
        "End to end: wrk against Ricochet (DSR) and nginx (L4 proxy)",
        end_to_end::run,
    ),
];

/// Runs one section, timing it and saving its result as `raw/<id>.section.json` so that the
/// report can be assembled again without measuring.
pub fn run_section(ctx: &Ctx, id: &str, runner: Runner) -> anyhow::Result<Section> {
    let start = Instant::now();
    let mut section = runner(ctx).with_context(|| format!("benchmark section {id}"))?;
    section.seconds = start.elapsed().as_secs_f64();
    ctx.write_raw_json(&format!("{id}.section.json"), &section)?;
    Ok(section)
}

/// Pins the calling thread to one CPU (measurements that must not migrate).
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("CPU index out of range")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to CPU {cpu}"))
}
