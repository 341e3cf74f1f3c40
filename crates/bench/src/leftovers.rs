//! What a section leaves behind: the network namespaces, root-namespace links and
//! temporary directories named with this process's prefix (`rc<pid>-`, see
//! `ricochet_testbed::run_prefix`). [`run_section`](crate::run_section) takes a snapshot
//! before each section and fails a section that left anything new, after removing it, so
//! that a successful run never leaves namespaces behind.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _};

/// One object named with this process's prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Object {
    Netns(String),
    Link(String),
    Temp(PathBuf),
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Netns(name) => write!(f, "network namespace {name}"),
            Object::Link(name) => write!(f, "link {name} in the root namespace"),
            Object::Temp(path) => write!(f, "temporary {}", path.display()),
        }
    }
}

/// The objects of this process that exist now.
pub fn snapshot() -> anyhow::Result<BTreeSet<Object>> {
    let prefix = ricochet_testbed::run_prefix();
    let mut found = BTreeSet::new();
    // `ip netns add` makes a bind mount at /run/netns/<name>; no directory means none yet.
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.insert(Object::Netns(name));
            }
        }
    }
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .context("running `ip -o link show`")?;
    if !out.status.success() {
        bail!(
            "`ip -o link show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `7: rc42-0-x@if6: <BROADCAST,...`
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with(&prefix) {
            found.insert(Object::Link(name.to_owned()));
        }
    }
    let temp = std::env::temp_dir();
    for entry in std::fs::read_dir(&temp)
        .with_context(|| format!("listing {}", temp.display()))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            found.insert(Object::Temp(entry.path()));
        }
    }
    Ok(found)
}

/// Removes `object`; an error says why it could not be.
pub fn remove(object: &Object) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .with_context(|| format!("running `ip {}`", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    match object {
        Object::Netns(name) => run(&["netns", "del", name]),
        Object::Link(name) => run(&["link", "del", name]),
        Object::Temp(path) if path.is_dir() => {
            std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Object::Temp(path) => {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
        }
    }
}

/// Fails when objects exist now that were not in `before`, after removing them (the
/// error names each, and any that could not be removed).
pub fn check_since(before: &BTreeSet<Object>, what: &str) -> anyhow::Result<()> {
    let left: Vec<Object> = snapshot()?.difference(before).cloned().collect();
    if left.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = left
        .iter()
        .map(|o| match remove(o) {
            Ok(()) => format!("{o} (removed now)"),
            Err(e) => format!("{o} (could not be removed: {e:#})"),
        })
        .collect();
    bail!(
        "{what} left behind what it made: {}; every section must remove what it creates",
        described.join(", ")
    )
}
