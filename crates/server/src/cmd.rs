//! Running system tools (`modprobe`) with errors that quote the command.
use std::process::Command;

use anyhow::{bail, Context as _};

/// Runs `program args...` and returns its standard output; a failure quotes the command
/// line and its standard error.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let line = || format!("`{program} {}`", args.join(" "));
    tracing::debug!(command = %line(), "running");
    let out = Command::new(program).args(args).output().with_context(|| {
        format!(
            "running {} (is {program} installed? Debian package kmod has modprobe)",
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
