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
    /// Katran's XDP balancer object (balancer.bpf.o, built from Katran's sources): the
    /// per-packet section measures it beside Ricochet in the same interleaved rounds.
    /// Without it, the report gives Ricochet's overheads above the floor only.
    #[arg(long, value_name = "PATH")]
    katran_object: Option<PathBuf>,
    /// Per-packet and forwarding sections: every service's flow table consulted (as right
    /// after a pool change) instead of the steady state (flags cleared by the engine's
    /// scan once no flow disagrees with its Maglev table).
    #[arg(long)]
    consult_flows: bool,
    /// Sections to run, in report order whatever the order given (default: all).
    #[arg(value_parser = section_ids())]
    sections: Vec<String>,
}

/// The ids of [`SECTIONS`], which clap lists in `--help` and checks every section against.
fn section_ids() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(SECTIONS.iter().map(|(id, _, _)| *id))
}

/// The sections that run the `ricochet` binary (its engine or its controller).
const DAEMON_SECTIONS: [&str; 4] = ["control-plane", "controller", "end-to-end", "scale-out"];

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    ricochet_testbed::require_root()
        .context("the benchmarks load XDP programs and build namespaces")?;
    let mut ctx = Ctx::new(&args.out, args.quick, args.ricochet.clone())
        .context("--out: cannot create the report directory")?
        .with_katran_object(args.katran_object.clone())?;
    ctx.consult_flows = args.consult_flows;
    let selected: Vec<_> = SECTIONS
        .iter()
        .filter(|(id, _, _)| args.sections.is_empty() || args.sections.iter().any(|s| s == id))
        .collect();
    // A missing binary would otherwise surface only after the sections before it ran.
    if selected
        .iter()
        .any(|(id, _, _)| DAEMON_SECTIONS.contains(id))
    {
        ctx.ricochet_binary()?;
    }
    let machine = Machine::probe();
    let (mut sections, mut failures) = (Vec::new(), Vec::new());
    for (i, (id, title, runner)) in selected.iter().enumerate() {
        println!("--> [{}/{}] {title}", i + 1, selected.len());
        match run_section(&ctx, id, title, *runner) {
            Ok(section) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_checked_against_the_table() {
        let args =
            Args::try_parse_from(["ricochet-bench", "--out", "/tmp/x", "maglev", "per-packet"])
                .unwrap();
        assert_eq!(args.sections, ["maglev", "per-packet"]);
        let error = Args::try_parse_from(["ricochet-bench", "--out", "/tmp/x", "maglve"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("invalid value 'maglve'"), "{error}");
        assert!(error.contains("end-to-end"), "{error}");
        assert!(Args::try_parse_from(["ricochet-bench", "maglev"]).is_err());
        let args = Args::try_parse_from([
            "ricochet-bench",
            "--out",
            "/tmp/x",
            "--katran-object",
            "/k/balancer.bpf.o",
            "per-packet",
        ])
        .unwrap();
        assert_eq!(
            args.katran_object.as_deref(),
            Some(std::path::Path::new("/k/balancer.bpf.o"))
        );
    }

    #[test]
    fn daemon_sections_exist() {
        for id in DAEMON_SECTIONS {
            assert!(SECTIONS.iter().any(|(s, _, _)| *s == id), "{id}");
        }
    }
}
