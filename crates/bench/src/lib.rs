//! Ricochet's benchmarks, run by `cargo xtask bench`.
//!
//! Each section of the report is a module with a `run(&Ctx) -> Result<Section>`: it measures,
//! keeps its raw data in [`Ctx::raw_dir`], draws its plots into [`Ctx::out_dir`] and returns its
//! part of the report (Markdown). [`report`] puts the sections together with the machine, the
//! method and the date. Benchmarks report figures and ratios measured side by side in one run;
//! they never fail on a number (a section fails only when it cannot measure at all).

pub mod control_plane;
pub mod controller;
pub mod end_to_end;
pub mod forwarding;
pub mod katran;
pub mod leftovers;
pub mod machine;
pub mod maglev;
pub mod per_packet;
pub mod plot;
pub mod report;
pub mod scale_out;
pub mod stats;
pub mod sys;

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
    /// Katran's balancer object (`balancer.bpf.o`, built by the user from Katran's
    /// sources): the per-packet section measures it beside Ricochet when given.
    pub katran_object: Option<PathBuf>,
    /// Measure with every service's flow table consulted (`CONSULT_FLOWS` set, as right
    /// after a pool change); otherwise in the steady state, the flags cleared by the
    /// engine's scan of the filled table.
    pub consult_flows: bool,
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
            katran_object: None,
            consult_flows: false,
        })
    }

    /// Measures Katran's balancer object at `path` beside Ricochet (per-packet section).
    pub fn with_katran_object(mut self, path: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(path) = &path {
            anyhow::ensure!(
                path.is_file(),
                "--katran-object {}: no such file (build Katran's balancer.bpf.o first: see \
                 docs/benchmarks for the command)",
                path.display()
            );
        }
        self.katran_object = path;
        Ok(self)
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

    /// The `ricochet` binary for the sections that run the daemon: the one given, else the
    /// one beside this executable (both are in `target/release`).
    pub fn ricochet_binary(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.ricochet_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("locating this executable")?
                .with_file_name("ricochet"),
        };
        anyhow::ensure!(
            path.is_file(),
            "the ricochet binary {} does not exist: build it (`cargo build --release -p \
             ricochet`) or pass --ricochet PATH (`cargo xtask bench` does)",
            path.display()
        );
        Ok(path)
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

/// What a section's runner measured: its body. The id, title and time come from
/// [`run_section`], so a runner cannot mislabel its section.
#[derive(Clone, Debug)]
pub struct Body {
    /// See [`Section::markdown`].
    pub markdown: String,
    /// See [`Section::headlines`].
    pub headlines: Vec<String>,
}

/// Measures one section.
pub type Runner = fn(&Ctx) -> anyhow::Result<Body>;

/// The sections in report order: id, title, runner.
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
    ("controller", "Controller writes", controller::run),
    (
        "end-to-end",
        "End to end: wrk against Ricochet (DSR) and nginx (L4 proxy)",
        end_to_end::run,
    ),
    (
        "scale-out",
        "Scale-out: two engines behind ECMP, routes from BGP",
        scale_out::run,
    ),
];

