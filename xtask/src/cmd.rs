//! Running external commands and reporting failures with what to do next.

use std::fmt;
use std::path::Path;
use std::process::{Command, Output};

/// A failed task: what went wrong and, optionally, what the user should do next.
#[derive(Debug)]
pub struct Failure {
    message: String,
    hints: Vec<String>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// Adds a line telling the user what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for hint in &self.hints {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// `cargo` (the rustup proxy, so `rust-toolchain.toml` applies) run in the workspace root.
pub fn cargo(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root);
    command
}

/// Renders a command as the user would type it.
pub fn display(command: &Command) -> String {
    let mut text = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            text.push_str(&format!(
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    text.push_str(&command.get_program().to_string_lossy());
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn spawn_failure(command: &Command, error: &std::io::Error) -> Failure {
    let program = command.get_program().to_string_lossy().into_owned();
    let failure = Failure::new(format!("cannot run `{}`: {error}", display(command)));
    if error.kind() == std::io::ErrorKind::NotFound {
        failure.hint(format!("`{program}` is not on PATH; install it first"))
    } else {
        failure
    }
}

/// Runs a command with inherited stdio (the user sees its progress); fails on a non-zero exit.
pub fn run(command: &mut Command) -> Result<(), Failure> {
    println!("    $ {}", display(command));
    let status = command
        .status()
        .map_err(|error| spawn_failure(command, &error))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "`{}` failed ({status})",
            display(command)
        )))
    }
}

/// Runs a command and captures its output; fails on a non-zero exit, quoting its stderr.
pub fn output(command: &mut Command) -> Result<Output, Failure> {
    let output = probe(command)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Failure::new(format!(
            "`{}` failed ({}): {}",
            display(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs a command and captures its output, whatever its exit status.
pub fn probe(command: &mut Command) -> Result<Output, Failure> {
    command
        .output()
        .map_err(|error| spawn_failure(command, &error))
}

/// Whether this process runs with effective user id 0 (read from `/proc`, to stay std-only).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Extracts the string value of `"key":"..."` from JSON text (enough for `cargo metadata`'s
/// flat fields, without a JSON dependency).
pub fn json_string_field(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":\"");
    let start = json.find(&needle)? + needle.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_field_reads_escaped_values() {
        let json = r#"{"packages":[],"target_directory":"/work/a \"b\"\\c","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some(r#"/work/a "b"\c"#)
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }

    #[test]
    fn failure_lists_hints() {
        let failure = Failure::new("broken").hint("do this").hint("then that");
        assert_eq!(
            failure.to_string(),
            "broken\n  hint: do this\n  hint: then that"
        );
    }
}
