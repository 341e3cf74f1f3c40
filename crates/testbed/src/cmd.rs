//! Running commands with errors that quote the command line and its output.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Renders a command as it would be typed in a shell (for error messages).
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        text.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            text.push('\'');
            text.push_str(&arg);
            text.push('\'');
        } else {
            text.push_str(&arg);
        }
    }
    text
}

/// Runs a command to completion and returns its output, whatever its exit status.
pub(crate) fn output(command: &mut Command) -> Result<Output> {
    command.stdin(std::process::Stdio::null());
    command.output().with_context(|| {
        let program = command.get_program().to_string_lossy().into_owned();
        format!(
            "cannot run `{}` (is `{program}` installed? `cargo xtask setup` installs the test \
             bed's tools)",
            describe(command)
        )
    })
}

/// Runs a command to completion; fails on a non-zero exit with its stderr and stdout.
pub(crate) fn checked(command: &mut Command) -> Result<Output> {
    let output = output(command)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}){}",
            describe(command),
            output.status,
            format_streams(&output.stdout, &output.stderr)
        );
    }
    Ok(output)
}

/// Formats captured stdout/stderr for an error message (empty streams are left out).
pub(crate) fn format_streams(stdout: &[u8], stderr: &[u8]) -> String {
    let mut text = String::new();
    for (label, bytes) in [("stderr", stderr), ("stdout", stdout)] {
        let stream = String::from_utf8_lossy(bytes);
        let stream = stream.trim_end();
        if !stream.is_empty() {
            text.push_str(&format!("\n--- {label} ---\n{stream}"));
        }
    }
    text
}

/// Calls `probe` every `interval` until it returns `true` or `timeout` passes; `probe` errors
/// end the wait at once. Returns whether the condition became true.
pub(crate) fn poll_until(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if probe()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(interval);
    }
}