/// Runs one section, labelling it with its id and title, timing it and saving it as
/// `raw/<id>.section.json` (the section as it appears in the report, for other tools).
pub fn run_section(ctx: &Ctx, id: &str, title: &str, runner: Runner) -> anyhow::Result<Section> {
    let start = Instant::now();
    let before = leftovers::snapshot().context("listing this run's namespaces and links")?;
    let result = runner(ctx);
    // Checked whether the section succeeded or not: a failing one must clean up too.
    let cleaned = leftovers::check_since(&before, &format!("benchmark section {id}"));
    let body = result.with_context(|| format!("benchmark section {id}"))?;
    cleaned?;
    let section = Section {
        id: id.to_owned(),
        title: title.to_owned(),
        markdown: body.markdown,
        headlines: body.headlines,
        seconds: start.elapsed().as_secs_f64(),
    };
    ctx.write_raw_json(&format!("{id}.section.json"), &section)?;
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run_section` compares this process's namespaces before and after a section: tests
    /// that run sections take turns, so that one's namespace is never blamed on another.
    static SECTIONS_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn section_ids_are_unique_and_titled() {
        let mut ids: Vec<&str> = SECTIONS.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SECTIONS.len());
        assert!(SECTIONS.iter().all(|(_, title, _)| !title.is_empty()));
    }

    #[test]
    fn a_section_is_labelled_by_the_table_and_saved_raw() {
        let _turn = SECTIONS_RUN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("ricochet-bench-test-{}", std::process::id()));
        let ctx = Ctx::new(&dir, true, None).unwrap();
        let runner: Runner = |_| {
            Ok(Body {
                markdown: "body\n".into(),
                headlines: vec!["42 things".into()],
            })
        };
        let section = run_section(&ctx, "maglev", "Maglev tables", runner).unwrap();
        assert_eq!(
            (section.id.as_str(), section.title.as_str()),
            ("maglev", "Maglev tables")
        );
        let raw = std::fs::read_to_string(dir.join("raw/maglev.section.json")).unwrap();
        let saved: Section = serde_json::from_str(&raw).unwrap();
        assert_eq!(saved.title, "Maglev tables");
        assert_eq!(saved.headlines, ["42 things"]);

        let failing: Runner = |_| anyhow::bail!("no kernel");
        let error = run_section(&ctx, "forwarding", "F", failing).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "benchmark section forwarding: no kernel"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_katran_object_is_refused_before_anything_runs() {
        let dir =
            std::env::temp_dir().join(format!("ricochet-bench-katran-{}", std::process::id()));
        let ctx = Ctx::new(&dir, true, None).unwrap();
        let error = ctx
            .clone()
            .with_katran_object(Some("/nonexistent/balancer.bpf.o".into()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--katran-object /nonexistent/balancer.bpf.o: no such file"),
            "{error}"
        );
        let ctx = ctx.with_katran_object(None).unwrap();
        assert!(ctx.katran_object.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A section that leaves a namespace behind fails, naming it, and the namespace is
    /// removed; one that removes what it made passes (needs root, as the bench does).
    #[test]
    fn a_section_that_leaves_a_namespace_behind_fails_and_it_is_removed() {
        ricochet_testbed::require_root().expect("this test creates network namespaces");
        let _turn = SECTIONS_RUN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("ricochet-bench-leak-{}", std::process::id()));
        let ctx = Ctx::new(&dir, true, None).unwrap();
        let leaky: Runner = |_| {
            let ns = ricochet_testbed::Netns::new("leak")?;
            let name = ns.name().to_owned();
            std::mem::forget(ns);
            Ok(Body {
                markdown: name,
                headlines: vec![],
            })
        };
        let error = format!(
            "{:#}",
            run_section(&ctx, "maglev", "Maglev tables", leaky).unwrap_err()
        );
        assert!(
            error.contains("benchmark section maglev left behind what it made: network namespace")
                && error.contains("-leak (removed now)"),
            "{error}"
        );
        let left = leftovers::snapshot().unwrap();
        assert!(
            !left
                .iter()
                .any(|o| matches!(o, leftovers::Object::Netns(n) if n.ends_with("-leak"))),
            "{left:?}"
        );
        let tidy: Runner = |_| {
            let ns = ricochet_testbed::Netns::new("tidy")?;
            Ok(Body {
                markdown: ns.name().to_owned(),
                headlines: vec![],
            })
        };
        run_section(&ctx, "maglev", "Maglev tables", tidy).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_ricochet_binary_is_named() {
        let ctx = Ctx {
            out_dir: PathBuf::new(),
            raw_dir: PathBuf::new(),
            quick: true,
            ricochet_bin: Some("/nonexistent/ricochet".into()),
            katran_object: None,
            consult_flows: false,
        };
        let error = ctx.ricochet_binary().unwrap_err().to_string();
        assert!(
            error.contains("/nonexistent/ricochet does not exist"),
            "{error}"
        );
    }
}
