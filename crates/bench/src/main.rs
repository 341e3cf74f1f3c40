//! `ricochet-bench`: runs the benchmark sections and writes the report. `cargo xtask bench`
//! builds it in release mode and runs it; run it directly to measure one section again.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use ricochet_bench::{machine::Machine, report, run_section, Ctx, SECTIONS};

#[derive(Parser, Debug)]
#[command(about = "Ricochet's benchmarks: writes a Markdown report with PNG plots and raw data")]
struct Args {
    /// Report directory (created; existing files in it are overwritten).
    #[arg(long, short)]
    out: PathBuf,
    /// Fewer samples and shorter runs, to check that every section works.
    #[arg(long)]
    quick: bool,
    /// The `ricochet` binary (for sections that run the engine daemon).
    #[arg(long)]
    ricochet: Option<PathBuf>,
    /// Sections to run (default: all): per-packet, forwarding, maglev, control-plane, end-to-end.
    sections: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    for wanted in &args.sections {
        if !SECTIONS.iter().any(|(id, _, _)| id == wanted) {
            let ids: Vec<&str> = SECTIONS.iter().map(|(id, _, _)| *id).collect();
            anyhow::bail!(
                "unknown section {wanted:?}: expected one of {}",
                ids.join(", ")
            );
        }
    }
    ricochet_testbed::require_root()
        .context("the benchmarks load XDP programs and build namespaces")?;
    let ctx = Ctx::new(&args.out, args.quick, args.ricochet.clone())?;
    let machine = Machine::probe();
    let selected: Vec<_> = SECTIONS
        .iter()
        .filter(|(id, _, _)| args.sections.is_empty() || args.sections.iter().any(|s| s == id))
        .collect();
    let (mut sections, mut failures) = (Vec::new(), Vec::new());
    for (i, (id, title, runner)) in selected.iter().enumerate() {
        println!("--> [{}/{}] {title}", i + 1, selected.len());
        match run_section(&ctx, id, *runner) {
            Ok(mut section) => {
                section.title = title.to_string();
                println!(
                    "--> [{}/{}] {title}: done in {:.0} s",
                    i + 1,
                    selected.len(),
                    section.seconds
                );
                for h in &section.headlines {
                    println!("      {h}");
                }
                sections.push(section);
            }
            Err(error) => {
                println!(
                    "--> [{}/{}] {title}: FAILED: {error:#}",
                    i + 1,
                    selected.len()
                );
                failures.push((id.to_string(), format!("{error:#}")));
            }
        }
    }
    let path = report::write(&ctx, &machine, &sections, &failures)?;
    println!("report: {}", path.display());
    if !failures.is_empty() {
        anyhow::bail!(
            "{} section(s) could not be measured: see {}",
            failures.len(),
            path.display()
        );
    }
    Ok(())
}
