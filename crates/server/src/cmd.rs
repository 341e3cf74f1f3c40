//! Running the system's network tools (`ip`, `modprobe`) with errors that quote the command.
use std::process::Command;

use anyhow::{bail, Context as _};

/// Runs `program args...` and returns its standard output; a failure quotes the command
/// line and its standard error.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let line = || format!("`{program} {}`", args.join(" "));
    tracing::debug!(command = %line(), "running");
    let out = Command::new(program).args(args).output().with_context(|| {
        format!(
            "running {} (is {program} installed? Debian package iproute2 has ip)",
            line()
        )
    })?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            line(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{} printed non-UTF-8 output", line()))
}

/// Runs `ip -j args...` and parses its JSON output.
pub(crate) fn ip_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run("ip", &all)?;
    if out.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(&out)
        .with_context(|| format!("parsing the JSON of `ip -j {}`", args.join(" ")))
}
