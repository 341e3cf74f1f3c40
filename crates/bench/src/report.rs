//! Puts the sections together into `report.md`.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{machine::Machine, Ctx, Section};

/// Writes `report.md` in the report directory and returns its path.
pub fn write(
    ctx: &Ctx,
    machine: &Machine,
    sections: &[Section],
    failures: &[(String, String)],
) -> anyhow::Result<PathBuf> {
    let mut md = String::new();
    md.push_str("# Ricochet benchmark report\n\n");
    md.push_str(&format!(
        "Measured {} by `cargo xtask bench`{}. Every figure below comes from this one run; the raw \
         data is in [`raw/`](raw/) beside this file. Benchmarks report figures and ratios, they \
         never fail on a number.\n\n",
        machine.date_utc,
        if ctx.quick { " with `--quick` (fewer samples and shorter runs: noisier figures)" } else { "" },
    ));
    md.push_str("## Machine\n\n");
    md.push_str(&machine.markdown());
    md.push('\n');

    md.push_str("## Headlines\n\n");
    for s in sections {
        for h in &s.headlines {
            md.push_str(&format!("- {}: {h}\n", s.title));
        }
    }
    for (id, error) in failures {
        md.push_str(&format!("- **{id}: not measured**: {error}\n"));
    }
    md.push('\n');

    for (i, s) in sections.iter().enumerate() {
        md.push_str(&format!("## {}. {}\n\n", i + 1, s.title));
        md.push_str(s.markdown.trim_end());
        md.push_str(&format!("\n\n_Section time: {:.0} s._\n\n", s.seconds));
    }
    if !failures.is_empty() {
        md.push_str("## Sections that failed\n\n");
        for (id, error) in failures {
            md.push_str(&format!("### {id}\n\n```\n{error}\n```\n\n"));
        }
    }
    ctx.write_raw_json("machine.json", machine)?;
    let path = ctx.out_dir.join("report.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A Markdown table from a header row and rows.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut md = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    md
}

/// `n` with its thousands separated by commas (`2,097,152`).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markdown_table() {
        let t = super::table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
